//! A filter in front of a large key table: a few bits per slot that say, from a cached
//! line, that a key is certainly absent, so that its lookup touches no slot at all.
//!
//! Past the caches a slot costs a main-memory miss and, under a hypervisor, a page walk.
//! About half the lookups of a change are for values no shape is filed under (a team no
//! one follows); answered here, they start no miss, and a change whose keys are all
//! absent finishes at cache speed. The filter is a register-blocked Bloom filter: a key
//! picks one 64-bit word and sets three bits in it, so a test reads one word. At four
//! bits per slot (eight or more per key at the table's load of at most one half) about
//! one absent key in twenty still reaches the table.
//!
//! No false negatives: a key's bits are set before it is placed, and stay set. Removed
//! keys leave their bits behind, so the filter is rebuilt from the table once the keys
//! removed outnumber both those it holds and a quarter of its slots (and whenever the
//! table grows).

use super::prefetch::prefetch;

/// Filter bits per table slot.
const BITS_PER_SLOT: usize = 4;

#[derive(Debug, Default)]
pub(super) struct KeyFilter {
    /// Empty when the filter is off (every key may be present).
    words: Vec<u64>,
    /// Keys removed from the table since the filter was built.
    stale: usize,
}

impl KeyFilter {
    /// An empty filter for a table of `slots` slots (a power of two); fill it with
    /// [`KeyFilter::insert`].
    pub(super) fn sized(slots: usize) -> KeyFilter {
        let words = (slots * BITS_PER_SLOT / 64).next_power_of_two();
        KeyFilter {
            words: vec![0; words],
            stale: 0,
        }
    }

    pub(super) fn is_on(&self) -> bool {
        !self.words.is_empty()
    }

    /// The word `key` tests and the bits it sets there. Keys are fully mixed 64-bit
    /// hashes (see the `key` module): the word comes from their top 24 bits and the
    /// three bit positions from 18 bits below, disjoint from them.
    #[inline(always)]
    fn spot(&self, key: u64) -> (usize, u64) {
        let word = (key >> 40) as usize & (self.words.len() - 1);
        let bits = 1 << (key >> 22 & 63) | 1 << (key >> 28 & 63) | 1 << (key >> 34 & 63);
        (word, bits)
    }

    /// Starts the cache miss of the word `key` tests.
    #[inline(always)]
    pub(super) fn prefetch(&self, key: u64) {
        if self.is_on() {
            prefetch(&self.words[self.spot(key).0]);
        }
    }

    /// Records `key` as present (a no-op when the filter is off).
    pub(super) fn insert(&mut self, key: u64) {
        if self.is_on() {
            let (word, bits) = self.spot(key);
            self.words[word] |= bits;
        }
    }

    /// False only when `key` is certainly not in the table; always true when off.
    #[inline(always)]
    pub(super) fn may_hold(&self, key: u64) -> bool {
        if !self.is_on() {
            return true;
        }
        let (word, bits) = self.spot(key);
        self.words[word] & bits == bits
    }

    /// Counts a key removed from a table of `slots` slots that still holds `len` keys;
    /// true when the filter should be rebuilt: its stale keys outnumber the live ones
    /// and a quarter of the slots (so that a rebuild, which reads every slot, costs
    /// O(1) per removal).
    pub(super) fn removed(&mut self, len: usize, slots: usize) -> bool {
        self.stale += 1;
        self.is_on() && self.stale > len.max(slots / 4)
    }

    /// Bits set, of all (for tests: the filter's load).
    #[cfg(test)]
    pub(super) fn load(&self) -> f64 {
        let set: u32 = self.words.iter().map(|w| w.count_ones()).sum();
        f64::from(set) / (self.words.len() * 64) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::key::eq_key;
    use crate::value::Value;

    /// The matcher's own key of the integer `i` in column 0.
    fn mixed(i: u64) -> u64 {
        eq_key(0, &Value::Integer(i as i64)).expect("an integer has a key")
    }

    /// Every inserted key is held; absent keys are refused at about the designed rate
    /// when the table is at its highest load (one key per two slots).
    #[test]
    fn holds_every_key_and_refuses_most_others() {
        let slots = 1 << 16;
        let mut filter = KeyFilter::sized(slots);
        assert!(filter.is_on());
        for i in 0..slots as u64 / 2 {
            filter.insert(mixed(i));
        }
        assert!((0..slots as u64 / 2).all(|i| filter.may_hold(mixed(i))));
        let absent = slots as u64 / 2..slots as u64 * 4;
        let passed = absent
            .clone()
            .filter(|&i| filter.may_hold(mixed(i)))
            .count();
        let rate = passed as f64 / (absent.end - absent.start) as f64;
        assert!(rate < 0.10, "false positive rate {rate}");
        assert!(filter.load() < 0.5, "load {}", filter.load());
    }

    #[test]
    fn an_off_filter_holds_everything_and_never_asks_for_a_rebuild() {
        let mut filter = KeyFilter::default();
        filter.insert(7);
        assert!(filter.may_hold(7) && filter.may_hold(8));
        assert!((0..10_000).all(|_| !filter.removed(0, 1 << 20)));
    }

    #[test]
    fn a_rebuild_is_due_once_the_stale_keys_outnumber_the_live_ones_and_a_quarter() {
        let mut filter = KeyFilter::sized(1 << 12);
        let due = (0..5000).position(|_| filter.removed(2000, 1 << 12));
        assert_eq!(due, Some(2000), "the 2001st removal with 2000 keys left");
        let mut filter = KeyFilter::sized(1 << 12);
        let due = (0..5000).position(|_| filter.removed(10, 1 << 12));
        assert_eq!(
            due,
            Some(1024),
            "the 1025th removal from a table of 4096 slots"
        );
    }
}
