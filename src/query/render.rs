//! Predicate -> SQL text, in one walk for both uses: the normalized subscription text
//! with every literal inlined ([`Pred::to_sql`], parseable by the subscription language)
//! and a `WHERE` clause with `?` placeholders and its bound values ([`where_sql`], which
//! the store hands to SQLite). The walk is the same; a [`Sink`] decides how a value, an
//! identifier and a nested group are written.
//!
//! Pure: this module writes text and never runs it. The walk keeps its own stack, so a
//! deep predicate cannot overflow the thread's stack.

use super::pred::{is_param_marker, is_plus_param_marker, Pred, TruthTest};
use crate::schema::{quote_ident, Column, Table};
use crate::value::Value;

/// `(where_sql, params)`: the predicate as SQLite SQL with `?` placeholders, and the values
/// to bind to them in order. Every column is double-quoted; a column whose affinity would
/// convert one of the values is written `+"col"` (bound parameters have no affinity, so
/// a bare column would apply its own and change them). An always-true predicate is `1`.
///
/// Linear in the size of the predicate; never fails.
pub fn where_sql(pred: &Pred, table: &Table) -> (String, Vec<Value>) {
    let mut sink = Placeholders {
        sql: String::new(),
        params: Vec::new(),
    };
    render(pred, table, &mut sink);
    (sink.sql, sink.params)
}

/// The normalized text of `pred` with literals inlined (see [`Pred::to_sql`]).
pub(super) fn literal_sql(pred: &Pred, table: &Table) -> String {
    let mut sink = Literals { sql: String::new() };
    render(pred, table, &mut sink);
    sink.sql
}

/// Where the walk writes: how values, identifiers and nested groups come out.
trait Sink {
    /// The text of an always-true predicate (an empty `AND`).
    const TRUE: &'static str;
    /// The SQL written so far.
    fn sql(&mut self) -> &mut String;
    /// Writes one constant operand.
    fn value(&mut self, value: &Value);
    /// An identifier as this sink writes it.
    fn ident(&self, name: &str) -> String;
    /// Whether `child`, a member of an AND (`in_and`) or OR group, goes in parentheses.
    fn wraps(&self, in_and: bool, child: &Pred) -> bool;
    /// Whether the column is written `+col` next to `values`.
    fn plus(&self, column: &Column, values: &[Value]) -> bool;
}

/// Inlines literals; bare identifiers where they are plain words; parentheses only
/// where precedence needs them (an OR inside an AND).
struct Literals {
    sql: String,
}

impl Sink for Literals {
    const TRUE: &'static str = "TRUE";

    fn sql(&mut self) -> &mut String {
        &mut self.sql
    }

    fn value(&mut self, value: &Value) {
        self.sql.push_str(&value.to_sql_literal());
    }

    fn ident(&self, name: &str) -> String {
        ident_sql(name)
    }

    fn wraps(&self, in_and: bool, child: &Pred) -> bool {
        in_and && matches!(child, Pred::Or(_))
    }

    /// `+name` when the column's affinity would change one of the (already converted)
    /// values, so that re-parsing keeps them as they are; an unbound parameter marked
    /// `+` (a template's text) also keeps its `+`.
    fn plus(&self, column: &Column, values: &[Value]) -> bool {
        let changed = values
            .iter()
            .any(|v| !is_param_marker(v) && &column.affinity.apply_for_comparison(v.clone()) != v);
        changed || values.iter().any(is_plus_param_marker)
    }
}

/// Emits `?` and collects the values; every identifier quoted; every group member in
/// parentheses.
struct Placeholders {
    sql: String,
    params: Vec<Value>,
}

impl Sink for Placeholders {
    const TRUE: &'static str = "1";

    fn sql(&mut self) -> &mut String {
        &mut self.sql
    }

    fn value(&mut self, value: &Value) {
        self.sql.push('?');
        self.params.push(value.clone());
    }

    fn ident(&self, name: &str) -> String {
        quote_ident(name)
    }

    fn wraps(&self, _in_and: bool, _child: &Pred) -> bool {
        true
    }

    fn plus(&self, column: &Column, values: &[Value]) -> bool {
        values
            .iter()
            .any(|v| &column.affinity.apply_for_comparison(v.clone()) != v)
    }
}

/// One pending piece of output: a node still to walk, or fixed text.
enum Step<'a> {
    Node(&'a Pred),
    Text(&'static str),
}

/// The walk: an explicit stack of pending steps, children pushed in reverse.
fn render<S: Sink>(pred: &Pred, table: &Table, sink: &mut S) {
    let mut stack = vec![Step::Node(pred)];
    while let Some(step) = stack.pop() {
        let pred = match step {
            Step::Text(text) => {
                sink.sql().push_str(text);
                continue;
            }
            Step::Node(pred) => pred,
        };
        match pred {
            Pred::And(children) if children.is_empty() => sink.sql().push_str(S::TRUE),
            Pred::And(children) | Pred::Or(children) => {
                let in_and = matches!(pred, Pred::And(_));
                let joiner = if in_and { " AND " } else { " OR " };
                for (i, child) in children.iter().enumerate().rev() {
                    let wrap = sink.wraps(in_and, child);
                    if wrap {
                        stack.push(Step::Text(")"));
                    }
                    stack.push(Step::Node(child));
                    if wrap {
                        stack.push(Step::Text("("));
                    }
                    if i > 0 {
                        stack.push(Step::Text(joiner));
                    }
                }
            }
            leaf => write_leaf(leaf, table, sink),
        }
    }
}

fn write_leaf<S: Sink>(leaf: &Pred, table: &Table, sink: &mut S) {
    let column = |sink: &S, col: usize, values: &[Value]| {
        let column = &table.columns[col];
        let plus = if sink.plus(column, values) { "+" } else { "" };
        format!("{plus}{}", sink.ident(&column.name))
    };
    let name = |sink: &S, col: usize| sink.ident(&table.columns[col].name);
    match leaf {
        Pred::And(_) | Pred::Or(_) => unreachable!("groups are walked by render"),
        Pred::Cmp { col, op, value } => {
            let text = column(sink, *col, std::slice::from_ref(value));
            let sql = sink.sql();
            sql.push_str(&text);
            sql.push(' ');
            sql.push_str(op.sql());
            sql.push(' ');
            sink.value(value);
        }
        Pred::In {
            col,
            values,
            negated,
        } => {
            let text = column(sink, *col, values);
            let sql = sink.sql();
            sql.push_str(&text);
            sql.push_str(if *negated { " NOT IN (" } else { " IN (" });
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    sink.sql().push_str(", ");
                }
                sink.value(v);
            }
            sink.sql().push(')');
        }
        Pred::Like {
            col,
            pattern,
            escape,
            negated,
        } => {
            let text = name(sink, *col);
            let sql = sink.sql();
            sql.push_str(&text);
            sql.push_str(if *negated { " NOT LIKE " } else { " LIKE " });
            sink.value(&pattern_value(pattern));
            if let Some(e) = escape {
                sink.sql().push_str(" ESCAPE ");
                sink.value(&Value::Text(e.to_string()));
            }
        }
        Pred::Glob {
            col,
            pattern,
            negated,
        } => {
            let text = name(sink, *col);
            let sql = sink.sql();
            sql.push_str(&text);
            sql.push_str(if *negated { " NOT GLOB " } else { " GLOB " });
            sink.value(&pattern_value(pattern));
        }
        Pred::Truth { col, test } => {
            let name = name(sink, *col);
            let text = match test {
                TruthTest::Bare => name,
                TruthTest::NotBare => format!("NOT {name}"),
                TruthTest::IsTrue => format!("{name} IS TRUE"),
                TruthTest::IsNotTrue => format!("{name} IS NOT TRUE"),
                TruthTest::IsFalse => format!("{name} IS FALSE"),
                TruthTest::IsNotFalse => format!("{name} IS NOT FALSE"),
            };
            sink.sql().push_str(&text);
        }
    }
}

/// A LIKE/GLOB pattern as a value: NULL, text when it is UTF-8, a blob otherwise.
fn pattern_value(pattern: &Option<Vec<u8>>) -> Value {
    match pattern {
        None => Value::Null,
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Value::Text(text.to_string()),
            Err(_) => Value::Blob(bytes.clone()),
        },
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{compile, Params};
    use crate::schema::Schema;

    fn shape(where_clause: &str) -> crate::query::Shape {
        let schema = Schema::parse(
            "t.sql",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT, \"order\" TEXT);",
        )
        .expect("schema");
        let sql = format!("SELECT * FROM t WHERE {where_clause}");
        compile(&schema, &sql, &Params::new()).expect("compiles")
    }

    #[test]
    fn one_walk_two_sinks() {
        let s =
            shape("n = '5' AND (s LIKE 'a!%%' ESCAPE '!' OR \"order\" IN (1, 'x')) AND n IS NULL");
        assert_eq!(
            s.filter().to_sql(s.table()),
            "(\"order\" IN ('1', 'x') OR s LIKE 'a!%%' ESCAPE '!') AND n = 5 AND n IS NULL"
        );
        let (sql, params) = where_sql(s.filter(), s.table());
        assert_eq!(
            sql,
            "((\"order\" IN (?, ?)) OR (\"s\" LIKE ? ESCAPE ?)) AND (\"n\" = ?) AND (\"n\" IS ?)"
        );
        assert_eq!(params.len(), 6);
        assert_eq!(params[4], Value::Integer(5));
        assert_eq!(params[5], Value::Null);
    }

    #[test]
    fn always_true() {
        assert_eq!(Pred::TRUE.to_sql(shape("n = 1").table()), "TRUE");
        assert_eq!(where_sql(&Pred::TRUE, shape("n = 1").table()).0, "1");
    }
}
