//! The subscription language: `SELECT * | col, ... FROM table [WHERE expr] [ORDER BY ...
//! LIMIT n]`.
//!
//! tokenize and parse (sqlparser) -> validate ([`Template`]) -> bind parameters and
//! normalize ([`Shape`]) -> evaluate ([`Pred::eval`]) or render as SQL text
//! ([`Pred::to_sql`], [`where_sql`]) that the store hands to SQLite. The same tokenizer
//! reads the permission rules file, and [`parse_writes`] reads the write statements of
//! `sluice exec` into the store's `Mutation` (the one dependency on a layer above; it
//! goes when the shared vocabulary moves below `query`).
//!
//! No IO, and no SQLite library: semantics follow SQLite exactly (see [`crate::value`]),
//! implemented here and checked against SQLite by the differential tests.

mod build;
mod compile;
mod dml;
mod error;
mod eval;
mod limits;
mod literal;
mod parse;
mod pattern;
mod pred;
mod render;
mod tokens;
mod window;

pub use compile::{Param, ParamUse, Params, Shape, ShapeId};
pub use dml::parse_writes;
pub(crate) use error::truncate;
pub use error::{Pos, QueryError, QueryErrorKind, MAX_ECHO_CHARS, MAX_MESSAGE_CHARS};
pub use eval::{compare, Truth};
pub use limits::{MAX_DEPTH, MAX_IN_LIST, MAX_PATTERN_BYTES, MAX_SUBSCRIPTION_BYTES, MAX_TERMS};
pub use parse::Template;
pub use pattern::{glob, like};
pub use pred::{CmpOp, Pred, TruthTest};
pub use render::{ident_sql, where_sql};
pub(crate) use tokens::tokenize;
pub use window::{order_sql_quoted, OrderTerm, Window, MAX_WINDOW_LIMIT};

use crate::schema::Schema;

/// Parses, validates, binds and normalizes a subscription in one step. Linear in the
/// length of the text (normalization sorts each AND/OR group). Errors: a [`QueryError`]
/// with the position of the offending token (syntax, unsupported construct, unknown table
/// or column, unbound or mistyped parameter, too complex). A text past one of the limits
/// ([`MAX_SUBSCRIPTION_BYTES`], [`MAX_TERMS`], [`MAX_DEPTH`], [`MAX_IN_LIST`],
/// [`MAX_PATTERN_BYTES`]) is refused as [`QueryErrorKind::TooComplex`] before any tree is
/// built (a bound list or pattern, when it is bound).
pub fn compile(schema: &Schema, sql: &str, params: &Params) -> Result<Shape, QueryError> {
    Template::parse(schema, sql)?.bind(params)
}

/// What `sluice check` prints: the normalized text, parameters left as `:name`. Same cost
/// and errors as [`compile`], except that parameters need no values.
pub fn check(schema: &Schema, sql: &str) -> Result<String, QueryError> {
    Ok(Template::parse(schema, sql)?.normalized_text())
}
