//! The size limits of the subscription language, as regression tests for the attacks
//! that once crashed a server: each oversized subscription is refused through the public
//! API (`query::compile` and `query::check`), with a short error, on a thread whose stack
//! is only 256 KiB (a recursion per term or per level would overflow it long before the
//! sizes used here). A subscription right at each limit is still accepted (on a larger
//! stack, see [`AT_LIMIT_STACK`]).

use sluice::query::{
    self, compile, QueryError, QueryErrorKind, MAX_DEPTH, MAX_IN_LIST, MAX_PATTERN_BYTES,
    MAX_SUBSCRIPTION_BYTES, MAX_TERMS,
};
use sluice::{Params, Schema, Value};

const SCHEMA: &str = "
CREATE TABLE issues(
    id INTEGER PRIMARY KEY,
    team_id TEXT,
    title TEXT,
    priority INTEGER
);
";

/// A stack far smaller than a worker thread's, so that recursion on input size shows.
const SMALL_STACK: usize = 256 * 1024;

/// The stack the at-limit subscriptions compile on: half of a tokio worker's 2 MiB.
/// sqlparser recurses once per parenthesis or NOT, several KiB each, so a subscription
/// nested `MAX_DEPTH` deep needs more than [`SMALL_STACK`] (about 0.5 MiB when measured).
const AT_LIMIT_STACK: usize = 1024 * 1024;

fn schema() -> Schema {
    Schema::parse("schema.sql", SCHEMA).expect("test schema parses")
}

/// Runs `f` on a thread with a [`SMALL_STACK`]; a stack overflow aborts the test binary.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("the worker finished")
}

/// `compile` and `check` of `sql` on a small stack: both must refuse it as too complex,
/// with a short message. Returns the compile error.
fn refused(sql: String, params: Params) -> QueryError {
    on_small_stack(move || {
        let schema = schema();
        let e = compile(&schema, &sql, &params).expect_err("refused");
        assert_eq!(e.kind, QueryErrorKind::TooComplex, "{e}");
        assert!(e.to_string().len() < 300, "long error: {e}");
        if params == Params::new() {
            let checked = query::check(&schema, &sql).expect_err("check refuses too");
            assert_eq!(checked, e);
        }
        e
    })
}

/// `compile` of `sql` succeeds on a thread with an [`AT_LIMIT_STACK`].
fn accepted(sql: String, params: Params) -> sluice::Shape {
    std::thread::Builder::new()
        .stack_size(AT_LIMIT_STACK)
        .spawn(move || compile(&schema(), &sql, &params).unwrap_or_else(|e| panic!("refused: {e}")))
        .expect("spawn")
        .join()
        .expect("the worker finished")
}

fn where_clause(pred: &str) -> String {
    format!("SELECT * FROM issues WHERE {pred}")
}

fn or_chain(terms: usize) -> String {
    let terms: Vec<String> = (0..terms).map(|i| format!("priority = {i}")).collect();
    where_clause(&terms.join(" OR "))
}

#[test]
fn an_or_chain_of_60000_terms_is_refused_by_its_length() {
    let sql = or_chain(60_000);
    assert!(sql.len() > 700_000);
    let e = refused(sql, Params::new());
    assert!(e.message.contains("bytes"), "{e}");
}

#[test]
fn an_or_chain_of_3000_terms_is_refused_by_its_term_count() {
    let sql = or_chain(3_000);
    assert!(sql.len() < MAX_SUBSCRIPTION_BYTES);
    let e = refused(sql, Params::new());
    assert!(e.message.contains("terms"), "{e}");
    assert!(e.pos.column > 1, "points at the term past the limit: {e}");
}

#[test]
fn deep_parentheses_and_not_chains_are_refused_by_their_depth() {
    let parens = where_clause(&format!(
        "{}priority = 1{}",
        "(".repeat(10_000),
        ")".repeat(10_000)
    ));
    assert!(refused(parens, Params::new()).message.contains("nested"));
    let nots = where_clause(&format!("{}priority = 1", "NOT ".repeat(10_000)));
    assert!(refused(nots, Params::new()).message.contains("nested"));
}

#[test]
fn huge_in_lists_are_refused_written_out_or_bound() {
    // 1.5 million values in the text: refused by the text's length alone.
    let values: Vec<String> = (0..1_500_000).map(|i| i.to_string()).collect();
    let sql = where_clause(&format!("priority IN ({})", values.join(",")));
    assert!(refused(sql, Params::new()).message.contains("bytes"));
    // A list short enough in bytes but longer than the limit: refused on the tokens.
    let sql = where_clause(&format!("priority IN ({})", vec!["1"; 5_000].join(",")));
    assert!(sql.len() < MAX_SUBSCRIPTION_BYTES);
    assert!(refused(sql, Params::new()).message.contains("IN list"));
    // 1.5 million values bound to `IN :ids`: refused before any value is converted.
    let list: Vec<Value> = (0..1_500_000).map(Value::Integer).collect();
    let params = Params::new().list("ids", list);
    let e = refused(where_clause("priority IN :ids"), params);
    assert!(e.message.contains("1500000"), "{e}");
}

#[test]
fn a_like_pattern_of_many_wildcards_evaluates_on_a_long_title() {
    // The fan-out attack: a `%a%a…` subscription and a 30,000-character title in the
    // same team. Evaluation must not recurse per `%`.
    let pattern = "%a".repeat(300) + "%";
    let shape = accepted(
        where_clause(&format!("title LIKE '{pattern}'")),
        Params::new(),
    );
    let (matching, missing) = on_small_stack(move || {
        let row = |title: String| {
            vec![
                Value::Integer(1),
                Value::Text("T1".into()),
                Value::Text(title),
                Value::Integer(0),
            ]
        };
        let long = "ba".repeat(15_000);
        let without = "b".repeat(30_000);
        (shape.matches(&row(long)), shape.matches(&row(without)))
    });
    assert!(matching);
    assert!(!missing);
}

#[test]
fn patterns_past_the_limit_are_refused_literal_or_bound() {
    let long = "%".repeat(MAX_PATTERN_BYTES + 1);
    let e = refused(where_clause(&format!("title LIKE '{long}'")), Params::new());
    assert!(e.pos.column > 1, "points at the pattern: {e}");
    let e = refused(where_clause(&format!("title GLOB '{long}'")), Params::new());
    assert!(e.message.contains("pattern"), "{e}");
    let params = Params::new().value("p", Value::Text(long));
    let e = refused(where_clause("title LIKE :p"), params);
    assert!(e.message.contains("pattern"), "{e}");
}

#[test]
fn errors_never_echo_much_of_the_input() {
    let schema = schema();
    let name = "x".repeat(60_000);
    let cases = [
        where_clause(&format!("{name} = 1")),
        format!("SELECT * FROM {name}"),
        where_clause(&format!("priority = 1 '{name}'")),
        where_clause(&format!("priority = :{name}")),
        where_clause(&format!("{name}(priority) = 1")),
        where_clause(&format!("priority = 0x{}", "F".repeat(30_000))),
    ];
    for sql in cases {
        let e = compile(&schema, &sql, &Params::new()).expect_err("refused");
        assert!(e.to_string().len() < 300, "long error: {e}");
    }
}

#[test]
fn a_chain_of_exactly_max_terms_is_accepted() {
    let terms = accepted(or_chain(MAX_TERMS), Params::new());
    assert_eq!(terms.filter().leaves().len(), MAX_TERMS);
}

#[test]
fn a_text_of_exactly_max_bytes_is_accepted() {
    let mut sql = where_clause("priority = 1");
    sql.push_str(&" ".repeat(MAX_SUBSCRIPTION_BYTES - sql.len()));
    assert_eq!(sql.len(), MAX_SUBSCRIPTION_BYTES);
    accepted(sql, Params::new());
}

#[test]
fn parentheses_exactly_max_depth_deep_are_accepted() {
    let parens = where_clause(&format!(
        "{}priority = 1{}",
        "(".repeat(MAX_DEPTH),
        ")".repeat(MAX_DEPTH)
    ));
    accepted(parens, Params::new());
}

#[test]
fn a_not_chain_exactly_max_depth_deep_is_accepted() {
    let nots = where_clause(&format!("{}priority = 1", "NOT ".repeat(MAX_DEPTH)));
    accepted(nots, Params::new());
}

#[test]
fn in_lists_of_exactly_max_values_are_accepted() {
    let values: Vec<String> = (0..MAX_IN_LIST).map(|i| i.to_string()).collect();
    let listed = accepted(
        where_clause(&format!("priority IN ({})", values.join(","))),
        Params::new(),
    );
    assert!(listed.matches(&[
        Value::Integer(1),
        Value::Null,
        Value::Null,
        Value::Integer(999)
    ]));
    let list: Vec<Value> = (0..MAX_IN_LIST as i64).map(Value::Integer).collect();
    accepted(
        where_clause("priority IN :ids"),
        Params::new().list("ids", list),
    );
}

#[test]
fn patterns_of_exactly_max_bytes_are_accepted() {
    let pattern = "%".repeat(MAX_PATTERN_BYTES);
    accepted(
        where_clause(&format!("title LIKE '{pattern}'")),
        Params::new(),
    );
    accepted(
        where_clause("title GLOB :p"),
        Params::new().value("p", Value::Text("*".repeat(MAX_PATTERN_BYTES))),
    );
}
