//! Applying the server's state to the local store: snapshot rows and replayed changes
//! staged until their subscription can join the consistent cut, the join itself, and
//! live transactions, each in one local SQLite transaction.
//!
//! Takes row events as the vocabulary defines them; it must not depend on the wire's
//! frames or on the client that receives them.

use std::collections::BTreeSet;

use rusqlite::params;

use super::rows::{apply_event, set_cut, settle, sub_columns, upsert_row};
use super::{Applied, JoinKind, KeyOrd, LocalStore};
use crate::schema::quote_ident;
use crate::store::convert::value_from_ref;
use crate::store::error::StoreError;
use crate::value::Value;
use crate::vocab::{RowEvent, SubId, SyncId};

impl LocalStore {
    // ----- staging -----

    /// Discards whatever a subscription had staged (a bootstrap starting over).
    /// Marks the subscription as staging until [`LocalStore::join`] joins it.
    pub fn stage_clear(&mut self, sub: SubId) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM _sluice_stage WHERE sub = ?1", [sub])?;
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
    pub fn stage_many(
        &mut self,
        items: &[(SubId, Option<SyncId>, String, RowEvent)],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO _sluice_stage (sub, sync_id, table_name, event) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (sub, sync_id, table, event) in items {
                let blob = postcard::to_allocvec(event)?;
                insert.execute(params![*sub, sync_id.map(|s| s.0 as i64), table, blob])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Joins staged subscriptions to the local view in one transaction: each one's
    /// snapshot rows (replacing its old coverage) or replayed changes, then its staged
    /// live changes after its seam `W`, in sync-id order.
    pub fn join(
        &mut self,
        subs: &[(SubId, JoinKind, SyncId)],
        cut: SyncId,
    ) -> Result<Applied, StoreError> {
        let pending_tables: BTreeSet<String> = self
            .pending
            .iter()
            .flat_map(|p| p.mutations.iter())
            .filter_map(|m| self.schema.table(m.table()).map(|t| t.name.clone()))
            .collect();
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
            if kind == JoinKind::Bootstrap {
                // Coverage is rebuilt from the snapshot: keys it no longer holds are released.
                tx.execute(
                    "INSERT OR IGNORE INTO _sluice_touched (table_name, key)
                     SELECT table_name, key FROM _sluice_cover WHERE holder = ?1",
                    [sub],
                )?;
                tx.execute("DELETE FROM _sluice_cover WHERE holder = ?1", [sub])?;
            }
            let cols = columns.get(&sub).cloned().unwrap_or_default();
            let mut stmt = tx.prepare(
                "SELECT sync_id, table_name, event FROM _sluice_stage WHERE sub = ?1
                 ORDER BY (sync_id IS NOT NULL), sync_id, n",
            )?;
            let mut staged = stmt.query([sub])?;
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
                let Some(t) = self.schema.table(&table).cloned() else {
                    continue;
                };
                // Snapshot rows are the state at W; changes are at their own sync id.
                let version = sync_id.map_or(w, |s| SyncId(s as u64));
                let written = apply_event(&tx, &t, sub, &cols, &event, version)?;
                match &event {
                    // A snapshot row is covered and, with no local transaction pending on
                    // its table, visible exactly as the server state: written directly.
                    RowEvent::Insert { key, row }
                        if sync_id.is_none() && !pending_tables.contains(&t.name) =>
                    {
                        if written {
                            upsert_row(&tx, &quote_ident(&t.name), &t, &cols, key, row)?;
                            applied.row(&t.name, key.clone());
                        }
                    }
                    _ => touch(&t.name, event.key())?,
                }
            }
            drop(staged);
            drop(stmt);
            tx.execute("DELETE FROM _sluice_stage WHERE sub = ?1", [sub])?;
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
        tx.commit()?;
        for (sub, _, _) in subs {
            self.staging.remove(sub);
        }
        let confirmed = self.drop_confirmed(cut)?;
        applied.merge(confirmed);
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
        let tx = self.conn.transaction()?;
        let columns = sub_columns(&tx)?;
        let mut applied = Applied::default();
        let mut touched: BTreeSet<(String, KeyOrd)> = BTreeSet::new();
        for (sub, table, event) in events {
            let Some(t) = self.schema.table(table).cloned() else {
                continue;
            };
            // An event for a subscription the app already dropped (it crossed the
            // `Unsubscribe` on the way) must not cover the row again under a holder that
            // no longer exists: the row would never leave the view.
            let Some(cols) = columns.get(sub) else {
                continue;
            };
            apply_event(&tx, &t, *sub, cols, event, sync_id)?;
            touched.insert((t.name.clone(), KeyOrd(event.key().clone())));
            applied.subs.insert(*sub);
        }
        for (table, key) in touched {
            let Some(t) = self.schema.table(&table).cloned() else {
                continue;
            };
            if settle(&tx, &t, &key.0, &self.pending)? {
                applied.row(&t.name, key.0);
            }
        }
        set_cut(&tx, sync_id)?;
        tx.commit()?;
        applied.merge(self.drop_confirmed(sync_id)?);
        Ok(applied)
    }
}
