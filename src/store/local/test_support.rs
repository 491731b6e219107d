//! Helpers shared by the local store's unit tests: values, queries, a store on a schema,
//! subscriptions and staged snapshots.

use super::*;

pub(super) type Rows = Vec<Vec<Value>>;

pub(super) fn int(i: i64) -> Value {
    Value::Integer(i)
}

pub(super) fn text(s: &str) -> Value {
    Value::Text(s.into())
}

pub(super) fn select(store: &LocalStore, sql: &str) -> Rows {
    store.query(sql, &[]).unwrap().1
}

/// Rows of `table`.
pub(super) fn count(store: &LocalStore, table: &str) -> i64 {
    match select(store, &format!("SELECT count(*) FROM {table}"))[0][0] {
        Value::Integer(n) => n,
        _ => unreachable!(),
    }
}

/// A fresh store on `schema` (the directory must outlive it).
pub(super) fn open(schema: &str) -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::parse("t.sql", schema).unwrap();
    let store = LocalStore::open(&dir.path().join("local.db"), Some(schema)).unwrap();
    (dir, store)
}

/// A subscription on `table` whose rows carry `columns`.
pub(super) fn sub(store: &mut LocalStore, table: &str, columns: &[&str]) -> SubId {
    let id = store
        .add_sub(&format!("SELECT * FROM {table}"), &Params::new())
        .unwrap();
    let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    store.describe_sub(id, table, &columns).unwrap();
    id
}

/// Stages a snapshot of `rows` (each carrying the subscription's columns, key first).
pub(super) fn stage_snapshot(store: &mut LocalStore, sub: SubId, table: &str, rows: Rows) {
    store.stage_clear(sub).unwrap();
    let items: Vec<_> = rows
        .into_iter()
        .map(|row| {
            let event = RowEvent::Insert {
                key: row[0].clone(),
                row,
            };
            (sub, None, table.to_string(), event)
        })
        .collect();
    store.stage_many(&items).unwrap();
}
