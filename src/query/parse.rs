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
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer, Word};

use super::error::{Pos, QueryError, QueryErrorKind};
use super::pred::{CmpOp, TruthTest};
use crate::schema::{Schema, Table};
use crate::value::Value;

/// Placeholder prefix the token pass gives to the parameter of `IN :param`.
const ARRAY_PARAM: &str = "[]";

/// The token standing for `IS <value>` after the token pass (SQLite has no `<=>`; a
/// user-typed one is refused before the pass).
const IS_OPERATOR: Token = Token::Spaceship;
/// The token standing for `IS NOT <value>` (SQLite has no `!~~`; refused likewise).
const IS_NOT_OPERATOR: Token = Token::ExclamationMarkDoubleTilde;

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
        let tokens = Tokenizer::new(&dialect, sql)
            .tokenize_with_location()
            .map_err(|e| {
                QueryError::new(
                    QueryErrorKind::Syntax,
                    e.message.clone(),
                    Pos::from_location(e.location),
                )
            })?;
        let tokens = rewrite_tokens(tokens)?;
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

fn token(token: Token, span: Span) -> TokenWithSpan {
    TokenWithSpan { token, span }
}

fn keyword(word: &str, span: Span) -> TokenWithSpan {
    token(Token::make_keyword(word), span)
}

fn is_keyword(t: &Token, kw: Keyword) -> bool {
    matches!(t, Token::Word(Word { keyword, quote_style: None, .. }) if *keyword == kw)
}

fn is_word(t: &Token, text: &str) -> bool {
    matches!(t, Token::Word(Word { value, quote_style: None, .. }) if value.eq_ignore_ascii_case(text))
}

/// The token pass described in the module docs.
fn rewrite_tokens(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>, QueryError> {
    // 1. `:name` and `:a.b.c` become one placeholder token.
    let mut merged: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut iter = tokens.into_iter().peekable();
    while let Some(t) = iter.next() {
        match &t.token {
            Token::Colon => {
                let adjacent_word = matches!(
                    iter.peek(),
                    Some(TokenWithSpan { token: Token::Word(w), span })
                        if w.quote_style.is_none() && span.start == t.span.end
                );
                if !adjacent_word {
                    merged.push(t);
                    continue;
                }
                let Some(TokenWithSpan {
                    token: Token::Word(w),
                    span,
                }) = iter.next()
                else {
                    unreachable!("peeked a word")
                };
                let mut name = format!(":{}", w.value);
                let mut end = span.end;
                loop {
                    let dot = matches!(iter.peek(), Some(n) if n.token == Token::Period && n.span.start == end);
                    if !dot {
                        break;
                    }
                    let dot = iter.next().expect("peeked");
                    match iter.next() {
                        Some(TokenWithSpan {
                            token: Token::Word(w),
                            span,
                        }) if w.quote_style.is_none() && span.start == dot.span.end => {
                            name.push('.');
                            name.push_str(&w.value);
                            end = span.end;
                        }
                        _ => {
                            return Err(QueryError::new(
                                QueryErrorKind::Syntax,
                                format!("parameter {name}. must continue with a name"),
                                Pos::from_location(dot.span.start),
                            ))
                        }
                    }
                }
                merged.push(token(
                    Token::Placeholder(name),
                    Span::new(t.span.start, end),
                ));
            }
            // sqlparser reads SQLite's hex integer `0x1F` as a blob literal `x'1F'`; tell
            // them apart by width (`0x1F` is two characters shorter than its digits plus
            // the quotes of `x'1F'`).
            Token::HexStringLiteral(hex)
                if t.span.start.line == t.span.end.line
                    && t.span.end.column.saturating_sub(t.span.start.column)
                        == hex.chars().count() as u64 + 2 =>
            {
                let negated = preceded_by_minus(&merged);
                merged.push(token(hex_integer(hex, negated, t.span)?, t.span));
            }
            // `0X1F` (upper-case X) comes out as the number 0 followed by the word `X1F`.
            Token::Number(zero, false)
                if zero == "0"
                    && matches!(
                        iter.peek(),
                        Some(TokenWithSpan { token: Token::Word(w), span })
                            if w.quote_style.is_none()
                                && span.start == t.span.end
                                && w.value.starts_with('X')
                    ) =>
            {
                let Some(TokenWithSpan {
                    token: Token::Word(w),
                    span,
                }) = iter.next()
                else {
                    unreachable!("peeked a word")
                };
                let whole = Span::new(t.span.start, span.end);
                let negated = preceded_by_minus(&merged);
                merged.push(token(hex_integer(&w.value[1..], negated, whole)?, whole));
            }
            Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("ISNULL") => {
                // SQLite's postfix `ISNULL` is `IS NULL` (sqlparser knows only NOTNULL).
                let space = Token::Whitespace(sqlparser::tokenizer::Whitespace::Space);
                merged.push(keyword("IS", t.span));
                merged.push(token(space, t.span));
                merged.push(keyword("NULL", t.span));
            }
            Token::Spaceship | Token::ExclamationMarkDoubleTilde => {
                return Err(QueryError::new(
                    QueryErrorKind::Unsupported,
                    format!("operator `{}` is not supported", t.token),
                    Pos::from_location(t.span.start),
                ))
            }
            Token::Placeholder(p) => {
                return Err(QueryError::new(
                    QueryErrorKind::Unsupported,
                    format!("parameter {p} is not supported; name parameters like :team"),
                    Pos::from_location(t.span.start),
                ))
            }
            Token::Word(_)
                if is_word(&t.token, "SIMILAR")
                    || is_word(&t.token, "REGEXP")
                    || is_word(&t.token, "MATCH") =>
            {
                return Err(QueryError::new(
                    QueryErrorKind::Unsupported,
                    format!("{} is not supported", t.token.to_string().to_uppercase()),
                    Pos::from_location(t.span.start),
                ))
            }
            _ => merged.push(t),
        }
    }
    // 2. IN :p -> IN ( [] :p ); GLOB -> SIMILAR TO; IS <value> -> IS NOT DISTINCT FROM.
    let significant: Vec<usize> = merged
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)))
        .map(|(i, _)| i)
        .collect();
    let next_sig = |i: usize| -> Option<&TokenWithSpan> {
        significant.iter().find(|&&j| j > i).map(|&j| &merged[j])
    };
    let mut out = Vec::with_capacity(merged.len() + 4);
    let mut skip_tokens: Vec<usize> = Vec::new();
    for (i, t) in merged.iter().enumerate() {
        let span = t.span;
        if is_keyword(&t.token, Keyword::IN) {
            if let Some(TokenWithSpan {
                token: Token::Placeholder(_),
                ..
            }) = next_sig(i)
            {
                out.push(t.clone());
                out.push(token(Token::LParen, span));
                // The placeholder itself is renamed when it is reached.
                continue;
            }
        }
        if let Token::Placeholder(name) = &t.token {
            let after_in = significant
                .iter()
                .rev()
                .find(|&&j| j < i)
                .is_some_and(|&j| is_keyword(&merged[j].token, Keyword::IN));
            if after_in {
                out.push(token(
                    Token::Placeholder(format!("{ARRAY_PARAM}{name}")),
                    span,
                ));
                out.push(token(Token::RParen, span));
                continue;
            }
        }
        if is_word(&t.token, "GLOB") {
            out.push(keyword("SIMILAR", span));
            out.push(token(
                Token::Whitespace(sqlparser::tokenizer::Whitespace::Space),
                span,
            ));
            out.push(keyword("TO", span));
            continue;
        }
        if is_keyword(&t.token, Keyword::IS) {
            // `IS [NOT] <value>` and `IS [NOT] DISTINCT FROM <value>` become one operator
            // token. sqlparser's own `IS [NOT] DISTINCT FROM` parses its right side as a
            // whole expression, so `a IS 5 AND b = 1` would swallow `5 AND b = 1`; the
            // operator tokens below have comparison precedence instead. SQLite gives IS
            // the precedence of `=`.
            let mut j = i;
            let mut negated = false;
            let mut next = next_sig(j);
            let mut skip = Vec::new();
            if next.is_some_and(|n| is_keyword(&n.token, Keyword::NOT)) {
                negated = true;
                j = significant.iter().copied().find(|&k| k > j).unwrap_or(j);
                skip.push(j);
                next = next_sig(j);
            }
            let distinct_from = next.is_some_and(|n| is_keyword(&n.token, Keyword::DISTINCT))
                && significant
                    .iter()
                    .copied()
                    .find(|&k| k > j)
                    .and_then(next_sig)
                    .is_some_and(|n| is_keyword(&n.token, Keyword::FROM));
            if distinct_from {
                // `IS DISTINCT FROM` is `IS NOT`; `IS NOT DISTINCT FROM` is `IS`.
                negated = !negated;
                for _ in 0..2 {
                    j = significant.iter().copied().find(|&k| k > j).unwrap_or(j);
                    skip.push(j);
                }
            }
            let special = !distinct_from
                && next.is_none_or(|n| {
                    [
                        Keyword::NULL,
                        Keyword::TRUE,
                        Keyword::FALSE,
                        Keyword::DISTINCT,
                        Keyword::UNKNOWN,
                    ]
                    .iter()
                    .any(|k| is_keyword(&n.token, *k))
                });
            if !special {
                out.push(token(
                    if negated {
                        IS_NOT_OPERATOR
                    } else {
                        IS_OPERATOR
                    },
                    span,
                ));
                skip_tokens.extend(skip);
                continue;
            }
        }
        if skip_tokens.contains(&i) {
            continue;
        }
        out.push(t.clone());
    }
    Ok(out)
}

/// The integer of a SQLite hex literal's digits: 64-bit two's complement, so
/// `0xFFFFFFFFFFFFFFFF` is -1; more than 16 significant digits is an error, as in SQLite.
///
/// SQLite also refuses `-0x8000000000000000` (a negated hex literal whose value is the
/// smallest integer), so `negated` says whether a unary minus applies directly.
fn hex_integer(digits: &str, negated: bool, span: Span) -> Result<Token, QueryError> {
    const MAX_HEX_DIGITS: usize = 16;
    let malformed = |message: String| {
        Err(QueryError::new(
            QueryErrorKind::Syntax,
            message,
            Pos::from_location(span.start),
        ))
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return malformed(format!("malformed hex integer 0x{digits}"));
    }
    let significant = digits.trim_start_matches('0');
    let value = match u64::from_str_radix(digits, 16) {
        Ok(v) if significant.len() <= MAX_HEX_DIGITS && !(negated && v as i64 == i64::MIN) => v,
        _ => {
            let sign = if negated { "-" } else { "" };
            return malformed(format!("hex literal too big: {sign}0x{digits}"));
        }
    };
    Ok(Token::Number((value as i64).to_string(), false))
}

/// Whether the tokens so far end with a unary minus, looking through opening parentheses
/// (SQLite has no node for parentheses, so `-(x)` negates `x` directly).
fn preceded_by_minus(tokens: &[TokenWithSpan]) -> bool {
    tokens
        .iter()
        .rev()
        .find(|t| !matches!(t.token, Token::Whitespace(_) | Token::LParen))
        .is_some_and(|t| t.token == Token::Minus)
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
