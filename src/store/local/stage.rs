//! The staging area: what a subscription receives before it joins the consistent cut.
//!
//! Snapshot rows are staged typed. Those that carry their subscription's described
//! columns go to the subscription's own staging table, laid out as the server state (see
//! `stage_table`); any others to `_sluice_stage_rows`, one SQLite column per value
//! (`v0`, `v1`, … in the order of the subscription's columns, added as wider rows
//! arrive). Either way a join moves them into the server-state and visible tables
//! set-based (see `bulk`) and never decodes them one by one. Changes (replayed
//! or live, with a sync id) and anything else stay in `_sluice_stage` as encoded events:
//! they are few, and applied row by row in sync-id order.
//!
//! Private to the local store; every function runs inside the caller's transaction.

use rusqlite::{Connection, OptionalExtension};

use super::stage_table;
use crate::schema::Schema;
use crate::store::convert::value_from_ref;
use crate::store::error::StoreError;
use crate::value::Value;
use crate::vocab::{RowEvent, SubId, SyncId};

/// Typed snapshot rows: `width` values in `v0..` (the subscription's columns, in order),
/// the primary key apart (a projection need not carry it). Value columns have no declared
/// type, so a value keeps its SQLite type until it lands in a typed table.
pub(super) const STAGE_ROWS_DDL: &str = "
CREATE TABLE IF NOT EXISTS _sluice_stage_rows (
    n INTEGER PRIMARY KEY, sub INTEGER NOT NULL, table_name TEXT NOT NULL,
    width INTEGER NOT NULL, key NOT NULL);
";

/// Bound parameters one multi-row `INSERT` carries at most (SQLite allows 32,766).
const MAX_INSERT_PARAMS: usize = 16_000;

/// Rows one multi-row `INSERT` carries at most.
const MAX_INSERT_ROWS: usize = 256;

/// Parameters of one staged row besides its values: sub, table, width, key.
const ROW_HEAD: usize = 4;

/// The name of value column `i` of `_sluice_stage_rows`.
pub(super) fn value_column(i: usize) -> String {
    format!("v{i}")
}

/// How many value columns `_sluice_stage_rows` has.
pub(super) fn stage_width(conn: &Connection) -> Result<usize, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('_sluice_stage_rows') WHERE name GLOB 'v[0-9]*'",
        [],
        |r| r.get(0),
    )?;
    Ok(n as usize)
}

/// Adds value columns until `_sluice_stage_rows` holds rows `width` values wide.
fn widen(conn: &Connection, have: &mut usize, width: usize) -> Result<(), StoreError> {
    while *have < width {
        conn.execute_batch(&format!(
            "ALTER TABLE _sluice_stage_rows ADD COLUMN {}",
            value_column(*have)
        ))?;
        *have += 1;
    }
    Ok(())
}

/// A snapshot row's key and values, when the item is one (a row-carrying event with no
/// sync id); anything else is staged as an encoded event.
fn snapshot_row(sync_id: Option<SyncId>, event: &RowEvent) -> Option<(&Value, &[Value])> {
    match (sync_id, event) {
        (None, RowEvent::Insert { key, row } | RowEvent::Update { key, row }) => {
            Some((key, row.as_slice()))
        }
        _ => None,
    }
}

/// Stages items in order: runs of snapshot rows that fit their subscription's staging
/// table go there (see `stage_table`), other runs of snapshot rows of one width to
/// `_sluice_stage_rows`, both in multi-row `INSERT`s; everything else to `_sluice_stage`.
pub(super) fn stage_in(
    conn: &Connection,
    schema: &Schema,
    items: &[(SubId, Option<SyncId>, String, RowEvent)],
) -> Result<(), StoreError> {
    // Read from the database, not kept in memory: a rolled-back transaction takes the
    // columns it added with it.
    let mut width: Option<usize> = None;
    // Each subscription's staging table, looked up once per call.
    let mut targets: Vec<(SubId, Option<stage_table::Target>)> = Vec::new();
    let mut rest = items;
    while let Some((first, _)) = rest.split_first() {
        let (sub, sync_id, table, event) = first;
        let target = match snapshot_row(*sync_id, event) {
            None => None,
            Some(_) => {
                let i = match targets.iter().position(|(s, _)| s == sub) {
                    Some(i) => i,
                    None => {
                        targets.push((*sub, stage_table::target(conn, schema, *sub)?));
                        targets.len() - 1
                    }
                };
                targets[i].1.as_ref()
            }
        };
        if let Some(target) = target {
            // A run of this subscription's rows that fit its staging table.
            let rows: Vec<(&Value, &[Value])> = rest
                .iter()
                .map_while(|(s, sync_id, t, e)| {
                    snapshot_row(*sync_id, e).filter(|(_, row)| s == sub && target.fits(t, row))
                })
                .collect();
            if !rows.is_empty() {
                stage_table::insert(conn, *sub, target, &rows)?;
                rest = &rest[rows.len()..];
                continue;
            }
        }
        let Some((_, row)) = snapshot_row(*sync_id, event) else {
            let blob = postcard::to_allocvec(event)?;
            conn.prepare_cached(
                "INSERT INTO _sluice_stage (sub, sync_id, table_name, event)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(rusqlite::params![
                *sub,
                sync_id.map(|s| s.0 as i64),
                table,
                blob
            ])?;
            rest = &rest[1..];
            continue;
        };
        let w = row.len();
        let per_statement = (MAX_INSERT_PARAMS / (ROW_HEAD + w)).clamp(1, MAX_INSERT_ROWS);
        let run = rest
            .iter()
            .take(per_statement)
            .take_while(|(_, s, _, e)| snapshot_row(*s, e).is_some_and(|(_, r)| r.len() == w))
            .count();
        let have = match &mut width {
            Some(have) => have,
            None => width.insert(stage_width(conn)?),
        };
        widen(conn, have, w)?;
        insert_rows(conn, w, &rest[..run])?;
        rest = &rest[run..];
    }
    Ok(())
}

/// One multi-row `INSERT` of snapshot rows all `w` values wide.
fn insert_rows(
    conn: &Connection,
    w: usize,
    items: &[(SubId, Option<SyncId>, String, RowEvent)],
) -> Result<(), StoreError> {
    let columns: Vec<String> = (0..w).map(value_column).collect();
    let marks = format!("({})", vec!["?"; ROW_HEAD + w].join(", "));
    let sql = format!(
        "INSERT INTO _sluice_stage_rows (sub, table_name, width, key{}{}) VALUES {}",
        if w == 0 { "" } else { ", " },
        columns.join(", "),
        vec![marks; items.len()].join(", ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut i = 1;
    for (sub, sync_id, table, event) in items {
        let (key, row) = snapshot_row(*sync_id, event).expect("a run of snapshot rows");
        stmt.raw_bind_parameter(i, *sub)?;
        stmt.raw_bind_parameter(i + 1, table)?;
        stmt.raw_bind_parameter(i + 2, w as i64)?;
        stmt.raw_bind_parameter(i + 3, key)?;
        for (j, v) in row.iter().enumerate() {
            stmt.raw_bind_parameter(i + ROW_HEAD + j, v)?;
        }
        i += ROW_HEAD + w;
    }
    stmt.raw_execute()?;
    Ok(())
}

/// Discards what `sub` staged, in every table.
pub(super) fn clear(conn: &Connection, sub: SubId) -> Result<(), StoreError> {
    conn.execute("DELETE FROM _sluice_stage WHERE sub = ?1", [sub])?;
    stage_table::drop(conn, sub)?;
    clear_rows(conn, sub)
}

/// Discards `sub`'s typed snapshot rows; when they are all the table holds (one bootstrap
/// at a time, the usual case), by emptying it, which SQLite does without visiting rows.
pub(super) fn clear_rows(conn: &Connection, sub: SubId) -> Result<(), StoreError> {
    let others = conn
        .prepare_cached("SELECT 1 FROM _sluice_stage_rows WHERE sub != ?1 LIMIT 1")?
        .query_row([sub], |_| Ok(()))
        .optional()?
        .is_some();
    if others {
        conn.execute("DELETE FROM _sluice_stage_rows WHERE sub = ?1", [sub])?;
    } else {
        conn.execute("DELETE FROM _sluice_stage_rows", [])?;
    }
    Ok(())
}

/// Calls `each` with every typed snapshot row `sub` staged, in staging order, as
/// (table, insert event).
pub(super) fn for_each_row(
    conn: &Connection,
    sub: SubId,
    mut each: impl FnMut(String, RowEvent) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let width = stage_width(conn)?;
    let columns: String = (0..width)
        .map(|i| format!(", {}", value_column(i)))
        .collect();
    let mut stmt = conn.prepare(&format!(
        "SELECT table_name, width, key{columns} FROM _sluice_stage_rows WHERE sub = ?1
         ORDER BY n"
    ))?;
    let mut rows = stmt.query([sub])?;
    while let Some(r) = rows.next()? {
        let table: String = r.get(0)?;
        let w = r.get::<_, i64>(1)?.max(0) as usize;
        let key = value_from_ref(r.get_ref(2)?);
        let row = (0..w.min(width))
            .map(|i| Ok(value_from_ref(r.get_ref(3 + i)?)))
            .collect::<Result<Vec<Value>, rusqlite::Error>>()?;
        each(table, RowEvent::Insert { key, row })?;
    }
    Ok(())
}
