//! Matcher benchmarks: time per row change against the number of registered shapes, the
//! indexed matcher next to brute force (evaluate every shape), register/unregister
//! churn, and the memory each registered shape costs.
//!
//! Shapes are built directly as predicates (`Shape::new`), outside the timed parts.
//! Besides criterion's figures the bench prints p50/p99 per change from a plain loop and
//! the bytes per shape from a counting allocator, for the README's performance table.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::matcher::{Matcher, ShapeMatch};
use sluice::query::{CmpOp, Pred};
use sluice::schema::Table;
use sluice::{Schema, Shape, Value};

/// Counts live heap bytes, to measure what a registered shape costs.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SCHEMA: &str = "CREATE TABLE items (id INTEGER PRIMARY KEY, team INTEGER, owner TEXT, \
                      status TEXT, priority INTEGER, score REAL, created INTEGER, title TEXT);";
const TEAM: usize = 1;
const OWNER: usize = 2;
const STATUS: usize = 3;
const PRIORITY: usize = 4;
const SCORE: usize = 5;
const CREATED: usize = 6;
const TITLE: usize = 7;

const STATUSES: [&str; 4] = ["open", "doing", "review", "done"];
/// Distinct rows changed per benchmark (cycled through).
const CHANGES: usize = 4096;
/// Changes timed one by one for the percentiles.
const PERCENTILE_CHANGES: usize = 20_000;

fn table() -> Arc<Table> {
    Schema::parse("items.sql", SCHEMA)
        .expect("schema")
        .table("items")
        .expect("table")
        .clone()
}

fn cmp(col: usize, op: CmpOp, value: Value) -> Pred {
    Pred::Cmp { col, op, value }
}

fn text(s: String) -> Value {
    Value::Text(s)
}

/// Value domains scale with `n` so that each equality key is shared by few shapes.
struct Domain {
    n: usize,
}

impl Domain {
    fn team(&self, rng: &mut StdRng) -> Value {
        Value::Integer(rng.gen_range(0..self.n as i64))
    }

    fn owner(&self, rng: &mut StdRng) -> Value {
        text(format!("user-{}", rng.gen_range(0..self.n)))
    }

    fn score(&self, rng: &mut StdRng) -> f64 {
        rng.gen_range(0.0..self.n as f64)
    }

    fn created(&self, rng: &mut StdRng) -> i64 {
        rng.gen_range(0..self.n as i64 * 10)
    }

    fn row(&self, rng: &mut StdRng, id: i64) -> Vec<Value> {
        vec![
            Value::Integer(id),
            self.team(rng),
            self.owner(rng),
            text(STATUSES[rng.gen_range(0..STATUSES.len())].to_string()),
            Value::Integer(rng.gen_range(0..5)),
            Value::Real(self.score(rng)),
            Value::Integer(self.created(rng)),
            text(format!("t{:05}", rng.gen_range(0..100_000))),
        ]
    }
}

/// `team = k` (75%) or `owner IN (three users)` (25%).
fn eq_shapes(table: &Arc<Table>, n: usize, rng: &mut StdRng) -> Vec<Arc<Shape>> {
    let d = Domain { n };
    (0..n)
        .map(|i| {
            let pred = if i % 4 == 3 {
                let values = (0..3).map(|_| d.owner(rng)).collect();
                Pred::In {
                    col: OWNER,
                    values,
                    negated: false,
                }
            } else {
                cmp(TEAM, CmpOp::Eq, d.team(rng))
            };
            Arc::new(Shape::new(table.clone(), None, pred))
        })
        .collect()
}

/// 70% equality, 20% range, 10% OR / NOT, as an application's subscriptions might be.
fn mixed_shapes(table: &Arc<Table>, n: usize, rng: &mut StdRng) -> Vec<Arc<Shape>> {
    let d = Domain { n };
    (0..n)
        .map(|i| {
            let status = |rng: &mut StdRng| text(STATUSES[rng.gen_range(0..4)].to_string());
            let pred = match i % 10 {
                0..=3 => cmp(TEAM, CmpOp::Eq, d.team(rng)),
                4 => Pred::And(vec![
                    cmp(TEAM, CmpOp::Eq, d.team(rng)),
                    cmp(STATUS, CmpOp::Eq, status(rng)),
                ]),
                5 => cmp(OWNER, CmpOp::Eq, d.owner(rng)),
                6 => Pred::And(vec![
                    cmp(OWNER, CmpOp::Eq, d.owner(rng)),
                    cmp(PRIORITY, CmpOp::Ge, Value::Integer(rng.gen_range(0..5))),
                ]),
                7 => {
                    let lo = d.score(rng);
                    Pred::And(vec![
                        cmp(SCORE, CmpOp::Ge, Value::Real(lo)),
                        cmp(SCORE, CmpOp::Le, Value::Real(lo + rng.gen_range(0.5..4.0))),
                    ])
                }
                8 => {
                    let from = d.created(rng);
                    Pred::And(vec![
                        cmp(CREATED, CmpOp::Ge, Value::Integer(from)),
                        cmp(
                            CREATED,
                            CmpOp::Lt,
                            Value::Integer(from + rng.gen_range(1..40)),
                        ),
                        cmp(STATUS, CmpOp::Ne, text("done".into())),
                    ])
                }
                _ if i % 20 == 9 => Pred::Or(vec![
                    cmp(OWNER, CmpOp::Eq, d.owner(rng)),
                    Pred::Like {
                        col: TITLE,
                        pattern: Some(format!("t{:04}%", rng.gen_range(0..10_000)).into_bytes()),
                        escape: None,
                        negated: false,
                    },
                ]),
                _ => Pred::And(vec![
                    cmp(TEAM, CmpOp::Eq, d.team(rng)),
                    Pred::In {
                        col: STATUS,
                        values: vec![text("done".into()), text("review".into())],
                        negated: true,
                    },
                ]),
            };
            Arc::new(Shape::new(table.clone(), None, pred))
        })
        .collect()
}

/// A handful of shapes nothing can index (`status != 'done'`-style), present at every N.
fn residual_shapes(table: &Arc<Table>) -> Vec<Arc<Shape>> {
    (0..8)
        .map(|i| {
            let pred = cmp(PRIORITY, CmpOp::Ne, Value::Integer(i));
            Arc::new(Shape::new(
                table.clone(),
                None,
                Pred::Or(vec![
                    pred,
                    Pred::Truth {
                        col: TITLE,
                        test: sluice::query::TruthTest::IsTrue,
                    },
                ]),
            ))
        })
        .collect()
}

type Change = (Vec<Value>, Vec<Value>);

/// Updates: a row moves to another team/owner/score, as most changes do.
fn changes(n: usize, rng: &mut StdRng) -> Vec<Change> {
    let d = Domain { n };
    (0..CHANGES)
        .map(|i| {
            let old = d.row(rng, i as i64);
            let mut new = old.clone();
            for _ in 0..2 {
                let col = rng.gen_range(TEAM..=TITLE);
                new[col] = d.row(rng, i as i64)[col].clone();
            }
            (old, new)
        })
        .collect()
}

struct Built {
    matcher: Matcher,
    shapes: Vec<Arc<Shape>>,
    /// Heap bytes of the shapes themselves and of the matcher's index, per shape.
    shape_bytes: f64,
    index_bytes: f64,
}

fn build(make: impl FnOnce() -> Vec<Arc<Shape>>) -> Built {
    let before = LIVE.load(Ordering::Relaxed);
    let shapes = make();
    let after_shapes = LIVE.load(Ordering::Relaxed);
    let mut matcher = Matcher::new();
    for shape in &shapes {
        matcher.register(shape.clone());
    }
    let after_index = LIVE.load(Ordering::Relaxed);
    let n = shapes.len() as f64;
    Built {
        matcher,
        shapes,
        shape_bytes: (after_shapes - before) as f64 / n,
        index_bytes: (after_index - after_shapes) as f64 / n,
    }
}

fn brute_force(shapes: &[Arc<Shape>], (old, new): &Change) -> usize {
    shapes
        .iter()
        .filter(|s| s.matches(old) || s.matches(new))
        .count()
}

/// p50 and p99 of single-change latency, from a plain timed loop.
fn percentiles(matcher: &Matcher, changes: &[Change]) -> (Duration, Duration) {
    let mut out: Vec<ShapeMatch> = Vec::new();
    let mut times: Vec<Duration> = (0..PERCENTILE_CHANGES)
        .map(|i| {
            let (old, new) = &changes[i % changes.len()];
            let start = Instant::now();
            black_box(matcher.match_change("items", Some(old), Some(new), &mut out));
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    (times[times.len() / 2], times[times.len() * 99 / 100])
}

/// Shape counts to run: `SLUICE_MATCHER_SIZES` (comma-separated), by default 1k to 1M.
fn sizes() -> Vec<usize> {
    std::env::var("SLUICE_MATCHER_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000, 1_000_000])
}

fn indexed_and_brute(c: &mut Criterion, group_name: &str, mixed: bool) {
    let table = table();
    let mut group = c.benchmark_group(group_name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500));
    group.throughput(Throughput::Elements(1));
    for n in sizes() {
        let mut rng = StdRng::seed_from_u64(n as u64);
        let built = build(|| {
            let mut shapes = if mixed {
                mixed_shapes(&table, n, &mut rng)
            } else {
                eq_shapes(&table, n, &mut rng)
            };
            if mixed {
                shapes.extend(residual_shapes(&table));
            }
            shapes
        });
        let changes = changes(n, &mut rng);
        let (p50, p99) = percentiles(&built.matcher, &changes);
        let mut out = Vec::new();
        let (mut cands, mut hits) = (0usize, 0usize);
        for (old, new) in &changes {
            cands += built
                .matcher
                .match_change("items", Some(old), Some(new), &mut out)
                .candidates;
            hits += out.len();
        }
        println!(
            "{group_name}/indexed/{n}: p50 {p50:?} p99 {p99:?}; {:.1} candidates and {:.1} \
             matches per change; shape {:.0} B + index {:.0} B = {:.0} B per shape",
            cands as f64 / changes.len() as f64,
            hits as f64 / changes.len() as f64,
            built.shape_bytes,
            built.index_bytes,
            built.shape_bytes + built.index_bytes,
        );
        group.measurement_time(Duration::from_secs(if n >= 100_000 { 3 } else { 2 }));
        group.bench_with_input(BenchmarkId::new("indexed", n), &n, |b, _| {
            let mut i = 0;
            let mut out = Vec::new();
            b.iter(|| {
                let (old, new) = &changes[i % changes.len()];
                i += 1;
                built
                    .matcher
                    .match_change("items", Some(old), Some(new), &mut out)
            })
        });
        if n <= 100_000 {
            group.bench_with_input(BenchmarkId::new("brute_force", n), &n, |b, _| {
                let mut i = 0;
                b.iter(|| {
                    let change = &changes[i % changes.len()];
                    i += 1;
                    brute_force(&built.shapes, change)
                })
            });
        }
    }
    group.finish();
}

fn matcher_eq(c: &mut Criterion) {
    indexed_and_brute(c, "matcher_eq", false);
}

fn matcher_mixed(c: &mut Criterion) {
    indexed_and_brute(c, "matcher_mixed", true);
}

/// Register then unregister 1000 new shapes on top of 100k registered ones.
fn matcher_churn(c: &mut Criterion) {
    const BASE: usize = 100_000;
    const BATCH: usize = 1_000;
    let table = table();
    let mut rng = StdRng::seed_from_u64(99);
    let mut built = build(|| mixed_shapes(&table, BASE, &mut rng));
    let extra = mixed_shapes(&table, BATCH, &mut StdRng::seed_from_u64(7));
    let mut group = c.benchmark_group("matcher_churn");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(BenchmarkId::new("register_unregister", BASE), |b| {
        b.iter(|| {
            let ids: Vec<_> = extra
                .iter()
                .map(|s| built.matcher.register(s.clone()))
                .collect();
            for id in ids {
                built.matcher.unregister(id);
            }
        })
    });
    group.finish();
    let start = Instant::now();
    let rounds = 50;
    for _ in 0..rounds {
        let ids: Vec<_> = extra
            .iter()
            .map(|s| built.matcher.register(s.clone()))
            .collect();
        for id in ids {
            built.matcher.unregister(id);
        }
    }
    let per_second = (rounds * BATCH) as f64 / start.elapsed().as_secs_f64();
    println!("matcher_churn: {per_second:.0} register+unregister pairs per second");
}

criterion_group!(benches, matcher_eq, matcher_mixed, matcher_churn);
criterion_main!(benches);
