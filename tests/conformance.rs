//! Conformance with SQLite's own sqllogictest suite: WHERE clauses and data taken from it
//! (kept in `tests/data/`, see `tests/data/README.md`).
//!
//! Every `clauses` entry must compile and select exactly SQLite's rows. Every `rejects` /
//! `rejects_synthetic` entry must be refused with an error (never a panic) or, when
//! accepted, select exactly SQLite's rows on every dataset. A missing file fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::Connection;
use sluice::query::{compile, QueryError};
use sluice::{Params, Schema, Shape, Value};

const DATA_FILE: &str = "sqllogictest-where.json";

/// The corpus, kept in the repository (`tests/data/README.md` says where it comes from).
fn data_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(DATA_FILE)
}

struct Suite {
    ddl: String,
    datasets: Vec<Vec<Vec<serde_json::Value>>>,
    clauses: Vec<(usize, String)>,
    rejects: Vec<String>,
}

fn load() -> Suite {
    let path = data_path();
    let text = std::fs::read_to_string(path).expect("readable conformance file");
    let json: serde_json::Value = serde_json::from_str(&text).expect("conformance file is JSON");
    let ddl = json["ddl"].as_str().expect("ddl").to_string();
    let datasets = json["datasets"]
        .as_array()
        .expect("datasets")
        .iter()
        .map(|d| {
            d["rows"]
                .as_array()
                .expect("rows")
                .iter()
                .map(|r| r.as_array().expect("row array").clone())
                .collect()
        })
        .collect();
    let clauses = json["clauses"]
        .as_array()
        .expect("clauses")
        .iter()
        .map(|c| {
            let dataset = c["dataset"].as_u64().expect("dataset index") as usize;
            (dataset, c["where"].as_str().expect("where").to_string())
        })
        .collect();
    let rejects = ["rejects", "rejects_synthetic"]
        .iter()
        .flat_map(|k| json[*k].as_array().expect("reject list").clone())
        .map(|v| v.as_str().expect("reject text").to_string())
        .collect();
    Suite {
        ddl,
        datasets,
        clauses,
        rejects,
    }
}

fn json_to_sql(v: &serde_json::Value) -> SqlValue {
    match v {
        serde_json::Value::Null => SqlValue::Null,
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().expect("finite number")),
        },
        serde_json::Value::String(s) => SqlValue::Text(s.clone()),
        other => panic!("unexpected value in dataset: {other}"),
    }
}

fn from_sql(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// One dataset loaded into SQLite, with its rows as SQLite stored them.
struct Db {
    conn: Connection,
    rows: Vec<Vec<Value>>,
}

impl Db {
    fn new(ddl: &str, rows: &[Vec<serde_json::Value>]) -> Db {
        let conn = Connection::open_in_memory().expect("in-memory SQLite");
        conn.execute_batch(ddl).expect("conformance DDL");
        for row in rows {
            let placeholders = vec!["?"; row.len()].join(", ");
            conn.execute(
                &format!("INSERT INTO items VALUES ({placeholders})"),
                rusqlite::params_from_iter(row.iter().map(json_to_sql)),
            )
            .expect("insert conformance row");
        }
        let rows = {
            let mut stmt = conn
                .prepare("SELECT * FROM items ORDER BY pk")
                .expect("select");
            let n = stmt.column_count();
            let rows = stmt
                .query_map([], |r| (0..n).map(|i| r.get_ref(i).map(from_sql)).collect())
                .expect("query");
            rows.collect::<Result<Vec<Vec<Value>>, _>>().expect("rows")
        };
        Db { conn, rows }
    }

    fn sqlite_pks(&self, clause: &str) -> Result<BTreeSet<i64>, String> {
        let sql = format!("SELECT pk FROM items WHERE {clause}");
        let mut stmt = self.conn.prepare(&sql).map_err(|e| e.to_string())?;
        let pks = stmt
            .query_map([], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        pks.collect::<Result<BTreeSet<i64>, _>>()
            .map_err(|e| e.to_string())
    }

    fn sluice_pks(&self, shape: &Shape) -> BTreeSet<i64> {
        self.rows
            .iter()
            .filter(|row| shape.matches(row))
            .map(|row| match row[0] {
                Value::Integer(pk) => pk,
                ref other => panic!("pk {other:?}"),
            })
            .collect()
    }
}

/// Compiles without letting a panic escape: a panic is reported as a failure.
fn compile_caught(schema: &Schema, clause: &str) -> Result<Result<Shape, QueryError>, String> {
    let sql = format!("SELECT * FROM items WHERE {clause}");
    catch_unwind(AssertUnwindSafe(|| compile(schema, &sql, &Params::new())))
        .map_err(|_| format!("panic while compiling: {clause}"))
}

fn setup() -> (Suite, Schema, Vec<Db>) {
    let suite = load();
    let schema = Schema::parse("items.sql", &suite.ddl).expect("conformance DDL parses");
    let dbs = suite
        .datasets
        .iter()
        .map(|rows| Db::new(&suite.ddl, rows))
        .collect();
    (suite, schema, dbs)
}

#[test]
fn sqllogictest_clauses_match_sqlite() {
    let (suite, schema, dbs) = setup();
    let mut failures = Vec::new();
    let mut decisions = 0;
    for (dataset, clause) in &suite.clauses {
        let db = &dbs[*dataset];
        let expected = db.sqlite_pks(clause).expect("SQLite accepts every clause");
        match compile_caught(&schema, clause) {
            Err(panic) => failures.push(panic),
            Ok(Err(e)) => failures.push(format!("refused: {clause}\n  error: {e} ({:?})", e.kind)),
            Ok(Ok(shape)) => {
                let got = db.sluice_pks(&shape);
                decisions += db.rows.len();
                if got != expected {
                    failures.push(format!(
                        "wrong rows (dataset {dataset}): {clause}\n  normalized: {}\n  sluice: \
                         {got:?}\n  sqlite: {expected:?}",
                        shape.text()
                    ));
                }
            }
        }
    }
    for f in failures.iter().take(20) {
        eprintln!("{f}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} clauses fail",
        failures.len(),
        suite.clauses.len()
    );
    assert!(
        !suite.clauses.is_empty(),
        "no clauses in the conformance file"
    );
    eprintln!(
        "{} clauses, {decisions} (clause, row) decisions agree",
        suite.clauses.len()
    );
}

#[test]
fn sqllogictest_rejects_are_refused_or_exact() {
    let (suite, schema, dbs) = setup();
    let mut failures = Vec::new();
    let mut accepted = 0;
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for clause in &suite.rejects {
        match compile_caught(&schema, clause) {
            Err(panic) => failures.push(panic),
            Ok(Err(e)) => {
                if e.message.trim().is_empty() {
                    failures.push(format!("refused without a message: {clause}"));
                }
                *refused.entry(format!("{:?}", e.kind)).or_default() += 1;
                eprintln!(
                    "refused {:?} at {}: {}\n  {clause}",
                    e.kind, e.pos, e.message
                );
            }
            Ok(Ok(shape)) => {
                accepted += 1;
                eprintln!("accepted: {clause}\n  normalized: {}", shape.text());
                for (i, db) in dbs.iter().enumerate() {
                    let expected = db.sqlite_pks(clause);
                    let got = db.sluice_pks(&shape);
                    if expected.as_ref() != Ok(&got) {
                        failures.push(format!(
                            "accepted with wrong rows (dataset {i}): {clause}\n  normalized: {}\n  \
                             sluice: {got:?}\n  sqlite: {expected:?}",
                            shape.text()
                        ));
                    }
                }
            }
        }
    }
    eprintln!(
        "rejects: {} total, {accepted} accepted (exact), refused by kind: {refused:?}",
        suite.rejects.len()
    );
    for f in failures.iter().take(20) {
        eprintln!("{f}");
    }
    assert!(
        failures.is_empty(),
        "{} reject entries fail",
        failures.len()
    );
    assert!(
        !suite.rejects.is_empty(),
        "no reject entries in the conformance file"
    );
}
