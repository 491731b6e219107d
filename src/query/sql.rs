//! A shape's predicate as a parameterized SQLite `WHERE` clause, so the store can let
//! SQLite filter a snapshot (with its indexes) under exactly the same semantics.

use super::pred::{Pred, TruthTest};
use crate::schema::{quote_ident, Table};
use crate::value::Value;

/// `(where_sql, params)`: SQL with `?` placeholders and their values in order.
pub fn where_sql(pred: &Pred, table: &Table) -> (String, Vec<Value>) {
    let mut sql = String::new();
    let mut params = Vec::new();
    write(pred, table, &mut sql, &mut params);
    (sql, params)
}

/// The column, written `+"col"` when its affinity would convert one of the values: bound
/// parameters have no affinity, so a bare column would apply its own and change them.
fn column(table: &Table, col: usize, values: &[Value]) -> String {
    let c = &table.columns[col];
    let plus = values
        .iter()
        .any(|v| &c.affinity.apply_for_comparison(v.clone()) != v);
    format!("{}{}", if plus { "+" } else { "" }, quote_ident(&c.name))
}

fn pattern_param(pattern: &Option<Vec<u8>>) -> Value {
    match pattern {
        None => Value::Null,
        Some(bytes) => match String::from_utf8(bytes.clone()) {
            Ok(text) => Value::Text(text),
            Err(_) => Value::Blob(bytes.clone()),
        },
    }
}

fn write(pred: &Pred, table: &Table, sql: &mut String, params: &mut Vec<Value>) {
    match pred {
        Pred::And(children) if children.is_empty() => sql.push('1'),
        Pred::And(children) | Pred::Or(children) => {
            let joiner = if matches!(pred, Pred::And(_)) {
                " AND "
            } else {
                " OR "
            };
            for (i, child) in children.iter().enumerate() {
                if i > 0 {
                    sql.push_str(joiner);
                }
                sql.push('(');
                write(child, table, sql, params);
                sql.push(')');
            }
        }
        Pred::Cmp { col, op, value } => {
            sql.push_str(&column(table, *col, std::slice::from_ref(value)));
            sql.push(' ');
            sql.push_str(op.sql());
            sql.push_str(" ?");
            params.push(value.clone());
        }
        Pred::In {
            col,
            values,
            negated,
        } => {
            sql.push_str(&column(table, *col, values));
            sql.push_str(if *negated { " NOT IN (" } else { " IN (" });
            for (i, v) in values.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                params.push(v.clone());
            }
            sql.push(')');
        }
        Pred::Like {
            col,
            pattern,
            escape,
            negated,
        } => {
            sql.push_str(&quote_ident(&table.columns[*col].name));
            sql.push_str(if *negated { " NOT LIKE ?" } else { " LIKE ?" });
            params.push(pattern_param(pattern));
            if let Some(e) = escape {
                sql.push_str(" ESCAPE ?");
                params.push(Value::Text(e.to_string()));
            }
        }
        Pred::Glob {
            col,
            pattern,
            negated,
        } => {
            sql.push_str(&quote_ident(&table.columns[*col].name));
            sql.push_str(if *negated { " NOT GLOB ?" } else { " GLOB ?" });
            params.push(pattern_param(pattern));
        }
        Pred::Truth { col, test } => {
            let name = quote_ident(&table.columns[*col].name);
            let text = match test {
                TruthTest::Bare => name,
                TruthTest::NotBare => format!("NOT {name}"),
                TruthTest::IsTrue => format!("{name} IS TRUE"),
                TruthTest::IsNotTrue => format!("{name} IS NOT TRUE"),
                TruthTest::IsFalse => format!("{name} IS FALSE"),
                TruthTest::IsNotFalse => format!("{name} IS NOT FALSE"),
            };
            sql.push_str(&text);
        }
    }
}
