//! SQLite values: the five storage classes, their total order, type affinity and the
//! text/number conversions SQLite performs when it compares or renders them.
//!
//! Pure code, no IO. Everything here mirrors SQLite's own rules (datatype3.html, `vdbe.c`,
//! `util.c`), because invariant 1 demands that a subscription matches exactly the rows
//! SQLite would return.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One SQLite value, tagged with its storage class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// An IEEE 754 double.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// The type affinity of a column, derived from its declared type (datatype3.html §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Affinity {
    /// INTEGER affinity (declared type contains `INT`).
    Integer,
    /// TEXT affinity (`CHAR`, `CLOB` or `TEXT`).
    Text,
    /// BLOB affinity (no declared type, or `BLOB`).
    Blob,
    /// REAL affinity (`REAL`, `FLOA` or `DOUB`).
    Real,
    /// NUMERIC affinity (anything else).
    Numeric,
}

impl Affinity {
    /// SQLite's five rules, applied in order to the declared type name.
    pub fn from_declared_type(declared: &str) -> Affinity {
        let t = declared.to_ascii_uppercase();
        if t.contains("INT") {
            Affinity::Integer
        } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
            Affinity::Text
        } else if t.contains("BLOB") || t.trim().is_empty() {
            Affinity::Blob
        } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
            Affinity::Real
        } else {
            Affinity::Numeric
        }
    }

    /// True for INTEGER, REAL and NUMERIC: the affinities that convert numeric-looking text.
    pub fn is_numeric(self) -> bool {
        matches!(self, Affinity::Integer | Affinity::Real | Affinity::Numeric)
    }

    /// The conversion SQLite applies to the *other* operand when a column of this affinity
    /// is compared with a value that has no affinity (a literal or a bound parameter).
    pub fn apply_for_comparison(self, value: Value) -> Value {
        match (self, value) {
            (a, Value::Text(s)) if a.is_numeric() => match parse_numeric_text(&s) {
                Some(n) => n,
                None => Value::Text(s),
            },
            (Affinity::Text, Value::Integer(i)) => Value::Text(i.to_string()),
            (Affinity::Text, Value::Real(r)) => Value::Text(render_real(r)),
            (_, v) => v,
        }
    }

    /// The SQL keyword for the affinity, as `typeof`-like documentation would print it.
    pub fn name(self) -> &'static str {
        match self {
            Affinity::Integer => "INTEGER",
            Affinity::Text => "TEXT",
            Affinity::Blob => "BLOB",
            Affinity::Real => "REAL",
            Affinity::Numeric => "NUMERIC",
        }
    }
}

impl Value {
    /// Storage class rank in SQLite's cross-class order: NULL < numbers < TEXT < BLOB.
    fn class_rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Integer(_) | Value::Real(_) => 1,
            Value::Text(_) => 2,
            Value::Blob(_) => 3,
        }
    }

    /// Whether this is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// SQLite's `typeof()` name of the storage class.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Integer(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
        }
    }

    /// Total order used by SQLite (`sqlite3MemCompare`) with BINARY collation.
    /// NULL sorts first; callers implement three-valued logic themselves.
    pub fn sqlite_cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Integer(a), Value::Integer(b)) => a.cmp(b),
            (Value::Real(a), Value::Real(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (Value::Integer(a), Value::Real(b)) => int_real_cmp(*a, *b),
            (Value::Real(a), Value::Integer(b)) => int_real_cmp(*b, *a).reverse(),
            (Value::Text(a), Value::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Value::Blob(a), Value::Blob(b)) => a.cmp(b),
            (a, b) => a.class_rank().cmp(&b.class_rank()),
        }
    }

    /// The text SQLite produces for this value (`sqlite3_value_text`), as bytes;
    /// `None` for NULL.
    pub fn text_bytes(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        use std::borrow::Cow;
        match self {
            Value::Null => None,
            Value::Integer(i) => Some(Cow::Owned(i.to_string().into_bytes())),
            Value::Real(r) => Some(Cow::Owned(render_real(*r).into_bytes())),
            Value::Text(s) => Some(Cow::Borrowed(s.as_bytes())),
            Value::Blob(b) => Some(Cow::Borrowed(b.as_slice())),
        }
    }

    /// SQLite's truth value of a non-NULL value (`sqlite3VdbeBooleanValue`): numbers are
    /// true when non-zero; text and blobs by the numeric value of their longest numeric
    /// prefix. `None` for NULL.
    pub fn truthiness(&self) -> Option<bool> {
        match self {
            Value::Null => None,
            Value::Integer(i) => Some(*i != 0),
            Value::Real(r) => Some(*r != 0.0),
            Value::Text(s) => Some(numeric_prefix(s.as_bytes()) != 0.0),
            Value::Blob(b) => Some(numeric_prefix(b) != 0.0),
        }
    }

    /// This value as SQL literal text that parses back to the same value.
    pub fn to_sql_literal(&self) -> String {
        match self {
            Value::Null => "NULL".to_string(),
            Value::Integer(i) => i.to_string(),
            Value::Real(r) => real_literal(*r),
            Value::Text(s) => format!("'{}'", s.replace('\'', "''")),
            Value::Blob(b) => {
                let mut out = String::with_capacity(b.len() * 2 + 3);
                out.push_str("x'");
                for byte in b {
                    out.push_str(&format!("{byte:02X}"));
                }
                out.push('\'');
                out
            }
        }
    }

    /// JSON form used by the command line: numbers and strings as themselves, blobs as
    /// `{"blob":"<hex>"}`, non-finite reals as strings.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Integer(i) => serde_json::Value::from(*i),
            Value::Real(r) => serde_json::Number::from_f64(*r)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| serde_json::Value::String(render_real(*r))),
            Value::Text(s) => serde_json::Value::String(s.clone()),
            Value::Blob(b) => {
                let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
                serde_json::json!({ "blob": hex })
            }
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_sql_literal())
    }
}

/// Exact comparison of an integer with a real (`sqlite3IntFloatCompare`).
fn int_real_cmp(i: i64, r: f64) -> Ordering {
    if r.is_nan() {
        return Ordering::Greater;
    }
    if r < -9_223_372_036_854_775_808.0 {
        return Ordering::Greater;
    }
    if r >= 9_223_372_036_854_775_808.0 {
        return Ordering::Less;
    }
    let y = r as i64;
    match i.cmp(&y) {
        Ordering::Equal => (i as f64).partial_cmp(&r).unwrap_or(Ordering::Equal),
        other => other,
    }
}

fn is_sqlite_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// [`is_sqlite_space`] for `char` patterns. Unlike `char::is_ascii_whitespace` it
/// includes the vertical tab, as SQLite's `sqlite3Isspace` does.
fn is_sqlite_space_char(c: char) -> bool {
    c.is_ascii() && is_sqlite_space(c as u8)
}

/// Scans the longest numeric prefix of `s` after leading spaces, SQLite style
/// (`sqlite3AtoF`). Returns the byte length consumed (0 when there is no number) and
/// whether it had a decimal point or exponent.
fn scan_number(s: &[u8]) -> (usize, bool) {
    let mut i = 0;
    while i < s.len() && is_sqlite_space(s[i]) {
        i += 1;
    }
    let start = i;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        i += 1;
    }
    let mut digits = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    let mut is_real = false;
    if i < s.len() && s[i] == b'.' {
        let mut j = i + 1;
        let mut frac = 0;
        while j < s.len() && s[j].is_ascii_digit() {
            j += 1;
            frac += 1;
        }
        if digits + frac > 0 {
            i = j;
            digits += frac;
            is_real = true;
        }
    }
    if digits == 0 {
        return (0, false);
    }
    if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
        let mut j = i + 1;
        if j < s.len() && (s[j] == b'+' || s[j] == b'-') {
            j += 1;
        }
        let exp_start = j;
        while j < s.len() && s[j].is_ascii_digit() {
            j += 1;
        }
        if j > exp_start {
            i = j;
            is_real = true;
        }
    }
    let _ = start;
    (i, is_real)
}

/// Applies SQLite's numeric affinity to text: a well-formed integer or real literal
/// (surrounding spaces allowed) becomes INTEGER or REAL; anything else stays text.
pub fn parse_numeric_text(s: &str) -> Option<Value> {
    let bytes = s.as_bytes();
    let (len, is_real) = scan_number(bytes);
    if len == 0 || bytes[len..].iter().any(|b| !is_sqlite_space(*b)) {
        return None;
    }
    let text = std::str::from_utf8(&bytes[..len])
        .ok()?
        .trim_start_matches(is_sqlite_space_char);
    if !is_real {
        if let Ok(i) = text.parse::<i64>() {
            return Some(Value::Integer(i));
        }
    }
    text.parse::<f64>().ok().map(Value::Real)
}

/// The numeric value of the longest numeric prefix (0.0 when there is none), as SQLite
/// computes it for truth values and arithmetic on text.
pub fn numeric_prefix(s: &[u8]) -> f64 {
    let (len, _) = scan_number(s);
    if len == 0 {
        return 0.0;
    }
    std::str::from_utf8(&s[..len])
        .ok()
        .and_then(|t| {
            t.trim_start_matches(is_sqlite_space_char)
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The longest numeric prefix as an INTEGER or REAL value, as SQLite's arithmetic sees
/// text (`0 - 'x'` is 0, `-'3abc'` is -3).
pub fn numeric_prefix_value(s: &[u8]) -> Value {
    let (len, is_real) = scan_number(s);
    if len == 0 {
        return Value::Integer(0);
    }
    let text = std::str::from_utf8(&s[..len])
        .unwrap_or("0")
        .trim_start_matches(is_sqlite_space_char);
    if !is_real {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Integer(i);
        }
    }
    Value::Real(text.parse::<f64>().unwrap_or(0.0))
}

/// Renders a real the way SQLite converts REAL to TEXT: `printf("%!.15g")`.
pub fn render_real(r: f64) -> String {
    if r.is_nan() {
        return "NaN".to_string();
    }
    if r.is_infinite() {
        return if r > 0.0 { "Inf" } else { "-Inf" }.to_string();
    }
    const PRECISION: i32 = 15;
    if r == 0.0 {
        // SQLite prints negative zero without its sign (`CAST(-0.0 AS TEXT)` is '0.0').
        return "0.0".to_string();
    }
    // Round to 15 significant digits and read back the decimal exponent.
    let sci = format!("{:.*e}", (PRECISION - 1) as usize, r);
    let (mantissa, exp) = sci.split_once('e').expect("exponent in {:e} output");
    let exp: i32 = exp.parse().expect("integer exponent");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if !(-4..PRECISION).contains(&exp) {
        out.push_str(&digits[..1]);
        out.push('.');
        if digits.len() > 1 {
            out.push_str(&digits[1..]);
        } else {
            out.push('0');
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(digits);
    } else {
        let int_len = (exp + 1) as usize;
        if digits.len() <= int_len {
            out.push_str(digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

/// A real as SQL literal text that parses back to exactly the same double.
fn real_literal(r: f64) -> String {
    if r.is_infinite() {
        return if r > 0.0 { "1e999" } else { "-1e999" }.to_string();
    }
    let text = format!("{r:?}");
    if text.contains('.') || text.contains('e') || text.contains("inf") || text.contains("NaN") {
        text
    } else {
        format!("{text}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_follows_sqlite_rules_in_order() {
        assert_eq!(Affinity::from_declared_type("INTEGER"), Affinity::Integer);
        assert_eq!(Affinity::from_declared_type("BIGINT"), Affinity::Integer);
        assert_eq!(Affinity::from_declared_type("VARCHAR(20)"), Affinity::Text);
        assert_eq!(Affinity::from_declared_type("CHARINT"), Affinity::Integer);
        assert_eq!(Affinity::from_declared_type(""), Affinity::Blob);
        assert_eq!(
            Affinity::from_declared_type("DOUBLE PRECISION"),
            Affinity::Real
        );
        assert_eq!(
            Affinity::from_declared_type("FLOATING POINT"),
            Affinity::Integer
        );
        assert_eq!(
            Affinity::from_declared_type("DECIMAL(10,5)"),
            Affinity::Numeric
        );
        assert_eq!(Affinity::from_declared_type("BOOLEAN"), Affinity::Numeric);
    }

    #[test]
    fn cross_class_order_is_null_numbers_text_blob() {
        let ordered = [
            Value::Null,
            Value::Integer(-5),
            Value::Real(-4.5),
            Value::Integer(3),
            Value::Text(String::new()),
            Value::Text("a".into()),
            Value::Blob(vec![]),
        ];
        for pair in ordered.windows(2) {
            assert_eq!(pair[0].sqlite_cmp(&pair[1]), Ordering::Less, "{pair:?}");
        }
        assert_eq!(
            Value::Integer(1).sqlite_cmp(&Value::Real(1.0)),
            Ordering::Equal
        );
        assert_eq!(
            Value::Integer(i64::MAX).sqlite_cmp(&Value::Real(9.223_372_036_854_776e18)),
            Ordering::Less
        );
        assert_eq!(
            Value::Integer(9_007_199_254_740_993).sqlite_cmp(&Value::Real(9_007_199_254_740_992.0)),
            Ordering::Greater
        );
    }

    #[test]
    fn numeric_affinity_converts_only_well_formed_numbers() {
        let num = Affinity::Integer;
        assert_eq!(
            num.apply_for_comparison(Value::Text("5".into())),
            Value::Integer(5)
        );
        assert_eq!(
            num.apply_for_comparison(Value::Text(" 5 ".into())),
            Value::Integer(5)
        );
        assert_eq!(
            num.apply_for_comparison(Value::Text("5.5".into())),
            Value::Real(5.5)
        );
        assert_eq!(
            num.apply_for_comparison(Value::Text("1e2".into())),
            Value::Real(100.0)
        );
        assert_eq!(
            num.apply_for_comparison(Value::Text("5x".into())),
            Value::Text("5x".into())
        );
        assert_eq!(
            num.apply_for_comparison(Value::Text(".".into())),
            Value::Text(".".into())
        );
        assert_eq!(
            num.apply_for_comparison(Value::Text("9223372036854775808".into())),
            Value::Real(9.223_372_036_854_776e18)
        );
        assert_eq!(
            Affinity::Text.apply_for_comparison(Value::Integer(5)),
            Value::Text("5".into())
        );
        assert_eq!(
            Affinity::Blob.apply_for_comparison(Value::Integer(5)),
            Value::Integer(5)
        );
    }

    #[test]
    fn reals_render_like_sqlite_printf() {
        assert_eq!(render_real(1.0), "1.0");
        assert_eq!(render_real(0.1), "0.1");
        assert_eq!(render_real(100.0), "100.0");
        assert_eq!(render_real(1e20), "1.0e+20");
        assert_eq!(render_real(1.5e-7), "1.5e-07");
        assert_eq!(render_real(123456789012345678.0), "1.23456789012346e+17");
        assert_eq!(render_real(-2.5), "-2.5");
        assert_eq!(render_real(0.0001), "0.0001");
        // SQLite drops the sign of negative zero when it converts to text.
        assert_eq!(render_real(-0.0), "0.0");
    }

    #[test]
    fn truthiness_uses_numeric_prefix() {
        assert_eq!(Value::Text("1abc".into()).truthiness(), Some(true));
        assert_eq!(Value::Text("abc".into()).truthiness(), Some(false));
        assert_eq!(Value::Text(" 0.0".into()).truthiness(), Some(false));
        assert_eq!(Value::Real(0.5).truthiness(), Some(true));
        assert_eq!(Value::Null.truthiness(), None);
        // Vertical tab is a space to SQLite (`sqlite3Isspace`), not to Rust's ASCII test.
        assert_eq!(Value::Text("\u{b}1".into()).truthiness(), Some(true));
        assert_eq!(numeric_prefix_value(b"\x0b-3x"), Value::Integer(-3));
    }

    #[test]
    fn literals_round_trip() {
        assert_eq!(Value::Real(5.0).to_sql_literal(), "5.0");
        assert_eq!(Value::Real(1e300).to_sql_literal(), "1e300");
        assert_eq!(Value::Text("it's".into()).to_sql_literal(), "'it''s'");
        assert_eq!(Value::Blob(vec![0xab, 1]).to_sql_literal(), "x'AB01'");
    }
}
