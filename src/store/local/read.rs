//! App reads of the local view on a connection of their own. The store's one writing
//! connection holds a SQLite transaction for as long as a bootstrap's join takes (a
//! million rows take seconds); in WAL mode a reader on another connection sees the last
//! committed state meanwhile, so an app read never waits for a join or a live
//! transaction, and never sees part of one.
//!
//! Storage only; must not depend on the client.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::rows::{covered, read_one};
use crate::schema::{quote_ident, Schema};
use crate::store::convert::read_row;
use crate::store::error::StoreError;
use crate::value::Value;

/// How long a read waits when SQLite reports the database busy (only while a WAL file is
/// recovered or reset, never for a writer's open transaction).
pub const READ_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept by a reader connection.
const READ_STATEMENT_CACHE: usize = 64;

/// The schema the store's tables follow, shared by the store (which changes it when it
/// adopts a schema) and its readers.
pub(super) type SharedSchema = Arc<Mutex<Arc<Schema>>>;

/// A read-only connection to a local store's file (see [`super::LocalStore::reader`]).
pub struct LocalReader {
    conn: Mutex<Connection>,
    schema: SharedSchema,
}

impl LocalReader {
    pub(super) fn open(path: &Path, schema: SharedSchema) -> Result<LocalReader, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(READ_BUSY_TIMEOUT)?;
        conn.set_prepared_statement_cache_capacity(READ_STATEMENT_CACHE);
        Ok(LocalReader {
            conn: Mutex::new(conn),
            schema,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn schema(&self) -> Arc<Schema> {
        self.schema
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs a read-only query on the local view; returns column names and rows. Fails with
    /// [`StoreError::Local`] when the statement would write, and with
    /// [`StoreError::Sqlite`] when it does not prepare or run.
    pub fn query(
        &self,
        sql: &str,
        params: &[Value],
    ) -> Result<(Vec<String>, Vec<Vec<Value>>), StoreError> {
        query(&self.conn(), sql, params)
    }

    /// The visible row of `table` with this key, if any (`None` for an unknown table).
    pub fn row(&self, table: &str, key: &Value) -> Result<Option<Vec<Value>>, StoreError> {
        let schema = self.schema();
        let Some(t) = schema.table(table) else {
            return Ok(None);
        };
        read_one(&self.conn(), &quote_ident(&t.name), t, key)
    }

    /// Whether anything (a subscription or a pin) covers the row (`false` for an unknown
    /// table).
    pub fn is_covered(&self, table: &str, key: &Value) -> Result<bool, StoreError> {
        let schema = self.schema();
        let Some(t) = schema.table(table) else {
            return Ok(false);
        };
        covered(&self.conn(), t, key)
    }
}

/// A read-only query on `conn`: refused when the statement would write.
pub(super) fn query(
    conn: &Connection,
    sql: &str,
    params: &[Value],
) -> Result<(Vec<String>, Vec<Vec<Value>>), StoreError> {
    let mut stmt = conn.prepare(sql)?;
    if !stmt.readonly() {
        return Err(StoreError::Local(
            "local queries are read-only: write through a transaction".into(),
        ));
    }
    let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    let width = names.len();
    let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| {
        read_row(r, width)
    })?;
    Ok((names, rows.collect::<Result<_, _>>()?))
}
