//! The subscription language: `SELECT * | col, ... FROM table [WHERE expr]`.
//!
//! parse (sqlparser) -> validate ([`Template`]) -> bind parameters and normalize
//! ([`Shape`]) -> evaluate ([`Pred::eval`]) or render as SQL for the store. Pure: no IO,
//! no SQLite. Semantics follow SQLite exactly (see [`crate::value`]).

mod build;
mod compile;
mod dml;
mod error;
mod eval;
mod literal;
mod parse;
mod pattern;
mod pred;
mod render;
mod tokens;

pub use compile::{Param, ParamUse, Params, Shape, ShapeId, MAX_PATTERN_BYTES};
pub use dml::parse_writes;
pub use error::{Pos, QueryError, QueryErrorKind};
pub use eval::{compare, Truth};
pub use parse::Template;
pub use pattern::{glob, like};
pub use pred::{CmpOp, Pred, TruthTest};
pub use render::{ident_sql, where_sql};
pub(crate) use tokens::tokenize;

use crate::schema::Schema;

/// Parses, validates, binds and normalizes a subscription in one step.
pub fn compile(schema: &Schema, sql: &str, params: &Params) -> Result<Shape, QueryError> {
    Template::parse(schema, sql)?.bind(params)
}

/// What `sluice check` prints: the normalized text, parameters left as `:name`.
pub fn check(schema: &Schema, sql: &str) -> Result<String, QueryError> {
    Ok(Template::parse(schema, sql)?.normalized_text())
}
