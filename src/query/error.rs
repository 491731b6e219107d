//! Compile-time errors of the subscription language, each with the position of the
//! offending token. A message repeats at most [`MAX_MESSAGE_CHARS`] characters, so an
//! error about a huge subscription stays one short line.

use std::borrow::Cow;
use std::fmt;

/// The longest message a [`QueryError`] keeps and shows, in characters; longer ones are
/// cut and end with `…`. Messages quote the user's text (a name, a token) in pieces of at
/// most [`MAX_ECHO_CHARS`] characters.
pub const MAX_MESSAGE_CHARS: usize = 200;

/// The most characters of the user's text one quoted piece of a message repeats.
pub const MAX_ECHO_CHARS: usize = 100;

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
/// Displays as `line L, column C: message`, the message cut to [`MAX_MESSAGE_CHARS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct QueryError {
    /// What kind of mistake.
    pub kind: QueryErrorKind,
    /// The message shown to the user.
    pub message: String,
    /// Where the offending token starts.
    pub pos: Pos,
}

impl QueryError {
    /// An error of `kind` at `pos`; a message longer than [`MAX_MESSAGE_CHARS`] is cut.
    pub fn new(kind: QueryErrorKind, message: impl Into<String>, pos: Pos) -> QueryError {
        let message = message.into();
        let message = match truncate(&message, MAX_MESSAGE_CHARS) {
            Cow::Borrowed(_) => message,
            Cow::Owned(cut) => cut,
        };
        QueryError { kind, message, pos }
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `message` is public, so cut it here too.
        write!(
            f,
            "{}: {}",
            self.pos,
            truncate(&self.message, MAX_MESSAGE_CHARS)
        )
    }
}

/// A piece of the user's text for a message: at most [`MAX_ECHO_CHARS`] characters,
/// ending with `…` when cut.
pub(crate) fn snippet(text: &str) -> Cow<'_, str> {
    truncate(text, MAX_ECHO_CHARS)
}

/// `text` cut to `max` characters (the last one `…`) when it is longer.
pub(crate) fn truncate(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some(_) => {
            let end = text
                .char_indices()
                .nth(max - 1)
                .map_or(text.len(), |(i, _)| i);
            Cow::Owned(format!("{}…", &text[..end]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut() {
        let e = QueryError::new(QueryErrorKind::Syntax, "é".repeat(10_000), Pos::START);
        assert_eq!(e.message.chars().count(), MAX_MESSAGE_CHARS);
        assert!(e.message.ends_with('…'));
        let exact = "x".repeat(MAX_MESSAGE_CHARS);
        assert_eq!(
            QueryError::new(QueryErrorKind::Syntax, exact.clone(), Pos::START).message,
            exact
        );
        let direct = QueryError {
            message: "y".repeat(1_000_000),
            ..QueryError::new(QueryErrorKind::Syntax, "", Pos::START)
        };
        assert!(direct.to_string().len() < 300);
        assert_eq!(snippet("short"), "short");
        assert_eq!(snippet(&"z".repeat(500)).chars().count(), MAX_ECHO_CHARS);
    }
}
