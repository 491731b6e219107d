//! Parsing: subscription text -> validated [`Template`] (table, projection and an
//! un-normalized predicate tree whose operands may still be parameters).
//!
//! sqlparser does the parsing; a small token pass before it ([`super::tokens`]) adds what
//! SQLite has and sqlparser's SQLite dialect lacks (`:name` / `:a.b` parameters,
//! `IN :param`, `GLOB`, `x IS <value>`). This file checks the statement's shape (one
//! SELECT from one table, no joins or grouping; [`super::window`] reads an `ORDER BY ...
//! LIMIT n`); [`super::build`] turns the
//! select list and WHERE clause into the tree. Everything outside the language is refused
//! with a position. Pure: no IO.

use std::sync::Arc;

use sqlparser::ast::{GroupByExpr, Query, Select, SetExpr, Spanned, Statement, TableFactor};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Location;

use super::build::Builder;
use super::error::{snippet, Pos, QueryError, QueryErrorKind};
use super::limits::{self, MAX_DEPTH};
use super::pred::{CmpOp, TruthTest};
use super::tokens::{rewrite_tokens, tokenize};
use super::window::{window_of, WindowTemplate};
use crate::schema::{Schema, Table};
use crate::value::Value;

/// sqlparser's own recursion limit, a safety net behind [`MAX_DEPTH`] (which the token
/// pass enforces first): each parenthesis or NOT costs sqlparser about one level, and
/// the statement around the expression a few more.
const PARSER_RECURSION_LIMIT: usize = 2 * MAX_DEPTH + 16;

/// A column reference; `affinity` is false for `+col`, which drops the column's affinity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ColRef {
    pub idx: usize,
    pub affinity: bool,
}

/// A constant operand: a literal, or a named parameter bound later.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    Lit(Value),
    Param { name: String, pos: Pos },
}

/// The right side of `IN`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum InList {
    Items(Vec<Operand>),
    Array { name: String, pos: Pos },
}

/// A validated predicate before binding and normalization. AND/OR chains are flattened
/// into one group, so the tree is only as deep as the text's nesting (parentheses and
/// NOT, at most [`MAX_DEPTH`]); walks over it may recurse.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Cmp {
        col: ColRef,
        op: CmpOp,
        rhs: Operand,
    },
    In {
        col: ColRef,
        list: InList,
        negated: bool,
    },
    Between {
        col: ColRef,
        low: Operand,
        high: Operand,
        negated: bool,
    },
    Like {
        col: usize,
        pattern: Operand,
        escape: Option<char>,
        negated: bool,
    },
    Glob {
        col: usize,
        pattern: Operand,
        negated: bool,
    },
    Truth {
        col: usize,
        test: TruthTest,
    },
}

/// A parsed and validated subscription whose parameters are not bound yet.
#[derive(Debug, Clone)]
pub struct Template {
    pub(crate) table: Arc<Table>,
    /// Selected column indexes in table order (always including the primary key);
    /// `None` for every column.
    pub(crate) projection: Option<Vec<usize>>,
    pub(crate) filter: Option<Node>,
    /// `ORDER BY ... LIMIT n`, normalized, for a window.
    pub(crate) window: Option<WindowTemplate>,
}

impl Template {
    /// Parses `sql` against `schema`. Linear in the length of the text. Errors: a
    /// [`QueryError`] at the offending token: not SQL, not a single plain SELECT of one
    /// table, an unknown table or column, or an expression outside the language; or
    /// [`QueryErrorKind::TooComplex`] past one of the limits of [`super::MAX_TERMS`] and
    /// its neighbours, checked on the text's length and then on its tokens before
    /// anything is parsed.
    pub fn parse(schema: &Schema, sql: &str) -> Result<Template, QueryError> {
        let dialect = SQLiteDialect {};
        limits::check_length(sql)?;
        let tokens = tokenize(sql)?;
        limits::check_tokens(&tokens)?;
        let tokens = rewrite_tokens(tokens)?;
        let statements = Parser::new(&dialect)
            .with_recursion_limit(PARSER_RECURSION_LIMIT)
            .with_tokens_with_locations(tokens)
            .parse_statements()
            .map_err(|e| parser_error(e, sql))?;
        let statement = match statements.as_slice() {
            [one] => one,
            [] => {
                return Err(QueryError::new(
                    QueryErrorKind::Syntax,
                    "empty subscription",
                    Pos::START,
                ))
            }
            [_, second, ..] => {
                return Err(QueryError::new(
                    QueryErrorKind::Unsupported,
                    format!("one SELECT statement expected, found {}", statements.len()),
                    pos_of(second),
                ))
            }
        };
        let query = match statement {
            Statement::Query(q) => q,
            _ => {
                // Point at the statement's first keyword (`DELETE`), not at wherever
                // sqlparser's span for the statement starts (its table name).
                return Err(QueryError::new(
                    QueryErrorKind::Unsupported,
                    "only SELECT statements are subscriptions",
                    first_word_pos(sql),
                ));
            }
        };
        let select = select_of(query, true)?;
        let table = table_of(schema, select)?;
        let builder = Builder {
            table: &table,
            alias: select_alias(select),
        };
        let projection = builder.projection(&select.projection)?;
        let filter = select
            .selection
            .as_ref()
            .map(|e| builder.predicate(e))
            .transpose()?;
        let window = window_of(&builder, query)?;
        let projection = match &window {
            Some(w) => {
                let mut needed: Vec<usize> = w.order.iter().map(|t| t.col).collect();
                if let Some(node) = &filter {
                    filter_columns(node, &mut needed);
                }
                with_columns(&table, projection, &needed)
            }
            None => projection,
        };
        Ok(Template {
            table,
            projection,
            filter,
            window,
        })
    }

    /// The table the subscription selects from.
    pub fn table(&self) -> &Table {
        &self.table
    }
}

/// The projection with `needed` columns added. A window's order columns and the columns
/// its WHERE clause tests always travel (like the primary key): a client orders its local
/// copy of the window by the first, and decides with the second which of its own pending
/// writes sort into it.
fn with_columns(
    table: &Table,
    projection: Option<Vec<usize>>,
    needed: &[usize],
) -> Option<Vec<usize>> {
    let mut cols = projection?;
    for &col in needed {
        if !cols.contains(&col) {
            cols.push(col);
        }
    }
    cols.sort_unstable();
    (cols.len() < table.columns.len()).then_some(cols)
}

/// Appends the columns `node` tests. Recursive over the tree, whose depth is the text's
/// nesting (at most [`MAX_DEPTH`]).
fn filter_columns(node: &Node, out: &mut Vec<usize>) {
    match node {
        Node::And(members) | Node::Or(members) => {
            members.iter().for_each(|m| filter_columns(m, out));
        }
        Node::Not(inner) => filter_columns(inner, out),
        Node::Cmp { col, .. } | Node::In { col, .. } | Node::Between { col, .. } => {
            out.push(col.idx)
        }
        Node::Like { col, .. } | Node::Glob { col, .. } | Node::Truth { col, .. } => out.push(*col),
    }
}

/// The position of the first non-space character of `sql`.
fn first_word_pos(sql: &str) -> Pos {
    let mut pos = Pos::START;
    for c in sql.chars() {
        match c {
            '\n' => {
                pos = Pos {
                    line: pos.line + 1,
                    column: 1,
                }
            }
            c if c.is_whitespace() => pos.column += 1,
            _ => break,
        }
    }
    pos
}

/// The position just past the end of `sql`, for errors at end of input.
fn end_pos(sql: &str) -> Pos {
    let line = sql.lines().count().max(1) as u64;
    let column = sql.lines().last().map_or(0, |l| l.chars().count()) as u64 + 1;
    Pos { line, column }
}

fn parser_error(e: ParserError, sql: &str) -> QueryError {
    match e {
        ParserError::RecursionLimitExceeded => QueryError::new(
            QueryErrorKind::TooComplex,
            "expression nested too deeply",
            Pos::START,
        ),
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => {
            // sqlparser appends " at Line: L, Column: C"; keep the position structured.
            let (message, pos) = match m.rfind(" at Line: ") {
                Some(i) => {
                    let tail = &m[i + " at Line: ".len()..];
                    let mut parts = tail.split(", Column: ");
                    let line = parts.next().and_then(|l| l.trim().parse().ok());
                    let column = parts.next().and_then(|c| c.trim().parse().ok());
                    match (line, column) {
                        (Some(line), Some(column)) => (m[..i].to_string(), Pos { line, column }),
                        _ => (m.clone(), Pos::START),
                    }
                }
                None if m.contains("found: EOF") => (m.clone(), end_pos(sql)),
                None => (m.clone(), Pos::START),
            };
            let message = message
                .strip_prefix("sql parser error: ")
                .unwrap_or(&message);
            QueryError::new(QueryErrorKind::Syntax, message, pos)
        }
    }
}

pub(super) fn pos_of(node: &impl Spanned) -> Pos {
    Pos::from_location(node.span().start)
}

pub(super) fn unsupported(message: impl Into<String>, at: &impl Spanned) -> QueryError {
    QueryError::new(QueryErrorKind::Unsupported, message, pos_of(at))
}

/// The SELECT of a query; only the outermost (`top`) may carry a window, which
/// [`window_of`] reads.
fn select_of(query: &Query, top: bool) -> Result<&Select, QueryError> {
    if let Some(with) = &query.with {
        return Err(unsupported(
            "WITH (common table expressions) is not supported",
            with,
        ));
    }
    if !top {
        if let Some(order_by) = &query.order_by {
            return Err(unsupported(
                "ORDER BY inside parentheses is not supported; put the window outside",
                order_by,
            ));
        }
        if let Some(limit) = &query.limit_clause {
            return Err(unsupported(
                "LIMIT inside parentheses is not supported; put the window outside",
                limit,
            ));
        }
    }
    match query.body.as_ref() {
        SetExpr::Select(select) => Ok(select),
        SetExpr::Query(inner) => select_of(inner, false),
        SetExpr::SetOperation { op, right, .. } => Err(unsupported(
            format!("{op} is not supported"),
            right.as_ref(),
        )),
        other => Err(unsupported(
            "only SELECT statements are subscriptions",
            other,
        )),
    }
}

fn select_alias(select: &Select) -> Option<String> {
    match select.from.first().map(|f| &f.relation) {
        Some(TableFactor::Table {
            alias: Some(alias), ..
        }) => Some(alias.name.value.clone()),
        _ => None,
    }
}

fn table_of(schema: &Schema, select: &Select) -> Result<Arc<Table>, QueryError> {
    if let Some(distinct) = &select.distinct {
        let _ = distinct;
        return Err(QueryError::new(
            QueryErrorKind::Unsupported,
            "DISTINCT is not supported (rows are keyed by primary key already)",
            Pos::from_location(select.select_token.0.span.start),
        ));
    }
    match &select.group_by {
        GroupByExpr::Expressions(exprs, _) if exprs.is_empty() => {}
        GroupByExpr::Expressions(exprs, _) => {
            return Err(unsupported("GROUP BY is not supported", &exprs[0]))
        }
        GroupByExpr::All(_) => {
            return Err(QueryError::new(
                QueryErrorKind::Unsupported,
                "GROUP BY is not supported",
                Pos::from_location(select.select_token.0.span.start),
            ))
        }
    }
    if let Some(having) = &select.having {
        return Err(unsupported("HAVING is not supported", having));
    }
    let from = match select.from.as_slice() {
        [one] => one,
        [] => {
            return Err(QueryError::new(
                QueryErrorKind::Syntax,
                "a subscription needs FROM <table>",
                Pos::from_location(select.select_token.0.span.start),
            ))
        }
        [_, second, ..] => return Err(unsupported("joins are not supported", second)),
    };
    if let Some(join) = from.joins.first() {
        return Err(unsupported("joins are not supported", join));
    }
    match &from.relation {
        TableFactor::Table {
            name, args: None, ..
        } => {
            let ident = name.0.last().and_then(|p| p.as_ident());
            let table_name = ident
                .map(|i| i.value.clone())
                .unwrap_or_else(|| name.to_string());
            if name.0.len() > 1 {
                return Err(unsupported(
                    "schema-qualified table names are not supported",
                    name,
                ));
            }
            schema.table(&table_name).cloned().ok_or_else(|| {
                QueryError::new(
                    QueryErrorKind::UnknownTable,
                    format!("unknown table `{}`", snippet(&table_name)),
                    pos_of(name),
                )
            })
        }
        TableFactor::Derived { .. } => {
            Err(unsupported("subqueries are not supported", &from.relation))
        }
        other => Err(unsupported(
            "only a plain table name is allowed after FROM",
            other,
        )),
    }
}

impl Pos {
    pub(crate) fn from_location(l: Location) -> Pos {
        Pos {
            line: l.line.max(1),
            column: l.column.max(1),
        }
    }
}
