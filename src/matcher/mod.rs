//! The matcher: an index of shapes answering "which shapes does this row change affect?"
//! in time that stays flat as subscriptions grow. Pure, no IO.
//!
//! Per table (the `table` module), equality and IN terms live in a flat key table keyed
//! by (column, value) with SQLite's comparison semantics (see the `key` module), range
//! terms in ordered maps and interval trees, LIKE/GLOB literal prefixes in the same key
//! table, and shapes with nothing indexable in a residual list scanned on every change.
//! The index is a superset filter: every candidate is evaluated in full on the old and
//! the new image (invariant 3, move semantics), so correctness never depends on the index
//! being tight. Candidates are evaluated from their predicate compiled into a flat
//! program (the `program` module), one cache line per shape for common predicates;
//! equality shapes a key hit proves (the `exact` module) are answered from the key table.

mod access;
mod effect;
mod exact;
mod huge;
mod intervals;
mod key;
mod keyed;
mod posting;
mod prefetch;
mod program;
mod table;

use std::collections::HashMap;
use std::sync::Arc;

use crate::query::{Shape, ShapeId};
use crate::value::Value;

pub use effect::{classify, Effect, MoveOutReason};

use access::{plan, Probe};
use exact::{exact_constants, ExactIds};
use key::BuildKeyMapHasher;
use prefetch::prefetch;
use program::Program;
use table::{ColumnIndex, Keys, TableIndex};

/// One shape affected by a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShapeMatch {
    /// The shape affected.
    pub shape: ShapeId,
    /// What the change does to it.
    pub effect: Effect,
}

/// Deterministic counters of the work one [`Matcher::match_change`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatchWork {
    /// Distinct shapes evaluated in full (index hits and residual shapes together).
    pub candidates: usize,
    /// Of those, shapes taken from the residual list (nothing indexable).
    pub residual: usize,
}

/// Registered shapes, indexed per table.
#[derive(Debug, Default)]
pub struct Matcher {
    ids: HashMap<ShapeId, u32>,
    /// Slab of shapes; `None` marks a free slot (listed in `free`).
    entries: Vec<Option<Entry>>,
    /// What matching reads of each slot, densely packed beside `entries` (same index):
    /// evaluating a candidate touches its `Hot` and nothing behind the shape's `Arc`.
    hot: Vec<Hot>,
    /// Each slot's shape id again, densely (8 bytes a slot, so it stays in cache far
    /// longer than `hot`): a shape an exact key hit decides is answered from here when
    /// the change did not keep the id from the key table (see `exact::ExactIds`).
    slot_ids: Vec<ShapeId>,
    free: Vec<u32>,
    tables: HashMap<String, TableIndex, BuildKeyMapHasher>,
}

/// The part of a registered shape that matching reads: its id and its predicate compiled
/// into a flat program, one 64-byte cache line in all for a program of up to 54 bytes
/// (constants, `IN` lists and patterns inline; see the `program` module).
#[derive(Debug)]
#[repr(align(64))]
struct Hot {
    id: ShapeId,
    program: Program,
}

/// Slots past which the `Hot` array is taken to be out of cache (1 MiB).
const LARGE_HOT: usize = 1 << 14;

/// A free slot's `Hot`.
const VACANT_HOT: Hot = Hot {
    id: ShapeId(0),
    program: Program::VACANT,
};

#[derive(Debug)]
struct Entry {
    shape: Arc<Shape>,
    refs: u32,
    probes: Vec<Probe>,
    /// For each probe filed in a posting list, its position there (kept current when
    /// other entries are swap-removed), so unregistering is O(1) per probe.
    positions: Vec<u32>,
}

impl Matcher {
    /// An empty matcher.
    pub fn new() -> Matcher {
        Matcher::default()
    }

    /// Registers a shape; identical shapes (same ShapeId) are shared and reference-counted.
    /// Costs one plan of the shape's predicate (linear in its size) and one posting entry
    /// per probe; a shape already registered costs a hash lookup. Never fails.
    pub fn register(&mut self, shape: Arc<Shape>) -> ShapeId {
        let id = shape.id();
        if let Some(&slot) = self.ids.get(&id) {
            if let Some(entry) = self.entries[slot as usize].as_mut() {
                entry.refs += 1;
            }
            return id;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.entries.push(None);
                huge::reserve_one(&mut self.hot);
                self.hot.push(VACANT_HOT);
                huge::reserve_one(&mut self.slot_ids);
                self.slot_ids.push(ShapeId(0));
                (self.entries.len() - 1) as u32
            }
        };
        self.hot[slot as usize] = Hot {
            id,
            program: Program::compile(shape.filter()),
        };
        self.slot_ids[slot as usize] = id;
        let width = shape.table().columns.len();
        let index = self.tables.entry(shape.table().name.clone()).or_default();
        if index.columns.len() < width {
            index.columns.resize_with(width, ColumnIndex::default);
        }
        index.shapes += 1;
        let probes = plan(shape.filter(), index).unwrap_or_else(|| vec![Probe::Residual]);
        let exact = exact_constants(shape.filter()).filter(|(_, v)| v.len() == probes.len());
        let positions = probes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let exact = exact.as_ref().map(|(col, values)| (*col, values[i]));
                index.file(p, (slot, id), i, exact)
            })
            .collect();
        self.entries[slot as usize] = Some(Entry {
            shape,
            refs: 1,
            probes,
            positions,
        });
        self.ids.insert(id, slot);
        id
    }

    /// Drops one reference; returns true when the last one went and the shape was removed
    /// (constant time per probe of its plan). An unknown id is ignored (false).
    pub fn unregister(&mut self, id: ShapeId) -> bool {
        let Some(&slot) = self.ids.get(&id) else {
            return false;
        };
        let Some(entry) = self.entries[slot as usize].as_mut() else {
            return false;
        };
        entry.refs -= 1;
        if entry.refs > 0 {
            return false;
        }
        let probes = std::mem::take(&mut entry.probes);
        let table = entry.shape.table().name.clone();
        if let Some(index) = self.tables.get_mut(&table) {
            for (i, probe) in probes.iter().enumerate() {
                index.unfile(probe, slot, i, &mut self.entries);
            }
            index.shapes -= 1;
            if index.shapes == 0 {
                self.tables.remove(&table);
            }
        }
        self.entries[slot as usize] = None;
        self.hot[slot as usize] = VACANT_HOT;
        self.slot_ids[slot as usize] = ShapeId(0);
        self.free.push(slot);
        self.ids.remove(&id);
        true
    }

    /// The registered shape with this id, if any. A hash lookup.
    pub fn shape(&self, id: ShapeId) -> Option<&Arc<Shape>> {
        let slot = *self.ids.get(&id)?;
        self.entries[slot as usize].as_ref().map(|e| &e.shape)
    }

    /// The number of distinct shapes registered.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether `id` is registered. A hash lookup.
    pub fn contains(&self, id: ShapeId) -> bool {
        self.ids.contains_key(&id)
    }

    /// Whether no index would serve `shape`: it would go to its table's residual list and
    /// be evaluated on every change of the table. Costs one plan of its predicate.
    pub fn is_residual(shape: &Shape) -> bool {
        plan(shape.filter(), &TableIndex::default()).is_none()
    }

    /// Distinct registered shapes in residual lists. Costs one step per table.
    pub fn residual_len(&self) -> usize {
        self.tables.values().map(|t| t.residual.len()).sum()
    }

    /// Whether no shape is registered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Every shape affected by a change of one row of `table` (old/new full images; None
    /// for insert's old and delete's new). Appends to `out` (cleared first), sorted by
    /// shape id; returns the work done. Costs one hash lookup per indexed column value
    /// and a full evaluation of each candidate on both images (see [`MatchWork`]); a NaN
    /// in an indexed column makes every shape of the table a candidate. Allocates
    /// nothing once `out` has grown to the number of candidates. Never fails.
    pub fn match_change(
        &self,
        table: &str,
        old: Option<&[Value]>,
        new: Option<&[Value]>,
        out: &mut Vec<ShapeMatch>,
    ) -> MatchWork {
        out.clear();
        let Some(index) = self.tables.get(table) else {
            return MatchWork::default();
        };
        // Candidates gather in `out` itself, as slots in placeholder matches; each is
        // then evaluated and, if affected, overwritten in place with its real match.
        // When the key table is larger than the caches, every lookup key of both images
        // is computed first (once: `collect` takes them from `keys`) and all their slots'
        // misses are started before the first probe (independent misses overlap; probing
        // first would take them one by one). Otherwise `collect` computes its own keys.
        let keys = index.keyed.is_large().then(|| {
            let mut keys = Keys::default();
            if let Some(row) = old {
                index.keys(row, None, &mut keys);
            }
            let first_new = keys.len;
            if let Some(row) = new {
                index.keys(row, old, &mut keys);
            }
            index.keyed.prefetch_lists(keys.stored());
            (keys, first_new)
        });
        let mut scan_all = keys.as_ref().is_some_and(|(k, _)| k.nan);
        let mut ids = ExactIds::default();
        if !scan_all {
            if let Some(row) = old {
                let keys = keys.as_ref().map(|(k, first)| (k, 0..*first));
                scan_all |= !index.collect(row, None, (OLD_HIT, &mut ids), keys, out);
            }
            if let Some(row) = new {
                let keys = keys.as_ref().map(|(k, first)| (k, *first..k.len));
                scan_all |= !index.collect(row, old, (NEW_HIT, &mut ids), keys, out);
            }
        }
        let residual = index.residual.len();
        // Likewise start every candidate's miss before evaluating any, when the shapes are
        // more than the caches hold (repeats cost nothing).
        let large = self.hot.len() > LARGE_HOT;
        if large && !scan_all {
            for m in out.iter() {
                let slot = m.shape.0 as u32 as usize;
                if m.shape.0 & EVALUATE != 0 {
                    prefetch(&self.hot[slot]);
                } else if ids.get(slot as u32).is_none() {
                    prefetch(&self.slot_ids[slot]);
                }
            }
        }
        if scan_all {
            out.clear();
            for (slot, entry) in self.entries.iter().enumerate() {
                if entry
                    .as_ref()
                    .is_some_and(|e| e.shape.table().name == table)
                {
                    out.push(candidate(slot as u32));
                }
            }
        } else {
            out.extend(index.residual.as_slice().iter().map(|&(s, _)| candidate(s)));
            // One placeholder per slot, with the marks of all its hits.
            out.sort_unstable_by_key(|m| m.shape.0 as u32);
            out.dedup_by(|later, kept| {
                let same = later.shape.0 as u32 == kept.shape.0 as u32;
                if same {
                    kept.shape.0 |= later.shape.0;
                }
                same
            });
        }
        let candidates = out.len();
        // A program kept out of line is one more miss, behind its `Hot`'s.
        if large {
            for m in out.iter().filter(|m| m.shape.0 & EVALUATE != 0) {
                self.hot[m.shape.0 as u32 as usize].program.prefetch();
            }
        }
        let mut kept = 0;
        for i in 0..candidates {
            let marks = out[i].shape.0;
            let slot = marks as u32 as usize;
            let (was, is, id) = if marks & EVALUATE != 0 {
                let hot = &self.hot[slot];
                let was = old.is_some_and(|row| hot.program.matches(row));
                let is = new.is_some_and(|row| hot.program.matches(row));
                (was, is, hot.id)
            } else {
                // Decided by exact hits alone. An image without a hit does not match
                // (the index is a superset filter), except that the new image skipped
                // the column when its value equals the old one (see `collect`).
                let col = (marks >> COLUMN_SHIFT) as usize;
                let was = marks & OLD_HIT != 0;
                let is = new.is_some_and(|row| {
                    marks & NEW_HIT != 0 || (was && old.and_then(|o| o.get(col)) == row.get(col))
                });
                let id = ids.get(slot as u32).unwrap_or_else(|| self.slot_ids[slot]);
                (was, is, id)
            };
            if let Some(effect) = classify(was, is, new.is_none()) {
                out[kept] = ShapeMatch { shape: id, effect };
                kept += 1;
            }
        }
        out.truncate(kept);
        out.sort_unstable_by_key(|m| m.shape);
        MatchWork {
            candidates,
            residual,
        }
    }
}

/// Placeholder marks (above the slot's 32 bits): the candidate must be evaluated.
const EVALUATE: u64 = 1 << 32;
/// The old image hit an exact probe of the candidate (see `exact::decides`).
const OLD_HIT: u64 = 1 << 33;
/// The new image hit an exact probe of the candidate.
const NEW_HIT: u64 = 1 << 34;
/// Where the column of an exact hit sits (15 bits).
const COLUMN_SHIFT: u32 = 40;

/// A placeholder match carrying a candidate's slot, to be evaluated (see
/// [`Matcher::match_change`]).
fn candidate(slot: u32) -> ShapeMatch {
    ShapeMatch {
        shape: ShapeId(u64::from(slot) | EVALUATE),
        effect: Effect::Insert,
    }
}

/// A placeholder for an exact hit of `image` (`OLD_HIT` or `NEW_HIT`) on column `col`.
fn exact_candidate(slot: u32, image: u64, col: usize) -> ShapeMatch {
    ShapeMatch {
        shape: ShapeId(u64::from(slot) | image | (col as u64) << COLUMN_SHIFT),
        effect: Effect::Insert,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{compile, Params};
    use crate::schema::Schema;

    const SCHEMA: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, r REAL, \
                          s TEXT, u);";

    fn shape(sql: &str) -> Arc<Shape> {
        let schema = Schema::parse("t.sql", SCHEMA).expect("schema");
        Arc::new(compile(&schema, sql, &Params::new()).expect(sql))
    }

    fn row(n: Value, r: Value, s: Value, u: Value) -> Vec<Value> {
        vec![Value::Integer(1), n, r, s, u]
    }

    fn u(value: Value) -> Vec<Value> {
        row(Value::Null, Value::Null, Value::Null, value)
    }

    /// Registers `sqls` and returns, for an insert of `new`, the matching shape indexes.
    fn inserted(m: &Matcher, ids: &[ShapeId], new: &[Value]) -> Vec<usize> {
        let mut out = Vec::new();
        m.match_change("t", None, Some(new), &mut out);
        assert!(out.iter().all(|x| x.effect == Effect::Insert));
        let mut hit: Vec<usize> = out
            .iter()
            .map(|x| ids.iter().position(|id| *id == x.shape).expect("known"))
            .collect();
        hit.sort_unstable();
        hit
    }

    fn register_all(m: &mut Matcher, sqls: &[&str]) -> Vec<ShapeId> {
        sqls.iter()
            .map(|s| m.register(shape(&format!("SELECT * FROM t WHERE {s}"))))
            .collect()
    }

    /// Asserts that the matcher's output for every move between two of `rows` (and
    /// every insert and delete of one) equals evaluating each of `ids` on both images.
    pub(super) fn assert_agrees(m: &Matcher, ids: &[ShapeId], rows: &[Vec<Value>]) {
        let mut out = Vec::new();
        for old in rows.iter().map(|r| Some(&r[..])).chain([None]) {
            for new in rows.iter().map(|r| Some(&r[..])).chain([None]) {
                m.match_change("t", old, new, &mut out);
                let mut want: Vec<ShapeMatch> = ids
                    .iter()
                    .filter_map(|id| {
                        let shape = m.shape(*id).expect("registered");
                        let was = old.is_some_and(|r| shape.matches(r));
                        let is = new.is_some_and(|r| shape.matches(r));
                        classify(was, is, new.is_none())
                            .map(|effect| ShapeMatch { shape: *id, effect })
                    })
                    .collect();
                want.sort_unstable_by_key(|x| x.shape);
                assert_eq!(out, want, "{old:?} -> {new:?}");
            }
        }
    }

    /// Shapes an integer key hit decides (`n = 1`, `n IN (1, 2.0, NULL)`, `u IS 2`) next
    /// to evaluated ones, on every pair of old and new values, against brute force.
    #[test]
    fn exact_hits_agree_with_evaluation_on_every_move() {
        let mut m = Matcher::new();
        let sqls = [
            "n = 1",
            "n IN (1, 2.0, NULL)",
            "u IS 2",
            "u = 1",
            "u IN (1, 'a')",
            "n = 1 AND u = 2",
        ];
        let ids = register_all(&mut m, &sqls);
        let values = [
            Value::Null,
            Value::Integer(1),
            Value::Real(1.0),
            Value::Integer(2),
            Value::Real(2.5),
            Value::Text("1".into()),
            Value::Text("a".into()),
            Value::Real(-0.0),
        ];
        let rows: Vec<Vec<Value>> = values
            .iter()
            .flat_map(|n| {
                values
                    .iter()
                    .map(|u| row(n.clone(), Value::Null, Value::Null, u.clone()))
            })
            .collect();
        assert_agrees(&m, &ids, &rows);
    }

    /// Past the sizes at which keys are computed once and prefetched (more keys per
    /// change than are stored or not, ranges, NaN reals), the output equals evaluating
    /// every shape.
    #[test]
    fn a_large_index_agrees_with_evaluating_every_shape() {
        let mut m = Matcher::new();
        let sqls: Vec<String> = (0..40_000)
            .map(|i| match i % 4 {
                0 => format!("n = {i}"),
                1 => format!("s IN ('v{i}', 'w{i}')"),
                2 => format!("u = {i}.5 OR n = {}", i % 50),
                _ if i % 8 == 3 => format!("s LIKE '{}%'", &"abcdefgh"[..1 + i % 8]),
                _ if i % 16 == 7 => format!("n BETWEEN {i} AND {} OR u > {i}", i + 100),
                _ => format!("s GLOB '{}*' AND n > {}", &"abcdefgh"[..1 + i % 8], i % 9),
            })
            .collect();
        let sqls: Vec<&str> = sqls.iter().map(String::as_str).collect();
        let mut ids = register_all(&mut m, &sqls);
        ids.sort_unstable();
        ids.dedup();
        assert!(m.tables["t"].keyed.is_large() && m.hot.len() > LARGE_HOT);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |bound: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % bound
        };
        let mut random_row = || {
            let k = next(40_000) as i64;
            let s = match next(4) {
                0 => Value::Text(format!("v{k}")),
                1 => Value::Text("abcdefghij".into()),
                2 => Value::Text("ABCd".into()),
                _ => Value::Null,
            };
            let u = match next(3) {
                0 => Value::Real(k as f64 + 0.5),
                1 if next(4) == 0 => Value::Real(f64::NAN),
                _ => Value::Integer(k),
            };
            row(Value::Integer(next(40_000) as i64), Value::Null, s, u)
        };
        let mut out = Vec::new();
        for _ in 0..40 {
            let (old, new) = (random_row(), random_row());
            m.match_change("t", Some(&old), Some(&new), &mut out);
            let want: Vec<ShapeMatch> = ids
                .iter()
                .filter_map(|id| {
                    let shape = m.shape(*id).expect("registered");
                    classify(shape.matches(&old), shape.matches(&new), false)
                        .map(|effect| ShapeMatch { shape: *id, effect })
                })
                .collect();
            assert_eq!(out, want, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn a_candidate_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Hot>(), 64);
        assert_eq!(std::mem::align_of::<Hot>(), 64);
    }

    #[test]
    fn integer_one_real_one_and_text_one_are_told_apart() {
        let mut m = Matcher::new();
        let ids = register_all(&mut m, &["u = 1", "u = 1.0", "u = '1'", "u IN (1, x'31')"]);
        assert_eq!(inserted(&m, &ids, &u(Value::Integer(1))), vec![0, 1, 3]);
        assert_eq!(inserted(&m, &ids, &u(Value::Real(1.0))), vec![0, 1, 3]);
        assert_eq!(inserted(&m, &ids, &u(Value::Text("1".into()))), vec![2]);
        assert_eq!(inserted(&m, &ids, &u(Value::Blob(b"1".to_vec()))), vec![3]);
        assert_eq!(
            inserted(&m, &ids, &u(Value::Real(-0.0))),
            Vec::<usize>::new()
        );
        let zero = register_all(&mut m, &["u = 0"]);
        let mut out = Vec::new();
        m.match_change("t", None, Some(&u(Value::Real(-0.0))), &mut out);
        assert_eq!(
            out,
            vec![ShapeMatch {
                shape: zero[0],
                effect: Effect::Insert
            }]
        );
    }

    #[test]
    fn ranges_follow_the_cross_class_order() {
        let mut m = Matcher::new();
        let ids = register_all(
            &mut m,
            &[
                "u > 5",
                "u < 'b'",
                "u BETWEEN 2 AND 'a'",
                "u >= x'00'",
                "u < NULL",
                "u <= 7",
            ],
        );
        assert_eq!(inserted(&m, &ids, &u(Value::Integer(3))), vec![1, 2, 5]);
        assert_eq!(inserted(&m, &ids, &u(Value::Real(6.5))), vec![0, 1, 2, 5]);
        assert_eq!(
            inserted(&m, &ids, &u(Value::Text("a".into()))),
            vec![0, 1, 2]
        );
        assert_eq!(inserted(&m, &ids, &u(Value::Text("c".into()))), vec![0]);
        assert_eq!(inserted(&m, &ids, &u(Value::Blob(vec![1]))), vec![0, 3]);
        assert_eq!(inserted(&m, &ids, &u(Value::Null)), Vec::<usize>::new());
    }

    #[test]
    fn or_branches_are_each_indexed() {
        let mut m = Matcher::new();
        let ids = register_all(
            &mut m,
            &[
                "n = 1 OR s = 'x'",
                "(n = 2 AND r > 1) OR s LIKE 'Ab%'",
                "n = 3 OR s != 'y'",
            ],
        );
        let mut out = Vec::new();
        let hit = row(
            Value::Integer(9),
            Value::Null,
            Value::Text("x".into()),
            Value::Null,
        );
        let work = m.match_change("t", None, Some(&hit), &mut out);
        assert_eq!(out.iter().map(|x| x.shape).collect::<Vec<_>>(), {
            let mut v = vec![ids[0], ids[2]];
            v.sort();
            v
        });
        assert_eq!(
            work,
            MatchWork {
                candidates: 2,
                residual: 1
            }
        );
        let like = row(
            Value::Integer(2),
            Value::Null,
            Value::Text("aBc".into()),
            Value::Null,
        );
        assert_eq!(inserted(&m, &ids, &like), vec![1, 2]);
        let miss = row(
            Value::Integer(2),
            Value::Real(0.5),
            Value::Text("y".into()),
            Value::Null,
        );
        let work = m.match_change("t", None, Some(&miss), &mut out);
        assert!(out.is_empty());
        assert_eq!(
            work,
            MatchWork {
                candidates: 2,
                residual: 1
            }
        );
    }

    #[test]
    fn move_semantics_on_old_and_new_images() {
        let mut m = Matcher::new();
        let id = register_all(&mut m, &["n > 10"])[0];
        let (lo, hi) = (
            u(Value::Null),
            row(Value::Integer(20), Value::Null, Value::Null, Value::Null),
        );
        let mut lo_row = lo.clone();
        lo_row[1] = Value::Integer(1);
        let mut hi2 = hi.clone();
        hi2[1] = Value::Integer(30);
        let mut out = Vec::new();
        let effect = |m: &Matcher, old: Option<&[Value]>, new: Option<&[Value]>| {
            let mut out = Vec::new();
            m.match_change("t", old, new, &mut out);
            out.iter().map(|x| (x.shape, x.effect)).collect::<Vec<_>>()
        };
        assert_eq!(
            effect(&m, Some(&lo_row), Some(&hi)),
            vec![(id, Effect::Insert)]
        );
        assert_eq!(
            effect(&m, Some(&hi), Some(&hi2)),
            vec![(id, Effect::Update)]
        );
        let moved = Effect::Delete(MoveOutReason::MovedOut);
        assert_eq!(effect(&m, Some(&hi), Some(&lo_row)), vec![(id, moved)]);
        let deleted = Effect::Delete(MoveOutReason::Deleted);
        assert_eq!(effect(&m, Some(&hi), None), vec![(id, deleted)]);
        assert_eq!(effect(&m, Some(&lo), Some(&lo_row)), vec![]);
        assert_eq!(
            m.match_change("other", None, Some(&hi), &mut out),
            MatchWork::default()
        );
    }

    #[test]
    fn identical_shapes_are_shared_and_reference_counted() {
        let mut m = Matcher::new();
        let a = m.register(shape("SELECT * FROM t WHERE n IN (2, 1)"));
        let b = m.register(shape("SELECT * FROM t WHERE n IN (1, 2, 1.0)"));
        assert_eq!(a, b);
        assert_eq!(m.len(), 1);
        assert!(m.shape(a).is_some());
        assert!(!m.unregister(a));
        assert_eq!(m.len(), 1);
        assert!(m.unregister(a));
        assert!(m.is_empty());
        assert!(m.shape(a).is_none());
        assert!(!m.unregister(a));
    }

    #[test]
    fn unregister_removes_from_every_index() {
        let mut m = Matcher::new();
        let sqls = [
            "n = 1",
            "n IN (1, 2, 3)",
            "n = 1 OR n = 1.0",
            "u IS NULL",
            "r > 1.5",
            "r < 2",
            "r BETWEEN 1 AND 2",
            "s LIKE 'abc%'",
            "s GLOB 'ab*'",
            "s != 'a'",
            "n = NULL",
        ];
        let ids = register_all(&mut m, &sqls);
        let extra = m.register(shape("SELECT * FROM t"));
        let probe = row(
            Value::Integer(1),
            Value::Real(1.7),
            Value::Text("abcd".into()),
            Value::Null,
        );
        let mut out = Vec::new();
        let work = m.match_change("t", None, Some(&probe), &mut out);
        assert_eq!(out.len(), 11);
        assert_eq!(work.residual, 2);
        for id in ids.iter().rev() {
            assert!(m.unregister(*id));
        }
        let work = m.match_change("t", None, Some(&probe), &mut out);
        assert_eq!(out.iter().map(|x| x.shape).collect::<Vec<_>>(), vec![extra]);
        assert_eq!(
            work,
            MatchWork {
                candidates: 1,
                residual: 1
            }
        );
        let index = &m.tables["t"];
        assert!(index.keyed.is_empty());
        assert!(index.active.is_empty());
        for column in &index.columns {
            assert_eq!(
                (column.eq, column.prefixes, column.between.len()),
                (0, 0, 0)
            );
            assert!(column.lower.is_empty() && column.upper.is_empty());
            assert!(column
                .like_lens
                .iter()
                .chain(&column.glob_lens)
                .all(|&c| c == 0));
        }
        assert!(m.unregister(extra));
        assert!(m.tables.is_empty());
        assert!(m.entries.iter().all(Option::is_none));
        let again = register_all(&mut m, &sqls[..3]);
        assert_eq!(m.entries.len(), 12);
        m.match_change("t", None, Some(&probe), &mut out);
        assert_eq!(out.len(), 3);
        assert!(again.iter().all(|id| m.shape(*id).is_some()));
    }

    #[test]
    fn a_nan_value_falls_back_to_evaluating_every_shape() {
        let mut m = Matcher::new();
        let ids = register_all(&mut m, &["u = 1.5", "u > 2", "s = 'x'"]);
        let mut out = Vec::new();
        let work = m.match_change("t", None, Some(&u(Value::Real(f64::NAN))), &mut out);
        assert_eq!(work.candidates, 3);
        let brute: Vec<ShapeId> = ids
            .iter()
            .copied()
            .filter(|id| {
                m.shape(*id)
                    .is_some_and(|s| s.matches(&u(Value::Real(f64::NAN))))
            })
            .collect();
        assert_eq!(out.len(), brute.len());
    }
}
