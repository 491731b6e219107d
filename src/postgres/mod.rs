//! PostgreSQL as the source of truth: several sluice servers on one database.
//!
//! Each server keeps a local SQLite replica of the schema's tables (a [`SqliteStore`]
//! opened with [`SqliteStore::open_replica`]) and serves snapshots, resumes and matching
//! from it exactly as the embedded server does, so subscriptions keep SQLite's semantics.
//! The replica is filled by an initial copy read in the snapshot exported by the
//! server's replication slot, then fed from logical replication (`pgoutput`, publication
//! [`ddl::PUBLICATION`]): each PostgreSQL transaction becomes one sluice transaction
//! whose sync id is its commit LSN, the same on every server. Client writes are judged
//! with the embedded store's checks ([`crate::store::WriteCheck`]) over the rows they
//! touch, read `FOR UPDATE`, and committed in PostgreSQL with their idempotency record;
//! they are acknowledged once this server's replica has applied them.
//!
//! Layering: below the server (which drives it), above the store, the schema and the
//! values; it must not depend on the server, the wire or the client. [`pgoutput`],
//! [`values`] and the DDL text are pure; the rest does network IO with tokio.

pub(crate) mod ddl;
mod pgoutput;
mod replication;
mod source;
mod tls;
mod values;
mod write;

pub use pgoutput::{DecodeError, Lsn};
pub(crate) use source::{connect_source, resync_source, Event, Source};
pub use source::{drop_slots, list_slots, SlotInfo};
pub use tls::{parse_url, PgConfig};
pub(crate) use write::{prune_outcomes, PgWriter, Written};

#[cfg(doc)]
use crate::store::SqliteStore;
use crate::store::StoreError;

/// Prefix of the replication slots sluice creates (`sluice_` and 16 hex digits).
pub const SLOT_PREFIX: &str = "sluice_";

/// Errors of the PostgreSQL source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The URL could not be parsed.
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    /// The CA file of `sslrootcert` could not be used, or a host name cannot be verified.
    #[error("TLS to PostgreSQL: {0}")]
    Tls(String),
    /// The server could not be reached or refused the login.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    /// A query failed.
    #[error("PostgreSQL: {}", with_cause(.0))]
    Query(#[from] tokio_postgres::Error),
    /// A table of the database does not fit the schema.
    #[error("PostgreSQL table {table}.{column} {message}")]
    Schema {
        /// The table.
        table: String,
        /// The column (the primary key's, for a primary key that does not fit).
        column: String,
        /// What does not fit.
        message: String,
    },
    /// The replication connection failed or the server refused a replication command.
    #[error("PostgreSQL replication: {0}")]
    Replication(String),
    /// A replication message could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The local replica failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// tokio-postgres says only "db error"; the database's own message is its source.
fn with_cause(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

impl PgError {
    /// The SQLSTATE of a failed query, if it was one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Query(e) => e.code().map(|c| c.code()),
            _ => None,
        }
    }
}

/// A connection (TLS when `config` says so), its driver spawned on the runtime.
pub async fn connect(config: &PgConfig) -> Result<tokio_postgres::Client, PgError> {
    match &config.tls {
        None => spawn_driver(config.pg.connect(tokio_postgres::NoTls).await),
        Some(tls) => spawn_driver(config.pg.connect(tls::MakeRustls(tls.clone())).await),
    }
}

fn spawn_driver<S, T>(
    connected: Result<
        (tokio_postgres::Client, tokio_postgres::Connection<S, T>),
        tokio_postgres::Error,
    >,
) -> Result<tokio_postgres::Client, PgError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = connected.map_err(|e| PgError::Connect(with_cause(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}
