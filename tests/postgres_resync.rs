//! A server in PostgreSQL mode outlives its PostgreSQL connections: when the replication
//! stream is lost (connections terminated, PostgreSQL restarted) it makes a new slot,
//! compares its replica with the slot's snapshot, sends what changed meanwhile as one
//! transaction, and streams on. Its clients stay connected and end with exactly
//! PostgreSQL's rows, nothing doubled; writes are answered `unavailable` while it
//! resynchronises and commit again afterwards. A server started again on the replica it
//! kept resynchronises it the same way, and its clients resume from their cuts. Each test starts its own PostgreSQL (see
//! `tests/pg/mod.rs`); without PostgreSQL installed they print `skipped`.

mod common;
mod pg;

use std::time::Duration;

use common::{insert_issue, start_pg_server, text, Client, WAIT};
use pg::PgCluster;
use sluice::server::ServerHandle;
use sluice::vocab::RejectCode;
use sluice::wire::WriteOutcome;

const OPEN: &str = "SELECT * FROM issues WHERE status = 'open'";

/// Sends write `seq` until it commits: `unavailable` (the server is resynchronising)
/// is retried with the same sequence number, as the client library does.
async fn write_until_committed(client: &mut Client, seq: u64, id: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        client.writes.remove(&seq);
        client
            .write(seq, vec![insert_issue(id, "T1", "open", 1)])
            .await;
        client
            .until("write answer", |c| c.writes.contains_key(&seq))
            .await;
        match &client.writes[&seq] {
            WriteOutcome::Committed { .. } => return,
            WriteOutcome::Rejected {
                code: RejectCode::Unavailable,
                ..
            } if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("write {seq} answered {other:?}"),
        }
    }
}

/// The open issues' ids in PostgreSQL and on the client must be the same.
fn assert_same_rows(pg: &PgCluster, client: &Client) {
    let on_client: Vec<&str> = client.sub(1).rows.keys().map(String::as_str).collect();
    assert_eq!(on_client.join(","), open_in_pg(pg));
}

const FIRST_ROWS: &str = "INSERT INTO teams (id, key, name) VALUES ('T1', 'ENG', 'Engineering'); \
     INSERT INTO issues (id, team_id, number, title, status, priority) VALUES \
     ('I1', 'T1', 1, 'first', 'open', 2), ('I2', 'T1', 2, 'second', 'open', 1)";

/// A server on `replica` and client `c1` subscribed to [`OPEN`], which has received
/// [`FIRST_ROWS`], written in PostgreSQL after its snapshot.
async fn serve_first_rows(pg: &PgCluster, replica: &std::path::Path) -> (ServerHandle, Client) {
    let server = start_pg_server(replica, &pg.url).await;
    let ca = server.cert_path().unwrap().to_path_buf();
    let mut client = Client::connect(&server, &ca, "c1").await;
    client.subscribe(1, OPEN, None).await;
    client.until("snapshot", |c| c.sub(1).end.is_some()).await;
    pg.psql(FIRST_ROWS);
    client
        .until("the first rows", |c| c.sub(1).rows.len() == 2)
        .await;
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_and_a_restart_are_resynchronised_without_losing_a_change() {
    let Some(pg) = PgCluster::start("resync") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (server, mut client) = serve_first_rows(&pg, &dir.path().join("a.db")).await;

    // The connections drop; what is committed meanwhile arrives all the same.
    pg.terminate_connections();
    pg.psql(
        "BEGIN; \
         INSERT INTO issues (id, team_id, number, title, status, priority) \
         VALUES ('I3', 'T1', 3, 'third', 'open', 5); \
         UPDATE issues SET title = 'renamed' WHERE id = 'I1'; \
         UPDATE issues SET status = 'done' WHERE id = 'I2'; \
         COMMIT",
    );
    client
        .until("the changes made while the stream was lost", |c| {
            let rows = &c.sub(1).rows;
            rows.len() == 2
                && rows.contains_key("I3")
                && rows.get("I1").is_some_and(|r| r.contains(&text("renamed")))
        })
        .await;
    write_until_committed(&mut client, 1, "W1").await;
    client
        .until("the client's write", |c| c.sub(1).rows.contains_key("W1"))
        .await;
    assert_same_rows(&pg, &client);

    // PostgreSQL restarts (its temporary slots are gone); the server comes back to it.
    if pg.restart() {
        pg.psql(
            "UPDATE issues SET title = 'after the restart' WHERE id = 'I3'; \
             DELETE FROM issues WHERE id = 'W1'",
        );
        client
            .until("the changes made around the restart", |c| {
                let rows = &c.sub(1).rows;
                !rows.contains_key("W1")
                    && rows
                        .get("I3")
                        .is_some_and(|r| r.contains(&text("after the restart")))
            })
            .await;
        write_until_committed(&mut client, 2, "W2").await;
        client
            .until("the client's write after the restart", |c| {
                c.sub(1).rows.contains_key("W2")
            })
            .await;
        pg.psql("UPDATE issues SET priority = 9 WHERE id = 'W2'");
        client
            .until("a change streamed after the restart", |c| {
                c.sub(1)
                    .rows
                    .get("W2")
                    .is_some_and(|r| r.contains(&sluice::value::Value::Integer(9)))
            })
            .await;
    }
    assert_same_rows(&pg, &client);
    // Nothing was sent twice: every row was inserted on the client once.
    for (key, inserts) in &client.sub(1).inserts_seen {
        assert_eq!(*inserts, 1, "{key} inserted {inserts} times");
    }
    assert!(client.closed.is_none(), "the client stayed connected");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_replica_is_resynchronised_at_start_and_clients_resume_from_their_cuts() {
    let Some(pg) = PgCluster::start("kept") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("kept.db");
    let (server, client) = serve_first_rows(&pg, &replica).await;
    let cut = client.sub(1).last_sync;
    let before: Vec<String> = client.sub(1).rows.keys().cloned().collect();
    server.shutdown().await;

    // While the server is down, PostgreSQL moves on.
    pg.psql(
        "INSERT INTO issues (id, team_id, number, title, status, priority) \
         VALUES ('I3', 'T1', 3, 'third', 'open', 5); \
         UPDATE issues SET title = 'while down' WHERE id = 'I1'; \
         DELETE FROM issues WHERE id = 'I2'",
    );
    let server = start_pg_server(&replica, &pg.url).await;
    let ca = server.cert_path().unwrap().to_path_buf();
    let mut resumed = Client::connect(&server, &ca, "c1").await;
    resumed.subscribe(1, OPEN, Some(cut)).await;
    resumed
        .until("resumed", |c| {
            c.sub(1).end.is_some() || c.sub(1).resume_refused
        })
        .await;
    assert!(
        !resumed.sub(1).resume_refused,
        "the kept replica's log serves the old cut"
    );
    // Only what changed since the cut came, as changes: no snapshot of the rest.
    let sent: Vec<&str> = resumed.sub(1).rows.keys().map(String::as_str).collect();
    assert_eq!(sent, ["I1", "I3"], "the update and the insert");
    assert!(
        !resumed.sub(1).inserts_seen.contains_key("I1"),
        "I1 came as an update"
    );
    let mut rows = before;
    rows.retain(|k| k != "I2");
    rows.push("I3".into());
    rows.sort();
    assert_eq!(open_in_pg(&pg), rows.join(","));
    assert!(resumed.sub(1).rows["I1"].contains(&text("while down")));

    // And the stream goes on.
    pg.psql("UPDATE issues SET priority = 8 WHERE id = 'I3'");
    resumed
        .until("a change streamed after the start", |c| {
            c.sub(1)
                .rows
                .get("I3")
                .is_some_and(|r| r.contains(&sluice::value::Value::Integer(8)))
        })
        .await;
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'sluice_%'"),
        "1",
        "the first run's slot went with it"
    );
    server.shutdown().await;
}

/// The open issues' ids in PostgreSQL, comma-separated.
fn open_in_pg(pg: &PgCluster) -> String {
    pg.psql("SELECT string_agg(id, ',' ORDER BY id) FROM issues WHERE status = 'open'")
}

/// Waits for the answer to `resumed`'s resume of subscription 1, which must be a
/// refusal (no replay), then checks that a fresh snapshot (subscription 2) holds exactly
/// PostgreSQL's open issues; returns them.
async fn assert_refused_then_fresh(pg: &PgCluster, resumed: &mut Client, why: &str) -> String {
    resumed
        .until("resume answered", |c| {
            c.sub(1).end.is_some() || c.sub(1).resume_refused
        })
        .await;
    assert!(
        resumed.sub(1).resume_refused && resumed.sub(1).end.is_none(),
        "{why}: answered {:?}",
        resumed.sub(1).end
    );
    resumed.subscribe(2, OPEN, None).await;
    resumed.until("snapshot", |c| c.sub(2).end.is_some()).await;
    let rows: Vec<&str> = resumed.sub(2).rows.keys().map(String::as_str).collect();
    let rows = rows.join(",");
    assert_eq!(rows, open_in_pg(pg));
    rows
}

const INSERT_I3: &str = "INSERT INTO issues (id, team_id, number, title, status, priority) \
     VALUES ('I3', 'T1', 3, 'came and went', 'open', 5)";

/// A client saw I3 come through server A; I3 was deleted while it was away; server B,
/// whose replica stopped before I3, resynchronised past both. B's log holds one diff
/// from its old head, with nothing about I3: a resume from the client's cut (inside that
/// gap) would leave I3 on the client for ever. B refuses it; a fresh snapshot is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_inside_a_resynchronisation_gap_is_not_resumed() {
    let Some(pg) = PgCluster::start("gap") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let b_replica = dir.path().join("b.db");
    let (b, b_client) = serve_first_rows(&pg, &b_replica).await;
    let b_head = b_client.sub(1).last_sync;
    drop(b_client);
    b.shutdown().await;

    let a = start_pg_server(&dir.path().join("a.db"), &pg.url).await;
    let mut client = Client::connect(&a, a.cert_path().unwrap(), "c1").await;
    client.subscribe(1, OPEN, None).await;
    client.until("snapshot", |c| c.sub(1).end.is_some()).await;
    pg.psql(INSERT_I3);
    client
        .until("I3", |c| c.sub(1).rows.contains_key("I3"))
        .await;
    let cut = client.sub(1).last_sync;
    assert!(
        cut > b_head,
        "the client's cut {cut} is past B's head {b_head}"
    );
    drop(client);
    pg.psql("DELETE FROM issues WHERE id = 'I3'");

    let b = start_pg_server(&b_replica, &pg.url).await;
    let mut resumed = Client::connect(&b, b.cert_path().unwrap(), "c1").await;
    resumed.subscribe(1, OPEN, Some(cut)).await;
    let why = "a cut inside the resynchronisation's gap is refused, not replayed";
    let rows = assert_refused_then_fresh(&pg, &mut resumed, why).await;
    assert!(!rows.contains("I3"), "{rows}");
    let metrics = b.metrics();
    assert!(
        metrics.contains("sluice_resume_refusals_total{reason=\"compacted\"} 1"),
        "{metrics}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Server B loses PostgreSQL (its role is locked out) while server A streams on; a client
/// that saw I3 through A resumes on B, which is behind its cut. B must not answer from
/// behind: it waits for its replica, which comes back through a resynchronisation past
/// I3's delete, and refuses the cut inside that gap. Its own client, live through all of
/// it, ends with PostgreSQL's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_past_a_lagging_server_is_not_answered_from_behind() {
    if std::env::var("SLUICE_TEST_POSTGRES_URL").is_ok() {
        println!("skipped: locks a role of its own out of the cluster it started");
        return;
    }
    let Some(pg) = PgCluster::start("ahead") else {
        return;
    };
    pg.psql("CREATE ROLE lagging LOGIN SUPERUSER REPLICATION");
    let lagging_url = pg.url.replacen("://postgres@", "://lagging@", 1);
    assert_ne!(lagging_url, pg.url);
    let dir = tempfile::tempdir().unwrap();
    let (a, mut client) = serve_first_rows(&pg, &dir.path().join("a.db")).await;
    let b = start_pg_server(&dir.path().join("b.db"), &lagging_url).await;
    let mut live = Client::connect(&b, b.cert_path().unwrap(), "live").await;
    live.subscribe(1, OPEN, None).await;
    live.until("B's snapshot", |c| c.sub(1).end.is_some()).await;
    let b_head = live.sub(1).end.unwrap();

    pg.psql(
        "ALTER ROLE lagging NOLOGIN; \
         SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'lagging'",
    );
    pg.psql(INSERT_I3);
    client
        .until("I3 through A", |c| c.sub(1).rows.contains_key("I3"))
        .await;
    let cut = client.sub(1).last_sync;
    assert!(
        cut > b_head,
        "the client's cut {cut} is past B's head {b_head}"
    );

    let mut resumed = Client::connect(&b, b.cert_path().unwrap(), "c1").await;
    resumed.subscribe(1, OPEN, Some(cut)).await;
    pg.psql("DELETE FROM issues WHERE id = 'I3'");
    pg.psql("ALTER ROLE lagging LOGIN");
    let why = "a cut past B's head is not answered from behind it";
    let expected = assert_refused_then_fresh(&pg, &mut resumed, why).await;
    live.until("B's live client converged", |c| {
        c.sub(1).rows.keys().cloned().collect::<Vec<_>>().join(",") == expected
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}
