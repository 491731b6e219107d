//! Values between PostgreSQL and sluice: PostgreSQL's text output of the four mapped
//! types read into [`Value`]s (the replication stream and the initial copy both use the
//! text format), and [`Value`]s bound as parameters of the write path.
//!
//! Pure: no IO.

use tokio_postgres::types::ToSql;

use super::ddl::PgType;
use crate::value::Value;

/// Reads PostgreSQL's text output of a value of type `ty`. `None` when the text is not
/// what PostgreSQL prints for that type.
pub fn from_text(ty: PgType, text: &str) -> Option<Value> {
    Some(match ty {
        PgType::Int8 => Value::Integer(text.parse().ok()?),
        PgType::Float8 => Value::Real(match text {
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            "NaN" => return Some(Value::Null),
            t => t.parse().ok()?,
        }),
        PgType::Text => Value::Text(text.to_string()),
        PgType::Bytea => Value::Blob(bytea_from_hex(text)?),
    })
}

/// `\x0a0b…` (PostgreSQL's default `bytea_output = hex`) to bytes.
fn bytea_from_hex(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    hex.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// A value bound as a parameter of a column of type `ty`. The write path checked the
/// value's type against the column (SQLite's rules) before; an integer stored in a REAL
/// column is widened, a real in an INTEGER column that holds an integer is narrowed.
/// `Err` names what does not fit.
pub fn to_param(ty: PgType, value: &Value) -> Result<Box<dyn ToSql + Sync + Send>, String> {
    Ok(match (ty, value) {
        (PgType::Int8, Value::Null) => Box::new(None::<i64>),
        (PgType::Float8, Value::Null) => Box::new(None::<f64>),
        (PgType::Text, Value::Null) => Box::new(None::<String>),
        (PgType::Bytea, Value::Null) => Box::new(None::<Vec<u8>>),
        (PgType::Int8, Value::Integer(i)) => Box::new(*i),
        (PgType::Int8, Value::Real(r)) if r.fract() == 0.0 && r.abs() < 9.0e18 => {
            Box::new(*r as i64)
        }
        (PgType::Float8, Value::Real(r)) => Box::new(*r),
        (PgType::Float8, Value::Integer(i)) => Box::new(*i as f64),
        (PgType::Text, Value::Text(s)) => Box::new(s.clone()),
        (PgType::Bytea, Value::Blob(b)) => Box::new(b.clone()),
        (ty, v) => return Err(format!("{v} does not fit a {} column", ty.sql())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_output_reads_back() {
        assert_eq!(from_text(PgType::Int8, "-42"), Some(Value::Integer(-42)));
        assert_eq!(from_text(PgType::Float8, "1.5"), Some(Value::Real(1.5)));
        assert_eq!(
            from_text(PgType::Float8, "-Infinity"),
            Some(Value::Real(f64::NEG_INFINITY))
        );
        assert_eq!(
            from_text(PgType::Bytea, "\\x00ff10"),
            Some(Value::Blob(vec![0, 255, 16]))
        );
        assert_eq!(from_text(PgType::Bytea, "\\x0"), None);
        assert_eq!(from_text(PgType::Int8, "x"), None);
    }
}
