//! PostgreSQL mode: a transaction too large to hold in memory (more changes than
//! `StoreOptions::replicated_changes_in_memory`, here 50) is applied to the replica in
//! parts and logged, not fanned out change by change. The sessions its rows reach are
//! cut off and resume from the log; the app sees the whole transaction at
//! once (never a part of it), sessions its rows do not reach are not disturbed, a client
//! transaction of that size keeps its optimistic rows until it is confirmed, and small
//! transactions afterwards are delivered live as before. Each test starts its own
//! PostgreSQL (see `tests/pg/mod.rs`); without PostgreSQL installed it prints `skipped`.

mod common;
mod pg;

use std::time::Duration;

use common::client::{client_of, committed, eventually, ids, subscribed};
use common::{text, WAIT};
use pg::PgCluster;
use sluice::client::Client;
use sluice::server::ServerHandle;
use sluice::store::StoreOptions;
use sluice::value::Value;

const FOLLOWED: &str = "SELECT * FROM issues WHERE team_id = 'T1'";

fn count(client: &Client, sql: &str) -> i64 {
    match client.query(sql, &[]).unwrap()[0][0] {
        Value::Integer(n) => n,
        ref other => panic!("count {other:?}"),
    }
}

fn cutoffs(server: &ServerHandle) -> u64 {
    let metrics = server.metrics();
    metrics
        .lines()
        .find(|l| l.starts_with("sluice_session_cutoffs_total{reason=\"oversized\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Runs `sql` (one PostgreSQL transaction) while reading `count_sql` on `client` every
/// millisecond until it reads `after`: every read must be `before` or `after`.
async fn whole(
    pg: &PgCluster,
    client: &Client,
    count_sql: &str,
    sql: &str,
    before: i64,
    after: i64,
) {
    let (url, sql) = (pg.url.clone(), sql.to_string());
    let writing = tokio::task::spawn_blocking(move || pg::psql(&url, &sql));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = count(client, count_sql);
        assert!(
            n == before || n == after,
            "part of a transaction: {n} rows ({before} before, {after} after)"
        );
        if n == after {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {after} rows"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    writing.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_too_large_to_hold_reaches_its_followers_whole_through_the_log() {
    let Some(pg) = PgCluster::start("large_txn") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = common::pg_server(&dir.path().join("replica.db"), &pg.url)
        .store_options(StoreOptions::default().replicated_changes_in_memory(50))
        .start()
        .await
        .unwrap();
    pg.psql("INSERT INTO teams (id, key, name) VALUES ('T1', 'ENG', 'Engineering'), ('T2', 'OPS', 'Operations')");
    let follower = client_of(&server, &dir.path().join("follower.db")).await;
    subscribed(&follower, FOLLOWED).await;
    // Follows the same table, but none of the rows the large transactions touch.
    let other_team = client_of(&server, &dir.path().join("other.db")).await;
    subscribed(&other_team, "SELECT * FROM issues WHERE team_id = 'T2'").await;
    let bystander = client_of(&server, &dir.path().join("bystander.db")).await;
    subscribed(&bystander, "SELECT * FROM teams").await;
    eventually("the team", || {
        ids(&bystander, "SELECT id FROM teams ORDER BY id") == ["T1", "T2"]
    })
    .await;
    let all = "SELECT count(*) FROM issues";

    // 500 inserts in one transaction: applied in parts, and seen whole.
    whole(
        &pg,
        &follower,
        all,
        "INSERT INTO issues (id, team_id, number, title, status, priority) \
         SELECT 'b' || i, 'T1', i, 'bulk', 'open', 1 FROM generate_series(1, 500) i",
        0,
        500,
    )
    .await;
    assert_eq!(
        cutoffs(&server),
        1,
        "only the follower of the rows was cut off, not the other team's"
    );

    // 500 updates, then a truncate: each seen whole.
    let done = "SELECT count(*) FROM issues WHERE status = 'done'";
    whole(
        &pg,
        &follower,
        done,
        "UPDATE issues SET status = 'done'",
        0,
        500,
    )
    .await;
    whole(&pg, &follower, all, "TRUNCATE issues", 500, 0).await;
    assert_eq!(cutoffs(&server), 3);

    // The bystander (teams only) stayed connected and still gets changes live.
    pg.psql("UPDATE teams SET name = 'Platform' WHERE id = 'T1'");
    eventually("the team's new name", || {
        ids(&bystander, "SELECT name FROM teams WHERE id = 'T1'") == ["Platform"]
    })
    .await;

    // A client transaction of 60 rows: spilled too; its optimistic rows never leave the
    // view, and it is confirmed.
    let mut txn = follower.transaction();
    for i in 0..60 {
        txn = txn.insert(
            "issues",
            vec![
                ("id", text(&format!("c{i:02}"))),
                ("team_id", text("T1")),
                ("number", Value::Integer(i)),
                ("title", text("from the client")),
                ("status", text("todo")),
            ],
        );
    }
    let write = txn.commit().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while follower.pending_writes() > 0 {
        assert_eq!(count(&follower, all), 60, "an optimistic row left the view");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the write is confirmed in time"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    committed(write).await;
    assert_eq!(count(&follower, all), 60);
    assert_eq!(
        pg.psql("SELECT count(*) FROM issues WHERE id LIKE 'c%'"),
        "60"
    );
    assert_eq!(cutoffs(&server), 4);

    // Small transactions are fanned out live again, with no cut-off; the other team's
    // follower was never cut off and hears of its first row.
    pg.psql(
        "INSERT INTO issues (id, team_id, number, title, status, priority) \
         VALUES ('t2', 'T2', 1, 'other team', 'open', 1)",
    );
    eventually("the other team's row", || {
        ids(&other_team, "SELECT id FROM issues") == ["t2"]
    })
    .await;
    pg.psql(
        "INSERT INTO issues (id, team_id, number, title, status, priority) \
         VALUES ('small', 'T1', 1, 'one row', 'open', 1)",
    );
    eventually("the small insert", || count(&follower, all) == 61).await;
    assert_eq!(cutoffs(&server), 4);
    follower.close().await;
    other_team.close().await;
    bystander.close().await;
    server.shutdown().await;
}
