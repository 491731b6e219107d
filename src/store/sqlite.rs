//! [`SqliteStore`]: the [`Store`] on one SQLite database file in WAL mode.
//!
//! One writer connection behind a mutex; every read opens a fresh read-only connection
//! and runs inside one read transaction, so it sees a single committed state while the
//! writer goes on.
//!
//! Synchronous and blocking: callers on an async runtime use `spawn_blocking`. Depends on
//! the schema, the vocabulary and the query layer (shapes to SQL), never on the wire, the
//! transport, the server or the client.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::TransactionBehavior;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction};

use super::apply::{apply_batch, SqlCache};
use super::convert::read_row;
use super::types::LogRead;
use super::window::{CommitObserver, ConnView, NoObserver, TxnView};
use super::{GuardedTxn, Store, StoreError, StoreOptions};
use crate::query::{order_sql_quoted, where_sql, Shape};
use crate::schema::{quote_ident, Schema, Table};
use crate::value::Value;
use crate::vocab::{Change, SyncId, TxnOutcome, WriteTxn};

pub(super) mod log;
mod outcomes;
mod replica;
mod replicate;
mod resync;
pub use replica::{Judgement, ReplicatedTxn, RowOp, WriteCheck};
pub use replicate::Replicated;

/// sluice's own tables; see the module documentation.
const SLUICE_DDL: &str = "
CREATE TABLE IF NOT EXISTS _sluice_identity (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    server_id TEXT NOT NULL
);
INSERT OR IGNORE INTO _sluice_identity (id, server_id) VALUES (0, lower(hex(randomblob(16))));
CREATE TABLE IF NOT EXISTS _sluice_meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    head INTEGER NOT NULL,
    horizon INTEGER NOT NULL,
    schema_version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS _sluice_commits (
    sync_id INTEGER PRIMARY KEY,
    committed_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS _sluice_client_txns (
    client_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sync_id INTEGER,
    reject_code TEXT,
    message TEXT,
    recorded_at_ms INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER,
    PRIMARY KEY (client_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _sluice_client_floors (
    client_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
";

/// The [`Store`] on a SQLite database file. Holds one writer connection; each read opens
/// (and closes) its own read-only connection, which costs a file open per read.
pub struct SqliteStore {
    path: PathBuf,
    schema: Arc<Schema>,
    options: StoreOptions,
    /// The only connection that writes. A `std::sync::Mutex`, not tokio's: it is taken
    /// only inside blocking code (the server calls the store from `spawn_blocking`) and
    /// never held across an `.await`, so an async-aware lock would add cost for nothing.
    writer: Mutex<Connection>,
    /// Per-table SQL text of the write path, built once.
    sql: SqlCache,
    /// Cached copies of the meta row, updated after each commit under the writer lock.
    head: AtomicU64,
    horizon: AtomicU64,
    /// The database's identity, created with it (see [`Store::server_id`]).
    server_id: String,
    /// A replica of PostgreSQL ([`SqliteStore::open_replica`]): its sync ids are LSNs,
    /// increasing but not consecutive, so retention counts transactions, not ids.
    sparse: AtomicBool,
    /// Dropped last, after the writer connection has closed (fields drop in order): see
    /// [`SqliteStore::close_watch`]. Keep it the last field.
    open: Arc<()>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`: WAL mode, the schema's tables
    /// and indexes, and sluice's own tables. A database created for an older schema is
    /// migrated in place when the change is additive (new tables, new nullable or
    /// defaulted columns at the end).
    ///
    /// Fails with [`StoreError::InMemory`] for an in-memory path,
    /// [`StoreError::SchemaChanged`] when the database was created for a schema it cannot
    /// be migrated from additively, [`StoreError::Corrupt`] when WAL mode cannot be enabled
    /// or the meta row is missing, and [`StoreError::Sqlite`] when SQLite fails (the file
    /// cannot be opened or created, a lock is held past the busy timeout).
    pub fn open(
        path: impl AsRef<Path>,
        schema: Arc<Schema>,
        options: StoreOptions,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let text = path.to_string_lossy();
        if text.is_empty() || text == ":memory:" || text.starts_with("file::memory:") {
            return Err(StoreError::InMemory);
        }
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(options.busy_timeout_duration())?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!(
                "cannot enable WAL mode (got {mode})"
            )));
        }
        conn.pragma_update(None, "synchronous", options.synchronous.pragma())?;
        conn.pragma_update(None, "cache_size", -i64::from(options.writer_cache_kib))?;
        conn.set_prepared_statement_cache_capacity(options.statement_cache);

        let version = schema.version().to_string();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(SLUICE_DDL)?;
        add_outcome_columns(&tx)?;
        // The log's table; earlier versions kept a row per change, moved into chunks.
        log::migrate_log(&tx, &log::schema_pk(&schema))?;
        let stored: Option<String> = tx
            .query_row(
                "SELECT schema_version FROM _sluice_meta WHERE id = 0",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match stored {
            Some(stored) if stored != version => {
                // Additive changes (new tables, new nullable or defaulted columns at the
                // end) migrate in place; anything else needs a migration by hand.
                if !migrate_additively(&tx, &schema)? {
                    return Err(StoreError::SchemaChanged {
                        stored,
                        current: schema.version(),
                    });
                }
                tx.execute(
                    "UPDATE _sluice_meta SET schema_version = ?1 WHERE id = 0",
                    [&version],
                )?;
                tracing::info!(%version, "schema migrated additively");
            }
            Some(_) => {}
            None => {
                tx.execute(
                    "INSERT INTO _sluice_meta (id, head, horizon, schema_version) \
                     VALUES (0, 0, 0, ?1)",
                    [&version],
                )?;
            }
        }
        for table in schema.tables() {
            tx.execute_batch(&table.create_sql())?;
            for index in table.index_sql() {
                tx.execute_batch(&index)?;
            }
        }
        let (head, horizon) = read_meta(&tx)?;
        let server_id: String = tx.query_row(
            "SELECT server_id FROM _sluice_identity WHERE id = 0",
            [],
            |r| r.get(0),
        )?;
        tx.commit()?;
        let sql = SqlCache::new(&conn, &schema)?;
        Ok(SqliteStore {
            path,
            schema,
            options,
            writer: Mutex::new(conn),
            sql,
            head: AtomicU64::new(head.0),
            horizon: AtomicU64::new(horizon.0),
            server_id,
            sparse: AtomicBool::new(false),
            open: Arc::new(()),
        })
    }

    /// A handle whose strong count falls to 0 once the store has been dropped and its
    /// connections closed: the last one folds the write-ahead log into the database
    /// file and removes it, so a copy of the file taken then is whole. (The count of the
    /// store's own `Arc` falls to 0 before that work is done.)
    pub fn close_watch(&self) -> std::sync::Weak<()> {
        Arc::downgrade(&self.open)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// The writer connection. A panic while it was held leaves the lock poisoned; the
    /// connection is still usable once any open transaction is rolled back.
    fn lock_writer(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        let guard = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !guard.is_autocommit() {
            guard.execute_batch("ROLLBACK")?;
        }
        Ok(guard)
    }

    /// A fresh read-only connection. Each read gets its own so that reads run in parallel
    /// with each other and with the writer.
    fn reader(&self) -> Result<Connection, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(self.options.busy_timeout_duration())?;
        Ok(conn)
    }

    fn table(&self, name: &str) -> Result<&Arc<Table>, StoreError> {
        self.schema
            .table(name)
            .ok_or_else(|| StoreError::UnknownTable(name.to_string()))
    }

    /// Compacts up to `target` (capped at the head) inside the writer's transaction.
    fn compact_in(
        &self,
        tx: &Transaction<'_>,
        target: SyncId,
    ) -> Result<(u64, SyncId), StoreError> {
        let (head, horizon) = read_meta(tx)?;
        let target = target.min(head);
        if target <= horizon {
            return Ok((0, horizon));
        }
        let deleted = log::compact(tx, target, &log::schema_pk(&self.schema))?;
        tx.execute("DELETE FROM _sluice_commits WHERE sync_id <= ?1", [target])?;
        tx.execute(
            "UPDATE _sluice_meta SET horizon = ?1 WHERE id = 0",
            [target],
        )?;
        Ok((deleted, target))
    }

    fn compact_to(
        &self,
        target: impl FnOnce(&Transaction<'_>) -> Result<SyncId, StoreError>,
    ) -> Result<u64, StoreError> {
        let mut conn = self.lock_writer()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let target = target(&tx)?;
        let (deleted, horizon) = self.compact_in(&tx, target)?;
        tx.commit()?;
        self.horizon.store(horizon.0, Ordering::Release);
        Ok(deleted)
    }
}

/// `(head, horizon)` from the meta row.
fn read_meta(conn: &Connection) -> Result<(SyncId, SyncId), StoreError> {
    let meta = conn
        .prepare_cached("SELECT head, horizon FROM _sluice_meta WHERE id = 0")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    meta.ok_or_else(|| StoreError::Corrupt("the meta row is missing".into()))
}

/// `"a", "b", ...`: every column of the table, in order.
pub(crate) fn column_list(table: &Table) -> String {
    let names: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    names.join(", ")
}

pub(crate) fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Reads the change log of a store's database through `conn`, as
/// [`Store::read_log`] does, inside the transaction `conn` has open (a tool reading the
/// database file on its own, in one read transaction with other reads).
pub fn read_log_in(
    conn: &Connection,
    after: SyncId,
    f: &mut dyn FnMut(Change) -> ControlFlow<()>,
) -> Result<LogRead, StoreError> {
    let (head, horizon) = read_meta(conn)?;
    log::read(conn, after, head, horizon, f)
}

impl Store for SqliteStore {
    fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    fn apply(&self, txns: Vec<WriteTxn>) -> Result<Vec<TxnOutcome>, StoreError> {
        self.apply_guarded(txns.into_iter().map(|t| (t, None)).collect())
    }

    fn apply_guarded(&self, txns: Vec<GuardedTxn>) -> Result<Vec<TxnOutcome>, StoreError> {
        self.apply_observed(txns, &mut NoObserver)
    }

    fn apply_observed(
        &self,
        txns: Vec<GuardedTxn>,
        observer: &mut dyn CommitObserver,
    ) -> Result<Vec<TxnOutcome>, StoreError> {
        if txns.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.lock_writer()?;
        let applied = apply_batch(&mut conn, &self.schema, &self.sql, txns, now_ms(), observer);
        observer.finished(applied.is_ok());
        let (outcomes, head) = applied?;
        self.head.store(head.0, Ordering::Release);
        Ok(outcomes)
    }

    fn at_head(
        &self,
        f: &mut dyn FnMut(&dyn TxnView, SyncId) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock_writer()?;
        let tx = conn.transaction()?;
        let (head, _) = read_meta(&tx)?;
        f(&ConnView(&tx), head)
    }

    fn head(&self) -> SyncId {
        SyncId(self.head.load(Ordering::Acquire))
    }

    fn horizon(&self) -> SyncId {
        SyncId(self.horizon.load(Ordering::Acquire))
    }

    fn server_id(&self) -> &str {
        &self.server_id
    }

    fn read_log(
        &self,
        after: SyncId,
        f: &mut dyn FnMut(Change) -> ControlFlow<()>,
    ) -> Result<LogRead, StoreError> {
        let mut conn = self.reader()?;
        let tx = conn.transaction()?;
        read_log_in(&tx, after, f)
    }

    fn snapshot(
        &self,
        shape: &Shape,
        f: &mut dyn FnMut(Vec<Value>) -> ControlFlow<()>,
    ) -> Result<SyncId, StoreError> {
        let table = shape.table();
        let (filter, values) = where_sql(shape.filter(), table);
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {filter}",
            column_list(table),
            quote_ident(&table.name)
        );
        if let Some(window) = shape.window() {
            let order = order_sql_quoted(table, window.order());
            sql.push_str(&format!(" {order} LIMIT {}", window.limit()));
        }
        let mut conn = self.reader()?;
        let tx = conn.transaction()?;
        // The meta row and the rows below are read in one transaction: one WAL snapshot.
        let (head, _) = read_meta(&tx)?;
        let mut stmt = tx.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
        let width = table.columns.len();
        while let Some(row) = rows.next()? {
            if f(read_row(row, width)?).is_break() {
                break;
            }
        }
        Ok(head)
    }

    fn count_estimate(&self, shape: &Shape) -> Result<u64, StoreError> {
        let table = shape.table();
        let (filter, values) = where_sql(shape.filter(), table);
        let mut sql = format!(
            "SELECT COUNT(*) FROM {} WHERE {filter}",
            quote_ident(&table.name)
        );
        if let Some(window) = shape.window() {
            sql = format!(
                "SELECT COUNT(*) FROM (SELECT 1 FROM {} WHERE {filter} LIMIT {})",
                quote_ident(&table.name),
                window.limit()
            );
        }
        let conn = self.reader()?;
        let count: i64 = conn.query_row(&sql, rusqlite::params_from_iter(values.iter()), |r| {
            r.get(0)
        })?;
        Ok(count.max(0) as u64)
    }

    fn fetch(&self, table: &str, keys: &[Value]) -> Result<(SyncId, Vec<Vec<Value>>), StoreError> {
        let table = self.table(table)?;
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = ?1",
            column_list(table),
            quote_ident(&table.name),
            quote_ident(&table.pk_column().name)
        );
        let mut conn = self.reader()?;
        let tx = conn.transaction()?;
        let (head, _) = read_meta(&tx)?;
        let mut stmt = tx.prepare(&sql)?;
        let width = table.columns.len();
        let mut rows = Vec::with_capacity(keys.len());
        // Keys that name the same row (repeated, or equal once the column's affinity is
        // applied) return it once.
        let mut seen = std::collections::BTreeSet::new();
        let mut bytes = 0;
        for key in keys {
            let Some(row) = stmt.query_row([key], |r| read_row(r, width)).optional()? else {
                continue;
            };
            if !seen.insert(super::KeyOrd(row[table.pk].clone())) {
                continue;
            }
            bytes += super::row_bytes(&row);
            if bytes > super::MAX_FETCH_BYTES {
                return Err(StoreError::AnswerTooLarge {
                    limit: super::MAX_FETCH_BYTES,
                });
            }
            rows.push(row);
        }
        Ok((head, rows))
    }

    fn compact(&self, before_or_at: SyncId) -> Result<u64, StoreError> {
        self.compact_to(|_| Ok(before_or_at))
    }

    fn prune_outcomes(&self, max_age: Duration, max_records: u64) -> Result<u64, StoreError> {
        let mut conn = self.lock_writer()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let pruned = outcomes::prune(&tx, now_ms().saturating_sub(age_ms), max_records)?;
        tx.commit()?;
        Ok(pruned)
    }

    fn compact_retain(&self, keep_last: u64, max_age: Option<Duration>) -> Result<u64, StoreError> {
        self.compact_to(|tx| {
            let (head, horizon) = read_meta(tx)?;
            let by_count = if self.sparse.load(Ordering::Acquire) {
                // One commit row per replicated transaction: keep the last `keep_last`.
                let nth: Option<SyncId> = tx
                    .query_row(
                        "SELECT sync_id FROM _sluice_commits ORDER BY sync_id DESC \
                         LIMIT 1 OFFSET ?1",
                        [i64::try_from(keep_last).unwrap_or(i64::MAX)],
                        |r| r.get(0),
                    )
                    .optional()?;
                nth.unwrap_or(horizon)
            } else {
                SyncId(head.0.saturating_sub(keep_last))
            };
            let Some(age) = max_age else {
                return Ok(by_count);
            };
            let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            let cutoff = now_ms().saturating_sub(age_ms);
            let by_age: Option<SyncId> = tx.query_row(
                "SELECT MAX(sync_id) FROM _sluice_commits WHERE committed_at_ms < ?1",
                [cutoff],
                |r| r.get(0),
            )?;
            Ok(by_count.min(by_age.unwrap_or(horizon)))
        })
    }
}

/// Adds the columns that databases created by earlier versions lack: an outcome's time
/// (before outcomes were pruned by age; the outcomes already recorded count from now) and
/// the end of a run of outcomes (before runs; every record is a run of one).
fn add_outcome_columns(conn: &Connection) -> Result<(), StoreError> {
    let has = |column: &str| -> Result<bool, StoreError> {
        Ok(conn.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('_sluice_client_txns') WHERE name = ?1",
            [column],
            |r| r.get(0),
        )?)
    };
    if !has("recorded_at_ms")? {
        conn.execute_batch(
            "ALTER TABLE _sluice_client_txns ADD COLUMN recorded_at_ms INTEGER NOT NULL \
             DEFAULT 0",
        )?;
        conn.execute(
            "UPDATE _sluice_client_txns SET recorded_at_ms = ?1",
            [now_ms()],
        )?;
    }
    if !has("last_seq")? {
        conn.execute_batch("ALTER TABLE _sluice_client_txns ADD COLUMN last_seq INTEGER")?;
    }
    Ok(())
}

/// Applies an additive schema change to the database: new tables are created later by
/// the caller; tables that only gained columns at the end (nullable, or with a default)
/// get `ALTER TABLE ADD COLUMN`. Returns false, changing nothing, when the change is not
/// additive (a column removed, renamed, retyped or reordered, a table removed, a new
/// NOT NULL column without default, a different primary key).
fn migrate_additively(conn: &Connection, schema: &Schema) -> Result<bool, StoreError> {
    let existing: Vec<String> = {
        let mut stmt = conn.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '_sluice%' \
             AND name NOT LIKE 'sqlite_%'",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut alters = Vec::new();
    for name in &existing {
        let Some(table) = schema.table(name) else {
            return Ok(false);
        };
        // (name, declared type, primary key position) of each existing column.
        let columns: Vec<(String, String, i64)> = {
            let mut stmt = conn.prepare(&format!(
                "PRAGMA table_info({})",
                crate::schema::quote_ident(name)
            ))?;
            let rows = stmt.query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get(5)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        if columns.len() > table.columns.len() {
            return Ok(false);
        }
        for (i, (col, declared, pk)) in columns.iter().enumerate() {
            let want = &table.columns[i];
            let same = want.name.eq_ignore_ascii_case(col)
                && want.declared_type.eq_ignore_ascii_case(declared)
                && ((*pk > 0) == (i == table.pk));
            if !same {
                return Ok(false);
            }
        }
        for added in &table.columns[columns.len()..] {
            if added.not_null && added.default.is_none() {
                return Ok(false);
            }
            let mut def = format!(
                "ALTER TABLE {} ADD COLUMN {} {}",
                crate::schema::quote_ident(&table.name),
                crate::schema::quote_ident(&added.name),
                added.declared_type
            );
            if let Some(d) = &added.default {
                // ADD COLUMN takes a constant default, written without parentheses.
                def.push_str(&format!(" DEFAULT {d}"));
            }
            if added.not_null {
                def.push_str(" NOT NULL");
            }
            alters.push(def);
        }
    }
    for alter in alters {
        conn.execute_batch(&alter)?;
    }
    Ok(true)
}
