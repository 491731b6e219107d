//! The index of one table: which shapes a row image can affect, as placeholder
//! candidates for the matcher to evaluate. Equality and prefix keys in the flat key
//! table, one-sided ranges in ordered maps, intervals in the interval tree, and the
//! residual list. Filing and unfiling keep each posting's position current, so
//! unregistering costs O(1) per probe.

use std::collections::BTreeMap;
use std::ops::Range;

use super::access::{Cost, Probe};
use super::exact::{decides, exact_field, probe_index, ExactIds, Post};
use super::intervals::Intervals;
use super::key::{
    eq_key, ord_key, orderable, prefix_key_of_text, OrdValue, PatternKind, PREFIX_MAX,
};
use super::keyed::Keyed;
use super::posting::{Posted, Posting};
use super::{candidate, exact_candidate, Entry, ShapeMatch};
use crate::query::ShapeId;
use crate::value::Value;

#[derive(Debug, Default)]
pub(super) struct TableIndex {
    pub(super) shapes: usize,
    pub(super) residual: Posting,
    /// Equality and prefix keys of every column.
    pub(super) keyed: Keyed,
    pub(super) columns: Vec<ColumnIndex>,
    /// The columns some probe is filed on, ascending: the only ones a change looks up.
    pub(super) active: Vec<usize>,
    /// Range probes (one-sided and intervals) of every column.
    range_probes: usize,
}

#[derive(Debug, Default)]
pub(super) struct ColumnIndex {
    pub(super) eq: usize,
    pub(super) like_lens: [usize; PREFIX_MAX + 1],
    pub(super) glob_lens: [usize; PREFIX_MAX + 1],
    pub(super) prefixes: usize,
    pub(super) lower: BTreeMap<OrdValue, Posting>,
    pub(super) upper: BTreeMap<OrdValue, Posting>,
    pub(super) lower_len: usize,
    pub(super) upper_len: usize,
    pub(super) between: Intervals,
}

impl ColumnIndex {
    fn has_ranges(&self) -> bool {
        self.lower_len + self.upper_len + self.between.len() > 0
    }

    fn is_active(&self) -> bool {
        self.eq + self.prefixes > 0 || self.has_ranges()
    }
}

impl Cost for TableIndex {
    fn cost(&self, probe: &Probe) -> usize {
        let column = |col: usize| self.columns.get(col);
        match probe {
            Probe::Residual => usize::MAX / 4,
            Probe::Eq { key, .. } | Probe::Prefix { key, .. } => {
                let extra = usize::from(matches!(probe, Probe::Prefix { .. })) * 2;
                1 + extra + self.keyed.get(*key).len()
            }
            // Stabbing walks a tree, logarithmic in the intervals of the column.
            Probe::Between { col, .. } => {
                2 + column(*col).map_or(0, |c| c.between.len().max(1).ilog2() as usize / 4)
            }
            // A one-sided range passes a large share of all rows, so the shape would be a
            // candidate for about every other change: the last resort before the residual.
            Probe::Lower { col, .. } | Probe::Upper { col, .. } => {
                let filed = column(*col).map_or(0, |c| c.lower_len + c.upper_len);
                ONE_SIDED_COST + self.shapes / 2 + filed
            }
        }
    }
}

/// The estimated cost of a one-sided range term (`col > c`) as an entry point.
const ONE_SIDED_COST: usize = 1_000;

impl TableIndex {
    /// Files probe number `i` of the shape `id` in `slot`; returns its posting position.
    /// `exact` is, for a shape a key hit decides (`exact::exact_constants`), its column
    /// and this probe's constant: the probe is filed marked exact.
    pub(super) fn file(
        &mut self,
        probe: &Probe,
        (slot, id): (u32, ShapeId),
        i: usize,
        exact: Option<(usize, &Value)>,
    ) -> u32 {
        let pos = self.file_probe(probe, (slot, id), i, exact);
        self.refresh(probe);
        pos
    }

    /// Keeps `active` current after `probe` was filed or unfiled.
    fn refresh(&mut self, probe: &Probe) {
        let col = match probe {
            Probe::Residual => return,
            Probe::Eq { col, .. }
            | Probe::Prefix { col, .. }
            | Probe::Lower { col, .. }
            | Probe::Upper { col, .. }
            | Probe::Between { col, .. } => *col,
        };
        match (
            self.active.binary_search(&col),
            self.columns[col].is_active(),
        ) {
            (Err(at), true) => self.active.insert(at, col),
            (Ok(at), false) => {
                self.active.remove(at);
            }
            _ => {}
        }
    }

    fn file_probe(
        &mut self,
        probe: &Probe,
        (slot, id): (u32, ShapeId),
        i: usize,
        exact: Option<(usize, &Value)>,
    ) -> u32 {
        debug_assert!(i < 1 << 31, "probe numbers stay below the exact mark");
        let item: Posted = (slot, i as u32);
        match probe {
            Probe::Residual => self.residual.push(item),
            Probe::Eq { col, key } => {
                self.columns[*col].eq += 1;
                let exact = exact.filter(|(c, _)| c == col);
                let (field, head) = exact
                    .and_then(|(c, value)| exact_field(c, i, value))
                    .unwrap_or((i as u32, 0));
                let post = Post {
                    slot,
                    field,
                    id,
                    head,
                };
                self.keyed.push(*key, post)
            }
            Probe::Prefix {
                col,
                kind,
                key,
                len,
            } => {
                let column = &mut self.columns[*col];
                column.prefixes += 1;
                match kind {
                    PatternKind::Like => column.like_lens[*len] += 1,
                    PatternKind::Glob => column.glob_lens[*len] += 1,
                }
                let post = Post {
                    slot,
                    field: i as u32,
                    id,
                    head: 0,
                };
                self.keyed.push(*key, post)
            }
            Probe::Lower { col, bound } => {
                self.range_probes += 1;
                let column = &mut self.columns[*col];
                column.lower_len += 1;
                let posting = column.lower.entry(OrdValue(bound.clone())).or_default();
                posting.push(item)
            }
            Probe::Upper { col, bound } => {
                self.range_probes += 1;
                let column = &mut self.columns[*col];
                column.upper_len += 1;
                let posting = column.upper.entry(OrdValue(bound.clone())).or_default();
                posting.push(item)
            }
            Probe::Between { col, lo, hi } => {
                self.range_probes += 1;
                self.columns[*col]
                    .between
                    .insert(ord_key(lo), ord_key(hi), slot);
                0
            }
        }
    }

    /// Removes probe number `i` of the shape in `slot` from its posting.
    pub(super) fn unfile(
        &mut self,
        probe: &Probe,
        slot: u32,
        i: usize,
        entries: &mut [Option<Entry>],
    ) {
        self.unfile_probe(probe, slot, i, entries);
        self.refresh(probe);
    }

    fn unfile_probe(&mut self, probe: &Probe, slot: u32, i: usize, entries: &mut [Option<Entry>]) {
        let pos = entries[slot as usize]
            .as_ref()
            .map_or(0, |e| e.positions[i]);
        match probe {
            Probe::Residual => moved(self.residual.swap_remove(pos), pos, entries),
            Probe::Eq { col, key } | Probe::Prefix { col, key, .. } => {
                let column = &mut self.columns[*col];
                match probe {
                    Probe::Prefix {
                        kind: PatternKind::Like,
                        len,
                        ..
                    } => {
                        column.like_lens[*len] -= 1;
                        column.prefixes -= 1;
                    }
                    Probe::Prefix {
                        kind: PatternKind::Glob,
                        len,
                        ..
                    } => {
                        column.glob_lens[*len] -= 1;
                        column.prefixes -= 1;
                    }
                    _ => column.eq -= 1,
                }
                moved(self.keyed.swap_remove(*key, pos), pos, entries);
            }
            Probe::Lower { col, bound } | Probe::Upper { col, bound } => {
                self.range_probes -= 1;
                let column = &mut self.columns[*col];
                let lower = matches!(probe, Probe::Lower { .. });
                let (map, len) = if lower {
                    (&mut column.lower, &mut column.lower_len)
                } else {
                    (&mut column.upper, &mut column.upper_len)
                };
                *len -= 1;
                let bound = OrdValue(bound.clone());
                if let Some(posting) = map.get_mut(&bound) {
                    moved(posting.swap_remove(pos), pos, entries);
                    if posting.is_empty() {
                        map.remove(&bound);
                    }
                }
            }
            Probe::Between { col, lo, .. } => {
                self.range_probes -= 1;
                self.columns[*col].between.remove(ord_key(lo), slot);
            }
        }
    }

    /// The indexed columns a row image is looked up by, with its values: every active
    /// column up to the row's end whose value differs from the one in `seen` (already
    /// collected for that image). [`TableIndex::keys`] and [`TableIndex::collect`] visit
    /// the same ones.
    fn probed<'a>(
        &'a self,
        row: &'a [Value],
        seen: Option<&'a [Value]>,
    ) -> impl Iterator<Item = (usize, &'a ColumnIndex, &'a Value)> + 'a {
        self.active
            .iter()
            .map_while(move |&col| row.get(col).map(|value| (col, value)))
            .filter(move |&(col, value)| seen.and_then(|s| s.get(col)) != Some(value))
            .map(|(col, value)| (col, &self.columns[col], value))
    }

    /// Computes, in [`TableIndex::collect`]'s order, the key of each equality and prefix
    /// lookup of a row image (same skipping rule) into `keys`, so that `collect` does not
    /// compute them again, and starts the cache miss of each key's slot, so that the
    /// misses of the whole change overlap.
    pub(super) fn keys(&self, row: &[Value], seen: Option<&[Value]>, keys: &mut Keys) {
        for (col, column, value) in self.probed(row, seen) {
            if column.eq > 0 {
                match eq_key(col, value) {
                    Some(key) => {
                        self.keyed.prefetch(key);
                        keys.push(key, col as u32);
                    }
                    None => {
                        keys.nan = true;
                        return;
                    }
                }
            }
            if column.prefixes > 0 {
                if let Some(text) = value.text_bytes() {
                    TableIndex::prefix_lens(column, text.len(), |kind, len| {
                        let key = prefix_key_of_text(col, kind, &text, len);
                        self.keyed.prefetch(key);
                        keys.push(key, col as u32 | PREFIX_TAG);
                    });
                }
            }
        }
    }

    /// Appends a placeholder match (see [`candidate`]) for each shape a row image can
    /// affect (index hits only), skipping columns whose value equals the one in `seen`
    /// (already collected for that image). `keys`, if given, holds at the numbers in its
    /// range the image's keys from [`TableIndex::keys`]: when all of them are stored, the
    /// lookups are made from there (and the columns walked again only for ranges);
    /// otherwise the columns are walked and keys not stored are computed again.
    /// Returns false when a value cannot be looked up (a NaN real in an indexed column)
    /// and the caller must evaluate every shape of the table. A hit that decides its shape
    /// (`exact::decides`) is marked with `image` (`OLD_HIT` or `NEW_HIT`) instead of
    /// `EVALUATE`, and its shape's id kept in `ids`.
    pub(super) fn collect(
        &self,
        row: &[Value],
        seen: Option<&[Value]>,
        (image, ids): (u64, &mut ExactIds),
        keys: Option<(&Keys, Range<usize>)>,
        out: &mut Vec<ShapeMatch>,
    ) -> bool {
        if let Some((k, span)) = keys.as_ref().filter(|(k, _)| k.len <= KEYS_STORED) {
            return self.collect_stored(row, seen, (image, ids), (k, span.clone()), out);
        }
        let posts = |postings: &[Post], out: &mut Vec<ShapeMatch>| {
            out.extend(postings.iter().map(|p| candidate(p.slot)));
        };
        let (keys, mut next) = keys.map_or((None, 0), |(k, span)| (Some(k), span.start));
        for (col, column, value) in self.probed(row, seen) {
            if column.eq > 0 {
                let Some(key) = keys
                    .and_then(|k| k.get(next))
                    .or_else(|| eq_key(col, value))
                else {
                    return false;
                };
                next += 1;
                hits(col, value, self.keyed.get(key), (image, ids), out);
            }
            if column.has_ranges() && !TableIndex::ranges(column, value, out) {
                return false;
            }
            if column.prefixes > 0 {
                if let Some(text) = value.text_bytes() {
                    TableIndex::prefix_lens(column, text.len(), |kind, len| {
                        let key = keys
                            .and_then(|k| k.get(next))
                            .unwrap_or_else(|| prefix_key_of_text(col, kind, &text, len));
                        next += 1;
                        posts(self.keyed.get(key), out);
                    });
                }
            }
        }
        true
    }

    /// [`TableIndex::collect`] when all the image's keys are stored in `keys` (numbers
    /// `span`): lookups straight from the stored keys, then a walk of the columns only
    /// when the table has range probes.
    fn collect_stored(
        &self,
        row: &[Value],
        seen: Option<&[Value]>,
        (image, ids): (u64, &mut ExactIds),
        (keys, span): (&Keys, Range<usize>),
        out: &mut Vec<ShapeMatch>,
    ) -> bool {
        for n in span {
            let (key, tag) = (keys.stored[n], keys.cols[n]);
            let col = (tag & !PREFIX_TAG) as usize;
            let postings = self.keyed.get(key);
            if tag & PREFIX_TAG != 0 {
                out.extend(postings.iter().map(|p| candidate(p.slot)));
            } else {
                hits(col, &row[col], postings, (image, ids), out);
            }
        }
        self.range_probes == 0
            || self
                .probed(row, seen)
                .all(|(_, column, value)| TableIndex::ranges(column, value, out))
    }

    /// Appends a placeholder for each range shape of `column` a value is in; false when
    /// the value cannot be looked up (a NaN real).
    #[inline(always)]
    fn ranges(column: &ColumnIndex, value: &Value, out: &mut Vec<ShapeMatch>) -> bool {
        if !column.has_ranges() || value.is_null() {
            return true;
        }
        if !orderable(value) {
            return false;
        }
        let slots = |postings: &[Posted], out: &mut Vec<ShapeMatch>| {
            out.extend(postings.iter().map(|&(slot, _)| candidate(slot)));
        };
        if column.lower_len + column.upper_len > 0 {
            let v = OrdValue(value.clone());
            if column.lower_len > 0 {
                for (_, p) in column.lower.range(..=&v) {
                    slots(p.as_slice(), out);
                }
            }
            if column.upper_len > 0 {
                for (_, p) in column.upper.range(&v..) {
                    slots(p.as_slice(), out);
                }
            }
        }
        if column.between.len() > 0 {
            column
                .between
                .stab(ord_key(value), |slot| out.push(candidate(slot)));
        }
        true
    }

    /// Calls `each` with the operator and length of every prefix of a text of `text_len`
    /// bytes some pattern of `column` is filed under (only lengths that have patterns).
    fn prefix_lens(
        column: &ColumnIndex,
        text_len: usize,
        mut each: impl FnMut(PatternKind, usize),
    ) {
        for (kind, lens) in [
            (PatternKind::Like, &column.like_lens),
            (PatternKind::Glob, &column.glob_lens),
        ] {
            let longest = text_len.min(PREFIX_MAX);
            for (len, &filed) in lens.iter().enumerate().take(longest + 1).skip(1) {
                if filed > 0 {
                    each(kind, len);
                }
            }
        }
    }
}

/// Keys stored per change (both images); lookups past this many compute theirs again.
const KEYS_STORED: usize = 16;
/// Marks a stored key's column as a prefix lookup's (`Keys::cols`).
const PREFIX_TAG: u32 = 1 << 31;

/// The lookup keys of one change, in [`TableIndex::collect`]'s order (see
/// [`TableIndex::keys`]): the first [`KEYS_STORED`] stored, the rest only counted.
#[derive(Debug, Default)]
pub(super) struct Keys {
    stored: [u64; KEYS_STORED],
    /// The column of each stored key, marked with `PREFIX_TAG` for a prefix lookup.
    cols: [u32; KEYS_STORED],
    /// Keys computed so far (stored or not).
    pub(super) len: usize,
    /// A value had no key (a NaN real in an indexed column).
    pub(super) nan: bool,
}

impl Keys {
    fn push(&mut self, key: u64, col: u32) {
        if let (Some(slot), Some(c)) = (self.stored.get_mut(self.len), self.cols.get_mut(self.len))
        {
            (*slot, *c) = (key, col);
        }
        self.len += 1;
    }

    /// Key number `n`, if stored.
    fn get(&self, n: usize) -> Option<u64> {
        if n < self.len {
            self.stored.get(n).copied()
        } else {
            None
        }
    }

    /// The stored keys.
    pub(super) fn stored(&self) -> &[u64] {
        &self.stored[..self.len.min(KEYS_STORED)]
    }
}

/// Appends a placeholder for each posting an equality lookup of `value` in column `col`
/// found: marked with `image` when the hit decides its shape (its id then kept in
/// `ids`), to be evaluated otherwise.
#[inline(always)]
fn hits(
    col: usize,
    value: &Value,
    postings: &[Post],
    (image, ids): (u64, &mut ExactIds),
    out: &mut Vec<ShapeMatch>,
) {
    for post in postings {
        out.push(if decides(post, col, value) {
            ids.keep(post);
            exact_candidate(post.slot, image, col)
        } else {
            candidate(post.slot)
        });
    }
}

/// After a swap-remove at `pos`, fixes the recorded position of the posting moved there.
fn moved(moved: Option<Posted>, pos: u32, entries: &mut [Option<Entry>]) {
    if let Some((slot, probe)) = moved {
        if let Some(entry) = entries[slot as usize].as_mut() {
            entry.positions[probe_index(probe)] = pos;
        }
    }
}
