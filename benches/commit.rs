//! Commit throughput: `N` client transactions of one insert each, applied through the
//! server's store in one group commit (`SqliteStore::apply`: savepoint per transaction,
//! schema checks, change log, idempotency record), against raw rusqlite inserting the same
//! rows into the same table in one transaction, with the same `synchronous` setting and
//! WAL mode.
//!
//! Ids: `commit/sluice/N` and `commit/raw_rusqlite/N`, throughput in rows. The setting is
//! `PRAGMA synchronous = FULL` (the store's default); set `SLUICE_BENCH_SYNC=normal` to
//! compare with `NORMAL` instead.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use rusqlite::Connection;
use sluice::ids::ClientId;
use sluice::schema::{quote_ident, Schema, Table};
use sluice::store::{
    Mutation, SqliteStore, Store, StoreOptions, Synchronous, TxnOutcome, WriteTxn,
};
use sluice::value::Value;

/// Transactions per batch.
const BATCHES: [usize; 3] = [1, 100, 1000];

fn synchronous() -> Synchronous {
    match std::env::var("SLUICE_BENCH_SYNC").as_deref() {
        Ok("normal") => Synchronous::Normal,
        _ => Synchronous::Full,
    }
}

fn pragma(sync: Synchronous) -> &'static str {
    match sync {
        Synchronous::Normal => "NORMAL",
        _ => "FULL",
    }
}

fn schema() -> Arc<Schema> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    Arc::new(Schema::load_dir(&dir).expect("example schema"))
}

/// The `n`-th issue row, as (column, value) pairs in the order the insert lists them.
fn issue(n: u64) -> Vec<(String, Value)> {
    vec![
        ("id".into(), Value::Text(format!("issue-{n:012}"))),
        ("team_id".into(), Value::Text(format!("T{}", n % 10))),
        ("number".into(), Value::Integer(n as i64)),
        ("title".into(), Value::Text(format!("Issue number {n}"))),
        ("status".into(), Value::Text("todo".into())),
        ("priority".into(), Value::Integer((n % 4) as i64)),
        (
            "created_at".into(),
            Value::Integer(1_700_000_000 + n as i64),
        ),
    ]
}

/// A raw database with the same `issues` table (and indexes) as the store creates.
fn raw_db(path: &Path, table: &Table, sync: Synchronous) -> Connection {
    let conn = Connection::open(path).expect("open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .expect("wal");
    assert!(mode.eq_ignore_ascii_case("wal"));
    conn.pragma_update(None, "synchronous", pragma(sync))
        .expect("synchronous");
    conn.execute_batch(&table.create_sql())
        .expect("create table");
    for index in table.index_sql() {
        conn.execute_batch(&index).expect("create index");
    }
    conn
}

fn bench_commit(c: &mut Criterion) {
    let sync = synchronous();
    let schema = schema();
    let table = schema.table("issues").expect("issues table").clone();
    let dir = tempfile::tempdir().expect("temporary folder");
    let options = StoreOptions::default().synchronous(sync);
    let store = SqliteStore::open(dir.path().join("sluice.db"), schema.clone(), options)
        .expect("store opens");
    let raw = raw_db(&dir.path().join("raw.db"), &table, sync);
    let columns: Vec<String> = issue(0).into_iter().map(|(c, _)| quote_ident(&c)).collect();
    let insert = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        quote_ident(&table.name),
        columns.join(", "),
        vec!["?"; columns.len()].join(", ")
    );
    let client = ClientId("bench-client".into());

    let mut group = c.benchmark_group("commit");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let mut next_row = 0u64;
    let mut next_seq = 0u64;
    let mut raw_row = 0u64;
    for n in BATCHES {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("sluice", n), &n, |b, &n| {
            b.iter_batched(
                || {
                    (0..n)
                        .map(|_| {
                            next_row += 1;
                            next_seq += 1;
                            WriteTxn {
                                origin: Some((client.clone(), next_seq)),
                                mutations: vec![Mutation::Insert {
                                    table: "issues".into(),
                                    values: issue(next_row),
                                }],
                                preconditions: Vec::new(),
                            }
                        })
                        .collect::<Vec<_>>()
                },
                |txns| {
                    let outcomes = store.apply(txns).expect("apply");
                    debug_assert!(outcomes
                        .iter()
                        .all(|o| matches!(o, TxnOutcome::Committed { .. })));
                    outcomes
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_with_input(BenchmarkId::new("raw_rusqlite", n), &n, |b, &n| {
            b.iter_batched(
                || {
                    (0..n)
                        .map(|_| {
                            raw_row += 1;
                            issue(raw_row).into_iter().map(|(_, v)| v).collect()
                        })
                        .collect::<Vec<Vec<Value>>>()
                },
                |rows| {
                    let tx = raw.unchecked_transaction().expect("begin");
                    {
                        let mut stmt = tx.prepare_cached(&insert).expect("prepare");
                        for row in &rows {
                            stmt.execute(rusqlite::params_from_iter(row.iter()))
                                .expect("insert");
                        }
                    }
                    tx.commit().expect("commit");
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
    // Every sluice transaction committed: one sync id each.
    assert_eq!(store.head().0, next_seq, "every transaction committed");
}

criterion_group!(benches, bench_commit);
criterion_main!(benches);
