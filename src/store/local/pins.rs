//! Batch-loader pins in the local store: rows covered by the pin holder, written and
//! released in one transaction per answer.
//!
//! Storage only: which rows to pin and when to release them is the client loader's
//! business; this file must not depend on the client.

use super::*;

impl LocalStore {
    /// Covers a fetched row with a pin (the batch loader) and stores its server state.
    pub fn pin(&mut self, table: &str, row: &[Value]) -> Result<Applied, StoreError> {
        self.pin_rows(table, std::slice::from_ref(&row.to_vec()), SyncId::ZERO)
    }

    /// Pins several rows of one table, as of sync id `version`, in one transaction (a
    /// row whose stored state is newer keeps it).
    pub fn pin_rows(
        &mut self,
        table: &str,
        rows: &[Vec<Value>],
        version: SyncId,
    ) -> Result<Applied, StoreError> {
        let Some(t) = self.schema.table(table).cloned() else {
            return Ok(Applied::default());
        };
        let tx = self.conn.transaction()?;
        let names: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
        let mut applied = Applied::default();
        for row in rows {
            let Some(key) = row.get(t.pk).cloned() else {
                continue;
            };
            apply_event(
                &tx,
                &t,
                PIN_HOLDER,
                &names,
                &RowEvent::Insert {
                    key: key.clone(),
                    row: row.to_vec(),
                },
                version,
            )?;
            if refresh(&tx, &t, &key, &self.pending)? {
                applied.row(&t.name, key);
            }
        }
        tx.commit()?;
        Ok(applied)
    }

    /// Releases the pin of one row; it leaves unless a subscription covers it.
    pub fn unpin(&mut self, table: &str, key: &Value) -> Result<Applied, StoreError> {
        self.unpin_keys(table, std::slice::from_ref(key))
    }

    /// Releases the pins of several rows of one table in one transaction.
    pub fn unpin_keys(&mut self, table: &str, keys: &[Value]) -> Result<Applied, StoreError> {
        let Some(t) = self.schema.table(table).cloned() else {
            return Ok(Applied::default());
        };
        let tx = self.conn.transaction()?;
        let mut applied = Applied::default();
        for key in keys {
            tx.execute(
                "DELETE FROM _sluice_cover WHERE table_name = ?1 AND key = ?2 AND holder = ?3",
                params![t.name, key, PIN_HOLDER],
            )?;
            if settle(&tx, &t, key, &self.pending)? {
                applied.row(&t.name, key.clone());
            }
        }
        tx.commit()?;
        Ok(applied)
    }

    /// Every pinned row, as (table, key).
    pub fn pinned(&self) -> Result<Vec<(String, Value)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT table_name, key FROM _sluice_cover WHERE holder = ?1")?;
        let rows = stmt.query_map([PIN_HOLDER], |r| {
            Ok((r.get::<_, String>(0)?, value_from_ref(r.get_ref(1)?)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records when a subscription expires (unix milliseconds), or forgets it (`None`).
    pub fn set_sub_expiry(&self, sub: SubId, expires_at: Option<u64>) -> Result<(), StoreError> {
        match expires_at {
            Some(at) => self.conn.execute(
                "INSERT INTO _sluice_expiry (sub, expires_at) VALUES (?1, ?2)
                 ON CONFLICT (sub) DO UPDATE SET expires_at = excluded.expires_at",
                params![sub, at as i64],
            )?,
            None => self
                .conn
                .execute("DELETE FROM _sluice_expiry WHERE sub = ?1", [sub])?,
        };
        Ok(())
    }

    /// Subscriptions with an expiry, as (id, unix milliseconds).
    pub fn sub_expiries(&self) -> Result<Vec<(SubId, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT sub, expires_at FROM _sluice_expiry")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (sub, at) = row?;
            out.push((SubId(sub as u64), at.max(0) as u64));
        }
        Ok(out)
    }
}
