//! The window language (`ORDER BY ... LIMIT n`), as tests: accepted forms and their
//! normalized text (tie-break on the primary key included), equivalent windows sharing
//! one shape, the order the compiled window sorts rows in, and every refusal with its
//! position.

use std::cmp::Ordering;

use sluice::query::{self, compile, QueryErrorKind, MAX_WINDOW_LIMIT};
use sluice::{Params, Schema, Shape, Value};

const SCHEMA: &str = "
CREATE TABLE messages(
    id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    body TEXT,
    sent_at INTEGER NOT NULL,
    score REAL,
    loose
);
";

fn schema() -> Schema {
    Schema::parse("schema.sql", SCHEMA).expect("test schema parses")
}

fn shape_with(sql: &str, params: &Params) -> Shape {
    compile(&schema(), sql, params).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn shape(sql: &str) -> Shape {
    shape_with(sql, &Params::new())
}

/// The normalized text of `sql`, checked to be a fixed point.
fn normalized(sql: &str) -> String {
    let s = shape(sql);
    let again = shape(s.text());
    assert_eq!(
        again.id(),
        s.id(),
        "{sql}: {} is not a fixed point",
        s.text()
    );
    s.text().to_string()
}

fn refused(sql: &str, params: &Params, kind: QueryErrorKind, column: u64) -> String {
    let e = compile(&schema(), sql, params).expect_err(sql);
    assert_eq!(e.kind, kind, "{sql}: {e}");
    assert_eq!((e.pos.line, e.pos.column), (1, column), "{sql}: {e}");
    e.message
}

#[test]
fn the_tie_break_and_defaults_are_spelled_out() {
    assert_eq!(
        normalized("SELECT * FROM messages WHERE room_id = 'r' ORDER BY sent_at DESC LIMIT 50"),
        "SELECT * FROM messages WHERE room_id = 'r' ORDER BY sent_at DESC, id ASC LIMIT 50"
    );
    assert_eq!(
        normalized("select * from messages order by score limit 3"),
        "SELECT * FROM messages ORDER BY score ASC, id ASC LIMIT 3"
    );
    assert_eq!(
        normalized("SELECT * FROM messages ORDER BY score DESC NULLS FIRST, loose LIMIT 3"),
        "SELECT * FROM messages ORDER BY score DESC NULLS FIRST, loose ASC, id ASC LIMIT 3"
    );
    assert_eq!(
        normalized("SELECT * FROM messages ORDER BY score NULLS LAST LIMIT 3"),
        "SELECT * FROM messages ORDER BY score ASC NULLS LAST, id ASC LIMIT 3"
    );
}

#[test]
fn equivalent_windows_share_one_shape() {
    let same = [
        "SELECT * FROM messages ORDER BY sent_at DESC LIMIT 5",
        "SELECT * FROM messages ORDER BY sent_at DESC NULLS LAST LIMIT 5",
        // A NOT NULL column has no NULLs to place.
        "SELECT * FROM messages ORDER BY sent_at DESC NULLS FIRST LIMIT 5",
        "SELECT * FROM messages ORDER BY sent_at DESC, id LIMIT 5",
        "SELECT * FROM messages ORDER BY sent_at DESC, id ASC, body LIMIT 5",
        "SELECT * FROM messages ORDER BY sent_at DESC, sent_at ASC LIMIT 5",
        "SELECT * FROM messages ORDER BY +sent_at DESC LIMIT (5)",
        "SELECT * FROM messages m ORDER BY m.sent_at DESC LIMIT 5",
    ];
    let first = shape(same[0]);
    for sql in &same[1..] {
        assert_eq!(shape(sql).id(), first.id(), "{sql}: {}", shape(sql).text());
    }
    // The primary key ends the order wherever it stands: what follows it never ties.
    assert_eq!(
        normalized("SELECT * FROM messages ORDER BY id DESC, sent_at LIMIT 5"),
        "SELECT * FROM messages ORDER BY id DESC LIMIT 5"
    );
    let other_limit = shape("SELECT * FROM messages ORDER BY sent_at DESC LIMIT 6");
    assert_ne!(other_limit.id(), first.id());
    let plain = shape("SELECT * FROM messages");
    assert!(plain.window().is_none());
    assert_eq!(first.window().map(|w| w.limit()), Some(5));
}

#[test]
fn order_and_filter_columns_join_the_projection() {
    assert_eq!(
        normalized("SELECT body FROM messages ORDER BY sent_at DESC LIMIT 5"),
        "SELECT id, body, sent_at FROM messages ORDER BY sent_at DESC, id ASC LIMIT 5"
    );
    let filtered = shape(
        "SELECT body FROM messages WHERE room_id = 'r' OR NOT score > 1 \
         ORDER BY sent_at DESC LIMIT 5",
    );
    assert_eq!(
        filtered.column_names(),
        vec!["id", "room_id", "body", "sent_at", "score"]
    );
    assert_eq!(shape(filtered.text()).id(), filtered.id());
    // A plain subscription keeps its projection.
    assert_eq!(
        normalized("SELECT body FROM messages WHERE room_id = 'r'"),
        "SELECT id, body FROM messages WHERE room_id = 'r'"
    );
}

#[test]
fn the_limit_may_be_a_parameter() {
    let sql = "SELECT * FROM messages WHERE room_id = :room ORDER BY sent_at DESC LIMIT :n";
    assert_eq!(
        query::check(&schema(), sql).unwrap(),
        "SELECT * FROM messages WHERE room_id = :room ORDER BY sent_at DESC, id ASC LIMIT :n"
    );
    let params = Params::new()
        .value("room", Value::Text("r".into()))
        .value("n", Value::Integer(20));
    let bound = shape_with(sql, &params);
    assert_eq!(bound.window().unwrap().limit(), 20);
    assert_eq!(
        bound.id(),
        shape("SELECT * FROM messages WHERE room_id = 'r' ORDER BY sent_at DESC LIMIT 20").id()
    );
    let t = query::Template::parse(&schema(), sql).unwrap();
    assert_eq!(t.parameters(), vec!["n".to_string(), "room".to_string()]);
    let room = Params::new().value("room", Value::Text("r".into()));
    for (n, kind) in [
        (Value::Integer(0), QueryErrorKind::Unsupported),
        (Value::Integer(-3), QueryErrorKind::Unsupported),
        (
            Value::Integer(MAX_WINDOW_LIMIT as i64 + 1),
            QueryErrorKind::TooComplex,
        ),
        (Value::Text("5".into()), QueryErrorKind::ParameterType),
        (Value::Real(5.0), QueryErrorKind::ParameterType),
    ] {
        let params = room.clone().value("n", n.clone());
        refused(sql, &params, kind, 74);
    }
    refused(sql, &room, QueryErrorKind::UnboundParameter, 74);
}

#[test]
fn refusals_say_where_and_why() {
    let none = Params::new();
    let cases: &[(&str, QueryErrorKind, u64, &str)] = &[
        (
            "SELECT * FROM messages ORDER BY sent_at",
            QueryErrorKind::Unsupported,
            33,
            "ORDER BY needs LIMIT",
        ),
        (
            "SELECT * FROM messages LIMIT 10",
            QueryErrorKind::Unsupported,
            30,
            "LIMIT needs ORDER BY",
        ),
        (
            "SELECT * FROM messages ORDER BY sent_at LIMIT 10 OFFSET 5",
            QueryErrorKind::Unsupported,
            57,
            "OFFSET",
        ),
        (
            "SELECT * FROM messages ORDER BY sent_at LIMIT 5, 10",
            QueryErrorKind::Unsupported,
            47,
            "OFFSET",
        ),
        (
            "SELECT * FROM messages ORDER BY sent_at LIMIT 0",
            QueryErrorKind::Unsupported,
            47,
            "positive",
        ),
        (
            "SELECT * FROM messages ORDER BY sent_at LIMIT 1.5",
            QueryErrorKind::Unsupported,
            47,
            "positive",
        ),
        (
            "SELECT * FROM messages ORDER BY sent_at LIMIT 'a'",
            QueryErrorKind::Unsupported,
            47,
            "positive integer",
        ),
        (
            "SELECT * FROM messages ORDER BY sent_at LIMIT 10001",
            QueryErrorKind::TooComplex,
            47,
            "10000",
        ),
        (
            "SELECT * FROM messages ORDER BY 2 LIMIT 5",
            QueryErrorKind::Unsupported,
            33,
            "column names",
        ),
        (
            "SELECT * FROM messages ORDER BY lower(body) LIMIT 5",
            QueryErrorKind::Unsupported,
            33,
            "column names",
        ),
        (
            "SELECT * FROM messages ORDER BY nope LIMIT 5",
            QueryErrorKind::UnknownColumn,
            33,
            "nope",
        ),
        (
            "SELECT * FROM messages ORDER BY body COLLATE NOCASE LIMIT 5",
            QueryErrorKind::Unsupported,
            33,
            "COLLATE",
        ),
    ];
    for (sql, kind, column, words) in cases {
        let m = refused(sql, &none, *kind, *column);
        assert!(m.contains(words), "{sql}: {m}");
    }
}

#[test]
fn rows_sort_as_sqlite_sorts_them() {
    let s = shape("SELECT * FROM messages ORDER BY loose DESC, score NULLS LAST LIMIT 10");
    let w = s.window().unwrap();
    let row = |id: &str, score: Value, loose: Value| {
        vec![
            Value::Text(id.into()),
            Value::Text("r".into()),
            Value::Null,
            Value::Integer(0),
            score,
            loose,
        ]
    };
    let mut rows = [
        row("a", Value::Null, Value::Null),
        row("b", Value::Real(1.5), Value::Integer(2)),
        row("c", Value::Null, Value::Real(2.0)),
        row("d", Value::Integer(1), Value::Text("x".into())),
        row("e", Value::Null, Value::Blob(vec![0])),
        row("f", Value::Integer(1), Value::Text("x".into())),
    ];
    rows.sort_by(|a, b| w.cmp_rows(a, b));
    let order: Vec<&Value> = rows.iter().map(|r| &r[0]).collect();
    let want: Vec<Value> = ["e", "d", "f", "b", "c", "a"]
        .iter()
        .map(|s| Value::Text(s.to_string()))
        .collect();
    assert_eq!(order, want.iter().collect::<Vec<_>>());
    assert_eq!(
        w.cmp_keys(&w.key(&rows[0]), &w.key(&rows[1])),
        Ordering::Less
    );
}
