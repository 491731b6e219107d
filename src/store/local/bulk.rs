//! The set-based join of a snapshot nothing else touches: when no other holder covers a
//! row of its table, no pending local transaction writes that table, and no row there
//! is newer than the snapshot, the snapshot is the table's whole server state and its
//! whole visible content. The join then replaces the table's server state with the
//! subscription's staging table (renamed: see `stage_table`; or one `INSERT … SELECT`
//! from the shared typed staging rows), its visible rows with one `INSERT … SELECT` from
//! the server state, and its coverage and row versions with one row saying the
//! subscription covers the table whole (see `whole`), instead of five statements per
//! row; the result is the per-row join's, and it runs inside the join's one
//! transaction.
//!
//! Anything else (another subscription or a pin sharing the table, a pending write on
//! it, rows staged as encoded events) takes the per-row join, which reconciles each row.
//!
//! Private to the local store; depends only on the schema and the staging layout.

use std::collections::BTreeSet;

use rusqlite::{params, Connection, OptionalExtension, Params};

use super::rows::shadow;
use super::stage::value_column;
use super::{stage_table, whole, Applied};
use crate::schema::{quote_ident, Schema, Table};
use crate::store::convert::value_from_ref;
use crate::store::error::StoreError;
use crate::vocab::{SubId, SyncId};

/// Joins the typed snapshot rows bootstrap `sub` staged, read at sync id `w` and
/// carrying `columns`, set-based when the fast path applies (see the module docs);
/// returns false, having written nothing, when the per-row join must do it.
pub(super) fn join_snapshot(
    conn: &Connection,
    schema: &Schema,
    sub: SubId,
    columns: &[String],
    w: SyncId,
    pending_tables: &BTreeSet<String>,
    applied: &mut Applied,
) -> Result<bool, StoreError> {
    // Rows staged in the subscription's own table (see `stage_table`), or else in the
    // shared typed staging table.
    let own = stage_table::exists(conn, sub)?;
    let table = if own {
        staged_table(conn, schema, sub, pending_tables)?
    } else {
        sole_table(conn, schema, sub, columns, pending_tables)?
    };
    let Some(table) = table else {
        return Ok(false);
    };
    let name = &table.name;
    let overlaps = [
        // Another holder (a subscription or a pin) covers rows of the table.
        "SELECT 1 FROM _sluice_cover WHERE table_name = ?1 AND holder != ?2 LIMIT 1",
        "SELECT 1 FROM _sluice_cover_table WHERE table_name = ?1 AND holder != ?2",
        // The subscription covers rows of another table (its snapshot must release them).
        "SELECT 1 FROM _sluice_cover WHERE holder = ?2 AND table_name != ?1 LIMIT 1",
        "SELECT 1 FROM _sluice_cover_table WHERE holder = ?2 AND table_name != ?1 LIMIT 1",
    ];
    for sql in overlaps {
        if exists(conn, sql, params![name, sub])? {
            return Ok(false);
        }
    }
    // Snapshot rows staged as encoded events (a delete, or rows an earlier version of
    // the store staged) are applied row by row.
    if exists(
        conn,
        "SELECT 1 FROM _sluice_stage WHERE sub = ?1 AND sync_id IS NULL LIMIT 1",
        [sub],
    )? {
        return Ok(false);
    }
    // A row newer than the snapshot keeps its content in the per-row join.
    let newer = [
        "SELECT 1 FROM _sluice_rowver WHERE table_name = ?1 AND sync > ?2 LIMIT 1",
        "SELECT 1 FROM _sluice_cover_table WHERE table_name = ?1 AND sync > ?2",
    ];
    for sql in newer {
        if exists(conn, sql, params![name, w.0 as i64])? {
            return Ok(false);
        }
    }
    let visible = quote_ident(name);
    let server = shadow(name);
    let pk = quote_ident(&table.pk_column().name);
    // Whatever the table shows now is this subscription's old snapshot (nothing else
    // covers it, nothing pending writes it): it is replaced whole.
    note_keys(
        conn,
        applied,
        name,
        &format!("SELECT {pk} FROM {visible}"),
        [],
    )?;
    conn.execute("DELETE FROM _sluice_cover WHERE table_name = ?1", [name])?;
    conn.execute("DELETE FROM _sluice_rowver WHERE table_name = ?1", [name])?;
    conn.execute_batch(&format!("DELETE FROM {visible};"))?;
    // The subscription covers the table whole, every row at the snapshot's sync id: one
    // row for the table instead of a coverage and a version row per key (see `whole`).
    whole::set(conn, name, sub, w)?;
    // The server state holds exactly the columns the subscription carries (the others
    // are NULL: no holder vouches for them); a row staged twice keeps its last content.
    if own {
        // The staging table is laid out as the server state: it becomes it.
        conn.execute_batch(&format!(
            "DROP TABLE {server}; ALTER TABLE {} RENAME TO {server};",
            stage_table::name(sub)
        ))?;
    } else {
        let (targets, sources) = carried(&table, columns);
        conn.execute_batch(&format!("DELETE FROM {server};"))?;
        conn.execute(
            &format!(
                "INSERT OR REPLACE INTO {server} ({pk}{targets}) SELECT key{sources}
                 FROM _sluice_stage_rows WHERE sub = ?1 ORDER BY n"
            ),
            [sub],
        )?;
    }
    // With nothing pending on the table, the visible rows are the server state. The two
    // tables are laid out alike, so `INSERT … SELECT *` lets SQLite copy each record
    // as it is stored, without decoding it (its transfer optimization).
    if own && stage_table::laid_out_as(conn, name, &table)? {
        conn.execute_batch(&format!("INSERT INTO {visible} SELECT * FROM {server}"))?;
    } else {
        let all: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let all = all.join(", ");
        conn.execute_batch(&format!(
            "INSERT INTO {visible} ({all}) SELECT {all} FROM {server}"
        ))?;
    }
    note_keys(
        conn,
        applied,
        name,
        &format!("SELECT {pk} FROM {server}"),
        [],
    )?;
    Ok(true)
}

/// The table of `sub`'s snapshot rows staged in its own staging table, when no pending
/// write touches it, its layout is still the table's, and no row of `sub` waits in the
/// shared staging table; `None` otherwise.
fn staged_table(
    conn: &Connection,
    schema: &Schema,
    sub: SubId,
    pending_tables: &BTreeSet<String>,
) -> Result<Option<std::sync::Arc<Table>>, StoreError> {
    let Some(target) = stage_table::target(conn, schema, sub)? else {
        return Ok(None);
    };
    let table = target.table;
    if pending_tables.contains(&table.name)
        || !stage_table::matches(conn, sub, &table)?
        || exists(
            conn,
            "SELECT 1 FROM _sluice_stage_rows WHERE sub = ?1 LIMIT 1",
            [sub],
        )?
    {
        return Ok(None);
    }
    Ok(Some(table))
}

/// The table of `sub`'s typed snapshot rows when they all belong to one schema table
/// that no pending write touches and all carry `columns` (the rows line up with the
/// columns the subscription was described with); `None` otherwise, or when none are
/// staged.
fn sole_table(
    conn: &Connection,
    schema: &Schema,
    sub: SubId,
    columns: &[String],
    pending_tables: &BTreeSet<String>,
) -> Result<Option<std::sync::Arc<Table>>, StoreError> {
    let (count, first, last, narrowest, widest): (i64, Option<String>, Option<String>, i64, i64) =
        conn.query_row(
            "SELECT count(*), min(table_name), max(table_name), coalesce(min(width), 0),
                    coalesce(max(width), 0)
             FROM _sluice_stage_rows WHERE sub = ?1",
            [sub],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )?;
    let width = columns.len() as i64;
    if count == 0 || first != last || narrowest != width || widest != width || width == 0 {
        return Ok(None);
    }
    let Some(table) = first.and_then(|t| schema.table(&t).cloned()) else {
        return Ok(None);
    };
    if pending_tables.contains(&table.name) {
        return Ok(None);
    }
    Ok(Some(table))
}

/// The table's columns a subscription's rows carry, other than the primary key (staged
/// apart), as `, "col"` targets and the matching `, vN` staging columns; a column named
/// twice is taken once.
fn carried(table: &Table, columns: &[String]) -> (String, String) {
    let mut seen = BTreeSet::new();
    let (mut targets, mut sources) = (String::new(), String::new());
    for (i, name) in columns.iter().enumerate() {
        let Some(c) = table.column_index(name) else {
            continue;
        };
        if c == table.pk || !seen.insert(c) {
            continue;
        }
        targets.push_str(&format!(", {}", quote_ident(&table.columns[c].name)));
        sources.push_str(&format!(", {}", value_column(i)));
    }
    (targets, sources)
}

fn exists(conn: &Connection, sql: &str, params: impl Params) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(sql)?
        .query_row(params, |_| Ok(()))
        .optional()?
        .is_some())
}

/// Records the keys a query returns as changed rows of `table`, reading only until the
/// notification is full.
fn note_keys(
    conn: &Connection,
    applied: &mut Applied,
    table: &str,
    sql: &str,
    params: impl Params,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let mut keys = stmt.query(params)?;
    while let Some(r) = keys.next()? {
        applied.row(table, value_from_ref(r.get_ref(0)?));
        if applied.truncated {
            break;
        }
    }
    Ok(())
}
