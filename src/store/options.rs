//! Tuning knobs of the SQLite store, each with a documented default and its cost.
//!
//! Plain data with serde; depends on nothing else in the crate.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How hard SQLite works to make a commit durable (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Synchronous {
    /// fsync the WAL on every commit: an acknowledged transaction survives power loss.
    /// Costs one fsync per `apply` call (group commit shares it among the batch).
    Full,
    /// fsync only at checkpoints: survives a process crash, but the last transactions
    /// may be lost on power loss or an OS crash. Several times faster on slow disks.
    Normal,
}

impl Synchronous {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Options for [`crate::store::SqliteStore::open`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreOptions {
    /// Default [`Synchronous::Full`].
    pub synchronous: Synchronous,
    /// How long a connection waits on a lock held by another process before failing.
    /// Default 5000 ms. Within one process the writer is serialized by a mutex and WAL
    /// readers never wait for it, so this only matters with outside writers or during
    /// WAL recovery.
    pub busy_timeout_ms: u64,
    /// Prepared statements kept per connection. Default 64; each costs a few KiB. Inserts
    /// are cached per distinct column set, so schemas with many tables want more.
    pub statement_cache: usize,
    /// Page cache of the writer connection in KiB (`PRAGMA cache_size`). Default 16384
    /// (16 MiB); read connections use SQLite's default (2 MiB).
    pub writer_cache_kib: u32,
    /// A replica of PostgreSQL: the most changes of one replicated transaction held in
    /// memory. A transaction that makes more is applied and logged in parts inside its
    /// one SQLite transaction, and not fanned out change by change: the sessions its rows
    /// reach resume from the log instead (see
    /// [`crate::store::Replicated::Spilled`]). Default 10,000; a change holds its old and
    /// new rows.
    pub replicated_changes_in_memory: usize,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            synchronous: Synchronous::Full,
            busy_timeout_ms: default_busy_timeout_ms(),
            statement_cache: default_statement_cache(),
            writer_cache_kib: default_writer_cache_kib(),
            replicated_changes_in_memory: default_replicated_changes_in_memory(),
        }
    }
}

fn default_busy_timeout_ms() -> u64 {
    5000
}

fn default_statement_cache() -> usize {
    64
}

fn default_writer_cache_kib() -> u32 {
    16 * 1024
}

fn default_replicated_changes_in_memory() -> usize {
    10_000
}

impl StoreOptions {
    /// Sets the durability level; see [`Synchronous`].
    pub fn synchronous(mut self, synchronous: Synchronous) -> StoreOptions {
        self.synchronous = synchronous;
        self
    }

    /// Sets how long to wait on a lock held by another process.
    pub fn busy_timeout(mut self, timeout: Duration) -> StoreOptions {
        self.busy_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets the number of prepared statements cached per connection.
    pub fn statement_cache(mut self, statements: usize) -> StoreOptions {
        self.statement_cache = statements;
        self
    }

    /// Sets the writer's page cache size in KiB.
    pub fn writer_cache_kib(mut self, kib: u32) -> StoreOptions {
        self.writer_cache_kib = kib;
        self
    }

    /// Sets the most changes of one replicated transaction held in memory (at least 1).
    pub fn replicated_changes_in_memory(mut self, changes: usize) -> StoreOptions {
        self.replicated_changes_in_memory = changes.max(1);
        self
    }

    pub(crate) fn busy_timeout_duration(&self) -> Duration {
        Duration::from_millis(self.busy_timeout_ms)
    }
}
