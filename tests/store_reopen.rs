//! Reopening the SQLite store: everything kept across a reopen, another schema refused,
//! and additive schema changes migrated in place while other changes are refused.

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;

use common::store::*;
use sluice::store::{
    Mutation, SqliteStore, Store, StoreError, StoreOptions, SyncId, TxnOutcome, WriteTxn,
};
use sluice::{compile, Params, Schema, Value};

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
