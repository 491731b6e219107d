//! The change log: `_sluice_log`, one row per chunk of consecutive changes.
//!
//! A row holds the sync ids of its first and last change, how many changes it holds,
//! and the changes themselves in one blob ([`chunk`]): a batch of 1,000 transactions
//! writes a few rows, not 1,000, and each change stores its table and client by
//! position in a list the chunk keeps once.
//!
//! The log has no index on its sync ids: chunks are appended in log order (each batch
//! after the head) and SQLite gives each new row the rowid after the largest, so rowid
//! order is log order, and compaction deletes only from the front (rewriting the first
//! chunk it keeps when that one starts at or below the horizon). Where a read or a
//! compaction starts is found by a binary search on the rowid, a few B-tree seeks,
//! instead of one more index entry per chunk.
//!
//! `_sluice_gaps` holds the gaps a replica's resynchronisation leaves ([`record_gap`]):
//! its one transaction carries the net difference from the old head to the new state, so
//! a read from a cut strictly inside is answered [`LogRead::Compacted`] like one from
//! below the horizon. Compaction forgets the gaps it passes.

use std::ops::ControlFlow;

use rusqlite::{params, Connection, OptionalExtension};

use crate::schema::Schema;
use crate::store::types::LogRead;
use crate::store::StoreError;
use crate::vocab::{Change, SyncId};
pub(crate) use chunk::ChunkWriter;

mod chunk;
mod migrate;
pub(super) use migrate::migrate_log;

/// The log's table.
const DDL: &str = "
CREATE TABLE IF NOT EXISTS _sluice_log (
    first_sync_id INTEGER NOT NULL,
    last_sync_id INTEGER NOT NULL,
    changes INTEGER NOT NULL,
    entries BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS _sluice_gaps (
    after INTEGER NOT NULL,
    through INTEGER PRIMARY KEY
);
";

/// Records that the changes in `(after, through)` are folded into the transaction at
/// `through` (a resynchronisation): no read may start strictly between the two.
pub(super) fn record_gap(
    conn: &Connection,
    after: SyncId,
    through: SyncId,
) -> Result<(), StoreError> {
    if after.0.saturating_add(1) < through.0 {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO _sluice_gaps (after, through) VALUES (?1, ?2)",
        )?
        .execute(params![after, through])?;
    }
    Ok(())
}

/// A rowid from which the log's chunks with a change above `after` start: every chunk at
/// or past it ends above `after`, every chunk before it does not. `None` when no change
/// is above `after`.
pub(super) fn start_after(conn: &Connection, after: SyncId) -> Result<Option<i64>, StoreError> {
    let bounds: (Option<i64>, Option<i64>) = conn
        .prepare_cached("SELECT min(rowid), max(rowid) FROM _sluice_log")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (Some(mut low), Some(mut high)) = bounds else {
        return Ok(None);
    };
    let mut last_at = conn.prepare_cached(
        "SELECT last_sync_id FROM _sluice_log WHERE rowid >= ?1 ORDER BY rowid LIMIT 1",
    )?;
    // The last sync id of the first chunk at or past a rowid never decreases with it.
    let mut above = |rowid: i64| -> Result<bool, StoreError> {
        let last: Option<SyncId> = last_at.query_row([rowid], |r| r.get(0)).optional()?;
        Ok(last.is_some_and(|s| s > after))
    };
    if !above(high)? {
        return Ok(None);
    }
    while low < high {
        let middle = low + (high - low) / 2;
        if above(middle)? {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    Ok(Some(low))
}

/// Appends `changes`, in log order after every change already logged, as chunks built
/// with `writer` (empty, and left empty). `pk` gives the position of a table's primary
/// key column.
pub(crate) fn append<'c>(
    conn: &Connection,
    writer: &mut ChunkWriter,
    changes: impl IntoIterator<Item = &'c Change>,
    pk: &dyn Fn(&str) -> usize,
) -> Result<(), StoreError> {
    for change in changes {
        if !writer.takes(change) {
            flush(conn, writer)?;
        }
        writer.push(change, pk)?;
    }
    flush(conn, writer)
}

/// Writes the writer's chunk, if any, and empties it.
fn flush(conn: &Connection, writer: &mut ChunkWriter) -> Result<(), StoreError> {
    if let Some(chunk) = writer.finish()? {
        conn.prepare_cached(
            "INSERT INTO _sluice_log (first_sync_id, last_sync_id, changes, entries) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            chunk.first,
            chunk.last,
            chunk.count as i64,
            chunk.blob
        ])?;
    }
    writer.clear();
    Ok(())
}

/// The position of each table's primary key column in `schema`; past any row for a
/// table it does not have (the key is then stored apart).
pub(crate) fn schema_pk(schema: &Schema) -> impl Fn(&str) -> usize + '_ {
    |table| schema.table(table).map_or(usize::MAX, |t| t.pk)
}

/// Reads the changes after `after` up to `head` in `conn`'s current transaction; see
/// [`crate::store::Store::read_log`]. `horizon` is the log's.
pub(super) fn read(
    conn: &Connection,
    after: SyncId,
    head: SyncId,
    horizon: SyncId,
    f: &mut dyn FnMut(Change) -> ControlFlow<()>,
) -> Result<LogRead, StoreError> {
    if after < horizon {
        return Ok(LogRead::Compacted { horizon });
    }
    // A cut inside a resynchronisation's gap: the log cannot bring it to the state after
    // the gap (rows that came and went inside it are in no change).
    let gap: Option<SyncId> = conn
        .prepare_cached("SELECT max(through) FROM _sluice_gaps WHERE after < ?1 AND through > ?1")?
        .query_row([after], |r| r.get(0))?;
    if let Some(through) = gap {
        return Ok(LogRead::Compacted { horizon: through });
    }
    read_range(conn, after, head, f)
}

/// Reads the changes after `after` up to `head`, whatever the horizon and the gaps say
/// (the caller checked them, or reads one transaction it just logged).
pub(super) fn read_range(
    conn: &Connection,
    after: SyncId,
    head: SyncId,
    f: &mut dyn FnMut(Change) -> ControlFlow<()>,
) -> Result<LogRead, StoreError> {
    let Some(start) = start_after(conn, after)? else {
        return Ok(LogRead::Complete { head });
    };
    // Rowid order is log order.
    let mut stmt = conn.prepare(
        "SELECT first_sync_id, entries FROM _sluice_log WHERE rowid >= ?1 AND first_sync_id <= ?2 \
         ORDER BY rowid",
    )?;
    let mut rows = stmt.query(params![start, head])?;
    let mut stopped = None;
    while let Some(row) = rows.next()? {
        let first: SyncId = row.get(0)?;
        let blob = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
        let mut past_head = false;
        chunk::read_chunk(first, blob, |change| {
            if change.sync_id <= after {
                return Ok(true);
            }
            if change.sync_id > head {
                past_head = true;
                return Ok(false);
            }
            let sync_id = change.sync_id;
            if f(change).is_break() {
                stopped = Some(sync_id);
                return Ok(false);
            }
            Ok(true)
        })?;
        if let Some(last) = stopped {
            return Ok(LogRead::Stopped { last });
        }
        if past_head {
            break;
        }
    }
    Ok(LogRead::Complete { head })
}

/// Deletes every change at or below `target` (the new horizon); returns how many. Whole
/// chunks go; the first chunk kept, when it starts at or below `target`, is rewritten
/// without them. `pk` gives the position of a table's primary key column.
pub(super) fn compact(
    conn: &Connection,
    target: SyncId,
    pk: &dyn Fn(&str) -> usize,
) -> Result<u64, StoreError> {
    conn.execute("DELETE FROM _sluice_gaps WHERE through <= ?1", [target])?;
    // Every chunk before `start` goes; all of them when no change is above `target`.
    let start = start_after(conn, target)?;
    let mut deleted: i64 = conn.query_row(
        "SELECT coalesce(sum(changes), 0) FROM _sluice_log WHERE ?1 IS NULL OR rowid < ?1",
        [start],
        |r| r.get(0),
    )?;
    conn.execute(
        "DELETE FROM _sluice_log WHERE ?1 IS NULL OR rowid < ?1",
        [start],
    )?;
    let Some(start) = start else {
        return Ok(deleted as u64);
    };
    // The search may land in a gap between rowids: the chunk is the first one past it.
    let (rowid, first, count, blob): (i64, SyncId, i64, Vec<u8>) = conn.query_row(
        "SELECT rowid, first_sync_id, changes, entries FROM _sluice_log WHERE rowid >= ?1 \
         ORDER BY rowid LIMIT 1",
        [start],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    if first <= target {
        let mut kept = ChunkWriter::default();
        chunk::read_chunk(first, &blob, |change| {
            if change.sync_id > target {
                kept.push(&change, pk)?;
            }
            Ok(true)
        })?;
        let left = kept.finish()?.ok_or_else(|| {
            StoreError::Corrupt(format!("change log chunk at {first} ends at or before it"))
        })?;
        deleted += count - left.count as i64;
        conn.execute(
            "UPDATE _sluice_log SET first_sync_id = ?1, changes = ?2, entries = ?3 WHERE rowid = ?4",
            params![left.first, left.count as i64, left.blob, rowid],
        )?;
    }
    Ok(deleted.max(0) as u64)
}

#[cfg(test)]
mod tests;
