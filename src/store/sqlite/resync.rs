//! Bringing a live replica back in step with its source of truth after the change
//! stream was lost (the source restarted, the connection dropped, the slot went away):
//! the source's current rows are staged beside the replica's, and the difference becomes
//! one replicated transaction, applied and fanned out like any other. Clients see the
//! changes they missed as one transaction; nothing is re-bootstrapped.
//!
//! The staging tables are TEMPORARY tables of the writer connection (`temp` schema), so
//! they never reach the replica file, and a resync that fails half-way leaves nothing the
//! next one does not drop first. The difference is read a page at a time
//! ([`diff_pages`]) and applied as it is read ([`SqliteStore::apply_resync`]): memory does
//! not grow with it.

use std::sync::Arc;

use rusqlite::{params, Connection};

use super::super::convert::{read_row, value_from_ref};
use super::SqliteStore;
use crate::schema::{quote_ident, Schema, Table};
use crate::store::StoreError;
use crate::value::Value;

use super::replica::RowOp;

/// The staging table of the table at `index` in the schema.
fn staging(index: usize) -> String {
    format!("temp.\"_sluice_resync_{index}\"")
}

fn index_of(schema: &Schema, table: &Table) -> Result<usize, StoreError> {
    schema
        .tables()
        .position(|t| t.name == table.name)
        .ok_or_else(|| StoreError::Corrupt(format!("table {} is not in the schema", table.name)))
}

impl SqliteStore {
    /// Starts a resync: an empty staging table for every table of the schema (any left
    /// by a resync that failed are dropped first).
    pub fn begin_resync(&self) -> Result<(), StoreError> {
        let conn = self.lock_writer()?;
        for (i, table) in self.schema.tables().enumerate() {
            let columns: Vec<String> = table
                .columns
                .iter()
                .map(|c| format!("{} {}", quote_ident(&c.name), c.declared_type))
                .collect();
            conn.execute_batch(&format!(
                "DROP TABLE IF EXISTS {name}; CREATE TEMP TABLE {name} ({}, PRIMARY KEY ({}))",
                columns.join(", "),
                quote_ident(&table.pk_column().name),
                name = staging(i),
            ))?;
        }
        Ok(())
    }

    /// Stages rows of the source's current state for `table`.
    pub fn load_resync_rows(&self, table: &Table, rows: &[Vec<Value>]) -> Result<(), StoreError> {
        let index = index_of(&self.schema, table)?;
        self.insert_rows_into(&staging(index), table, rows)
    }

    /// The row operations that turn the replica's tables into the staged ones: every
    /// staged row that is new or differs (whole rows), then every replica row the
    /// staging lacks (deleted). Drops the staging tables. Holds the whole difference:
    /// a server applies it with [`SqliteStore::apply_resync`] instead, a page at a time.
    pub fn resync_diff(&self) -> Result<Vec<RowOp>, StoreError> {
        let conn = self.lock_writer()?;
        let mut ops = Vec::new();
        diff_pages(&conn, &self.schema, DIFF_PAGE, &mut |page| {
            ops.extend(page);
            Ok(())
        })?;
        drop_staging(&conn, &self.schema)?;
        Ok(ops)
    }
}

/// Replica rows compared per page of a resynchronisation's difference.
pub(super) const DIFF_PAGE: usize = 1_000;

/// Walks the difference between the replica's tables and the staged ones in pages of at
/// most `page` row operations, table by table in key order: every staged row that is new
/// or differs (whole rows), then every replica row the staging lacks (deleted). `apply`
/// gets each page, and may apply it to the replica before the next page is read.
pub(super) fn diff_pages(
    conn: &Connection,
    schema: &Schema,
    page: usize,
    apply: &mut dyn FnMut(Vec<RowOp>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let limit = page.max(1) as i64;
    for (i, table) in schema.tables().enumerate() {
        let (name, stage) = (quote_ident(&table.name), staging(i));
        let pk = quote_ident(&table.pk_column().name);
        let staged: Vec<String> = table
            .columns
            .iter()
            .map(|c| format!("s.{}", quote_ident(&c.name)))
            .collect();
        let same: Vec<String> = table
            .columns
            .iter()
            .map(|c| {
                let c = quote_ident(&c.name);
                format!("r.{c} IS s.{c}")
            })
            .collect();
        let width = table.columns.len();
        let changed = format!(
            "SELECT {} FROM {stage} s LEFT JOIN main.{name} r ON r.{pk} = s.{pk} \
             WHERE (r.{pk} IS NULL OR NOT ({})) AND (?1 IS NULL OR s.{pk} > ?1) \
             ORDER BY s.{pk} LIMIT ?2",
            staged.join(", "),
            same.join(" AND ")
        );
        let upsert = |row: Vec<Value>| RowOp::Upsert {
            table: Arc::clone(table),
            row: row.into_iter().map(Some).collect(),
        };
        let read = |r: &rusqlite::Row| read_row(r, width);
        let key = |row: &Vec<Value>| row[table.pk].clone();
        pages(conn, &changed, limit, read, key, upsert, apply)?;
        let gone = format!(
            "SELECT r.{pk} FROM main.{name} r \
             WHERE NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.{pk} = r.{pk}) \
             AND (?1 IS NULL OR r.{pk} > ?1) ORDER BY r.{pk} LIMIT ?2"
        );
        let delete = |key: Value| RowOp::Delete {
            table: Arc::clone(table),
            key,
        };
        let read = |r: &rusqlite::Row| Ok(value_from_ref(r.get_ref(0)?));
        pages(conn, &gone, limit, read, Value::clone, delete, apply)?;
    }
    Ok(())
}

/// Runs the keyset-paged query `sql` (`?1`: the key of the last row of the page before,
/// NULL for the first; `?2`: the page size `limit`) until a page comes back short: each
/// page's rows, read with `read`, become operations (`op`) that `apply` gets. `key` is a
/// row's key.
fn pages<T>(
    conn: &Connection,
    sql: &str,
    limit: i64,
    read: impl Fn(&rusqlite::Row) -> rusqlite::Result<T>,
    key: impl Fn(&T) -> Value,
    op: impl Fn(T) -> RowOp,
    apply: &mut dyn FnMut(Vec<RowOp>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut after: Option<Value> = None;
    loop {
        let rows: Vec<T> = {
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map(params![after, limit], |r| read(r))?;
            rows.collect::<Result<_, _>>()?
        };
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = Some(key(last));
        let full = rows.len() as i64 == limit;
        apply(rows.into_iter().map(&op).collect())?;
        if !full {
            return Ok(());
        }
    }
}

/// Drops the staging tables.
pub(super) fn drop_staging(conn: &Connection, schema: &Schema) -> Result<(), StoreError> {
    for i in 0..schema.tables().count() {
        conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", staging(i)))?;
    }
    Ok(())
}
