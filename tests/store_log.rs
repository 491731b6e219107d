//! The SQLite store's change log: reads after any sync id, compaction moving the horizon
//! (old readers must re-bootstrap), retention, and fetching rows by key at a sync id.

mod common;

use std::ops::ControlFlow;
use std::time::Duration;

use common::store::*;
use sluice::store::{LogRead, Store, StoreError, SyncId};
use sluice::Value;

#[test]
fn read_log_after_various_sync_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for n in 0..5 {
        let muts = vec![item(&format!("a{n}"), "T"), item(&format!("b{n}"), "T")];
        committed(apply_one(&store, txn(muts)));
    }
    let head = store.head();
    assert_eq!(head, SyncId(5));
    for after in 0..=5u64 {
        let log = log_after(&store, SyncId(after));
        assert_eq!(log.len() as u64, (5 - after) * 2);
        assert!(log.iter().all(|c| c.sync_id > SyncId(after)));
        assert!(log.windows(2).all(|w| w[0].sync_id <= w[1].sync_id));
    }
    assert!(log_after(&store, SyncId(99)).is_empty());

    let mut seen = Vec::new();
    let end = store
        .read_log(SyncId(1), &mut |c| {
            seen.push(c.key.clone());
            if seen.len() == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(end, LogRead::Stopped { last: SyncId(3) });
    assert_eq!(seen, vec![t("a1"), t("b1"), t("a2")]);
}

#[test]
fn compaction_moves_the_horizon_and_old_readers_must_rebootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for n in 0..6 {
        committed(apply_one(&store, txn(vec![item(&format!("a{n}"), "T")])));
    }
    assert_eq!(store.horizon(), SyncId::ZERO);
    assert_eq!(store.compact(SyncId(2)).unwrap(), 2);
    assert_eq!(store.horizon(), SyncId(2));
    let mut called = false;
    let end = store
        .read_log(SyncId(1), &mut |_| {
            called = true;
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(end, LogRead::Compacted { horizon: SyncId(2) });
    assert!(!called);
    let rest = log_after(&store, SyncId(2));
    assert_eq!(rest.first().map(|c| c.sync_id), Some(SyncId(3)));
    assert_eq!(rest.len(), 4);

    assert_eq!(
        store.compact(SyncId(1)).unwrap(),
        0,
        "the horizon never moves back"
    );
    assert_eq!(store.compact(SyncId(100)).unwrap(), 4, "capped at the head");
    assert_eq!(store.horizon(), SyncId(6));
    assert!(log_after(&store, SyncId(6)).is_empty());

    // The data is untouched, and the horizon survives a restart.
    drop(store);
    let store = open(dir.path());
    assert_eq!((store.head(), store.horizon()), (SyncId(6), SyncId(6)));
    assert_eq!(all_rows(&store, "SELECT * FROM items").1.len(), 6);
    committed(apply_one(&store, txn(vec![item("late", "T")])));
    assert_eq!(log_after(&store, SyncId(6)).len(), 1);
}

#[test]
fn retention_keeps_the_last_transactions_and_the_recent_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for n in 0..10 {
        committed(apply_one(&store, txn(vec![item(&format!("a{n}"), "T")])));
    }
    let hour = Some(Duration::from_secs(3600));
    assert_eq!(
        store.compact_retain(3, hour).unwrap(),
        0,
        "all younger than an hour"
    );
    assert_eq!(store.horizon(), SyncId::ZERO);
    assert_eq!(store.compact_retain(3, None).unwrap(), 7);
    assert_eq!(store.horizon(), SyncId(7));
    assert_eq!(log_after(&store, SyncId(7)).len(), 3);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(store.compact_retain(1, Some(Duration::ZERO)).unwrap(), 2);
    assert_eq!(store.horizon(), SyncId(9));
}

#[test]
fn fetch_returns_rows_by_key_at_a_sync_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let muts = vec![
        item("a", "T1"),
        item("b", "T2"),
        insert("counters", &[("id", i(1)), ("v", i(10))]),
    ];
    committed(apply_one(&store, txn(muts)));
    let (w, rows) = store
        .fetch("items", &[t("b"), t("missing"), t("a")])
        .unwrap();
    assert_eq!(w, store.head());
    let ids: Vec<&Value> = rows.iter().map(|r| &r[0]).collect();
    assert_eq!(ids, vec![&t("b"), &t("a")]);
    assert_eq!(rows[0].len(), 7);
    let (_, rows) = store.fetch("COUNTERS", &[t("1"), i(2)]).unwrap();
    assert_eq!(rows, vec![vec![i(1), i(10)]]);
    assert!(matches!(
        store.fetch("nope", &[i(1)]),
        Err(StoreError::UnknownTable(_))
    ));
}

/// A store whose log was written a row per change (the format before chunks) opens with
/// its log moved into chunks, in one transaction at open: every change reads back the
/// same, compaction and new writes go on from there, and the old table is gone.
#[test]
fn a_log_of_the_previous_format_is_moved_into_chunks_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    committed(apply_one(
        &store,
        client_txn("c1", 1, vec![item("a", "T"), item("b", "T")]),
    ));
    committed(apply_one(
        &store,
        txn(vec![update("items", t("a"), &[("n", i(4))])]),
    ));
    committed(apply_one(
        &store,
        client_txn(
            "c2",
            9,
            vec![
                delete("items", t("b")),
                insert("counters", &[("id", i(1)), ("v", i(2))]),
            ],
        ),
    ));
    let before = log_after(&store, SyncId(0));
    assert_eq!(before.len(), 5);
    drop(store);
    let path = dir.path().join("db.sqlite");
    to_previous_log_format(&path);

    let store = open(dir.path());
    assert_eq!(log_after(&store, SyncId(0)), before);
    assert_eq!(log_after(&store, SyncId(2)), before[3..].to_vec());
    let db = rusqlite::Connection::open(&path).unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE name LIKE '_sluice_log%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        tables,
        vec!["_sluice_log"],
        "the old log and its index are dropped"
    );
    let old_columns: i64 = db
        .query_row(
            "SELECT count(*) FROM pragma_table_info('_sluice_log') WHERE name = 'tbl'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old_columns, 0);

    let (id, _) = committed(apply_one(&store, client_txn("c1", 2, vec![item("c", "U")])));
    assert_eq!(id, SyncId(4));
    let after = log_after(&store, SyncId(0));
    assert_eq!(&after[..5], &before[..]);
    assert_eq!(after[5].key, t("c"));
    assert_eq!(store.compact(SyncId(1)).unwrap(), 2);
    assert_eq!(log_after(&store, SyncId(1)), after[2..].to_vec());
    drop(store);
    // Opened again, nothing is moved twice.
    let store = open(dir.path());
    assert_eq!(log_after(&store, SyncId(1)), after[2..].to_vec());
}

/// A version of the previous log format opening a store of this one fails on every
/// statement of its log, rather than seeing an empty log (and telling a catching-up
/// client it has everything).
#[test]
fn the_previous_formats_statements_fail_on_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    committed(apply_one(&store, client_txn("c1", 1, vec![item("a", "T")])));
    drop(store);
    let db = rusqlite::Connection::open(dir.path().join("db.sqlite")).unwrap();
    // As the previous version created, read, appended to and compacted its log.
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sluice_log (sync_id INTEGER NOT NULL, \
         seq INTEGER NOT NULL, tbl TEXT NOT NULL, key NOT NULL, kind INTEGER NOT NULL, \
         old BLOB, new BLOB, client_id TEXT, client_seq INTEGER)",
    )
    .unwrap();
    for sql in [
        "SELECT sync_id FROM _sluice_log WHERE rowid >= 1 ORDER BY rowid LIMIT 1",
        "SELECT sync_id, tbl, key, kind, old, new, client_id, client_seq FROM _sluice_log \
         WHERE rowid >= 1 AND sync_id <= 5 ORDER BY rowid",
        "INSERT INTO _sluice_log (sync_id, seq, tbl, key, kind, old, new, client_id, \
         client_seq) VALUES (2, 0, 'items', 'b', 1, NULL, NULL, NULL, NULL)",
    ] {
        let failed = db.prepare(sql).err().map(|e| e.to_string());
        assert!(
            failed
                .as_deref()
                .is_some_and(|e| e.contains("no such column") || e.contains("has no column named")),
            "{sql}: {failed:?}"
        );
    }
}
