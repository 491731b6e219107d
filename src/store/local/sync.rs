//! Applying the server's state to the local store: snapshot rows and replayed changes
//! staged until their subscription can join the consistent cut, the join itself, and
//! live transactions, each in one local SQLite transaction.
//!
//! Takes row events as the vocabulary defines them; it must not depend on the wire's
//! frames or on the client that receives them.

use std::collections::BTreeSet;
use std::sync::Arc;

use rusqlite::params;

use super::outbox::{confirm_in, forget_confirmed};
use super::rows::{apply_event, set_cut, settle, sub_columns, upsert_row};
use super::{bulk, stage, stage_table, whole, Applied, JoinKind, KeyOrd, LocalStore, PIN_HOLDER};
use crate::schema::{quote_ident, Table};
use crate::store::convert::value_from_ref;
use crate::store::error::StoreError;
use crate::value::Value;
use crate::vocab::{RowEvent, SubId, SyncId};

/// WAL pages a commit leaves before it copies them into the database file (SQLite's
/// default automatic checkpoint).
const CHECKPOINT_PAGES: i64 = 1000;

/// The same while a bootstrap stages: fewer, larger checkpoints, each waiting for the
/// disk twice (about 40 MiB of WAL at most).
const STAGING_CHECKPOINT_PAGES: i64 = 10_000;

impl LocalStore {
    // ----- staging -----

    /// Discards whatever a subscription had staged (a bootstrap starting over).
    /// Marks the subscription as staging until [`LocalStore::join`] joins it.
    pub fn stage_clear(&mut self, sub: SubId) -> Result<(), StoreError> {
        stage::clear(&self.conn, sub)?;
        self.staging.insert(sub);
        Ok(())
    }

    /// Stages one snapshot row or change (`sync_id` None for snapshot rows).
    pub fn stage(
        &mut self,
        sub: SubId,
        sync_id: Option<SyncId>,
        table: &str,
        event: &RowEvent,
    ) -> Result<(), StoreError> {
        self.stage_many(&[(sub, sync_id, table.to_string(), event.clone())])
    }

    /// Stages many rows or changes in one transaction (a bootstrap streams thousands).
    ///
    /// Committed without waiting for the disk (`synchronous = NORMAL`): staged rows are
    /// worth nothing until their subscription joins, and a crash that loses the last
    /// staging transactions (WAL keeps them in order, so only a tail) loses nothing the
    /// client relies on: a subscription that has not joined bootstraps again, discarding
    /// what it staged. The join and every other transaction still commit durably, and
    /// their commit makes the staged rows before them durable too.
    pub fn stage_many(
        &mut self,
        items: &[(SubId, Option<SyncId>, String, RowEvent)],
    ) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        self.conn
            .pragma_update(None, "wal_autocheckpoint", STAGING_CHECKPOINT_PAGES)?;
        let staged = (|| {
            let tx = self.conn.transaction()?;
            stage::stage_in(&tx, &self.schema, items)?;
            tx.commit()?;
            Ok(())
        })();
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        self.conn
            .pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
        staged
    }

    /// The tables pending local transactions write.
    pub(super) fn pending_tables(&self) -> BTreeSet<String> {
        self.pending
            .iter()
            .flat_map(|p| p.mutations.iter())
            .filter_map(|m| self.schema.table(m.table()).map(|t| t.name.clone()))
            .collect()
    }

    /// Joins staged subscriptions to the local view in one transaction: each one's
    /// snapshot rows (replacing its old coverage) or replayed changes, then its staged
    /// live changes after its seam `W`, in sync-id order. A snapshot whose table nothing
    /// else covers or writes joins set-based (see `bulk`); the others row by row.
    ///
    /// Its commit leaves the pages it wrote in the WAL: copying them into the database
    /// file (a checkpoint, which writes a bootstrapped table's pages once more) is left
    /// to [`LocalStore::checkpoint`] or the next commit, so the joined rows are visible
    /// without waiting for it.
    pub fn join(
        &mut self,
        subs: &[(SubId, JoinKind, SyncId)],
        cut: SyncId,
    ) -> Result<Applied, StoreError> {
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let joined = self.join_in(subs, cut);
        self.conn
            .pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
        joined
    }

    /// Copies what the WAL holds into the database file as far as no reader needs it
    /// (SQLite's passive checkpoint), e.g. after a join.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn join_in(
        &mut self,
        subs: &[(SubId, JoinKind, SyncId)],
        cut: SyncId,
    ) -> Result<Applied, StoreError> {
        let pending_tables = self.pending_tables();
        let tx = self.conn.transaction()?;
        let mut applied = Applied::default();
        let columns = sub_columns(&tx)?;
        // Keys to refresh are collected in SQLite, not in memory: a snapshot may be large.
        tx.execute("DELETE FROM _sluice_touched", [])?;
        let touch = |table: &str, key: &Value| -> Result<(), StoreError> {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO _sluice_touched (table_name, key) VALUES (?1, ?2)",
            )?
            .execute(params![table, key])?;
            Ok(())
        };
        for &(sub, kind, w) in subs {
            let cols = columns.get(&sub).cloned().unwrap_or_default();
            let bulk = kind == JoinKind::Bootstrap
                && bulk::join_snapshot(
                    &tx,
                    &self.schema,
                    sub,
                    &cols,
                    w,
                    &pending_tables,
                    &mut applied,
                )?;
            if kind == JoinKind::Bootstrap && !bulk {
                // Coverage is rebuilt from the snapshot: keys it no longer holds are released.
                whole::materialize_holder(&tx, &self.schema, sub)?;
                tx.execute(
                    "INSERT OR IGNORE INTO _sluice_touched (table_name, key)
                     SELECT table_name, key FROM _sluice_cover WHERE holder = ?1",
                    [sub],
                )?;
                tx.execute("DELETE FROM _sluice_cover WHERE holder = ?1", [sub])?;
            }
            // A snapshot row: the state at W.
            let snapshot_row = |applied: &mut Applied, table: &str, event: RowEvent| {
                let Some(t) = self.schema.table(table).cloned() else {
                    return Ok(());
                };
                let written = apply_event(&tx, &t, sub, &cols, &event, w)?;
                match &event {
                    // Covered and, with no local transaction pending on its table, visible
                    // exactly as the server state: written directly.
                    RowEvent::Insert { key, row } if !pending_tables.contains(&t.name) => {
                        if written {
                            upsert_row(&tx, &quote_ident(&t.name), &t, &cols, key, row)?;
                            applied.row(&t.name, key.clone());
                        }
                    }
                    _ => touch(&t.name, event.key())?,
                }
                Ok::<(), StoreError>(())
            };
            if !bulk {
                if let Some(target) = stage_table::target(&tx, &self.schema, sub)? {
                    let t = target.table;
                    stage_table::for_each_row(&tx, sub, &t, &cols, |event| {
                        snapshot_row(&mut applied, &t.name, event)
                    })?;
                }
                stage::for_each_row(&tx, sub, |table, event| {
                    snapshot_row(&mut applied, &table, event)
                })?;
            }
            let mut stmt = tx.prepare(
                "SELECT sync_id, table_name, event FROM _sluice_stage WHERE sub = ?1
                 ORDER BY (sync_id IS NOT NULL), sync_id, n",
            )?;
            let mut staged = stmt.query([sub])?;
            // Changes are applied one transaction at a time, each keeping only its last
            // event per row: a transaction that changed a row twice carries the row's
            // final content in its last event, and an earlier one, at the same sync id,
            // would otherwise overwrite what another holder already joined at it.
            let mut txn: Vec<(Arc<Table>, RowEvent)> = Vec::new();
            let mut txn_id: Option<SyncId> = None;
            let apply_txn = |txn: &mut Vec<(Arc<Table>, RowEvent)>, at: SyncId| {
                let mut seen: BTreeSet<(String, KeyOrd)> = BTreeSet::new();
                let last: Vec<bool> = txn
                    .iter()
                    .rev()
                    .map(|(t, e)| seen.insert((t.name.clone(), KeyOrd(e.key().clone()))))
                    .collect();
                for ((t, event), keep) in txn.drain(..).zip(last.into_iter().rev()) {
                    if keep {
                        apply_event(&tx, &t, sub, &cols, &event, at)?;
                        touch(&t.name, event.key())?;
                    }
                }
                Ok::<(), StoreError>(())
            };
            while let Some(r) = staged.next()? {
                let sync_id: Option<i64> = r.get(0)?;
                let table: String = r.get(1)?;
                if let Some(s) = sync_id {
                    // Live changes the snapshot already contains are skipped; replayed
                    // changes of a resume are all after the old cut and at most W.
                    if kind == JoinKind::Bootstrap && (s as u64) <= w.0 {
                        continue;
                    }
                }
                let blob: Vec<u8> = r.get(2)?;
                let event: RowEvent = postcard::from_bytes(&blob)?;
                let Some(s) = sync_id else {
                    snapshot_row(&mut applied, &table, event)?;
                    continue;
                };
                let Some(t) = self.schema.table(&table).cloned() else {
                    continue;
                };
                let s = SyncId(s as u64);
                if let Some(at) = txn_id.filter(|at| *at != s) {
                    apply_txn(&mut txn, at)?;
                }
                txn_id = Some(s);
                txn.push((t, event));
            }
            if let Some(at) = txn_id {
                apply_txn(&mut txn, at)?;
            }
            drop(staged);
            drop(stmt);
            stage::clear(&tx, sub)?;
            tx.execute(
                "UPDATE _sluice_subs SET joined = 1, access = access_next WHERE id = ?1",
                [sub],
            )?;
            applied.subs.insert(sub);
        }
        {
            let mut stmt = tx.prepare("SELECT table_name, key FROM _sluice_touched")?;
            let mut keys = stmt.query([])?;
            while let Some(r) = keys.next()? {
                let table: String = r.get(0)?;
                let key = value_from_ref(r.get_ref(1)?);
                let Some(t) = self.schema.table(&table).cloned() else {
                    continue;
                };
                if settle(&tx, &t, &key, &self.pending)? {
                    applied.row(&t.name, key);
                }
            }
        }
        tx.execute("DELETE FROM _sluice_touched", [])?;
        set_cut(&tx, cut)?;
        // With nothing left staging, committed writes the cut reached leave the outbox in
        // this same transaction (the server state that holds them is joined in it).
        let settled = self
            .staging
            .iter()
            .all(|s| subs.iter().any(|(joined, _, _)| joined == s));
        if settled {
            applied.merge(confirm_in(&tx, &self.schema, &self.pending, cut)?);
        }
        tx.commit()?;
        for (sub, _, _) in subs {
            self.staging.remove(sub);
        }
        if settled {
            forget_confirmed(&mut self.pending, cut);
        }
        Ok(applied)
    }

    // ----- live -----

    /// Applies one server transaction's events for joined subscriptions, atomically, and
    /// advances the cut to its sync id.
    pub fn apply_live(
        &mut self,
        sync_id: SyncId,
        events: &[(SubId, String, RowEvent)],
    ) -> Result<Applied, StoreError> {
        self.apply_server_txn(ServerTxn {
            sync_id,
            stage: &[],
            live: Some(events),
            pins: &[],
        })
    }

    /// Applies everything one server transaction brings in one local SQLite transaction:
    /// the changes staged for subscriptions that have not joined yet, the events of
    /// joined subscriptions (advancing the cut, unless `live` is `None` because the cut
    /// is held), the batch loader's pinned rows, and the outbox entries the new cut
    /// confirms. An app never reads, and a crash never leaves, part of it.
    pub fn apply_server_txn(&mut self, txn: ServerTxn<'_>) -> Result<Applied, StoreError> {
        let sync_id = txn.sync_id;
        let tx = self.conn.transaction()?;
        if !txn.stage.is_empty() {
            stage::stage_in(&tx, &self.schema, txn.stage)?;
        }
        let mut applied = Applied::default();
        let mut touched: BTreeSet<(String, KeyOrd)> = BTreeSet::new();
        if let Some(events) = txn.live {
            let columns = sub_columns(&tx)?;
            // A transaction that changed a row twice carries the row's final state in its
            // last event per subscription: an earlier one, at the same sync id, would
            // write a state the transaction did not end with (over what another holder
            // wrote at it) and stay when the last one moves the row out.
            let mut seen: BTreeSet<(SubId, String, KeyOrd)> = BTreeSet::new();
            let last: Vec<bool> = events
                .iter()
                .rev()
                .map(|(sub, table, e)| {
                    seen.insert((*sub, table.to_ascii_lowercase(), KeyOrd(e.key().clone())))
                })
                .collect();
            for ((sub, table, event), _) in events
                .iter()
                .zip(last.into_iter().rev())
                .filter(|(_, keep)| *keep)
            {
                let Some(t) = self.schema.table(table).cloned() else {
                    continue;
                };
                // An event for a subscription the app already dropped (it crossed the
                // `Unsubscribe` on the way) must not cover the row again under a holder
                // that no longer exists: the row would never leave the view.
                let Some(cols) = columns.get(sub) else {
                    continue;
                };
                apply_event(&tx, &t, *sub, cols, event, sync_id)?;
                touched.insert((t.name.clone(), KeyOrd(event.key().clone())));
                applied.subs.insert(*sub);
            }
        }
        for (table, change) in txn.pins {
            let Some(t) = self.schema.table(table).cloned() else {
                continue;
            };
            let key = match change {
                PinChange::Row(row) => {
                    let Some(key) = row.get(t.pk).cloned() else {
                        continue;
                    };
                    let names: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
                    let event = RowEvent::Insert {
                        key: key.clone(),
                        row: row.clone(),
                    };
                    apply_event(&tx, &t, PIN_HOLDER, &names, &event, sync_id)?;
                    key
                }
                PinChange::Gone(key) => {
                    tx.prepare_cached(
                        "DELETE FROM _sluice_cover
                         WHERE table_name = ?1 AND key = ?2 AND holder = ?3",
                    )?
                    .execute(params![t.name, key, PIN_HOLDER])?;
                    key.clone()
                }
            };
            touched.insert((t.name.clone(), KeyOrd(key)));
        }
        for (table, key) in touched {
            let Some(t) = self.schema.table(&table).cloned() else {
                continue;
            };
            if settle(&tx, &t, &key.0, &self.pending)? {
                applied.row(&t.name, key.0);
            }
        }
        let advance = txn.live.is_some();
        if advance {
            set_cut(&tx, sync_id)?;
        }
        // Kept while anything stages (see `LocalStore::staging`).
        let confirm = advance && self.staging.is_empty();
        if confirm {
            applied.merge(confirm_in(&tx, &self.schema, &self.pending, sync_id)?);
        }
        tx.commit()?;
        if confirm {
            forget_confirmed(&mut self.pending, sync_id);
        }
        Ok(applied)
    }
}

/// A batch-loader pin's part of a server transaction: the row's new content (every
/// column of the table, in order), or its deletion.
#[derive(Debug, Clone, PartialEq)]
pub enum PinChange {
    /// The pinned row as of the transaction.
    Row(Vec<Value>),
    /// The pinned row was deleted: its pin is released.
    Gone(Value),
}

/// Everything one server transaction brings to the local store (see
/// [`LocalStore::apply_server_txn`]).
#[derive(Debug, Clone, Copy)]
pub struct ServerTxn<'a> {
    /// The transaction's sync id.
    pub sync_id: SyncId,
    /// Changes for subscriptions still staging, as (sub, sync id, table, event).
    pub stage: &'a [(SubId, Option<SyncId>, String, RowEvent)],
    /// Events of joined subscriptions, or `None` while the cut is held (every event is
    /// staged then, and the cut stays).
    pub live: Option<&'a [(SubId, String, RowEvent)]>,
    /// Pinned rows' changes, as (table, change), already filtered to those newer than
    /// what the loader holds.
    pub pins: &'a [(String, PinChange)],
}
