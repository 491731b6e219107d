//! The SQLite store's outcome records and change log positions through its public API: a
//! client's transactions committed one after another share one record, and every one of
//! them is still answered with its own sync id when resent; pruning by count may cut such
//! a run, and what it cut is refused `expired`; reads and compaction start in the middle
//! of a batch; a database written by the previous version opens and answers.

mod common;

use std::time::Duration;

use common::store::*;
use sluice::store::{RejectCode, Store, SyncId, TxnOutcome, WriteTxn};

/// Client `c`'s transactions `seqs`, each inserting item `c-seq`, in one batch.
fn batch(c: &str, seqs: impl IntoIterator<Item = u64>) -> Vec<WriteTxn> {
    seqs.into_iter()
        .map(|seq| client_txn(c, seq, vec![item(&format!("{c}-{seq}"), "T1")]))
        .collect()
}

/// Resends `seq` of client `c` (with a row it would insert if applied) and returns the
/// answer.
fn resend(store: &impl Store, c: &str, seq: u64) -> TxnOutcome {
    let again = client_txn(c, seq, vec![item(&format!("again-{c}-{seq}"), "T1")]);
    store.apply(vec![again]).unwrap().remove(0)
}

fn sync_ids(outcomes: &[TxnOutcome]) -> Vec<SyncId> {
    outcomes.iter().map(|o| o.sync_id().unwrap()).collect()
}

/// What a resend answers for `outcome`: the same, without the changes.
fn as_resent(outcome: &TxnOutcome) -> TxnOutcome {
    match outcome {
        TxnOutcome::Committed { sync_id, .. } => TxnOutcome::Committed {
            sync_id: *sync_id,
            changes: Vec::new(),
        },
        other => other.clone(),
    }
}

fn expired(outcome: TxnOutcome) {
    let (code, message) = rejected(outcome);
    assert_eq!(code, RejectCode::Expired, "{message}");
}

#[test]
fn every_transaction_of_a_run_is_answered_with_its_own_sync_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = sync_ids(&store.apply(batch("c1", 1..=5)).unwrap());
    // Interleaved clients, a gap and a rejection break runs.
    let mut mixed = batch("c2", [1]);
    mixed.extend(batch("c1", [6]));
    mixed.extend(batch("c2", [2]));
    mixed.extend(batch("c1", [8]));
    mixed.push(client_txn("c1", 9, vec![delete("items", t("nothing"))]));
    mixed.extend(batch("c1", [10, 11]));
    let outcomes = store.apply(mixed).unwrap();
    let (code, _) = rejected(outcomes[4].clone());
    assert_eq!(code, RejectCode::NotFound);

    let head = store.head();
    for (seq, sync_id) in (1..=5).zip(&first) {
        assert_eq!(
            resend(&store, "c1", seq).sync_id(),
            Some(*sync_id),
            "c1 {seq}"
        );
    }
    for (at, (c, seq)) in [("c2", 1), ("c1", 6), ("c2", 2), ("c1", 8), ("c1", 9)]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            resend(&store, c, seq),
            as_resent(&outcomes[at]),
            "{c} {seq}"
        );
    }
    assert_eq!(resend(&store, "c1", 11).sync_id(), outcomes[6].sync_id());
    assert_eq!(store.head(), head, "no resend was applied again");
    // A number skipped in between was never seen: it is applied.
    let (s, _) = committed(resend(&store, "c1", 7));
    assert!(s > head);
    // Resends in one batch with new transactions, after a restart.
    drop(store);
    let store = open(dir.path());
    let mut again = batch("c1", [3, 12, 4]);
    again.extend(batch("c1", [13]));
    let outcomes = store.apply(again).unwrap();
    assert_eq!(outcomes[0].sync_id(), Some(first[2]));
    assert_eq!(outcomes[2].sync_id(), Some(first[3]));
    assert_eq!(
        sync_ids(&outcomes[1..2]),
        vec![SyncId(s.0 + 1)],
        "12 is new"
    );
    assert_eq!(resend(&store, "c1", 12).sync_id(), outcomes[1].sync_id());
    assert_eq!(resend(&store, "c1", 13).sync_id(), outcomes[3].sync_id());
}

#[test]
fn pruning_by_count_cuts_a_run_and_refuses_what_it_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let run = sync_ids(&store.apply(batch("c1", 1..=5)).unwrap());
    std::thread::sleep(Duration::from_millis(5));
    let other = sync_ids(&store.apply(batch("c2", [1])).unwrap());

    assert_eq!(
        store.prune_outcomes(Duration::from_secs(3600), 6).unwrap(),
        0
    );
    assert_eq!(
        store.prune_outcomes(Duration::from_secs(3600), 4).unwrap(),
        2
    );
    let head = store.head();
    expired(resend(&store, "c1", 1));
    expired(resend(&store, "c1", 2));
    for seq in 3..=5 {
        assert_eq!(
            resend(&store, "c1", seq).sync_id(),
            Some(run[seq as usize - 1])
        );
    }
    assert_eq!(store.head(), head, "nothing was applied again");
    // The rest of the run goes next, down to its last outcome.
    assert_eq!(
        store.prune_outcomes(Duration::from_secs(3600), 2).unwrap(),
        2
    );
    expired(resend(&store, "c1", 4));
    assert_eq!(resend(&store, "c1", 5).sync_id(), Some(run[4]));
    assert_eq!(resend(&store, "c2", 1).sync_id(), Some(other[0]));
    // By age, everything goes, whole.
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(store.prune_outcomes(Duration::ZERO, 100).unwrap(), 2);
    expired(resend(&store, "c1", 5));
    expired(resend(&store, "c2", 1));
    // New transactions still apply, and form runs again.
    let next = sync_ids(&store.apply(batch("c1", 6..=8)).unwrap());
    assert_eq!(resend(&store, "c1", 7).sync_id(), Some(next[1]));
}

#[test]
fn the_log_reads_and_compacts_from_the_middle_of_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids = sync_ids(&store.apply(batch("c1", 1..=10)).unwrap());
    store.apply(batch("c1", 11..=12)).unwrap();
    let after = |s: SyncId| {
        log_after(&store, s)
            .iter()
            .map(|c| c.sync_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        after(ids[6]),
        (ids[7].0..=ids[9].0 + 2).map(SyncId).collect::<Vec<_>>()
    );
    assert_eq!(after(store.head()), vec![]);
    assert_eq!(store.compact(ids[3]).unwrap(), 4);
    assert_eq!(after(ids[3]).len(), 8);
    assert_eq!(store.compact(ids[9]).unwrap(), 6);
    assert_eq!(after(ids[9]).len(), 2);
    // Emptied, the log goes on from the head.
    assert_eq!(store.compact(store.head()).unwrap(), 2);
    let head = store.head();
    let more = sync_ids(&store.apply(batch("c1", 13..=14)).unwrap());
    assert_eq!(after(head), more);
}

#[test]
fn a_database_of_the_previous_version_opens_and_answers_resends() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids = sync_ids(&store.apply(batch("c1", 1..=3)).unwrap());
    drop(store);
    // As the previous version left it: one record per outcome, without `last_seq`, and
    // the log a row per change, indexed by `(sync_id, seq)`.
    to_previous_log_format(&dir.path().join("db.sqlite"));
    {
        let db = rusqlite::Connection::open(dir.path().join("db.sqlite")).unwrap();
        db.execute_batch(
            "CREATE TABLE old_txns AS SELECT client_id, seq, sync_id, reject_code, message, \
               recorded_at_ms FROM _sluice_client_txns WHERE 0; \
             INSERT INTO old_txns VALUES ('c1', 1, 1, NULL, NULL, 0), \
               ('c1', 2, 2, NULL, NULL, 0), ('c1', 3, 3, NULL, NULL, 0); \
             DROP TABLE _sluice_client_txns; \
             CREATE TABLE _sluice_client_txns (client_id TEXT NOT NULL, seq INTEGER NOT NULL, \
               sync_id INTEGER, reject_code TEXT, message TEXT, \
               recorded_at_ms INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (client_id, seq)) \
               WITHOUT ROWID; \
             INSERT INTO _sluice_client_txns SELECT * FROM old_txns; DROP TABLE old_txns;",
        )
        .unwrap();
    }
    assert_eq!(ids, vec![SyncId(1), SyncId(2), SyncId(3)]);
    let store = open(dir.path());
    for seq in 1..=3 {
        assert_eq!(resend(&store, "c1", seq).sync_id(), Some(SyncId(seq)));
    }
    assert_eq!(log_after(&store, SyncId(1)).len(), 2);
    let next = sync_ids(&store.apply(batch("c1", 4..=6)).unwrap());
    assert_eq!(resend(&store, "c1", 5).sync_id(), Some(next[1]));
    drop(store);
    let db = rusqlite::Connection::open(dir.path().join("db.sqlite")).unwrap();
    let indexed: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = '_sluice_log_sync'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        indexed, 0,
        "the log's old index is dropped, with the old log"
    );
}
