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
//! - [`query`]: the subscription language: parse, validate, bind, normalize, evaluate (pure).
//! - [`matcher`]: index of shapes: a row change -> the shapes it affects, sublinear (pure).
//! - [`store`]: SQLite through rusqlite: data, change log, snapshots. The only IO on disk.

pub mod matcher;
pub mod query;
pub mod schema;
pub mod value;

pub use query::{compile, Params, Shape, ShapeId};
pub use schema::{Schema, SchemaVersion};
pub use value::{Affinity, Value};
