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
pub fn to_param(ty: PgType, value: &Value) -> Result<Param, String> {
    let param: Option<Param> = match (ty, value) {
        (PgType::Int8, Value::Null) => Some(Box::new(None::<i64>)),
        (PgType::Float8, Value::Null) => Some(Box::new(None::<f64>)),
        (PgType::Text, Value::Null) => Some(Box::new(None::<String>)),
        (PgType::Bytea, Value::Null) => Some(Box::new(None::<Vec<u8>>)),
        (PgType::Int8, v) => int8(v).map(|i| Box::new(i) as Param),
        (PgType::Float8, v) => float8(v).map(|r| Box::new(r) as Param),
        (PgType::Text, v) => text(v).map(|t| Box::new(t) as Param),
        (PgType::Bytea, v) => blob(v).map(|b| Box::new(b) as Param),
    };
    param.ok_or_else(|| format!("{value} does not fit a {} column", ty.sql()))
}

/// `values` as one array parameter of type `ty[]`, without the values that do not fit a
/// column of that type ([`to_param`]'s rules; a key that does not fit names no row);
/// `None` when none is left.
pub fn array_param(ty: PgType, values: &[Value]) -> Option<Param> {
    fn array<T: ToSql + Sync + Send + 'static>(
        values: &[Value],
        fits: fn(&Value) -> Option<T>,
    ) -> Option<Param> {
        let values: Vec<T> = values.iter().filter_map(fits).collect();
        (!values.is_empty()).then(|| Box::new(values) as Param)
    }
    match ty {
        PgType::Int8 => array(values, int8),
        PgType::Float8 => array(values, float8),
        PgType::Text => array(values, text),
        PgType::Bytea => array(values, blob),
    }
}

/// A bound parameter.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// A non-null value for a BIGINT column: an integer, or a real that holds one.
fn int8(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(i) => Some(*i),
        Value::Real(r) if r.fract() == 0.0 && r.abs() < 9.0e18 => Some(*r as i64),
        _ => None,
    }
}

/// A non-null value for a DOUBLE PRECISION column: a real, or an integer widened.
fn float8(value: &Value) -> Option<f64> {
    match value {
        Value::Real(r) => Some(*r),
        Value::Integer(i) => Some(*i as f64),
        _ => None,
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Text(s) => Some(s.clone()),
        _ => None,
    }
}

fn blob(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::Blob(b) => Some(b.clone()),
        _ => None,
    }
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
