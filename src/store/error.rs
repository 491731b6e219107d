//! Errors of the store: failures of the database itself, not rejected transactions
//! (those are [`crate::store::TxnOutcome::Rejected`]).

use crate::schema::SchemaVersion;

/// A store operation failed; for `apply`, the whole batch was rolled back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("row image encoding: {0}")]
    Image(#[from] postcard::Error),
    #[error(
        "the database was created with schema version {stored}, but the loaded schema is \
         {current}; migrate or use a fresh database"
    )]
    SchemaChanged {
        stored: String,
        current: SchemaVersion,
    },
    #[error("unknown table {0}")]
    UnknownTable(String),
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error("a store path is required: in-memory databases cannot be shared by connections")]
    InMemory,
    /// A client-side local store operation was refused (a write in a read query, a
    /// schema that does not parse).
    #[error("{0}")]
    Local(String),
}
