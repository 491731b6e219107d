//! # sluice
//!
//! A query-based partial sync engine. Clients subscribe with SQL-like strings
//! (`SELECT * FROM issues WHERE team_id = 'T1' AND status != 'done'`); the server
//! compiles each into a shape, sends the matching rows, then every change that moves a
//! row into, within or out of it.
//!
//! # Layout
//!
//! - [`value`]: SQLite values, storage-class order, affinity (pure).
//! - [`schema`]: the application schema loaded from `CREATE TABLE` files (pure).
//! - [`vocab`]: the words every layer shares: ids, mutations, preconditions, reject codes,
//!   outcomes, changes and row events (pure, below query, wire and store; [`ids`] is its
//!   id module).
//! - [`query`]: the subscription language: parse, validate, bind, normalize, evaluate, and
//!   the order of windows (`ORDER BY ... LIMIT n`) (pure).
//! - [`matcher`]: index of shapes: a row change -> the shapes it affects, sublinear (pure).
//! - [`store`]: SQLite through rusqlite: the server's data, change log and snapshots, and
//!   the client's local database. The only module that touches SQLite.
//! - [`postgres`]: PostgreSQL as the source of truth: schema DDL, the initial copy and
//!   logical replication into a local SQLite replica, writes committed in PostgreSQL.
//! - [`wire`]: the frame codec and protocol messages (pure).
//! - [`transport`]: QUIC endpoints (quinn + rustls), certificates, frame streams.
//! - [`auth`]: token claims, HS256 tokens, permission rules and per-session policies.
//! - [`server`]: sessions, handshake, bootstrap, live fan-out, windows kept exact at each
//!   commit and resized in place, resume, writes.
//! - [`client`]: the client an app embeds (local store, subscriptions, optimistic writes,
//!   batch loader) and the protocol connection the command line speaks.

#![warn(missing_docs)]

pub mod auth;
pub mod client;
pub mod matcher;
pub mod postgres;
pub mod query;
pub mod schema;
pub mod server;
pub mod store;
pub mod transport;
pub mod value;
pub mod vocab;
pub mod wire;

pub use vocab::ids;

pub use query::{compile, Params, Shape, ShapeId};
pub use schema::{Schema, SchemaVersion};
pub use value::{Affinity, Value};
