//! The store: the server's data, its change log and consistent reads, in SQLite.
//!
//! This is the only module that uses rusqlite; everything SQLite-specific stays behind the
//! [`Store`] trait so that another backend (PostgreSQL, for several servers sharing one
//! database) can sit beside [`SqliteStore`]. It sits below the wire, the transport, the
//! server and the client and must not depend on any of them (nor on tokio): it uses only
//! the vocabulary, values, the schema and the query layer (to turn a shape into SQL).
//!
//! The API is synchronous and every type is `Send + Sync`: the async server calls it from
//! `spawn_blocking`. Writes are serialized through one connection and applied in groups
//! (many client transactions per SQLite transaction, each in its own savepoint). Reads
//! open their own read-only connection and see one committed state from start to end
//! (WAL mode), identified by the sync id of the last transaction in it.
//!
//! sluice's own tables start with [`crate::schema::RESERVED_PREFIX`]:
//!
//! - `_sluice_meta`: one row: head sync id, compaction horizon, schema version.
//! - `_sluice_log`: the change log, in chunks of consecutive changes: first and last
//!   sync id, number of changes, and the changes in one blob (table, kind, old and new row images as
//!   postcard of `Vec<Value>`, origin client and sequence number; see `sqlite/log`).
//! - `_sluice_commits`: commit time of each batch, keyed by its last sync id (retention).
//! - `_sluice_client_txns`: the outcome of each `(client, seq)`, for idempotent resends.

mod apply;
mod convert;
mod error;
mod local;
mod options;
mod sqlite;
mod types;
mod window;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

pub use convert::row_bytes;
pub use error::StoreError;

/// Row data one [`Store::fetch`] answer may hold (as counted by [`row_bytes`]): 64 MiB.
/// A fetch of 1,000 keys of large rows cannot make the server hold more than this.
pub const MAX_FETCH_BYTES: usize = 64 * 1024 * 1024;
pub use local::{
    Applied, JoinKind, KeyOrd, LocalReader, LocalStore, Pending, PinChange, ServerTxn, SubRecord,
    MAX_NOTIFY_ROWS, PIN_HOLDER, READ_BUSY_TIMEOUT,
};
pub use options::{StoreOptions, Synchronous};
pub use sqlite::{
    read_log_in, Judgement, Replicated, ReplicatedTxn, RowOp, SqliteStore, WriteCheck,
};
pub use types::LogRead;
pub(crate) use window::NoObserver;
pub use window::{CommitObserver, TxnView, WindowFrom, WindowRead};

pub use crate::vocab::{
    Change, ChangeKind, ClientId, Mutation, Precondition, RejectCode, SyncId, TxnOutcome, WriteTxn,
};

use crate::query::Shape;
use crate::schema::{Schema, Table};
use crate::value::Value;

/// A check the store runs inside a transaction, on every row change right after making
/// it (so it sees the row exactly as stored, and the check and the write are atomic):
/// `old` is the row before (updates, deletes), `new` after (inserts, updates).
/// `Err(reason)` rejects the whole transaction with [`RejectCode::Forbidden`].
///
/// A guarded caller learns nothing of rows it may not read: the store reports such a row
/// exactly as a missing one (`not_found` for updates and deletes, a failed precondition
/// with the same words), and an insert whose key is taken by one is refused with the
/// guard's own words for a refused insert ([`WriteGuard::insert_denied`]).
pub trait WriteGuard: Send + Sync {
    /// Checks one row change of `mutation` on `table`: `Ok(())` lets it stand,
    /// `Err(reason)` rejects the transaction with that message. Called once per changed
    /// row, inside the writer's transaction: its cost adds to every guarded commit.
    fn check(
        &self,
        table: &Table,
        mutation: &Mutation,
        old: Option<&[Value]>,
        new: Option<&[Value]>,
    ) -> Result<(), String>;

    /// Whether the caller may read `row` of `table` (and its column `column`, when
    /// given). The default reads everything.
    fn readable(&self, table: &Table, row: &[Value], column: Option<usize>) -> bool {
        let _ = (table, row, column);
        true
    }

    /// The refusal for an insert whose primary key is held by `row`, a row the caller may
    /// not read: the same words [`WriteGuard::check`] uses for an insert it refuses.
    fn insert_denied(&self, table: &Table, row: &[Value]) -> String {
        format!("you may not insert {}[{}]", table.name, row[table.pk])
    }
}

/// A transaction and the guard that checks its rows, if any.
pub type GuardedTxn = (WriteTxn, Option<Arc<dyn WriteGuard>>);

/// The operations the server needs from its database.
pub trait Store: Send + Sync {
    /// The schema the store was opened with.
    fn schema(&self) -> &Arc<Schema>;

    /// Applies transactions in order, atomically each, in one database transaction (group
    /// commit): one rejected transaction does not affect the others. Returns one outcome
    /// per transaction, in order. A client transaction whose `(client, seq)` already has
    /// an outcome is not applied again; its stored outcome is returned (for a commit, with
    /// the original sync id and no changes). `Err` means the database failed and nothing
    /// of the batch was committed: [`StoreError::Sqlite`] (disk, lock timeout),
    /// [`StoreError::Image`] or [`StoreError::Corrupt`].
    fn apply(&self, txns: Vec<WriteTxn>) -> Result<Vec<TxnOutcome>, StoreError>;

    /// [`Store::apply`] with a per-transaction [`WriteGuard`]. A guarded transaction
    /// whose guard refuses a row is rejected (`forbidden`) and writes nothing. Errors as
    /// for [`Store::apply`].
    fn apply_guarded(&self, txns: Vec<GuardedTxn>) -> Result<Vec<TxnOutcome>, StoreError>;

    /// [`Store::apply_guarded`], telling `observer` of each committed transaction inside
    /// the writer's transaction (window maintenance reads there), and whether the batch
    /// committed. An observer's error fails the batch. Errors as for [`Store::apply`].
    fn apply_observed(
        &self,
        txns: Vec<GuardedTxn>,
        observer: &mut dyn CommitObserver,
    ) -> Result<Vec<TxnOutcome>, StoreError>;

    /// Runs `f` under the writer lock, between batches: it reads the state at the head
    /// (given) and no transaction commits until it returns. Window shapes start here, so
    /// that their maintenance picks up at the next transaction. Fails with
    /// [`StoreError::Sqlite`] when the database does, or with `f`'s error.
    fn at_head(
        &self,
        f: &mut dyn FnMut(&dyn TxnView, SyncId) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// The sync id of the last committed transaction. Cheap: no database access.
    fn head(&self) -> SyncId;

    /// The log is compacted up to and including this sync id; every change after it is
    /// present. Cheap: no database access.
    fn horizon(&self) -> SyncId;

    /// A random id created with the database and kept for its life (a copy restored
    /// from a backup keeps it too; a new database gets a new one). Sync ids only mean
    /// something within one database: a client that finds another id starts over.
    fn server_id(&self) -> &str;

    /// Streams the changes with sync id `> after` in order, until the callback breaks.
    /// Returns [`LogRead::Compacted`] without calling it when `after < horizon`. Fails
    /// with [`StoreError::Sqlite`] when the read fails, and with [`StoreError::Image`] or
    /// [`StoreError::Corrupt`] when a log entry cannot be decoded.
    fn read_log(
        &self,
        after: SyncId,
        f: &mut dyn FnMut(Change) -> ControlFlow<()>,
    ) -> Result<LogRead, StoreError>;

    /// Streams the full rows (table column order) of the shape's table that match it, as
    /// of one committed state, and returns that state's sync id. The callback may stop
    /// early. Rows are never all held in memory. Fails with [`StoreError::Sqlite`] when
    /// the read fails.
    fn snapshot(
        &self,
        shape: &Shape,
        f: &mut dyn FnMut(Vec<Value>) -> ControlFlow<()>,
    ) -> Result<SyncId, StoreError>;

    /// An estimate of the number of rows in the shape, for progress reports.
    /// [`SqliteStore`] counts them exactly (`COUNT(*)` with the shape's filter), which
    /// costs a scan of the matching rows, or of the table without a usable index. Fails
    /// with [`StoreError::Sqlite`] when the read fails.
    fn count_estimate(&self, shape: &Shape) -> Result<u64, StoreError>;

    /// The rows with these primary keys, as of one committed state whose sync id is
    /// returned. Missing keys are simply absent; rows come in the order of `keys`, one per
    /// key found (a repeated key repeats its row). One indexed lookup per key. Fails with
    /// [`StoreError::UnknownTable`] when the schema has no such table, and with
    /// [`StoreError::Sqlite`] when the read fails.
    fn fetch(&self, table: &str, keys: &[Value]) -> Result<(SyncId, Vec<Vec<Value>>), StoreError>;

    /// Deletes the log entries with sync id `<= before_or_at` (capped at the head) and
    /// advances the horizon to it; a target at or below the horizon does nothing. Returns
    /// the number of changes deleted. Takes the writer for the duration of the delete.
    /// Fails with [`StoreError::Sqlite`] when the database does.
    fn compact(&self, before_or_at: SyncId) -> Result<u64, StoreError>;

    /// Retention: compacts everything except the last `keep_last` transactions and,
    /// when `max_age` is given, except the transactions committed within it (an entry
    /// goes only when it is outside both windows). Returns the number of changes deleted.
    /// Errors as for [`Store::compact`].
    fn compact_retain(&self, keep_last: u64, max_age: Option<Duration>) -> Result<u64, StoreError>;

    /// Forgets the recorded outcomes of client transactions (their idempotency records)
    /// older than `max_age`, and the oldest past `max_records`. Per client, the highest
    /// forgotten sequence number is kept (one row per client): a resend at or below it is
    /// rejected with [`crate::vocab::RejectCode::Expired`] instead of being applied again.
    /// Returns the number of outcomes forgotten. Takes the writer for the duration.
    /// Errors as for [`Store::compact`].
    fn prune_outcomes(&self, max_age: Duration, max_records: u64) -> Result<u64, StoreError>;
}
