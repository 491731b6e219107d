//! Positions in the change log.
//!
//! The log has no index on its sync ids: entries are appended in `(sync_id, seq)` order
//! (each batch after the head, each change after the previous one) and SQLite gives each
//! new row the rowid after the largest, so rowid order is log order, and compaction
//! deletes only from the front. Where a read or a compaction starts is found by a binary
//! search on the rowid, a few B-tree seeks, instead of one more index entry per change.

use rusqlite::{Connection, OptionalExtension};

use crate::store::StoreError;
use crate::vocab::SyncId;

/// A rowid from which the log's entries with a sync id above `after` start: every entry
/// at or past it is above `after`, every entry before it is not. `None` when no entry is
/// above `after`.
pub(super) fn start_after(conn: &Connection, after: SyncId) -> Result<Option<i64>, StoreError> {
    let bounds: (Option<i64>, Option<i64>) = conn
        .prepare_cached("SELECT min(rowid), max(rowid) FROM _sluice_log")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (Some(mut low), Some(mut high)) = bounds else {
        return Ok(None);
    };
    let mut first_at = conn.prepare_cached(
        "SELECT sync_id FROM _sluice_log WHERE rowid >= ?1 ORDER BY rowid LIMIT 1",
    )?;
    // The sync id of the first entry at or past a rowid never decreases with it.
    let mut above = |rowid: i64| -> Result<bool, StoreError> {
        let sync_id: Option<SyncId> = first_at.query_row([rowid], |r| r.get(0)).optional()?;
        Ok(sync_id.is_some_and(|s| s > after))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn log(entries: &[(i64, u64)]) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE _sluice_log (sync_id INTEGER NOT NULL)")
            .unwrap();
        for (rowid, sync_id) in entries {
            conn.execute(
                "INSERT INTO _sluice_log (rowid, sync_id) VALUES (?1, ?2)",
                [*rowid, *sync_id as i64],
            )
            .unwrap();
        }
        conn
    }

    #[test]
    fn finds_the_first_entry_above_with_gaps_and_repeats() {
        let conn = log(&[(3, 5), (4, 5), (9, 6), (10, 8), (11, 8), (40, 9)]);
        let start = |after| start_after(&conn, SyncId(after)).unwrap();
        assert_eq!(start(0), Some(3));
        assert_eq!(start(4), Some(3));
        // Between two entries any rowid in the gap will do; the search gives the first.
        assert_eq!(start(5), Some(5));
        assert_eq!(start(6), Some(10));
        assert_eq!(start(7), Some(10));
        assert_eq!(start(8), Some(12));
        assert_eq!(start(9), None);
        assert_eq!(start_after(&log(&[]), SyncId(0)).unwrap(), None);
    }
}
