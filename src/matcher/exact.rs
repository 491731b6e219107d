//! Shapes a key hit decides by itself: `col = c`, `col IS c` and `col IN (c, ...)` whose
//! constants are all integers (a real equal to one counts), texts of at most
//! [`TEXT_MAX`] bytes, or NULL (which never matches an `IN` item). Such a predicate is
//! TRUE exactly when the row's value equals one of its constants, so a hit that proves
//! the equality answers the shape without its record: the key table keeps, with each
//! posting, the shape's id and what the proof needs (see [`Post`]), and the whole change
//! is decided within the round of misses of its key slots.
//!
//! The proof never rests on a hash alone. Equality keys (the `key` module) are built by
//! steps that are each a bijection of the word they take in, given the state before it:
//! - integers: for a fixed column the key is injective in the integer, so an integer key
//!   hit on the posting's column is equality;
//! - texts: the key takes the column, the class, the text in 8-byte words (the last one
//!   zero-padded) and the length. Fix all of these but the last word and the key is
//!   injective in that word. A text of at most 16 bytes has at most two words before
//!   the length, so two texts of one column with equal keys, equal lengths and equal
//!   first 8 bytes (when they have 8 or more) are the same text. The posting keeps the
//!   constant's length (in its probe field) and first 8 bytes ([`Post::head`]).
//!
//! A hit the posting cannot prove (another storage class, a different length or head,
//! which only a hash collision can bring) is evaluated in full like any candidate.

use crate::query::{CmpOp, Pred, ShapeId};
use crate::value::Value;

use super::key::int_keyed;

/// Longest text constant a key hit can prove equal (two 8-byte words, see the module
/// docs).
pub(super) const TEXT_MAX: usize = 16;

/// Marks a probe field as exact (bit 31): its shape is TRUE exactly when a row's value
/// in the field's column equals one of the shape's constants.
const EXACT: u32 = 1 << 31;
/// Marks an exact probe field whose constant is a text (bit 30).
const TEXT: u32 = 1 << 30;
/// Bits 25..30: the text constant's length (0 to [`TEXT_MAX`]).
const LEN_SHIFT: u32 = 25;
/// Bits 14..25: the column (below 2,048, SQLite's default column limit being 2,000).
const COL_SHIFT: u32 = 14;
const COL_BITS: u32 = 11;
/// Bits 0..14: the probe number.
const PROBE_BITS: u32 = 14;

/// One posting as the key table keeps it: the shape's slot and probe field (a plain probe
/// number, or an exact field from [`exact_field`]), with the shape's id, so that an
/// exact hit is answered from here, and the first 8 bytes of a text constant of 8 to 16
/// bytes (little-endian; 0 otherwise), which with the key and the length prove a text
/// hit equal. 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Post {
    pub(super) slot: u32,
    pub(super) field: u32,
    pub(super) id: ShapeId,
    pub(super) head: u64,
}

/// The column and constants (non-NULL, in the order of the shape's equality probes) of
/// a predicate an exact key hit decides; see the module docs.
pub(super) fn exact_constants(pred: &Pred) -> Option<(usize, Vec<&Value>)> {
    let provable = |v: &Value| int_keyed(v) || text_len(v).is_some();
    match pred {
        Pred::Cmp {
            col,
            op: CmpOp::Eq | CmpOp::Is,
            value,
        } if provable(value) => Some((*col, vec![value])),
        Pred::In {
            col,
            values,
            negated: false,
        } if values.iter().all(|v| v.is_null() || provable(v)) => {
            Some((*col, values.iter().filter(|v| !v.is_null()).collect()))
        }
        _ => None,
    }
}

/// The length of a text of at most [`TEXT_MAX`] bytes.
fn text_len(value: &Value) -> Option<usize> {
    match value {
        Value::Text(s) if s.len() <= TEXT_MAX => Some(s.len()),
        _ => None,
    }
}

/// The first 8 bytes of a text of 8 or more bytes, as [`Post::head`] keeps them; 0 for a
/// shorter one (whose key alone, with its length, proves it).
fn head(text: &[u8]) -> u64 {
    text.first_chunk::<8>()
        .map_or(0, |h| u64::from_le_bytes(*h))
}

/// The probe field and head of probe number `i` of an exact shape on column `col`, whose
/// constant is `value` (see [`exact_constants`]); `None` when the numbers do not fit the
/// field (the probe is then filed plainly and its hits evaluated).
pub(super) fn exact_field(col: usize, i: usize, value: &Value) -> Option<(u32, u64)> {
    if col >= 1 << COL_BITS || i >= 1 << PROBE_BITS {
        return None;
    }
    let base = EXACT | (col as u32) << COL_SHIFT | i as u32;
    if int_keyed(value) {
        return Some((base, 0));
    }
    let len = text_len(value)?;
    let Value::Text(s) = value else { return None };
    Some((base | TEXT | (len as u32) << LEN_SHIFT, head(s.as_bytes())))
}

/// The probe number a probe field holds.
pub(super) fn probe_index(field: u32) -> usize {
    if field & EXACT != 0 {
        (field & ((1 << PROBE_BITS) - 1)) as usize
    } else {
        field as usize
    }
}

/// Whether a hit of `post` by `value` in column `col` proves the posting's shape TRUE for
/// that row. The caller found `post` under `value`'s equality key in `col`
/// (`key::eq_key`): the proof rests on that (see the module docs).
#[inline]
pub(super) fn decides(post: &Post, col: usize, value: &Value) -> bool {
    let field = post.field;
    if field & EXACT == 0 || (field >> COL_SHIFT) as usize & ((1 << COL_BITS) - 1) != col {
        return false;
    }
    if field & TEXT == 0 {
        return int_keyed(value);
    }
    match value {
        Value::Text(s) => {
            let len = (field >> LEN_SHIFT) as usize & 0x1f;
            s.len() == len && head(s.as_bytes()) == post.head
        }
        _ => false,
    }
}

/// Ids of a change's exact hits by slot, so that answering them does not read the slot's
/// id elsewhere (another miss at a million shapes). Holds the first [`IDS_STORED`]; the
/// caller looks up any other.
#[derive(Debug)]
pub(super) struct ExactIds {
    len: usize,
    ids: [(u32, ShapeId); IDS_STORED],
}

/// Exact hits whose ids a change keeps.
const IDS_STORED: usize = 8;

impl Default for ExactIds {
    fn default() -> ExactIds {
        ExactIds {
            len: 0,
            ids: [(0, ShapeId(0)); IDS_STORED],
        }
    }
}

impl ExactIds {
    /// Keeps the id of `post`'s shape, if there is room.
    #[inline]
    pub(super) fn keep(&mut self, post: &Post) {
        if let Some(entry) = self.ids.get_mut(self.len) {
            *entry = (post.slot, post.id);
            self.len += 1;
        }
    }

    /// The id kept for `slot`, if any.
    #[inline]
    pub(super) fn get(&self, slot: u32) -> Option<ShapeId> {
        self.ids[..self.len]
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|&(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::key::eq_key;

    fn post(col: usize, i: usize, value: &Value) -> Post {
        let (field, head) = exact_field(col, i, value).expect("fits");
        Post {
            slot: 7,
            field,
            id: ShapeId(99),
            head,
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn fields_keep_their_probe_number_column_and_kind() {
        let p = post(2047, (1 << PROBE_BITS) - 1, &text("user-1234567890"));
        assert_eq!(probe_index(p.field), (1 << PROBE_BITS) - 1);
        assert!(decides(&p, 2047, &text("user-1234567890")));
        assert!(!decides(&p, 2046, &text("user-1234567890")));
        assert_eq!(probe_index(70_000), 70_000);
        assert_eq!(exact_field(1 << COL_BITS, 0, &Value::Integer(1)), None);
        assert_eq!(exact_field(0, 1 << PROBE_BITS, &Value::Integer(1)), None);
        assert_eq!(exact_field(0, 0, &text(&"x".repeat(TEXT_MAX + 1))), None);
        assert_eq!(exact_field(0, 0, &Value::Real(0.5)), None);
        assert_eq!(exact_field(0, 0, &Value::Blob(vec![1])), None);
    }

    /// A hit under a forged (colliding) key is proved only when the length and head
    /// agree, and never across storage classes: what a real collision could bring is
    /// evaluated.
    #[test]
    fn a_forced_collision_is_not_taken_for_equality() {
        let long = post(1, 0, &text("user-12345"));
        assert!(!decides(&long, 1, &text("user-1234")));
        assert!(!decides(&long, 1, &text("user-22345")));
        assert!(!decides(&long, 1, &text("user-123456")));
        assert!(!decides(&long, 1, &Value::Integer(5)));
        assert!(!decides(&long, 1, &Value::Blob(b"user-12345".to_vec())));
        let short = post(1, 0, &text("ab"));
        assert!(!decides(&short, 1, &text("abc")));
        assert!(!decides(&short, 1, &Value::Null));
        let int = post(1, 0, &Value::Integer(3));
        assert!(decides(&int, 1, &Value::Real(3.0)));
        assert!(!decides(&int, 1, &text("3")));
        assert!(!decides(&int, 1, &Value::Real(3.5)));
        let plain = Post { field: 0, ..int };
        assert!(!decides(&plain, 1, &Value::Integer(3)));
    }

    /// What the proof relies on: texts of at most 16 bytes with one length and head get
    /// distinct keys in one column (here every text differing in its second word's bytes).
    #[test]
    fn short_texts_with_one_head_and_length_get_distinct_keys() {
        let mut keys = std::collections::HashSet::new();
        for len in 0..=TEXT_MAX {
            for b in 0..=255u8 {
                for at in 8.max(len.saturating_sub(8))..len {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    if let Ok(s) = String::from_utf8(s) {
                        keys.insert((len, at, b, eq_key(3, &Value::Text(s))));
                    }
                }
            }
        }
        let distinct: std::collections::HashSet<_> = keys.iter().map(|k| k.3).collect();
        let texts: std::collections::HashSet<_> = keys
            .iter()
            .map(|&(len, at, b, _)| {
                let mut s = vec![b'a'; len];
                s[at] = b;
                s
            })
            .collect();
        assert_eq!(distinct.len(), texts.len());
    }

    #[test]
    fn exact_constants_take_provable_lists_only() {
        let in_list = |values: Vec<Value>| Pred::In {
            col: 4,
            values,
            negated: false,
        };
        let mixed = in_list(vec![Value::Null, Value::Integer(1), text("a")]);
        let (col, values) = exact_constants(&mixed).expect("exact");
        assert_eq!((col, values.len()), (4, 2));
        assert!(exact_constants(&in_list(vec![text(&"y".repeat(17))])).is_none());
        assert!(exact_constants(&in_list(vec![Value::Real(1.5)])).is_none());
        let is_null = Pred::Cmp {
            col: 0,
            op: CmpOp::Is,
            value: Value::Null,
        };
        assert!(exact_constants(&is_null).is_none());
        let ids = {
            let mut ids = ExactIds::default();
            for slot in 0..10 {
                ids.keep(&Post {
                    slot,
                    field: 0,
                    id: ShapeId(u64::from(slot) + 100),
                    head: 0,
                });
            }
            ids
        };
        assert_eq!(ids.get(3), Some(ShapeId(103)));
        assert_eq!(ids.get(9), None);
    }

    mod matching {
        use std::sync::Arc;

        use crate::matcher::tests::assert_agrees;
        use crate::matcher::{classify, Matcher, ShapeMatch, EVALUATE, LARGE_HOT, NEW_HIT};
        use crate::query::{compile, Params, Shape, ShapeId};
        use crate::schema::Schema;
        use crate::value::Value;

        use super::super::ExactIds;

        fn shape(sql: &str) -> Arc<Shape> {
            let schema = Schema::parse(
                "t.sql",
                "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, n);",
            )
            .expect("schema");
            let sql = format!("SELECT * FROM t WHERE {sql}");
            Arc::new(compile(&schema, &sql, &Params::new()).expect("shape"))
        }

        fn row(s: Value, n: Value) -> Vec<Value> {
            vec![Value::Integer(1), s, n]
        }

        fn texts() -> Vec<Value> {
            [
                "",
                "a",
                "ab",
                "abcdefg",
                "abcdefgh",
                "abcdefgi",
                "user-12345",
                "user-12346",
                "abcdefghijklmnop",
                "abcdefghijklmnoq",
                "abcdefghijklmnopq",
                "abcdefghijklmnopr",
            ]
            .iter()
            .map(|t| Value::Text(t.to_string()))
            .chain([Value::Null, Value::Integer(1), Value::Blob(b"ab".to_vec())])
            .collect()
        }

        /// Text `IN` lists and equalities of every length around the 8- and 16-byte
        /// limits (the longer ones evaluated), shared keys (spilled lists), mixed with
        /// integers, on every move, before and after unregistering some of them.
        #[test]
        fn text_hits_decided_in_the_key_table_agree_with_evaluation() {
            let mut m = Matcher::new();
            let sqls = [
                "s IN ('a', 'abcdefgh', 'user-12345')",
                "s = 'user-12345'",
                "s IS 'abcdefghijklmnop'",
                "s IN ('abcdefghijklmnopq', 'ab')",
                "s = 'abcdefghijklmnopq'",
                "s IN ('', 1, 'abcdefgi', NULL)",
                "s = 'ab' AND n = 1",
                "n IN ('ab', 1)",
            ];
            let mut ids: Vec<ShapeId> = sqls.iter().map(|q| m.register(shape(q))).collect();
            let rows: Vec<Vec<Value>> = texts()
                .into_iter()
                .flat_map(|s| {
                    [Value::Integer(1), Value::Text("ab".into())].map(|n| row(s.clone(), n))
                })
                .collect();
            assert_agrees(&m, &ids, &rows);
            for i in [1, 5, 0] {
                assert!(m.unregister(ids.remove(i)));
                assert_agrees(&m, &ids, &rows);
            }
            let again = m.register(shape(sqls[0]));
            ids.push(again);
            assert_agrees(&m, &ids, &rows);
        }

        /// A text `IN` hit is answered from the key table: its placeholder is not marked
        /// for evaluation and its id is kept; a text past 16 bytes is evaluated.
        #[test]
        fn a_short_text_hit_needs_no_evaluation() {
            let mut m = Matcher::new();
            let short = m.register(shape("s IN ('user-1234567', 'b')"));
            let long = m.register(shape("s IN ('user-1234567-1234567', 'c')"));
            let index = &m.tables["t"];
            let mut out = Vec::new();
            let mut ids = ExactIds::default();
            for text in ["user-1234567", "user-1234567-1234567"] {
                let r = row(Value::Text(text.into()), Value::Null);
                assert!(index.collect(&r, None, (NEW_HIT, &mut ids), None, &mut out));
            }
            assert_eq!(out.len(), 2);
            let slot = |m: &ShapeMatch| m.shape.0 as u32;
            assert_eq!(out[0].shape.0 & EVALUATE, 0);
            assert_eq!(ids.get(slot(&out[0])), Some(short));
            assert_ne!(out[1].shape.0 & EVALUATE, 0);
            assert_eq!(ids.get(slot(&out[1])), None);
            assert_ne!(short, long);
        }

        /// Past the sizes at which keys are prefetched, with more exact hits per change
        /// than their ids are kept (the rest read from the slots' ids).
        #[test]
        fn many_exact_hits_per_change_agree_with_evaluation() {
            let mut m = Matcher::new();
            let mut ids = Vec::new();
            for i in 0..(LARGE_HOT + 100) {
                let sql = match i % 3 {
                    0 => format!("s IN ('k{}', 'user-{i:08}')", i % 20),
                    1 => format!("n IN ({}, {i})", i % 20),
                    _ => format!("s = 'user-{i:08}' OR n = {i}"),
                };
                ids.push(m.register(shape(&sql)));
            }
            assert!(m.hot.len() > LARGE_HOT);
            let rows: Vec<Vec<Value>> = (0..3)
                .flat_map(|k| {
                    [
                        row(Value::Text(format!("k{k}")), Value::Integer(k)),
                        row(
                            Value::Text(format!("user-{:08}", k * 3)),
                            Value::Integer(k * 3 + 1),
                        ),
                        row(
                            Value::Text(format!("user-{:08}", k * 3 + 2)),
                            Value::Real(k as f64),
                        ),
                    ]
                })
                .collect();
            let mut out = Vec::new();
            for old in &rows {
                for new in &rows {
                    m.match_change("t", Some(old), Some(new), &mut out);
                    let mut want: Vec<ShapeMatch> = ids
                        .iter()
                        .filter_map(|id| {
                            let shape = m.shape(*id).expect("registered");
                            classify(shape.matches(old), shape.matches(new), false)
                                .map(|effect| ShapeMatch { shape: *id, effect })
                        })
                        .collect();
                    want.sort_unstable_by_key(|x| x.shape);
                    assert_eq!(out, want, "{old:?} -> {new:?}");
                }
            }
        }
    }
}
