//! Bringing a live replica back in step with its source of truth after the change
//! stream was lost (the source restarted, the connection dropped, the slot went away):
//! the source's current rows are staged beside the replica's, and the difference becomes
//! one replicated transaction, applied and fanned out like any other. Clients see the
//! changes they missed as one transaction; nothing is re-bootstrapped.
//!
//! The staging tables are TEMPORARY tables of the writer connection (`temp` schema), so
//! they never reach the replica file, and a resync that fails half-way leaves nothing the
//! next one does not drop first. Only the difference is held in memory.

use std::sync::Arc;

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
    /// staging lacks (deleted). Drops the staging tables.
    pub fn resync_diff(&self) -> Result<Vec<RowOp>, StoreError> {
        let conn = self.lock_writer()?;
        let mut ops = Vec::new();
        for (i, table) in self.schema.tables().enumerate() {
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
            let mut changed = conn.prepare(&format!(
                "SELECT {} FROM {stage} s LEFT JOIN main.{name} r ON r.{pk} = s.{pk} \
                 WHERE r.{pk} IS NULL OR NOT ({})",
                staged.join(", "),
                same.join(" AND ")
            ))?;
            let rows = changed.query_map([], |r| read_row(r, width))?;
            for row in rows {
                let row = row?;
                ops.push(RowOp::Upsert {
                    table: Arc::clone(table),
                    row: row.into_iter().map(Some).collect(),
                });
            }
            let mut gone = conn.prepare(&format!(
                "SELECT r.{pk} FROM main.{name} r \
                 WHERE NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.{pk} = r.{pk})"
            ))?;
            let keys = gone.query_map([], |r| Ok(value_from_ref(r.get_ref(0)?)))?;
            for key in keys {
                ops.push(RowOp::Delete {
                    table: Arc::clone(table),
                    key: key?,
                });
            }
        }
        for i in 0..self.schema.tables().count() {
            conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", staging(i)))?;
        }
        Ok(ops)
    }
}
