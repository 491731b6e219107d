//! Reads of a window shape in its order, from a given sort key on: what keeps a window
//! exact as rows come and go (the top-up read when a row leaves, the rows that fall past
//! the edge when rows enter). The reads run on the writer's connection inside its
//! transaction ([`TxnView`]), so they see the state at the transaction just applied.
//!
//! The keyset condition is written so that an index on the order columns (after the
//! WHERE clause's equality columns) serves it: the first term also gets a plain range
//! (`col <= ?`) where its NULLs allow one. Depends on the query layer for SQL text only.

use rusqlite::Connection;

use super::convert::read_row;
use super::StoreError;
use crate::query::{order_sql_quoted, where_sql, OrderTerm, Shape};
use crate::schema::{quote_ident, Table};
use crate::value::Value;
use crate::vocab::{Change, SyncId};

/// Where a window read starts, as a sort key ([`crate::query::Window::key`]).
#[derive(Debug, Clone, Copy)]
pub enum WindowFrom<'a> {
    /// From the first row.
    Start,
    /// From the first row strictly after this key.
    After(&'a [Value]),
    /// From this key's row (if it still sorts there), else the first row after it.
    AtOrAfter(&'a [Value]),
}

/// One read of a window shape's rows in order.
#[derive(Debug, Clone, Copy)]
pub struct WindowRead<'a> {
    /// The window shape: its filter and order (its own limit is not used).
    pub shape: &'a Shape,
    /// Read in the opposite order (last row first); `from` is then a key in that order.
    pub reverse: bool,
    /// Where to start.
    pub from: WindowFrom<'a>,
    /// The most rows to return.
    pub limit: u64,
}

/// The writer's transaction, as window maintenance reads it: every change applied so far
/// in the batch is visible.
pub trait TxnView {
    /// Full rows (table column order) of `read`, in its order. Fails with
    /// [`StoreError::Sqlite`] when the read does, [`StoreError::Corrupt`] when the shape is
    /// no window.
    fn window_rows(&self, read: &WindowRead<'_>) -> Result<Vec<Vec<Value>>, StoreError>;
}

/// Told of each transaction the writer commits, inside the writer's transaction, right
/// after the transaction's changes are applied (a window shape's maintenance).
pub trait CommitObserver {
    /// One transaction committed with `changes` (not empty) at `sync_id`; `view` sees
    /// the state right after it. An error fails the whole batch, like a database error.
    fn committed(
        &mut self,
        view: &dyn TxnView,
        sync_id: SyncId,
        changes: &[Change],
    ) -> Result<(), StoreError>;

    /// The batch ended: `committed` is false when it was rolled back (whatever
    /// [`CommitObserver::committed`] saw did not happen). Called under the writer lock.
    fn finished(&mut self, committed: bool);

    /// The changes [`CommitObserver::committed`] was told of so far are one part of a
    /// replicated transaction too large to hold whole: more parts of it follow, and it
    /// is not fanned out change by change ([`crate::store::Replicated::Spilled`]). What
    /// the observer keeps for the fan-out may go; what it keeps for a rollback may not.
    fn spilled(&mut self) {}
}

/// Observes nothing.
pub(crate) struct NoObserver;

impl CommitObserver for NoObserver {
    fn committed(&mut self, _: &dyn TxnView, _: SyncId, _: &[Change]) -> Result<(), StoreError> {
        Ok(())
    }

    fn finished(&mut self, _: bool) {}
}

/// A [`TxnView`] on a connection (the writer's, inside its transaction).
pub(crate) struct ConnView<'c>(pub &'c Connection);

impl TxnView for ConnView<'_> {
    fn window_rows(&self, read: &WindowRead<'_>) -> Result<Vec<Vec<Value>>, StoreError> {
        let (sql, values) = window_sql(read)?;
        let mut stmt = self.0.prepare_cached(&sql)?;
        let width = read.shape.table().columns.len();
        let rows = stmt.query_map(rusqlite::params_from_iter(values.iter()), |r| {
            read_row(r, width)
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

/// `SELECT every column FROM t WHERE filter [AND keyset] ORDER BY ... LIMIT n` and its
/// values.
pub(crate) fn window_sql(read: &WindowRead<'_>) -> Result<(String, Vec<Value>), StoreError> {
    let shape = read.shape;
    let table = shape.table();
    let window = shape
        .window()
        .ok_or_else(|| StoreError::Corrupt("a window read of a shape without a window".into()))?;
    let order: Vec<OrderTerm> = if read.reverse {
        window.order().iter().map(OrderTerm::reversed).collect()
    } else {
        window.order().to_vec()
    };
    let (filter, mut values) = where_sql(shape.filter(), table);
    let mut sql = format!(
        "SELECT {} FROM {} WHERE ({filter})",
        super::sqlite::column_list(table),
        quote_ident(&table.name)
    );
    let keyset = match read.from {
        WindowFrom::Start => None,
        WindowFrom::After(key) => Some((key, false)),
        WindowFrom::AtOrAfter(key) => Some((key, true)),
    };
    if let Some((key, inclusive)) = keyset {
        sql.push_str(" AND ");
        sql.push_str(&keyset_sql(table, &order, key, inclusive, &mut values));
    }
    sql.push(' ');
    sql.push_str(&order_sql_quoted(table, &order));
    sql.push_str(&format!(" LIMIT {}", read.limit));
    Ok((sql, values))
}

/// A column that never holds NULL: NOT NULL, or the primary key (sluice refuses NULL keys).
fn never_null(table: &Table, col: usize) -> bool {
    col == table.pk || table.columns[col].not_null
}

/// `"col"`, or `+"col"` when the column's affinity would change `value` (a bound
/// parameter has none; stored values never change, so indexes stay usable).
fn column_for(table: &Table, col: usize, value: &Value) -> String {
    let column = &table.columns[col];
    let name = quote_ident(&column.name);
    if &column.affinity.apply_for_comparison(value.clone()) != value {
        format!("+{name}")
    } else {
        name
    }
}

/// Rows that sort strictly after `key` in `order` (or at it, when `inclusive`): the
/// lexicographic comparison spelled out term by term with SQLite's NULL placement, plus a
/// plain range on the first term where it has one (for the index).
fn keyset_sql(
    table: &Table,
    order: &[OrderTerm],
    key: &[Value],
    inclusive: bool,
    values: &mut Vec<Value>,
) -> String {
    // Built from the last term outwards: after_i OR (equal_i AND <rest>).
    let mut rest: Option<(String, Vec<Value>)> = None;
    for (i, term) in order.iter().enumerate().rev() {
        let value = &key[i];
        let col = column_for(table, term.col, value);
        let last = i + 1 == order.len();
        let (after, after_values) = after_sql(table, term, &col, value, last && inclusive);
        let combined = match rest.take() {
            None => (after, after_values),
            Some((rest_sql, rest_values)) => {
                let (equal, equal_values) = if value.is_null() {
                    (format!("{col} IS NULL"), Vec::new())
                } else {
                    (format!("{col} = ?"), vec![value.clone()])
                };
                let mut v = after_values;
                v.extend(equal_values);
                v.extend(rest_values);
                (format!("({after} OR ({equal} AND {rest_sql}))"), v)
            }
        };
        rest = Some(combined);
    }
    let (cond, cond_values) = rest.unwrap_or_else(|| ("1".into(), Vec::new()));
    // The first term's plain range, redundant with the condition, for the index.
    if let (Some(first), Some(value)) = (order.first(), key.first()) {
        let col = column_for(table, first.col, value);
        let range = if value.is_null() {
            (!first.nulls_first).then(|| format!("{col} IS NULL"))
        } else if first.nulls_first || never_null(table, first.col) {
            Some(format!("{col} {} ?", if first.desc { "<=" } else { ">=" }))
        } else {
            None
        };
        if let Some(range) = range {
            if !value.is_null() {
                values.push(value.clone());
            }
            values.extend(cond_values);
            return format!("{range} AND {cond}");
        }
    }
    values.extend(cond_values);
    cond
}

/// Rows whose `term` value sorts after `value` (or equal to it, when `or_equal`).
fn after_sql(
    table: &Table,
    term: &OrderTerm,
    col: &str,
    value: &Value,
    or_equal: bool,
) -> (String, Vec<Value>) {
    let nullable = !never_null(table, term.col);
    if value.is_null() {
        // NULLs first: every value comes after a NULL; NULLs last: nothing does.
        let after = if term.nulls_first {
            format!("{col} IS NOT NULL")
        } else {
            "0".to_string()
        };
        return if or_equal {
            (format!("({after} OR {col} IS NULL)"), Vec::new())
        } else {
            (after, Vec::new())
        };
    }
    let op = match (term.desc, or_equal) {
        (false, false) => ">",
        (false, true) => ">=",
        (true, false) => "<",
        (true, true) => "<=",
    };
    let base = format!("{col} {op} ?");
    if !term.nulls_first && nullable {
        (format!("({base} OR {col} IS NULL)"), vec![value.clone()])
    } else {
        (base, vec![value.clone()])
    }
}
