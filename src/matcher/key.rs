//! Index keys for values, with SQLite's comparison semantics: two values get the same
//! equality key when `Value::sqlite_cmp` calls them equal (integer 1 and real 1.0, -0.0
//! and 0.0), and different keys across storage classes (text '1' is not the number 1).
//!
//! Keys are 64-bit hashes from a fixed (unseeded) function, so the index is deterministic
//! run to run. A collision only adds a candidate: a hit is evaluated in full unless the
//! key's construction proves it (see the `exact` module), never on the hash alone.

use std::cmp::Ordering;
use std::hash::{BuildHasherDefault, Hasher};

use crate::value::Value;

/// Longest literal prefix of a LIKE or GLOB pattern that goes into a key; longer prefixes
/// are cut to this length (a shorter key is still a superset filter).
pub(super) const PREFIX_MAX: usize = 8;

/// Which pattern operator a prefix key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PatternKind {
    /// LIKE: ASCII case-insensitive, so prefixes are keyed lower-cased.
    Like,
    /// GLOB: case-sensitive.
    Glob,
}

const TAG_NULL: u64 = 0;
const TAG_INT: u64 = 1;
const TAG_REAL: u64 = 2;
const TAG_TEXT: u64 = 3;
const TAG_BLOB: u64 = 4;
const TAG_LIKE: u64 = 5;
const TAG_GLOB: u64 = 6;

/// The equality key of `value` in column `col`; `None` for a NaN real, which
/// `sqlite_cmp` treats as equal to every real and so cannot be hashed.
pub(super) fn eq_key(col: usize, value: &Value) -> Option<u64> {
    let mut h = KeyHasher::new(col);
    match value {
        Value::Null => h.word(TAG_NULL),
        Value::Integer(i) => {
            h.word(TAG_INT);
            h.word(*i as u64);
        }
        Value::Real(r) if r.is_nan() => return None,
        Value::Real(r) => match exact_int(*r) {
            Some(i) => {
                h.word(TAG_INT);
                h.word(i as u64);
            }
            None => {
                h.word(TAG_REAL);
                h.word(r.to_bits());
            }
        },
        Value::Text(s) => {
            h.word(TAG_TEXT);
            h.bytes(s.as_bytes());
        }
        Value::Blob(b) => {
            h.word(TAG_BLOB);
            h.bytes(b);
        }
    }
    Some(h.finish())
}

/// The key of a pattern prefix (at most [`PREFIX_MAX`] bytes, already lower-cased for
/// LIKE by the caller or by [`prefix_key_of_text`]).
pub(super) fn prefix_key(col: usize, kind: PatternKind, prefix: &[u8]) -> u64 {
    let mut h = KeyHasher::new(col);
    h.word(match kind {
        PatternKind::Like => TAG_LIKE,
        PatternKind::Glob => TAG_GLOB,
    });
    h.bytes(prefix);
    h.finish()
}

/// The key of the first `len` bytes of a row's text, as `kind` compares them.
pub(super) fn prefix_key_of_text(col: usize, kind: PatternKind, text: &[u8], len: usize) -> u64 {
    let mut buf = [0u8; PREFIX_MAX];
    let part = &text[..len];
    buf[..len].copy_from_slice(part);
    if kind == PatternKind::Like {
        buf[..len].make_ascii_lowercase();
    }
    prefix_key(col, kind, &buf[..len])
}

/// Whether `value` gets an integer equality key (an integer, or a real equal to one).
/// For a fixed column, integer keys are distinct for distinct integers (every step of
/// the key function is a bijection of the integer), so two of them on one column are
/// equal exactly when the values compare equal: such a key hit needs no evaluation.
pub(super) fn int_keyed(value: &Value) -> bool {
    match value {
        Value::Integer(_) => true,
        Value::Real(r) => exact_int(*r).is_some(),
        _ => false,
    }
}

/// The integer a real equals exactly (`sqlite_cmp` Equal), if any.
fn exact_int(r: f64) -> Option<i64> {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if r.fract() == 0.0 && (-TWO_63..TWO_63).contains(&r) {
        Some(r as i64)
    } else {
        None
    }
}

/// A small multiply-rotate hash (fixed constants, so keys are stable), finished with a
/// 64-bit avalanche so that every bit of the key is usable by the hash map.
struct KeyHasher(u64);

impl KeyHasher {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    fn new(col: usize) -> KeyHasher {
        let mut h = KeyHasher(0x9e37_79b9_7f4a_7c15);
        h.word(col as u64);
        h
    }

    fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(Self::K);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.word(u64::from_le_bytes(chunk.try_into().expect("8-byte chunk")));
        }
        let rest = chunks.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        self.word(u64::from_le_bytes(last));
        self.word(bytes.len() as u64);
    }

    fn finish(self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

/// A hasher for maps whose keys are already well-mixed `u64` keys.
#[derive(Default)]
pub(super) struct KeyMapHasher(u64);

impl Hasher for KeyMapHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(KeyHasher::K);
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
}

pub(super) type BuildKeyMapHasher = BuildHasherDefault<KeyMapHasher>;

/// A non-NULL, non-NaN value ordered by SQLite's cross-class order (numbers < text <
/// blob), for range indexes. Integer 1 and real 1.0 are the same key.
#[derive(Debug, Clone)]
pub(super) struct OrdValue(pub Value);

impl PartialEq for OrdValue {
    fn eq(&self, other: &OrdValue) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for OrdValue {}

impl PartialOrd for OrdValue {
    fn partial_cmp(&self, other: &OrdValue) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdValue {
    fn cmp(&self, other: &OrdValue) -> Ordering {
        self.0.sqlite_cmp(&other.0)
    }
}

/// The order key of a non-NULL, non-NaN value: a `u64` that never decreases along
/// `Value::sqlite_cmp`'s order (`a <= b` implies `ord_key(a) <= ord_key(b)`) and is never
/// 0. Distinct values may share a key (numbers within a few ulps, text and blobs past
/// their first seven bytes), so comparing keys is a superset filter only. The top two
/// bits hold the class (numbers 1, text 2, blobs 3), the rest the value's order: a
/// number's IEEE bits made unsigned-ordered (after -0.0 becomes 0.0, as `sqlite_cmp`
/// calls them equal), or the first seven bytes, big-endian.
pub(super) fn ord_key(value: &Value) -> u64 {
    const SHIFT: u32 = 62;
    let number = |r: f64| {
        let bits = (r + 0.0).to_bits();
        let ordered = if bits >> 63 == 1 {
            !bits
        } else {
            bits | 1 << 63
        };
        1 << SHIFT | ordered >> 2
    };
    let bytes = |class: u64, b: &[u8]| {
        let mut word = [0u8; 8];
        let n = b.len().min(7);
        word[..n].copy_from_slice(&b[..n]);
        class << SHIFT | u64::from_be_bytes(word) >> 2
    };
    match value {
        Value::Null => 1 << SHIFT,
        Value::Integer(i) => number(*i as f64),
        Value::Real(r) => number(*r),
        Value::Text(s) => bytes(2, s.as_bytes()),
        Value::Blob(b) => bytes(3, b),
    }
}

/// Whether a value can be a range bound or be looked up in a range index.
pub(super) fn orderable(value: &Value) -> bool {
    !matches!(value, Value::Null) && !matches!(value, Value::Real(r) if r.is_nan())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_equal_in_sqlite_share_a_key() {
        assert_eq!(eq_key(0, &Value::Integer(1)), eq_key(0, &Value::Real(1.0)));
        assert_eq!(eq_key(0, &Value::Real(-0.0)), eq_key(0, &Value::Real(0.0)));
        assert_eq!(eq_key(0, &Value::Real(0.0)), eq_key(0, &Value::Integer(0)));
        assert_eq!(
            eq_key(0, &Value::Integer(i64::MIN)),
            eq_key(0, &Value::Real(-(2f64.powi(63))))
        );
        assert_ne!(eq_key(0, &Value::Integer(1)), eq_key(0, &Value::Real(1.5)));
        assert_ne!(
            eq_key(0, &Value::Integer(i64::MAX)),
            eq_key(0, &Value::Real(2f64.powi(63)))
        );
    }

    #[test]
    fn integer_keys_of_one_column_are_distinct() {
        let ints = [i64::MIN, -1, 0, 1, 2, 1 << 40, i64::MAX];
        for a in ints {
            for b in ints {
                assert_eq!(
                    eq_key(3, &Value::Integer(a)) == eq_key(3, &Value::Integer(b)),
                    a == b
                );
            }
        }
        assert!(int_keyed(&Value::Real(-0.0)) && int_keyed(&Value::Integer(5)));
        assert!(!int_keyed(&Value::Real(0.5)) && !int_keyed(&Value::Text("1".into())));
        assert!(!int_keyed(&Value::Real(f64::NAN)));
    }

    #[test]
    fn classes_and_columns_get_separate_keys() {
        let one = eq_key(0, &Value::Integer(1));
        assert_ne!(one, eq_key(0, &Value::Text("1".into())));
        assert_ne!(
            eq_key(0, &Value::Text("ab".into())),
            eq_key(0, &Value::Blob(b"ab".to_vec()))
        );
        assert_ne!(one, eq_key(1, &Value::Integer(1)));
        assert_ne!(eq_key(0, &Value::Null), eq_key(0, &Value::Integer(0)));
        assert_ne!(
            eq_key(0, &Value::Text("a".into())),
            eq_key(0, &Value::Text("a\0".into()))
        );
        assert_eq!(eq_key(0, &Value::Real(f64::NAN)), None);
    }

    #[test]
    fn like_prefix_keys_fold_ascii_case_only() {
        let key = prefix_key(2, PatternKind::Like, b"ab");
        assert_eq!(prefix_key_of_text(2, PatternKind::Like, b"ABC", 2), key);
        assert_ne!(prefix_key_of_text(2, PatternKind::Glob, b"ABC", 2), key);
        assert_ne!(prefix_key(2, PatternKind::Glob, b"ab"), key);
    }

    #[test]
    fn order_keys_never_decrease_along_the_sqlite_order() {
        let values = [
            Value::Integer(i64::MIN),
            Value::Real(-1e300),
            Value::Integer(-3),
            Value::Real(-2.5),
            Value::Real(-0.0),
            Value::Integer(0),
            Value::Real(0.0),
            Value::Real(1e-300),
            Value::Integer(1),
            Value::Real(1.0),
            Value::Real(1.5),
            Value::Integer(i64::MAX),
            Value::Real(9_223_372_036_854_775_808.0),
            Value::Real(f64::INFINITY),
            Value::Text(String::new()),
            Value::Text("\0".into()),
            Value::Text("a".into()),
            Value::Text("abcdefg".into()),
            Value::Text("abcdefgh".into()),
            Value::Text("abcdefgz".into()),
            Value::Text("b".into()),
            Value::Text("é".into()),
            Value::Blob(Vec::new()),
            Value::Blob(vec![0]),
            Value::Blob(vec![255; 9]),
        ];
        for a in &values {
            assert_ne!(ord_key(a), 0);
            for b in &values {
                if a.sqlite_cmp(b).is_le() {
                    assert!(ord_key(a) <= ord_key(b), "{a:?} <= {b:?}");
                }
            }
        }
        assert!(ord_key(&Value::Integer(1)) < ord_key(&Value::Real(1.5)));
        assert!(ord_key(&Value::Text("a".into())) < ord_key(&Value::Text("b".into())));
    }

    #[test]
    fn ord_value_follows_the_cross_class_order() {
        let mut v = [
            OrdValue(Value::Blob(vec![0])),
            OrdValue(Value::Text("a".into())),
            OrdValue(Value::Real(1.5)),
            OrdValue(Value::Integer(1)),
        ];
        v.sort();
        assert_eq!(v[0].0, Value::Integer(1));
        assert_eq!(v[3].0, Value::Blob(vec![0]));
        assert_eq!(OrdValue(Value::Integer(2)), OrdValue(Value::Real(2.0)));
    }
}
