//! The matcher's tests: its indexes against evaluating every shape (exact hits, ranges, OR
//! branches, moves between old and new images), sharing and unregistering shapes.

use super::*;
use crate::query::{compile, Params};
use crate::schema::Schema;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, r REAL, \
                      s TEXT, u);";

fn shape(sql: &str) -> Arc<Shape> {
    let schema = Schema::parse("t.sql", SCHEMA).expect("schema");
    Arc::new(compile(&schema, sql, &Params::new()).expect(sql))
}

fn row(n: Value, r: Value, s: Value, u: Value) -> Vec<Value> {
    vec![Value::Integer(1), n, r, s, u]
}

fn u(value: Value) -> Vec<Value> {
    row(Value::Null, Value::Null, Value::Null, value)
}

/// Registers `sqls` and returns, for an insert of `new`, the matching shape indexes.
fn inserted(m: &Matcher, ids: &[ShapeId], new: &[Value]) -> Vec<usize> {
    let mut out = Vec::new();
    m.match_change("t", None, Some(new), &mut out);
    assert!(out.iter().all(|x| x.effect == Effect::Insert));
    let mut hit: Vec<usize> = out
        .iter()
        .map(|x| ids.iter().position(|id| *id == x.shape).expect("known"))
        .collect();
    hit.sort_unstable();
    hit
}

fn register_all(m: &mut Matcher, sqls: &[&str]) -> Vec<ShapeId> {
    sqls.iter()
        .map(|s| m.register(shape(&format!("SELECT * FROM t WHERE {s}"))))
        .collect()
}

/// Asserts that the matcher's output for every move between two of `rows` (and
/// every insert and delete of one) equals evaluating each of `ids` on both images.
pub(super) fn assert_agrees(m: &Matcher, ids: &[ShapeId], rows: &[Vec<Value>]) {
    let mut out = Vec::new();
    for old in rows.iter().map(|r| Some(&r[..])).chain([None]) {
        for new in rows.iter().map(|r| Some(&r[..])).chain([None]) {
            m.match_change("t", old, new, &mut out);
            let mut want: Vec<ShapeMatch> = ids
                .iter()
                .filter_map(|id| {
                    let shape = m.shape(*id).expect("registered");
                    let was = old.is_some_and(|r| shape.matches(r));
                    let is = new.is_some_and(|r| shape.matches(r));
                    classify(was, is, new.is_none()).map(|effect| ShapeMatch { shape: *id, effect })
                })
                .collect();
            want.sort_unstable_by_key(|x| x.shape);
            assert_eq!(out, want, "{old:?} -> {new:?}");
        }
    }
}

/// Shapes an integer key hit decides (`n = 1`, `n IN (1, 2.0, NULL)`, `u IS 2`) next
/// to evaluated ones, on every pair of old and new values, against brute force.
#[test]
fn exact_hits_agree_with_evaluation_on_every_move() {
    let mut m = Matcher::new();
    let sqls = [
        "n = 1",
        "n IN (1, 2.0, NULL)",
        "u IS 2",
        "u = 1",
        "u IN (1, 'a')",
        "n = 1 AND u = 2",
    ];
    let ids = register_all(&mut m, &sqls);
    let values = [
        Value::Null,
        Value::Integer(1),
        Value::Real(1.0),
        Value::Integer(2),
        Value::Real(2.5),
        Value::Text("1".into()),
        Value::Text("a".into()),
        Value::Real(-0.0),
    ];
    let rows: Vec<Vec<Value>> = values
        .iter()
        .flat_map(|n| {
            values
                .iter()
                .map(|u| row(n.clone(), Value::Null, Value::Null, u.clone()))
        })
        .collect();
    assert_agrees(&m, &ids, &rows);
}

/// Past the sizes at which keys are computed once and prefetched (more keys per
/// change than are stored or not, ranges, NaN reals), the output equals evaluating
/// every shape.
#[test]
fn a_large_index_agrees_with_evaluating_every_shape() {
    let mut m = Matcher::new();
    let sqls: Vec<String> = (0..40_000)
        .map(|i| match i % 4 {
            0 => format!("n = {i}"),
            1 => format!("s IN ('v{i}', 'w{i}')"),
            2 => format!("u = {i}.5 OR n = {}", i % 50),
            _ if i % 8 == 3 => format!("s LIKE '{}%'", &"abcdefgh"[..1 + i % 8]),
            _ if i % 16 == 7 => format!("n BETWEEN {i} AND {} OR u > {i}", i + 100),
            _ => format!("s GLOB '{}*' AND n > {}", &"abcdefgh"[..1 + i % 8], i % 9),
        })
        .collect();
    let sqls: Vec<&str> = sqls.iter().map(String::as_str).collect();
    let registered = register_all(&mut m, &sqls);
    let mut ids = registered.clone();
    ids.sort_unstable();
    ids.dedup();
    assert!(m.tables["t"].keyed.is_large() && m.hot.len() > LARGE_HOT);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = |bound: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound
    };
    let mut random_row = || {
        let k = next(40_000) as i64;
        let s = match next(4) {
            0 => Value::Text(format!("v{k}")),
            1 => Value::Text("abcdefghij".into()),
            2 => Value::Text("ABCd".into()),
            _ => Value::Null,
        };
        let u = match next(3) {
            0 => Value::Real(k as f64 + 0.5),
            1 if next(4) == 0 => Value::Real(f64::NAN),
            _ => Value::Integer(k),
        };
        row(Value::Integer(next(40_000) as i64), Value::Null, s, u)
    };
    let mut out = Vec::new();
    let mut check = |m: &Matcher, ids: &[ShapeId], changes: usize| {
        for _ in 0..changes {
            let (old, new) = (random_row(), random_row());
            m.match_change("t", Some(&old), Some(&new), &mut out);
            let want: Vec<ShapeMatch> = ids
                .iter()
                .filter_map(|id| {
                    let shape = m.shape(*id).expect("registered");
                    classify(shape.matches(&old), shape.matches(&new), false)
                        .map(|effect| ShapeMatch { shape: *id, effect })
                })
                .collect();
            assert_eq!(out, want, "{old:?} -> {new:?}");
        }
    };
    check(&m, &ids, 40);
    // Most shapes unregistered (as often as registered: identical texts share a shape):
    // the key table's absent-key filter is rebuilt (its stale keys outnumber the live
    // ones), and nothing still registered is missed.
    let gone = |id: &ShapeId| !id.0.wrapping_mul(0x9e37_79b9).is_multiple_of(8);
    for id in registered.iter().filter(|id| gone(id)) {
        m.unregister(*id);
    }
    let kept: Vec<ShapeId> = ids.iter().copied().filter(|id| !gone(id)).collect();
    assert!(kept.iter().all(|id| m.shape(*id).is_some()));
    assert!(ids
        .iter()
        .filter(|id| gone(id))
        .all(|id| m.shape(*id).is_none()));
    assert!(m.tables["t"].keyed.is_large());
    check(&m, &kept, 40);
    // And registered again, on top of the rebuilt filter.
    let mut again = register_all(&mut m, &sqls[..8_000]);
    again.extend(kept);
    again.sort_unstable();
    again.dedup();
    check(&m, &again, 40);
}

#[test]
fn a_candidate_is_one_cache_line() {
    assert_eq!(std::mem::size_of::<Hot>(), 64);
    assert_eq!(std::mem::align_of::<Hot>(), 64);
}

#[test]
fn integer_one_real_one_and_text_one_are_told_apart() {
    let mut m = Matcher::new();
    let ids = register_all(&mut m, &["u = 1", "u = 1.0", "u = '1'", "u IN (1, x'31')"]);
    assert_eq!(inserted(&m, &ids, &u(Value::Integer(1))), vec![0, 1, 3]);
    assert_eq!(inserted(&m, &ids, &u(Value::Real(1.0))), vec![0, 1, 3]);
    assert_eq!(inserted(&m, &ids, &u(Value::Text("1".into()))), vec![2]);
    assert_eq!(inserted(&m, &ids, &u(Value::Blob(b"1".to_vec()))), vec![3]);
    assert_eq!(
        inserted(&m, &ids, &u(Value::Real(-0.0))),
        Vec::<usize>::new()
    );
    let zero = register_all(&mut m, &["u = 0"]);
    let mut out = Vec::new();
    m.match_change("t", None, Some(&u(Value::Real(-0.0))), &mut out);
    assert_eq!(
        out,
        vec![ShapeMatch {
            shape: zero[0],
            effect: Effect::Insert
        }]
    );
}

#[test]
fn ranges_follow_the_cross_class_order() {
    let mut m = Matcher::new();
    let ids = register_all(
        &mut m,
        &[
            "u > 5",
            "u < 'b'",
            "u BETWEEN 2 AND 'a'",
            "u >= x'00'",
            "u < NULL",
            "u <= 7",
        ],
    );
    assert_eq!(inserted(&m, &ids, &u(Value::Integer(3))), vec![1, 2, 5]);
    assert_eq!(inserted(&m, &ids, &u(Value::Real(6.5))), vec![0, 1, 2, 5]);
    assert_eq!(
        inserted(&m, &ids, &u(Value::Text("a".into()))),
        vec![0, 1, 2]
    );
    assert_eq!(inserted(&m, &ids, &u(Value::Text("c".into()))), vec![0]);
    assert_eq!(inserted(&m, &ids, &u(Value::Blob(vec![1]))), vec![0, 3]);
    assert_eq!(inserted(&m, &ids, &u(Value::Null)), Vec::<usize>::new());
}

#[test]
fn or_branches_are_each_indexed() {
    let mut m = Matcher::new();
    let ids = register_all(
        &mut m,
        &[
            "n = 1 OR s = 'x'",
            "(n = 2 AND r > 1) OR s LIKE 'Ab%'",
            "n = 3 OR s != 'y'",
        ],
    );
    let mut out = Vec::new();
    let hit = row(
        Value::Integer(9),
        Value::Null,
        Value::Text("x".into()),
        Value::Null,
    );
    let work = m.match_change("t", None, Some(&hit), &mut out);
    assert_eq!(out.iter().map(|x| x.shape).collect::<Vec<_>>(), {
        let mut v = vec![ids[0], ids[2]];
        v.sort();
        v
    });
    assert_eq!(
        work,
        MatchWork {
            candidates: 2,
            residual: 1
        }
    );
    let like = row(
        Value::Integer(2),
        Value::Null,
        Value::Text("aBc".into()),
        Value::Null,
    );
    assert_eq!(inserted(&m, &ids, &like), vec![1, 2]);
    let miss = row(
        Value::Integer(2),
        Value::Real(0.5),
        Value::Text("y".into()),
        Value::Null,
    );
    let work = m.match_change("t", None, Some(&miss), &mut out);
    assert!(out.is_empty());
    assert_eq!(
        work,
        MatchWork {
            candidates: 2,
            residual: 1
        }
    );
}

#[test]
fn move_semantics_on_old_and_new_images() {
    let mut m = Matcher::new();
    let id = register_all(&mut m, &["n > 10"])[0];
    let (lo, hi) = (
        u(Value::Null),
        row(Value::Integer(20), Value::Null, Value::Null, Value::Null),
    );
    let mut lo_row = lo.clone();
    lo_row[1] = Value::Integer(1);
    let mut hi2 = hi.clone();
    hi2[1] = Value::Integer(30);
    let mut out = Vec::new();
    let effect = |m: &Matcher, old: Option<&[Value]>, new: Option<&[Value]>| {
        let mut out = Vec::new();
        m.match_change("t", old, new, &mut out);
        out.iter().map(|x| (x.shape, x.effect)).collect::<Vec<_>>()
    };
    assert_eq!(
        effect(&m, Some(&lo_row), Some(&hi)),
        vec![(id, Effect::Insert)]
    );
    assert_eq!(
        effect(&m, Some(&hi), Some(&hi2)),
        vec![(id, Effect::Update)]
    );
    let moved = Effect::Delete(MoveOutReason::MovedOut);
    assert_eq!(effect(&m, Some(&hi), Some(&lo_row)), vec![(id, moved)]);
    let deleted = Effect::Delete(MoveOutReason::Deleted);
    assert_eq!(effect(&m, Some(&hi), None), vec![(id, deleted)]);
    assert_eq!(effect(&m, Some(&lo), Some(&lo_row)), vec![]);
    assert_eq!(
        m.match_change("other", None, Some(&hi), &mut out),
        MatchWork::default()
    );
}

#[test]
fn identical_shapes_are_shared_and_reference_counted() {
    let mut m = Matcher::new();
    let a = m.register(shape("SELECT * FROM t WHERE n IN (2, 1)"));
    let b = m.register(shape("SELECT * FROM t WHERE n IN (1, 2, 1.0)"));
    assert_eq!(a, b);
    assert_eq!(m.len(), 1);
    assert!(m.shape(a).is_some());
    assert!(!m.unregister(a));
    assert_eq!(m.len(), 1);
    assert!(m.unregister(a));
    assert!(m.is_empty());
    assert!(m.shape(a).is_none());
    assert!(!m.unregister(a));
}

#[test]
fn unregister_removes_from_every_index() {
    let mut m = Matcher::new();
    let sqls = [
        "n = 1",
        "n IN (1, 2, 3)",
        "n = 1 OR n = 1.0",
        "u IS NULL",
        "r > 1.5",
        "r < 2",
        "r BETWEEN 1 AND 2",
        "s LIKE 'abc%'",
        "s GLOB 'ab*'",
        "s != 'a'",
        "n = NULL",
    ];
    let ids = register_all(&mut m, &sqls);
    let extra = m.register(shape("SELECT * FROM t"));
    let probe = row(
        Value::Integer(1),
        Value::Real(1.7),
        Value::Text("abcd".into()),
        Value::Null,
    );
    let mut out = Vec::new();
    let work = m.match_change("t", None, Some(&probe), &mut out);
    assert_eq!(out.len(), 11);
    assert_eq!(work.residual, 2);
    for id in ids.iter().rev() {
        assert!(m.unregister(*id));
    }
    let work = m.match_change("t", None, Some(&probe), &mut out);
    assert_eq!(out.iter().map(|x| x.shape).collect::<Vec<_>>(), vec![extra]);
    assert_eq!(
        work,
        MatchWork {
            candidates: 1,
            residual: 1
        }
    );
    let index = &m.tables["t"];
    assert!(index.keyed.is_empty());
    assert!(index.active.is_empty());
    for column in &index.columns {
        assert_eq!(
            (column.eq, column.prefixes, column.between.len()),
            (0, 0, 0)
        );
        assert!(column.lower.is_empty() && column.upper.is_empty());
        assert!(column
            .like_lens
            .iter()
            .chain(&column.glob_lens)
            .all(|&c| c == 0));
    }
    assert!(m.unregister(extra));
    assert!(m.tables.is_empty());
    assert!(m.entries.iter().all(Option::is_none));
    let again = register_all(&mut m, &sqls[..3]);
    assert_eq!(m.entries.len(), 12);
    m.match_change("t", None, Some(&probe), &mut out);
    assert_eq!(out.len(), 3);
    assert!(again.iter().all(|id| m.shape(*id).is_some()));
}

#[test]
fn a_nan_value_falls_back_to_evaluating_every_shape() {
    let mut m = Matcher::new();
    let ids = register_all(&mut m, &["u = 1.5", "u > 2", "s = 'x'"]);
    let mut out = Vec::new();
    let work = m.match_change("t", None, Some(&u(Value::Real(f64::NAN))), &mut out);
    assert_eq!(work.candidates, 3);
    let brute: Vec<ShapeId> = ids
        .iter()
        .copied()
        .filter(|id| {
            m.shape(*id)
                .is_some_and(|s| s.matches(&u(Value::Real(f64::NAN))))
        })
        .collect();
    assert_eq!(out.len(), brute.len());
}
