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
/// `INSERT`s; creates the staging table first if needed.
pub(super) fn insert(
    conn: &Connection,
    sub: SubId,
    target: &Target,
    rows: &[(&Value, &[Value])],
) -> Result<(), StoreError> {
    let stage = name(sub);
    conn.execute_batch(&local_ddl(&target.table, &stage))?;
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
    Ok(conn
        .prepare_cached("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1")?
        .query_row([bare_name(sub)], |_| Ok(()))
        .optional()?
        .is_some())
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

/// Drops `sub`'s staging table, if it has one.
pub(super) fn drop(conn: &Connection, sub: SubId) -> Result<(), StoreError> {
    conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", name(sub)))?;
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
