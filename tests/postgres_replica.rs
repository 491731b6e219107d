//! The store as a replica of PostgreSQL, without PostgreSQL: an identity shared by every
//! server, an initial copy that sets where the log starts, replicated transactions under
//! the sparse sync ids PostgreSQL gives them (commit LSNs), applied once, recorded client
//! transactions, and retention that counts transactions rather than ids.

use std::ops::ControlFlow;
use std::sync::Arc;

use sluice::ids::{ClientId, SyncId};
use sluice::query::Params;
use sluice::store::{
    Change, CommitObserver, LogRead, ReplicatedTxn, RowOp, SqliteStore, Store, StoreError,
    StoreOptions, TxnView,
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
        origins: Vec::new(),
        resync: false,
    };
    let first = store
        .apply_replicated(
            txn(1500, vec![upsert(&schema, 2, "b", Some(5))]),
            &mut Quiet,
        )
        .unwrap();
    assert_eq!(first.len(), 1);
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
    assert!(again.is_empty());
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
                origins: Vec::new(),
                resync: true,
            },
            &mut Quiet,
        )
        .unwrap();
    assert_eq!(changes.len(), 4);
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
