//! Windows: `ORDER BY term [ASC|DESC] [NULLS FIRST|LAST], ... LIMIT n`.
//!
//! A window holds exactly the first `n` rows SQLite returns for the same query with
//! `, pk ASC` appended as the tie-break, so that the order is total and the window
//! deterministic. This module parses the clause (from sqlparser's tree), normalizes the
//! terms (defaults spelled out, duplicates and terms after the primary key dropped, the
//! tie-break appended), binds the limit and compares rows in SQLite's order: storage
//! classes (NULL < INTEGER/REAL < TEXT < BLOB), numbers compared numerically, BINARY
//! collation, NULLs first in `ASC` and last in `DESC` unless `NULLS FIRST|LAST` says
//! otherwise. Pure: no IO.

use std::cmp::Ordering;

use sqlparser::ast::{Expr, LimitClause, OrderByKind, Query, Value as SqlValue};

use super::build::Builder;
use super::error::{snippet, Pos, QueryError, QueryErrorKind};
use super::parse::{pos_of, unsupported};
use super::render::ident_sql;
use super::Params;
use crate::schema::{quote_ident, Table};
use crate::value::Value;

/// The largest `n` of `LIMIT n` (10,000 rows). A window's snapshot, its resize and its
/// resume are bounded by it.
pub const MAX_WINDOW_LIMIT: u64 = 10_000;

/// One `ORDER BY` term: a column, its direction and where its NULLs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrderTerm {
    /// The column's index in the table.
    pub col: usize,
    /// `DESC` (largest first) rather than `ASC`.
    pub desc: bool,
    /// NULLs before every other value (the default for `ASC`) rather than after them.
    pub nulls_first: bool,
}

impl OrderTerm {
    /// Compares two values of this term's column in the term's order.
    pub fn cmp(&self, a: &Value, b: &Value) -> Ordering {
        match (a.is_null(), b.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) if self.nulls_first => Ordering::Less,
            (true, false) => Ordering::Greater,
            (false, true) if self.nulls_first => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) if self.desc => b.sqlite_cmp(a),
            (false, false) => a.sqlite_cmp(b),
        }
    }

    /// The same column in the opposite order (direction and NULLs reversed).
    pub fn reversed(&self) -> OrderTerm {
        OrderTerm {
            col: self.col,
            desc: !self.desc,
            nulls_first: !self.nulls_first,
        }
    }
}

/// The bound `ORDER BY ... LIMIT n` of a window shape. `order` ends with the primary key
/// (ascending unless the subscription ordered by it), so two different rows never tie.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Window {
    order: Vec<OrderTerm>,
    limit: u64,
}

impl Window {
    /// The normalized order: the subscription's terms, then the primary key.
    pub fn order(&self) -> &[OrderTerm] {
        &self.order
    }

    /// `n`: the most rows the window holds.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The same order with another limit (a resize).
    pub fn with_limit(&self, limit: u64) -> Window {
        Window {
            order: self.order.clone(),
            limit,
        }
    }

    /// The sort key of a full row: the values of the order's columns, in order.
    pub fn key(&self, row: &[Value]) -> Vec<Value> {
        self.order.iter().map(|t| row[t.col].clone()).collect()
    }

    /// Compares two sort keys (as [`Window::key`] makes them) in the window's order.
    pub fn cmp_keys(&self, a: &[Value], b: &[Value]) -> Ordering {
        for (i, term) in self.order.iter().enumerate() {
            match term.cmp(&a[i], &b[i]) {
                Ordering::Equal => continue,
                other => return other,
            }
        }
        Ordering::Equal
    }

    /// Compares two full rows in the window's order.
    pub fn cmp_rows(&self, a: &[Value], b: &[Value]) -> Ordering {
        for term in &self.order {
            match term.cmp(&a[term.col], &b[term.col]) {
                Ordering::Equal => continue,
                other => return other,
            }
        }
        Ordering::Equal
    }

    /// `ORDER BY a DESC, id ASC` for SQL text (identifiers quoted only when needed).
    pub fn order_sql(&self, table: &Table) -> String {
        order_sql(table, &self.order, ident_sql)
    }
}

/// `ORDER BY ...` of `order`, each identifier written by `ident`. NULLs placement is
/// spelled out only where it differs from SQLite's default for the direction.
pub(crate) fn order_sql(table: &Table, order: &[OrderTerm], ident: fn(&str) -> String) -> String {
    let terms: Vec<String> = order
        .iter()
        .map(|t| {
            let mut s = ident(&table.columns[t.col].name);
            s.push_str(if t.desc { " DESC" } else { " ASC" });
            if t.nulls_first == t.desc {
                s.push_str(if t.nulls_first {
                    " NULLS FIRST"
                } else {
                    " NULLS LAST"
                });
            }
            s
        })
        .collect();
    format!("ORDER BY {}", terms.join(", "))
}

/// `ORDER BY ...` of `order` for SQLite: every identifier quoted.
pub fn order_sql_quoted(table: &Table, order: &[OrderTerm]) -> String {
    order_sql(table, order, quote_ident)
}

/// The limit of a window as written: a literal or a parameter bound later.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Limit {
    Lit(u64),
    Param { name: String, pos: Pos },
}

/// A window before its limit is bound.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WindowTemplate {
    pub order: Vec<OrderTerm>,
    pub limit: Limit,
}

impl WindowTemplate {
    /// Binds the limit: a positive integer of at most [`MAX_WINDOW_LIMIT`].
    pub fn bind(&self, params: &Params) -> Result<Window, QueryError> {
        let limit = match &self.limit {
            Limit::Lit(n) => *n,
            Limit::Param { name, pos } => match params.get(name) {
                Some(super::Param::Value(Value::Integer(n))) => check_limit(*n, *pos)?,
                Some(_) => {
                    return Err(QueryError::new(
                        QueryErrorKind::ParameterType,
                        format!("LIMIT :{} needs a positive integer", snippet(name)),
                        *pos,
                    ))
                }
                None => {
                    return Err(QueryError::new(
                        QueryErrorKind::UnboundParameter,
                        format!("parameter :{} is not bound", snippet(name)),
                        *pos,
                    ))
                }
            },
        };
        Ok(Window {
            order: self.order.clone(),
            limit,
        })
    }

    /// The text after the WHERE clause, the limit left as `:name` when it is a parameter.
    pub fn text(&self, table: &Table) -> String {
        let limit = match &self.limit {
            Limit::Lit(n) => n.to_string(),
            Limit::Param { name, .. } => format!(":{name}"),
        };
        format!("{} LIMIT {limit}", order_sql(table, &self.order, ident_sql))
    }
}

/// A window with a bound limit, for shapes built from parts.
pub(crate) fn window_text(table: &Table, window: &Window) -> String {
    format!("{} LIMIT {}", window.order_sql(table), window.limit)
}

/// Refuses a limit below 1 or above [`MAX_WINDOW_LIMIT`].
fn check_limit(n: i64, pos: Pos) -> Result<u64, QueryError> {
    if n < 1 {
        return Err(QueryError::new(
            QueryErrorKind::Unsupported,
            format!("LIMIT must be a positive integer, not {n}: a window holds at least one row"),
            pos,
        ));
    }
    if n as u64 > MAX_WINDOW_LIMIT {
        return Err(QueryError::new(
            QueryErrorKind::TooComplex,
            format!("LIMIT {n} is past the largest window, {MAX_WINDOW_LIMIT} rows"),
            pos,
        ));
    }
    Ok(n as u64)
}

/// The window clause of a top-level query, if any: `ORDER BY` and `LIMIT` together, or
/// neither. Refuses `OFFSET`, `FETCH`, `ORDER BY` without `LIMIT`, `LIMIT` without
/// `ORDER BY`, and order terms other than columns, each with its position.
pub(super) fn window_of(
    builder: &Builder<'_>,
    query: &Query,
) -> Result<Option<WindowTemplate>, QueryError> {
    if let Some(fetch) = &query.fetch {
        let _ = fetch;
        return Err(unsupported(
            "FETCH is not supported; a window is ORDER BY ... LIMIT n",
            query.body.as_ref(),
        ));
    }
    let limit = match &query.limit_clause {
        None => None,
        Some(clause @ LimitClause::OffsetCommaLimit { .. }) => {
            return Err(unsupported(
                "OFFSET is not supported (`LIMIT offset, n`): a window starts at the first row",
                clause,
            ))
        }
        Some(
            clause @ LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            },
        ) => {
            if let Some(offset) = offset {
                return Err(unsupported(
                    "OFFSET is not supported: a window starts at the first row; grow it \
                     with a larger LIMIT instead",
                    &offset.value,
                ));
            }
            if let Some(by) = limit_by.first() {
                return Err(unsupported("LIMIT BY is not supported", by));
            }
            match limit {
                Some(e) => Some(limit_operand(e)?),
                None => return Err(unsupported("LIMIT needs a number of rows", clause)),
            }
        }
    };
    let order = match &query.order_by {
        None => None,
        Some(order_by) => match &order_by.kind {
            OrderByKind::All(_) => {
                return Err(unsupported("ORDER BY ALL is not supported", order_by))
            }
            OrderByKind::Expressions(exprs) => {
                let mut terms = Vec::with_capacity(exprs.len());
                for e in exprs {
                    if let Some(fill) = &e.with_fill {
                        let _ = fill;
                        return Err(unsupported("WITH FILL is not supported", &e.expr));
                    }
                    let col = order_column(builder, &e.expr)?;
                    let desc = e.options.asc == Some(false);
                    terms.push(OrderTerm {
                        col,
                        desc,
                        nulls_first: e.options.nulls_first.unwrap_or(!desc),
                    });
                }
                Some((terms, order_by))
            }
        },
    };
    match (order, limit) {
        (None, None) => Ok(None),
        (Some((_, order_by)), None) => Err(unsupported(
            "ORDER BY needs LIMIT n: a subscription without a limit holds every matching \
             row in no particular order",
            order_by,
        )),
        (None, Some(_)) => Err(unsupported(
            "LIMIT needs ORDER BY: which rows a window holds depends on their order",
            query.limit_clause.as_ref().expect("limit seen"),
        )),
        (Some((terms, _)), Some(limit)) => Ok(Some(WindowTemplate {
            order: normalize(builder.table, terms),
            limit,
        })),
    }
}

/// An order term must be a plain column (`+col` sorts the same and is accepted).
fn order_column(builder: &Builder<'_>, e: &Expr) -> Result<usize, QueryError> {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => builder.column(e),
        Expr::Nested(inner) => order_column(builder, inner),
        Expr::UnaryOp {
            op: sqlparser::ast::UnaryOperator::Plus,
            expr,
        } => order_column(builder, expr),
        Expr::Value(_) => Err(unsupported(
            "ORDER BY takes column names, not numbers or literals",
            e,
        )),
        Expr::Collate { .. } => Err(unsupported(
            "COLLATE is not supported: windows sort with BINARY collation",
            e,
        )),
        other => Err(unsupported(
            format!(
                "ORDER BY takes column names; `{}` is not supported",
                snippet(&other.to_string())
            ),
            other,
        )),
    }
}

fn limit_operand(e: &Expr) -> Result<Limit, QueryError> {
    match e {
        Expr::Nested(inner) => limit_operand(inner),
        Expr::Value(v) => match &v.value {
            SqlValue::Number(text, _) => match text.parse::<i64>() {
                Ok(n) => Ok(Limit::Lit(check_limit(n, pos_of(e))?)),
                Err(_) => Err(QueryError::new(
                    QueryErrorKind::Unsupported,
                    format!("LIMIT must be a positive integer, not `{}`", snippet(text)),
                    pos_of(e),
                )),
            },
            SqlValue::Placeholder(name) => Ok(Limit::Param {
                name: name.strip_prefix(':').unwrap_or(name).to_string(),
                pos: pos_of(e),
            }),
            _ => Err(unsupported(
                "LIMIT must be a positive integer or a parameter",
                e,
            )),
        },
        other => Err(unsupported(
            "LIMIT must be a positive integer or a parameter",
            other,
        )),
    }
}

/// Canonical terms: a NOT NULL column (or the primary key) puts its NULLs where its
/// direction's default does (it has none); a column already ordered by is dropped (it
/// cannot break a tie the earlier term left); terms after the primary key are dropped
/// (it never ties); the primary key ascending is appended when it is not there.
fn normalize(table: &Table, terms: Vec<OrderTerm>) -> Vec<OrderTerm> {
    let mut out: Vec<OrderTerm> = Vec::with_capacity(terms.len() + 1);
    for mut term in terms {
        if out.iter().any(|t| t.col == term.col) {
            continue;
        }
        if term.col == table.pk || table.columns[term.col].not_null {
            term.nulls_first = !term.desc;
        }
        out.push(term);
        if term.col == table.pk {
            return out;
        }
    }
    out.push(OrderTerm {
        col: table.pk,
        desc: false,
        nulls_first: true,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_and_directions_follow_sqlite() {
        let asc = OrderTerm {
            col: 0,
            desc: false,
            nulls_first: true,
        };
        let desc = OrderTerm {
            col: 0,
            desc: true,
            nulls_first: false,
        };
        let (null, one, text) = (Value::Null, Value::Integer(1), Value::Text("a".into()));
        assert_eq!(asc.cmp(&null, &one), Ordering::Less);
        assert_eq!(asc.cmp(&one, &text), Ordering::Less);
        assert_eq!(desc.cmp(&null, &one), Ordering::Greater);
        assert_eq!(desc.cmp(&one, &text), Ordering::Greater);
        assert_eq!(asc.reversed(), desc);
        assert_eq!(asc.cmp(&Value::Real(1.0), &one), Ordering::Equal);
    }
}
