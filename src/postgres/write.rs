//! The write path into PostgreSQL: one client transaction, one PostgreSQL transaction.
//!
//! In order: the idempotency record (`INSERT … ON CONFLICT DO NOTHING` into
//! [`TXNS_TABLE`]; a conflict means the transaction committed before, through any
//! server); the rows it touches read `FOR UPDATE` (one statement per table, tables by
//! name and rows in key order, so two servers lock in the same order); the embedded
//! store's checks run over those rows ([`WriteCheck`]: schema, types, preconditions,
//! permissions), which yield the full row images; the images written; the transaction
//! id taken; commit. PostgreSQL's own constraints (a UNIQUE column, a key inserted at
//! the same time elsewhere) reject the transaction with code `constraint`, a value it
//! cannot store (a NUL in text) with code `schema`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};
use tracing::debug;

use super::ddl::{pg_type, PgType, FLOORS_TABLE, TXNS_TABLE};
use super::values::{array_param, to_param, Param};
use super::{connect, PgConfig, PgError};
use crate::schema::{quote_ident, Schema, Table};
use crate::store::{Judgement, WriteCheck, WriteGuard};
use crate::value::Value;
use crate::vocab::{ChangeKind, Mutation, RejectCode, WriteTxn};

/// What happened to a transaction in PostgreSQL.
#[derive(Debug)]
pub enum Written {
    /// Committed as PostgreSQL transaction `xid` (low 32 bits, as the stream names it);
    /// `changed` is false when it wrote no row and no record (it will not be streamed).
    Committed { xid: u32, changed: bool },
    /// Its `(client, seq)` was committed before, through this server or another.
    Duplicate,
    /// Refused: nothing was written.
    Rejected { code: RejectCode, message: String },
}

/// Forgets idempotency records committed more than `max_age` ago, and the oldest past
/// `max_records`, raising each client's floor to its highest forgotten sequence number
/// (in one statement: a record is never gone without its floor). Safe to run from
/// several servers at once. Returns how many were forgotten.
pub async fn prune_outcomes(
    client: &tokio_postgres::Client,
    max_age: std::time::Duration,
    max_records: u64,
) -> Result<u64, PgError> {
    let row = client
        .query_one(
            &format!(
                "WITH doomed AS ( \
                    SELECT client_id, seq FROM {TXNS_TABLE} \
                    WHERE committed_at < now() - make_interval(secs => $1) \
                    UNION \
                    (SELECT client_id, seq FROM {TXNS_TABLE} \
                     ORDER BY committed_at, client_id, seq \
                     LIMIT greatest((SELECT count(*) FROM {TXNS_TABLE}) - $2, 0)) \
                 ), gone AS ( \
                    DELETE FROM {TXNS_TABLE} t USING doomed d \
                    WHERE t.client_id = d.client_id AND t.seq = d.seq \
                    RETURNING t.client_id, t.seq \
                 ), floors AS ( \
                    INSERT INTO {FLOORS_TABLE} (client_id, seq) \
                    SELECT client_id, max(seq) FROM gone WHERE seq >= 0 GROUP BY client_id \
                    ON CONFLICT (client_id) \
                    DO UPDATE SET seq = greatest({FLOORS_TABLE}.seq, excluded.seq) \
                 ) \
                 SELECT count(*) FROM gone"
            ),
            &[
                &max_age.as_secs_f64(),
                &i64::try_from(max_records).unwrap_or(i64::MAX),
            ],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// The connection that commits client and backend transactions into PostgreSQL.
pub struct PgWriter {
    client: tokio_postgres::Client,
    /// Statements prepared on this connection, by SQL text: a few per table (its read,
    /// insert, update and delete), so bounded by the schema.
    statements: HashMap<String, Statement>,
    schema: Arc<Schema>,
    /// std Mutex: taken only inside `spawn_blocking`, never across an await.
    check: Arc<Mutex<WriteCheck>>,
}

impl PgWriter {
    /// Connects. Fails with [`PgError::Connect`], or [`PgError::Store`] when the scratch
    /// database cannot be made.
    pub async fn connect(config: &PgConfig, schema: Arc<Schema>) -> Result<PgWriter, PgError> {
        let client = connect(config).await?;
        // Statements are prepared once, but each execution is planned for its own
        // parameters: a generic plan made while a table was small would scan it whole
        // (`key = ANY($1)` over thousands of keys) long after it has grown.
        if let Err(e) = client
            .batch_execute("SET plan_cache_mode = force_custom_plan")
            .await
        {
            debug!(error = %e, "plan_cache_mode not set (PostgreSQL before 12)");
        }
        let check = WriteCheck::new(schema.clone())?;
        Ok(PgWriter {
            client,
            statements: HashMap::new(),
            schema,
            check: Arc::new(Mutex::new(check)),
        })
    }

    /// Whether the connection is gone (PostgreSQL restarted, the network dropped): a new
    /// writer is needed.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Runs `txn` in one PostgreSQL transaction; `before_commit` hears its transaction id
    /// just before COMMIT (to wait for it in the stream). `Err` means PostgreSQL failed
    /// (connection, deadlock, serialization): nothing is known to be committed, and a
    /// resend is safe (the idempotency record makes it apply once).
    pub async fn commit(
        &mut self,
        txn: &WriteTxn,
        guard: Option<Arc<dyn WriteGuard>>,
        before_commit: impl FnOnce(u32),
    ) -> Result<Written, PgError> {
        let written = self.commit_in(txn, guard, before_commit).await;
        if written.is_err() {
            // A statement may be what failed (a table altered behind the server's back):
            // the next transaction prepares its statements again.
            self.statements.clear();
        }
        written
    }

    async fn commit_in(
        &mut self,
        txn: &WriteTxn,
        guard: Option<Arc<dyn WriteGuard>>,
        before_commit: impl FnOnce(u32),
    ) -> Result<Written, PgError> {
        let schema = self.schema.clone();
        let statements = &mut self.statements;
        let tx = self.client.transaction().await?;
        if let Some((client, seq)) = &txn.origin {
            // Recorded unless recorded before or forgotten (at or below the client's
            // floor; sequence numbers past i64::MAX are stored negative, under no floor).
            let seq = *seq as i64;
            let inserted = tx
                .execute(
                    &format!(
                        "INSERT INTO {TXNS_TABLE} (client_id, seq) SELECT $1::text, $2::bigint \
                         WHERE NOT EXISTS (SELECT 1 FROM {FLOORS_TABLE} \
                            WHERE client_id = $1::text AND $2::bigint >= 0 AND seq >= $2::bigint) \
                         ON CONFLICT DO NOTHING"
                    ),
                    &[&client.0, &seq],
                )
                .await?;
            if inserted == 0 {
                let recorded = tx
                    .query_one(
                        &format!(
                            "SELECT EXISTS (SELECT 1 FROM {TXNS_TABLE} \
                             WHERE client_id = $1 AND seq = $2)"
                        ),
                        &[&client.0, &seq],
                    )
                    .await?
                    .get::<_, bool>(0);
                tx.rollback().await?;
                if recorded {
                    return Ok(Written::Duplicate);
                }
                return Ok(Written::Rejected {
                    code: RejectCode::Expired,
                    message: format!(
                        "transaction {seq} was sent again after its outcome was forgotten; \
                         it may have been applied, and is not applied again"
                    ),
                });
            }
        }
        // The rows the transaction touches, locked in a fixed order: table by table (by
        // name), each table's rows read in one statement in key order.
        let mut keys: BTreeMap<String, (Arc<Table>, Vec<Value>)> = BTreeMap::new();
        let mut touch = |table: &str, key: &Value| {
            if let Some(t) = schema.table(table) {
                let entry = keys
                    .entry(t.name.clone())
                    .or_insert_with(|| (t.clone(), Vec::new()));
                entry.1.push(key.clone());
            }
        };
        for m in &txn.mutations {
            match m {
                Mutation::Insert { table, values } => {
                    let pk = schema.table(table).map(|t| t.pk_column().name.clone());
                    if let Some((_, key)) = values
                        .iter()
                        .find(|(c, _)| pk.as_deref().is_some_and(|pk| c.eq_ignore_ascii_case(pk)))
                    {
                        touch(table, key);
                    }
                }
                Mutation::Update { table, key, .. } | Mutation::Delete { table, key } => {
                    touch(table, key)
                }
            }
        }
        for p in &txn.preconditions {
            touch(&p.table, &p.key);
        }
        let mut base = Vec::new();
        for (table, keys) in keys.into_values() {
            let types = types(&table)?;
            // A key its column's type cannot hold names no row.
            let Some(keys) = array_param(types[table.pk], &keys) else {
                continue;
            };
            let sql = format!(
                "SELECT {} FROM {} WHERE {pk} = ANY($1) ORDER BY {pk} FOR UPDATE",
                columns(&table),
                quote_ident(&table.name),
                pk = quote_ident(&table.pk_column().name)
            );
            let statement = prepared(&tx, statements, sql).await?;
            for row in tx.query(&statement, &[keys.as_ref()]).await? {
                base.push((table.clone(), row_values(&table, &types, &row)?));
            }
        }
        let check = self.check.clone();
        let (owned, owned_guard) = (txn.clone(), guard);
        let judged: Judgement = tokio::task::spawn_blocking(move || {
            let mut check = check.lock().unwrap_or_else(|p| p.into_inner());
            check.judge(&base, &owned, owned_guard.as_deref())
        })
        .await
        .map_err(|e| PgError::Replication(format!("write check: {e}")))??;
        let changes = match judged {
            Ok(changes) => changes,
            Err((code, message)) => {
                tx.rollback().await?;
                return Ok(Written::Rejected { code, message });
            }
        };
        for change in &changes {
            let table = schema
                .table(&change.table)
                .ok_or_else(|| PgError::Replication(format!("no table {}", change.table)))?;
            let types = types(table)?;
            let written = match change.kind {
                ChangeKind::Insert | ChangeKind::Update => {
                    let new = change.new.as_deref().unwrap_or_default();
                    // A value the column's PostgreSQL type cannot hold (text in a BYTEA
                    // column without a declared type) rejects the transaction.
                    let params = match params(table, &types, new) {
                        Ok(params) => params,
                        Err(e) => {
                            tx.rollback().await?;
                            return Ok(Written::Rejected {
                                code: RejectCode::Schema,
                                message: e.to_string(),
                            });
                        }
                    };
                    let sql = if change.kind == ChangeKind::Insert {
                        insert_sql(table)
                    } else {
                        update_sql(table)
                    };
                    let statement = prepared(&tx, statements, sql).await?;
                    let refs: Vec<&(dyn ToSql + Sync)> = params
                        .iter()
                        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                        .collect();
                    tx.execute(&statement, &refs).await
                }
                ChangeKind::Delete => {
                    let key = to_param(types[table.pk], &change.key)
                        .map_err(|m| PgError::Replication(m.to_string()))?;
                    let sql = format!(
                        "DELETE FROM {} WHERE {} = $1",
                        quote_ident(&table.name),
                        quote_ident(&table.pk_column().name)
                    );
                    let statement = prepared(&tx, statements, sql).await?;
                    let key: &(dyn ToSql + Sync) = key.as_ref();
                    tx.execute(&statement, &[key]).await
                }
            };
            if let Err(e) = written {
                // Class 23: a constraint; class 22: a value PostgreSQL cannot store (a NUL
                // in text). Both are the transaction's fault: sent again, they fail again.
                let class = e.code().map(|c| &c.code()[..2]);
                if let Some(class @ ("22" | "23")) = class {
                    let code = if class == "23" {
                        RejectCode::Constraint
                    } else {
                        RejectCode::Schema
                    };
                    let message = e
                        .as_db_error()
                        .map(|d| d.message().to_string())
                        .unwrap_or_else(|| e.to_string());
                    tx.rollback().await?;
                    return Ok(Written::Rejected { code, message });
                }
                return Err(e.into());
            }
        }
        let changed = !changes.is_empty() || txn.origin.is_some();
        let xid: i64 = tx
            .query_one("SELECT txid_current() % 4294967296", &[])
            .await?
            .get(0);
        let xid = xid as u32;
        before_commit(xid);
        tx.commit().await?;
        Ok(Written::Committed { xid, changed })
    }
}

/// The statement for `sql`, prepared on the writer's connection the first time.
async fn prepared(
    tx: &tokio_postgres::Transaction<'_>,
    statements: &mut HashMap<String, Statement>,
    sql: String,
) -> Result<Statement, tokio_postgres::Error> {
    if let Some(statement) = statements.get(&sql) {
        return Ok(statement.clone());
    }
    let statement = tx.prepare(&sql).await?;
    statements.insert(sql, statement.clone());
    Ok(statement)
}

fn types(table: &Table) -> Result<Vec<PgType>, PgError> {
    table.columns.iter().map(|c| pg_type(table, c)).collect()
}

fn columns(table: &Table) -> String {
    let cols: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    cols.join(", ")
}

fn insert_sql(table: &Table) -> String {
    let marks: Vec<String> = (1..=table.columns.len()).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        quote_ident(&table.name),
        columns(table),
        marks.join(", ")
    )
}

fn update_sql(table: &Table) -> String {
    let sets: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != table.pk)
        .map(|(i, c)| format!("{} = ${}", quote_ident(&c.name), i + 1))
        .collect();
    format!(
        "UPDATE {} SET {} WHERE {} = ${}",
        quote_ident(&table.name),
        if sets.is_empty() {
            format!("{0} = {0}", quote_ident(&table.pk_column().name))
        } else {
            sets.join(", ")
        },
        quote_ident(&table.pk_column().name),
        table.pk + 1
    )
}

fn params(table: &Table, types: &[PgType], row: &[Value]) -> Result<Vec<Param>, PgError> {
    row.iter()
        .zip(types)
        .enumerate()
        .map(|(i, (v, ty))| {
            to_param(*ty, v).map_err(|m| PgError::Schema {
                table: table.name.clone(),
                column: table.columns[i].name.clone(),
                message: m,
            })
        })
        .collect()
}

fn row_values(table: &Table, types: &[PgType], row: &Row) -> Result<Vec<Value>, PgError> {
    let mut out = Vec::with_capacity(types.len());
    for (i, ty) in types.iter().enumerate() {
        let v = match ty {
            PgType::Int8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Integer),
            PgType::Float8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            PgType::Text => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
            PgType::Bytea => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
        };
        out.push(v.unwrap_or(Value::Null));
    }
    let _ = table;
    Ok(out)
}
