//! The same random subscriptions over the same random data return the same rows from a
//! server on SQLite (`--db`) and a server on PostgreSQL (`--postgres`): subscriptions keep
//! SQLite's semantics in PostgreSQL mode (the replica route). The data is written to
//! both, through the server on SQLite and, for PostgreSQL, half through the server and
//! half straight with psql; then changed again and compared again.
//! `SLUICE_PG_DIFF_SEED=N` replays one seed.

mod common;
mod pg;

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::{text, Client};
use pg::PgCluster;
use sluice::server::{Server, ServerHandle};
use sluice::store::Mutation;
use sluice::value::Value;

const ROWS: usize = 120;
const SUBSCRIPTIONS: usize = 40;

fn issue(rng: &mut StdRng, n: usize) -> Vec<(String, Value)> {
    let pick = |rng: &mut StdRng, options: &[&str]| text(options[rng.gen_range(0..options.len())]);
    let maybe = |rng: &mut StdRng, v: Value| if rng.gen_bool(0.3) { Value::Null } else { v };
    let estimate = Value::Real([0.5, 1.0, 2.0, -1.5, 3.25][rng.gen_range(0..5)]);
    let assignee = pick(rng, &["U1", "U2"]);
    let description = pick(rng, &["x", "", "Bug"]);
    vec![
        ("id".into(), text(&format!("I{n}"))),
        ("team_id".into(), pick(rng, &["T1", "T2", "t1", ""])),
        ("number".into(), Value::Integer(rng.gen_range(-3..10))),
        (
            "title".into(),
            pick(rng, &["Bug", "bug fix", "FEATURE", "50%_off", "b"]),
        ),
        (
            "status".into(),
            pick(rng, &["open", "done", "backlog", "Open"]),
        ),
        ("priority".into(), Value::Integer(rng.gen_range(-2..5))),
        ("estimate".into(), maybe(rng, estimate)),
        ("assignee_id".into(), maybe(rng, assignee)),
        ("description".into(), maybe(rng, description)),
    ]
}

fn predicate(rng: &mut StdRng) -> String {
    const TERMS: &[&str] = &[
        "status = 'open'",
        "status != 'done'",
        "status LIKE 'o%'",
        "status IN ('open', 'backlog')",
        "priority > 2",
        "priority = '3'",
        "priority BETWEEN 1 AND 3",
        "priority",
        "estimate IS NULL",
        "estimate >= 1",
        "estimate < 2.5",
        "estimate = 1",
        "assignee_id IS NOT NULL",
        "team_id = 't1'",
        "team_id < 'T2'",
        "title LIKE '%bug%'",
        "title LIKE '50\\%%' ESCAPE '\\'",
        "title GLOB 'B*'",
        "NOT (priority < 0)",
        "description IS NULL",
        "description = ''",
        "number NOT IN (1, 2, 3)",
        "number > '4'",
    ];
    let n = rng.gen_range(1..=3);
    let mut sql = String::new();
    for i in 0..n {
        if i > 0 {
            sql.push_str(if rng.gen_bool(0.5) { " AND " } else { " OR " });
        }
        let term = TERMS[rng.gen_range(0..TERMS.len())];
        if rng.gen_bool(0.2) {
            sql.push_str(&format!("NOT ({term})"));
        } else {
            sql.push_str(term);
        }
    }
    format!("SELECT * FROM issues WHERE {sql}")
}

async fn server(dir: &std::path::Path, postgres: Option<&str>) -> ServerHandle {
    let name = if postgres.is_some() {
        "replica.db"
    } else {
        "app.db"
    };
    let mut builder = Server::builder(common::schema_dir(), dir.join(name))
        .listen("127.0.0.1:0".parse().unwrap())
        .no_auth();
    if let Some(url) = postgres {
        builder = builder.postgres(url);
    }
    builder.start().await.unwrap()
}

/// The rows of each subscription, as a fresh snapshot.
async fn snapshots(server: &ServerHandle, subs: &[String]) -> Vec<BTreeMap<String, Vec<Value>>> {
    let ca = server.cert_path().unwrap().to_path_buf();
    let mut client = Client::connect(server, &ca, "differential").await;
    for (i, sql) in subs.iter().enumerate() {
        client.subscribe(i as u64 + 1, sql, None).await;
    }
    client
        .until("snapshots", |c| {
            (1..=subs.len() as u64).all(|i| c.sub(i).end.is_some() || c.sub(i).failed.is_some())
        })
        .await;
    (1..=subs.len() as u64)
        .map(|i| {
            assert_eq!(client.sub(i).failed, None, "{}", subs[i as usize - 1]);
            client.sub(i).rows.clone()
        })
        .collect()
}

fn literal(v: &Value) -> String {
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_return_the_same_rows_on_sqlite_and_on_postgres() {
    let Some(pg) = PgCluster::start("diff") else {
        return;
    };
    let seed: u64 = std::env::var("SLUICE_PG_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("SLUICE_PG_DIFF_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sqlite = server(dir_a.path(), None).await;
    let postgres = server(dir_b.path(), Some(&pg.url)).await;

    for n in 0..ROWS {
        let values = issue(&mut rng, n);
        let insert = Mutation::Insert {
            table: "issues".into(),
            values: values.clone(),
        };
        common::write_committed(&sqlite, vec![insert.clone()]).await;
        if n % 2 == 0 {
            common::write_committed(&postgres, vec![insert]).await;
        } else {
            let (cols, vals): (Vec<_>, Vec<_>) =
                values.iter().map(|(c, v)| (c.clone(), literal(v))).unzip();
            pg.psql(&format!(
                "INSERT INTO issues ({}) VALUES ({})",
                cols.join(", "),
                vals.join(", ")
            ));
        }
    }
    let subs: Vec<String> = (0..SUBSCRIPTIONS).map(|_| predicate(&mut rng)).collect();
    compare(&sqlite, &postgres, &subs).await;

    // Changes: updates and deletes, through the server or with psql.
    for _ in 0..ROWS / 2 {
        let n = rng.gen_range(0..ROWS);
        let key = text(&format!("I{n}"));
        let change = if rng.gen_bool(0.25) {
            Mutation::Delete {
                table: "issues".into(),
                key,
            }
        } else {
            let mut values = issue(&mut rng, n);
            values.retain(|(c, _)| c != "id" && (c == "status" || rand::random::<bool>()));
            Mutation::Update {
                table: "issues".into(),
                key,
                set: values,
            }
        };
        let on_sqlite = common::backend_write(&sqlite, vec![change.clone()]).await;
        let committed = matches!(on_sqlite, sluice::store::TxnOutcome::Committed { .. });
        if rng.gen_bool(0.5) || !committed {
            let on_pg = common::backend_write(&postgres, vec![change]).await;
            assert_eq!(
                committed,
                matches!(on_pg, sluice::store::TxnOutcome::Committed { .. }),
                "{on_sqlite:?} vs {on_pg:?}"
            );
        } else {
            match change {
                Mutation::Delete { key, .. } => {
                    pg.psql(&format!("DELETE FROM issues WHERE id = {}", literal(&key)));
                }
                Mutation::Update { key, set, .. } => {
                    let sets: Vec<String> = set
                        .iter()
                        .map(|(c, v)| format!("{c} = {}", literal(v)))
                        .collect();
                    pg.psql(&format!(
                        "UPDATE issues SET {} WHERE id = {}",
                        sets.join(", "),
                        literal(&key)
                    ));
                }
                _ => unreachable!("only updates and deletes"),
            }
        }
    }
    // psql's writes reach the replica through the stream: wait until it has them.
    let expected = snapshots(&sqlite, &["SELECT * FROM issues".to_string()]).await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let got = snapshots(&postgres, &["SELECT * FROM issues".to_string()]).await;
        if got == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica never converged (seed {seed})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let subs: Vec<String> = (0..SUBSCRIPTIONS).map(|_| predicate(&mut rng)).collect();
    compare(&sqlite, &postgres, &subs).await;
    sqlite.shutdown().await;
    postgres.shutdown().await;
}

async fn compare(sqlite: &ServerHandle, postgres: &ServerHandle, subs: &[String]) {
    let expected = snapshots(sqlite, subs).await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let got = snapshots(postgres, subs).await;
        let differ: Vec<&String> = subs
            .iter()
            .zip(expected.iter().zip(&got))
            .filter(|(_, (e, g))| e != g)
            .map(|(s, _)| s)
            .collect();
        if differ.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "different rows for {differ:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
