//! The equality and prefix index of one table: index key -> posting list, as a flat
//! open-addressing table (linear probing in Robin Hood order, backward-shift deletion,
//! no tombstones).
//!
//! A slot is 32 bytes (two to a cache line), the key and either the key's only posting
//! inline or where its spilled list lies in one shared pool of blocks (one miss behind
//! the slot, no list header between), so a lookup at a million keys costs about one
//! cache miss (a general hash map touches its control bytes, then a 40-byte bucket, then
//! for most keys is done; here the bucket is the only line touched). A posting carries
//! what an exact hit is decided from (see the `exact` module), so such a hit needs no
//! other line. Keys are already well-mixed 64-bit
//! hashes (see the `key` module), so their low bits pick the home slot.
//!
//! Robin Hood order: along a run of slots, keys sit in the order of their home slots
//! (an insert takes the place of a key nearer its home than the new key would be, which
//! moves on). A lookup therefore stops at the first slot whose key is nearer its home
//! than the wanted key would be there, not only at an empty slot. At the table's
//! highest load (one half) that is what keeps a miss short. In a simulation of the
//! million-shape bench's table, with plain linear probing an absent key scanned 2.5
//! slots on average; in Robin Hood order it scans 1.7. A lookup reads past its home
//! slot's line for 23% of present keys and 34% of absent ones (same simulation), into
//! the next line in memory; [`Keyed::prefetch`] starts the home line only.
//!
//! Past the caches, a lookup first asks a small filter of the keys present (the `filter`
//! module), which answers most lookups of absent keys from a cached word, so that they
//! wait for no slot.

use super::exact::Post;
use super::filter::KeyFilter;
use super::huge::{reserve_one, HugeArray};
use super::posting::Posted;
use super::prefetch::prefetch;
use crate::query::ShapeId;

/// Marks an unused slot (`one.slot`); a real shape slot is never `u32::MAX`.
const EMPTY: u32 = u32::MAX;
/// Marks a slot whose postings are spilled to `pool` (`one.slot`); see [`Keyed::block`].
const SPILLED: u32 = u32::MAX - 1;
/// Postings in the smallest block of the pool (blocks hold 4, 8, 16, ... postings).
const MIN_BLOCK: usize = 4;
/// Slots past which the table is taken to be out of cache (1 MiB).
const LARGE_SLOTS: usize = 1 << 16;
/// Smallest table, in slots.
const MIN_SLOTS: usize = 16;

#[derive(Debug, Clone, Copy)]
#[repr(align(32))]
struct Slot {
    key: u64,
    /// The only posting; or `SPILLED` in `slot`, the list's length in `field`, the
    /// offset of its block in `head` and the block's size class in `id`; or `EMPTY`.
    one: Post,
}

const VACANT: Slot = Slot {
    key: 0,
    one: Post {
        slot: EMPTY,
        field: 0,
        id: ShapeId(0),
        head: 0,
    },
};

#[derive(Debug)]
pub(super) struct Keyed {
    slots: HugeArray<Slot>,
    /// Keys present.
    len: usize,
    /// Posting lists of keys with two or more postings, each in a block of
    /// `MIN_BLOCK << class` postings; `free[class]` lists the offsets of unused blocks.
    pool: Vec<Post>,
    free: Vec<Vec<usize>>,
    /// Answers most lookups of absent keys without touching `slots`, once the table has
    /// more than `filter_from` slots (`LARGE_SLOTS`; off below, where slots are cached).
    filter: KeyFilter,
    filter_from: usize,
}

impl Default for Keyed {
    fn default() -> Keyed {
        Keyed {
            slots: HugeArray::default(),
            len: 0,
            pool: Vec::new(),
            free: Vec::new(),
            filter: KeyFilter::default(),
            filter_from: LARGE_SLOTS,
        }
    }
}

impl Keyed {
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The postings filed under `key` (empty when none).
    pub(super) fn get(&self, key: u64) -> &[Post] {
        match self.find(key) {
            Some(i) => self.postings(i),
            None => &[],
        }
    }

    /// Whether the table is past what the CPU caches hold, so that starting its misses
    /// early (see [`Keyed::prefetch`]) pays.
    pub(super) fn is_large(&self) -> bool {
        self.slots.len() > LARGE_SLOTS
    }

    /// Starts the cache miss of the line holding the home slot of `key` (and of the
    /// filter's word for it), without waiting for it. The slot's miss starts even for a
    /// key the filter would refuse: testing first would make every present key wait for
    /// the filter's word before its slot's miss began (measured slower at a million
    /// shapes). Only the home line: a lookup reads on into the next line for about a
    /// quarter of keys (see the module docs), but prefetching it for every key measured
    /// slower at a million shapes (p50 about 10 ns more), presumably because the lines a
    /// change pulls through the caches double while the next line, adjacent in memory,
    /// often arrives with the first (the hardware's adjacent-line prefetch) or stays
    /// cached.
    pub(super) fn prefetch(&self, key: u64) {
        self.filter.prefetch(key);
        if let Some(mask) = self.slots.len().checked_sub(1) {
            let home = key as usize & mask;
            prefetch(&self.slots[home]);
        }
    }

    /// For each of `keys` whose slot holds a spilled posting list, starts the cache
    /// misses of the list's first postings (two lines). Reads the slots, so it pays
    /// after [`Keyed::prefetch`] has started their misses together.
    pub(super) fn prefetch_lists(&self, keys: &[u64]) {
        for &key in keys {
            let Some(i) = self.find(key) else {
                continue;
            };
            let one = &self.slots[i].one;
            if one.slot == SPILLED {
                let (offset, len, _) = Keyed::block(one);
                prefetch(&self.pool[offset]);
                if len > 2 {
                    prefetch(&self.pool[offset + 2]);
                }
            }
        }
    }

    /// Files `item` under `key`; returns its position in the key's posting list.
    pub(super) fn push(&mut self, key: u64, item: Post) -> u32 {
        debug_assert!(item.slot < SPILLED, "shape slots stay below u32::MAX - 1");
        if let Some(i) = self.find(key) {
            let one = self.slots[i].one;
            if one.slot != SPILLED {
                let offset = self.alloc(0);
                self.pool[offset] = one;
                self.pool[offset + 1] = item;
                self.slots[i].one = Keyed::spilled(offset, 2, 0);
                return 1;
            }
            let (mut offset, len, mut class) = Keyed::block(&one);
            if len == MIN_BLOCK << class {
                let bigger = self.alloc(class + 1);
                self.pool.copy_within(offset..offset + len, bigger);
                self.release(offset, class);
                (offset, class) = (bigger, class + 1);
            }
            self.pool[offset + len] = item;
            self.slots[i].one = Keyed::spilled(offset, len + 1, class);
            return len as u32;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.filter.insert(key);
        Keyed::place(&mut self.slots, Slot { key, one: item });
        self.len += 1;
        0
    }

    /// Puts `slot`, whose key is not in `slots`, in its Robin Hood place: along its run
    /// it takes the first slot that is empty or whose key is nearer its home than the new
    /// key would be there, and the key it displaces moves on the same way.
    fn place(slots: &mut [Slot], mut slot: Slot) {
        let mask = slots.len() - 1;
        let mut i = slot.key as usize & mask;
        let mut distance = 0;
        loop {
            let here = &mut slots[i];
            if here.one.slot == EMPTY {
                *here = slot;
                return;
            }
            let theirs = Keyed::distance(here.key, i, mask);
            if theirs < distance {
                std::mem::swap(here, &mut slot);
                distance = theirs;
            }
            i = (i + 1) & mask;
            distance += 1;
        }
    }

    /// How far slot `i` lies past the home slot of `key` (cyclically).
    #[inline(always)]
    fn distance(key: u64, i: usize, mask: usize) -> usize {
        i.wrapping_sub(key as usize) & mask
    }

    /// Removes the posting at `pos` under `key` by moving the last one into its place;
    /// returns the moved posting's (slot, probe field) (now at `pos`), whose recorded
    /// position the caller must update. A key left without postings is removed.
    pub(super) fn swap_remove(&mut self, key: u64, pos: u32) -> Option<Posted> {
        let i = self.find(key)?;
        let one = self.slots[i].one;
        if one.slot != SPILLED {
            self.delete(i);
            return None;
        }
        let (offset, len, class) = Keyed::block(&one);
        let (pos, last) = (pos as usize, len - 1);
        self.pool[offset + pos] = self.pool[offset + last];
        let moved = (pos < last).then(|| {
            let p = &self.pool[offset + pos];
            (p.slot, p.field)
        });
        self.slots[i].one = if last == 1 {
            self.release(offset, class);
            self.pool[offset]
        } else {
            Keyed::spilled(offset, last, class)
        };
        moved
    }

    fn postings(&self, i: usize) -> &[Post] {
        let one = &self.slots[i].one;
        if one.slot == SPILLED {
            let (offset, len, _) = Keyed::block(one);
            &self.pool[offset..offset + len]
        } else {
            std::slice::from_ref(one)
        }
    }

    /// The offset, length and size class of a spilled slot's list.
    fn block(one: &Post) -> (usize, usize, usize) {
        (one.head as usize, one.field as usize, one.id.0 as usize)
    }

    /// The slot's `one` for a list of `len` postings in the block at `offset`.
    fn spilled(offset: usize, len: usize, class: usize) -> Post {
        Post {
            slot: SPILLED,
            field: len as u32,
            id: ShapeId(class as u64),
            head: offset as u64,
        }
    }

    /// A free block of size class `class` (`MIN_BLOCK << class` postings), taken from
    /// the free list or added at the end of the pool.
    fn alloc(&mut self, class: usize) -> usize {
        if let Some(offset) = self.free.get_mut(class).and_then(Vec::pop) {
            return offset;
        }
        let offset = self.pool.len();
        for _ in 0..MIN_BLOCK << class {
            reserve_one(&mut self.pool);
            self.pool.push(VACANT.one);
        }
        offset
    }

    fn release(&mut self, offset: usize, class: usize) {
        if self.free.len() <= class {
            self.free.resize_with(class + 1, Vec::new);
        }
        self.free[class].push(offset);
    }

    fn find(&self, key: u64) -> Option<usize> {
        if self.slots.is_empty() || !self.filter.may_hold(key) {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = key as usize & mask;
        let mut distance = 0;
        loop {
            let slot = &self.slots[i];
            if slot.one.slot == EMPTY {
                return None;
            }
            if slot.key == key {
                return Some(i);
            }
            // In Robin Hood order `key` would have taken this slot (see `place`).
            if Keyed::distance(slot.key, i, mask) < distance {
                return None;
            }
            i = (i + 1) & mask;
            distance += 1;
        }
    }

    /// Empties slot `hole`, shifting the rest of its run back by one slot up to an empty
    /// slot or a key in its home slot (no tombstones; the Robin Hood order is kept).
    fn delete(&mut self, mut hole: usize) {
        let mask = self.slots.len() - 1;
        self.len -= 1;
        loop {
            let next = (hole + 1) & mask;
            let slot = self.slots[next];
            if slot.one.slot == EMPTY || Keyed::distance(slot.key, next, mask) == 0 {
                self.slots[hole] = VACANT;
                if self.filter.removed(self.len, self.slots.len()) {
                    self.build_filter();
                }
                return;
            }
            self.slots[hole] = slot;
            hole = next;
        }
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, HugeArray::filled(size, VACANT));
        for &slot in old.iter().filter(|s| s.one.slot != EMPTY) {
            Keyed::place(&mut self.slots, slot);
        }
        self.build_filter();
    }

    /// A fresh filter of the keys present, sized to the table; none while the table has
    /// at most `filter_from` slots.
    fn build_filter(&mut self) {
        self.filter = KeyFilter::default();
        if self.slots.len() > self.filter_from {
            let mut filter = KeyFilter::sized(self.slots.len());
            for slot in self.slots.iter().filter(|s| s.one.slot != EMPTY) {
                filter.insert(slot.key);
            }
            self.filter = filter;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Checks the order lookups rely on: a key past its home slot follows an occupied
    /// slot whose key lies at least as far past its own home, less one.
    fn assert_robin_hood(keyed: &Keyed) {
        let mask = keyed.slots.len().wrapping_sub(1);
        for (i, slot) in keyed.slots.iter().enumerate() {
            let distance = Keyed::distance(slot.key, i, mask);
            if slot.one.slot == EMPTY || distance == 0 {
                continue;
            }
            let before = &keyed.slots[i.wrapping_sub(1) & mask];
            assert_ne!(before.one.slot, EMPTY, "slot {i} is cut off from its home");
            let theirs = Keyed::distance(before.key, i.wrapping_sub(1) & mask, mask);
            assert!(theirs + 1 >= distance, "slot {i} out of Robin Hood order");
        }
    }

    /// Random pushes and removals on few keys with colliding home slots (small keys,
    /// runs that wrap around the end of the table), checked against a `HashMap` of
    /// `Vec`s that swap-removes the same way.
    #[test]
    fn matches_a_hash_map_of_vectors() {
        check_against_a_hash_map(Keyed::default());
    }

    /// The same with the absent-key filter on at every size: built at each growth,
    /// kept up by inserts, rebuilt after removals, never hiding a key present.
    #[test]
    fn with_the_filter_on_matches_a_hash_map_of_vectors() {
        let keyed = check_against_a_hash_map(Keyed {
            filter_from: 0,
            ..Keyed::default()
        });
        assert!(keyed.filter.is_on());
        let absent: Vec<u64> = (1000..5000).map(spread).collect();
        let refused = absent
            .iter()
            .filter(|&&k| !keyed.filter.may_hold(k))
            .count();
        assert!(refused > absent.len() / 2, "{refused} absent keys refused");
        assert!(absent.iter().all(|&k| keyed.get(k).is_empty()));
    }

    /// Small numbers (colliding home slots in a small table) with mixed high bits, which
    /// the filter reads.
    fn spread(k: u64) -> u64 {
        k | k.wrapping_mul(0x9e37_79b9_7f4a_7c15) << 32
    }

    fn check_against_a_hash_map(mut keyed: Keyed) -> Keyed {
        let mut rng = StdRng::seed_from_u64(15);
        let mut model: HashMap<u64, Vec<Post>> = HashMap::new();
        let post = |slot: u32, field: u32| Post {
            slot,
            field,
            id: ShapeId(u64::from(slot) << 8 | u64::from(field)),
            head: u64::from(slot) * 3,
        };
        let mut next = 0u32;
        for step in 0..20_000 {
            let key = spread(match rng.gen_range(0..3) {
                0 => rng.gen_range(0..40),
                1 => rng.gen_range(0..4) * 16 + 15,
                _ => rng.gen::<u64>() % 1000,
            });
            if rng.gen_bool(0.55) {
                let pos = keyed.push(key, post(next, step % 3));
                let list = model.entry(key).or_default();
                list.push(post(next, step % 3));
                assert_eq!(pos as usize, list.len() - 1);
                next += 1;
            } else if let Some(list) = model.get_mut(&key) {
                let pos = rng.gen_range(0..list.len());
                list.swap_remove(pos);
                let moved = list.get(pos).map(|p| (p.slot, p.field));
                if list.is_empty() {
                    model.remove(&key);
                }
                assert_eq!(keyed.swap_remove(key, pos as u32), moved, "step {step}");
            } else {
                assert_eq!(keyed.swap_remove(key, 0), None);
            }
            if step % 97 == 0 {
                for k in (0..1000).map(spread) {
                    let want = model.get(&k).map_or(&[][..], |l| &l[..]);
                    assert_eq!(keyed.get(k), want, "step {step}, key {k}");
                }
                assert_eq!(keyed.len, model.len());
                assert_robin_hood(&keyed);
            }
        }
        let keys: Vec<u64> = model.keys().copied().collect();
        for key in keys {
            while keyed.swap_remove(key, 0).is_some() || !keyed.get(key).is_empty() {}
        }
        assert!(keyed.is_empty());
        let blocks: usize = (0..keyed.free.len())
            .map(|class| keyed.free[class].len() * (MIN_BLOCK << class))
            .sum();
        assert_eq!(blocks, keyed.pool.len(), "every block is free again");
        keyed
    }
}
