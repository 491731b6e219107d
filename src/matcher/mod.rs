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
mod filter;
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
mod tests;
