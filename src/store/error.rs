//! Errors of the store: failures of the database itself, not rejected transactions
//! (those are [`crate::store::TxnOutcome::Rejected`]).
//!
//! Depends only on the schema's version type and the error types of rusqlite and
//! postcard; nothing above the store.

use crate::schema::SchemaVersion;

/// A store operation failed; for `apply`, the whole batch was rolled back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed: IO, a full disk, a lock held past the busy timeout, a bad query.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored blob (a row image, a queued transaction, subscription parameters) could
    /// not be encoded or decoded.
    #[error("row image encoding: {0}")]
    Image(#[from] postcard::Error),
    /// Opening found a database created for another schema, and the change is not
    /// additive (new tables, new nullable or defaulted columns at the end).
    #[error(
        "the database was created with schema version {stored}, but the loaded schema is \
         {current}; migrate or use a fresh database"
    )]
    SchemaChanged {
        /// The schema version recorded in the database.
        stored: String,
        /// The version of the schema it was opened with.
        current: SchemaVersion,
    },
    /// A table the schema does not have was named.
    #[error("unknown table {0}")]
    UnknownTable(String),
    /// sluice's own tables hold something sluice never writes (a missing meta row, an
    /// unknown change kind or reject code), or WAL mode could not be enabled.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The server store was given an in-memory path (empty, `:memory:` or
    /// `file::memory:...`): its readers open their own connections to the file.
    #[error("a store path is required: in-memory databases cannot be shared by connections")]
    InMemory,
    /// A fetch answer would exceed [`crate::store::MAX_FETCH_BYTES`] of row data: the
    /// read stops there, before the rest is loaded into memory.
    #[error("the answer exceeds {limit} bytes of row data; fetch fewer keys")]
    AnswerTooLarge {
        /// The bound, in bytes.
        limit: usize,
    },
    /// A client-side local store operation was refused (a write in a read query, a
    /// schema that does not parse).
    #[error("{0}")]
    Local(String),
}
