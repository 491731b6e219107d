//! The compiled predicate of a shape: an AND/OR tree in negation normal form whose
//! leaves compare one column with constant values (literals already converted by the
//! column's affinity, so evaluation is a plain SQLite value comparison).
//!
//! Normalization (flattening, sorting, de-duplication) lives here, so equivalent
//! subscriptions produce the same tree and the same text.

use std::fmt::Write as _;

use crate::schema::Table;
use crate::value::Value;

/// A comparison operator of a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `IS`: equality where NULL equals NULL; never NULL itself.
    Is,
    /// `IS NOT`.
    IsNot,
}

impl CmpOp {
    pub fn negate(self) -> CmpOp {
        match self {
            CmpOp::Eq => CmpOp::Ne,
            CmpOp::Ne => CmpOp::Eq,
            CmpOp::Lt => CmpOp::Ge,
            CmpOp::Ge => CmpOp::Lt,
            CmpOp::Le => CmpOp::Gt,
            CmpOp::Gt => CmpOp::Le,
            CmpOp::Is => CmpOp::IsNot,
            CmpOp::IsNot => CmpOp::Is,
        }
    }

    /// The operator with its operands swapped (`1 < a` is `a > 1`).
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Ge => CmpOp::Le,
            other => other,
        }
    }

    pub fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Is => "IS",
            CmpOp::IsNot => "IS NOT",
        }
    }
}

/// How a column is read as a truth value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TruthTest {
    /// `col`: NULL when NULL, else its truth value.
    Bare,
    /// `NOT col`.
    NotBare,
    IsTrue,
    IsNotTrue,
    IsFalse,
    IsNotFalse,
}

impl TruthTest {
    pub fn negate(self) -> TruthTest {
        match self {
            TruthTest::Bare => TruthTest::NotBare,
            TruthTest::NotBare => TruthTest::Bare,
            TruthTest::IsTrue => TruthTest::IsNotTrue,
            TruthTest::IsNotTrue => TruthTest::IsTrue,
            TruthTest::IsFalse => TruthTest::IsNotFalse,
            TruthTest::IsNotFalse => TruthTest::IsFalse,
        }
    }
}

/// A compiled predicate in negation normal form.
#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    /// All must hold. An empty `And` is TRUE (a subscription without WHERE).
    And(Vec<Pred>),
    /// One must hold. Never empty.
    Or(Vec<Pred>),
    /// `col op value`, the value already converted by the column's affinity.
    Cmp { col: usize, op: CmpOp, value: Value },
    /// `col [NOT] IN (values)`: values sorted, de-duplicated, converted.
    In {
        col: usize,
        values: Vec<Value>,
        negated: bool,
    },
    /// `col [NOT] LIKE pattern [ESCAPE e]`; a `None` pattern is NULL (never matches).
    Like {
        col: usize,
        pattern: Option<Vec<u8>>,
        escape: Option<char>,
        negated: bool,
    },
    /// `col [NOT] GLOB pattern`; a `None` pattern is NULL.
    Glob {
        col: usize,
        pattern: Option<Vec<u8>>,
        negated: bool,
    },
    /// `col`, `NOT col`, `col IS [NOT] TRUE|FALSE`.
    Truth { col: usize, test: TruthTest },
}

impl Pred {
    pub const TRUE: Pred = Pred::And(Vec::new());

    pub fn is_true(&self) -> bool {
        matches!(self, Pred::And(v) if v.is_empty())
    }

    /// Flattens nested AND/OR, sorts children by their text, drops duplicates and
    /// unwraps single children, recursively. `table` gives names for the sort key.
    pub fn normalize(self, table: &Table) -> Pred {
        match self {
            Pred::And(children) => normalize_group(children, true, table),
            Pred::Or(children) => normalize_group(children, false, table),
            Pred::In {
                col,
                values,
                negated,
            } => normalize_in(col, values, negated),
            leaf => leaf,
        }
    }

    /// SQL text of the predicate, parseable by the subscription language.
    pub fn to_sql(&self, table: &Table) -> String {
        let mut out = String::new();
        self.write_sql(table, &mut out, false);
        out
    }

    fn write_sql(&self, table: &Table, out: &mut String, inside_and: bool) {
        match self {
            Pred::And(children) if children.is_empty() => out.push_str("TRUE"),
            Pred::And(children) => {
                for (i, c) in children.iter().enumerate() {
                    if i > 0 {
                        out.push_str(" AND ");
                    }
                    c.write_sql(table, out, true);
                }
            }
            Pred::Or(children) => {
                if inside_and {
                    out.push('(');
                }
                for (i, c) in children.iter().enumerate() {
                    if i > 0 {
                        out.push_str(" OR ");
                    }
                    c.write_sql(table, out, false);
                }
                if inside_and {
                    out.push(')');
                }
            }
            Pred::Cmp { col, op, value } => {
                out.push_str(&column_sql(table, *col, std::slice::from_ref(value)));
                match (op, value) {
                    (CmpOp::Is, Value::Null) => out.push_str(" IS NULL"),
                    (CmpOp::IsNot, Value::Null) => out.push_str(" IS NOT NULL"),
                    _ => {
                        let _ = write!(out, " {} {}", op.sql(), value.to_sql_literal());
                    }
                }
            }
            Pred::In {
                col,
                values,
                negated,
            } => {
                out.push_str(&column_sql(table, *col, values));
                out.push_str(if *negated { " NOT IN (" } else { " IN (" });
                let items: Vec<String> = values.iter().map(Value::to_sql_literal).collect();
                out.push_str(&items.join(", "));
                out.push(')');
            }
            Pred::Like {
                col,
                pattern,
                escape,
                negated,
            } => {
                let _ = write!(
                    out,
                    "{} {}LIKE {}",
                    ident_sql(&table.columns[*col].name),
                    if *negated { "NOT " } else { "" },
                    pattern_sql(pattern)
                );
                if let Some(e) = escape {
                    let _ = write!(
                        out,
                        " ESCAPE {}",
                        Value::Text(e.to_string()).to_sql_literal()
                    );
                }
            }
            Pred::Glob {
                col,
                pattern,
                negated,
            } => {
                let _ = write!(
                    out,
                    "{} {}GLOB {}",
                    ident_sql(&table.columns[*col].name),
                    if *negated { "NOT " } else { "" },
                    pattern_sql(pattern)
                );
            }
            Pred::Truth { col, test } => {
                let name = ident_sql(&table.columns[*col].name);
                let _ = match test {
                    TruthTest::Bare => write!(out, "{name}"),
                    TruthTest::NotBare => write!(out, "NOT {name}"),
                    TruthTest::IsTrue => write!(out, "{name} IS TRUE"),
                    TruthTest::IsNotTrue => write!(out, "{name} IS NOT TRUE"),
                    TruthTest::IsFalse => write!(out, "{name} IS FALSE"),
                    TruthTest::IsNotFalse => write!(out, "{name} IS NOT FALSE"),
                };
            }
        }
    }

    /// Every leaf of the tree, depth first.
    pub fn leaves(&self) -> Vec<&Pred> {
        let mut out = Vec::new();
        self.collect_leaves(&mut out);
        out
    }

    fn collect_leaves<'a>(&'a self, out: &mut Vec<&'a Pred>) {
        match self {
            Pred::And(c) | Pred::Or(c) => c.iter().for_each(|p| p.collect_leaves(out)),
            leaf => out.push(leaf),
        }
    }
}

fn normalize_group(children: Vec<Pred>, is_and: bool, table: &Table) -> Pred {
    let mut flat = Vec::new();
    for child in children {
        match child.normalize(table) {
            Pred::And(inner) if is_and => flat.extend(inner),
            Pred::Or(inner) if !is_and => flat.extend(inner),
            other => flat.push(other),
        }
    }
    let mut keyed: Vec<(String, Pred)> = flat.into_iter().map(|p| (p.to_sql(table), p)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.dedup_by(|a, b| a.0 == b.0);
    let mut children: Vec<Pred> = keyed.into_iter().map(|(_, p)| p).collect();
    if children.len() == 1 {
        return children.pop().expect("one child");
    }
    if is_and {
        Pred::And(children)
    } else {
        Pred::Or(children)
    }
}

fn normalize_in(col: usize, mut values: Vec<Value>, negated: bool) -> Pred {
    // Equal values (1 and 1.0) decide IN identically; keep one, preferring the integer.
    values.sort_by(|a, b| {
        a.sqlite_cmp(b).then_with(|| {
            let rank = |v: &Value| matches!(v, Value::Real(_)) as u8;
            rank(a).cmp(&rank(b))
        })
    });
    values.dedup_by(|later, earlier| later.sqlite_cmp(earlier).is_eq());
    if values.len() == 1 && !is_array_marker(&values[0]) {
        let value = values.pop().expect("one value");
        let op = if negated { CmpOp::Ne } else { CmpOp::Eq };
        return Pred::Cmp { col, op, value };
    }
    Pred::In {
        col,
        values,
        negated,
    }
}

/// The column as written in normalized text: `+name` when the column's affinity would
/// change one of the (already converted) values, so that re-parsing keeps them as is.
fn column_sql(table: &Table, col: usize, values: &[Value]) -> String {
    let column = &table.columns[col];
    let changed = values
        .iter()
        .any(|v| !is_param_marker(v) && &column.affinity.apply_for_comparison(v.clone()) != v);
    let plus = changed || values.iter().any(is_plus_param_marker);
    format!("{}{}", if plus { "+" } else { "" }, ident_sql(&column.name))
}

fn pattern_sql(pattern: &Option<Vec<u8>>) -> String {
    match pattern {
        None => "NULL".to_string(),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Value::Text(text.to_string()).to_sql_literal(),
            Err(_) => Value::Blob(bytes.clone()).to_sql_literal(),
        },
    }
}

/// Marks an unbound parameter inside a template's normalized text (see `query::check`).
pub(crate) const PARAM_MARKER: &str = "\u{0}\u{1}sluice-param";

fn is_param_marker(v: &Value) -> bool {
    matches!(v, Value::Text(s) if s.starts_with(PARAM_MARKER))
}

fn is_array_marker(v: &Value) -> bool {
    matches!(v, Value::Text(s) if s.starts_with(PARAM_MARKER) && s.contains("[]"))
}

fn is_plus_param_marker(v: &Value) -> bool {
    matches!(v, Value::Text(s) if s.starts_with(PARAM_MARKER) && s[PARAM_MARKER.len()..].starts_with('+'))
}

/// An identifier as it appears in normalized text: bare when it is a plain word that is
/// not a keyword, double-quoted otherwise.
pub fn ident_sql(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain && !is_keyword(name) {
        name.to_string()
    } else {
        crate::schema::quote_ident(name)
    }
}

fn is_keyword(word: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "ABORT",
        "ACTION",
        "ADD",
        "AFTER",
        "ALL",
        "ALTER",
        "ALWAYS",
        "ANALYZE",
        "AND",
        "AS",
        "ASC",
        "ATTACH",
        "AUTOINCREMENT",
        "BEFORE",
        "BEGIN",
        "BETWEEN",
        "BY",
        "CASCADE",
        "CASE",
        "CAST",
        "CHECK",
        "COLLATE",
        "COLUMN",
        "COMMIT",
        "CONFLICT",
        "CONSTRAINT",
        "CREATE",
        "CROSS",
        "CURRENT",
        "CURRENT_DATE",
        "CURRENT_TIME",
        "CURRENT_TIMESTAMP",
        "DATABASE",
        "DEFAULT",
        "DEFERRABLE",
        "DEFERRED",
        "DELETE",
        "DESC",
        "DETACH",
        "DISTINCT",
        "DO",
        "DROP",
        "EACH",
        "ELSE",
        "END",
        "ESCAPE",
        "EXCEPT",
        "EXCLUDE",
        "EXCLUSIVE",
        "EXISTS",
        "EXPLAIN",
        "FAIL",
        "FALSE",
        "FILTER",
        "FIRST",
        "FOLLOWING",
        "FOR",
        "FOREIGN",
        "FROM",
        "FULL",
        "GENERATED",
        "GLOB",
        "GROUP",
        "GROUPS",
        "HAVING",
        "IF",
        "IGNORE",
        "IMMEDIATE",
        "IN",
        "INDEX",
        "INDEXED",
        "INITIALLY",
        "INNER",
        "INSERT",
        "INSTEAD",
        "INTERSECT",
        "INTO",
        "IS",
        "ISNULL",
        "JOIN",
        "KEY",
        "LAST",
        "LEFT",
        "LIKE",
        "LIMIT",
        "MATCH",
        "MATERIALIZED",
        "NATURAL",
        "NO",
        "NOT",
        "NOTHING",
        "NOTNULL",
        "NULL",
        "NULLS",
        "OF",
        "OFFSET",
        "ON",
        "OR",
        "ORDER",
        "OTHERS",
        "OUTER",
        "OVER",
        "PARTITION",
        "PLAN",
        "PRAGMA",
        "PRECEDING",
        "PRIMARY",
        "QUERY",
        "RAISE",
        "RANGE",
        "RECURSIVE",
        "REFERENCES",
        "REGEXP",
        "REINDEX",
        "RELEASE",
        "RENAME",
        "REPLACE",
        "RESTRICT",
        "RETURNING",
        "RIGHT",
        "ROLLBACK",
        "ROW",
        "ROWS",
        "SAVEPOINT",
        "SELECT",
        "SET",
        "TABLE",
        "TEMP",
        "TEMPORARY",
        "THEN",
        "TIES",
        "TO",
        "TRANSACTION",
        "TRIGGER",
        "TRUE",
        "UNBOUNDED",
        "UNION",
        "UNIQUE",
        "UPDATE",
        "USING",
        "VACUUM",
        "VALUES",
        "VIEW",
        "VIRTUAL",
        "WHEN",
        "WHERE",
        "WINDOW",
        "WITH",
        "WITHOUT",
    ];
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}
