//! The store on a small schema of its own (`items`, `counters`) through its public API:
//! mutations, transactions and the outcomes and reads the store tests check.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use sluice::store::{
    Change, ClientId, LogRead, Mutation, RejectCode, SqliteStore, Store, StoreOptions, SyncId,
    TxnOutcome, WriteTxn,
};
use sluice::{compile, Params, Schema, Value};

/// Text values, short: the store tests build many.
pub use super::text as t;

pub const ITEMS_SQL: &str = "
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

pub fn items_schema() -> Arc<Schema> {
    Arc::new(Schema::parse("items.sql", ITEMS_SQL).unwrap())
}

pub fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(
        dir.join("db.sqlite"),
        items_schema(),
        StoreOptions::default(),
    )
    .unwrap()
}

pub fn i(n: i64) -> Value {
    Value::Integer(n)
}

pub fn insert(table: &str, values: &[(&str, Value)]) -> Mutation {
    Mutation::Insert {
        table: table.into(),
        values: values
            .iter()
            .map(|(c, v)| (c.to_string(), v.clone()))
            .collect(),
    }
}

pub fn update(table: &str, key: Value, set: &[(&str, Value)]) -> Mutation {
    Mutation::Update {
        table: table.into(),
        key,
        set: set
            .iter()
            .map(|(c, v)| (c.to_string(), v.clone()))
            .collect(),
    }
}

pub fn delete(table: &str, key: Value) -> Mutation {
    Mutation::Delete {
        table: table.into(),
        key,
    }
}

pub fn item(id: &str, team: &str) -> Mutation {
    insert("items", &[("id", t(id)), ("team", t(team))])
}

pub fn txn(mutations: Vec<Mutation>) -> WriteTxn {
    WriteTxn {
        origin: None,
        mutations,
        preconditions: Vec::new(),
    }
}

pub fn client_txn(client: &str, seq: u64, mutations: Vec<Mutation>) -> WriteTxn {
    WriteTxn {
        origin: Some((ClientId(client.into()), seq)),
        mutations,
        preconditions: vec![],
    }
}

pub fn apply_one(store: &SqliteStore, txn: WriteTxn) -> TxnOutcome {
    store.apply(vec![txn]).unwrap().remove(0)
}

pub fn committed(outcome: TxnOutcome) -> (SyncId, Vec<Change>) {
    match outcome {
        TxnOutcome::Committed { sync_id, changes } => (sync_id, changes),
        other => panic!("expected a commit, got {other:?}"),
    }
}

pub fn rejected(outcome: TxnOutcome) -> (RejectCode, String) {
    match outcome {
        TxnOutcome::Rejected { code, message } => (code, message),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Applies `mutations` as one server transaction and expects a rejection.
pub fn reject_of(store: &SqliteStore, mutations: Vec<Mutation>) -> (RejectCode, String) {
    rejected(apply_one(store, txn(mutations)))
}

pub fn log_after(store: &SqliteStore, after: SyncId) -> Vec<Change> {
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

pub fn all_rows(store: &SqliteStore, sql: &str) -> (SyncId, Vec<Vec<Value>>) {
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

/// Rewrites the change log of the (closed) store database at `path` in the format of the
/// versions before chunks: one `_sluice_log` row per change with its table name, key,
/// client id and row images in columns of their own, indexed by `(sync_id, seq)` as the
/// versions before that were.
pub fn to_previous_log_format(path: &Path) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch("BEGIN").unwrap();
    let mut changes = Vec::new();
    sluice::store::read_log_in(&db, SyncId(0), &mut |c| {
        changes.push(c);
        ControlFlow::Continue(())
    })
    .unwrap();
    db.execute_batch(
        "DROP TABLE _sluice_log;
         CREATE TABLE _sluice_log (sync_id INTEGER NOT NULL, seq INTEGER NOT NULL,
           tbl TEXT NOT NULL, key NOT NULL, kind INTEGER NOT NULL, old BLOB, new BLOB,
           client_id TEXT, client_seq INTEGER);
         CREATE UNIQUE INDEX _sluice_log_sync ON _sluice_log (sync_id, seq);",
    )
    .unwrap();
    let mut seq = 0;
    for (n, c) in changes.iter().enumerate() {
        seq = if n > 0 && changes[n - 1].sync_id == c.sync_id {
            seq + 1
        } else {
            0
        };
        let kind = match c.kind {
            sluice::store::ChangeKind::Insert => 1,
            sluice::store::ChangeKind::Update => 2,
            _ => 3,
        };
        let image =
            |row: &Option<Vec<Value>>| row.as_ref().map(|r| postcard::to_stdvec(r).unwrap());
        db.execute(
            "INSERT INTO _sluice_log VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params![
                c.sync_id.0 as i64,
                seq,
                c.table,
                c.key,
                kind,
                image(&c.old),
                image(&c.new),
                c.origin.as_ref().map(|(client, _)| client.0.clone()),
                c.origin.as_ref().map(|(_, s)| *s as i64),
            ],
        )
        .unwrap();
    }
    db.execute_batch("COMMIT").unwrap();
}
