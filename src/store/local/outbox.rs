//! The outbox: local transactions persisted before they are applied optimistically,
//! resolved by the server's answer (a rejection rolls back; a commit stays applied until
//! the cut reaches it, so an acknowledged write never blinks out).
//!
//! Storage only: sending the outbox is the client's sync task; this file must not depend
//! on the client or the wire.

use rusqlite::params;

use super::rows::refresh_targets;
use super::{Applied, LocalStore, Pending};
use crate::store::error::StoreError;
use crate::vocab::{Mutation, Precondition, SyncId, WriteOutcome};

impl LocalStore {
    // ----- outbox -----

    /// Persists a local transaction, then applies it to the local view. Returns its
    /// sequence number.
    pub fn enqueue(
        &mut self,
        mutations: Vec<Mutation>,
        preconditions: Vec<Precondition>,
    ) -> Result<(u64, Applied), StoreError> {
        let seq = self.meta_u64("next_seq")?.max(1);
        let blob = postcard::to_allocvec(&(&mutations, &preconditions))?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO _sluice_outbox (seq, txn) VALUES (?1, ?2)",
            params![seq as i64, blob],
        )?;
        tx.execute(
            "INSERT INTO _sluice_meta (name, value) VALUES ('next_seq', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [(seq + 1) as i64],
        )?;
        let pending = Pending {
            seq,
            mutations,
            preconditions,
            committed: None,
        };
        let mut with_new = self.pending.clone();
        with_new.push(pending.clone());
        let applied = refresh_targets(&tx, &self.schema, &pending, &with_new)?;
        tx.commit()?;
        self.pending = with_new;
        Ok((seq, applied))
    }

    /// Local transactions not yet confirmed, in order.
    pub fn pending(&self) -> &[Pending] {
        &self.pending
    }

    /// Records the server's answer to a local transaction: a rejection rolls it back from
    /// the local view; a commit is kept applied until the cut reaches its sync id and no
    /// subscription is staging (the server state that holds it is then in the view).
    pub fn resolve(&mut self, seq: u64, outcome: &WriteOutcome) -> Result<Applied, StoreError> {
        let Some(index) = self.pending.iter().position(|p| p.seq == seq) else {
            return Ok(Applied::default());
        };
        match outcome {
            WriteOutcome::Committed { sync_id } => {
                let cut = self.cut()?;
                self.pending[index].committed = Some(*sync_id);
                // Marked committed and, when the cut already holds it, dropped: one
                // transaction.
                let confirm = self.staging.is_empty();
                let tx = self.conn.transaction()?;
                tx.execute(
                    "UPDATE _sluice_outbox SET committed = ?1 WHERE seq = ?2",
                    params![sync_id.0 as i64, seq as i64],
                )?;
                let applied = if confirm {
                    confirm_in(&tx, &self.schema, &self.pending, cut)?
                } else {
                    Applied::default()
                };
                tx.commit()?;
                if confirm {
                    forget_confirmed(&mut self.pending, cut);
                }
                Ok(applied)
            }
            WriteOutcome::Rejected { .. } => {
                let removed = self.pending.remove(index);
                let tx = self.conn.transaction()?;
                tx.execute("DELETE FROM _sluice_outbox WHERE seq = ?1", [seq as i64])?;
                let applied = refresh_targets(&tx, &self.schema, &removed, &self.pending)?;
                tx.commit()?;
                Ok(applied)
            }
        }
    }

    pub(super) fn load_pending(&self) -> Result<Vec<Pending>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, txn, committed FROM _sluice_outbox ORDER BY seq")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, blob, committed) = row?;
            let (mutations, preconditions): (Vec<Mutation>, Vec<Precondition>) =
                postcard::from_bytes(&blob)?;
            out.push(Pending {
                seq: seq as u64,
                mutations,
                preconditions,
                committed: committed.map(|s| SyncId(s as u64)),
            });
        }
        Ok(out)
    }
}

/// Inside the caller's transaction, drops from the outbox the committed transactions the
/// cut `cut` has reached and refreshes their rows without them (the server state in the
/// same transaction holds them), so the optimistic state and the server state that
/// replaces it change places in one local transaction. The caller forgets them in memory
/// with [`forget_confirmed`] once the transaction commits.
pub(super) fn confirm_in(
    tx: &rusqlite::Connection,
    schema: &crate::schema::Schema,
    pending: &[Pending],
    cut: SyncId,
) -> Result<Applied, StoreError> {
    let confirmed = |p: &Pending| p.committed.is_some_and(|s| s <= cut);
    if !pending.iter().any(confirmed) {
        return Ok(Applied::default());
    }
    let remaining: Vec<Pending> = pending.iter().filter(|p| !confirmed(p)).cloned().collect();
    let mut applied = Applied::default();
    for p in pending.iter().filter(|p| confirmed(p)) {
        tx.execute("DELETE FROM _sluice_outbox WHERE seq = ?1", [p.seq as i64])?;
        applied.merge(refresh_targets(tx, schema, p, &remaining)?);
    }
    Ok(applied)
}

/// Forgets in memory what [`confirm_in`] dropped from the outbox.
pub(super) fn forget_confirmed(pending: &mut Vec<Pending>, cut: SyncId) {
    pending.retain(|p| p.committed.is_none_or(|s| s > cut));
}
