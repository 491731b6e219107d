//! Inserts of the write path: one row per statement, the statement kept prepared for the
//! whole batch, and the stored row known ahead where it can be (see [`super::image`]).
//!
//! A batch inserts thousands of rows with the same few column sets; each set's statement
//! is looked up once per batch in a short list keyed by the columns given, instead of
//! building its SQL text and finding it in the connection's cache once per row.

use rusqlite::{CachedStatement, Connection};

use super::image::stored_unchanged;
use super::{
    describe_key, not_null_violation, reject, resolve_values, row_by_key, TableSql, TxnError,
};
use crate::schema::Table;
use crate::store::convert::read_row;
use crate::value::Value;
use crate::vocab::RejectCode;

/// Statements held at most during a batch (each a few KiB); past it, a new column set's
/// statement is built and looked up in the connection's cache every time, as are those of
/// tables with more than 64 columns.
const MAX_HELD: usize = 32;

/// The insert statements prepared during one batch, by table and column set.
#[derive(Default)]
pub(super) struct Inserts<'c> {
    held: Vec<Held<'c>>,
}

struct Held<'c> {
    /// The table's address: tables live in the schema for as long as the batch.
    table: *const Table,
    /// Bit `i` set when column `i` is given.
    columns: u64,
    returning: bool,
    stmt: CachedStatement<'c>,
}

impl<'c> Inserts<'c> {
    /// The statement inserting the columns of `resolved` (sorted) into `table`, with
    /// `RETURNING` every column when `returning`.
    fn statement(
        &mut self,
        conn: &'c Connection,
        table: &Table,
        sql: &TableSql,
        resolved: &[(usize, usize)],
        returning: bool,
    ) -> Result<&mut CachedStatement<'c>, TxnError> {
        let mask =
            (table.columns.len() <= 64).then(|| resolved.iter().fold(0u64, |m, (i, _)| m | 1 << i));
        let found = mask.and_then(|columns| {
            self.held.iter().position(|h| {
                std::ptr::eq(h.table, table) && h.columns == columns && h.returning == returning
            })
        });
        let at = match (found, mask) {
            (Some(at), _) => at,
            (None, mask) => {
                let stmt = conn.prepare_cached(&insert_sql(sql, resolved, returning))?;
                // A statement that is not held is kept only until the next one.
                self.held.retain(|h| !h.table.is_null());
                let mask = mask.filter(|_| self.held.len() < MAX_HELD);
                self.held.push(Held {
                    table: if mask.is_some() {
                        table
                    } else {
                        std::ptr::null()
                    },
                    columns: mask.unwrap_or(0),
                    returning,
                    stmt,
                });
                self.held.len() - 1
            }
        };
        Ok(&mut self.held[at].stmt)
    }
}

/// Inserts a row; returns the full row as stored. With `take`, the values stored
/// unchanged are moved out of `values` into the returned row (they are left NULL).
pub(super) fn insert<'c>(
    conn: &'c Connection,
    inserts: &mut Inserts<'c>,
    table: &Table,
    sql: &TableSql,
    values: &mut [(String, Value)],
    take: bool,
) -> Result<Vec<Value>, TxnError> {
    let resolved = resolve_values(table, values)?;
    let Some(&(_, key_at)) = resolved.iter().find(|(i, _)| *i == table.pk) else {
        return reject(
            RejectCode::Schema,
            format!(
                "insert into {} must set the primary key {}",
                table.name,
                table.pk_column().name
            ),
        );
    };
    for (index, column) in table.columns.iter().enumerate() {
        let given = resolved.iter().any(|(i, _)| *i == index);
        if !given && column.not_null && column.default.is_none() {
            return not_null_violation(table, column);
        }
    }
    let known = known_image(table, sql, values, &resolved);
    let stmt = inserts.statement(conn, table, sql, &resolved, !known)?;
    let args = rusqlite::params_from_iter(resolved.iter().map(|(_, at)| &values[*at].1));
    let result = match known {
        true => stmt.execute(args).map(|_| None),
        false => stmt
            .query_row(args, |r| read_row(r, table.columns.len()))
            .map(Some),
    };
    match result {
        Ok(Some(row)) => Ok(row),
        Ok(None) => Ok(image(table, sql, values, &resolved, take)),
        Err(e) => match TxnError::from(e) {
            TxnError::Reject(RejectCode::Constraint, message) => {
                let key = &values[key_at].1;
                if row_by_key(conn, table, sql, key)?.is_some() {
                    reject(
                        RejectCode::AlreadyExists,
                        format!("{} already exists", describe_key(table, key)),
                    )
                } else {
                    reject(RejectCode::Constraint, message)
                }
            }
            other => Err(other),
        },
    }
}

/// Whether the row an insert of `resolved` (column, position in `values`; sorted by
/// column) stores is known ahead: nothing given is converted and every column left out
/// takes a known default. `RETURNING` reads it back otherwise.
fn known_image(
    table: &Table,
    sql: &TableSql,
    values: &[(String, Value)],
    resolved: &[(usize, usize)],
) -> bool {
    let mut given = resolved.iter().peekable();
    for (index, (column, default)) in table.columns.iter().zip(&sql.defaults).enumerate() {
        let known = match given.next_if(|(i, _)| *i == index) {
            Some((_, at)) => stored_unchanged(column.affinity, &values[*at].1),
            None => default.is_some(),
        };
        if !known {
            return false;
        }
    }
    true
}

/// The row [`known_image`] said is known: the given values over the defaults.
fn image(
    table: &Table,
    sql: &TableSql,
    values: &mut [(String, Value)],
    resolved: &[(usize, usize)],
    take: bool,
) -> Vec<Value> {
    let mut given = resolved.iter().peekable();
    let mut row = Vec::with_capacity(table.columns.len());
    for (index, default) in sql.defaults.iter().enumerate() {
        let value = match given.next_if(|(i, _)| *i == index) {
            Some((_, at)) if take => std::mem::replace(&mut values[*at].1, Value::Null),
            Some((_, at)) => values[*at].1.clone(),
            None => default.clone().unwrap_or(Value::Null),
        };
        row.push(value);
    }
    row
}

/// `INSERT INTO t (given columns) VALUES (?, ...)`, with `RETURNING` every column when
/// `returning`. Built in one allocation.
fn insert_sql(sql: &TableSql, resolved: &[(usize, usize)], returning: bool) -> String {
    let mut text = String::with_capacity(64 + sql.all.len() * 2 + resolved.len() * 4);
    text.push_str("INSERT INTO ");
    text.push_str(&sql.name);
    text.push_str(" (");
    for (n, (i, _)) in resolved.iter().enumerate() {
        if n > 0 {
            text.push_str(", ");
        }
        text.push_str(&sql.quoted[*i]);
    }
    text.push_str(") VALUES (");
    for n in 0..resolved.len() {
        text.push_str(if n == 0 { "?" } else { ", ?" });
    }
    text.push(')');
    if returning {
        text.push_str(" RETURNING ");
        text.push_str(&sql.all);
    }
    text
}
