//! The schema in PostgreSQL: the type of each column, the tables sluice creates in an
//! empty database and checks in a non-empty one, sluice's own tables there, and the
//! publication the servers' replication slots read.
//!
//! Types follow the SQLite column's affinity: INTEGER → BIGINT, REAL → DOUBLE
//! PRECISION, TEXT → TEXT, BLOB (or no type) → BYTEA. NUMERIC affinity (BOOLEAN,
//! DECIMAL, DATE, …) has no PostgreSQL type that keeps SQLite's semantics and is refused.

use tokio_postgres::Client;

use super::PgError;
use crate::schema::{quote_ident, Column, Schema, Table};
use crate::value::Affinity;

/// The publication every sluice server of a database reads.
pub const PUBLICATION: &str = "sluice";
/// Idempotency records of client transactions: one row per `(client, seq)` committed
/// through any server, written in the transaction itself.
pub const TXNS_TABLE: &str = "_sluice_txns";
/// The database's sync identity, shared by every server (clients resume across them).
pub const IDENTITY_TABLE: &str = "_sluice_identity";
/// Per client, the highest sequence number whose idempotency record was pruned: a resend
/// at or below it is refused `expired`, never applied again. Not replicated.
pub const FLOORS_TABLE: &str = "_sluice_client_floors";

/// The PostgreSQL type of a column, by its SQLite affinity.
pub fn pg_type(table: &Table, column: &Column) -> Result<PgType, PgError> {
    match column.affinity {
        Affinity::Integer => Ok(PgType::Int8),
        Affinity::Real => Ok(PgType::Float8),
        Affinity::Text => Ok(PgType::Text),
        Affinity::Blob => Ok(PgType::Bytea),
        Affinity::Numeric => Err(PgError::Schema {
            table: table.name.clone(),
            column: column.name.clone(),
            message: format!(
                "type {:?} has NUMERIC affinity, which no PostgreSQL type keeps exactly; \
                 declare it INTEGER, REAL, TEXT or BLOB",
                column.declared_type
            ),
        }),
    }
}

/// The PostgreSQL types sluice maps columns to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    Int8,
    Float8,
    Text,
    Bytea,
}

impl PgType {
    /// The name in DDL.
    pub fn sql(self) -> &'static str {
        match self {
            PgType::Int8 => "BIGINT",
            PgType::Float8 => "DOUBLE PRECISION",
            PgType::Text => "TEXT",
            PgType::Bytea => "BYTEA",
        }
    }

    /// The name in `information_schema.columns.data_type`.
    fn info_name(self) -> &'static str {
        match self {
            PgType::Int8 => "bigint",
            PgType::Float8 => "double precision",
            PgType::Text => "text",
            PgType::Bytea => "bytea",
        }
    }
}

/// `CREATE TABLE` for `table` in PostgreSQL: columns, primary key, NOT NULL, DEFAULTs,
/// table constraints as declared.
pub fn create_table_sql(table: &Table) -> Result<String, PgError> {
    let mut parts = Vec::new();
    for (i, c) in table.columns.iter().enumerate() {
        let mut def = format!("{} {}", quote_ident(&c.name), pg_type(table, c)?.sql());
        if i == table.pk {
            def.push_str(" PRIMARY KEY");
        }
        if c.not_null || i == table.pk {
            def.push_str(" NOT NULL");
        }
        if let Some(d) = &c.default {
            def.push_str(&format!(" DEFAULT ({d})"));
        }
        parts.push(def);
    }
    parts.extend(table.constraints.iter().cloned());
    Ok(format!(
        "CREATE TABLE {} ({})",
        quote_ident(&table.name),
        parts.join(", ")
    ))
}

/// Makes the database ready for sluice: creates the schema's tables when none exists,
/// checks them otherwise, creates sluice's own tables and the publication, and sets
/// `REPLICA IDENTITY FULL` (old row images in the stream). Several servers may run this
/// at once: it holds an advisory lock. Returns the database's sync identity.
///
/// Fails with [`PgError::Schema`] naming the table and column that do not fit, and with
/// [`PgError::Query`] when PostgreSQL does.
pub async fn prepare(client: &mut Client, schema: &Schema) -> Result<String, PgError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(7355608)", &[])
        .await?;
    let existing: Vec<String> = tx
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema()",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let exists = |name: &str| existing.iter().any(|e| e == name);
    for table in schema.tables() {
        if exists(&table.name) {
            check_table(&tx, table).await?;
        } else {
            tx.batch_execute(&create_table_sql(table)?).await?;
            for index in table.index_sql() {
                tx.batch_execute(&index).await?;
            }
        }
        identity_full(&tx, &quote_ident(&table.name)).await?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {TXNS_TABLE} (
            client_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            committed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (client_id, seq)
         );
         CREATE TABLE IF NOT EXISTS {FLOORS_TABLE} (
            client_id TEXT PRIMARY KEY,
            seq BIGINT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS {IDENTITY_TABLE} (
            id INTEGER PRIMARY KEY CHECK (id = 0),
            server_id TEXT NOT NULL
         );
         INSERT INTO {IDENTITY_TABLE} (id, server_id)
            VALUES (0, md5(random()::text || clock_timestamp()::text))
            ON CONFLICT (id) DO NOTHING;"
    ))
    .await?;
    identity_full(&tx, TXNS_TABLE).await?;
    let mut tables: Vec<String> = schema.tables().map(|t| quote_ident(&t.name)).collect();
    tables.push(TXNS_TABLE.to_string());
    let mut wanted: Vec<String> = schema.tables().map(|t| t.name.clone()).collect();
    wanted.push(TXNS_TABLE.to_string());
    wanted.sort();
    let published = tx
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&PUBLICATION],
        )
        .await?
        .is_some();
    let mut current: Vec<String> = tx
        .query(
            "SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&PUBLICATION],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    current.sort();
    // Only when something changes: ALTER takes locks that running servers' writes
    // would deadlock against.
    if !published {
        let sql = format!(
            "CREATE PUBLICATION {PUBLICATION} FOR TABLE {}",
            tables.join(", ")
        );
        tx.batch_execute(&sql).await?;
    } else if current != wanted {
        let sql = format!(
            "ALTER PUBLICATION {PUBLICATION} SET TABLE {}",
            tables.join(", ")
        );
        tx.batch_execute(&sql).await?;
    }
    let id: String = tx
        .query_one(
            &format!("SELECT server_id FROM {IDENTITY_TABLE} WHERE id = 0"),
            &[],
        )
        .await?
        .get(0);
    tx.commit().await?;
    Ok(id)
}

/// Sets `REPLICA IDENTITY FULL` unless it is set: the ALTER takes an exclusive lock,
/// which servers already writing to the table would deadlock against.
async fn identity_full(tx: &tokio_postgres::Transaction<'_>, quoted: &str) -> Result<(), PgError> {
    let full = tx
        .query_opt(
            "SELECT 1 FROM pg_class WHERE oid = to_regclass($1) AND relreplident = 'f'",
            &[&quoted],
        )
        .await?
        .is_some();
    if !full {
        tx.batch_execute(&format!("ALTER TABLE {quoted} REPLICA IDENTITY FULL"))
            .await?;
    }
    Ok(())
}

/// Checks that an existing table has every column of the schema's, with its type and
/// primary key.
async fn check_table(tx: &tokio_postgres::Transaction<'_>, table: &Table) -> Result<(), PgError> {
    let rows = tx
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
            &[&table.name],
        )
        .await?;
    let found: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for column in &table.columns {
        let want = pg_type(table, column)?;
        let schema_error = |message: String| PgError::Schema {
            table: table.name.clone(),
            column: column.name.clone(),
            message,
        };
        match found.iter().find(|(name, _)| *name == column.name) {
            None => return Err(schema_error("missing in the PostgreSQL table".into())),
            Some((_, ty)) if ty != want.info_name() => {
                return Err(schema_error(format!(
                    "is {ty} in PostgreSQL, the schema needs {}",
                    want.sql()
                )))
            }
            Some(_) => {}
        }
    }
    let pk: Vec<String> = tx
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = to_regclass($1) AND i.indisprimary",
            &[&quote_ident(&table.name)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want = &table.pk_column().name;
    if pk.len() != 1 || pk[0] != *want {
        return Err(PgError::Schema {
            table: table.name.clone(),
            column: want.clone(),
            message: format!("must be the primary key (PostgreSQL's is {pk:?})"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_map_by_affinity() {
        let schema = Schema::parse(
            "t.sql",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, r REAL, s TEXT NOT NULL DEFAULT 'x', b BLOB, n);",
        )
        .unwrap();
        let sql = create_table_sql(schema.table("t").unwrap()).unwrap();
        assert_eq!(
            sql,
            "CREATE TABLE \"t\" (\"id\" BIGINT PRIMARY KEY NOT NULL, \"r\" DOUBLE PRECISION, \
             \"s\" TEXT NOT NULL DEFAULT ('x'), \"b\" BYTEA, \"n\" BYTEA)"
        );
    }

    #[test]
    fn numeric_affinity_is_refused_naming_the_column() {
        let schema = Schema::parse(
            "t.sql",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, ok BOOLEAN);",
        )
        .unwrap();
        let err = create_table_sql(schema.table("t").unwrap()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("t.ok"), "{text}");
        assert!(text.contains("NUMERIC"), "{text}");
    }
}
