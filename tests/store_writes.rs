//! The SQLite store's write path through its public API: inserts, updates and deletes
//! with their change log, one sync id per transaction, type affinity, group commit,
//! every rejection code, preconditions and idempotent resends of client transactions.

mod common;

use std::sync::Arc;

use common::store::*;
use sluice::store::{
    Change, ChangeKind, ClientId, Mutation, Precondition, RejectCode, SqliteStore, Store,
    StoreError, SyncId, TxnOutcome, WriteTxn,
};
use sluice::Value;

#[test]
fn store_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SqliteStore>();
    assert_send_sync::<Arc<dyn Store>>();
    assert_send_sync::<StoreError>();
}

#[test]
fn insert_update_delete_log_full_images_with_increasing_sync_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.head(), SyncId::ZERO);

    let (s1, c1) = committed(apply_one(
        &store,
        client_txn("c1", 1, vec![item("a", "T1")]),
    ));
    let row_a = vec![
        t("a"),
        t("T1"),
        i(0),
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
    ];
    assert_eq!(c1.len(), 1);
    assert_eq!(c1[0].kind, ChangeKind::Insert);
    assert_eq!(c1[0].table, "items");
    assert_eq!(c1[0].key, t("a"));
    assert_eq!(c1[0].old, None);
    assert_eq!(c1[0].new.as_ref(), Some(&row_a));
    assert_eq!(c1[0].origin, Some((ClientId("c1".into()), 1)));

    let set = [("n", i(5)), ("note", t("hi"))];
    let (s2, c2) = committed(apply_one(&store, txn(vec![update("items", t("a"), &set)])));
    let mut row_a2 = row_a.clone();
    row_a2[2] = i(5);
    row_a2[4] = t("hi");
    assert_eq!(c2[0].kind, ChangeKind::Update);
    assert_eq!(c2[0].old.as_ref(), Some(&row_a));
    assert_eq!(c2[0].new.as_ref(), Some(&row_a2));
    assert_eq!(c2[0].origin, None);

    let (s3, c3) = committed(apply_one(&store, txn(vec![delete("items", t("a"))])));
    assert_eq!(c3[0].kind, ChangeKind::Delete);
    assert_eq!(c3[0].old.as_ref(), Some(&row_a2));
    assert_eq!(c3[0].new, None);

    // An empty transaction still takes a sync id, and writes no change.
    let (s4, c4) = committed(apply_one(&store, txn(vec![])));
    assert!(c4.is_empty());

    assert!(SyncId::ZERO < s1 && s1 < s2 && s2 < s3 && s3 < s4);
    assert_eq!(store.head(), s4);
    let log = log_after(&store, SyncId::ZERO);
    let expected: Vec<Change> = [c1, c2, c3].concat();
    assert_eq!(log, expected);
}

#[test]
fn one_transaction_gets_one_sync_id_for_all_its_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let muts = vec![
        item("a", "T1"),
        item("b", "T1"),
        update("items", t("a"), &[("n", i(1))]),
        insert("counters", &[("id", i(1)), ("v", i(10))]),
    ];
    let (s, changes) = committed(apply_one(&store, txn(muts)));
    assert_eq!(changes.len(), 4);
    assert!(changes.iter().all(|c| c.sync_id == s));
    assert_eq!(log_after(&store, SyncId::ZERO), changes);
}

#[test]
fn images_are_read_back_with_sqlite_affinity_applied() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let values = [
        ("id", t("a")),
        ("team", t("T")),
        ("n", t(" 7 ")),
        ("score", i(3)),
        ("extra", Value::Blob(vec![1, 2])),
    ];
    let (_, changes) = committed(apply_one(&store, txn(vec![insert("items", &values)])));
    let new = changes[0].new.clone().unwrap();
    assert_eq!(new[2], i(7), "numeric text stored as INTEGER");
    assert_eq!(
        new[3],
        Value::Real(3.0),
        "integer stored in REAL column as REAL"
    );
    assert_eq!(new[6], Value::Blob(vec![1, 2]));

    // Integral reals go into INTEGER columns as integers; numeric text keys find rows.
    let insert_counter = insert("counters", &[("id", Value::Real(2.0)), ("v", t("4"))]);
    let (_, changes) = committed(apply_one(&store, txn(vec![insert_counter])));
    assert_eq!(changes[0].key, i(2));
    assert_eq!(changes[0].new, Some(vec![i(2), i(4)]));
    let bump = update("counters", t("2"), &[("v", Value::Real(5.0))]);
    let (_, changes) = committed(apply_one(&store, txn(vec![bump])));
    assert_eq!(changes[0].key, i(2));
    assert_eq!(changes[0].new, Some(vec![i(2), i(5)]));
    assert_eq!(log_after(&store, SyncId::ZERO).len(), 3);
}

/// Inserts whose stored row is known ahead are not read back: their images must still be
/// exactly the rows as stored, for every affinity, default and left-out column.
#[test]
fn insert_images_are_the_rows_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let values = [
        Value::Null,
        i(-3),
        Value::Real(2.5),
        Value::Real(4.0),
        Value::Real(-0.0),
        t("5"),
        t("x"),
        Value::Blob(vec![0, 7]),
    ];
    let mut inserts = Vec::new();
    for (n, value) in values.iter().enumerate() {
        for column in ["score", "note", "extra", "n"] {
            let id = format!("{column}-{n}");
            let mut row = vec![("id", t(&id)), ("team", t("T"))];
            row.push((column, value.clone()));
            inserts.push(txn(vec![insert("items", &row)]));
        }
    }
    let outcomes = store.apply(inserts).unwrap();
    let mut checked = 0;
    for outcome in outcomes {
        let TxnOutcome::Committed { changes, .. } = outcome else {
            continue; // a value the column does not take
        };
        let image = changes[0].new.clone().unwrap();
        let (_, stored) = store.fetch("items", &[image[0].clone()]).unwrap();
        assert_eq!(stored, vec![image], "image of {:?}", changes[0].key);
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} inserts committed");
}

#[test]
fn group_commit_isolates_a_failing_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let outcomes = store
        .apply(vec![
            client_txn("c1", 1, vec![item("a", "T1")]),
            // Its first insert succeeds, then the update fails: none of it may remain.
            client_txn(
                "c1",
                2,
                vec![item("b", "T1"), update("items", t("zz"), &[("n", i(1))])],
            ),
            client_txn("c2", 1, vec![item("c", "T2")]),
        ])
        .unwrap();
    assert_eq!(outcomes.len(), 3);
    let s1 = outcomes[0].sync_id().unwrap();
    let (code, message) = rejected(outcomes[1].clone());
    assert_eq!(code, RejectCode::NotFound);
    assert!(message.contains("items['zz']"), "{message}");
    let s3 = outcomes[2].sync_id().unwrap();
    assert_eq!(s3, s1.next(), "a rejected transaction consumes no sync id");
    assert_eq!(store.head(), s3);

    let (_, rows) = all_rows(&store, "SELECT * FROM items");
    let ids: Vec<&Value> = rows.iter().map(|r| &r[0]).collect();
    assert_eq!(ids, vec![&t("a"), &t("c")]);
    let keys: Vec<Value> = log_after(&store, SyncId::ZERO)
        .into_iter()
        .map(|c| c.key)
        .collect();
    assert_eq!(keys, vec![t("a"), t("c")]);
}

#[test]
fn every_reject_code_the_store_produces() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    committed(apply_one(&store, txn(vec![item("a", "T1")])));
    let mut code_row = vec![("id", t("u")), ("team", t("T")), ("code", t("X"))];
    committed(apply_one(&store, txn(vec![insert("items", &code_row)])));
    let head = store.head();

    use RejectCode::{AlreadyExists, Constraint, Invalid, NotFound, Schema};
    let x = |extra: &[(&str, Value)]| {
        let mut values = vec![("id", t("x")), ("team", t("T"))];
        for (c, v) in extra {
            values.retain(|(name, _)| name != c);
            values.push((c, v.clone()));
        }
        vec![insert("items", &values)]
    };
    let set_a = |c: &str, v: Value| vec![update("items", t("a"), &[(c, v)])];
    let counter = |v: i64| insert("counters", &[("id", i(1)), ("v", i(v))]);
    #[rustfmt::skip]
    let cases: Vec<(Vec<Mutation>, RejectCode, &[&str])> = vec![
        (vec![insert("nope", &[("id", t("x"))])], Schema, &["unknown table nope"]),
        (x(&[("bogus", i(1))]), Schema, &["unknown column items.bogus"]),
        (set_a("bogus", i(1)), Schema, &["items.bogus"]),
        (vec![insert("items", &[("team", t("T"))])], Schema, &["primary key id"]),
        (x(&[("id", Value::Null)]), Schema, &["primary key items.id is NULL"]),
        (x(&[("n", t("many"))]), Schema, &["type mismatch", "items.n", "INTEGER", "text"]),
        (x(&[("n", Value::Real(1.5))]), Schema, &["items.n", "real"]),
        (x(&[("team", i(3))]), Schema, &["items.team", "TEXT", "integer"]),
        (set_a("score", Value::Blob(vec![1])), Schema, &["items.score", "REAL", "blob"]),
        (set_a("score", Value::Real(f64::NAN)), Schema, &["items.score"]),
        (vec![update("items", t("zz"), &[])], Invalid, &["sets no columns"]),
        (vec![update("items", t("zz"), &[("n", i(1))])], NotFound, &["no row items['zz']"]),
        (vec![delete("items", t("zz"))], NotFound, &["items['zz']"]),
        (vec![item("a", "T9")], AlreadyExists, &["items['a'] already exists"]),
        (vec![counter(1), counter(2)], AlreadyExists, &["counters[1]"]),
        (x(&[("team", Value::Null)]), Constraint, &["NOT NULL", "items.team"]),
        (vec![insert("items", &[("id", t("x"))])], Constraint, &["items.team"]),
        (set_a("n", Value::Null), Constraint, &["NOT NULL", "items.n"]),
        (set_a("n", i(-1)), Constraint, &["CHECK"]),
        (set_a("code", t("X")), Constraint, &["UNIQUE"]),
        (vec![insert("items", &[("id", t("x")), ("id", t("y"))])], Invalid, &["given twice"]),
        (set_a("id", t("b")), Invalid, &["primary key"]),
    ];
    for (mutations, code, needles) in cases {
        let what = format!("{mutations:?}");
        let (got, message) = reject_of(&store, mutations);
        assert_eq!(got, code, "{what}: {message}");
        for needle in needles {
            assert!(
                message.contains(needle),
                "{what}: {message:?} lacks {needle:?}"
            );
        }
    }
    assert_eq!(store.head(), head, "rejections write nothing");
    assert_eq!(log_after(&store, SyncId::ZERO).len(), 2);
    code_row[0].1 = t("v");
    code_row[2].1 = t("Y");
    committed(apply_one(&store, txn(vec![insert("items", &code_row)])));
}

#[test]
fn accepted_value_types_follow_affinity() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let values = [
        ("id", t("a")),
        ("team", t("T")),
        ("n", Value::Real(4.0)),
        ("score", t("2.5")),
        ("note", Value::Null),
        ("extra", t("anything")),
    ];
    let (_, changes) = committed(apply_one(&store, txn(vec![insert("items", &values)])));
    let new = changes[0].new.clone().unwrap();
    assert_eq!(&new[2..4], &[i(4), Value::Real(2.5)]);
    for extra in [i(1), Value::Real(0.5), Value::Blob(vec![9]), Value::Null] {
        let m = update("items", t("a"), &[("extra", extra.clone())]);
        let (_, changes) = committed(apply_one(&store, txn(vec![m])));
        assert_eq!(changes[0].new.as_ref().unwrap()[6], extra);
    }
}

#[test]
fn preconditions_gate_the_whole_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    committed(apply_one(&store, txn(vec![item("a", "T1")])));
    let check = |column: &str, expected: Value| Precondition {
        table: "items".into(),
        key: t("a"),
        column: column.into(),
        expected,
    };
    let guarded = |preconditions: Vec<Precondition>, n: i64| WriteTxn {
        origin: None,
        mutations: vec![update("items", t("a"), &[("n", i(n))])],
        preconditions,
    };

    // Equal values pass, including NULL = NULL and numeric text against an INTEGER column.
    let ok = guarded(vec![check("n", i(0)), check("note", Value::Null)], 1);
    committed(apply_one(&store, ok));
    committed(apply_one(&store, guarded(vec![check("N", t("1"))], 2)));

    let (code, message) = rejected(apply_one(&store, guarded(vec![check("n", i(1))], 3)));
    assert_eq!(code, RejectCode::PreconditionFailed);
    for needle in ["items['a'].n", "expected 1"] {
        assert!(message.contains(needle), "{message}");
    }
    assert!(
        !message.contains('2'),
        "the stored value is never shown: {message}"
    );
    let (code, message) = rejected(apply_one(&store, guarded(vec![check("note", t("x"))], 3)));
    assert_eq!(code, RejectCode::PreconditionFailed);
    assert!(
        !message.contains("NULL"),
        "the stored value is never shown: {message}"
    );

    let missing = Precondition {
        key: t("zz"),
        ..check("n", i(0))
    };
    let (code, message) = rejected(apply_one(&store, guarded(vec![missing], 3)));
    assert_eq!(code, RejectCode::PreconditionFailed);
    assert!(message.contains("no such row"), "{message}");
    let (code, _) = rejected(apply_one(&store, guarded(vec![check("nope", i(0))], 3)));
    assert_eq!(code, RejectCode::Schema);

    let (_, rows) = all_rows(&store, "SELECT * FROM items");
    assert_eq!(rows[0][2], i(2), "failed preconditions wrote nothing");
}

#[test]
fn resending_a_client_transaction_returns_its_original_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = client_txn("c1", 7, vec![item("a", "T1")]);
    let (s, changes) = committed(apply_one(&store, first.clone()));
    assert_eq!(changes.len(), 1);
    let bad = client_txn("c1", 8, vec![delete("items", t("b"))]);
    let (code, message) = rejected(apply_one(&store, bad.clone()));

    // Resent alone, resent twice in one batch, and a rejected one resent after the state
    // changed so that it would now succeed: all return what happened the first time.
    committed(apply_one(&store, txn(vec![item("b", "T1")])));
    let head = store.head();
    let outcomes = store.apply(vec![first.clone(), first, bad]).unwrap();
    assert_eq!(
        outcomes[0],
        TxnOutcome::Committed {
            sync_id: s,
            changes: vec![]
        }
    );
    assert_eq!(outcomes[1], outcomes[0]);
    assert_eq!(outcomes[2], TxnOutcome::Rejected { code, message });
    assert_eq!(store.head(), head);
    assert_eq!(log_after(&store, SyncId::ZERO).len(), 2);

    // Same sequence number from another client is a different transaction.
    committed(apply_one(
        &store,
        client_txn("c2", 7, vec![item("c", "T1")]),
    ));
    // A new transaction in the same batch as its own duplicate is applied once.
    let dup = client_txn("c1", 9, vec![item("d", "T1")]);
    let outcomes = store.apply(vec![dup.clone(), dup]).unwrap();
    let (s9, _) = committed(outcomes[0].clone());
    assert_eq!(
        outcomes[1],
        TxnOutcome::Committed {
            sync_id: s9,
            changes: vec![]
        }
    );

    // Outcomes survive a restart.
    drop(store);
    let store = open(dir.path());
    let again = store
        .apply(vec![client_txn("c1", 7, vec![item("zz", "T1")])])
        .unwrap();
    assert_eq!(again[0].sync_id(), Some(s));
}

#[test]
fn server_writes_are_never_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let bump = txn(vec![update("counters", i(1), &[("v", i(2))])]);
    committed(apply_one(
        &store,
        txn(vec![insert("counters", &[("id", i(1)), ("v", i(1))])]),
    ));
    let (a, _) = committed(apply_one(&store, bump.clone()));
    let (b, _) = committed(apply_one(&store, bump));
    assert!(a < b);
}
