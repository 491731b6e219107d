//! Snapshots of the SQLite store: exactly the rows a shape matches (with the count
//! estimate), streaming that the callback can stop, and a consistent cut at the snapshot's
//! sync id while another thread writes.

mod common;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{mpsc, Arc};

use common::store::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::store::{Mutation, SqliteStore, Store, StoreOptions, SyncId};
use sluice::{compile, Params, Schema, Value};

/// Random issues in the example tracker schema.
fn tracker_store(dir: &Path, rows: usize) -> SqliteStore {
    let schema = Arc::new(Schema::load_dir(Path::new("schema")).unwrap());
    let store = SqliteStore::open(dir.join("t.db"), schema, StoreOptions::default()).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let statuses = ["backlog", "todo", "in_progress", "done", "Done"];
    let pick_null = |rng: &mut StdRng, v: Value| if rng.gen_bool(0.2) { Value::Null } else { v };
    let mut txns = Vec::new();
    for n in 0..rows {
        let team = t(&format!("T{}", rng.gen_range(0..4)));
        let status = t(statuses[rng.gen_range(0..statuses.len())]);
        let estimate = Value::Real(rng.gen_range(0..20) as f64 / 2.0);
        let values = vec![
            ("id".to_string(), t(&format!("I{n:04}"))),
            ("team_id".to_string(), team),
            ("number".to_string(), i(n as i64)),
            (
                "title".to_string(),
                t(&format!("issue {}", rng.gen_range(0..50))),
            ),
            ("status".to_string(), status),
            ("priority".to_string(), i(rng.gen_range(0..5))),
            (
                "assignee_id".to_string(),
                pick_null(&mut rng, t(&format!("U{}", n % 7))),
            ),
            ("estimate".to_string(), pick_null(&mut rng, estimate)),
        ];
        txns.push(txn(vec![Mutation::Insert {
            table: "issues".into(),
            values,
        }]));
    }
    assert!(store
        .apply(txns)
        .unwrap()
        .iter()
        .all(|o| o.sync_id().is_some()));
    store
}

#[test]
fn snapshot_returns_exactly_the_matching_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = tracker_store(dir.path(), 400);
    let (_, everything) = all_rows(&store, "SELECT * FROM issues");
    assert_eq!(everything.len(), 400);
    let queries = [
        "SELECT * FROM issues WHERE team_id = 'T1' AND status != 'done'",
        "SELECT * FROM issues WHERE status IN ('todo', 'Done') OR priority >= 3",
        "SELECT * FROM issues WHERE assignee_id IS NULL",
        "SELECT * FROM issues WHERE NOT (estimate > 4)",
        "SELECT * FROM issues WHERE status LIKE 'do%' AND estimate BETWEEN 1 AND 5",
        "SELECT * FROM issues WHERE priority = '2'",
        "SELECT id, title FROM issues WHERE title GLOB '*1*' AND team_id NOT IN ('T0', 'T3')",
        "SELECT * FROM issues WHERE team_id = 'nobody'",
    ];
    for sql in queries {
        let shape = compile(store.schema(), sql, &Params::new()).unwrap();
        let (w, rows) = all_rows(&store, sql);
        assert_eq!(w, store.head());
        let expected: Vec<Vec<Value>> = everything
            .iter()
            .filter(|r| shape.matches(r))
            .cloned()
            .collect();
        let mut got = rows.clone();
        got.sort_by(|a, b| a[0].sqlite_cmp(&b[0]));
        assert_eq!(got, expected, "{sql}");
        assert!(
            rows.iter().all(|r| r.len() == shape.table().columns.len()),
            "full rows"
        );
        assert_eq!(
            store.count_estimate(&shape).unwrap(),
            expected.len() as u64,
            "{sql}"
        );
    }
}

#[test]
fn snapshot_streams_and_the_callback_can_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = tracker_store(dir.path(), 100);
    let shape = compile(store.schema(), "SELECT * FROM issues", &Params::new()).unwrap();
    let mut seen = 0;
    let w = store
        .snapshot(&shape, &mut |_| {
            seen += 1;
            if seen == 5 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(seen, 5);
    assert_eq!(w, store.head());
}

/// Replays the log up to and including `at` into table rows keyed by primary key.
fn state_at(store: &SqliteStore, table: &str, at: SyncId) -> BTreeMap<String, Vec<Value>> {
    let mut rows = BTreeMap::new();
    store
        .read_log(SyncId::ZERO, &mut |c| {
            if c.sync_id > at {
                return ControlFlow::Break(());
            }
            if c.table == table {
                let key = c.key.to_sql_literal();
                match c.new {
                    Some(new) => rows.insert(key, new),
                    None => rows.remove(&key),
                };
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    rows
}

#[test]
fn snapshot_is_consistent_at_its_sync_id_while_another_thread_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let seed: Vec<Mutation> = (0..50).map(|n| item(&format!("s{n:03}"), "T1")).collect();
    committed(apply_one(&store, txn(seed)));

    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for round in 0..3 {
                go_rx.recv().unwrap();
                // Each transaction inserts a row, updates one and deletes one.
                for k in 0..10 {
                    let n = round * 10 + k;
                    let muts = vec![
                        item(&format!("w{n:03}"), "T1"),
                        update(
                            "items",
                            t(&format!("s{:03}", 30 + n % 20)),
                            &[("n", i(n + 1))],
                        ),
                        delete("items", t(&format!("s{n:03}"))),
                    ];
                    committed(apply_one(&store, txn(muts)));
                }
                done_tx.send(()).unwrap();
            }
        })
    };

    let shape = compile(
        store.schema(),
        "SELECT * FROM items WHERE team = 'T1'",
        &Params::new(),
    )
    .unwrap();
    for _ in 0..3 {
        let mut rows = Vec::new();
        let w = store
            .snapshot(&shape, &mut |row| {
                if rows.is_empty() {
                    // Let the writer commit ten transactions in the middle of the read.
                    go_tx.send(()).unwrap();
                    done_rx.recv().unwrap();
                }
                rows.push(row);
                ControlFlow::Continue(())
            })
            .unwrap();
        assert!(w < store.head(), "the writer committed during the snapshot");
        let expected: Vec<Vec<Value>> = state_at(&store, "items", w).into_values().collect();
        rows.sort_by(|a, b| a[0].sqlite_cmp(&b[0]));
        assert_eq!(rows, expected, "snapshot equals the log replayed to {w}");
    }
    writer.join().unwrap();
}
