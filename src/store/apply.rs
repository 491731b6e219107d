//! The write path: validates client and server transactions against the schema and
//! applies a batch of them in one SQLite transaction, each inside its own savepoint,
//! appending their changes to the log.
//!
//! Synchronous, on the writer connection it is given; depends on the schema, values and
//! the vocabulary only (permission checks come in as a [`super::WriteGuard`]).

use std::cmp::Ordering;
use std::collections::HashMap;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::convert::read_row;
use super::window::{CommitObserver, ConnView};
use super::{GuardedTxn, StoreError, WriteGuard};
use crate::schema::{quote_ident, Column, Schema, Table};
use crate::value::{parse_numeric_text, Affinity, Value};
use crate::vocab::{
    Change, ChangeKind, ClientId, Mutation, Precondition, RejectCode, SyncId, TxnOutcome, WriteTxn,
};
use image::column_defaults;
use insert::{insert, Inserts};
use records::Pending;

mod image;
mod insert;
mod records;

/// Why one transaction stopped: rejected (its savepoint is rolled back, the batch goes
/// on) or a database failure (the whole batch is rolled back).
enum TxnError {
    Reject(RejectCode, String),
    Store(StoreError),
}

impl From<StoreError> for TxnError {
    fn from(e: StoreError) -> TxnError {
        TxnError::Store(e)
    }
}

impl From<rusqlite::Error> for TxnError {
    /// Constraint and type errors reject the transaction; anything else is a failure.
    fn from(e: rusqlite::Error) -> TxnError {
        match &e {
            rusqlite::Error::SqliteFailure(err, message) => {
                let message = message.clone().unwrap_or_else(|| err.to_string());
                match err.code {
                    ErrorCode::ConstraintViolation => {
                        TxnError::Reject(RejectCode::Constraint, message)
                    }
                    ErrorCode::TypeMismatch => TxnError::Reject(RejectCode::Schema, message),
                    _ => TxnError::Store(e.into()),
                }
            }
            _ => TxnError::Store(e.into()),
        }
    }
}

fn reject<T>(code: RejectCode, message: impl Into<String>) -> Result<T, TxnError> {
    Err(TxnError::Reject(code, message.into()))
}

/// SQL text prepared once per table at open, so the write path formats no identifiers.
pub(crate) struct TableSql {
    /// Quoted column names, in table order.
    quoted: Vec<String>,
    /// Quoted table name.
    name: String,
    /// `"a", "b", ...`: every column.
    all: String,
    select_by_key: String,
    delete: String,
    /// Per column, what a row that leaves it out stores, when known ahead (see
    /// [`image`]).
    defaults: Vec<Option<Value>>,
}

/// [`TableSql`] for every table of the schema, by its name as declared.
pub(crate) struct SqlCache(HashMap<String, TableSql>);

impl SqlCache {
    /// Reads the column defaults of the schema's tables from `conn`'s database, where
    /// they are created.
    pub(crate) fn new(conn: &Connection, schema: &Schema) -> Result<SqlCache, StoreError> {
        let tables = schema.tables().map(|table| {
            let quoted: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
            let name = quote_ident(&table.name);
            let all = quoted.join(", ");
            let pk = &quoted[table.pk];
            let sql = TableSql {
                select_by_key: format!("SELECT {all} FROM {name} WHERE {pk} = ?1"),
                delete: format!("DELETE FROM {name} WHERE {pk} = ?1 RETURNING {all}"),
                defaults: column_defaults(conn, table)?,
                quoted,
                name,
                all,
            };
            Ok((table.name.clone(), sql))
        });
        Ok(SqlCache(tables.collect::<Result<_, StoreError>>()?))
    }

    fn table(&self, table: &Table) -> Result<&TableSql, StoreError> {
        self.0.get(&table.name).ok_or_else(|| {
            StoreError::Corrupt(format!("no statements prepared for table {}", table.name))
        })
    }
}

/// What the write path needs besides the connection `'c`.
struct Ctx<'a, 'c> {
    schema: &'a Schema,
    sql: &'a SqlCache,
    inserts: Inserts<'c>,
}

impl<'a> Ctx<'a, '_> {
    fn new(schema: &'a Schema, sql: &'a SqlCache) -> Self {
        Ctx {
            schema,
            sql,
            inserts: Inserts::default(),
        }
    }
}

/// Applies `txns` in one immediate transaction. Returns the outcomes and the new head.
/// `observer` hears of each committed transaction right after it is applied, inside the
/// transaction.
pub(crate) fn apply_batch(
    conn: &mut Connection,
    schema: &Schema,
    sql: &SqlCache,
    mut txns: Vec<GuardedTxn>,
    now_ms: i64,
    observer: &mut dyn CommitObserver,
) -> Result<(Vec<TxnOutcome>, SyncId), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut ctx = Ctx::new(schema, sql);
    let start: SyncId = tx.query_row("SELECT head FROM _sluice_meta WHERE id = 0", [], |r| {
        r.get(0)
    })?;
    let mut head = start;
    let mut outcomes = Vec::with_capacity(txns.len());
    let mut pending = Pending::default();
    // Per client, the highest sequence number with a recorded outcome: clients number
    // their transactions in order, so a higher one is new and needs no lookup.
    let mut newest: HashMap<String, Option<u64>> = HashMap::new();
    for index in 0..txns.len() {
        if let Some((client, seq)) = &txns[index].0.origin {
            let recorded = match newest.get(&client.0) {
                Some(n) => *n,
                None => {
                    let n = newest_seq(&tx, client)?;
                    newest.insert(client.0.clone(), n);
                    n
                }
            };
            // Sequence numbers past i64::MAX are stored as negative integers, out of the
            // max(); they always take the lookup.
            let surely_new = *seq <= i64::MAX as u64 && recorded.is_none_or(|n| *seq > n);
            if !surely_new {
                // The lookup must see the outcomes recorded earlier in this batch.
                pending.write(&tx, schema, &txns, &outcomes, now_ms)?;
                if let Some(previous) = stored_outcome(&tx, client, *seq)? {
                    outcomes.push(previous);
                    continue;
                }
                if forgotten(&tx, client, *seq)? {
                    outcomes.push(TxnOutcome::Rejected {
                        code: RejectCode::Expired,
                        message: format!(
                            "transaction {seq} was sent again after its outcome was forgotten; \
                             it may have been applied, and is not applied again"
                        ),
                    });
                    continue;
                }
            }
            if *seq <= i64::MAX as u64 {
                if let Some(entry) = newest.get_mut(&client.0) {
                    *entry = Some(entry.map_or(*seq, |n| n.max(*seq)));
                }
            }
        }
        let (txn, guard) = &mut txns[index];
        let sync_id = head.next();
        // A failing SQLite statement undoes itself, so a transaction with at most one
        // mutation needs no savepoint (preconditions only read; log writes never reject).
        // A guard may refuse a row after it was written, so guarded ones always get one.
        let savepoint = txn.mutations.len() > 1 || guard.is_some();
        if savepoint {
            tx.prepare_cached("SAVEPOINT sluice_txn")?.execute([])?;
        }
        match write_txn(&tx, &mut ctx, sync_id, txn, guard.as_deref()) {
            Ok(changes) => {
                if savepoint {
                    tx.prepare_cached("RELEASE sluice_txn")?.execute([])?;
                }
                if !changes.is_empty() {
                    observer.committed(&ConnView(&tx), sync_id, &changes)?;
                }
                head = sync_id;
                pending.add(index, changes.len(), txn.origin.is_some());
                outcomes.push(TxnOutcome::Committed { sync_id, changes });
            }
            Err(TxnError::Reject(code, message)) => {
                if savepoint {
                    tx.prepare_cached("ROLLBACK TO sluice_txn")?.execute([])?;
                    tx.prepare_cached("RELEASE sluice_txn")?.execute([])?;
                }
                pending.add(index, 0, txn.origin.is_some());
                outcomes.push(TxnOutcome::Rejected { code, message });
            }
            Err(TxnError::Store(e)) => return Err(e),
        }
    }
    drop(ctx);
    pending.write(&tx, schema, &txns, &outcomes, now_ms)?;
    if head != start {
        tx.prepare_cached("UPDATE _sluice_meta SET head = ?1 WHERE id = 0")?
            .execute([head])?;
        // One commit time per batch, at its last sync id: retention by age needs no more.
        tx.prepare_cached(
            "INSERT INTO _sluice_commits (sync_id, committed_at_ms) VALUES (?1, ?2)",
        )?
        .execute(params![head, now_ms])?;
    }
    tx.commit()?;
    Ok((outcomes, head))
}

/// The highest sequence number of `client` with a recorded (or forgotten) outcome. Runs
/// do not overlap, so the record with the highest first number ends highest.
fn newest_seq(conn: &Connection, client: &ClientId) -> Result<Option<u64>, StoreError> {
    let n: Option<i64> = conn
        .prepare_cached(
            "SELECT max(n) FROM ( \
               SELECT * FROM (SELECT coalesce(last_seq, seq) AS n FROM _sluice_client_txns \
                 WHERE client_id = ?1 AND seq >= 0 ORDER BY seq DESC LIMIT 1) \
               UNION ALL SELECT seq FROM _sluice_client_floors WHERE client_id = ?1)",
        )?
        .query_row([&client.0], |r| r.get(0))?;
    Ok(n.map(|n| n as u64))
}

/// Whether the outcome of `client`'s transaction `seq` may have been recorded and then
/// forgotten ([`crate::store::Store::prune_outcomes`]).
fn forgotten(conn: &Connection, client: &ClientId, seq: u64) -> Result<bool, StoreError> {
    let Ok(seq) = i64::try_from(seq) else {
        return Ok(false);
    };
    Ok(conn
        .prepare_cached("SELECT 1 FROM _sluice_client_floors WHERE client_id = ?1 AND seq >= ?2")?
        .exists(params![client.0, seq])?)
}

/// The recorded outcome of a client transaction, if it was seen before: its own record,
/// or the run of committed transactions it is part of (see [`records`]).
pub(crate) fn stored_outcome(
    conn: &Connection,
    client: &ClientId,
    seq: u64,
) -> Result<Option<TxnOutcome>, StoreError> {
    // Sequence numbers are u64 stored bit for bit in SQLite's i64; those past i64::MAX
    // (negative here) are never in a run, and the nearest record below is theirs or none.
    type Record = (
        i64,
        Option<i64>,
        Option<SyncId>,
        Option<String>,
        Option<String>,
    );
    let row: Option<Record> = conn
        .prepare_cached(
            "SELECT seq, last_seq, sync_id, reject_code, message FROM _sluice_client_txns \
             WHERE client_id = ?1 AND seq <= ?2 ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(params![client.0, seq as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((first, last, sync_id, code, message)) = row else {
        return Ok(None);
    };
    let offset = (seq as i64).wrapping_sub(first);
    if offset != 0 {
        // Within a run of committed transactions, or not recorded.
        return Ok(match (last, sync_id) {
            (Some(last), Some(sync_id)) if first >= 0 && seq as i64 <= last => {
                Some(TxnOutcome::Committed {
                    sync_id: SyncId(sync_id.0 + offset as u64),
                    changes: Vec::new(),
                })
            }
            _ => None,
        });
    }
    if let Some(sync_id) = sync_id {
        return Ok(Some(TxnOutcome::Committed {
            sync_id,
            changes: Vec::new(),
        }));
    }
    let name = code.unwrap_or_default();
    let code = RejectCode::parse(&name).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "client {client} txn {seq}: unknown outcome {name:?}"
        ))
    })?;
    Ok(Some(TxnOutcome::Rejected {
        code,
        message: message.unwrap_or_default(),
    }))
}

/// Checks the preconditions, then applies the mutations (the caller logs them). The
/// guard, if any, sees every row change right after it is made, inside the
/// transaction's savepoint: its refusal rejects the whole transaction (code `forbidden`).
///
/// Without a guard, the values an insert stores unchanged are moved out of `txn` into
/// its change (the guard sees each mutation whole).
fn write_txn<'c>(
    conn: &'c Connection,
    ctx: &mut Ctx<'_, 'c>,
    sync_id: SyncId,
    txn: &mut WriteTxn,
    guard: Option<&dyn WriteGuard>,
) -> Result<Vec<Change>, TxnError> {
    for precondition in &txn.preconditions {
        check_precondition(conn, ctx, precondition, guard)?;
    }
    let mut changes = Vec::with_capacity(txn.mutations.len());
    for mutation in &mut txn.mutations {
        let table = lookup_table(ctx.schema, mutation.table())?;
        let sql = ctx.sql.table(table)?;
        let (kind, old, new) = match mutation {
            Mutation::Insert { values, .. } => {
                match insert(conn, &mut ctx.inserts, table, sql, values, guard.is_none()) {
                    Ok(new) => (ChangeKind::Insert, None, Some(new)),
                    Err(TxnError::Reject(RejectCode::AlreadyExists, message)) => {
                        return Err(taken_key(conn, table, sql, values, guard, message));
                    }
                    Err(e) => return Err(e),
                }
            }
            Mutation::Update { key, set, .. } => {
                let (old, new) = update(conn, table, sql, key, set)?;
                (ChangeKind::Update, Some(old), Some(new))
            }
            Mutation::Delete { key, .. } => (
                ChangeKind::Delete,
                Some(delete(conn, table, sql, key)?),
                None,
            ),
        };
        if let (Some(guard), Some(old)) = (guard, &old) {
            // A row the caller may not read is reported as missing, with the same words.
            if !guard.readable(table, old, None) {
                return missing_row(table, &old[table.pk]);
            }
        }
        if let Some(guard) = guard {
            if let Err(message) = guard.check(table, mutation, old.as_deref(), new.as_deref()) {
                return reject(RejectCode::Forbidden, message);
            }
        }
        let image = new
            .as_ref()
            .or(old.as_ref())
            .expect("every change has an image");
        let change = Change {
            sync_id,
            table: table.name.clone(),
            key: image[table.pk].clone(),
            kind,
            old,
            new,
            origin: txn.origin.clone(),
        };
        changes.push(change);
    }
    Ok(changes)
}

/// Runs one transaction's checks and writes on `conn`, inside a transaction the caller
/// rolls back (nothing is kept): the changes it makes (sync id 0), or its rejection.
/// For [`super::WriteCheck`], which judges writes bound for PostgreSQL.
pub(super) fn dry_run(
    conn: &Connection,
    schema: &Schema,
    sql: &SqlCache,
    txn: &WriteTxn,
    guard: Option<&dyn WriteGuard>,
) -> Result<Result<Vec<Change>, (RejectCode, String)>, StoreError> {
    let mut txn = txn.clone();
    match write_txn(conn, &mut Ctx::new(schema, sql), SyncId(0), &mut txn, guard) {
        Ok(changes) => Ok(Ok(changes)),
        Err(TxnError::Reject(code, message)) => Ok(Err((code, message))),
        Err(TxnError::Store(e)) => Err(e),
    }
}

fn lookup_table<'s>(schema: &'s Schema, name: &str) -> Result<&'s Table, TxnError> {
    match schema.table(name) {
        Some(table) => Ok(table),
        None => reject(RejectCode::Schema, format!("unknown table {name}")),
    }
}

fn lookup_column(table: &Table, name: &str) -> Result<usize, TxnError> {
    match table.column_index(name) {
        Some(i) => Ok(i),
        None => reject(
            RejectCode::Schema,
            format!("unknown column {}.{name}", table.name),
        ),
    }
}

/// Whether SQLite would store `value` in `column` as the rule allows: INTEGER takes
/// integers and integral reals, REAL and NUMERIC take numbers, TEXT takes text, an
/// untyped (BLOB) column takes anything; numeric text is taken where SQLite converts it
/// to an allowed number. NULL always passes here (NOT NULL is checked apart). NaN never
/// passes: SQLite would store it as NULL.
fn check_type(table: &Table, column: &Column, value: &Value) -> Result<(), TxnError> {
    let integral = |r: f64| {
        r.fract() == 0.0 && (-9.223_372_036_854_775e18..9.223_372_036_854_775e18).contains(&r)
    };
    let ok = match (column.affinity, value) {
        (_, Value::Null) => true,
        (_, Value::Real(r)) if r.is_nan() => false,
        (Affinity::Blob, _) => true,
        (Affinity::Integer, Value::Integer(_)) => true,
        (Affinity::Integer, Value::Real(r)) => integral(*r),
        (Affinity::Integer, Value::Text(s)) => match parse_numeric_text(s) {
            Some(Value::Integer(_)) => true,
            Some(Value::Real(r)) => integral(r),
            _ => false,
        },
        (Affinity::Real | Affinity::Numeric, Value::Integer(_) | Value::Real(_)) => true,
        (Affinity::Real | Affinity::Numeric, Value::Text(s)) => parse_numeric_text(s).is_some(),
        (Affinity::Text, Value::Text(_)) => true,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let declared = if column.declared_type.is_empty() {
        column.affinity.name()
    } else {
        &column.declared_type
    };
    let shown: String = value.to_sql_literal().chars().take(40).collect();
    reject(
        RejectCode::Schema,
        format!(
            "type mismatch: column {}.{} is {declared}, cannot store {} value {shown}",
            table.name,
            column.name,
            value.type_name()
        ),
    )
}

fn not_null_violation<T>(table: &Table, column: &Column) -> Result<T, TxnError> {
    reject(
        RejectCode::Constraint,
        format!("NOT NULL constraint failed: {}.{}", table.name, column.name),
    )
}

/// Resolves and validates `(column, value)` pairs: `(column index, position in
/// values)`, sorted by column index.
fn resolve_values(
    table: &Table,
    values: &[(String, Value)],
) -> Result<Vec<(usize, usize)>, TxnError> {
    let mut resolved = Vec::with_capacity(values.len());
    for (at, (name, value)) in values.iter().enumerate() {
        let index = lookup_column(table, name)?;
        let column = &table.columns[index];
        if resolved.iter().any(|(i, _)| *i == index) {
            return reject(
                RejectCode::Invalid,
                format!("column {}.{} is given twice", table.name, column.name),
            );
        }
        check_type(table, column, value)?;
        if value.is_null() && index == table.pk {
            return reject(
                RejectCode::Schema,
                format!("primary key {}.{} is NULL", table.name, column.name),
            );
        }
        if value.is_null() && column.not_null {
            return not_null_violation(table, column);
        }
        resolved.push((index, at));
    }
    resolved.sort_by_key(|(i, _)| *i);
    Ok(resolved)
}

fn row_by_key(
    conn: &Connection,
    table: &Table,
    sql: &TableSql,
    key: &Value,
) -> Result<Option<Vec<Value>>, TxnError> {
    let width = table.columns.len();
    let mut stmt = conn.prepare_cached(&sql.select_by_key)?;
    Ok(stmt.query_row([key], |r| read_row(r, width)).optional()?)
}

fn describe_key(table: &Table, key: &Value) -> String {
    let shown: String = key.to_sql_literal().chars().take(60).collect();
    format!("{}[{shown}]", table.name)
}

/// Updates some columns of a row; returns the old and new full rows as stored.
fn update(
    conn: &Connection,
    table: &Table,
    sql: &TableSql,
    key: &Value,
    set: &[(String, Value)],
) -> Result<(Vec<Value>, Vec<Value>), TxnError> {
    if set.is_empty() {
        return reject(
            RejectCode::Invalid,
            format!("update of {} sets no columns", describe_key(table, key)),
        );
    }
    let resolved = resolve_values(table, set)?;
    if resolved.iter().any(|(i, _)| *i == table.pk) {
        return reject(
            RejectCode::Invalid,
            format!(
                "the primary key {}.{} cannot be updated; delete and insert instead",
                table.name,
                table.pk_column().name
            ),
        );
    }
    let Some(old) = row_by_key(conn, table, sql, key)? else {
        return missing_row(table, key);
    };
    let assignments: Vec<String> = resolved
        .iter()
        .enumerate()
        .map(|(n, (i, _))| format!("{} = ?{}", sql.quoted[*i], n + 1))
        .collect();
    let text = format!(
        "UPDATE {} SET {} WHERE {} = ?{} RETURNING {}",
        sql.name,
        assignments.join(", "),
        sql.quoted[table.pk],
        resolved.len() + 1,
        sql.all
    );
    let width = table.columns.len();
    let args = resolved
        .iter()
        .map(|(_, at)| &set[*at].1)
        .chain(std::iter::once(&old[table.pk]));
    let new = conn
        .prepare_cached(&text)?
        .query_row(rusqlite::params_from_iter(args), |r| read_row(r, width))?;
    Ok((old, new))
}

/// Deletes a row; returns it as it was.
fn delete(
    conn: &Connection,
    table: &Table,
    sql: &TableSql,
    key: &Value,
) -> Result<Vec<Value>, TxnError> {
    let width = table.columns.len();
    let mut stmt = conn.prepare_cached(&sql.delete)?;
    match stmt.query_row([key], |r| read_row(r, width)).optional()? {
        Some(old) => Ok(old),
        None => missing_row(table, key),
    }
}

/// Checks one precondition. The answer never carries the stored value, and a row (or
/// column) the guard says the caller may not read fails exactly as a missing row does:
/// a precondition is no way to read data.
fn check_precondition(
    conn: &Connection,
    ctx: &Ctx<'_, '_>,
    precondition: &Precondition,
    guard: Option<&dyn WriteGuard>,
) -> Result<(), TxnError> {
    let table = lookup_table(ctx.schema, &precondition.table)?;
    let sql = ctx.sql.table(table)?;
    let index = lookup_column(table, &precondition.column)?;
    let column = &table.columns[index];
    let at = format!("{}.{}", describe_key(table, &precondition.key), column.name);
    let row = row_by_key(conn, table, sql, &precondition.key)?
        .filter(|row| guard.is_none_or(|g| g.readable(table, row, Some(index))));
    let Some(row) = row else {
        return reject(
            RejectCode::PreconditionFailed,
            format!(
                "precondition failed on {at}: expected {}, but there is no such row",
                precondition.expected
            ),
        );
    };
    let expected = column
        .affinity
        .apply_for_comparison(precondition.expected.clone());
    if row[index].sqlite_cmp(&expected) == Ordering::Equal {
        return Ok(());
    }
    reject(
        RejectCode::PreconditionFailed,
        format!(
            "precondition failed on {at}: expected {}",
            precondition.expected
        ),
    )
}

/// The rejection for an update or delete of a row that does not exist (or that the
/// caller may not read: the same words).
fn missing_row<T>(table: &Table, key: &Value) -> Result<T, TxnError> {
    reject(
        RejectCode::NotFound,
        format!("no row {}", describe_key(table, key)),
    )
}

/// The rejection for an insert whose key is taken: `already_exists` when the caller may
/// read the row that holds it, otherwise the guard's refusal of an insert, so that the
/// answer does not tell whether a row it cannot read exists.
fn taken_key(
    conn: &Connection,
    table: &Table,
    sql: &TableSql,
    values: &[(String, Value)],
    guard: Option<&dyn WriteGuard>,
    message: String,
) -> TxnError {
    let Some(guard) = guard else {
        return TxnError::Reject(RejectCode::AlreadyExists, message);
    };
    let existing = resolve_values(table, values)
        .ok()
        .and_then(|resolved| {
            resolved
                .iter()
                .find(|(i, _)| *i == table.pk)
                .map(|(_, at)| values[*at].1.clone())
        })
        .map(|key| row_by_key(conn, table, sql, &key));
    match existing {
        Some(Ok(Some(row))) if guard.readable(table, &row, None) => {
            TxnError::Reject(RejectCode::AlreadyExists, message)
        }
        Some(Ok(Some(row))) => {
            TxnError::Reject(RejectCode::Forbidden, guard.insert_denied(table, &row))
        }
        Some(Err(e)) => e,
        _ => TxnError::Reject(RejectCode::AlreadyExists, message),
    }
}
