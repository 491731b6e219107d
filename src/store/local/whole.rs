//! Whole-table coverage: a table one subscription covers alone, recorded once for the
//! table instead of once per row.
//!
//! A set-based bootstrap (see `bulk`) leaves a table whose every server-state row is
//! covered by its one subscription, at the snapshot's sync id or later. Instead of a
//! `_sluice_cover` and a `_sluice_rowver` row per key, `_sluice_cover_table` then holds
//! one row: the table, its holder, and the snapshot's sync id (the version of every row
//! without a `_sluice_rowver` row of its own). While that row exists:
//!
//! - the holder covers exactly the rows of `_sluice_srv_T` (a row it releases leaves the
//!   server state at once), and no other holder covers any row of `T`, so
//!   `_sluice_cover` has no row for `T`;
//! - the holder's own events update the server state as usual (a version row is written
//!   for a row they change), but write no coverage;
//! - anything else that would cover a row of `T` (another subscription's event, a pin,
//!   a per-row join) first *materializes* the table's coverage and versions as rows,
//!   after which the per-row bookkeeping applies unchanged;
//! - releasing the holder (unsubscribe) empties the table's server state at once, and
//!   its visible rows but for those pending local transactions write.
//!
//! Private to the local store; every function runs inside the caller's transaction.

use rusqlite::{params, Connection, OptionalExtension};

use super::rows::{read_one, refresh, same_key, shadow, target};
use super::{Applied, Pending};
use crate::schema::{quote_ident, Schema, Table};
use crate::store::convert::value_from_ref;
use crate::store::error::StoreError;
use crate::value::Value;
use crate::vocab::{SubId, SyncId};

/// One row per table covered whole: its holder and the version of its rows that have
/// no `_sluice_rowver` row.
pub(super) const WHOLE_DDL: &str = "
CREATE TABLE IF NOT EXISTS _sluice_cover_table (
    table_name TEXT PRIMARY KEY, holder INTEGER NOT NULL, sync INTEGER NOT NULL);
";

/// The holder covering `table` whole and the version of its rows, if one does.
pub(super) fn holder(
    conn: &Connection,
    table: &str,
) -> Result<Option<(SubId, SyncId)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT holder, sync FROM _sluice_cover_table WHERE table_name = ?1")?
        .query_row([table], |r| {
            Ok((
                SubId(r.get::<_, i64>(0)? as u64),
                SyncId(r.get::<_, i64>(1)? as u64),
            ))
        })
        .optional()?)
}

/// Records that `sub` covers `table` whole, its rows at version `w` (the caller has
/// emptied the table's per-row coverage and versions).
pub(super) fn set(conn: &Connection, table: &str, sub: SubId, w: SyncId) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO _sluice_cover_table (table_name, holder, sync) VALUES (?1, ?2, ?3)
         ON CONFLICT (table_name) DO UPDATE SET holder = excluded.holder, sync = excluded.sync",
        params![table, sub, w.0 as i64],
    )?;
    Ok(())
}

/// Forgets `table`'s whole coverage without writing rows for it (the table is emptied
/// or replaced).
pub(super) fn forget(conn: &Connection, table: &str) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM _sluice_cover_table WHERE table_name = ?1",
        [table],
    )?;
    Ok(())
}

/// Whether the server state of `table` holds `key` (what whole coverage covers).
pub(super) fn holds(conn: &Connection, table: &Table, key: &Value) -> Result<bool, StoreError> {
    let sql = format!(
        "SELECT 1 FROM {} WHERE {} = ?1",
        shadow(&table.name),
        quote_ident(&table.pk_column().name)
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([key], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Turns `table`'s whole coverage, if any, into a coverage row and a version row per
/// server-state row.
pub(super) fn materialize(conn: &Connection, table: &Table) -> Result<(), StoreError> {
    let Some((sub, w)) = holder(conn, &table.name)? else {
        return Ok(());
    };
    let server = shadow(&table.name);
    let pk = quote_ident(&table.pk_column().name);
    conn.execute(
        &format!(
            "INSERT OR IGNORE INTO _sluice_cover (table_name, key, holder)
             SELECT ?1, {pk}, ?2 FROM {server}"
        ),
        params![table.name, sub],
    )?;
    // Rows changed since the snapshot have their own version already.
    conn.execute(
        &format!(
            "INSERT OR IGNORE INTO _sluice_rowver (table_name, key, sync)
             SELECT ?1, {pk}, ?2 FROM {server}"
        ),
        params![table.name, w.0 as i64],
    )?;
    forget(conn, &table.name)
}

/// Releases every table `holder` covers whole, set-based: nothing else covers their rows,
/// so they all leave the server state, and the visible table keeps only what pending
/// local transactions write (recomputed per key they touch). Changed rows are noted in
/// `applied`.
pub(super) fn release_holder(
    conn: &Connection,
    schema: &Schema,
    holder: SubId,
    pending: &[Pending],
    applied: &mut Applied,
) -> Result<(), StoreError> {
    for name in tables(conn, holder)? {
        let Some(table) = schema.table(&name).cloned() else {
            forget(conn, &name)?;
            continue;
        };
        let visible = quote_ident(&table.name);
        let pk = quote_ident(&table.pk_column().name);
        // Rows pending transactions write: their visible content before the release.
        let mut kept: Vec<(Value, Option<Vec<Value>>)> = Vec::new();
        for p in pending {
            for m in &p.mutations {
                let Some((t, key)) = target(schema, m) else {
                    continue;
                };
                if t.name == table.name && !kept.iter().any(|(k, _)| same_key(k, &key)) {
                    let before = read_one(conn, &visible, &table, &key)?;
                    kept.push((key, before));
                }
            }
        }
        {
            let mut stmt = conn.prepare(&format!("SELECT {pk} FROM {visible}"))?;
            let mut keys = stmt.query([])?;
            while let Some(r) = keys.next()? {
                let key = value_from_ref(r.get_ref(0)?);
                if !kept.iter().any(|(k, _)| same_key(k, &key)) {
                    applied.row(&table.name, key);
                    if applied.truncated {
                        break;
                    }
                }
            }
        }
        conn.execute(
            "DELETE FROM _sluice_rowver WHERE table_name = ?1",
            [&table.name],
        )?;
        conn.execute_batch(&format!(
            "DELETE FROM {}; DELETE FROM {visible};",
            shadow(&table.name)
        ))?;
        forget(conn, &table.name)?;
        for (key, before) in kept {
            refresh(conn, &table, &key, pending)?;
            if read_one(conn, &visible, &table, &key)? != before {
                applied.row(&table.name, key);
            }
        }
    }
    Ok(())
}

/// The tables `holder` covers whole.
fn tables(conn: &Connection, holder: SubId) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT table_name FROM _sluice_cover_table WHERE holder = ?1")?;
    let rows = stmt.query_map([holder], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Materializes every table `holder` covers whole.
pub(super) fn materialize_holder(
    conn: &Connection,
    schema: &Schema,
    holder: SubId,
) -> Result<(), StoreError> {
    for name in tables(conn, holder)? {
        match schema.table(&name) {
            Some(t) => materialize(conn, t)?,
            None => forget(conn, &name)?,
        }
    }
    Ok(())
}
