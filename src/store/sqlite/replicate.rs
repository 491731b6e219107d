//! Applying replicated transactions to a replica ([`SqliteStore::apply_replicated`]).
//!
//! A transaction's changes are kept in memory for the fan-out up to
//! [`crate::store::StoreOptions::replicated_changes_in_memory`]. One that makes more
//! (a bulk `UPDATE` in PostgreSQL, a `TRUNCATE` of a large table) is applied and logged
//! in parts inside its one SQLite transaction: each part's changes go to the log and to
//! the observer, then are dropped, and the result names only the tables it changed
//! ([`Replicated::Spilled`]). Its row operations may also arrive in parts
//! ([`SqliteStore::apply_replicated_parts`]), so no size of transaction is held whole.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::super::convert::read_row;
use super::super::window::{CommitObserver, ConnView};
use super::replica::upsert;
use super::resync::{diff_pages, drop_staging, DIFF_PAGE};
use super::{column_list, now_ms, read_meta, SqliteStore};
use crate::schema::{quote_ident, Schema, Table};
use crate::store::StoreError;
use crate::value::Value;
use crate::vocab::{Change, ChangeKind, ClientId, SyncId};

use super::replica::{ReplicatedTxn, RowOp};

/// What applying a replicated transaction did.
#[derive(Debug)]
pub enum Replicated {
    /// Its changes, in order, for the fan-out; empty when it changed nothing or was
    /// applied before.
    Changes(Vec<Change>),
    /// It made more changes than the store holds in memory: they are applied and logged,
    /// but not kept. Whoever follows these tables reads them from the log.
    Spilled {
        /// The tables it changed.
        tables: Vec<String>,
        /// How many changes it made.
        changes: usize,
    },
}

impl Replicated {
    /// The changes kept for the fan-out (none for a spilled transaction).
    pub fn changes(&self) -> &[Change] {
        match self {
            Replicated::Changes(changes) => changes,
            Replicated::Spilled { .. } => &[],
        }
    }
}

impl SqliteStore {
    /// Applies one replicated transaction under its sync id, logs its changes, records
    /// its client transactions and tells `observer`, in one SQLite transaction. A
    /// transaction at or below the head was applied before and is skipped (no changes).
    /// Fails with [`StoreError::Sqlite`].
    pub fn apply_replicated(
        &self,
        txn: ReplicatedTxn,
        observer: &mut dyn CommitObserver,
    ) -> Result<Replicated, StoreError> {
        let mut txn = Some(txn);
        self.apply_replicated_parts(&mut || Ok(txn.take()), observer)
    }

    /// Applies one replicated transaction that arrives in parts: `next` gives them in
    /// order (each a [`ReplicatedTxn`] of the same sync id, all but the last
    /// [`ReplicatedTxn::partial`]), and blocks until it has one. All parts are applied in
    /// one SQLite transaction, committed after the last; `next` answering `None` or an
    /// error before the last part rolls it back (the stream was lost). Fails like
    /// [`SqliteStore::apply_replicated`], and with [`StoreError::Corrupt`] when the parts
    /// end early.
    pub fn apply_replicated_parts(
        &self,
        next: &mut dyn FnMut() -> Result<Option<ReplicatedTxn>, StoreError>,
        observer: &mut dyn CommitObserver,
    ) -> Result<Replicated, StoreError> {
        self.apply_told(Parts::Stream(next), observer)
    }

    /// Applies a resynchronisation as the replicated transaction at `sync_id`: the
    /// difference between the replica's tables and the staged ones
    /// ([`SqliteStore::begin_resync`], [`SqliteStore::load_resync_rows`]), read and
    /// applied a page at a time inside the one SQLite transaction, and recorded as a gap
    /// in the log (no client resumes from a cut inside it). Drops the staging tables.
    /// Fails like [`SqliteStore::apply_replicated`].
    pub fn apply_resync(
        &self,
        sync_id: SyncId,
        observer: &mut dyn CommitObserver,
    ) -> Result<Replicated, StoreError> {
        self.apply_told(Parts::Resync(sync_id), observer)
    }

    /// Applies `parts`, then tells `observer` whether they were committed.
    fn apply_told(
        &self,
        parts: Parts<'_>,
        observer: &mut dyn CommitObserver,
    ) -> Result<Replicated, StoreError> {
        let applied = self.apply_parts_in(parts, observer);
        observer.finished(applied.is_ok());
        applied
    }

    /// Reads the changes logged under `sync_id` (one transaction: a spilled one, to find
    /// who follows its rows), in order, gaps and horizon aside. Returns how many were
    /// read. Fails with [`StoreError::Sqlite`].
    pub fn read_logged_txn(
        &self,
        sync_id: SyncId,
        f: &mut dyn FnMut(Change) -> ControlFlow<()>,
    ) -> Result<usize, StoreError> {
        let mut conn = self.reader()?;
        let tx = conn.transaction()?;
        let mut read = 0;
        let after = SyncId(sync_id.0.saturating_sub(1));
        super::log::read_range(&tx, after, sync_id, &mut |change| {
            read += 1;
            f(change)
        })?;
        Ok(read)
    }

    fn apply_parts_in(
        &self,
        mut parts: Parts<'_>,
        observer: &mut dyn CommitObserver,
    ) -> Result<Replicated, StoreError> {
        let ended =
            || StoreError::Corrupt("a replicated transaction ended before its last part".into());
        let mut conn = self.lock_writer()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (head, _) = read_meta(&tx)?;
        let (sync_id, mut first) = match &mut parts {
            Parts::Stream(next) => {
                let part = next()?.ok_or_else(ended)?;
                (part.sync_id, Some(part))
            }
            Parts::Resync(sync_id) => (*sync_id, None),
        };
        if sync_id <= head {
            // Applied before: the rest of it is read and dropped.
            if let (Parts::Stream(next), Some(mut part)) = (&mut parts, first) {
                while part.partial {
                    part = next()?.ok_or_else(ended)?;
                }
            }
            return Ok(Replicated::Changes(Vec::new()));
        }
        let mut applying = Applying {
            sync_id,
            origin: None,
            changes: Vec::new(),
            bound: self.options.replicated_changes_in_memory.max(1),
            spilled: None,
            log: super::log::ChunkWriter::default(),
        };
        let mut origins: Vec<(ClientId, u64)> = Vec::new();
        let resync = match parts {
            Parts::Stream(next) => loop {
                let mut part = match first.take() {
                    Some(part) => part,
                    None => next()?.ok_or_else(ended)?,
                };
                origins.append(&mut part.origins);
                if applying.origin.is_none() {
                    applying.origin = origins.first().cloned();
                }
                for op in &part.ops {
                    applying.op(&tx, &self.schema, op, observer)?;
                }
                if !part.partial {
                    break part.resync;
                }
            },
            Parts::Resync(_) => {
                let page = DIFF_PAGE.min(applying.bound);
                diff_pages(&tx, &self.schema, page, &mut |ops| {
                    for op in &ops {
                        applying.op(&tx, &self.schema, op, observer)?;
                    }
                    Ok(())
                })?;
                drop_staging(&tx, &self.schema)?;
                true
            }
        };
        let outcome = applying.finish(&tx, &self.schema, observer)?;
        let now = now_ms();
        for (client, seq) in &origins {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO _sluice_client_txns \
                 (client_id, seq, sync_id, recorded_at_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![client.0, *seq as i64, sync_id, now])?;
        }
        if resync {
            super::log::record_gap(&tx, head, sync_id)?;
        }
        tx.prepare_cached("UPDATE _sluice_meta SET head = ?1 WHERE id = 0")?
            .execute([sync_id])?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO _sluice_commits (sync_id, committed_at_ms) VALUES (?1, ?2)",
        )?
        .execute(params![sync_id, now])?;
        tx.commit()?;
        self.head.store(sync_id.0, Ordering::Release);
        Ok(outcome)
    }
}

/// Where a replicated transaction's row operations come from.
enum Parts<'a> {
    /// Parts handed over one by one (the replication stream).
    Stream(&'a mut dyn FnMut() -> Result<Option<ReplicatedTxn>, StoreError>),
    /// The difference from the staged tables (a resynchronisation at this sync id).
    Resync(SyncId),
}

/// One replicated transaction being applied.
struct Applying {
    sync_id: SyncId,
    /// The client transaction it carries, when known (its record comes first).
    origin: Option<(ClientId, u64)>,
    /// Changes not yet logged.
    changes: Vec<Change>,
    /// The most changes held before they are logged and dropped.
    bound: usize,
    /// Once changes were dropped: the tables changed and how many changes.
    spilled: Option<(BTreeSet<String>, usize)>,
    log: super::log::ChunkWriter,
}

impl Applying {
    /// Applies one row operation and records its changes.
    fn op(
        &mut self,
        tx: &Transaction,
        schema: &Schema,
        op: &RowOp,
        observer: &mut dyn CommitObserver,
    ) -> Result<(), StoreError> {
        match op {
            RowOp::Upsert { table, row } => {
                let Some(Some(key)) = row.get(table.pk) else {
                    return Err(StoreError::Corrupt(format!(
                        "replicated row of {} without its key",
                        table.name
                    )));
                };
                let old = row_by_key(tx, table, key)?;
                let new: Vec<Value> = row
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Some(v) => v.clone(),
                        None => old.as_ref().map_or(Value::Null, |o| o[i].clone()),
                    })
                    .collect();
                if old.as_ref() == Some(&new) {
                    return Ok(());
                }
                upsert(tx, table, &new)?;
                self.change(tx, schema, table, old, Some(new), observer)
            }
            RowOp::Delete { table, key } => match row_by_key(tx, table, key)? {
                Some(old) => {
                    delete_key(tx, table, key)?;
                    self.change(tx, schema, table, Some(old), None, observer)
                }
                None => Ok(()),
            },
            RowOp::Truncate { table } => {
                // In batches, each deleted before its changes are recorded: the writer's
                // view always holds exactly what the changes so far leave.
                let batch = self.bound.clamp(1, TRUNCATE_BATCH);
                loop {
                    let rows: Vec<Vec<Value>> = {
                        let mut stmt = tx.prepare_cached(&format!(
                            "SELECT {} FROM {} LIMIT ?1",
                            column_list(table),
                            quote_ident(&table.name)
                        ))?;
                        let width = table.columns.len();
                        let rows = stmt.query_map([batch as i64], |r| read_row(r, width))?;
                        rows.collect::<Result<_, _>>()?
                    };
                    if rows.is_empty() {
                        return Ok(());
                    }
                    for old in rows {
                        delete_key(tx, table, &old[table.pk])?;
                        self.change(tx, schema, table, Some(old), None, observer)?;
                    }
                }
            }
        }
    }

    /// Records one change; past the bound, logs the changes held and drops them.
    fn change(
        &mut self,
        tx: &Transaction,
        schema: &Schema,
        table: &Table,
        old: Option<Vec<Value>>,
        new: Option<Vec<Value>>,
        observer: &mut dyn CommitObserver,
    ) -> Result<(), StoreError> {
        let kind = match (&old, &new) {
            (None, _) => ChangeKind::Insert,
            (Some(_), Some(_)) => ChangeKind::Update,
            (Some(_), None) => ChangeKind::Delete,
        };
        let image = new.as_ref().or(old.as_ref()).expect("an image");
        self.changes.push(Change {
            sync_id: self.sync_id,
            table: table.name.clone(),
            key: image[table.pk].clone(),
            kind,
            old,
            new,
            origin: self.origin.clone(),
        });
        if self.changes.len() >= self.bound {
            self.spill(tx, schema, observer)?;
        }
        Ok(())
    }

    /// Logs the changes held, tells the observer, and drops them.
    fn spill(
        &mut self,
        tx: &Transaction,
        schema: &Schema,
        observer: &mut dyn CommitObserver,
    ) -> Result<(), StoreError> {
        if self.changes.is_empty() {
            return Ok(());
        }
        self.log_and_observe(tx, schema, observer)?;
        observer.spilled();
        let (tables, count) = self.spilled.get_or_insert_with(Default::default);
        *count += self.changes.len();
        for change in &self.changes {
            if !tables.contains(&change.table) {
                tables.insert(change.table.clone());
            }
        }
        self.changes.clear();
        Ok(())
    }

    fn log_and_observe(
        &mut self,
        tx: &Transaction,
        schema: &Schema,
        observer: &mut dyn CommitObserver,
    ) -> Result<(), StoreError> {
        super::log::append(
            tx,
            &mut self.log,
            &self.changes,
            &super::log::schema_pk(schema),
        )?;
        if !self.changes.is_empty() {
            observer.committed(&ConnView(tx), self.sync_id, &self.changes)?;
        }
        Ok(())
    }

    /// Logs what is left: the whole transaction's changes, or its last part's.
    fn finish(
        mut self,
        tx: &Transaction,
        schema: &Schema,
        observer: &mut dyn CommitObserver,
    ) -> Result<Replicated, StoreError> {
        if self.spilled.is_none() {
            self.log_and_observe(tx, schema, observer)?;
            return Ok(Replicated::Changes(self.changes));
        }
        self.spill(tx, schema, observer)?;
        let (tables, changes) = self.spilled.unwrap_or_default();
        Ok(Replicated::Spilled {
            tables: tables.into_iter().collect(),
            changes,
        })
    }
}

/// Rows a truncate reads at a time (fewer when the store holds fewer changes).
const TRUNCATE_BATCH: usize = 1_000;

fn row_by_key(
    conn: &Connection,
    table: &Table,
    key: &Value,
) -> Result<Option<Vec<Value>>, StoreError> {
    let width = table.columns.len();
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {} FROM {} WHERE {} = ?1",
            column_list(table),
            quote_ident(&table.name),
            quote_ident(&table.pk_column().name)
        ))?
        .query_row([key], |r| read_row(r, width))
        .optional()?)
}

fn delete_key(conn: &Connection, table: &Table, key: &Value) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "DELETE FROM {} WHERE {} = ?1",
        quote_ident(&table.name),
        quote_ident(&table.pk_column().name)
    ))?
    .execute([key])?;
    Ok(())
}
