//! Conversions between [`Value`] and rusqlite, and the compact encoding of row images in
//! the change log (postcard of `Vec<Value>`).
//!
//! Depends only on [`Value`], rusqlite and postcard.

use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::Row;

use super::error::StoreError;
use crate::value::Value;

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl FromSql for Value {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(value_from_ref(value))
    }
}

/// A SQLite value as a [`Value`]. Text that is not valid UTF-8 (never written by sluice)
/// is repaired lossily rather than failing a whole snapshot.
pub(crate) fn value_from_ref(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// The first `width` columns of a result row.
pub(crate) fn read_row(row: &Row<'_>, width: usize) -> rusqlite::Result<Vec<Value>> {
    (0..width)
        .map(|i| row.get_ref(i).map(value_from_ref))
        .collect()
}

/// Roughly how many bytes a row takes encoded: what answer budgets and frame splits
/// count.
pub fn row_bytes(row: &[Value]) -> usize {
    row.iter()
        .map(|v| match v {
            Value::Text(s) => s.len() + 5,
            Value::Blob(b) => b.len() + 5,
            _ => 9,
        })
        .sum()
}

pub(crate) fn decode_image(bytes: &[u8]) -> Result<Vec<Value>, StoreError> {
    Ok(postcard::from_bytes(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_round_trip() {
        let row = vec![
            Value::Null,
            Value::Integer(-7),
            Value::Real(1.5),
            Value::Text("héllo".into()),
            Value::Blob(vec![0, 255]),
        ];
        let bytes = postcard::to_allocvec(&row).unwrap();
        assert!(
            bytes.len() < 32,
            "compact encoding, got {} bytes",
            bytes.len()
        );
        assert_eq!(decode_image(&bytes).unwrap(), row);
    }

    #[test]
    fn values_round_trip_through_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for v in [
            Value::Null,
            Value::Integer(i64::MIN),
            Value::Real(-0.25),
            Value::Text("x'y".into()),
            Value::Blob(vec![1, 2, 3]),
        ] {
            let back: Value = conn.query_row("SELECT ?1", [&v], |r| r.get(0)).unwrap();
            assert_eq!(back, v);
        }
    }
}
