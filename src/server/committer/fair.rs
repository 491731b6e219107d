//! Requests waiting for the writer, served in turn per writer: one client flooding the
//! queue delays another client's transaction by at most one of its own per batch, not by
//! everything it queued first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Items in lanes by key, taken one per lane in turn, each lane in its own order.
pub struct FairQueue<K, T> {
    lanes: HashMap<K, VecDeque<T>>,
    /// Keys of the non-empty lanes, in turn order.
    turns: VecDeque<K>,
    len: usize,
}

impl<K: Hash + Eq + Clone, T> Default for FairQueue<K, T> {
    fn default() -> Self {
        FairQueue {
            lanes: HashMap::new(),
            turns: VecDeque::new(),
            len: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, T> FairQueue<K, T> {
    /// Queues `item` at the end of `key`'s lane.
    pub fn push(&mut self, key: K, item: T) {
        let lane = self.lanes.entry(key.clone()).or_default();
        if lane.is_empty() {
            self.turns.push_back(key);
        }
        lane.push_back(item);
        self.len += 1;
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `max` items: the first of each lane in turn, round after round.
    pub fn take(&mut self, max: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(max.min(self.len));
        while out.len() < max {
            let Some(key) = self.turns.pop_front() else {
                break;
            };
            let Some(lane) = self.lanes.get_mut(&key) else {
                continue;
            };
            if let Some(item) = lane.pop_front() {
                out.push(item);
                self.len -= 1;
            }
            if lane.is_empty() {
                self.lanes.remove(&key);
            } else {
                self.turns.push_back(key);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_writer_does_not_starve_another() {
        let mut q = FairQueue::default();
        for i in 0..1000 {
            q.push("flood", i);
        }
        q.push("other", 5000);
        let batch = q.take(4);
        assert_eq!(
            batch,
            [0, 5000, 1, 2],
            "the late writer goes in the first batch"
        );
        assert_eq!(q.len(), 997);
    }

    #[test]
    fn each_lane_keeps_its_order_and_everything_comes_out_once() {
        let mut q = FairQueue::default();
        for i in 0..10 {
            q.push(i % 3, i);
        }
        let mut out = Vec::new();
        while !q.is_empty() {
            out.extend(q.take(4));
        }
        assert_eq!(out.len(), 10);
        for lane in 0..3 {
            let mine: Vec<i32> = out.iter().copied().filter(|i| i % 3 == lane).collect();
            let mut sorted = mine.clone();
            sorted.sort();
            assert_eq!(mine, sorted, "lane {lane} in order");
        }
        assert!(q.take(4).is_empty());
    }
}
