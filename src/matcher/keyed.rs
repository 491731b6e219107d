//! The equality and prefix index of one table: index key -> posting list, as a flat
//! open-addressing table (linear probing, backward-shift deletion, no tombstones).
//!
//! A slot is 32 bytes (two to a cache line), the key and either the key's only posting
//! inline or the number of a spilled list, so a lookup at a million keys costs about one
//! cache miss (a general hash map touches its control bytes, then a 40-byte bucket, then
//! for most keys is done; here the bucket is the only line touched). A posting carries
//! what an exact hit is decided from (see the `exact` module), so such a hit needs no
//! other line. Keys are already well-mixed 64-bit
//! hashes (see the `key` module), so their low bits pick the home slot.

use super::exact::Post;
use super::huge::{filled, reserve_one};
use super::posting::Posted;
use super::prefetch::prefetch;
use crate::query::ShapeId;

/// Marks an unused slot (`one.slot`); a real shape slot is never `u32::MAX`.
const EMPTY: u32 = u32::MAX;
/// Marks a slot whose postings live in `lists[one.field]` (`one.slot`).
const SPILLED: u32 = u32::MAX - 1;
/// Slots past which the table is taken to be out of cache (1 MiB).
const LARGE_SLOTS: usize = 1 << 16;
/// Smallest table, in slots.
const MIN_SLOTS: usize = 16;

#[derive(Debug, Clone, Copy)]
#[repr(align(32))]
struct Slot {
    key: u64,
    /// The only posting, or `SPILLED` and the list number in `field`, or `EMPTY`.
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

#[derive(Debug, Default)]
pub(super) struct Keyed {
    slots: Vec<Slot>,
    /// Keys present.
    len: usize,
    /// Posting lists of keys with two or more postings; `free` lists unused numbers.
    lists: Vec<Vec<Post>>,
    free: Vec<u32>,
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

    /// Starts the cache misses of the home slot of `key` and of the slot after it
    /// (where a lookup goes on when the home slot holds another key, or none when it is
    /// empty: half the time at the table's load), without waiting for them. The two
    /// share a cache line when the home slot is the first of its line.
    pub(super) fn prefetch(&self, key: u64) {
        if let Some(mask) = self.slots.len().checked_sub(1) {
            let home = key as usize & mask;
            prefetch(&self.slots[home]);
            if home % 2 == 1 {
                prefetch(&self.slots[(home + 1) & mask]);
            }
        }
    }

    /// For each of `keys` whose home slot holds a spilled posting list, starts the cache
    /// misses behind the slot: the list's header, then its first postings. Reads the
    /// slots, so it pays after [`Keyed::prefetch`] has started their misses together.
    pub(super) fn prefetch_lists(&self, keys: &[u64]) {
        let Some(mask) = self.slots.len().checked_sub(1) else {
            return;
        };
        let spilled = |key: u64| {
            let slot = &self.slots[key as usize & mask];
            (slot.one.slot == SPILLED && slot.key == key)
                .then(|| &self.lists[slot.one.field as usize])
        };
        for &key in keys {
            if let Some(list) = spilled(key) {
                prefetch(list);
            }
        }
        for &key in keys {
            if let Some(first) = spilled(key).and_then(|list| list.first()) {
                prefetch(first);
            }
        }
    }

    /// Files `item` under `key`; returns its position in the key's posting list.
    pub(super) fn push(&mut self, key: u64, item: Post) -> u32 {
        debug_assert!(item.slot < SPILLED, "shape slots stay below u32::MAX - 1");
        if let Some(i) = self.find(key) {
            let one = self.slots[i].one;
            if one.slot == SPILLED {
                let list = &mut self.lists[one.field as usize];
                list.push(item);
                return (list.len() - 1) as u32;
            }
            let list = vec![one, item];
            let number = match self.free.pop() {
                Some(n) => {
                    self.lists[n as usize] = list;
                    n
                }
                None => {
                    reserve_one(&mut self.lists);
                    self.lists.push(list);
                    (self.lists.len() - 1) as u32
                }
            };
            self.slots[i].one = Post {
                slot: SPILLED,
                field: number,
                ..VACANT.one
            };
            return 1;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = key as usize & mask;
        while self.slots[i].one.slot != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = Slot { key, one: item };
        self.len += 1;
        0
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
        let list = &mut self.lists[one.field as usize];
        let pos = pos as usize;
        list.swap_remove(pos);
        let moved = list.get(pos).map(|p| (p.slot, p.field));
        if let [only] = list[..] {
            self.lists[one.field as usize] = Vec::new();
            self.free.push(one.field);
            self.slots[i].one = only;
        }
        moved
    }

    fn postings(&self, i: usize) -> &[Post] {
        let one = &self.slots[i].one;
        if one.slot == SPILLED {
            &self.lists[one.field as usize]
        } else {
            std::slice::from_ref(one)
        }
    }

    fn find(&self, key: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = key as usize & mask;
        loop {
            let slot = &self.slots[i];
            if slot.one.slot == EMPTY {
                return None;
            }
            if slot.key == key {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Empties slot `i`, shifting later members of its probe run back (no tombstones).
    fn delete(&mut self, mut hole: usize) {
        let mask = self.slots.len() - 1;
        self.slots[hole] = VACANT;
        self.len -= 1;
        let mut i = hole;
        loop {
            i = (i + 1) & mask;
            let slot = self.slots[i];
            if slot.one.slot == EMPTY {
                return;
            }
            let home = slot.key as usize & mask;
            // The slot may move into the hole unless its home lies cyclically in (hole, i].
            let stays = if hole <= i {
                hole < home && home <= i
            } else {
                hole < home || home <= i
            };
            if !stays {
                self.slots[hole] = slot;
                self.slots[i] = VACANT;
                hole = i;
            }
        }
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, filled(size, VACANT));
        let mask = size - 1;
        for slot in old.into_iter().filter(|s| s.one.slot != EMPTY) {
            let mut i = slot.key as usize & mask;
            while self.slots[i].one.slot != EMPTY {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Random pushes and removals on few keys with colliding home slots (small keys,
    /// runs that wrap around the end of the table), checked against a `HashMap` of
    /// `Vec`s that swap-removes the same way.
    #[test]
    fn matches_a_hash_map_of_vectors() {
        let mut rng = StdRng::seed_from_u64(15);
        let mut keyed = Keyed::default();
        let mut model: HashMap<u64, Vec<Post>> = HashMap::new();
        let post = |slot: u32, field: u32| Post {
            slot,
            field,
            id: ShapeId(u64::from(slot) << 8 | u64::from(field)),
            head: u64::from(slot) * 3,
        };
        let mut next = 0u32;
        for step in 0..20_000 {
            let key = match rng.gen_range(0..3) {
                0 => rng.gen_range(0..40),
                1 => rng.gen_range(0..4) * 16 + 15,
                _ => rng.gen::<u64>() % 1000,
            };
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
                for k in 0..1000 {
                    let want = model.get(&k).map_or(&[][..], |l| &l[..]);
                    assert_eq!(keyed.get(k), want, "step {step}, key {k}");
                }
                assert_eq!(keyed.len, model.len());
            }
        }
        let keys: Vec<u64> = model.keys().copied().collect();
        for key in keys {
            while keyed.swap_remove(key, 0).is_some() || !keyed.get(key).is_empty() {}
        }
        assert!(keyed.is_empty());
    }
}
