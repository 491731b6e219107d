//! The encoding of one row of the change log: a chunk of consecutive changes in one blob.
//!
//! A chunk starts with a format byte, then (postcard) the tables its changes touch, each
//! with the position of its primary key, and the clients that wrote them; then one entry
//! per change, in log order, each naming its table and client by position in those
//! lists:
//!
//! - its sync id, as the distance from the chunk's first;
//! - its table, its kind, its old and new row images;
//! - its key only when it is not the image's primary key column (never, for the changes
//!   the store writes);
//! - its origin: the client's position and the client's sequence number.
//!
//! So the table name and the client id are stored once per chunk instead of once per
//! change, and the key once (inside the image) instead of twice. A chunk holds at most
//! [`MAX_NAMES`] tables and clients and is closed once its entries reach
//! [`CHUNK_BYTES`], so it stays a few pages long and a reader holds one at a time.

use serde::{Deserialize, Serialize};

use crate::store::types::{kind_code, kind_from_code};
use crate::store::StoreError;
use crate::value::Value;
use crate::vocab::{Change, ClientId, SyncId};

/// The format byte of a chunk.
const FORMAT: u8 = 1;

/// Entry bytes after which a chunk is closed: it then holds at most this plus one entry.
pub(crate) const CHUNK_BYTES: usize = 16 * 1024;

/// Entry bytes reserved at a writer's first change.
const FIRST_RESERVE: usize = 512;

/// Tables, and clients, one chunk names at most: finding one is a short scan.
const MAX_NAMES: usize = 64;

/// One change as written: borrowed from it.
#[derive(Serialize)]
struct EntryRef<'a> {
    delta: u64,
    table: u32,
    kind: u8,
    key: Option<&'a Value>,
    old: Option<&'a [Value]>,
    new: Option<&'a [Value]>,
    origin: Option<(u32, u64)>,
}

/// One change as read; the same fields as [`EntryRef`].
#[derive(Deserialize)]
struct Entry {
    delta: u64,
    table: u32,
    kind: u8,
    key: Option<Value>,
    old: Option<Vec<Value>>,
    new: Option<Vec<Value>>,
    origin: Option<(u32, u64)>,
}

/// The lists an entry refers to by position: `(table, position of its primary key)`
/// and client ids.
#[derive(Serialize, Deserialize, Default)]
struct Names {
    tables: Vec<(String, u32)>,
    clients: Vec<String>,
}

/// Builds chunks, one at a time; reused from one to the next.
#[derive(Default)]
pub(crate) struct ChunkWriter {
    names: Names,
    entries: Vec<u8>,
    first: Option<SyncId>,
    last: SyncId,
    count: u64,
    /// The whole chunk, once finished.
    blob: Vec<u8>,
}

/// A finished chunk: what one row of the log holds.
pub(crate) struct Chunk<'a> {
    pub(crate) first: SyncId,
    pub(crate) last: SyncId,
    pub(crate) count: u64,
    pub(crate) blob: &'a [u8],
}

impl ChunkWriter {
    /// Whether the chunk holds no change.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the chunk should be finished before another change is added.
    pub(crate) fn is_full(&self) -> bool {
        self.entries.len() >= CHUNK_BYTES
    }

    /// Whether `change` can join this chunk: it is empty, or not full, the change comes
    /// after its last one, and its table and client are named or there is room to.
    pub(crate) fn takes(&self, change: &Change) -> bool {
        if self.is_empty() {
            return true;
        }
        let named = |len: usize, known: bool| known || len < MAX_NAMES;
        !self.is_full()
            && change.sync_id >= self.last
            && named(
                self.names.tables.len(),
                self.names.tables.iter().any(|(t, _)| *t == change.table),
            )
            && change.origin.as_ref().is_none_or(|(client, _)| {
                named(
                    self.names.clients.len(),
                    self.names.clients.contains(&client.0),
                )
            })
    }

    /// Adds `change`, which the chunk [`takes`](Self::takes). `pk` gives the position
    /// of a table's primary key column (asked once per chunk and table; any position
    /// will do, the key is then stored apart when the image disagrees).
    pub(crate) fn push(
        &mut self,
        change: &Change,
        pk: impl FnOnce(&str) -> usize,
    ) -> Result<(), StoreError> {
        if self.entries.capacity() == 0 {
            // One allocation for a small batch's chunk, instead of growing from a few
            // bytes.
            self.entries.reserve(FIRST_RESERVE);
        }
        let first = *self.first.get_or_insert(change.sync_id);
        // The last name is tried first: consecutive changes mostly share a table and a
        // client.
        let table = match self
            .names
            .tables
            .iter()
            .rposition(|(t, _)| *t == change.table)
        {
            Some(at) => at,
            None => {
                let pk = u32::try_from(pk(&change.table)).unwrap_or(u32::MAX);
                self.names.tables.push((change.table.clone(), pk));
                self.names.tables.len() - 1
            }
        };
        let pk = self.names.tables[table].1 as usize;
        let origin = match &change.origin {
            Some((client, seq)) => {
                let at = match self.names.clients.iter().rposition(|c| *c == client.0) {
                    Some(at) => at,
                    None => {
                        self.names.clients.push(client.0.clone());
                        self.names.clients.len() - 1
                    }
                };
                Some((at as u32, *seq))
            }
            None => None,
        };
        let image = change.new.as_ref().or(change.old.as_ref());
        let key_in_image = image.and_then(|row| row.get(pk)) == Some(&change.key);
        let entry = EntryRef {
            delta: change.sync_id.0 - first.0,
            table: table as u32,
            kind: kind_code(change.kind) as u8,
            key: (!key_in_image).then_some(&change.key),
            old: change.old.as_deref(),
            new: change.new.as_deref(),
            origin,
        };
        self.entries = postcard::to_extend(&entry, std::mem::take(&mut self.entries))?;
        self.last = change.sync_id;
        self.count += 1;
        Ok(())
    }

    /// Finishes the chunk; the writer is empty again once the returned chunk is dropped
    /// and [`clear`](Self::clear) is called. `None` when it holds no change.
    pub(crate) fn finish(&mut self) -> Result<Option<Chunk<'_>>, StoreError> {
        let Some(first) = self.first else {
            return Ok(None);
        };
        self.blob.clear();
        let names: usize = self
            .names
            .tables
            .iter()
            .map(|(t, _)| t.len() + 6)
            .sum::<usize>()
            + self
                .names
                .clients
                .iter()
                .map(|c| c.len() + 1)
                .sum::<usize>();
        self.blob.reserve(self.entries.len() + names + 8);
        self.blob.push(FORMAT);
        self.blob = postcard::to_extend(&self.names, std::mem::take(&mut self.blob))?;
        self.blob.extend_from_slice(&self.entries);
        Ok(Some(Chunk {
            first,
            last: self.last,
            count: self.count,
            blob: &self.blob,
        }))
    }

    /// Empties the writer for the next chunk.
    pub(crate) fn clear(&mut self) {
        self.names.tables.clear();
        self.names.clients.clear();
        self.entries.clear();
        self.first = None;
        self.last = SyncId(0);
        self.count = 0;
    }
}

/// Calls `f` with each change of the chunk `blob`, whose first change has sync id
/// `first`, in order, until it breaks (returns false).
pub(crate) fn read_chunk(
    first: SyncId,
    blob: &[u8],
    mut f: impl FnMut(Change) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("change log chunk at {first}: {what}"));
    let Some((&format, rest)) = blob.split_first() else {
        return Err(corrupt("empty"));
    };
    if format != FORMAT {
        return Err(corrupt(&format!("unknown format {format}")));
    }
    let (names, mut rest): (Names, &[u8]) = postcard::take_from_bytes(rest)?;
    while !rest.is_empty() {
        let (entry, tail): (Entry, &[u8]) = postcard::take_from_bytes(rest)?;
        rest = tail;
        let (table, pk) = names
            .tables
            .get(entry.table as usize)
            .ok_or_else(|| corrupt("unknown table"))?;
        let kind = kind_from_code(i64::from(entry.kind))
            .ok_or_else(|| corrupt(&format!("unknown change kind {}", entry.kind)))?;
        let key = match entry.key {
            Some(key) => key,
            None => entry
                .new
                .as_ref()
                .or(entry.old.as_ref())
                .and_then(|row| row.get(*pk as usize))
                .cloned()
                .ok_or_else(|| corrupt("a change without its key"))?,
        };
        let origin = match entry.origin {
            Some((client, seq)) => {
                let client = names
                    .clients
                    .get(client as usize)
                    .ok_or_else(|| corrupt("unknown client"))?;
                Some((ClientId(client.clone()), seq))
            }
            None => None,
        };
        let sync_id = first
            .0
            .checked_add(entry.delta)
            .ok_or_else(|| corrupt("sync id out of range"))?;
        let change = Change {
            sync_id: SyncId(sync_id),
            table: table.clone(),
            key,
            kind,
            old: entry.old,
            new: entry.new,
            origin,
        };
        if !f(change)? {
            break;
        }
    }
    Ok(())
}
