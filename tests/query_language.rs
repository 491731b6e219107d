//! The subscription language reference, as tests: every accepted form, every refused
//! construct with its error kind and position, normalization (equivalent subscriptions
//! share a ShapeId and the normalized text is a fixed point), parameters and projection.
//! The last section holds regression tests for bugs the differential test found.

use sluice::query::{self, compile, Pos, QueryErrorKind, Template};
use sluice::{Params, Schema, Shape, Value};

const SCHEMA: &str = "
CREATE TABLE issues(
    id TEXT PRIMARY KEY,
    team_id TEXT,
    status TEXT,
    priority INTEGER,
    score REAL,
    data BLOB,
    loose
);
CREATE TABLE teams(id TEXT PRIMARY KEY, name TEXT);
";

fn schema() -> Schema {
    Schema::parse("schema.sql", SCHEMA).expect("test schema parses")
}

fn shape(sql: &str) -> Shape {
    shape_with(sql, &Params::new())
}

fn shape_with(sql: &str, params: &Params) -> Shape {
    compile(&schema(), sql, params).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The normalized text of `SELECT * FROM issues WHERE <pred>`, checked to be a fixed point.
fn normalized(pred: &str) -> String {
    let s = shape(&format!("SELECT * FROM issues WHERE {pred}"));
    let again = shape(s.text());
    assert_eq!(
        again.id(),
        s.id(),
        "{pred}: normalized text {} is not a fixed point",
        s.text()
    );
    s.text()
        .trim_start_matches("SELECT * FROM issues WHERE ")
        .to_string()
}

/// Asserts that `sql` is refused with `kind` at `line:column`, and returns the message.
fn refused(sql: &str, kind: QueryErrorKind, line: u64, column: u64) -> String {
    refused_with(sql, &Params::new(), kind, line, column)
}

fn refused_with(
    sql: &str,
    params: &Params,
    kind: QueryErrorKind,
    line: u64,
    column: u64,
) -> String {
    match compile(&schema(), sql, params) {
        Ok(s) => panic!("{sql}: accepted as {}", s.text()),
        Err(e) => {
            assert_eq!((e.kind, e.pos), (kind, Pos { line, column }), "{sql}: {e}");
            assert!(!e.message.is_empty());
            e.message
        }
    }
}

fn row(status: Value, priority: Value) -> Vec<Value> {
    vec![
        Value::Text("I1".into()),
        Value::Text("T1".into()),
        status,
        priority,
        Value::Null,
        Value::Null,
        Value::Null,
    ]
}

// ---------------------------------------------------------------- accepted forms

#[test]
fn whole_table_and_where_clauses() {
    assert_eq!(shape("SELECT * FROM issues").text(), "SELECT * FROM issues");
    assert_eq!(shape("select * from ISSUES").text(), "SELECT * FROM issues");
    assert_eq!(
        shape("SELECT * FROM issues;").text(),
        "SELECT * FROM issues"
    );
    assert_eq!(
        shape("SELECT * FROM issues WHERE status = 'open'").text(),
        "SELECT * FROM issues WHERE status = 'open'"
    );
}

#[test]
fn every_comparison_form() {
    assert_eq!(normalized("priority = 1"), "priority = 1");
    assert_eq!(normalized("priority == 1"), "priority = 1");
    assert_eq!(normalized("priority != 1"), "priority != 1");
    assert_eq!(normalized("priority <> 1"), "priority != 1");
    assert_eq!(normalized("priority < 1"), "priority < 1");
    assert_eq!(normalized("priority <= 1"), "priority <= 1");
    assert_eq!(normalized("priority > 1"), "priority > 1");
    assert_eq!(normalized("priority >= 1"), "priority >= 1");
    assert_eq!(normalized("priority IS 1"), "priority IS 1");
    assert_eq!(normalized("priority IS NOT 1"), "priority IS NOT 1");
    assert_eq!(
        normalized("priority IS NOT DISTINCT FROM 1"),
        "priority IS 1"
    );
    assert_eq!(
        normalized("priority IS DISTINCT FROM 1"),
        "priority IS NOT 1"
    );
    assert_eq!(normalized("priority IS NULL"), "priority IS NULL");
    assert_eq!(normalized("priority ISNULL"), "priority IS NULL");
    assert_eq!(normalized("priority IS NOT NULL"), "priority IS NOT NULL");
    assert_eq!(normalized("priority NOTNULL"), "priority IS NOT NULL");
    assert_eq!(normalized("priority NOT NULL"), "priority IS NOT NULL");
    assert_eq!(normalized("priority IS TRUE"), "priority IS TRUE");
    assert_eq!(normalized("priority IS NOT TRUE"), "priority IS NOT TRUE");
    assert_eq!(normalized("priority IS FALSE"), "priority IS FALSE");
    assert_eq!(normalized("priority IS NOT FALSE"), "priority IS NOT FALSE");
    assert_eq!(normalized("priority"), "priority");
    assert_eq!(normalized("NOT priority"), "NOT priority");
    assert_eq!(normalized("+priority"), "priority");
}

#[test]
fn in_between_like_glob() {
    assert_eq!(normalized("priority IN (3, 1, 2)"), "priority IN (1, 2, 3)");
    assert_eq!(
        normalized("priority NOT IN (1, NULL)"),
        "priority NOT IN (NULL, 1)"
    );
    assert_eq!(normalized("priority IN ()"), "priority IN ()");
    assert_eq!(normalized("priority NOT IN ()"), "priority NOT IN ()");
    assert_eq!(
        normalized("priority BETWEEN 1 AND 5"),
        "priority <= 5 AND priority >= 1"
    );
    assert_eq!(
        normalized("priority NOT BETWEEN 1 AND 5"),
        "priority < 1 OR priority > 5"
    );
    assert_eq!(normalized("status LIKE 'op%'"), "status LIKE 'op%'");
    assert_eq!(
        normalized("status NOT LIKE 'a!%' ESCAPE '!'"),
        "status NOT LIKE 'a!%' ESCAPE '!'"
    );
    assert_eq!(normalized("status GLOB '[a-c]*'"), "status GLOB '[a-c]*'");
    assert_eq!(normalized("status NOT GLOB '?x'"), "status NOT GLOB '?x'");
}

#[test]
fn literals_of_every_class() {
    assert_eq!(normalized("score = 1.5"), "score = 1.5");
    assert_eq!(normalized("score = -2"), "score = -2");
    assert_eq!(
        normalized("priority = -9223372036854775808"),
        "priority = -9223372036854775808"
    );
    assert_eq!(
        normalized("priority = 9223372036854775808"),
        "priority = 9.223372036854776e18"
    );
    assert_eq!(normalized("priority = 0x1F"), "priority = 31");
    assert_eq!(normalized("priority = 0XFFFFFFFFFFFFFFFF"), "priority = -1");
    assert_eq!(normalized("data = x'CAFE'"), "data = x'CAFE'");
    assert_eq!(normalized("data = X''"), "data = x''");
    assert_eq!(normalized("priority = TRUE"), "priority = 1");
    assert_eq!(normalized("priority = FALSE"), "priority = 0");
    assert_eq!(normalized("status = 'it''s'"), "status = 'it''s'");
    assert_eq!(normalized("status = -'5'"), "status = '-5'");
    assert_eq!(normalized("priority = NULL"), "priority = NULL");
}

#[test]
fn column_forms_and_literal_on_the_left() {
    assert_eq!(normalized("(priority) = 1"), "priority = 1");
    assert_eq!(normalized("issues.priority = 1"), "priority = 1");
    assert_eq!(normalized("\"priority\" = 1"), "priority = 1");
    assert_eq!(normalized("1 = priority"), "priority = 1");
    assert_eq!(normalized("1 < priority"), "priority > 1");
    assert_eq!(normalized("'5' >= +priority"), "+priority <= '5'");
    let aliased = shape("SELECT * FROM issues AS i WHERE i.status = 'open'");
    assert_eq!(
        aliased.id(),
        shape("SELECT * FROM issues WHERE status = 'open'").id()
    );
    // `+col` drops the column's affinity: the text '5' is not converted to 5.
    assert_eq!(normalized("priority = '5'"), "priority = 5");
    assert_eq!(normalized("+priority = '5'"), "+priority = '5'");
}

#[test]
fn projection_always_includes_the_primary_key() {
    let s = shape("SELECT status FROM issues");
    assert_eq!(s.text(), "SELECT id, status FROM issues");
    assert_eq!(s.projection(), Some(&[0usize, 2][..]));
    assert_eq!(s.column_names(), vec!["id", "status"]);
    let r = row(Value::Text("open".into()), Value::Integer(1));
    assert_eq!(
        s.project(&r),
        vec![Value::Text("I1".into()), Value::Text("open".into())]
    );
    // Selected in any order, the projection is in table order.
    assert_eq!(
        shape("SELECT priority, status, id FROM issues").projection(),
        Some(&[0, 2, 3][..])
    );
    // Every column is `*`.
    let all = shape("SELECT id, team_id, status, priority, score, data, loose FROM issues");
    assert_eq!(all.projection(), None);
    assert_eq!(all.id(), shape("SELECT * FROM issues").id());
}

#[test]
fn parameters_bind_values_and_lists() {
    let params = Params::new()
        .value("team", Value::Text("T1".into()))
        .list(
            "auth.teams",
            vec![Value::Text("T1".into()), Value::Text("T2".into())],
        )
        .list("prios", vec![Value::Integer(1), Value::Text("2".into())]);
    let s = shape_with(
        "SELECT * FROM issues WHERE team_id = :team AND team_id IN :auth.teams \
         AND priority IN :prios",
        &params,
    );
    assert_eq!(
        s.text(),
        "SELECT * FROM issues WHERE priority IN (1, 2) AND team_id = 'T1' AND team_id IN ('T1', 'T2')"
    );
    // A bound value is converted by the column's affinity like a literal.
    assert!(s.matches(&row(Value::Null, Value::Integer(2))));
    assert!(!s.matches(&row(Value::Null, Value::Integer(3))));
    // The same shape as the literal subscription.
    let literal = shape(
        "SELECT * FROM issues WHERE team_id = 'T1' AND team_id IN ('T1','T2') \
         AND priority IN (1, 2)",
    );
    assert_eq!(s.id(), literal.id());

    let template = Template::parse(
        &schema(),
        "SELECT * FROM issues WHERE team_id IN :auth.teams \
        AND status = :status",
    )
    .expect("template");
    assert_eq!(
        template.parameters(),
        vec!["auth.teams".to_string(), "status".to_string()]
    );
    assert_eq!(
        query::check(
            &schema(),
            "SELECT * FROM issues WHERE status = :status AND team_id IN :t"
        )
        .expect("check"),
        "SELECT * FROM issues WHERE status = :status AND team_id IN :t"
    );
    // An empty list matches nothing, like `IN ()`.
    let empty = shape_with(
        "SELECT * FROM issues WHERE team_id IN :t",
        &Params::new().list("t", vec![]),
    );
    assert_eq!(
        empty.id(),
        shape("SELECT * FROM issues WHERE team_id IN ()").id()
    );
}

// ---------------------------------------------------------------- refused constructs

#[test]
fn joins_subqueries_functions_aggregates() {
    use QueryErrorKind::*;
    let m = refused(
        "SELECT * FROM issues JOIN teams ON issues.team_id = teams.id",
        Unsupported,
        1,
        27,
    );
    assert!(m.contains("joins"), "{m}");
    let m = refused("SELECT * FROM issues, teams", Unsupported, 1, 23);
    assert!(m.contains("joins"), "{m}");
    let m = refused(
        "SELECT * FROM issues WHERE team_id IN (SELECT id FROM teams)",
        Unsupported,
        1,
        40,
    );
    assert!(m.contains("subqueries"), "{m}");
    let m = refused("SELECT * FROM (SELECT * FROM issues)", Unsupported, 1, 16);
    assert!(m.contains("subqueries"), "{m}");
    let m = refused(
        "SELECT * FROM issues WHERE lower(status) = 'x'",
        Unsupported,
        1,
        28,
    );
    assert!(m.contains("functions") && m.contains("lower"), "{m}");
    let m = refused("SELECT count(*) FROM issues", Unsupported, 1, 8);
    assert!(m.contains("aggregates"), "{m}");
    let m = refused("SELECT * FROM issues GROUP BY status", Unsupported, 1, 31);
    assert!(m.contains("GROUP BY"), "{m}");
    let m = refused(
        "SELECT * FROM issues GROUP BY status HAVING status > 'a'",
        Unsupported,
        1,
        31,
    );
    assert!(m.contains("GROUP BY"), "{m}");
    let m = refused(
        "SELECT * FROM issues WHERE CAST(priority AS TEXT) = '1'",
        Unsupported,
        1,
        33, // sqlparser spans CAST from its operand
    );
    assert!(m.contains("CAST"), "{m}");
    let m = refused(
        "SELECT * FROM issues WHERE priority + 1 = 2",
        Unsupported,
        1,
        28,
    );
    assert!(m.contains("arithmetic"), "{m}");
    let m = refused("SELECT DISTINCT status FROM issues", Unsupported, 1, 1);
    assert!(m.contains("DISTINCT"), "{m}");
}

#[test]
fn having_without_group_by_is_refused() {
    let m = refused(
        "SELECT * FROM issues HAVING priority > 1",
        QueryErrorKind::Unsupported,
        1,
        29,
    );
    assert!(m.contains("HAVING"), "{m}");
}

#[test]
fn unknown_names() {
    let m = refused("SELECT * FROM nope", QueryErrorKind::UnknownTable, 1, 15);
    assert!(m.contains("nope"), "{m}");
    let m = refused(
        "SELECT * FROM issues WHERE nope = 1",
        QueryErrorKind::UnknownColumn,
        1,
        28,
    );
    assert!(m.contains("nope"), "{m}");
    let m = refused(
        "SELECT nope FROM issues",
        QueryErrorKind::UnknownColumn,
        1,
        8,
    );
    assert!(m.contains("nope"), "{m}");
    refused(
        "SELECT * FROM issues WHERE teams.id = 'x'",
        QueryErrorKind::UnknownTable,
        1,
        28,
    );
    // A double-quoted string is an identifier; the message says how to write a string.
    let m = refused(
        "SELECT * FROM issues WHERE status = \"open\"",
        QueryErrorKind::UnknownColumn,
        1,
        37,
    );
    assert!(m.contains("single quotes"), "{m}");
    let m = refused(
        "SELECT * FROM issues WHERE \"open\" = 'x'",
        QueryErrorKind::UnknownColumn,
        1,
        28,
    );
    assert!(m.contains("single quotes"), "{m}");
    // Positions count lines and columns from 1.
    refused(
        "SELECT *\nFROM issues\nWHERE nope = 1",
        QueryErrorKind::UnknownColumn,
        3,
        7,
    );
}

#[test]
fn parameter_errors() {
    let m = refused(
        "SELECT * FROM issues WHERE team_id = :team",
        QueryErrorKind::UnboundParameter,
        1,
        38,
    );
    assert!(m.contains(":team"), "{m}");
    let list = Params::new().list("team", vec![Value::Text("T1".into())]);
    let m = refused_with(
        "SELECT * FROM issues WHERE team_id = :team",
        &list,
        QueryErrorKind::ParameterType,
        1,
        38,
    );
    assert!(m.contains("IN :team"), "{m}");
    let scalar = Params::new().value("team", Value::Text("T1".into()));
    refused_with(
        "SELECT * FROM issues WHERE team_id IN :team",
        &scalar,
        QueryErrorKind::ParameterType,
        1,
        39,
    );
    refused(
        "SELECT * FROM issues WHERE team_id = ?",
        QueryErrorKind::Unsupported,
        1,
        38,
    );
    refused(
        "SELECT * FROM issues WHERE team_id = ?1",
        QueryErrorKind::Unsupported,
        1,
        38,
    );
}

#[test]
fn statements_other_than_one_select() {
    let m = refused(
        "SELECT * FROM issues; SELECT * FROM teams",
        QueryErrorKind::Unsupported,
        1,
        23,
    );
    assert!(m.contains("one SELECT"), "{m}");
    refused("DELETE FROM issues", QueryErrorKind::Unsupported, 1, 1);
    refused(
        "UPDATE issues SET status = 'x'",
        QueryErrorKind::Unsupported,
        1,
        1,
    );
    refused(
        "SELECT * FROM issues UNION SELECT * FROM issues",
        QueryErrorKind::Unsupported,
        1,
        28,
    );
    refused("", QueryErrorKind::Syntax, 1, 1);
    refused("SELECT * FROM issues WHERE", QueryErrorKind::Syntax, 1, 27);
    refused(
        "SELECT * FROM issues WHERE status = 'open",
        QueryErrorKind::Syntax,
        1,
        37,
    );
}

#[test]
fn column_to_column_and_constant_predicates() {
    let m = refused(
        "SELECT * FROM issues WHERE team_id = status",
        QueryErrorKind::Unsupported,
        1,
        28,
    );
    assert!(m.contains("two columns"), "{m}");
    for (pred, column) in [
        ("1 = 1", 28),
        ("1", 28),
        ("TRUE", 28),
        ("NULL IS NULL", 28),
        ("'a' LIKE 'a'", 28),
    ] {
        let m = refused(
            &format!("SELECT * FROM issues WHERE {pred}"),
            QueryErrorKind::Unsupported,
            1,
            column,
        );
        assert!(m.contains("must test a column"), "{pred}: {m}");
    }
    let m = refused(
        "SELECT * FROM issues WHERE priority BETWEEN 1 AND score",
        QueryErrorKind::Unsupported,
        1,
        51,
    );
    assert!(m.contains("BETWEEN bound"), "{m}");
    let m = refused(
        "SELECT * FROM issues WHERE priority IN (1, score)",
        QueryErrorKind::Unsupported,
        1,
        44,
    );
    assert!(m.contains("IN list"), "{m}");
}

#[test]
fn operators_outside_the_language() {
    use QueryErrorKind::*;
    refused(
        "SELECT * FROM issues WHERE status REGEXP 'a'",
        Unsupported,
        1,
        35,
    );
    refused(
        "SELECT * FROM issues WHERE status MATCH 'a'",
        Unsupported,
        1,
        35,
    );
    refused(
        "SELECT * FROM issues WHERE status ILIKE 'a'",
        Unsupported,
        1,
        28,
    );
    refused(
        "SELECT * FROM issues WHERE status <=> 'a'",
        Unsupported,
        1,
        35,
    );
    refused(
        "SELECT * FROM issues WHERE status COLLATE NOCASE = 'a'",
        Unsupported,
        1,
        28,
    );
    refused(
        "SELECT * FROM issues WHERE priority = 0x10000000000000000",
        Syntax,
        1,
        39,
    );
    refused(
        "SELECT * FROM issues WHERE priority = -0x8000000000000000",
        Syntax,
        1,
        40,
    );
}

// ---------------------------------------------------------------- normalization

fn same_shape(variants: &[&str]) {
    let first = shape(&format!("SELECT * FROM issues WHERE {}", variants[0]));
    for v in variants {
        let s = shape(&format!("SELECT * FROM issues WHERE {v}"));
        assert_eq!(s.id(), first.id(), "{v}: {} vs {}", s.text(), first.text());
        assert_eq!(
            shape(s.text()).id(),
            s.id(),
            "{v}: text is not a fixed point"
        );
    }
}

#[test]
fn equivalent_subscriptions_share_a_shape() {
    same_shape(&[
        "status = 'open' AND priority = 1",
        "priority = 1 AND status = 'open'",
        "((priority = 1)) AND (status = 'open')",
        "1 = priority AND 'open' = status",
        "priority = 1 AND status = 'open' AND priority = 1",
        "priority IN (1) AND status IN ('open', 'open')",
        "priority = '1' AND status = 'open'",
    ]);
    same_shape(&[
        "status = 'a' OR status = 'b'",
        "status = 'b' OR status = 'a'",
        "(status = 'b') OR ((status = 'a'))",
    ]);
    same_shape(&[
        "NOT (priority = 1 OR status = 'x')",
        "priority != 1 AND status != 'x'",
        "NOT priority = 1 AND NOT status = 'x'",
    ]);
    same_shape(&[
        "NOT (priority < 1 AND NOT status IS NULL)",
        "priority >= 1 OR status IS NULL",
    ]);
    same_shape(&["NOT priority IS TRUE", "priority IS NOT TRUE"]);
    same_shape(&["NOT NOT priority", "priority"]);
    same_shape(&[
        "priority BETWEEN 1 AND 5",
        "priority >= 1 AND priority <= 5",
    ]);
    same_shape(&[
        "priority NOT BETWEEN 1 AND 5",
        "priority < 1 OR priority > 5",
    ]);
    same_shape(&[
        "NOT priority BETWEEN 1 AND 5",
        "priority < 1 OR priority > 5",
    ]);
    same_shape(&["priority NOT IN (2, 1)", "NOT priority IN (1, 2, 2)"]);
    same_shape(&["status NOT LIKE 'a%'", "NOT status LIKE 'a%'"]);
    same_shape(&[
        "(priority = 1 AND status = 'a') OR score > 2",
        "score > 2 OR (status = 'a' AND priority = 1)",
    ]);
}

#[test]
fn different_subscriptions_have_different_shapes() {
    let a = shape("SELECT * FROM issues WHERE priority = 1");
    for other in [
        "SELECT * FROM issues WHERE priority = 2",
        "SELECT * FROM issues WHERE priority != 1",
        "SELECT * FROM issues WHERE +priority = '1'",
        "SELECT id, priority FROM issues WHERE priority = 1",
        "SELECT * FROM issues WHERE priority IS 1",
    ] {
        assert_ne!(shape(other).id(), a.id(), "{other}");
    }
}

// ---------------------------------------------------------------- regressions

/// `IS <value>` parsed its right side as a whole expression, so `a IS 5 AND b = 1` was
/// refused ("operator AND is not supported") and normalized texts did not re-parse.
#[test]
fn is_binds_like_a_comparison() {
    assert_eq!(
        normalized("priority IS 5 AND status = 'a'"),
        "priority IS 5 AND status = 'a'"
    );
    assert_eq!(
        normalized("priority IS NOT 5 OR status = 'a'"),
        "priority IS NOT 5 OR status = 'a'"
    );
    assert_eq!(
        normalized("status = 'a' AND priority IS 5 OR score IS NOT 1"),
        "priority IS 5 AND status = 'a' OR score IS NOT 1"
    );
    assert_eq!(
        normalized("NOT priority IS 5 AND status"),
        "priority IS NOT 5 AND status"
    );
    assert_eq!(
        normalized("priority IS DISTINCT FROM 5 AND status"),
        "priority IS NOT 5 AND status"
    );
}

/// `0x1F` is SQLite's hex integer 31, not the blob x'1F'.
#[test]
fn hex_integers_are_integers() {
    let s = shape("SELECT * FROM issues WHERE priority = 0x1F");
    assert!(s.matches(&row(Value::Null, Value::Integer(31))));
    assert!(!s.matches(&row(Value::Null, Value::Blob(vec![0x1f]))));
    assert_eq!(normalized("status = -0x10"), "status = '-16'");
    assert_eq!(
        normalized("priority = -(9223372036854775808)"),
        "priority = -9223372036854775808"
    );
    assert_eq!(
        normalized("status = -(9223372036854775808)"),
        "status = '-9223372036854775808'"
    );
}

/// SQLite renders -0.0 as '0.0'; a TEXT column compared with -0.0 sees '0.0'.
#[test]
fn negative_zero_renders_without_sign() {
    let s = shape("SELECT * FROM issues WHERE status = -0.0");
    assert!(s.matches(&row(Value::Text("0.0".into()), Value::Null)));
    let like = shape("SELECT * FROM issues WHERE score LIKE '0%'");
    let mut r = row(Value::Null, Value::Null);
    r[4] = Value::Real(-0.0);
    assert!(like.matches(&r));
}

/// A LIKE escape equal to `%` or `_` switches that wildcard off, as in SQLite.
#[test]
fn like_escape_equal_to_a_wildcard() {
    let s = shape("SELECT * FROM issues WHERE status LIKE '%' ESCAPE '%'");
    assert!(!s.matches(&row(Value::Text("anything".into()), Value::Null)));
    let s = shape("SELECT * FROM issues WHERE status NOT LIKE '%' ESCAPE '%'");
    assert!(s.matches(&row(Value::Text("anything".into()), Value::Null)));
}

/// Text led by a vertical tab still has a numeric prefix (`sqlite3Isspace`).
#[test]
fn vertical_tab_is_space_for_truth_values() {
    let s = shape("SELECT * FROM issues WHERE status IS TRUE");
    assert!(s.matches(&row(Value::Text("\u{b}1".into()), Value::Null)));
}
