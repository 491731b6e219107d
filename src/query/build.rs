//! Building: a parsed SQL expression -> the validated predicate tree ([`Node`]) and the
//! select list -> projected columns, for one table. Everything outside the subscription
//! language is refused here with the position of the offending expression. Pure: no IO.
//!
//! The tree is walked recursively only across nesting: a chain of AND or of OR (which
//! sqlparser builds as a left-deep tree as long as the chain) is collected with a loop.
//! Nesting is bounded by [`super::MAX_DEPTH`], checked on the tokens before parsing.

use sqlparser::ast::{BinaryOperator, Expr, SelectItem, UnaryOperator, Value as SqlValue};

use super::error::{snippet, Pos, QueryError, QueryErrorKind};
use super::limits::MAX_PATTERN_BYTES;
use super::literal::{decode_hex, negate, number};
use super::parse::{pos_of, unsupported, ColRef, InList, Node, Operand};
use super::pred::{CmpOp, TruthTest};
use super::tokens::ARRAY_PARAM;
use crate::schema::Table;
use crate::value::Value;

/// The operands of a chain `a op b op c ...` of one operator, left to right, collected
/// with a loop down the left-deep tree sqlparser builds for it.
fn chain<'e>(e: &'e Expr, op: &BinaryOperator) -> Vec<&'e Expr> {
    let mut operands = Vec::new();
    let mut rest = e;
    while let Expr::BinaryOp {
        left,
        op: this,
        right,
    } = rest
    {
        if this != op {
            break;
        }
        operands.push(right.as_ref());
        rest = left;
    }
    operands.push(rest);
    operands.reverse();
    operands
}

/// Builds one subscription's projection and predicate against its table.
pub(super) struct Builder<'a> {
    pub(super) table: &'a Table,
    /// The table's alias in FROM, if any, accepted as a column qualifier.
    pub(super) alias: Option<String>,
}

/// One side of a comparison.
enum Side {
    Column(ColRef),
    Const(Operand),
}

impl Builder<'_> {
    pub(super) fn projection(
        &self,
        items: &[SelectItem],
    ) -> Result<Option<Vec<usize>>, QueryError> {
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
                            snippet(&f.name.to_string())
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
    pub(super) fn column(&self, e: &Expr) -> Result<usize, QueryError> {
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
                        snippet(&q.value),
                        self.table.name
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
                    snippet(&ident.value),
                    self.table.name
                ),
                Pos::from_location(ident.span.start),
            )
        })
    }

    pub(super) fn predicate(&self, e: &Expr) -> Result<Node, QueryError> {
        match e {
            Expr::Nested(inner) => self.predicate(inner),
            Expr::BinaryOp {
                op: op @ (BinaryOperator::And | BinaryOperator::Or),
                ..
            } => {
                let members = chain(e, op)
                    .into_iter()
                    .map(|member| self.predicate(member))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if *op == BinaryOperator::And {
                    Node::And(members)
                } else {
                    Node::Or(members)
                })
            }
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
                    pattern: self.pattern(pattern, "a LIKE pattern")?,
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
                    pattern: self.pattern(pattern, "a GLOB pattern")?,
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
            Expr::Function(f) => unsupported(
                format!(
                    "functions are not supported: `{}(...)`",
                    snippet(&f.name.to_string())
                ),
                e,
            ),
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
            other => unsupported(
                format!(
                    "`{}` is not supported in a subscription",
                    snippet(&other.to_string())
                ),
                e,
            ),
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

    /// A LIKE/GLOB pattern: a constant, refused here when it is a literal longer than
    /// [`MAX_PATTERN_BYTES`] (a bound one is checked when it is bound).
    fn pattern(&self, e: &Expr, context: &str) -> Result<Operand, QueryError> {
        let operand = self.constant(e, context)?;
        if let Operand::Lit(v) = &operand {
            let len = v.text_bytes().map_or(0, |b| b.len());
            if len > MAX_PATTERN_BYTES {
                return Err(QueryError::new(
                    QueryErrorKind::TooComplex,
                    format!("pattern is {len} bytes long; the limit is {MAX_PATTERN_BYTES}"),
                    pos_of(e),
                ));
            }
        }
        Ok(operand)
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
                    format!("malformed number `{}`", snippet(text)),
                    pos_of(at),
                )
            })?,
            SqlValue::SingleQuotedString(s) => Value::Text(s.clone()),
            SqlValue::HexStringLiteral(hex) => Value::Blob(decode_hex(hex).ok_or_else(|| {
                QueryError::new(
                    QueryErrorKind::Syntax,
                    format!("malformed blob literal x'{}'", snippet(hex)),
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
                    format!("literal `{}` is not supported", snippet(&other.to_string())),
                    at,
                ))
            }
        }))
    }
}
