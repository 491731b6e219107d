//! Closed intervals `[lo, hi]` of values (a BETWEEN, or two range terms on one column)
//! and the stabbing query "which intervals contain v".
//!
//! A list of sorted chunks, each remembering its largest upper bound: a query visits only
//! the chunks whose lower bounds start at or below `v` and skips every chunk whose upper
//! bounds all lie below `v`. Bounds are compared with `Value::sqlite_cmp`; callers never
//! store NULL or NaN bounds.

use std::cmp::Ordering;

use crate::value::Value;

/// Entries per chunk after a split; a chunk splits when it holds twice as many.
const CHUNK: usize = 32;

#[derive(Debug, Default)]
pub(super) struct Intervals {
    chunks: Vec<Chunk>,
    len: usize,
}

#[derive(Debug)]
struct Chunk {
    /// Sorted by `lo`.
    items: Vec<Item>,
    max_hi: Value,
}

#[derive(Debug)]
struct Item {
    lo: Value,
    hi: Value,
    slot: u32,
}

fn le(a: &Value, b: &Value) -> bool {
    a.sqlite_cmp(b) != Ordering::Greater
}

impl Chunk {
    fn first_lo(&self) -> &Value {
        &self.items[0].lo
    }

    fn recompute_max(&mut self) {
        let mut max = &self.items[0].hi;
        for item in &self.items[1..] {
            if !le(&item.hi, max) {
                max = &item.hi;
            }
        }
        self.max_hi = max.clone();
    }
}

impl Intervals {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn insert(&mut self, lo: Value, hi: Value, slot: u32) {
        self.len += 1;
        if self.chunks.is_empty() {
            self.chunks.push(Chunk {
                max_hi: hi.clone(),
                items: vec![Item { lo, hi, slot }],
            });
            return;
        }
        let ci = self
            .chunks
            .partition_point(|c| le(c.first_lo(), &lo))
            .saturating_sub(1);
        let chunk = &mut self.chunks[ci];
        let at = chunk.items.partition_point(|it| le(&it.lo, &lo));
        if !le(&hi, &chunk.max_hi) {
            chunk.max_hi = hi.clone();
        }
        chunk.items.insert(at, Item { lo, hi, slot });
        if chunk.items.len() > 2 * CHUNK {
            let items = chunk.items.split_off(CHUNK);
            chunk.recompute_max();
            let mut right = Chunk {
                max_hi: Value::Null,
                items,
            };
            right.recompute_max();
            self.chunks.insert(ci + 1, right);
        }
    }

    /// Removes one interval of `slot` starting at `lo`; false when there is none.
    pub(super) fn remove(&mut self, lo: &Value, slot: u32) -> bool {
        let start = self
            .chunks
            .partition_point(|c| c.first_lo().sqlite_cmp(lo) == Ordering::Less);
        for ci in start.saturating_sub(1)..self.chunks.len() {
            let chunk = &mut self.chunks[ci];
            if !le(chunk.first_lo(), lo) {
                break;
            }
            let found = chunk
                .items
                .iter()
                .position(|it| it.slot == slot && it.lo.sqlite_cmp(lo) == Ordering::Equal);
            if let Some(i) = found {
                chunk.items.remove(i);
                if chunk.items.is_empty() {
                    self.chunks.remove(ci);
                } else {
                    chunk.recompute_max();
                }
                self.len -= 1;
                return true;
            }
        }
        false
    }

    /// Appends the slot of every interval containing `v`.
    pub(super) fn stab(&self, v: &Value, out: &mut Vec<u32>) {
        let end = self.chunks.partition_point(|c| le(c.first_lo(), v));
        for chunk in &self.chunks[..end] {
            if !le(v, &chunk.max_hi) {
                continue;
            }
            for item in &chunk.items {
                if !le(&item.lo, v) {
                    break;
                }
                if le(v, &item.hi) {
                    out.push(item.slot);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stab(iv: &Intervals, v: Value) -> Vec<u32> {
        let mut out = Vec::new();
        iv.stab(&v, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn stabbing_matches_a_linear_scan_through_splits_and_removals() {
        let mut iv = Intervals::default();
        let mut all = Vec::new();
        for slot in 0..500u32 {
            let lo = (slot as i64 * 37) % 200;
            let hi = lo + (slot as i64 % 13);
            iv.insert(Value::Integer(lo), Value::Integer(hi), slot);
            all.push((lo, hi, slot));
        }
        for slot in (0..500u32).step_by(3) {
            let (lo, _, _) = all[slot as usize];
            assert!(iv.remove(&Value::Real(lo as f64), slot));
        }
        assert!(!iv.remove(&Value::Integer(0), 3));
        assert_eq!(iv.len(), 500 - 167);
        for v in -1..215 {
            let expected: Vec<u32> = all
                .iter()
                .filter(|(lo, hi, slot)| slot % 3 != 0 && *lo <= v && v <= *hi)
                .map(|t| t.2)
                .collect();
            assert_eq!(stab(&iv, Value::Integer(v)), expected, "v = {v}");
        }
    }

    #[test]
    fn intervals_span_storage_classes() {
        let mut iv = Intervals::default();
        iv.insert(Value::Integer(5), Value::Text("m".into()), 1);
        iv.insert(Value::Text("a".into()), Value::Blob(vec![1]), 2);
        assert_eq!(stab(&iv, Value::Real(7.5)), vec![1]);
        assert_eq!(stab(&iv, Value::Text("b".into())), vec![1, 2]);
        assert_eq!(stab(&iv, Value::Text("z".into())), vec![2]);
        assert_eq!(stab(&iv, Value::Blob(vec![0])), vec![2]);
        assert_eq!(stab(&iv, Value::Integer(4)), Vec::<u32>::new());
    }
}
