//! Moves a log of the previous format (one row per change, with its table name, key,
//! client id and row images in columns of their own) into chunks.

use rusqlite::Connection;

use super::{append, ChunkWriter, DDL};
use crate::store::convert::decode_image;
use crate::store::types::kind_from_code;
use crate::store::StoreError;
use crate::vocab::{Change, ClientId};

/// Changes read from the old log before they are written as chunks: bounds the memory
/// the move holds, whatever the old log's length.
const BATCH: usize = 1024;

/// Creates the log's table, moving a log of the previous format into it: the old
/// `_sluice_log` (a row per change, told by its `tbl` column) is renamed aside, its
/// changes are written, in order, as chunks of the new `_sluice_log`, and it is
/// dropped, all inside the caller's transaction. Returns how many changes moved.
///
/// The new table keeps the name and none of the old columns, so a version of the
/// previous format opening the database again fails on every statement of its log
/// (`no such column`) instead of seeing an empty log.
pub(in crate::store::sqlite) fn migrate_log(
    conn: &Connection,
    pk: &dyn Fn(&str) -> usize,
) -> Result<u64, StoreError> {
    let old: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('_sluice_log') WHERE name = 'tbl'",
        [],
        |r| r.get(0),
    )?;
    if old {
        conn.execute_batch("ALTER TABLE _sluice_log RENAME TO _sluice_log_previous")?;
    }
    conn.execute_batch(DDL)?;
    if !old {
        return Ok(0);
    }
    let mut writer = ChunkWriter::default();
    let mut moved = 0u64;
    let mut after = i64::MIN;
    let mut stmt = conn.prepare(
        "SELECT rowid, sync_id, tbl, key, kind, old, new, client_id, client_seq \
         FROM _sluice_log_previous WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
    )?;
    loop {
        let mut changes = Vec::with_capacity(BATCH);
        let mut rows = stmt.query(rusqlite::params![after, BATCH as i64])?;
        while let Some(row) = rows.next()? {
            after = row.get(0)?;
            changes.push(old_change(row)?);
        }
        drop(rows);
        if changes.is_empty() {
            break;
        }
        moved += changes.len() as u64;
        // Chunks do not span the read batches; the log stays in order.
        append(conn, &mut writer, &changes, pk)?;
    }
    drop(stmt);
    // Its `(sync_id, seq)` index, which some versions had, goes with it.
    conn.execute_batch("DROP TABLE _sluice_log_previous")?;
    tracing::info!(changes = moved, "change log moved to the chunked format");
    Ok(moved)
}

/// One row of the old log: `sync_id, tbl, key, kind, old, new, client_id, client_seq`
/// from column 1 on.
fn old_change(row: &rusqlite::Row<'_>) -> Result<Change, StoreError> {
    let kind_code: i64 = row.get(4)?;
    let kind = kind_from_code(kind_code)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown change kind {kind_code}")))?;
    let decode = |i: usize| -> Result<_, StoreError> {
        let bytes: Option<Vec<u8>> = row.get(i)?;
        bytes.map(|b| decode_image(&b)).transpose()
    };
    let client: Option<String> = row.get(7)?;
    let client_seq: Option<i64> = row.get(8)?;
    Ok(Change {
        sync_id: row.get(1)?,
        table: row.get(2)?,
        key: row.get(3)?,
        kind,
        old: decode(5)?,
        new: decode(6)?,
        // Sequence numbers are u64 stored bit for bit in SQLite's i64.
        origin: client.zip(client_seq).map(|(c, s)| (ClientId(c), s as u64)),
    })
}
