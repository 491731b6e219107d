//! The client's local database: the rows its subscriptions and pins cover, the outbox of
//! local transactions, and the staging area where a new subscription waits to join the
//! consistent cut.
//!
//! Every schema table `T` exists twice: `_sluice_srv_T` holds the server's state of the
//! covered rows, and `T` itself is the local view the app reads: server state with the
//! pending outbox replayed on top (invariant 5's rebase), recomputed per key whenever
//! either side changes. Each public method is one SQLite transaction, so the app never
//! reads half of an applied server transaction (invariant 10).
//!
//! Synchronous: the client calls it from `spawn_blocking`. Depends on the schema, values,
//! the vocabulary and [`crate::query::Params`]; it must not depend on the client, the
//! wire or the transport.
//!
//! Errors: every fallible method fails with [`StoreError::Sqlite`] when SQLite does (IO,
//! a full disk, a lock) and with [`StoreError::Image`] when a stored blob cannot be
//! encoded or decoded; the failed method's transaction is rolled back. Methods that can
//! fail otherwise say so.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::convert::value_from_ref;
use super::error::StoreError;
use crate::query::{Params, ShapeId};
use crate::schema::{quote_ident, Schema};
use crate::value::Value;
use crate::vocab::{ClientId, Mutation, Precondition, RowEvent, SubId, SyncId};

mod bulk;
mod outbox;
mod pins;
mod read;
mod rows;
mod stage;
mod stage_table;
mod sync;
mod whole;

pub use read::{LocalReader, READ_BUSY_TIMEOUT};
pub use sync::{PinChange, ServerTxn};

use rows::{
    apply_event, covered, forget_uncovered_columns, local_ddl, read_one, refresh, settle, shadow,
};

/// Prepared statements kept per local database connection, so the per-row statements of
/// bootstraps and live changes are prepared once; each cached statement costs a few KiB.
pub const STATEMENT_CACHE: usize = 256;

/// Coverage holder id used for batch-loader pins (subscriptions use their own ids).
pub const PIN_HOLDER: SubId = SubId::PINS;

const META_DDL: &str = "
CREATE TABLE IF NOT EXISTS _sluice_meta (name TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS _sluice_subs (
    id INTEGER PRIMARY KEY, sql TEXT NOT NULL, params BLOB NOT NULL,
    table_name TEXT, columns BLOB, joined INTEGER NOT NULL DEFAULT 0,
    access INTEGER, access_next INTEGER);
CREATE TABLE IF NOT EXISTS _sluice_cover (
    table_name TEXT NOT NULL, key NOT NULL, holder INTEGER NOT NULL,
    PRIMARY KEY (table_name, key, holder)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _sluice_outbox (
    seq INTEGER PRIMARY KEY, txn BLOB NOT NULL, committed INTEGER);
CREATE TABLE IF NOT EXISTS _sluice_expiry (
    sub INTEGER PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS _sluice_rowver (
    table_name TEXT NOT NULL, key NOT NULL, sync INTEGER NOT NULL,
    PRIMARY KEY (table_name, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _sluice_touched (
    table_name TEXT NOT NULL, key NOT NULL, PRIMARY KEY (table_name, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _sluice_stage (
    n INTEGER PRIMARY KEY AUTOINCREMENT, sub INTEGER NOT NULL, sync_id INTEGER,
    table_name TEXT NOT NULL, event BLOB NOT NULL);
";

/// A subscription as the local store remembers it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubRecord {
    /// Its id, numbered by the local store (never [`PIN_HOLDER`]).
    pub id: SubId,
    /// The subscription as the app wrote it.
    pub sql: String,
    /// Values of its `:name` parameters.
    pub params: Params,
    /// The table its rows come from, once the server has said it.
    pub table: Option<String>,
    /// Column names of its rows, once the server has said them.
    pub columns: Vec<String>,
    /// Whether its rows have joined the local view (a resume is possible).
    pub joined: bool,
    /// The effective shape its joined rows were read under (the server's `access`), sent
    /// back to resume; `None` when unknown.
    pub access: Option<ShapeId>,
}

/// A local transaction not yet confirmed in the local view.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Its sequence number, sent as the write's `seq` (idempotency key).
    pub seq: u64,
    /// The writes, in order.
    pub mutations: Vec<Mutation>,
    /// The checks the server makes before the writes.
    pub preconditions: Vec<Precondition>,
    /// Committed by the server at this sync id; kept until the cut reaches it.
    pub committed: Option<SyncId>,
}

/// How a staged subscription joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// A snapshot: its staged rows replace whatever it covered before.
    Bootstrap,
    /// A resume: its staged changes apply on top of what it covers.
    Resume,
}

/// Rows listed one by one in an [`Applied`]; past it (a large bootstrap) only the tables
/// are named, so a notification stays small.
pub const MAX_NOTIFY_ROWS: usize = 10_000;

/// What one local-store operation changed in the local view (for observers).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Rows whose visible content changed, as (table, key), up to [`MAX_NOTIFY_ROWS`].
    pub rows: BTreeSet<(String, KeyOrd)>,
    /// Tables with changed rows (always complete).
    pub tables: BTreeSet<String>,
    /// More rows changed than `rows` lists.
    pub truncated: bool,
    /// Subscriptions whose rows changed.
    pub subs: BTreeSet<SubId>,
}

impl Applied {
    /// Whether nothing changed (no table, no subscription).
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.subs.is_empty()
    }

    /// Records a changed row.
    fn row(&mut self, table: &str, key: Value) {
        if !self.tables.contains(table) {
            self.tables.insert(table.to_string());
        }
        if self.rows.len() < MAX_NOTIFY_ROWS {
            self.rows.insert((table.to_string(), KeyOrd(key)));
        } else {
            self.truncated = true;
        }
    }

    /// Adds what `other` changed, keeping the [`MAX_NOTIFY_ROWS`] bound.
    pub fn merge(&mut self, other: Applied) {
        for (t, k) in other.rows {
            self.row(&t, k.0);
        }
        self.tables.extend(other.tables);
        self.truncated |= other.truncated;
        self.subs.extend(other.subs);
    }
}

/// A primary key with a total order (SQLite's: NULL, numbers, text, blobs), for sets of
/// keys.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyOrd(pub Value);

impl Eq for KeyOrd {}

impl PartialOrd for KeyOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyOrd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.sqlite_cmp(&other.0)
    }
}

/// The client's SQLite database: one connection, plus the pending outbox mirrored in
/// memory.
pub struct LocalStore {
    conn: Connection,
    schema: Arc<Schema>,
    pending: Vec<Pending>,
    /// Subscriptions whose bootstrap or resume has started and not joined yet. While any
    /// is staging, committed transactions stay in the outbox (and so in the view): the
    /// server state that holds them may still be staged, and dropping them at the cut
    /// would make an acknowledged write blink out until the join.
    staging: BTreeSet<SubId>,
    /// `schema`, as the store's readers see it.
    shared_schema: read::SharedSchema,
}

impl LocalStore {
    /// Opens (or creates) the local database. Without `schema`, the schema last adopted
    /// from a server is used (none on a fresh database: call [`LocalStore::adopt_schema`]).
    /// Fails with [`StoreError::Local`] when the persisted schema no longer parses, and
    /// with [`StoreError::Sqlite`] when the file cannot be opened or created.
    pub fn open(path: &Path, schema: Option<Schema>) -> Result<LocalStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Per-row statements of bootstraps and live changes are prepared once.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.execute_batch(META_DDL)?;
        conn.execute_batch(stage::STAGE_ROWS_DDL)?;
        conn.execute_batch(whole::WHOLE_DDL)?;
        // Stores made before subscriptions remembered their shape gain the columns.
        let has_access: bool = conn.query_row(
            "SELECT count(*) FROM pragma_table_info('_sluice_subs') WHERE name = 'access'",
            [],
            |r| r.get(0),
        )?;
        if !has_access {
            conn.execute_batch(
                "ALTER TABLE _sluice_subs ADD COLUMN access INTEGER;
                 ALTER TABLE _sluice_subs ADD COLUMN access_next INTEGER;",
            )?;
        }
        let persisted: Option<String> = conn
            .query_row(
                "SELECT value FROM _sluice_meta WHERE name = 'schema_sql'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let empty = Schema::parse("local", "").map_err(|e| StoreError::Local(e.to_string()))?;
        let empty = Arc::new(empty);
        let mut store = LocalStore {
            conn,
            schema: empty.clone(),
            pending: Vec::new(),
            staging: BTreeSet::new(),
            shared_schema: Arc::new(std::sync::Mutex::new(empty)),
        };
        if let Some(sql) = &persisted {
            store.schema = Arc::new(
                Schema::parse("local schema", sql).map_err(|e| StoreError::Local(e.to_string()))?,
            );
            *store
                .shared_schema
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = store.schema.clone();
        }
        if let Some(schema) = schema {
            // The app's schema is adopted when it is new to this store (a first open, an
            // app upgrade). Opening again with the same one keeps what the server last
            // said, which may be narrower (a server tells each caller only the tables
            // and columns it may know of): adopting the app's again would reset those
            // tables at every open and again at every connection.
            let app_sql: Vec<String> = schema.tables().map(|t| t.create_sql()).collect();
            let app_sql = app_sql.join(";\n");
            let seen = store.meta_text("app_schema_sql")?;
            if persisted.is_none() || seen.as_deref() != Some(app_sql.as_str()) {
                store.adopt(schema)?;
                store.set_meta("app_schema_sql", &Value::Text(app_sql))?;
            }
        }
        store.pending = store.load_pending()?;
        Ok(store)
    }

    /// The schema the local tables follow (empty until one is adopted).
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// This installation's client id, generated once and kept.
    pub fn client_id(&self) -> Result<ClientId, StoreError> {
        let existing: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM _sluice_meta WHERE name = 'client_id'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = existing {
            return Ok(ClientId(id));
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let id = format!("c{:x}{:x}", nanos, std::process::id());
        self.set_meta("client_id", &Value::Text(id.clone()))?;
        Ok(ClientId(id))
    }

    fn set_meta(&self, name: &str, value: &Value) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO _sluice_meta (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![name, value],
        )?;
        Ok(())
    }

    fn meta_u64(&self, name: &str) -> Result<u64, StoreError> {
        let v: Option<i64> = self
            .conn
            .query_row(
                "SELECT value FROM _sluice_meta WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.unwrap_or(0) as u64)
    }

    fn meta_text(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM _sluice_meta WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The sync id the local view reflects.
    pub fn cut(&self) -> Result<SyncId, StoreError> {
        Ok(SyncId(self.meta_u64("cut")?))
    }

    /// Whether `server_id` is the database the local state came from and its `head` is
    /// behind the local cut: it lags (or was restored from an older backup).
    pub fn is_behind(&self, server_id: &str, head: SyncId) -> Result<bool, StoreError> {
        let known = self.meta_text("server_id")?;
        Ok(known.as_deref() == Some(server_id) && self.cut()? > head)
    }

    /// Checks that the server is the one the local state came from: the same database
    /// (`server_id`) and not behind the local cut (a database restored from a backup
    /// keeps its id but loses the transactions after the backup). Otherwise the local
    /// server state is worthless there: every row version and the cut are forgotten and
    /// every subscription bootstraps again (rows stay visible until their snapshots
    /// replace them); the outbox is kept and sent to the new server. Returns whether it
    /// started over.
    pub fn adopt_server(&mut self, server_id: &str, head: SyncId) -> Result<bool, StoreError> {
        let known = self.meta_text("server_id")?;
        let same = known.as_deref().is_none_or(|k| k == server_id) && self.cut()? <= head;
        let tx = self.conn.transaction()?;
        if !same {
            tx.execute("DELETE FROM _sluice_rowver", [])?;
            tx.execute("UPDATE _sluice_cover_table SET sync = 0", [])?;
            tx.execute("UPDATE _sluice_subs SET joined = 0", [])?;
            // An acknowledgement from the other database says nothing about this one:
            // such writes are sent again (idempotent where this database recorded them).
            tx.execute("UPDATE _sluice_outbox SET committed = NULL", [])?;
            // The cut only ever grows, except here: it starts over with the database.
            tx.execute("DELETE FROM _sluice_meta WHERE name = 'cut'", [])?;
        }
        tx.execute(
            "INSERT INTO _sluice_meta (name, value) VALUES ('server_id', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [server_id],
        )?;
        tx.commit()?;
        if !same {
            for p in &mut self.pending {
                p.committed = None;
            }
        }
        Ok(!same)
    }

    /// Adopts the server's schema (`CREATE TABLE` text). Tables that only gained
    /// nullable columns keep their rows; a table whose columns changed otherwise is
    /// emptied and the subscriptions on it must bootstrap again: their ids are returned.
    /// Fails with [`StoreError::Local`] when `schema_sql` does not parse.
    pub fn adopt_schema(&mut self, schema_sql: &str) -> Result<Vec<SubId>, StoreError> {
        let schema = Schema::parse("server schema", schema_sql)
            .map_err(|e| StoreError::Local(e.to_string()))?;
        self.adopt(schema)
    }

    fn adopt(&mut self, schema: Schema) -> Result<Vec<SubId>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut reset_tables = Vec::new();
        for table in schema.tables() {
            match self.schema.table(&table.name) {
                None => {}
                Some(old) if old.columns == table.columns && old.pk == table.pk => continue,
                Some(old) => {
                    let additive = old.pk == table.pk
                        && table.columns.len() > old.columns.len()
                        && old.columns.iter().zip(&table.columns).all(|(a, b)| a == b)
                        && table.columns[old.columns.len()..]
                            .iter()
                            .all(|c| match &c.default {
                                Some(d) => is_literal(d),
                                None => !c.not_null,
                            });
                    if additive {
                        for c in &table.columns[old.columns.len()..] {
                            // Existing rows take the column's default, as they did on
                            // the server when it added the column.
                            let default = c
                                .default
                                .as_ref()
                                .map(|d| format!(" DEFAULT {d}"))
                                .unwrap_or_default();
                            for name in [quote_ident(&table.name), shadow(&table.name)] {
                                tx.execute_batch(&format!(
                                    "ALTER TABLE {name} ADD COLUMN {} {}{default}",
                                    quote_ident(&c.name),
                                    c.declared_type
                                ))?;
                            }
                        }
                        continue;
                    }
                    for name in [quote_ident(&old.name), shadow(&old.name)] {
                        tx.execute_batch(&format!("DROP TABLE IF EXISTS {name}"))?;
                    }
                    for meta in ["_sluice_cover", "_sluice_rowver", "_sluice_cover_table"] {
                        tx.execute(
                            &format!("DELETE FROM {meta} WHERE table_name = ?1"),
                            [&old.name],
                        )?;
                    }
                    reset_tables.push(old.name.clone());
                }
            }
            tx.execute_batch(&local_ddl(table, &quote_ident(&table.name)))?;
            tx.execute_batch(&local_ddl(table, &shadow(&table.name)))?;
        }
        let mut reset_subs = Vec::new();
        {
            let mut stmt = tx.prepare("SELECT id, table_name FROM _sluice_subs")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, SubId>(0)?, r.get::<_, Option<String>>(1)?))
            })?;
            for row in rows {
                let (id, table) = row?;
                if table.is_some_and(|t| reset_tables.iter().any(|r| r.eq_ignore_ascii_case(&t))) {
                    reset_subs.push(id);
                }
            }
        }
        for id in &reset_subs {
            tx.execute("UPDATE _sluice_subs SET joined = 0 WHERE id = ?1", [*id])?;
        }
        let sql: Vec<String> = schema.tables().map(|t| t.create_sql()).collect();
        tx.execute(
            "INSERT INTO _sluice_meta (name, value) VALUES ('schema_sql', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [sql.join(";\n")],
        )?;
        tx.commit()?;
        self.schema = Arc::new(schema);
        *self.shared_schema.lock().unwrap_or_else(|e| e.into_inner()) = self.schema.clone();
        Ok(reset_subs)
    }

    // ----- subscriptions -----

    /// Remembers a new subscription; returns its id.
    pub fn add_sub(&mut self, sql: &str, params: &Params) -> Result<SubId, StoreError> {
        let blob = postcard::to_allocvec(params)?;
        // Ids are never reused: frames of a dropped subscription may still be on their
        // way, and must not be taken for a new one's.
        let highest: i64 =
            self.conn
                .query_row("SELECT coalesce(max(id), 0) FROM _sluice_subs", [], |r| {
                    r.get(0)
                })?;
        let id = self.meta_u64("last_sub")?.max(highest.max(0) as u64) + 1;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO _sluice_subs (id, sql, params) VALUES (?1, ?2, ?3)",
            params![id as i64, sql, blob],
        )?;
        tx.execute(
            "INSERT INTO _sluice_meta (name, value) VALUES ('last_sub', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [id as i64],
        )?;
        tx.commit()?;
        Ok(SubId(id))
    }

    /// Replaces the text of a subscription (a window resized: the same rows, another
    /// limit); its parameters stay.
    pub fn set_sub_sql(&mut self, sub: SubId, sql: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE _sluice_subs SET sql = ?1 WHERE id = ?2",
            params![sql, sub],
        )?;
        Ok(())
    }

    /// Records what the server said about a subscription's rows.
    pub fn describe_sub(
        &mut self,
        sub: SubId,
        table: &str,
        columns: &[String],
    ) -> Result<(), StoreError> {
        let blob = postcard::to_allocvec(columns)?;
        self.conn.execute(
            "UPDATE _sluice_subs SET table_name = ?1, columns = ?2 WHERE id = ?3",
            params![table, blob, sub],
        )?;
        Ok(())
    }

    /// Records the shape a subscription's coming rows are read under; it becomes the
    /// subscription's [`SubRecord::access`] when they join, in the join's transaction.
    pub fn set_sub_access(&mut self, sub: SubId, access: ShapeId) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE _sluice_subs SET access_next = ?1 WHERE id = ?2",
            params![access.0 as i64, sub],
        )?;
        Ok(())
    }

    /// Every remembered subscription, by id.
    pub fn subs(&self) -> Result<Vec<SubRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, sql, params, table_name, columns, joined, access FROM _sluice_subs
             ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, SubId>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<Vec<u8>>>(4)?,
                r.get::<_, bool>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, sql, params, table, columns, joined, access) = row?;
            out.push(SubRecord {
                id,
                sql,
                params: postcard::from_bytes(&params)?,
                table,
                columns: match columns {
                    Some(c) => postcard::from_bytes(&c)?,
                    None => Vec::new(),
                },
                joined,
                access: access.map(|a| ShapeId(a as u64)),
            });
        }
        Ok(out)
    }

    /// Forgets a subscription and every row only it covered.
    pub fn remove_sub(&mut self, sub: SubId) -> Result<Applied, StoreError> {
        self.release_holder(sub, true)
    }

    /// Removes all coverage by `holder`; rows left uncovered leave the local view.
    pub(crate) fn release_holder(
        &mut self,
        holder: SubId,
        forget_sub: bool,
    ) -> Result<Applied, StoreError> {
        let cut = self.cut()?;
        let tx = self.conn.transaction()?;
        let mut applied = Applied::default();
        // Tables it covers whole are released set-based (nobody else covers their rows).
        whole::release_holder(&tx, &self.schema, holder, &self.pending, &mut applied)?;
        let keys: Vec<(String, Value)> = {
            let mut stmt =
                tx.prepare("SELECT table_name, key FROM _sluice_cover WHERE holder = ?1")?;
            let rows = stmt.query_map([holder], |r| {
                Ok((r.get::<_, String>(0)?, value_from_ref(r.get_ref(1)?)))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        tx.execute("DELETE FROM _sluice_cover WHERE holder = ?1", [holder])?;
        if forget_sub {
            self.staging.remove(&holder);
            tx.execute("DELETE FROM _sluice_subs WHERE id = ?1", [holder])?;
            stage::clear(&tx, holder)?;
        }
        for (table, key) in keys {
            let Some(t) = self.schema.table(&table).cloned() else {
                continue;
            };
            forget_uncovered_columns(&tx, &t, &key)?;
            if settle(&tx, &t, &key, &self.pending)? {
                applied.row(&t.name, key);
            }
        }
        if holder != PIN_HOLDER {
            applied.subs.insert(holder);
        }
        // The last staging subscription gone: writes the cut already holds leave the
        // outbox now (nothing else may come to confirm them).
        let confirm = forget_sub && self.staging.is_empty();
        if confirm {
            applied.merge(outbox::confirm_in(&tx, &self.schema, &self.pending, cut)?);
        }
        tx.commit()?;
        if confirm {
            outbox::forget_confirmed(&mut self.pending, cut);
        }
        Ok(applied)
    }

    // ----- reads -----

    /// Runs a read-only query on the local view; returns column names and rows. Fails with
    /// [`StoreError::Local`] when the statement would write, and with
    /// [`StoreError::Sqlite`] when it does not prepare or run (bad SQL, wrong parameter
    /// count).
    pub fn query(
        &self,
        sql: &str,
        params: &[Value],
    ) -> Result<(Vec<String>, Vec<Vec<Value>>), StoreError> {
        read::query(&self.conn, sql, params)
    }

    /// A reader of this store's file on a connection of its own: it sees the last
    /// committed state and never waits for this store's open transaction. Fails when the
    /// store is not a file (a reader needs a path another connection can open).
    pub fn reader(&self) -> Result<LocalReader, StoreError> {
        let path = self
            .conn
            .path()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| StoreError::Local("an in-memory store has no reader".into()))?;
        LocalReader::open(Path::new(path), self.shared_schema.clone())
    }

    /// Whether a subscription's bootstrap or resume has started and not joined yet
    /// (committed writes stay in the outbox meanwhile).
    pub fn is_staging(&self) -> bool {
        !self.staging.is_empty()
    }

    /// The visible row of `table` with this key, if any (`None` for an unknown table).
    pub fn row(&self, table: &str, key: &Value) -> Result<Option<Vec<Value>>, StoreError> {
        let Some(t) = self.schema.table(table) else {
            return Ok(None);
        };
        read_one(&self.conn, &quote_ident(&t.name), t, key)
    }

    /// Whether anything (a subscription or a pin) covers the row (`false` for an unknown
    /// table).
    pub fn is_covered(&self, table: &str, key: &Value) -> Result<bool, StoreError> {
        let Some(t) = self.schema.table(table) else {
            return Ok(false);
        };
        covered(&self.conn, t, key)
    }
}

/// Whether a DEFAULT text is a literal that `ALTER TABLE … ADD COLUMN` accepts (SQLite
/// refuses expressions there): a number, a string, a blob, NULL, TRUE or FALSE.
fn is_literal(default: &str) -> bool {
    let d = default.trim();
    let unsigned = d.strip_prefix(['-', '+']).unwrap_or(d);
    (unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && unsigned.parse::<f64>().is_ok())
        || (d.len() >= 2 && d.starts_with('\'') && d.ends_with('\''))
        || ((d.starts_with("x'") || d.starts_with("X'")) && d.ends_with('\''))
        || ["NULL", "TRUE", "FALSE"]
            .iter()
            .any(|k| d.eq_ignore_ascii_case(k))
}

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_join;
#[cfg(test)]
mod tests_stage;
#[cfg(test)]
mod tests_whole;
