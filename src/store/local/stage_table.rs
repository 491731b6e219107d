//! Per-subscription staging tables: a bootstrap's snapshot rows staged in a table laid
//! out like the server-state table they are headed for.
//!
//! Snapshot rows that carry exactly the columns their subscription was described with
//! are staged in `_sluice_stage_<sub>`, created with the same columns, types and primary
//! key as `_sluice_srv_T` (the columns the subscription does not carry stay NULL, as the
//! server state keeps them; a key staged twice keeps its last row). When the set-based
//! join applies (see `bulk`), the staging table *becomes* the server state by a rename
//! inside the join's transaction: the rows are not copied again. Otherwise the per-row
//! join reads them back as insert events.
//!
//! When nothing else covers rows of the table and no pending local transaction writes
//! it as the staging starts, every staged row also goes to `_sluice_stage_view_<sub>`,
//! created as the visible table is, in the same transactions: a copy of the visible
//! table the set-based join would write. The join then renames it in place of the
//! visible table instead of copying a million rows while it holds the store. Until then
//! the app reads the visible table as it was; when the join cannot use the copy (a
//! pending write arrived meanwhile, another holder, a changed layout) it is dropped.
//!
//! Rows that do not fit (another table, another width, a subscription not described)
//! are staged in the shared `_sluice_stage_rows` (see `stage`).
//!
//! Private to the local store; every function runs inside the caller's transaction.

use std::collections::BTreeSet;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension};

use super::rows::local_ddl;
use crate::schema::{quote_ident, Schema, Table};
use crate::store::convert::value_from_ref;
use crate::store::error::StoreError;
use crate::value::Value;
use crate::vocab::{RowEvent, SubId};

/// Bound parameters one multi-row `INSERT` carries at most (SQLite allows 32,766).
const MAX_INSERT_PARAMS: usize = 16_000;

/// Rows one multi-row `INSERT` carries at most.
const MAX_INSERT_ROWS: usize = 256;

/// The unquoted name of `sub`'s staging table.
fn bare_name(sub: SubId) -> String {
    format!("_sluice_stage_{}", sub.0)
}

/// The quoted name of `sub`'s staging table.
pub(super) fn name(sub: SubId) -> String {
    quote_ident(&bare_name(sub))
}

/// The unquoted name of `sub`'s staged copy of the visible table.
fn bare_view_name(sub: SubId) -> String {
    format!("_sluice_stage_view_{}", sub.0)
}

/// The quoted name of `sub`'s staged copy of the visible table.
pub(super) fn view_name(sub: SubId) -> String {
    quote_ident(&bare_view_name(sub))
}

/// Where a subscription's snapshot rows are staged typed.
pub(super) struct Target {
    /// The table its rows belong to.
    pub table: Arc<Table>,
    /// How many values each of its rows carries.
    width: usize,
    /// The columns a row's values land in, other than the key: (value index, column).
    carried: Vec<(usize, String)>,
}

impl Target {
    /// Whether a snapshot row of `table` with `row` fits this target.
    pub fn fits(&self, table: &str, row: &[Value]) -> bool {
        row.len() == self.width && table.eq_ignore_ascii_case(&self.table.name)
    }
}

/// The target of `sub`'s snapshot rows, once it is described with a schema table and at
/// least one column.
pub(super) fn target(
    conn: &Connection,
    schema: &Schema,
    sub: SubId,
) -> Result<Option<Target>, StoreError> {
    let described: Option<(Option<String>, Option<Vec<u8>>)> = conn
        .prepare_cached("SELECT table_name, columns FROM _sluice_subs WHERE id = ?1")?
        .query_row([sub], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((Some(table), Some(columns))) = described else {
        return Ok(None);
    };
    let Some(table) = schema.table(&table).cloned() else {
        return Ok(None);
    };
    let columns: Vec<String> = postcard::from_bytes(&columns)?;
    if columns.is_empty() {
        return Ok(None);
    }
    let mut seen = BTreeSet::new();
    let mut carried = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        let Some(index) = table.column_index(c) else {
            continue;
        };
        // The key is staged apart; a column named twice is taken once.
        if index != table.pk && seen.insert(index) {
            carried.push((i, quote_ident(&table.columns[index].name)));
        }
    }
    Ok(Some(Target {
        width: columns.len(),
        table,
        carried,
    }))
}

/// Stages snapshot rows (key, values) of `sub`, all fitting `target`, in multi-row
/// `INSERT`s; creates the staging table first if needed. The first rows also decide
/// whether a copy of the visible table is staged along (see the module docs):
/// `pending_tables` are the tables pending local transactions write.
pub(super) fn insert(
    conn: &Connection,
    sub: SubId,
    target: &Target,
    rows: &[(&Value, &[Value])],
    pending_tables: &BTreeSet<String>,
) -> Result<(), StoreError> {
    let table = &target.table;
    let first = !exists(conn, sub)?;
    conn.execute_batch(&local_ddl(table, &name(sub)))?;
    let view = if first {
        let staged_along = may_stage_view(conn, table, sub, pending_tables)?;
        if staged_along {
            conn.execute_batch(&local_ddl(table, &view_name(sub)))?;
        }
        staged_along
    } else {
        table_exists(conn, &bare_view_name(sub))?
    };
    insert_into(conn, &name(sub), target, rows)?;
    if view {
        insert_into(conn, &view_name(sub), target, rows)?;
    }
    Ok(())
}

/// Whether the visible table's copy may be staged along with `sub`'s rows of `table`:
/// no pending local transaction writes the table and no other holder covers rows of it
/// (otherwise the join goes row by row, and the copy would be thrown away).
fn may_stage_view(
    conn: &Connection,
    table: &Table,
    sub: SubId,
    pending_tables: &BTreeSet<String>,
) -> Result<bool, StoreError> {
    if pending_tables.contains(&table.name) {
        return Ok(false);
    }
    let others = [
        "SELECT 1 FROM _sluice_cover WHERE table_name = ?1 AND holder != ?2 LIMIT 1",
        "SELECT 1 FROM _sluice_cover_table WHERE table_name = ?1 AND holder != ?2",
    ];
    for sql in others {
        let found = conn
            .prepare_cached(sql)?
            .query_row(rusqlite::params![table.name, sub], |_| Ok(()))
            .optional()?;
        if found.is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes rows (key, values) fitting `target` into the staging table `stage` (quoted),
/// a key written twice keeping its last row.
fn insert_into(
    conn: &Connection,
    stage: &str,
    target: &Target,
    rows: &[(&Value, &[Value])],
) -> Result<(), StoreError> {
    let pk = quote_ident(&target.table.pk_column().name);
    let per_row = 1 + target.carried.len();
    let per_statement = (MAX_INSERT_PARAMS / per_row).clamp(1, MAX_INSERT_ROWS);
    let columns: String = target
        .carried
        .iter()
        .map(|(_, c)| format!(", {c}"))
        .collect();
    let marks = format!("({})", vec!["?"; per_row].join(", "));
    for chunk in rows.chunks(per_statement) {
        let sql = format!(
            "INSERT OR REPLACE INTO {stage} ({pk}{columns}) VALUES {}",
            vec![marks.as_str(); chunk.len()].join(", ")
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut i = 1;
        for (key, row) in chunk {
            stmt.raw_bind_parameter(i, *key)?;
            for (j, (value, _)) in target.carried.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1 + j, &row[*value])?;
            }
            i += per_row;
        }
        stmt.raw_execute()?;
    }
    Ok(())
}

/// Whether `sub` has a staging table.
pub(super) fn exists(conn: &Connection, sub: SubId) -> Result<bool, StoreError> {
    table_exists(conn, &bare_name(sub))
}

/// Whether a table named `name` (unquoted) exists.
fn table_exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1")?
        .query_row([name], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Whether `sub`'s staged copy of the visible table can take the place of `table`'s
/// visible table: it exists, and it was created exactly as the visible table is now
/// (same columns, types and defaults: a schema change while it staged differs), which
/// has no index or trigger of its own that dropping it would take along.
pub(super) fn view_replaces(
    conn: &Connection,
    sub: SubId,
    table: &Table,
) -> Result<bool, StoreError> {
    let definition = |name: &str| -> Result<Option<String>, StoreError> {
        let sql: Option<String> = conn
            .prepare_cached("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        // Stored as written, after `CREATE TABLE <quoted name> `.
        let head = format!("CREATE TABLE {} ", quote_ident(name));
        Ok(sql.and_then(|s| s.strip_prefix(&head).map(str::to_string)))
    };
    let (Some(view), Some(visible)) = (definition(&bare_view_name(sub))?, definition(&table.name)?)
    else {
        return Ok(false);
    };
    let attached = conn
        .prepare_cached(
            "SELECT 1 FROM sqlite_schema WHERE tbl_name = ?1 AND type != 'table'
             AND sql IS NOT NULL LIMIT 1",
        )?
        .query_row([&table.name], |_| Ok(()))
        .optional()?
        .is_some();
    Ok(view == visible && !attached)
}

/// Whether `sub`'s staging table has exactly `table`'s columns, in order (a schema change
/// while it staged leaves it with others).
pub(super) fn matches(conn: &Connection, sub: SubId, table: &Table) -> Result<bool, StoreError> {
    laid_out_as(conn, &bare_name(sub), table)
}

/// Whether the table named `name` (unquoted) has exactly `table`'s columns, in order.
pub(super) fn laid_out_as(
    conn: &Connection,
    name: &str,
    table: &Table,
) -> Result<bool, StoreError> {
    let names = columns_of(conn, name)?;
    Ok(names.len() == table.columns.len()
        && names.iter().zip(&table.columns).all(|(n, c)| *n == c.name))
}

/// Drops `sub`'s staging table and its staged copy of the visible table, if it has them.
pub(super) fn drop(conn: &Connection, sub: SubId) -> Result<(), StoreError> {
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
        name(sub),
        view_name(sub)
    ))?;
    Ok(())
}

/// Calls `each` with every row of `sub`'s staging table as an insert event of `table`
/// whose row carries `columns` (NULL for a column the table does not have).
pub(super) fn for_each_row(
    conn: &Connection,
    sub: SubId,
    table: &Table,
    columns: &[String],
    mut each: impl FnMut(RowEvent) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let known: Vec<String> = columns_of(conn, &bare_name(sub))?;
    let values: String = columns
        .iter()
        .map(|c| match known.iter().find(|k| k.eq_ignore_ascii_case(c)) {
            Some(k) => format!(", {}", quote_ident(k)),
            None => ", NULL".to_string(),
        })
        .collect();
    let pk = &table.pk_column().name;
    if !known.iter().any(|k| k.eq_ignore_ascii_case(pk)) {
        // Staged under another primary key: the subscription bootstraps again.
        return Ok(());
    }
    let pk = quote_ident(pk);
    let mut stmt = conn.prepare(&format!("SELECT {pk}{values} FROM {}", name(sub)))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let key = value_from_ref(r.get_ref(0)?);
        let row = (0..columns.len())
            .map(|i| Ok(value_from_ref(r.get_ref(1 + i)?)))
            .collect::<Result<Vec<Value>, rusqlite::Error>>()?;
        each(RowEvent::Insert { key, row })?;
    }
    Ok(())
}

/// The column names of the table named `name` (unquoted), in order.
fn columns_of(conn: &Connection, name: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    let names = stmt.query_map([name], |r| r.get::<_, String>(0))?;
    Ok(names.collect::<Result<_, _>>()?)
}
