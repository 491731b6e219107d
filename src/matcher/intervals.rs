//! Closed intervals `[lo, hi]` of values (a BETWEEN, or two range terms on one column)
//! and the stabbing query "which intervals contain v", in O(log n + k).
//!
//! Intervals are kept sorted by `lo` in chunks of [`CHUNK`] to `2 * CHUNK` entries, each
//! chunk remembering its largest upper bound. Over the chunks sits a tournament tree (a
//! complete binary tree in an array) whose every node holds the largest upper bound below
//! it. A query binary-searches the chunks whose lower bounds start at or
//! below `v`, then walks down the tree into the subtrees whose largest upper bound reaches
//! `v` only. Every chunk it opens, except the one where `v` falls, holds at least one
//! interval containing `v` (all its lower bounds are at or below the next chunk's first,
//! hence at or below `v`), so a query costs O(log n) plus O(CHUNK) per chunk with a hit.
//!
//! Bounds are order keys (`key::ord_key`: one `u64` per value, never 0, monotone in
//! SQLite's order), so a query compares machine words in a few contiguous arrays; since
//! distinct values may share a key, a stab is a superset of the intervals containing the
//! value, as every index of the matcher may be.
//! Inserting or removing updates one leaf-to-root path, except when a chunk splits or
//! empties (once per `CHUNK` updates at most), which rebuilds the tree: O(n / CHUNK).

/// Entries per chunk after a split; a chunk splits when it holds twice as many.
const CHUNK: usize = 16;

/// Deepest tree walk: 2^32 chunks would not fit in memory long before this.
const MAX_DEPTH: usize = 40;

#[derive(Debug, Default)]
pub(super) struct Intervals {
    chunks: Vec<Chunk>,
    /// The first lower bound of each chunk, contiguous: the binary search over chunks
    /// reads this array only (not one chunk's items per step).
    firsts: Vec<u64>,
    /// Tournament tree: node 1 is the root, node `i` has children `2i` and `2i + 1`, the
    /// leaves `width..2 * width` stand for the chunks in order. Each node holds the
    /// largest `max_hi` among its leaves (a copy, so the walk reads only this array), or
    /// 0 below no chunk (keys are never 0).
    tree: Vec<u64>,
    /// Number of leaves: the smallest power of two at least `chunks.len()`.
    width: usize,
    len: usize,
}

#[derive(Debug)]
struct Chunk {
    /// Sorted by `lo`.
    items: Vec<Item>,
    max_hi: u64,
}

#[derive(Debug)]
struct Item {
    lo: u64,
    hi: u64,
    slot: u32,
}

fn le(a: &u64, b: &u64) -> bool {
    a <= b
}

impl Chunk {
    fn first_lo(&self) -> &u64 {
        &self.items[0].lo
    }

    fn recompute_max(&mut self) {
        let mut max = &self.items[0].hi;
        for item in &self.items[1..] {
            if !le(&item.hi, max) {
                max = &item.hi;
            }
        }
        self.max_hi = *max;
    }
}

impl Intervals {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn insert(&mut self, lo: u64, hi: u64, slot: u32) {
        self.len += 1;
        if self.chunks.is_empty() {
            self.firsts.push(lo);
            self.chunks.push(Chunk {
                max_hi: hi,
                items: vec![Item { lo, hi, slot }],
            });
            self.rebuild();
            return;
        }
        let ci = self
            .firsts
            .partition_point(|f| le(f, &lo))
            .saturating_sub(1);
        let chunk = &mut self.chunks[ci];
        let at = chunk.items.partition_point(|it| le(&it.lo, &lo));
        let raised = !le(&hi, &chunk.max_hi);
        if raised {
            chunk.max_hi = hi;
        }
        if at == 0 {
            self.firsts[ci] = lo;
        }
        chunk.items.insert(at, Item { lo, hi, slot });
        if chunk.items.len() > 2 * CHUNK {
            let items = chunk.items.split_off(CHUNK);
            chunk.recompute_max();
            let mut right = Chunk { max_hi: 0, items };
            right.recompute_max();
            self.firsts.insert(ci + 1, *right.first_lo());
            self.chunks.insert(ci + 1, right);
            self.rebuild();
        } else if raised {
            self.update(ci);
        }
    }

    /// Removes one interval of `slot` starting at `lo`; false when there is none.
    pub(super) fn remove(&mut self, lo: u64, slot: u32) -> bool {
        let start = self.firsts.partition_point(|f| *f < lo);
        for ci in start.saturating_sub(1)..self.chunks.len() {
            let chunk = &mut self.chunks[ci];
            if *chunk.first_lo() > lo {
                break;
            }
            let found = chunk
                .items
                .iter()
                .position(|it| it.slot == slot && it.lo == lo);
            if let Some(i) = found {
                chunk.items.remove(i);
                self.len -= 1;
                if chunk.items.is_empty() {
                    self.chunks.remove(ci);
                    self.firsts.remove(ci);
                    self.rebuild();
                } else {
                    if i == 0 {
                        self.firsts[ci] = *chunk.first_lo();
                    }
                    chunk.recompute_max();
                    self.update(ci);
                }
                return true;
            }
        }
        false
    }

    /// Calls `hit` with the slot of every interval whose keys contain the key `v`.
    pub(super) fn stab(&self, v: u64, mut hit: impl FnMut(u32)) {
        let v = &v;
        let end = self.firsts.partition_point(|f| le(f, v));
        if end == 0 {
            return;
        }
        // (node, first leaf below it, leaves below it); depth-first, explicit stack.
        let mut stack = [(0usize, 0usize, 0usize); MAX_DEPTH];
        stack[0] = (1, 0, self.width);
        let mut depth = 1;
        while depth > 0 {
            depth -= 1;
            let (node, first, span) = stack[depth];
            if first >= end {
                continue;
            }
            let max = &self.tree[node];
            // Below a node that lies wholly before `end`, the largest upper bound decides;
            // across `end`, chunks past it could hold the largest, so look further down.
            if *max == 0 || (first + span <= end && !le(v, max)) {
                continue;
            }
            if span == 1 {
                let chunk = &self.chunks[first];
                if !le(v, &chunk.max_hi) {
                    continue;
                }
                for item in &chunk.items {
                    if !le(&item.lo, v) {
                        break;
                    }
                    if le(v, &item.hi) {
                        hit(item.slot);
                    }
                }
                continue;
            }
            let half = span / 2;
            stack[depth] = (2 * node + 1, first + half, half);
            stack[depth + 1] = (2 * node, first, half);
            depth += 2;
        }
    }

    /// The larger of a node's children's values (NULL: no chunk below).
    fn larger(&self, node: usize) -> u64 {
        self.tree[2 * node].max(self.tree[2 * node + 1])
    }

    /// Rebuilds the whole tree after chunks were inserted or removed.
    fn rebuild(&mut self) {
        self.width = self.chunks.len().next_power_of_two();
        self.tree.clear();
        self.tree.resize(2 * self.width, 0);
        for (ci, chunk) in self.chunks.iter().enumerate() {
            self.tree[self.width + ci] = chunk.max_hi;
        }
        for node in (1..self.width).rev() {
            self.tree[node] = self.larger(node);
        }
    }

    /// Refreshes the path from chunk `ci`'s leaf to the root after its `max_hi` changed.
    fn update(&mut self, ci: usize) {
        self.tree[self.width + ci] = self.chunks[ci].max_hi;
        let mut node = (self.width + ci) / 2;
        while node >= 1 {
            self.tree[node] = self.larger(node);
            node /= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::matcher::key::ord_key;
    use crate::value::Value;

    fn k(v: &Value) -> u64 {
        ord_key(v)
    }

    fn stab(iv: &Intervals, v: Value) -> Vec<u32> {
        let mut out = Vec::new();
        iv.stab(k(&v), |slot| out.push(slot));
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
            iv.insert(k(&Value::Integer(lo)), k(&Value::Integer(hi)), slot);
            all.push((lo, hi, slot));
        }
        for slot in (0..500u32).step_by(3) {
            let (lo, _, _) = all[slot as usize];
            assert!(iv.remove(k(&Value::Real(lo as f64)), slot));
        }
        assert!(!iv.remove(k(&Value::Integer(0)), 3));
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
        iv.insert(k(&Value::Integer(5)), k(&Value::Text("m".into())), 1);
        iv.insert(k(&Value::Text("a".into())), k(&Value::Blob(vec![1])), 2);
        assert_eq!(stab(&iv, Value::Real(7.5)), vec![1]);
        assert_eq!(stab(&iv, Value::Text("b".into())), vec![1, 2]);
        assert_eq!(stab(&iv, Value::Text("z".into())), vec![2]);
        assert_eq!(stab(&iv, Value::Blob(vec![0])), vec![2]);
        assert_eq!(stab(&iv, Value::Integer(4)), Vec::<u32>::new());
    }

    fn random_bound(rng: &mut StdRng) -> Value {
        match rng.gen_range(0..10) {
            0 => Value::Real(rng.gen_range(0..400) as f64 / 2.0),
            1 => Value::Text(format!("{}", rng.gen_range(0..20))),
            2 => Value::Blob(vec![rng.gen_range(0..3)]),
            _ => Value::Integer(rng.gen_range(0..200)),
        }
    }

    /// Random mixed-class intervals (many with equal endpoints, many sharing a lower
    /// bound, long ones over short ones), random removals (chunks emptied and rebuilt),
    /// every stab checked against a linear scan (exact here: these values' keys are
    /// distinct).
    #[test]
    fn random_intervals_and_removals_match_a_linear_scan() {
        let mut rng = StdRng::seed_from_u64(15);
        let mut iv = Intervals::default();
        let mut live: Vec<(Value, Value, u32)> = Vec::new();
        let mut next = 0u32;
        for round in 0..40 {
            for _ in 0..rng.gen_range(0..120) {
                let a = random_bound(&mut rng);
                let b = match rng.gen_range(0..4) {
                    0 => a.clone(),
                    _ => random_bound(&mut rng),
                };
                let (lo, hi) = if a.sqlite_cmp(&b).is_le() {
                    (a, b)
                } else {
                    (b, a)
                };
                iv.insert(k(&lo), k(&hi), next);
                live.push((lo, hi, next));
                next += 1;
            }
            let removals =
                rng.gen_range(0..=live.len().min(if round % 7 == 6 { 10_000 } else { 90 }));
            for _ in 0..removals {
                let (lo, _, slot) = live.swap_remove(rng.gen_range(0..live.len()));
                assert!(iv.remove(k(&lo), slot));
            }
            assert_eq!(iv.len(), live.len());
            for _ in 0..60 {
                let v = random_bound(&mut rng);
                let mut expected: Vec<u32> = live
                    .iter()
                    .filter(|(lo, hi, _)| lo.sqlite_cmp(&v).is_le() && v.sqlite_cmp(hi).is_le())
                    .map(|t| t.2)
                    .collect();
                expected.sort_unstable();
                assert_eq!(stab(&iv, v.clone()), expected, "round {round}, v = {v:?}");
            }
        }
    }
}
