//! Write statements for `sluice exec`: `INSERT` (one or many rows), `UPDATE ... WHERE
//! <pk> = v` and `DELETE ... WHERE <pk> = v`, literals only; several statements separated
//! by `;` form one transaction. Pure: produces mutations, does not apply them.

use sqlparser::ast::{
    Assignment, AssignmentTarget, BinaryOperator, Expr, FromTable, ObjectName, SetExpr, Spanned,
    Statement, TableFactor, UnaryOperator, Value as SqlValue,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;

use super::error::{snippet, Pos, QueryError, QueryErrorKind};
use crate::schema::{Schema, Table};
use crate::value::Value;
use crate::vocab::Mutation;

/// Parses one transaction of write statements.
pub fn parse_writes(schema: &Schema, sql: &str) -> Result<Vec<Mutation>, QueryError> {
    let statements = Parser::parse_sql(&SQLiteDialect {}, sql)
        .map_err(|e| QueryError::new(QueryErrorKind::Syntax, e.to_string(), Pos::START))?;
    if statements.is_empty() {
        return Err(QueryError::new(
            QueryErrorKind::Syntax,
            "no statement",
            Pos::START,
        ));
    }
    let mut mutations = Vec::new();
    for statement in &statements {
        match statement {
            Statement::Insert(insert) => {
                let sqlparser::ast::TableObject::TableName(name) = &insert.table else {
                    return Err(unsupported("INSERT needs a table name", statement));
                };
                let table = table(schema, &object_name_of(name), pos(statement))?;
                let columns: Vec<String> = if insert.columns.is_empty() {
                    table.columns.iter().map(|c| c.name.clone()).collect()
                } else {
                    insert
                        .columns
                        .iter()
                        .map(|c| column(table, &c.value, ident_pos(c)))
                        .collect::<Result<_, _>>()?
                };
                let Some(source) = &insert.source else {
                    return Err(unsupported("INSERT needs VALUES", statement));
                };
                let SetExpr::Values(values) = source.body.as_ref() else {
                    return Err(unsupported("INSERT takes VALUES rows only", statement));
                };
                for row in &values.rows {
                    if row.len() != columns.len() {
                        return Err(QueryError::new(
                            QueryErrorKind::Syntax,
                            format!("{} values for {} columns", row.len(), columns.len()),
                            pos(row.first().unwrap_or(&Expr::Value(SqlValue::Null.into()))),
                        ));
                    }
                    let values = columns
                        .iter()
                        .zip(row)
                        .map(|(c, e)| Ok((c.clone(), literal(e)?)))
                        .collect::<Result<Vec<_>, QueryError>>()?;
                    mutations.push(Mutation::Insert {
                        table: table.name.clone(),
                        values,
                    });
                }
            }
            Statement::Update {
                table: target,
                assignments,
                from,
                selection,
                ..
            } => {
                if from.is_some() {
                    return Err(unsupported("UPDATE ... FROM is not supported", statement));
                }
                let TableFactor::Table { name, .. } = &target.relation else {
                    return Err(unsupported("UPDATE needs a table name", statement));
                };
                let table = table(schema, &object_name_of(name), pos(statement))?;
                let key = key_of(table, selection.as_ref(), statement)?;
                let set = assignments
                    .iter()
                    .map(|a| assignment(table, a))
                    .collect::<Result<Vec<_>, _>>()?;
                mutations.push(Mutation::Update {
                    table: table.name.clone(),
                    key,
                    set,
                });
            }
            Statement::Delete(delete) => {
                let from = match &delete.from {
                    FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
                };
                let Some(TableFactor::Table { name, .. }) = from.first().map(|t| &t.relation)
                else {
                    return Err(unsupported("DELETE needs a table name", statement));
                };
                let table = table(schema, &object_name_of(name), pos(statement))?;
                let key = key_of(table, delete.selection.as_ref(), statement)?;
                mutations.push(Mutation::Delete {
                    table: table.name.clone(),
                    key,
                });
            }
            other => {
                return Err(unsupported(
                    "only INSERT, UPDATE and DELETE can be executed",
                    other,
                ))
            }
        }
    }
    Ok(mutations)
}

fn pos(node: &impl Spanned) -> Pos {
    Pos::from_location(node.span().start)
}

fn ident_pos(ident: &sqlparser::ast::Ident) -> Pos {
    Pos::from_location(ident.span.start)
}

fn unsupported(message: &str, at: &impl Spanned) -> QueryError {
    QueryError::new(QueryErrorKind::Unsupported, message, pos(at))
}

fn object_name_of(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident().map(|i| i.value.clone()))
        .unwrap_or_else(|| name.to_string())
}

fn table<'a>(schema: &'a Schema, name: &str, at: Pos) -> Result<&'a Table, QueryError> {
    schema.table(name).map(|t| t.as_ref()).ok_or_else(|| {
        QueryError::new(
            QueryErrorKind::UnknownTable,
            format!("unknown table `{}`", snippet(name)),
            at,
        )
    })
}

fn column(table: &Table, name: &str, at: Pos) -> Result<String, QueryError> {
    table
        .column_index(name)
        .map(|i| table.columns[i].name.clone())
        .ok_or_else(|| {
            QueryError::new(
                QueryErrorKind::UnknownColumn,
                format!(
                    "unknown column `{}` in table `{}`",
                    snippet(name),
                    table.name
                ),
                at,
            )
        })
}

fn assignment(table: &Table, a: &Assignment) -> Result<(String, Value), QueryError> {
    let AssignmentTarget::ColumnName(name) = &a.target else {
        return Err(unsupported("assign one column at a time", &a.value));
    };
    let col = column(table, &object_name_of(name), pos(&a.value))?;
    Ok((col, literal(&a.value)?))
}

/// The key of `WHERE <pk> = literal`.
fn key_of(table: &Table, selection: Option<&Expr>, at: &Statement) -> Result<Value, QueryError> {
    let pk = &table.pk_column().name;
    let needed = || {
        QueryError::new(
            QueryErrorKind::Unsupported,
            format!("writes address one row: add `WHERE {pk} = <value>`"),
            pos(at),
        )
    };
    let Some(Expr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    }) = selection
    else {
        return Err(needed());
    };
    let (col, value) = match (left.as_ref(), right.as_ref()) {
        (Expr::Identifier(i), v) | (v, Expr::Identifier(i)) => (i, v),
        _ => return Err(needed()),
    };
    if !col.value.eq_ignore_ascii_case(pk) {
        return Err(needed());
    }
    literal(value)
}

/// A literal value: number, string, blob, NULL, TRUE/FALSE, optionally negated.
pub(crate) fn literal(e: &Expr) -> Result<Value, QueryError> {
    match e {
        Expr::Nested(inner) => literal(inner),
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => literal(expr),
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => {
            if let Expr::Value(v) = expr.as_ref() {
                if let SqlValue::Number(digits, _) = &v.value {
                    if let Ok(i) = format!("-{digits}").parse::<i64>() {
                        return Ok(Value::Integer(i));
                    }
                }
            }
            Ok(super::literal::negate(literal(expr)?))
        }
        Expr::Value(v) => match &v.value {
            SqlValue::Null => Ok(Value::Null),
            SqlValue::Boolean(b) => Ok(Value::Integer(*b as i64)),
            SqlValue::Number(text, _) => super::literal::number(text).ok_or_else(|| {
                QueryError::new(
                    QueryErrorKind::Syntax,
                    format!("malformed number `{}`", snippet(text)),
                    pos(e),
                )
            }),
            SqlValue::SingleQuotedString(s) => Ok(Value::Text(s.clone())),
            SqlValue::HexStringLiteral(hex) => super::literal::decode_hex(hex)
                .map(Value::Blob)
                .ok_or_else(|| unsupported("malformed blob literal", e)),
            other => Err(unsupported(
                &format!("literal `{}` is not supported", snippet(&other.to_string())),
                e,
            )),
        },
        other => Err(unsupported("only literal values can be written", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::parse(
            "t.sql",
            "CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER, s TEXT)",
        )
        .unwrap()
    }

    #[test]
    fn insert_update_delete_make_one_transaction() {
        let m = parse_writes(
            &schema(),
            "INSERT INTO t (id, n) VALUES ('a', 1), ('b', -2); UPDATE t SET s = 'x' WHERE id = 'a'; \
             DELETE FROM t WHERE id = 'b'",
        )
        .unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(
            m[1],
            Mutation::Insert {
                table: "t".into(),
                values: vec![
                    ("id".into(), Value::Text("b".into())),
                    ("n".into(), Value::Integer(-2))
                ]
            }
        );
        assert_eq!(
            m[2],
            Mutation::Update {
                table: "t".into(),
                key: Value::Text("a".into()),
                set: vec![("s".into(), Value::Text("x".into()))]
            }
        );
        assert_eq!(
            m[3],
            Mutation::Delete {
                table: "t".into(),
                key: Value::Text("b".into())
            }
        );
    }

    #[test]
    fn writes_must_address_one_row_by_key() {
        let e = parse_writes(&schema(), "UPDATE t SET n = 1 WHERE n = 2").unwrap_err();
        assert!(e.message.contains("WHERE id = <value>"), "{e}");
        let e = parse_writes(&schema(), "DELETE FROM t").unwrap_err();
        assert!(e.message.contains("WHERE id"), "{e}");
        let e = parse_writes(&schema(), "INSERT INTO t (id, zz) VALUES ('a', 1)").unwrap_err();
        assert_eq!(e.kind, QueryErrorKind::UnknownColumn);
        let e = parse_writes(&schema(), "SELECT * FROM t").unwrap_err();
        assert_eq!(e.kind, QueryErrorKind::Unsupported);
    }
}
