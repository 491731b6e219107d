//! Compile-time errors of the subscription language, each with the position of the
//! offending token.

use std::fmt;

/// A 1-based line and column in the subscription text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: u64,
    /// 1-based column, in characters.
    pub column: u64,
}

impl Pos {
    /// The first character of the text.
    pub const START: Pos = Pos { line: 1, column: 1 };
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// What kind of mistake a [`QueryError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryErrorKind {
    /// Not valid SQL.
    Syntax,
    /// Valid SQL outside the subscription language (joins, functions, ORDER BY, ...).
    Unsupported,
    /// FROM names a table the schema does not have.
    UnknownTable,
    /// A column the table does not have.
    UnknownColumn,
    /// A `:name` with no value bound.
    UnboundParameter,
    /// A parameter bound to a list where a value is needed, or the reverse.
    ParameterType,
    /// Nested too deeply or too large.
    TooComplex,
    /// The subscription names a column the caller may not read.
    HiddenColumn,
}

/// A subscription that does not compile: message plus the position of the offending token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct QueryError {
    /// What kind of mistake.
    pub kind: QueryErrorKind,
    /// The message shown to the user.
    pub message: String,
    /// Where the offending token starts.
    pub pos: Pos,
}

impl QueryError {
    /// An error of `kind` at `pos`.
    pub fn new(kind: QueryErrorKind, message: impl Into<String>, pos: Pos) -> QueryError {
        QueryError {
            kind,
            message: message.into(),
            pos,
        }
    }
}
