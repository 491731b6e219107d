//! The matcher against brute force: random shapes compiled from random SQL text (every
//! operator, mixed-class literals, NULLs, nesting), random row changes moving rows in,
//! out and within, and register/unregister churn in between. For every change the
//! matcher's output must equal evaluating every registered shape on both images.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::matcher::{classify, Effect, Matcher, ShapeMatch};
use sluice::query::{compile, Params, Shape, ShapeId};
use sluice::{Schema, Value};

const SCHEMA: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, r REAL, s TEXT, u);";
const COLUMNS: [&str; 5] = ["id", "n", "r", "s", "u"];

const LITERALS: &[&str] = &[
    "NULL",
    "0",
    "1",
    "1.0",
    "'1'",
    "'1.0'",
    "2",
    "2.5",
    "-1",
    "-0.0",
    "'a'",
    "'A'",
    "'ab'",
    "'abc'",
    "'b'",
    "''",
    "' 1'",
    "x'31'",
    "x'61'",
    "x''",
    "9223372036854775807",
    "9.2233720368547758e18",
    "1e300",
    "'é'",
    "'Éa'",
    "'x'",
    "3",
];

const LIKE_PATTERNS: &[&str] = &[
    "'a%'",
    "'A%'",
    "'ab%'",
    "'AB_'",
    "'%b'",
    "'1%'",
    "'1._'",
    "'_'",
    "'%'",
    "'a!%%' ESCAPE '!'",
    "'!_%' ESCAPE '!'",
    "'abc'",
    "NULL",
    "'2.%'",
    "'x'",
    "'a_c%'",
    "'é%'",
    "'É%'",
    "'Éa%'",
];

const GLOB_PATTERNS: &[&str] = &[
    "'a*'", "'A*'", "'ab*'", "'[ab]*'", "'1*'", "'?b'", "'*'", "'abc'", "NULL", "'2.5'", "'x*'",
];

/// Values a row may hold: every storage class, numbers equal across classes.
fn random_value(rng: &mut StdRng) -> Value {
    match rng.gen_range(0..24) {
        22 => Value::Text("éa".into()),
        23 => Value::Text("Éa".into()),
        0..=3 => Value::Null,
        4 => Value::Integer(0),
        5 => Value::Integer(1),
        6 => Value::Real(1.0),
        7 => Value::Integer(2),
        8 => Value::Real(2.5),
        9 => Value::Integer(-1),
        10 => Value::Real(-0.0),
        11 => Value::Text("1".into()),
        12 => Value::Text("a".into()),
        13 => Value::Text("AB".into()),
        14 => Value::Text("abc".into()),
        15 => Value::Text("b".into()),
        16 => Value::Text(String::new()),
        17 => Value::Blob(b"1".to_vec()),
        18 => Value::Blob(b"a".to_vec()),
        19 => Value::Integer(i64::MAX),
        20 => Value::Integer(3),
        _ => Value::Text("x".into()),
    }
}

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.gen_range(0..items.len())]
}

fn random_leaf(rng: &mut StdRng) -> String {
    let col = COLUMNS[rng.gen_range(1..COLUMNS.len())];
    let lit = |rng: &mut StdRng| pick(rng, LITERALS);
    match rng.gen_range(0..22) {
        0..=3 => format!("{col} = {}", lit(rng)),
        4 => format!("{col} != {}", lit(rng)),
        5 => format!("{col} < {}", lit(rng)),
        6 => format!("{col} <= {}", lit(rng)),
        7 => format!("{col} > {}", lit(rng)),
        8 => format!("{col} >= {}", lit(rng)),
        9 => format!("{col} IS {}", lit(rng)),
        10 => format!("{col} IS NOT {}", lit(rng)),
        11 => format!("{col} IS NULL"),
        12 => format!("{col} IS NOT NULL"),
        13 | 14 => {
            let k = rng.gen_range(1..5);
            let items: Vec<&str> = (0..k).map(|_| lit(rng)).collect();
            let not = if rng.gen_bool(0.3) { "NOT " } else { "" };
            format!("{col} {not}IN ({})", items.join(", "))
        }
        15 | 16 => {
            let not = if rng.gen_bool(0.3) { "NOT " } else { "" };
            format!("{col} {not}BETWEEN {} AND {}", lit(rng), lit(rng))
        }
        17 | 18 => {
            let not = if rng.gen_bool(0.3) { "NOT " } else { "" };
            format!("{col} {not}LIKE {}", pick(rng, LIKE_PATTERNS))
        }
        19 => {
            let not = if rng.gen_bool(0.3) { "NOT " } else { "" };
            format!("{col} {not}GLOB {}", pick(rng, GLOB_PATTERNS))
        }
        20 => format!("{} {col}", if rng.gen_bool(0.5) { "NOT" } else { "" }),
        _ => format!(
            "{col} IS {}TRUE",
            if rng.gen_bool(0.5) { "NOT " } else { "" }
        ),
    }
}

fn random_expr(rng: &mut StdRng, depth: u32) -> String {
    if depth == 0 || rng.gen_bool(0.4) {
        return random_leaf(rng);
    }
    match rng.gen_range(0..5) {
        0 | 1 => format!(
            "({} AND {})",
            random_expr(rng, depth - 1),
            random_expr(rng, depth - 1)
        ),
        2 | 3 => format!(
            "({} OR {})",
            random_expr(rng, depth - 1),
            random_expr(rng, depth - 1)
        ),
        _ => format!("NOT ({})", random_expr(rng, depth - 1)),
    }
}

/// A literal for range-heavy runs: a wider numeric domain (so intervals are many and
/// overlap), reals between integers, text and blobs past the numbers, and NULL.
fn range_literal(rng: &mut StdRng) -> String {
    match rng.gen_range(0..20) {
        0 => "NULL".into(),
        1 => format!("'{}'", rng.gen_range(0..9)),
        2 => format!("x'0{}'", rng.gen_range(0..3)),
        3..=6 => format!("{}.5", rng.gen_range(0..60)),
        _ => rng.gen_range(-2..62).to_string(),
    }
}

/// A value for range-heavy runs, from the same domain as [`range_literal`].
fn range_value(rng: &mut StdRng) -> Value {
    match rng.gen_range(0..20) {
        0 => Value::Null,
        1 => Value::Text(rng.gen_range(0..9).to_string()),
        2 => Value::Blob(vec![rng.gen_range(0..3)]),
        3..=6 => Value::Real(rng.gen_range(0..60) as f64 + 0.5),
        7 => Value::Real(rng.gen_range(0..60) as f64),
        _ => Value::Integer(rng.gen_range(-2..62)),
    }
}

/// Interval shapes: `BETWEEN`, two range terms on one column with open or closed ends
/// (equal endpoints included), sometimes beside an unindexable conjunct or in an OR.
fn range_sql(rng: &mut StdRng) -> String {
    let col = COLUMNS[rng.gen_range(1..COLUMNS.len())];
    let lo = range_literal(rng);
    let hi = if rng.gen_ratio(1, 6) {
        lo.clone()
    } else {
        range_literal(rng)
    };
    let lower = [">", ">="][rng.gen_range(0..2)];
    let upper = ["<", "<="][rng.gen_range(0..2)];
    let interval = match rng.gen_range(0..3) {
        0 => format!("{col} BETWEEN {lo} AND {hi}"),
        1 => format!("{col} {lower} {lo} AND {col} {upper} {hi}"),
        _ => format!("{col} {upper} {hi} AND {col} {lower} {lo} AND {col} {lower} {lo}"),
    };
    let sql = match rng.gen_range(0..6) {
        0 => format!("{interval} AND s != 'a'"),
        1 => format!("({interval}) OR n = {}", range_literal(rng)),
        _ => interval,
    };
    format!("SELECT * FROM t WHERE {sql}")
}

fn random_sql(rng: &mut StdRng) -> String {
    if rng.gen_ratio(1, 40) {
        return "SELECT * FROM t".into();
    }
    format!("SELECT * FROM t WHERE {}", random_expr(rng, 3))
}

/// The matcher's expected output: every registered shape evaluated on both images.
fn brute_force(
    shapes: &BTreeMap<ShapeId, (Arc<Shape>, usize)>,
    old: Option<&[Value]>,
    new: Option<&[Value]>,
) -> Vec<ShapeMatch> {
    let mut out = Vec::new();
    for (id, (shape, _)) in shapes {
        let was = old.is_some_and(|row| shape.matches(row));
        let is = new.is_some_and(|row| shape.matches(row));
        let Some(effect) = classify(was, is, new.is_none()) else {
            continue;
        };
        out.push(ShapeMatch { shape: *id, effect });
    }
    out
}

struct Run {
    schema: Schema,
    rng: StdRng,
    matcher: Matcher,
    /// What the test believes is registered, with reference counts.
    registered: BTreeMap<ShapeId, (Arc<Shape>, usize)>,
    rows: BTreeMap<i64, Vec<Value>>,
    next_id: i64,
    compiled: usize,
    rejected: usize,
    seed: u64,
    /// Range-heavy run: interval shapes and values from their domain.
    ranges: bool,
}

impl Run {
    fn new(seed: u64) -> Run {
        Run {
            schema: Schema::parse("t.sql", SCHEMA).expect("schema"),
            rng: StdRng::seed_from_u64(seed),
            matcher: Matcher::new(),
            registered: BTreeMap::new(),
            rows: BTreeMap::new(),
            next_id: 1,
            compiled: 0,
            rejected: 0,
            seed,
            ranges: false,
        }
    }

    fn value(&mut self) -> Value {
        if self.ranges {
            range_value(&mut self.rng)
        } else {
            random_value(&mut self.rng)
        }
    }

    fn register_random(&mut self) {
        let sql = if self.ranges {
            range_sql(&mut self.rng)
        } else {
            random_sql(&mut self.rng)
        };
        match compile(&self.schema, &sql, &Params::new()) {
            Ok(shape) => {
                self.compiled += 1;
                let shape = Arc::new(shape);
                let id = self.matcher.register(shape.clone());
                assert_eq!(id, shape.id(), "seed {}: {sql}", self.seed);
                self.registered.entry(id).or_insert((shape, 0)).1 += 1;
            }
            Err(_) => self.rejected += 1,
        }
    }

    fn unregister_random(&mut self) {
        if self.registered.is_empty() {
            return;
        }
        let at = self.rng.gen_range(0..self.registered.len());
        let id = *self.registered.keys().nth(at).expect("in range");
        let entry = self.registered.get_mut(&id).expect("present");
        entry.1 -= 1;
        let last = entry.1 == 0;
        if last {
            self.registered.remove(&id);
        }
        assert_eq!(
            self.matcher.unregister(id),
            last,
            "seed {}: refcount of {id}",
            self.seed
        );
        assert_eq!(
            self.matcher.shape(id).is_some(),
            !last,
            "seed {}",
            self.seed
        );
    }

    fn random_row(&mut self, id: i64) -> Vec<Value> {
        let mut row = vec![Value::Integer(id)];
        for _ in 1..COLUMNS.len() {
            let value = self.value();
            row.push(value);
        }
        row
    }

    /// One random change, checked against brute force.
    fn change(&mut self) {
        let existing = self.rows.keys().copied().collect::<Vec<_>>();
        let kind = if existing.is_empty() {
            0
        } else {
            self.rng.gen_range(0..5)
        };
        let (old, new) = match kind {
            0 => {
                let id = self.next_id;
                self.next_id += 1;
                (None, Some(self.random_row(id)))
            }
            1 => {
                let id = existing[self.rng.gen_range(0..existing.len())];
                (self.rows.get(&id).cloned(), None)
            }
            _ => {
                let id = existing[self.rng.gen_range(0..existing.len())];
                let old = self.rows[&id].clone();
                let mut new = old.clone();
                for _ in 0..self.rng.gen_range(1..3) {
                    let col = self.rng.gen_range(1..COLUMNS.len());
                    new[col] = self.value();
                }
                (Some(old), Some(new))
            }
        };
        let mut out = Vec::new();
        let work = self
            .matcher
            .match_change("t", old.as_deref(), new.as_deref(), &mut out);
        let expected = brute_force(&self.registered, old.as_deref(), new.as_deref());
        assert!(
            out == expected,
            "seed {}: change {old:?} -> {new:?}; wrong or missing matches: {:#?}",
            self.seed,
            symmetric_difference(&out, &expected, &self.registered)
        );
        assert!(
            work.candidates <= self.registered.len(),
            "seed {}",
            self.seed
        );
        assert!(work.residual <= work.candidates, "seed {}", self.seed);
        let mut again = Vec::new();
        let work_again = self
            .matcher
            .match_change("t", old.as_deref(), new.as_deref(), &mut again);
        assert_eq!(
            (again, work_again),
            (out, work),
            "seed {}: not deterministic",
            self.seed
        );
        let id = match (&old, &new) {
            (_, Some(row)) | (Some(row), None) => row[0].clone(),
            (None, None) => unreachable!("a change has an image"),
        };
        let Value::Integer(id) = id else {
            unreachable!("ids are integers")
        };
        match new {
            Some(row) => self.rows.insert(id, row),
            None => self.rows.remove(&id),
        };
    }

    /// Registers `shapes`, then runs `changes` changes with churn between them.
    fn run(&mut self, shapes: usize, changes: usize) {
        for _ in 0..shapes {
            self.register_random();
        }
        for _ in 0..changes {
            match self.rng.gen_range(0..10) {
                0 => self.register_random(),
                1 => self.unregister_random(),
                _ => {}
            }
            self.change();
            assert_eq!(
                self.matcher.len(),
                self.registered.len(),
                "seed {}",
                self.seed
            );
        }
        assert!(
            self.compiled > self.rejected * 3,
            "seed {}: too many generated subscriptions rejected ({} of {})",
            self.seed,
            self.rejected,
            self.compiled + self.rejected
        );
    }
}

fn symmetric_difference(
    got: &[ShapeMatch],
    want: &[ShapeMatch],
    shapes: &BTreeMap<ShapeId, (Arc<Shape>, usize)>,
) -> Vec<String> {
    let text = |m: &ShapeMatch| {
        let sql = shapes.get(&m.shape).map_or("<unknown>", |(s, _)| s.text());
        format!("{:?} {sql}", m.effect)
    };
    let mut diff: Vec<String> = got.iter().filter(|m| !want.contains(m)).map(text).collect();
    diff.extend(
        want.iter()
            .filter(|m| !got.contains(m))
            .map(|m| format!("missing: {}", text(m))),
    );
    diff
}

#[test]
fn matcher_equals_brute_force_over_many_seeded_runs() {
    for seed in 0..12u64 {
        let mut run = Run::new(seed);
        run.run(400, 1500);
        // Unregister everything: the matcher must end empty, and then match nothing.
        while !run.registered.is_empty() {
            run.unregister_random();
        }
        assert!(run.matcher.is_empty(), "seed {seed}");
        run.change();
    }
}

/// Thousands of interval shapes per column (the interval index splits, merges and empties
/// its chunks under churn), open and closed bounds, equal endpoints, NULL bounds and
/// values, mixed storage classes: still equal to brute force.
#[test]
fn interval_heavy_runs_equal_brute_force() {
    for seed in 100..104u64 {
        let mut run = Run::new(seed);
        run.ranges = true;
        run.run(3000, 1500);
        while !run.registered.is_empty() {
            run.unregister_random();
        }
        assert!(run.matcher.is_empty(), "seed {seed}");
        run.change();
    }
}

#[test]
fn identical_subscriptions_share_one_shape() {
    let mut run = Run::new(7);
    let a = compile(
        &run.schema,
        "SELECT * FROM t WHERE n IN (1, 2)",
        &Params::new(),
    )
    .unwrap();
    let b = compile(
        &run.schema,
        "SELECT * FROM t WHERE n IN (2, 1, 1.0)",
        &Params::new(),
    )
    .unwrap();
    let id = run.matcher.register(Arc::new(a));
    assert_eq!(run.matcher.register(Arc::new(b)), id);
    assert_eq!(run.matcher.len(), 1);
    let mut out = Vec::new();
    let row = vec![
        Value::Integer(1),
        Value::Real(2.0),
        Value::Null,
        Value::Null,
        Value::Null,
    ];
    run.matcher.match_change("t", None, Some(&row), &mut out);
    assert_eq!(
        out,
        vec![ShapeMatch {
            shape: id,
            effect: Effect::Insert
        }]
    );
    assert!(!run.matcher.unregister(id));
    assert!(run.matcher.unregister(id));
    assert!(run.matcher.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn matcher_equals_brute_force(seed in any::<u64>()) {
        let mut run = Run::new(seed);
        run.run(150, 300);
    }
}

#[test]
fn is_binds_like_a_comparison_next_to_and_or() {
    let schema = Schema::parse("t.sql", SCHEMA).expect("schema");
    let text = |sql: &str| {
        compile(
            &schema,
            &format!("SELECT * FROM t WHERE {sql}"),
            &Params::new(),
        )
        .map(|s| {
            s.text()
                .trim_start_matches("SELECT * FROM t WHERE ")
                .to_string()
        })
        .expect(sql)
    };
    assert_eq!(text("n IS 1 OR r > 2"), "n IS 1 OR r > 2");
    assert_eq!(
        text("s = 'a' AND n IS NOT -1 OR r > 2"),
        "n IS NOT -1 AND s = 'a' OR r > 2"
    );
    assert_eq!(text("n IS (2) AND u IS x'31'"), "n IS 2 AND u IS x'31'");
    assert_eq!(
        text("n IS NULL OR n IS NOT TRUE"),
        "n IS NOT TRUE OR n IS NULL"
    );
}
