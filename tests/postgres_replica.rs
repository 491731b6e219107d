//! The store as a replica of PostgreSQL, without PostgreSQL: an identity shared by every
//! server, an initial copy that sets where the log starts, replicated transactions under
//! the sparse sync ids PostgreSQL gives them (commit LSNs), applied once, recorded client
//! transactions, and retention that counts transactions rather than ids.

use std::ops::ControlFlow;
use std::sync::Arc;

use sluice::ids::{ClientId, SyncId};
use sluice::query::Params;
use sluice::store::{
    Change, CommitObserver, LogRead, Replicated, ReplicatedTxn, RowOp, SqliteStore, Store,
    StoreError, StoreOptions, TxnView,
};
use sluice::value::Value;
use sluice::Schema;

struct Quiet;

impl CommitObserver for Quiet {
    fn committed(&mut self, _: &dyn TxnView, _: SyncId, _: &[Change]) -> Result<(), StoreError> {
        Ok(())
    }

    fn finished(&mut self, _: bool) {}
}

fn schema() -> Arc<Schema> {
    Arc::new(
        Schema::parse(
            "t.sql",
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, n INTEGER);",
        )
        .unwrap(),
    )
}

fn upsert(schema: &Schema, id: i64, name: &str, n: Option<i64>) -> RowOp {
    RowOp::Upsert {
        table: schema.table("items").unwrap().clone(),
        row: vec![
            Some(Value::Integer(id)),
            Some(Value::Text(name.into())),
            n.map(Value::Integer),
        ],
    }
}

fn log(store: &SqliteStore, after: u64) -> (Vec<(u64, String)>, bool) {
    let mut seen = Vec::new();
    let read = store
        .read_log(SyncId(after), &mut |c| {
            seen.push((c.sync_id.0, format!("{:?} {}", c.kind, c.key)));
            ControlFlow::Continue(())
        })
        .unwrap();
    (seen, matches!(read, LogRead::Complete { .. }))
}

#[test]
fn a_replica_applies_sparse_sync_ids_once_and_retains_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let schema = schema();
    let path = dir.path().join("replica.db");
    std::fs::write(&path, b"an old replica is replaced").unwrap();
    let store =
        SqliteStore::open_replica(&path, schema.clone(), StoreOptions::default(), "shared-id")
            .unwrap();
    assert_eq!(
        store.server_id(),
        "shared-id",
        "every server announces the database's id"
    );

    let table = schema.table("items").unwrap().clone();
    store
        .load_rows(
            &table,
            &[vec![
                Value::Integer(1),
                Value::Text("a".into()),
                Value::Null,
            ]],
        )
        .unwrap();
    store.finish_copy(SyncId(1000)).unwrap();
    assert_eq!(
        (store.head(), store.horizon()),
        (SyncId(1000), SyncId(1000))
    );

    let txn = |sync_id: u64, ops: Vec<RowOp>| ReplicatedTxn {
        sync_id: SyncId(sync_id),
        ops,
        ..ReplicatedTxn::default()
    };
    let first = store
        .apply_replicated(
            txn(1500, vec![upsert(&schema, 2, "b", Some(5))]),
            &mut Quiet,
        )
        .unwrap();
    assert_eq!(first.changes().len(), 1);
    // A value PostgreSQL did not resend (None) keeps the replica's.
    let mut keep = upsert(&schema, 2, "b2", None);
    if let RowOp::Upsert { row, .. } = &mut keep {
        row[2] = None;
    }
    let mut with_origin = txn(1700, vec![keep]);
    with_origin.origins.push((ClientId("c".into()), 7));
    store.apply_replicated(with_origin, &mut Quiet).unwrap();
    store
        .apply_replicated(
            txn(
                2100,
                vec![RowOp::Delete {
                    table: table.clone(),
                    key: Value::Integer(1),
                }],
            ),
            &mut Quiet,
        )
        .unwrap();
    // Already applied (a stream restarted behind the head): skipped.
    let again = store
        .apply_replicated(txn(1700, vec![upsert(&schema, 9, "x", None)]), &mut Quiet)
        .unwrap();
    assert!(again.changes().is_empty());
    assert_eq!(store.head(), SyncId(2100));

    let (changes, complete) = log(&store, 1000);
    assert!(complete);
    assert_eq!(
        changes,
        [
            (1500, "Insert 2".to_string()),
            (1700, "Update 2".to_string()),
            (2100, "Delete 1".to_string()),
        ]
    );
    assert_eq!(
        store.recorded_sync_id(&ClientId("c".into()), 7).unwrap(),
        Some(SyncId(1700))
    );
    let shape = sluice::compile(&schema, "SELECT * FROM items", &Params::new()).unwrap();
    let mut rows = Vec::new();
    let at = store
        .snapshot(&shape, &mut |r| {
            rows.push(r);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(at, SyncId(2100));
    assert_eq!(
        rows,
        [vec![
            Value::Integer(2),
            Value::Text("b2".into()),
            Value::Integer(5)
        ]]
    );

    // Keep the last two transactions: 1700 and 2100 stay, whatever the gaps between ids.
    store.compact_retain(2, None).unwrap();
    assert_eq!(store.horizon(), SyncId(1500));
    let (changes, complete) = log(&store, 1500);
    assert!(complete);
    assert_eq!(changes.len(), 2);
}

#[test]
fn a_resync_turns_the_replica_into_the_staged_state_and_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let schema = schema();
    let table = schema.table("items").unwrap().clone();
    let store = SqliteStore::open_replica(
        &dir.path().join("replica.db"),
        schema.clone(),
        StoreOptions::default(),
        "id",
    )
    .unwrap();
    let row = |id: i64, name: &str, n: Option<i64>| {
        vec![
            Value::Integer(id),
            Value::Text(name.into()),
            n.map_or(Value::Null, Value::Integer),
        ]
    };
    let copied = [
        row(1, "same", Some(1)),
        row(2, "null stays null", None),
        row(3, "renamed later", Some(3)),
        row(4, "deleted later", Some(4)),
        row(5, "null later", Some(5)),
    ];
    let now = [
        row(1, "same", Some(1)),
        row(2, "null stays null", None),
        row(3, "renamed", Some(3)),
        row(5, "null later", None),
        row(6, "new", Some(6)),
    ];
    let stage = |rows: &[Vec<Value>]| {
        store.begin_resync().unwrap();
        store.load_resync_rows(&table, rows).unwrap();
    };
    store.load_rows(&table, &copied).unwrap();
    store.finish_copy(SyncId(100)).unwrap();

    // Nothing changed: no operation at all.
    stage(&copied);
    assert!(store.resync_diff().unwrap().is_empty());

    // A staging left by a failed resync is dropped by the next one.
    stage(&[row(9, "stale", None)]);
    stage(&now);
    let ops = store.resync_diff().unwrap();
    let mut described: Vec<String> = ops
        .iter()
        .map(|op| match op {
            RowOp::Upsert { row, .. } => format!("upsert {:?}", row),
            RowOp::Delete { key, .. } => format!("delete {key}"),
            RowOp::Truncate { .. } => "truncate".into(),
        })
        .collect();
    described.sort();
    let upsert_of =
        |r: Vec<Value>| format!("upsert {:?}", r.into_iter().map(Some).collect::<Vec<_>>());
    let mut expected = vec![
        "delete 4".to_string(),
        upsert_of(row(3, "renamed", Some(3))),
        upsert_of(row(5, "null later", None)),
        upsert_of(row(6, "new", Some(6))),
    ];
    expected.sort();
    assert_eq!(described, expected);

    // Applied as one replicated transaction, the replica holds the staged state.
    let changes = store
        .apply_replicated(
            ReplicatedTxn {
                sync_id: SyncId(200),
                ops,
                resync: true,
                ..ReplicatedTxn::default()
            },
            &mut Quiet,
        )
        .unwrap();
    assert_eq!(changes.changes().len(), 4);
    // From the old head the log brings a reader to the new state; from a cut inside the
    // gap it cannot (a row inserted and deleted there is in no change): that read is
    // refused like one below the horizon, and the horizon itself stays.
    let (logged, complete) = log(&store, 100);
    assert!(complete);
    assert_eq!(logged.len(), 4, "{logged:?}");
    for inside in [101, 150, 199] {
        let read = store
            .read_log(SyncId(inside), &mut |_| ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(
            read,
            LogRead::Compacted {
                horizon: SyncId(200)
            },
            "a read from {inside}, inside the resynchronisation's gap"
        );
    }
    assert_eq!(store.horizon(), SyncId(100));
    let (logged, complete) = log(&store, 200);
    assert!(complete && logged.is_empty(), "{logged:?}");
    stage(&now);
    assert!(
        store.resync_diff().unwrap().is_empty(),
        "after the resync the replica equals the staged state"
    );
}

/// Records what a replica's writer tells its observer.
#[derive(Default)]
struct Told {
    /// The number of changes of each `committed` call.
    parts: Vec<usize>,
    spilled: usize,
    finished: Vec<bool>,
}

impl CommitObserver for Told {
    fn committed(
        &mut self,
        _: &dyn TxnView,
        _: SyncId,
        changes: &[Change],
    ) -> Result<(), StoreError> {
        self.parts.push(changes.len());
        Ok(())
    }

    fn spilled(&mut self) {
        self.spilled += 1;
    }

    fn finished(&mut self, committed: bool) {
        self.finished.push(committed);
    }
}

/// A replica that holds at most 3 changes of a transaction in memory, with rows 1..=n
/// copied at sync id 1000.
fn small_replica(dir: &std::path::Path, n: i64) -> (SqliteStore, Arc<Schema>) {
    let schema = schema();
    let options = StoreOptions::default().replicated_changes_in_memory(3);
    let store =
        SqliteStore::open_replica(&dir.join("r.db"), schema.clone(), options, "id").unwrap();
    let rows: Vec<Vec<Value>> = (1..=n)
        .map(|i| vec![Value::Integer(i), Value::Text(format!("r{i}")), Value::Null])
        .collect();
    store
        .load_rows(schema.table("items").unwrap(), &rows)
        .unwrap();
    store.finish_copy(SyncId(1000)).unwrap();
    (store, schema)
}

fn ids(dir: &std::path::Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(dir.join("r.db")).unwrap();
    let mut stmt = conn.prepare("SELECT id FROM items ORDER BY id").unwrap();
    let ids = stmt.query_map([], |r| r.get(0)).unwrap();
    ids.collect::<Result<_, _>>().unwrap()
}

fn part(ops: Vec<RowOp>, partial: bool) -> ReplicatedTxn {
    ReplicatedTxn {
        sync_id: SyncId(2000),
        ops,
        partial,
        ..ReplicatedTxn::default()
    }
}

#[test]
fn a_transaction_larger_than_the_replica_holds_is_applied_and_logged_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, schema) = small_replica(dir.path(), 0);
    let table = schema.table("items").unwrap().clone();
    let inserts = |ids: std::ops::RangeInclusive<i64>| -> Vec<RowOp> {
        ids.map(|i| upsert(&schema, i, "new", Some(i))).collect()
    };
    let mut first = part(inserts(1..=4), true);
    first.origins.push((ClientId("author".into()), 3));
    let mut parts = vec![
        first,
        part(inserts(5..=8), true),
        part(
            vec![
                upsert(&schema, 9, "new", Some(9)),
                RowOp::Delete {
                    table: table.clone(),
                    key: Value::Integer(1),
                },
            ],
            false,
        ),
    ]
    .into_iter();
    let mut told = Told::default();
    let applied = store
        .apply_replicated_parts(&mut || Ok(parts.next()), &mut told)
        .unwrap();
    match &applied {
        Replicated::Spilled { tables, changes } => {
            assert_eq!(tables, &vec!["items".to_string()]);
            assert_eq!(*changes, 10, "9 inserts and a delete");
        }
        other => panic!("expected a spilled transaction, got {other:?}"),
    }
    assert!(
        applied.changes().is_empty(),
        "no change is kept for the fan-out"
    );
    // The observer saw every change, never more than 3 at a time, and each part but the
    // last was marked spilled.
    assert_eq!(told.parts.iter().sum::<usize>(), 10);
    assert!(told.parts.iter().all(|&n| n <= 3), "{:?}", told.parts);
    assert_eq!(told.spilled, told.parts.len());
    assert_eq!(told.finished, vec![true]);
    assert_eq!(store.head(), SyncId(2000));
    assert_eq!(ids(dir.path()), (2..=9).collect::<Vec<_>>());
    // The log holds all ten changes in order, under the one sync id.
    let (logged, complete) = log(&store, 1000);
    assert!(complete);
    let expected: Vec<(u64, String)> = (1..=9)
        .map(|i| (2000, format!("Insert {i}")))
        .chain([(2000, "Delete 1".to_string())])
        .collect();
    assert_eq!(logged, expected);
    // The client transaction it carries is recorded, and its changes name their origin.
    assert_eq!(
        store
            .recorded_sync_id(&ClientId("author".into()), 3)
            .unwrap(),
        Some(SyncId(2000))
    );
    let mut origins = Vec::new();
    store
        .read_log(SyncId(1000), &mut |c| {
            origins.push(c.origin.clone());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(origins
        .iter()
        .all(|o| o == &Some((ClientId("author".into()), 3))));
}

#[test]
fn a_transaction_whose_parts_stop_early_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, schema) = small_replica(dir.path(), 2);
    let mut parts = vec![part(
        (3..=8).map(|i| upsert(&schema, i, "new", None)).collect(),
        true,
    )]
    .into_iter();
    let mut told = Told::default();
    let failed = store.apply_replicated_parts(&mut || Ok(parts.next()), &mut told);
    assert!(matches!(failed, Err(StoreError::Corrupt(_))), "{failed:?}");
    assert_eq!(
        told.finished,
        vec![false],
        "the observer undoes what it saw"
    );
    assert_eq!(store.head(), SyncId(1000));
    assert_eq!(ids(dir.path()), vec![1, 2]);
    let (logged, _) = log(&store, 1000);
    assert!(logged.is_empty(), "{logged:?}");
    // The next transaction applies normally.
    let next = store
        .apply_replicated(part(vec![upsert(&schema, 5, "x", None)], false), &mut told)
        .unwrap();
    assert_eq!(next.changes().len(), 1);
    assert_eq!(ids(dir.path()), vec![1, 2, 5]);
}

#[test]
fn a_truncate_of_more_rows_than_the_replica_holds_is_logged_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, schema) = small_replica(dir.path(), 7);
    let table = schema.table("items").unwrap().clone();
    let mut told = Told::default();
    let applied = store
        .apply_replicated(part(vec![RowOp::Truncate { table }], false), &mut told)
        .unwrap();
    assert!(
        matches!(&applied, Replicated::Spilled { changes: 7, .. }),
        "{applied:?}"
    );
    assert!(told.parts.iter().all(|&n| n <= 3), "{:?}", told.parts);
    assert!(ids(dir.path()).is_empty());
    let (logged, complete) = log(&store, 1000);
    assert!(complete);
    let mut deleted: Vec<String> = logged.into_iter().map(|(_, c)| c).collect();
    deleted.sort();
    let mut expected: Vec<String> = (1..=7).map(|i| format!("Delete {i}")).collect();
    expected.sort();
    assert_eq!(deleted, expected);
    // Within the bound, a transaction's changes are kept for the fan-out.
    let small = store
        .apply_replicated(
            ReplicatedTxn {
                sync_id: SyncId(3000),
                ops: (1..=2).map(|i| upsert(&schema, i, "y", None)).collect(),
                ..ReplicatedTxn::default()
            },
            &mut told,
        )
        .unwrap();
    assert_eq!(small.changes().len(), 2);
}

#[test]
fn a_resync_is_compared_and_applied_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (store, schema) = small_replica(dir.path(), 7);
    let table = schema.table("items").unwrap().clone();
    // PostgreSQL now: row 1 gone, row 3 renamed, rows 8 and 9 new.
    let now: Vec<Vec<Value>> = (2..=9)
        .map(|i| {
            let name = if i == 3 {
                "renamed".into()
            } else {
                format!("r{i}")
            };
            vec![Value::Integer(i), Value::Text(name), Value::Null]
        })
        .collect();
    store.begin_resync().unwrap();
    store.load_resync_rows(&table, &now).unwrap();
    let mut told = Told::default();
    let applied = store.apply_resync(SyncId(1500), &mut told).unwrap();
    assert!(
        matches!(&applied, Replicated::Spilled { changes: 4, .. }),
        "{applied:?}"
    );
    assert!(told.parts.iter().all(|&n| n <= 3), "{:?}", told.parts);
    assert_eq!(ids(dir.path()), (2..=9).collect::<Vec<_>>());
    let conn = rusqlite::Connection::open(dir.path().join("r.db")).unwrap();
    let renamed: String = conn
        .query_row("SELECT name FROM items WHERE id = 3", [], |r| r.get(0))
        .unwrap();
    assert_eq!(renamed, "renamed");
    let (mut logged, complete) = log(&store, 1000);
    assert!(complete);
    logged.sort();
    let expected: Vec<(u64, String)> = ["Delete 1", "Insert 8", "Insert 9", "Update 3"]
        .into_iter()
        .map(|c| (1500, c.to_string()))
        .collect();
    assert_eq!(logged, expected);
    // Recorded as a gap, like a resynchronisation applied whole.
    let read = store
        .read_log(SyncId(1200), &mut |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(
        read,
        LogRead::Compacted {
            horizon: SyncId(1500)
        }
    );
    // The staging is gone, and a second comparison with the same rows finds nothing.
    store.begin_resync().unwrap();
    store.load_resync_rows(&table, &now).unwrap();
    assert!(store.resync_diff().unwrap().is_empty());
}
