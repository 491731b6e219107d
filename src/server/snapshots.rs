//! The snapshot cache: when many sessions subscribe to one shape at one sync id (a
//! reconnect storm), the store is read once and the encoded snapshot frames are shared.
//!
//! An entry is keyed by the shape's id (permission rule and projection included) and the
//! store's head as its first subscriber saw it after registering. That subscriber spawns
//! the fill: one exact count and one snapshot read, encoded as the `Row` and `Progress`
//! frames every subscriber sends, in chunks of [`CHUNK_BYTES`] (`Bytes`, written to
//! every stream without a copy). Later subscribers that see the same head wait for the
//! fill and share it; once a commit moves the head, new subscribers get a new entry (a
//! new read), so no one is served a snapshot older than their registration.
//!
//! Bounded: a snapshot of more than [`MAX_CACHED_SNAPSHOT_ROWS`] rows or
//! [`MAX_CACHED_SNAPSHOT_BYTES`] encoded bytes is not cached (its subscribers each stream
//! their own read, as without the cache), and the cache keeps at most
//! [`SNAPSHOT_CACHE_ENTRIES`] entries and [`SNAPSHOT_CACHE_BYTES`] bytes, dropping the
//! oldest first and any entry whose head the store has passed.
//!
//! Server-internal: reads through the [`Store`] trait only.

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use crate::ids::SyncId;
use crate::query::{Shape, ShapeId};
use crate::store::Store;
use crate::wire::{encode, BootstrapFrame, PROGRESS_EVERY};

/// Entries kept at most (filling or filled).
pub const SNAPSHOT_CACHE_ENTRIES: usize = 64;
/// Encoded bytes kept at most, all entries together.
pub const SNAPSHOT_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Largest snapshot cached, in encoded bytes; a larger one is streamed per subscriber.
pub const MAX_CACHED_SNAPSHOT_BYTES: usize = 16 * 1024 * 1024;
/// Largest snapshot cached, in rows (checked on the exact count, before reading rows).
pub const MAX_CACHED_SNAPSHOT_ROWS: u64 = 100_000;
/// Encoded frames are gathered into chunks of about this many bytes.
pub const CHUNK_BYTES: usize = 64 * 1024;

type Key = (ShapeId, SyncId);

/// A snapshot read once, encoded for every subscriber.
#[derive(Debug)]
pub struct Filled {
    /// The exact row count, sent as the estimate.
    pub estimate: u64,
    /// `Row` frames with a `Progress` frame after every [`PROGRESS_EVERY`] rows.
    pub chunks: Vec<Bytes>,
    /// Rows in `chunks`.
    pub rows: u64,
    /// The sync id the snapshot was read at.
    pub sync_id: SyncId,
}

impl Filled {
    fn bytes(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
}

/// Where an entry stands.
#[derive(Debug, Clone)]
pub enum Fill {
    /// Being read.
    Pending,
    /// Read and encoded.
    Ready(Arc<Filled>),
    /// Too large to cache, or the read failed: each subscriber reads on its own (with
    /// the row count, when it was read).
    Uncached(Option<u64>),
}

/// One cached snapshot; subscribers wait on it with [`Entry::ready`].
#[derive(Debug)]
pub struct Entry {
    state: watch::Sender<Fill>,
}

impl Entry {
    /// Waits until the fill is over; `Err` when the subscriber must read on its own,
    /// with the shape's row count when the fill read it.
    pub async fn ready(&self) -> Result<Arc<Filled>, Option<u64>> {
        let mut rx = self.state.subscribe();
        let fill = rx
            .wait_for(|f| !matches!(f, Fill::Pending))
            .await
            .map(|f| f.clone());
        match fill {
            Ok(Fill::Ready(filled)) => Ok(filled),
            Ok(Fill::Uncached(estimate)) => Err(estimate),
            _ => Err(None),
        }
    }
}

/// The cache; see the module docs.
#[derive(Debug, Default)]
pub struct SnapshotCache {
    /// std Mutex: held for a map lookup, insert or eviction, never across an await or a
    /// store read.
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Key, Arc<Entry>>,
    /// Keys, oldest first.
    order: VecDeque<Key>,
    /// Encoded bytes of the filled entries in `entries`.
    bytes: usize,
}

impl SnapshotCache {
    /// The entry of `shape` at `head`; true when it is new and the caller must run
    /// [`fill`] and hand the result to [`SnapshotCache::finish`].
    pub fn join(&self, shape: ShapeId, head: SyncId) -> (Arc<Entry>, bool) {
        let mut inner = self.inner.lock().expect("snapshot cache lock");
        let key = (shape, head);
        if let Some(entry) = inner.entries.get(&key) {
            return (entry.clone(), false);
        }
        let entry = Arc::new(Entry {
            state: watch::channel(Fill::Pending).0,
        });
        inner.entries.insert(key, entry.clone());
        inner.order.push_back(key);
        inner.evict(head);
        (entry, true)
    }

    /// Publishes the fill of the entry of `shape` at `head` to its waiting subscribers
    /// and accounts for its bytes (the entry is dropped at once if it no longer fits).
    pub fn finish(&self, shape: ShapeId, head: SyncId, entry: &Entry, fill: Fill) {
        let mut inner = self.inner.lock().expect("snapshot cache lock");
        let key = (shape, head);
        let current = inner
            .entries
            .get(&key)
            .is_some_and(|e| std::ptr::eq(Arc::as_ptr(e), entry));
        match &fill {
            Fill::Ready(filled) if current => inner.bytes += filled.bytes(),
            _ if current => {
                inner.entries.remove(&key);
                inner.order.retain(|k| *k != key);
            }
            _ => {}
        }
        entry.state.send_replace(fill);
        inner.evict(head);
    }

    /// Entries kept now, and their encoded bytes.
    #[cfg(test)]
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock().expect("snapshot cache lock");
        (inner.entries.len(), inner.bytes)
    }
}

impl Inner {
    /// Drops entries of heads before `head` (no new subscriber can ask for them), then
    /// the oldest while over a bound. Subscribers already waiting keep their `Arc`.
    fn evict(&mut self, head: SyncId) {
        let stale: Vec<Key> = self.order.iter().filter(|k| k.1 < head).copied().collect();
        for key in stale {
            self.drop_key(key);
        }
        while self.order.len() > SNAPSHOT_CACHE_ENTRIES || self.bytes > SNAPSHOT_CACHE_BYTES {
            let Some(key) = self.order.front().copied() else {
                break;
            };
            self.drop_key(key);
        }
    }

    fn drop_key(&mut self, key: Key) {
        self.order.retain(|k| *k != key);
        if let Some(entry) = self.entries.remove(&key) {
            if let Fill::Ready(filled) = &*entry.state.borrow() {
                self.bytes -= filled.bytes();
            }
        }
    }
}

/// Runs on a blocking thread: counts the shape's rows, then reads and encodes its
/// snapshot, calling `reading` just before the snapshot read; [`Fill::Uncached`] when it
/// is too large or a read fails (each subscriber then reads on its own and reports the
/// failure itself).
pub fn fill(store: &dyn Store, shape: &Shape, reading: impl FnOnce()) -> Fill {
    let Ok(estimate) = store.count_estimate(shape) else {
        return Fill::Uncached(None);
    };
    if estimate > MAX_CACHED_SNAPSHOT_ROWS {
        return Fill::Uncached(Some(estimate));
    }
    reading();
    let pk = shape.table().pk;
    let mut chunks = Vec::new();
    let mut buf = Vec::with_capacity(CHUNK_BYTES);
    let (mut rows, mut total, mut failed) = (0u64, 0usize, false);
    let mut on_row = |row: Vec<crate::value::Value>| {
        let frame = BootstrapFrame::Row {
            key: row[pk].clone(),
            row: shape.project(&row),
        };
        rows += 1;
        let mut encoded = encode(&frame, &mut buf);
        if encoded.is_ok() && rows.is_multiple_of(PROGRESS_EVERY) {
            encoded = encode(&BootstrapFrame::Progress { sent: rows }, &mut buf);
        }
        if encoded.is_err() || total + buf.len() > MAX_CACHED_SNAPSHOT_BYTES {
            failed = true;
            return ControlFlow::Break(());
        }
        if buf.len() >= CHUNK_BYTES {
            total += buf.len();
            chunks.push(Bytes::from(std::mem::replace(
                &mut buf,
                Vec::with_capacity(CHUNK_BYTES),
            )));
        }
        ControlFlow::Continue(())
    };
    let read = store.snapshot(shape, &mut on_row);
    match read {
        Ok(sync_id) if !failed => {
            if !buf.is_empty() {
                chunks.push(Bytes::from(buf));
            }
            Fill::Ready(Arc::new(Filled {
                estimate,
                chunks,
                rows,
                sync_id,
            }))
        }
        _ => Fill::Uncached(Some(estimate)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(rows: u64, bytes: usize) -> Fill {
        Fill::Ready(Arc::new(Filled {
            estimate: rows,
            chunks: vec![Bytes::from(vec![0u8; bytes])],
            rows,
            sync_id: SyncId(1),
        }))
    }

    #[test]
    fn one_entry_per_shape_and_head_until_the_head_moves() {
        let cache = SnapshotCache::default();
        let (a, fill_a) = cache.join(ShapeId(1), SyncId(5));
        let (b, fill_b) = cache.join(ShapeId(1), SyncId(5));
        assert!(fill_a && !fill_b);
        assert!(Arc::ptr_eq(&a, &b));
        let (_, other_shape) = cache.join(ShapeId(2), SyncId(5));
        assert!(other_shape);
        cache.finish(ShapeId(1), SyncId(5), &a, ready(3, 100));
        assert_eq!(cache.usage(), (2, 100));
        let (c, fill_c) = cache.join(ShapeId(1), SyncId(6));
        assert!(fill_c && !Arc::ptr_eq(&a, &c));
        // Entries at head 5 are gone: nobody can ask for them any more.
        assert_eq!(cache.usage(), (1, 0));
    }

    #[test]
    fn uncached_fills_leave_no_entry_and_bounds_hold() {
        let cache = SnapshotCache::default();
        let (a, _) = cache.join(ShapeId(1), SyncId(1));
        cache.finish(ShapeId(1), SyncId(1), &a, Fill::Uncached(None));
        assert_eq!(cache.usage(), (0, 0));
        let (_, again) = cache.join(ShapeId(1), SyncId(1));
        assert!(again);
        for i in 0..(SNAPSHOT_CACHE_ENTRIES as u64 + 10) {
            let (e, _) = cache.join(ShapeId(100 + i), SyncId(1));
            cache.finish(ShapeId(100 + i), SyncId(1), &e, ready(1, 2 * 1024 * 1024));
        }
        let (entries, bytes) = cache.usage();
        assert!(entries <= SNAPSHOT_CACHE_ENTRIES);
        assert!(bytes <= SNAPSHOT_CACHE_BYTES);
    }
}
