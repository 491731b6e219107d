//! The stored image of an inserted row, known without reading it back.
//!
//! `INSERT ... RETURNING` costs SQLite an ephemeral table and a statement journal per
//! row, about as much as the insert itself. Most inserts need neither: when every given
//! value is one SQLite stores unchanged in its column, and every column left out takes a
//! constant default (or NULL), the stored row is the given values over the defaults.
//! Anything else (a value SQLite would convert, a default that is an expression) still
//! reads the row back with `RETURNING`.

use rusqlite::Connection;

use crate::schema::{quote_ident, Table};
use crate::store::StoreError;
use crate::value::{Affinity, Value};

/// Whether SQLite stores `value` unchanged in a column of `affinity`: no conversion
/// between integer, real and text applies. A negative zero is never taken: SQLite may
/// store an integral real as an integer and read back `0.0`.
pub(super) fn stored_unchanged(affinity: Affinity, value: &Value) -> bool {
    match (affinity, value) {
        (_, Value::Null | Value::Blob(_)) => true,
        (_, Value::Real(r)) if *r == 0.0 && r.is_sign_negative() => false,
        (Affinity::Blob, _) => true,
        (Affinity::Integer | Affinity::Numeric, Value::Integer(_)) => true,
        (Affinity::Real, Value::Real(r)) => !r.is_nan(),
        (Affinity::Text, Value::Text(_)) => true,
        _ => false,
    }
}

/// For each column of `table`, in order, the value a row that leaves it out stores, when
/// that is known ahead: NULL for a column without default, the value of a literal default
/// stored unchanged; `None` otherwise. Read from the database's own definition of the
/// table (`PRAGMA table_info`), which is what SQLite applies.
pub(super) fn column_defaults(
    conn: &Connection,
    table: &Table,
) -> Result<Vec<Option<Value>>, StoreError> {
    let declared: Vec<(String, Option<String>)> = {
        let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", quote_ident(&table.name)))?;
        let rows = stmt.query_map([], |r| Ok((r.get(1)?, r.get(4)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut defaults = Vec::with_capacity(table.columns.len());
    for column in &table.columns {
        let found = declared
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&column.name));
        let default = match found {
            Some((_, None)) => Some(Value::Null),
            Some((_, Some(text))) if is_literal(text) => {
                let value: Value = conn.query_row(&format!("SELECT ({text})"), [], |r| r.get(0))?;
                stored_unchanged(column.affinity, &value).then_some(value)
            }
            _ => None,
        };
        defaults.push(default);
    }
    Ok(defaults)
}

/// Whether a DEFAULT's text (possibly in parentheses) is a constant literal: NULL, a
/// decimal number with an optional sign, or a string. Expressions, even constant ones,
/// are left to SQLite (`CURRENT_TIMESTAMP` and `random()` differ per row).
fn is_literal(text: &str) -> bool {
    let mut text = text.trim();
    while let Some(inner) = text.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
        text = inner.trim();
    }
    if text.eq_ignore_ascii_case("null") {
        return true;
    }
    if let Some(body) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        // Quotes inside come in pairs.
        return body.split("''").all(|part| !part.contains('\''));
    }
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match digits.find(['e', 'E']) {
        Some(at) => (&digits[..at], Some(&digits[at + 1..])),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((whole, fraction)) => {
            (whole.is_empty() || all_digits(whole))
                && (fraction.is_empty() || all_digits(fraction))
                && !(whole.is_empty() && fraction.is_empty())
        }
        None => all_digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| all_digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;

    #[test]
    fn literals_are_told_from_expressions() {
        for literal in [
            "0", "(0)", "-5", "+1.5", ".5", "3.", "1e3", "(2E-2)", "'x'", "'it''s'",
        ] {
            assert!(is_literal(literal), "{literal}");
        }
        for other in [
            "CURRENT_TIMESTAMP",
            "(random())",
            "1 + 1",
            "'a' || 'b'",
            "0x10",
            ".",
        ] {
            assert!(!is_literal(other), "{other}");
        }
        assert!(is_literal("NULL"));
        assert!(is_literal("'a'''"));
        assert!(!is_literal("'a'b'"));
    }

    #[test]
    fn only_values_stored_unchanged_are_taken() {
        assert!(stored_unchanged(Affinity::Integer, &Value::Integer(3)));
        assert!(!stored_unchanged(Affinity::Integer, &Value::Real(3.0)));
        assert!(!stored_unchanged(
            Affinity::Integer,
            &Value::Text("3".into())
        ));
        assert!(!stored_unchanged(Affinity::Text, &Value::Integer(3)));
        assert!(!stored_unchanged(Affinity::Real, &Value::Integer(3)));
        assert!(!stored_unchanged(Affinity::Real, &Value::Real(-0.0)));
        assert!(stored_unchanged(Affinity::Real, &Value::Real(2.5)));
        assert!(!stored_unchanged(Affinity::Numeric, &Value::Real(2.0)));
        assert!(stored_unchanged(Affinity::Blob, &Value::Text("3".into())));
    }

    #[test]
    fn defaults_come_from_the_database() {
        let schema = Schema::parse(
            "t.sql",
            "CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER NOT NULL DEFAULT 7, \
             r REAL DEFAULT 1, s TEXT DEFAULT 'x', at TEXT DEFAULT CURRENT_TIMESTAMP, note);",
        )
        .unwrap();
        let table = schema.table("t").unwrap();
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&table.create_sql()).unwrap();
        let defaults = column_defaults(&conn, table).unwrap();
        assert_eq!(
            defaults,
            vec![
                Some(Value::Null),
                Some(Value::Integer(7)),
                // 1 in a REAL column is stored as 1.0: left to SQLite.
                None,
                Some(Value::Text("x".into())),
                None,
                Some(Value::Null),
            ]
        );
    }
}
