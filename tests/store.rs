//! The SQLite store through its public API: writes and their change log, rejections,
//! preconditions, idempotent resends, snapshots, log reads, compaction and fetch.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::store::{
    Change, ChangeKind, ClientId, LogRead, Mutation, Precondition, RejectCode, SqliteStore, Store,
    StoreError, StoreOptions, SyncId, TxnOutcome, WriteTxn,
};
use sluice::{compile, Params, Schema, Value};

const ITEMS_SQL: &str = "
CREATE TABLE items (
    id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    n INTEGER NOT NULL DEFAULT 0,
    score REAL,
    note TEXT,
    code TEXT,
    extra,
    CHECK (n >= 0),
    UNIQUE (code)
);
CREATE INDEX items_team ON items (team);
CREATE TABLE counters (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
";

fn items_schema() -> Arc<Schema> {
    Arc::new(Schema::parse("items.sql", ITEMS_SQL).unwrap())
}

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(
        dir.join("db.sqlite"),
        items_schema(),
        StoreOptions::default(),
    )
    .unwrap()
}

fn t(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn i(n: i64) -> Value {
    Value::Integer(n)
}

fn insert(table: &str, values: &[(&str, Value)]) -> Mutation {
    Mutation::Insert {
        table: table.into(),
        values: values
            .iter()
            .map(|(c, v)| (c.to_string(), v.clone()))
            .collect(),
    }
}

fn update(table: &str, key: Value, set: &[(&str, Value)]) -> Mutation {
    Mutation::Update {
        table: table.into(),
        key,
        set: set
            .iter()
            .map(|(c, v)| (c.to_string(), v.clone()))
            .collect(),
    }
}

fn delete(table: &str, key: Value) -> Mutation {
    Mutation::Delete {
        table: table.into(),
        key,
    }
}

fn item(id: &str, team: &str) -> Mutation {
    insert("items", &[("id", t(id)), ("team", t(team))])
}

fn txn(mutations: Vec<Mutation>) -> WriteTxn {
    WriteTxn {
        origin: None,
        mutations,
        preconditions: Vec::new(),
    }
}

fn client_txn(client: &str, seq: u64, mutations: Vec<Mutation>) -> WriteTxn {
    WriteTxn {
        origin: Some((ClientId(client.into()), seq)),
        mutations,
        preconditions: vec![],
    }
}

fn apply_one(store: &SqliteStore, txn: WriteTxn) -> TxnOutcome {
    store.apply(vec![txn]).unwrap().remove(0)
}

fn committed(outcome: TxnOutcome) -> (SyncId, Vec<Change>) {
    match outcome {
        TxnOutcome::Committed { sync_id, changes } => (sync_id, changes),
        other => panic!("expected a commit, got {other:?}"),
    }
}

fn rejected(outcome: TxnOutcome) -> (RejectCode, String) {
    match outcome {
        TxnOutcome::Rejected { code, message } => (code, message),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Applies `mutations` as one server transaction and expects a rejection.
fn reject_of(store: &SqliteStore, mutations: Vec<Mutation>) -> (RejectCode, String) {
    rejected(apply_one(store, txn(mutations)))
}

fn log_after(store: &SqliteStore, after: SyncId) -> Vec<Change> {
    let mut out = Vec::new();
    let end = store
        .read_log(after, &mut |c| {
            out.push(c);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(end, LogRead::Complete { head: store.head() });
    out
}

fn all_rows(store: &SqliteStore, sql: &str) -> (SyncId, Vec<Vec<Value>>) {
    let shape = compile(store.schema(), sql, &Params::new()).unwrap();
    let mut rows = Vec::new();
    let w = store
        .snapshot(&shape, &mut |row| {
            rows.push(row);
            ControlFlow::Continue(())
        })
        .unwrap();
    (w, rows)
}

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
    for needle in ["items['a'].n", "expected 1", "found 2"] {
        assert!(message.contains(needle), "{message}");
    }
    let (code, message) = rejected(apply_one(&store, guarded(vec![check("note", t("x"))], 3)));
    assert_eq!(code, RejectCode::PreconditionFailed);
    assert!(message.contains("found NULL"), "{message}");

    let missing = Precondition {
        key: t("zz"),
        ..check("n", i(0))
    };
    let (code, message) = rejected(apply_one(&store, guarded(vec![missing], 3)));
    assert_eq!(code, RejectCode::PreconditionFailed);
    assert!(message.contains("does not exist"), "{message}");
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

#[test]
fn reopening_keeps_everything_and_refuses_another_schema() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    committed(apply_one(&store, txn(vec![item("a", "T1")])));
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.head(), SyncId(1));
    assert_eq!(log_after(&store, SyncId::ZERO).len(), 1);
    let (s, _) = committed(apply_one(&store, txn(vec![item("b", "T1")])));
    assert_eq!(s, SyncId(2));
    drop(store);

    let other =
        Arc::new(Schema::parse("o.sql", "CREATE TABLE items (id TEXT PRIMARY KEY)").unwrap());
    let err = SqliteStore::open(dir.path().join("db.sqlite"), other, StoreOptions::default());
    assert!(matches!(err, Err(StoreError::SchemaChanged { .. })));
    let err = SqliteStore::open(":memory:", items_schema(), StoreOptions::default());
    assert!(matches!(err, Err(StoreError::InMemory)));
}

#[test]
fn additive_schema_changes_migrate_in_place_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let v1 = "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT NOT NULL)";
    let schema = Arc::new(Schema::parse("v1.sql", v1).unwrap());
    {
        let store = SqliteStore::open(&path, schema, StoreOptions::default()).unwrap();
        let insert = Mutation::Insert {
            table: "notes".into(),
            values: vec![("id".into(), t("n1")), ("body".into(), t("hello"))],
        };
        let txn = WriteTxn {
            origin: None,
            mutations: vec![insert],
            preconditions: vec![],
        };
        assert!(matches!(
            store.apply(vec![txn]).unwrap()[0],
            TxnOutcome::Committed { .. }
        ));
    }
    // A nullable column, a defaulted NOT NULL column and a new table: migrated in place.
    let v2 = "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT NOT NULL, pinned INTEGER, \
              color TEXT NOT NULL DEFAULT 'grey'); CREATE TABLE tags (id TEXT PRIMARY KEY)";
    let schema = Arc::new(Schema::parse("v2.sql", v2).unwrap());
    let store = SqliteStore::open(&path, schema.clone(), StoreOptions::default()).unwrap();
    let shape = compile(&schema, "SELECT * FROM notes", &Params::new()).unwrap();
    let mut rows = Vec::new();
    store
        .snapshot(&shape, &mut |row| {
            rows.push(row);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(
        rows,
        vec![vec![t("n1"), t("hello"), Value::Null, t("grey")]]
    );
    drop(store);
    // Retyping a column is not additive: refused, and the database is left as it was.
    let v3 = "CREATE TABLE notes (id TEXT PRIMARY KEY, body BLOB NOT NULL, pinned INTEGER, \
              color TEXT NOT NULL DEFAULT 'grey'); CREATE TABLE tags (id TEXT PRIMARY KEY)";
    let refused = SqliteStore::open(
        &path,
        Arc::new(Schema::parse("v3.sql", v3).unwrap()),
        StoreOptions::default(),
    );
    assert!(matches!(refused, Err(StoreError::SchemaChanged { .. })));
    assert!(SqliteStore::open(&path, schema, StoreOptions::default()).is_ok());
}
