//! The change log entries and outcome records of a batch: the changes as a few chunks
//! of the log, the outcomes many rows per statement, rather than two statements per
//! transaction.
//!
//! Committed transactions of one client that follow each other in the batch, with
//! consecutive sequence numbers and consecutive sync ids, share one outcome record: a
//! run from `seq` to `last_seq`, where transaction `seq + k` committed as `sync_id + k`
//! (the usual case when a client sends its outbox). Any other outcome is a record of
//! its own, with `last_seq` NULL.
//!
//! They are kept aside while the batch applies (as indices into its transactions and
//! outcomes, nothing copied) and written before anything reads them: before an
//! idempotency lookup, and at the end of the batch. Nothing else in the batch reads
//! sluice's own tables, and a failure anywhere rolls back the whole batch, so when they
//! are written changes nothing that can be seen.

use std::sync::OnceLock;

use rusqlite::{Connection, Statement};

use crate::schema::Schema;
use crate::store::sqlite::log::{self, ChunkWriter};
use crate::store::{GuardedTxn, StoreError};
use crate::vocab::TxnOutcome;

/// Rows per statement, largest first: a batch of `n` takes about `n / 64 + 14`
/// statements, and each table caches only these three.
const CHUNKS: [usize; 3] = [64, 8, 1];

const OUTCOME_INSERT: &str = "INSERT INTO _sluice_client_txns \
    (client_id, seq, sync_id, reject_code, message, recorded_at_ms, last_seq) VALUES ";
const OUTCOME_WIDTH: usize = 7;
static OUTCOME_TEXTS: OnceLock<[String; CHUNKS.len()]> = OnceLock::new();

/// What the batch has yet to write.
#[derive(Default)]
pub(super) struct Pending {
    /// `(transaction, change)`: the change's position in the transaction's outcome.
    log: Vec<(usize, usize)>,
    /// Transactions with an origin whose outcome is to be recorded.
    outcomes: Vec<usize>,
    /// The records those make: `(first transaction, transactions in the run)`.
    runs: Vec<(usize, u64)>,
    /// Reused for encoding the log's chunks.
    chunk: ChunkWriter,
}

impl Pending {
    /// Transaction `txn`'s outcome is `outcomes[txn]` once pushed: its changes go to the
    /// log, and its outcome is recorded when it came from a client.
    pub(super) fn add(&mut self, txn: usize, changes: usize, from_client: bool) {
        self.log.extend((0..changes).map(|change| (txn, change)));
        if from_client {
            self.outcomes.push(txn);
        }
    }

    /// Writes everything kept aside. `txns` and `outcomes` are the batch's, outcomes in
    /// transaction order.
    pub(super) fn write(
        &mut self,
        conn: &Connection,
        schema: &Schema,
        txns: &[GuardedTxn],
        outcomes: &[TxnOutcome],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if let Some(&(txn, _)) = self
            .log
            .iter()
            .find(|(txn, _)| !matches!(outcomes[*txn], TxnOutcome::Committed { .. }))
        {
            return Err(StoreError::Corrupt(format!(
                "log entry for transaction {txn}, which did not commit"
            )));
        }
        let changes = self
            .log
            .iter()
            .filter_map(|&(txn, n)| match &outcomes[txn] {
                TxnOutcome::Committed { changes, .. } => changes.get(n),
                TxnOutcome::Rejected { .. } => None,
            });
        log::append(conn, &mut self.chunk, changes, &log::schema_pk(schema))?;
        self.runs.clear();
        for &txn in &self.outcomes {
            match self.runs.last_mut() {
                Some((first, len)) if continues(txns, outcomes, *first, *len, txn) => *len += 1,
                _ => self.runs.push((txn, 1)),
            }
        }
        write_rows(
            conn,
            &OUTCOME_TEXTS,
            OUTCOME_INSERT,
            OUTCOME_WIDTH,
            &self.runs,
            |stmt, at, &(txn, len)| {
                let Some((client, seq)) = &txns[txn].0.origin else {
                    return Err(StoreError::Corrupt(format!(
                        "outcome record for transaction {txn}, which has no client"
                    )));
                };
                let (sync_id, code, message) = match &outcomes[txn] {
                    TxnOutcome::Committed { sync_id, .. } => (Some(*sync_id), None, None),
                    TxnOutcome::Rejected { code, message } => {
                        (None, Some(code.as_str()), Some(message.as_str()))
                    }
                };
                stmt.raw_bind_parameter(at, &client.0)?;
                // Sequence numbers are u64 stored bit for bit in SQLite's i64.
                stmt.raw_bind_parameter(at + 1, *seq as i64)?;
                stmt.raw_bind_parameter(at + 2, sync_id)?;
                stmt.raw_bind_parameter(at + 3, code)?;
                stmt.raw_bind_parameter(at + 4, message)?;
                stmt.raw_bind_parameter(at + 5, now_ms)?;
                // Runs only hold sequence numbers up to i64::MAX (see `continues`).
                let last = (len > 1).then(|| (*seq + len - 1) as i64);
                stmt.raw_bind_parameter(at + 6, last)?;
                Ok(())
            },
        )?;
        self.log.clear();
        self.outcomes.clear();
        Ok(())
    }
}

/// Whether transaction `txn` extends the run of `len` transactions from `first`: both
/// committed, the same client, the next sequence number (at most i64::MAX) and the next
/// sync id.
fn continues(
    txns: &[GuardedTxn],
    outcomes: &[TxnOutcome],
    first: usize,
    len: u64,
    txn: usize,
) -> bool {
    let (Some((client, seq)), Some((next_client, next_seq))) =
        (&txns[first].0.origin, &txns[txn].0.origin)
    else {
        return false;
    };
    let (
        TxnOutcome::Committed { sync_id, .. },
        TxnOutcome::Committed {
            sync_id: next_sync, ..
        },
    ) = (&outcomes[first], &outcomes[txn])
    else {
        return false;
    };
    seq.checked_add(len) == Some(*next_seq)
        && *next_seq <= i64::MAX as u64
        && sync_id.0.checked_add(len) == Some(next_sync.0)
        && client == next_client
}

/// Inserts `rows` with statements of [`CHUNKS`] rows each, whose text `texts` keeps
/// (built once); `bind` binds one row's `width` parameters from the given index on.
fn write_rows<T>(
    conn: &Connection,
    texts: &OnceLock<[String; CHUNKS.len()]>,
    insert: &str,
    width: usize,
    rows: &[T],
    mut bind: impl FnMut(&mut Statement<'_>, usize, &T) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut rest = rows;
    while !rest.is_empty() {
        let texts = texts.get_or_init(|| CHUNKS.map(|size| values_sql(insert, width, size)));
        let which = CHUNKS
            .iter()
            .position(|&n| n <= rest.len())
            .unwrap_or(CHUNKS.len() - 1);
        let (chunk, tail) = rest.split_at(CHUNKS[which]);
        let mut stmt = conn.prepare_cached(&texts[which])?;
        for (n, row) in chunk.iter().enumerate() {
            bind(&mut stmt, n * width + 1, row)?;
        }
        stmt.raw_execute()?;
        rest = tail;
    }
    Ok(())
}

/// `insert` followed by `rows` groups of `width` parameters (SQLite numbers them in
/// order).
fn values_sql(insert: &str, width: usize, rows: usize) -> String {
    let group = format!("({})", vec!["?"; width].join(", "));
    format!("{insert}{}", vec![group; rows].join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_numbered_across_rows() {
        assert_eq!(
            values_sql("INSERT INTO t (a, b) VALUES ", 2, 2),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"
        );
    }
}
