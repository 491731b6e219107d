//! Forgetting the outcomes of client transactions (their idempotency records), by age
//! and by count, with a floor per client so that a resend of a forgotten transaction is
//! refused instead of applied again.
//!
//! A record is one outcome or a run of committed ones (`seq` to `last_seq`, see the
//! write path's records). Limits count outcomes, not records: a run is forgotten whole
//! by age (its outcomes were recorded at once), and by count its oldest part may go
//! while the rest of it stays.

use rusqlite::Connection;

use crate::store::StoreError;

/// Forgets the outcomes recorded before `cutoff_ms`, and the oldest past `max_records`
/// (by record time, then client and sequence number), inside the caller's transaction.
/// Raises each client's floor to its highest forgotten sequence number. Returns the
/// number of outcomes forgotten.
pub(super) fn prune(
    conn: &Connection,
    cutoff_ms: i64,
    max_records: u64,
) -> Result<u64, StoreError> {
    // The records to forget whole: client, first and last sequence number.
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS _sluice_pruned_runs ( \
             client_id TEXT NOT NULL, seq INTEGER NOT NULL, last INTEGER NOT NULL, \
             PRIMARY KEY (client_id, seq)) WITHOUT ROWID; \
         DELETE FROM _sluice_pruned_runs;",
    )?;
    conn.execute(
        "INSERT OR IGNORE INTO _sluice_pruned_runs \
         SELECT client_id, seq, coalesce(last_seq, seq) FROM _sluice_client_txns \
         WHERE recorded_at_ms < ?1",
        [cutoff_ms],
    )?;
    let total: i64 = conn.query_row(
        "SELECT coalesce(sum(coalesce(last_seq, seq) - seq + 1), 0) FROM _sluice_client_txns",
        [],
        |r| r.get(0),
    )?;
    let mut excess = total.saturating_sub(i64::try_from(max_records).unwrap_or(i64::MAX));
    // A run whose first `k` outcomes go: (client, seq, k).
    let mut split: Option<(String, i64, i64)> = None;
    if excess > 0 {
        let mut oldest = conn.prepare(
            "SELECT client_id, seq, coalesce(last_seq, seq), recorded_at_ms < ?1 \
             FROM _sluice_client_txns ORDER BY recorded_at_ms, client_id, seq",
        )?;
        let mut forget =
            conn.prepare("INSERT OR IGNORE INTO _sluice_pruned_runs VALUES (?1, ?2, ?3)")?;
        let mut rows = oldest.query([cutoff_ms])?;
        while excess > 0 {
            let Some(row) = rows.next()? else {
                break;
            };
            let (client, seq, last, old): (String, i64, i64, bool) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            // Sequence numbers past i64::MAX (negative here) are never in a run.
            let outcomes = last.wrapping_sub(seq).wrapping_add(1).max(1);
            if outcomes <= excess || old {
                forget.execute(rusqlite::params![client, seq, last])?;
                excess -= outcomes.min(excess);
            } else {
                split = Some((client, seq, excess));
                excess = 0;
            }
        }
    }
    let mut forgotten: i64 = conn.query_row(
        "SELECT coalesce(sum(max(last - seq + 1, 1)), 0) FROM _sluice_pruned_runs",
        [],
        |r| r.get(0),
    )?;
    // Each client's floor rises to its highest forgotten sequence number: a resend at or
    // below it is answered `expired`, never applied again.
    conn.execute_batch(
        "INSERT INTO _sluice_client_floors (client_id, seq) \
         SELECT client_id, max(last) FROM _sluice_pruned_runs WHERE seq >= 0 GROUP BY client_id \
         ON CONFLICT (client_id) DO UPDATE SET seq = max(seq, excluded.seq); \
         DELETE FROM _sluice_client_txns WHERE (client_id, seq) IN \
         (SELECT client_id, seq FROM _sluice_pruned_runs); \
         DELETE FROM _sluice_pruned_runs;",
    )?;
    if let Some((client, seq, k)) = split {
        // The run now starts `k` later, at the sync id its transaction committed under.
        conn.execute(
            "UPDATE _sluice_client_txns SET seq = seq + ?3, sync_id = sync_id + ?3, \
             last_seq = CASE WHEN last_seq = seq + ?3 THEN NULL ELSE last_seq END \
             WHERE client_id = ?1 AND seq = ?2",
            rusqlite::params![client, seq, k],
        )?;
        conn.execute(
            "INSERT INTO _sluice_client_floors (client_id, seq) VALUES (?1, ?2) \
             ON CONFLICT (client_id) DO UPDATE SET seq = max(seq, excluded.seq)",
            rusqlite::params![client, seq + k - 1],
        )?;
        forgotten += k;
    }
    Ok(forgotten.max(0) as u64)
}
