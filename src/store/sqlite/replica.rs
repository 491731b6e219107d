//! A [`SqliteStore`] as the local replica of a PostgreSQL source of truth: opened with
//! the database's shared identity, filled by an initial copy, then fed one replicated
//! transaction at a time under the sync id PostgreSQL gave it (its commit LSN: sparse,
//! increasing). Also [`WriteCheck`]: the write path's checks run on a scratch copy of
//! the rows a transaction touches, so a write bound for PostgreSQL is judged exactly as
//! the embedded store judges it.
//!
//! Synchronous, like the rest of the store; knows nothing of PostgreSQL itself (rows
//! arrive as [`Value`]s).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::super::apply::{dry_run, stored_outcome, SqlCache};
use super::{column_list, SqliteStore, SLUICE_DDL};
use crate::schema::{quote_ident, Schema, Table};
use crate::store::{StoreError, StoreOptions, WriteGuard};
use crate::value::Value;
use crate::vocab::{Change, ClientId, RejectCode, SyncId, TxnOutcome, WriteTxn};

/// One row operation of a replicated transaction.
#[derive(Debug, Clone)]
pub enum RowOp {
    /// The row as it is now (insert or update). `None` columns did not change (values
    /// PostgreSQL does not resend): they keep the replica's.
    Upsert {
        /// The table.
        table: Arc<Table>,
        /// The row, in table column order.
        row: Vec<Option<Value>>,
    },
    /// The row with this key is gone.
    Delete {
        /// The table.
        table: Arc<Table>,
        /// The row's primary key.
        key: Value,
    },
    /// Every row of the table is gone.
    Truncate {
        /// The table.
        table: Arc<Table>,
    },
}

/// A transaction committed in the source of truth, as the replica applies it.
#[derive(Debug, Clone, Default)]
pub struct ReplicatedTxn {
    /// Its sync id: the same on every server.
    pub sync_id: SyncId,
    /// Its row operations, in order.
    pub ops: Vec<RowOp>,
    /// The client transactions it carries (their idempotency records).
    pub origins: Vec<(ClientId, u64)>,
    /// A resynchronisation: the net difference between the replica and a newer state of
    /// PostgreSQL, not one transaction. Whatever happened between the replica's head and
    /// `sync_id` is folded into it, so the log records that gap and no client resumes
    /// from a cut inside it (a row that came and went there is in no change).
    pub resync: bool,
    /// One part of a transaction, more of which follow (a large transaction is read from
    /// the stream and applied in parts, see [`SqliteStore::apply_replicated_parts`]); the
    /// last part is not partial. `origins` may come in any part.
    pub partial: bool,
}

impl SqliteStore {
    /// Opens a new, empty replica at `path` (an existing file there is removed first)
    /// with the shared identity `server_id`. Fails like [`SqliteStore::open`], and with
    /// [`StoreError::Corrupt`] when the old file cannot go.
    pub fn open_replica(
        path: &Path,
        schema: Arc<Schema>,
        options: StoreOptions,
        server_id: &str,
    ) -> Result<SqliteStore, StoreError> {
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{}{suffix}", path.display());
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Corrupt(format!("cannot remove {file}: {e}"))),
            }
        }
        {
            let conn = Connection::open(path)?;
            conn.execute_batch(
                "CREATE TABLE _sluice_identity (
                    id INTEGER PRIMARY KEY CHECK (id = 0),
                    server_id TEXT NOT NULL)",
            )?;
            conn.execute(
                "INSERT INTO _sluice_identity (id, server_id) VALUES (0, ?1)",
                [server_id],
            )?;
        }
        let store = SqliteStore::open(path, schema, options)?;
        store.sparse.store(true, Ordering::Release);
        Ok(store)
    }

    /// Reopens the replica a previous run left at `path` when it is one of this database
    /// (`server_id`), its initial copy finished and the schema still fits (or migrates
    /// additively); `None` otherwise, and the caller makes a fresh one. It lags PostgreSQL
    /// by whatever was committed since it last ran: resynchronise it before serving. Its
    /// log stays, so clients resume from their cuts without a new bootstrap.
    pub fn reopen_replica(
        path: &Path,
        schema: Arc<Schema>,
        options: StoreOptions,
        server_id: &str,
    ) -> Result<Option<SqliteStore>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let fits = {
            let conn =
                Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            let recorded = |sql: &str| -> Option<rusqlite::types::Value> {
                conn.query_row(sql, [], |r| r.get(0))
                    .optional()
                    .ok()
                    .flatten()
            };
            let id = recorded("SELECT server_id FROM _sluice_identity WHERE id = 0");
            let head = recorded("SELECT head FROM _sluice_meta WHERE id = 0");
            id == Some(rusqlite::types::Value::Text(server_id.to_string()))
                && matches!(head, Some(rusqlite::types::Value::Integer(h)) if h > 0)
        };
        if !fits {
            return Ok(None);
        }
        match SqliteStore::open(path, schema, options) {
            Ok(store) => {
                store.sparse.store(true, Ordering::Release);
                Ok(Some(store))
            }
            Err(StoreError::SchemaChanged { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds rows of the initial copy (no log entries: the copy is the starting state).
    pub fn load_rows(&self, table: &Table, rows: &[Vec<Value>]) -> Result<(), StoreError> {
        self.insert_rows_into(&quote_ident(&table.name), table, rows)
    }

    /// Inserts (or replaces) whole rows of `table` into `target`: the table itself, or
    /// its staging copy during a resynchronisation. One transaction.
    pub(super) fn insert_rows_into(
        &self,
        target: &str,
        table: &Table,
        rows: &[Vec<Value>],
    ) -> Result<(), StoreError> {
        let mut conn = self.lock_writer()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let marks = vec!["?"; table.columns.len()].join(", ");
            let mut stmt = tx.prepare(&format!(
                "INSERT OR REPLACE INTO {target} ({}) VALUES ({marks})",
                column_list(table)
            ))?;
            for row in rows {
                stmt.execute(rusqlite::params_from_iter(row.iter()))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Ends the initial copy: the replica holds the state at `at`, where its log starts.
    pub fn finish_copy(&self, at: SyncId) -> Result<(), StoreError> {
        let conn = self.lock_writer()?;
        conn.execute(
            "UPDATE _sluice_meta SET head = ?1, horizon = ?1 WHERE id = 0",
            [at],
        )?;
        self.head.store(at.0, Ordering::Release);
        self.horizon.store(at.0, Ordering::Release);
        Ok(())
    }

    /// The recorded sync id of a client transaction, if the replica has seen it.
    pub fn recorded_sync_id(
        &self,
        client: &ClientId,
        seq: u64,
    ) -> Result<Option<SyncId>, StoreError> {
        let conn = self.reader()?;
        Ok(match stored_outcome(&conn, client, seq)? {
            Some(TxnOutcome::Committed { sync_id, .. }) => Some(sync_id),
            _ => None,
        })
    }
}

/// Judges client transactions the way the embedded store does, on a scratch in-memory
/// database that holds only the rows a transaction touches (read from the source of
/// truth under lock by the caller). Nothing it does is kept.
pub struct WriteCheck {
    conn: Connection,
    schema: Arc<Schema>,
    sql: SqlCache,
}

/// What [`WriteCheck::judge`] decides: the changes to make, or the rejection.
pub type Judgement = Result<Vec<Change>, (RejectCode, String)>;

impl WriteCheck {
    /// A scratch database with the schema's tables. Fails with [`StoreError::Sqlite`].
    pub fn new(schema: Arc<Schema>) -> Result<WriteCheck, StoreError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SLUICE_DDL)?;
        for table in schema.tables() {
            conn.execute_batch(&table.create_sql())?;
        }
        let sql = SqlCache::new(&conn, &schema)?;
        Ok(WriteCheck { conn, schema, sql })
    }

    /// Runs `txn` over `base` (the current rows it touches, full rows in table column
    /// order) with the embedded store's checks: schema, types, preconditions, `guard`.
    /// Returns the row changes it makes (sync id 0) or its rejection. Fails with
    /// [`StoreError`] when SQLite does.
    pub fn judge(
        &mut self,
        base: &[(Arc<Table>, Vec<Value>)],
        txn: &WriteTxn,
        guard: Option<&dyn WriteGuard>,
    ) -> Result<Judgement, StoreError> {
        let tx = self.conn.transaction()?;
        for (table, row) in base {
            upsert(&tx, table, row)?;
        }
        let judged = dry_run(&tx, &self.schema, &self.sql, txn, guard);
        drop(tx);
        judged
    }
}

/// Writes `row` (all of `table`'s columns, in order) over the row with its key.
pub(super) fn upsert(
    tx: &rusqlite::Transaction,
    table: &Table,
    row: &[Value],
) -> Result<(), StoreError> {
    let marks = vec!["?"; table.columns.len()].join(", ");
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO {} ({}) VALUES ({marks})",
        quote_ident(&table.name),
        column_list(table)
    ))?
    .execute(rusqlite::params_from_iter(row.iter()))?;
    Ok(())
}
