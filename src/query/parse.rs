//! Parsing: subscription text -> validated [`Template`] (table, projection and an
//! un-normalized predicate tree whose operands may still be parameters).
//!
//! sqlparser does the parsing; a small token pass before it adds what SQLite has and
//! sqlparser's SQLite dialect lacks (`:name` / `:a.b` parameters, `IN :param`, `GLOB`,
//! `x IS <value>`). Everything outside the language is refused here with a position.

use std::sync::Arc;

use sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, Query, Select, SelectItem, SetExpr, Spanned, Statement,
    TableFactor, UnaryOperator, Value as SqlValue,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Location;

use super::error::{Pos, QueryError, QueryErrorKind};
use super::pred::{CmpOp, TruthTest};
use super::tokens::{rewrite_tokens, tokenize, ARRAY_PARAM};
use crate::schema::{Schema, Table};
use crate::value::Value;

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

/// A validated predicate before binding and normalization.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
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
}

impl Template {
    /// Parses `sql` against `schema`.
    pub fn parse(schema: &Schema, sql: &str) -> Result<Template, QueryError> {
        let dialect = SQLiteDialect {};
        let tokens = rewrite_tokens(tokenize(sql)?)?;
        let statements = Parser::new(&dialect)
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
        let select = select_of(query)?;
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
        Ok(Template {
            table,
            projection,
            filter,
        })
    }

    pub fn table(&self) -> &Table {
        &self.table
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

fn pos_of(node: &impl Spanned) -> Pos {
    Pos::from_location(node.span().start)
}

fn unsupported(message: impl Into<String>, at: &impl Spanned) -> QueryError {
    QueryError::new(QueryErrorKind::Unsupported, message, pos_of(at))
}

fn select_of(query: &Query) -> Result<&Select, QueryError> {
    if let Some(with) = &query.with {
        return Err(unsupported(
            "WITH (common table expressions) is not supported",
            with,
        ));
    }
    if let Some(order_by) = &query.order_by {
        return Err(unsupported(
            "windows are not supported yet (ORDER BY / LIMIT): a subscription holds every \
             matching row",
            order_by,
        ));
    }
    if let Some(limit) = &query.limit_clause {
        return Err(unsupported(
            "windows are not supported yet (ORDER BY / LIMIT): a subscription holds every \
             matching row",
            limit,
        ));
    }
    if query.fetch.is_some() {
        return Err(unsupported(
            "windows are not supported yet (FETCH)",
            query.body.as_ref(),
        ));
    }
    match query.body.as_ref() {
        SetExpr::Select(select) => Ok(select),
        SetExpr::Query(inner) => select_of(inner),
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
                    format!("unknown table `{table_name}`"),
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

struct Builder<'a> {
    table: &'a Table,
    alias: Option<String>,
}

/// One side of a comparison.
enum Side {
    Column(ColRef),
    Const(Operand),
}

impl Builder<'_> {
    fn projection(&self, items: &[SelectItem]) -> Result<Option<Vec<usize>>, QueryError> {
        let mut cols = vec![false; self.table.columns.len()];
        for item in items {
            match item {
                SelectItem::Wildcard(_) => return Ok(None),
                SelectItem::QualifiedWildcard(..) => return Ok(None),
                SelectItem::UnnamedExpr(
                    e @ (Expr::Identifier(_) | Expr::CompoundIdentifier(_)),
                ) => {
                    cols[self.column(e)?] = true;
                }
                SelectItem::UnnamedExpr(Expr::Function(f)) => {
                    return Err(unsupported(
                        format!(
                            "functions and aggregates are not supported: `{}(...)`",
                            f.name
                        ),
                        f,
                    ))
                }
                SelectItem::UnnamedExpr(e) => {
                    return Err(unsupported("only column names can be selected", e))
                }
                SelectItem::ExprWithAlias { alias, .. } => {
                    return Err(QueryError::new(
                        QueryErrorKind::Unsupported,
                        "column aliases are not supported",
                        Pos::from_location(alias.span.start),
                    ))
                }
            }
        }
        cols[self.table.pk] = true;
        if cols.iter().all(|c| *c) {
            return Ok(None);
        }
        Ok(Some(
            cols.iter()
                .enumerate()
                .filter(|(_, c)| **c)
                .map(|(i, _)| i)
                .collect(),
        ))
    }

    /// Resolves a column expression to its index.
    fn column(&self, e: &Expr) -> Result<usize, QueryError> {
        let (qualifier, ident) = match e {
            Expr::Identifier(ident) => (None, ident),
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => (Some(&parts[0]), &parts[1]),
            other => return Err(unsupported("expected a column name", other)),
        };
        if let Some(q) = qualifier {
            let ok = q.value.eq_ignore_ascii_case(&self.table.name)
                || self
                    .alias
                    .as_ref()
                    .is_some_and(|a| a.eq_ignore_ascii_case(&q.value));
            if !ok {
                return Err(QueryError::new(
                    QueryErrorKind::UnknownTable,
                    format!(
                        "unknown table `{}` (only `{}` is in scope)",
                        q.value, self.table.name
                    ),
                    Pos::from_location(q.span.start),
                ));
            }
        }
        self.table.column_index(&ident.value).ok_or_else(|| {
            let hint = if ident.quote_style == Some('"') {
                " (use single quotes for strings)"
            } else {
                ""
            };
            QueryError::new(
                QueryErrorKind::UnknownColumn,
                format!(
                    "unknown column `{}` in table `{}`{hint}",
                    ident.value, self.table.name
                ),
                Pos::from_location(ident.span.start),
            )
        })
    }

    fn predicate(&self, e: &Expr) -> Result<Node, QueryError> {
        match e {
            Expr::Nested(inner) => self.predicate(inner),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => Ok(Node::And(
                Box::new(self.predicate(left)?),
                Box::new(self.predicate(right)?),
            )),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Or,
                right,
            } => Ok(Node::Or(
                Box::new(self.predicate(left)?),
                Box::new(self.predicate(right)?),
            )),
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Ok(Node::Not(Box::new(self.predicate(expr)?))),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Spaceship,
                right,
            } => self.comparison(left, CmpOp::Is, right, e),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::PGNotLikeMatch,
                right,
            } => self.comparison(left, CmpOp::IsNot, right, e),
            Expr::BinaryOp { left, op, right } => {
                let cmp = match op {
                    BinaryOperator::Eq => CmpOp::Eq,
                    BinaryOperator::NotEq => CmpOp::Ne,
                    BinaryOperator::Lt => CmpOp::Lt,
                    BinaryOperator::LtEq => CmpOp::Le,
                    BinaryOperator::Gt => CmpOp::Gt,
                    BinaryOperator::GtEq => CmpOp::Ge,
                    other => {
                        return Err(unsupported(
                            format!("operator `{other}` is not supported (no arithmetic)"),
                            e,
                        ))
                    }
                };
                self.comparison(left, cmp, right, e)
            }
            Expr::IsNull(inner) => Ok(Node::Cmp {
                col: self.col_ref(inner)?,
                op: CmpOp::Is,
                rhs: Operand::Lit(Value::Null),
            }),
            Expr::IsNotNull(inner) => Ok(Node::Cmp {
                col: self.col_ref(inner)?,
                op: CmpOp::IsNot,
                rhs: Operand::Lit(Value::Null),
            }),
            Expr::IsTrue(inner) => self.truth(inner, TruthTest::IsTrue),
            Expr::IsNotTrue(inner) => self.truth(inner, TruthTest::IsNotTrue),
            Expr::IsFalse(inner) => self.truth(inner, TruthTest::IsFalse),
            Expr::IsNotFalse(inner) => self.truth(inner, TruthTest::IsNotFalse),
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let col = self.col_ref(expr)?;
                if let [Expr::Value(v)] = list.as_slice() {
                    if let SqlValue::Placeholder(p) = &v.value {
                        if let Some(name) = p.strip_prefix(ARRAY_PARAM) {
                            let name = name.trim_start_matches(':').to_string();
                            let list = InList::Array {
                                name,
                                pos: pos_of(v),
                            };
                            return Ok(Node::In {
                                col,
                                list,
                                negated: *negated,
                            });
                        }
                    }
                }
                let items = list
                    .iter()
                    .map(|item| self.constant(item, "an IN list"))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Node::In {
                    col,
                    list: InList::Items(items),
                    negated: *negated,
                })
            }
            Expr::InSubquery { subquery, .. } => Err(unsupported(
                "subqueries are not supported",
                subquery.as_ref(),
            )),
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => Ok(Node::Between {
                col: self.col_ref(expr)?,
                low: self.constant(low, "a BETWEEN bound")?,
                high: self.constant(high, "a BETWEEN bound")?,
                negated: *negated,
            }),
            Expr::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => {
                if *any {
                    return Err(unsupported("LIKE ANY is not supported", e));
                }
                let escape = match escape_char {
                    None => None,
                    Some(SqlValue::SingleQuotedString(s)) if s.chars().count() == 1 => {
                        s.chars().next()
                    }
                    Some(_) => {
                        return Err(QueryError::new(
                            QueryErrorKind::Unsupported,
                            "ESCAPE expression must be a single character",
                            pos_of(pattern.as_ref()),
                        ))
                    }
                };
                Ok(Node::Like {
                    col: self.col_ref(expr)?.idx,
                    pattern: self.constant(pattern, "a LIKE pattern")?,
                    escape,
                    negated: *negated,
                })
            }
            Expr::SimilarTo {
                negated,
                expr,
                pattern,
                escape_char,
            } => {
                if escape_char.is_some() {
                    return Err(unsupported("GLOB takes no ESCAPE clause", pattern.as_ref()));
                }
                Ok(Node::Glob {
                    col: self.col_ref(expr)?.idx,
                    pattern: self.constant(pattern, "a GLOB pattern")?,
                    negated: *negated,
                })
            }
            Expr::ILike { .. } => Err(unsupported(
                "ILIKE is not supported: LIKE is already case-insensitive for ASCII",
                e,
            )),
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => self.truth(e, TruthTest::Bare),
            Expr::UnaryOp {
                op: UnaryOperator::Plus,
                expr,
            } if self.is_column(expr) => self.truth(expr, TruthTest::Bare),
            other => Err(self.not_a_predicate(other)),
        }
    }

    fn truth(&self, e: &Expr, test: TruthTest) -> Result<Node, QueryError> {
        Ok(Node::Truth {
            col: self.col_ref(e)?.idx,
            test,
        })
    }

    fn is_column(&self, e: &Expr) -> bool {
        match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => true,
            Expr::Nested(inner) => self.is_column(inner),
            Expr::UnaryOp {
                op: UnaryOperator::Plus,
                expr,
            } => self.is_column(expr),
            _ => false,
        }
    }

    fn not_a_predicate(&self, e: &Expr) -> QueryError {
        match e {
            Expr::Value(_) | Expr::UnaryOp { .. } => unsupported(
                "a predicate must test a column (constant predicates are not supported)",
                e,
            ),
            other => self.unsupported_expr(other),
        }
    }

    fn unsupported_expr(&self, e: &Expr) -> QueryError {
        match e {
            Expr::Function(f) => {
                unsupported(format!("functions are not supported: `{}(...)`", f.name), e)
            }
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                unsupported("subqueries are not supported", e)
            }
            Expr::Cast { .. } => unsupported("CAST is not supported", e),
            Expr::Collate { .. } => {
                unsupported("COLLATE is not supported (text compares with BINARY)", e)
            }
            Expr::Case { .. } => unsupported("CASE is not supported", e),
            Expr::BinaryOp {
                op: BinaryOperator::Spaceship | BinaryOperator::PGNotLikeMatch,
                ..
            } => unsupported("an IS comparison cannot be an operand", e),
            Expr::BinaryOp { op, .. } => unsupported(
                format!("operator `{op}` is not supported (no arithmetic)"),
                e,
            ),
            Expr::UnaryOp { op, .. } => unsupported(format!("operator `{op}` is not supported"), e),
            other => unsupported(format!("`{other}` is not supported in a subscription"), e),
        }
    }

    fn col_ref(&self, e: &Expr) -> Result<ColRef, QueryError> {
        match self.side(e)? {
            Side::Column(c) => Ok(c),
            Side::Const(_) => Err(unsupported(
                "expected a column here: a predicate must test a column (constant predicates \
                 are not supported)",
                e,
            )),
        }
    }

    /// A literal or parameter; `context` names where, for the error on a column.
    fn constant(&self, e: &Expr, context: &str) -> Result<Operand, QueryError> {
        match self.side(e)? {
            Side::Const(op) => Ok(op),
            Side::Column(_) => Err(unsupported(
                format!("a column cannot appear in {context}; use a literal or a parameter"),
                e,
            )),
        }
    }

    fn comparison(
        &self,
        left: &Expr,
        op: CmpOp,
        right: &Expr,
        whole: &Expr,
    ) -> Result<Node, QueryError> {
        match (self.side(left)?, self.side(right)?) {
            (Side::Column(col), Side::Const(rhs)) => Ok(Node::Cmp { col, op, rhs }),
            (Side::Const(rhs), Side::Column(col)) => Ok(Node::Cmp {
                col,
                op: op.flip(),
                rhs,
            }),
            (Side::Column(_), Side::Column(_)) => Err(unsupported(
                "comparing two columns is not supported; compare a column with a literal",
                whole,
            )),
            (Side::Const(_), Side::Const(_)) => Err(unsupported(
                "a predicate must test a column (constant predicates are not supported)",
                whole,
            )),
        }
    }

    fn side(&self, e: &Expr) -> Result<Side, QueryError> {
        match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => Ok(Side::Column(ColRef {
                idx: self.column(e)?,
                affinity: true,
            })),
            Expr::Nested(inner) => self.side(inner),
            Expr::UnaryOp {
                op: UnaryOperator::Plus,
                expr,
            } => match self.side(expr)? {
                Side::Column(c) => Ok(Side::Column(ColRef {
                    affinity: false,
                    ..c
                })),
                constant => Ok(constant),
            },
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => self.negative(expr, e),
            Expr::Value(v) => self.literal(&v.value, e).map(Side::Const),
            other => Err(self.unsupported_expr(other)),
        }
    }

    fn negative(&self, inner: &Expr, whole: &Expr) -> Result<Side, QueryError> {
        // `-9223372036854775808` is the smallest integer, not a negated real. Parentheses
        // do not matter: SQLite has no node for them, so `-(9223372036854775808)` is the
        // same literal.
        let mut literal = inner;
        while let Expr::Nested(e) = literal {
            literal = e;
        }
        if let Expr::Value(v) = literal {
            if let SqlValue::Number(digits, _) = &v.value {
                if let Ok(i) = format!("-{digits}").parse::<i64>() {
                    return Ok(Side::Const(Operand::Lit(Value::Integer(i))));
                }
            }
        }
        match self.side(inner)? {
            Side::Const(Operand::Lit(v)) => Ok(Side::Const(Operand::Lit(negate(v)))),
            Side::Const(Operand::Param { .. }) => Err(unsupported(
                "unary minus on a parameter is not supported",
                whole,
            )),
            Side::Column(_) => Err(unsupported(
                "arithmetic on columns is not supported (`-column`)",
                whole,
            )),
        }
    }

    fn literal(&self, v: &SqlValue, at: &Expr) -> Result<Operand, QueryError> {
        Ok(Operand::Lit(match v {
            SqlValue::Null => Value::Null,
            SqlValue::Boolean(b) => Value::Integer(*b as i64),
            SqlValue::Number(text, _) => number(text).ok_or_else(|| {
                QueryError::new(
                    QueryErrorKind::Syntax,
                    format!("malformed number `{text}`"),
                    pos_of(at),
                )
            })?,
            SqlValue::SingleQuotedString(s) => Value::Text(s.clone()),
            SqlValue::HexStringLiteral(hex) => Value::Blob(decode_hex(hex).ok_or_else(|| {
                QueryError::new(
                    QueryErrorKind::Syntax,
                    format!("malformed blob literal x'{hex}'"),
                    pos_of(at),
                )
            })?),
            SqlValue::Placeholder(name) => {
                let name = name.strip_prefix(':').unwrap_or(name).to_string();
                return Ok(Operand::Param {
                    name,
                    pos: pos_of(at),
                });
            }
            other => {
                return Err(unsupported(
                    format!("literal `{other}` is not supported"),
                    at,
                ))
            }
        }))
    }
}

/// A numeric literal as SQLite reads it: an integer when it has no `.`/exponent and fits
/// in 64 bits, otherwise a real.
pub(crate) fn number(text: &str) -> Option<Value> {
    if !text.contains(['.', 'e', 'E']) {
        if let Ok(i) = text.parse::<i64>() {
            return Some(Value::Integer(i));
        }
    }
    text.parse::<f64>().ok().map(Value::Real)
}

pub(crate) fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// SQLite's unary minus on a constant (`0 - x`).
pub(crate) fn negate(v: Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::Integer(i) => match i.checked_neg() {
            Some(n) => Value::Integer(n),
            None => Value::Real(-(i as f64)),
        },
        Value::Real(r) => Value::Real(-r),
        Value::Text(s) => negate(crate::value::numeric_prefix_value(s.as_bytes())),
        Value::Blob(b) => negate(crate::value::numeric_prefix_value(&b)),
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
