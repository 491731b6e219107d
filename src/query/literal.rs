//! Constants as SQLite reads them: numeric literals, hex blob digits and unary minus.
//! Shared by the subscription parser and the write statements of `sluice exec`. Pure.

use crate::value::Value;

/// A numeric literal as SQLite reads it: an integer when it has no `.`/exponent and fits
/// in 64 bits, otherwise a real.
pub(crate) fn number(text: &str) -> Option<Value> {
    if !text.contains(['.', 'e', 'E']) {
        if let Ok(i) = text.parse::<i64>() {
            return Some(Value::Integer(i));
        }
    }
    text.parse::<f64>().ok().map(Value::Real)
}

pub(crate) fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// SQLite's unary minus on a constant (`0 - x`).
pub(crate) fn negate(v: Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::Integer(i) => match i.checked_neg() {
            Some(n) => Value::Integer(n),
            None => Value::Real(-(i as f64)),
        },
        Value::Real(r) => Value::Real(-r),
        Value::Text(s) => negate(crate::value::numeric_prefix_value(s.as_bytes())),
        Value::Blob(b) => negate(crate::value::numeric_prefix_value(&b)),
    }
}
