//! PostgreSQL as the source of truth, through the public API: the schema created in an
//! empty database and checked in a non-empty one, rows present before the server started
//! copied, writes made straight in PostgreSQL (psql) reaching subscribers with their
//! commit LSN as sync id, client writes committed in PostgreSQL and acknowledged once
//! the replica has them, resends applied once. Each test starts its own PostgreSQL
//! (see `tests/pg/mod.rs`); without PostgreSQL installed they print `skipped`.

mod common;
mod pg;

use common::{insert_issue, start_pg_server, text, Client, WAIT};
use pg::PgCluster;
use sluice::ids::SyncId;
use sluice::server::{ServerError, ServerHandle};
use sluice::store::Mutation;
use sluice::value::Value;
use sluice::wire::WriteOutcome;

const TEAM: &str = "INSERT INTO teams (id, key, name) VALUES ('T1', 'ENG', 'Engineering');";

/// PostgreSQL for test `name`, a server in PostgreSQL mode on it (its replica in the
/// folder returned) and team T1; `None` without PostgreSQL.
async fn serving_team(name: &str) -> Option<(PgCluster, tempfile::TempDir, ServerHandle)> {
    let pg = PgCluster::start(name)?;
    let dir = tempfile::tempdir().unwrap();
    let server = start_pg_server(&dir.path().join("a.db"), &pg.url).await;
    pg.psql(TEAM);
    Some((pg, dir, server))
}

/// Client `c1` of `server`, subscribed (as 1) to every issue, its snapshot received.
async fn all_issues(server: &ServerHandle) -> Client {
    let mut client = Client::connect(server, server.cert_path().unwrap(), "c1").await;
    client.subscribe(1, "SELECT * FROM issues", None).await;
    client.until("snapshot", |c| c.sub(1).end.is_some()).await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_database_gets_the_schema_with_mapped_types() {
    let Some(pg) = PgCluster::start("ddl") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start_pg_server(&dir.path().join("a.db"), &pg.url).await;
    let types = pg.psql(
        "SELECT column_name || ':' || data_type FROM information_schema.columns \
         WHERE table_name = 'issues' ORDER BY ordinal_position",
    );
    assert!(types.contains("id:text"), "{types}");
    assert!(types.contains("priority:bigint"), "{types}");
    let real = pg.psql(
        "SELECT count(*) FROM information_schema.columns \
         WHERE table_schema = 'public' AND data_type = 'double precision'",
    );
    assert_eq!(real, "1", "the schema's one REAL column");
    let identity = pg.psql("SELECT relreplident FROM pg_class WHERE relname = 'issues'");
    assert_eq!(identity, "f", "REPLICA IDENTITY FULL");
    server.shutdown().await;
    // A second server on the same database checks the tables instead of creating them.
    let again = start_pg_server(&dir.path().join("b.db"), &pg.url).await;
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_does_not_fit_is_named_with_its_column() {
    let Some(pg) = PgCluster::start("misfit") else {
        return;
    };
    pg.psql("CREATE TABLE teams (id TEXT PRIMARY KEY, key INTEGER, name TEXT)");
    let dir = tempfile::tempdir().unwrap();
    let err = common::pg_server(&dir.path().join("a.db"), &pg.url)
        .start()
        .await
        .err()
        .expect("the server must refuse the table");
    let text = err.to_string();
    assert!(matches!(err, ServerError::Postgres(_)), "{text}");
    assert!(text.contains("teams.key"), "{text}");
    assert!(text.contains("integer"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_copied_at_start_and_psql_writes_reach_a_subscriber() {
    let Some(pg) = PgCluster::start("psql") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start_pg_server(&dir.path().join("a.db"), &pg.url).await;
    server.shutdown().await;
    pg.psql(&format!(
        "{TEAM} INSERT INTO issues (id, team_id, number, title, status, priority) VALUES \
         ('I1', 'T1', 1, 'first', 'open', 2), ('I2', 'T1', 2, 'second', 'done', 1);"
    ));
    let server = start_pg_server(&dir.path().join("b.db"), &pg.url).await;
    let ca = server.cert_path().unwrap().to_path_buf();
    let mut client = Client::connect(&server, &ca, "c1").await;
    client
        .subscribe(1, "SELECT * FROM issues WHERE status = 'open'", None)
        .await;
    client.until("snapshot", |c| c.sub(1).end.is_some()).await;
    let start = client.sub(1).end.unwrap();
    assert!(start > SyncId(0), "the sync id is the copy's LSN");
    assert_eq!(client.sub(1).rows.keys().collect::<Vec<_>>(), ["I1"]);

    pg.psql(
        "INSERT INTO issues (id, team_id, number, title, status, priority) \
         VALUES ('I3', 'T1', 3, 'third', 'open', 5)",
    );
    client
        .until("insert", |c| c.sub(1).rows.contains_key("I3"))
        .await;
    let after_insert = client.sub(1).last_sync;
    pg.psql("UPDATE issues SET status = 'open' WHERE id = 'I2'");
    client
        .until("move in", |c| c.sub(1).rows.contains_key("I2"))
        .await;
    pg.psql("BEGIN; UPDATE issues SET title = 'renamed' WHERE id = 'I1'; DELETE FROM issues WHERE id = 'I3'; COMMIT;");
    client
        .until("update and delete", |c| {
            !c.sub(1).rows.contains_key("I3")
                && c.sub(1)
                    .rows
                    .get("I1")
                    .is_some_and(|r| r.contains(&text("renamed")))
        })
        .await;
    assert!(after_insert > start && client.sub(1).last_sync > after_insert);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_writes_commit_in_postgres_once_with_the_lsn_as_sync_id() {
    let Some((pg, _dir, server)) = serving_team("writes").await else {
        return;
    };
    let mut client = all_issues(&server).await;
    client
        .write(1, vec![insert_issue("W1", "T1", "open", 3)])
        .await;
    client.until("ack", |c| c.writes.contains_key(&1)).await;
    let WriteOutcome::Committed { sync_id } = client.writes[&1].clone() else {
        panic!("rejected: {:?}", client.writes[&1]);
    };
    // The data is queued to the author before its ack (the live and control streams
    // may still arrive in either order; the client library waits for the ack's cut).
    client
        .until("the write's data", |c| {
            c.sub(1).rows.contains_key("W1") && c.sub(1).last_sync >= sync_id
        })
        .await;
    assert_eq!(
        client.sub(1).last_sync,
        sync_id,
        "the data comes under the ack's sync id"
    );
    assert_eq!(pg.psql("SELECT priority FROM issues WHERE id = 'W1'"), "3");
    let recorded = pg.psql("SELECT count(*) FROM _sluice_txns WHERE client_id LIKE '%c1'");
    assert_eq!(recorded, "1");

    // A resend of the same transaction is applied once and answered with its sync id.
    client.writes.clear();
    client
        .write(1, vec![insert_issue("W1", "T1", "open", 3)])
        .await;
    client
        .until("ack again", |c| c.writes.contains_key(&1))
        .await;
    assert_eq!(client.writes[&1], WriteOutcome::Committed { sync_id });

    // Checks run as in the embedded store: a duplicate key is refused, nothing written.
    client
        .write(2, vec![insert_issue("W1", "T1", "open", 9)])
        .await;
    client.until("reject", |c| c.writes.contains_key(&2)).await;
    assert!(
        matches!(client.writes[&2], WriteOutcome::Rejected { .. }),
        "{:?}",
        client.writes[&2]
    );
    assert_eq!(pg.psql("SELECT priority FROM issues WHERE id = 'W1'"), "3");

    // The backend's own writes go through PostgreSQL too.
    let written = common::backend_write(
        &server,
        vec![sluice::store::Mutation::Update {
            table: "issues".into(),
            key: text("W1"),
            set: vec![("priority".into(), Value::Integer(7))],
        }],
    )
    .await;
    assert!(matches!(
        written,
        sluice::store::TxnOutcome::Committed { .. }
    ));
    assert_eq!(pg.psql("SELECT priority FROM issues WHERE id = 'W1'"), "7");
    client
        .until("backend update", |c| {
            c.sub(1)
                .rows
                .get("W1")
                .is_some_and(|r| r.contains(&Value::Integer(7)))
        })
        .await;
    let _ = WAIT;
    server.shutdown().await;
}

/// Writes sent together are committed in PostgreSQL in the order they came, each
/// answered once the replica has it (the next is written while one replicates): every
/// ack carries a higher sync id than the one before, and the data is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_flight_together_commit_in_order() {
    let Some((pg, _dir, server)) = serving_team("inflight").await else {
        return;
    };
    let mut client = all_issues(&server).await;
    for seq in 1..=30u64 {
        let id = format!("F{seq:02}");
        client
            .write(seq, vec![insert_issue(&id, "T1", "open", 1)])
            .await;
    }
    client.until("30 answers", |c| c.writes.len() == 30).await;
    let mut last = SyncId(0);
    for seq in 1..=30u64 {
        let WriteOutcome::Committed { sync_id } = client.writes[&seq].clone() else {
            panic!("write {seq}: {:?}", client.writes[&seq]);
        };
        assert!(sync_id > last, "write {seq} at {sync_id}, after {last}");
        last = sync_id;
    }
    client
        .until("the rows", |c| {
            c.sub(1).rows.len() == 30 && c.sub(1).last_sync >= last
        })
        .await;
    assert_eq!(pg.psql("SELECT count(*) FROM issues"), "30");
    server.shutdown().await;
}

/// A transaction over several tables (text and integer keys) reads and locks each
/// table's rows in one statement, and writes them all in one PostgreSQL transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_over_several_tables_commits_whole() {
    let Some((pg, _dir, server)) = serving_team("several").await else {
        return;
    };
    pg.psql(
        "INSERT INTO issues (id, team_id, number, title, status, priority) VALUES \
         ('A', 'T1', 1, 'a', 'open', 1), ('B', 'T1', 2, 'b', 'open', 1), \
         ('C', 'T1', 3, 'c', 'open', 1); \
         INSERT INTO rooms (id, name) VALUES ('R1', 'general'); \
         INSERT INTO messages (id, room_id, author_id, body, sent_at) VALUES \
         (1, 'R1', 'u', 'one', 1), (2, 'R1', 'u', 'two', 2)",
    );
    let mutation = |table: &str, key: Value, set: Vec<(&str, Value)>| Mutation::Update {
        table: table.into(),
        key,
        set: set.into_iter().map(|(c, v)| (c.into(), v)).collect(),
    };
    let written = common::backend_write(
        &server,
        vec![
            mutation("issues", text("A"), vec![("priority", Value::Integer(9))]),
            mutation("issues", text("B"), vec![("status", text("done"))]),
            Mutation::Delete {
                table: "issues".into(),
                key: text("C"),
            },
            mutation(
                "messages",
                Value::Integer(2),
                vec![("body", text("edited"))],
            ),
            Mutation::Delete {
                table: "messages".into(),
                key: Value::Integer(1),
            },
            Mutation::Insert {
                table: "messages".into(),
                values: vec![
                    ("id".into(), Value::Integer(3)),
                    ("room_id".into(), text("R1")),
                    ("author_id".into(), text("u")),
                    ("body".into(), text("three")),
                    ("sent_at".into(), Value::Integer(3)),
                ],
            },
        ],
    )
    .await;
    assert!(
        matches!(written, sluice::store::TxnOutcome::Committed { .. }),
        "{written:?}"
    );
    assert_eq!(
        pg.psql("SELECT string_agg(id || ':' || status || ':' || priority, ',' ORDER BY id) FROM issues"),
        "A:open:9,B:done:1"
    );
    assert_eq!(
        pg.psql("SELECT string_agg(id || ':' || body, ',' ORDER BY id) FROM messages"),
        "2:edited,3:three"
    );
    // An update of a row that does not exist is refused as in the embedded store, and
    // nothing of its transaction is written.
    let refused = common::backend_write(
        &server,
        vec![
            mutation("issues", text("A"), vec![("priority", Value::Integer(4))]),
            mutation("messages", Value::Integer(99), vec![("body", text("x"))]),
        ],
    )
    .await;
    assert!(
        matches!(refused, sluice::store::TxnOutcome::Rejected { .. }),
        "{refused:?}"
    );
    assert_eq!(pg.psql("SELECT priority FROM issues WHERE id = 'A'"), "9");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_idempotency_records_leave_a_floor_that_refuses_old_resends() {
    let Some((pg, _dir, server)) = serving_team("prune").await else {
        return;
    };
    let ca = server.cert_path().unwrap().to_path_buf();
    let mut client = Client::connect(&server, &ca, "c1").await;
    for (seq, id) in [(1, "P1"), (2, "P2")] {
        client
            .write(seq, vec![insert_issue(id, "T1", "open", 1)])
            .await;
        client.until("ack", |c| c.writes.contains_key(&seq)).await;
        assert!(matches!(
            client.writes[&seq],
            WriteOutcome::Committed { .. }
        ));
    }
    let recorded = "SELECT count(*) FROM _sluice_txns WHERE client_id LIKE '%c1'";
    assert_eq!(pg.psql(recorded), "2");

    // Nothing is old enough and the count is within bounds: nothing goes.
    let kept = server
        .prune_outcomes(std::time::Duration::from_secs(3600), 10)
        .await
        .unwrap();
    assert_eq!(kept, 0);
    // Past the count: the oldest goes, and the floor says so.
    let pruned = server
        .prune_outcomes(std::time::Duration::from_secs(3600), 1)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(pg.psql(recorded), "1");
    assert_eq!(
        pg.psql("SELECT seq FROM _sluice_client_floors WHERE client_id LIKE '%c1'"),
        "1"
    );
    // Past the age: all of them.
    let pruned = server
        .prune_outcomes(std::time::Duration::ZERO, 10)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(pg.psql(recorded), "0");

    // A resend of a forgotten transaction is refused, never applied again.
    pg.psql("DELETE FROM issues WHERE id = 'P1'");
    client.writes.clear();
    client
        .write(1, vec![insert_issue("P1", "T1", "open", 1)])
        .await;
    client.until("answer", |c| c.writes.contains_key(&1)).await;
    assert!(
        matches!(
            &client.writes[&1],
            WriteOutcome::Rejected {
                code: sluice::vocab::RejectCode::Expired,
                ..
            }
        ),
        "{:?}",
        client.writes[&1]
    );
    assert_eq!(pg.psql("SELECT count(*) FROM issues WHERE id = 'P1'"), "0");
    // A new transaction above the floor commits as usual.
    client
        .write(3, vec![insert_issue("P3", "T1", "open", 1)])
        .await;
    client.until("ack", |c| c.writes.contains_key(&3)).await;
    assert!(matches!(client.writes[&3], WriteOutcome::Committed { .. }));
    server.shutdown().await;
}

/// A resend that PostgreSQL already holds, to a server whose replica was copied after
/// it committed (so it has no record of it), is answered at the replica's head, and the
/// author hears of an empty transaction of its own at that sync id, after everything
/// before it: its cut reaches the answer (later changes that do not reach this client
/// would not move it there), and not before its view holds the data (an answer at sync
/// id 0 would let the client drop its optimistic row while its cut was still older).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_older_than_the_replica_is_confirmed_in_order() {
    let Some((pg, dir, first)) = serving_team("older").await else {
        return;
    };
    let ca = first.cert_path().unwrap().to_path_buf();
    let mut client = Client::connect(&first, &ca, "c1").await;
    client
        .write(1, vec![insert_issue("W1", "T1", "open", 3)])
        .await;
    client.until("ack", |c| c.writes.contains_key(&1)).await;
    assert!(matches!(client.writes[&1], WriteOutcome::Committed { .. }));
    first.shutdown().await;
    // A second server on a replica copied now: the transaction came with the copy.
    let second = start_pg_server(&dir.path().join("b.db"), &pg.url).await;
    let ca = second.cert_path().unwrap().to_path_buf();
    let mut client = Client::connect(&second, &ca, "c1").await;
    client
        .subscribe(1, "SELECT * FROM issues WHERE team_id = 'T1'", None)
        .await;
    client.until_joined(1).await;
    let cut = client.sub(1).end.unwrap();
    assert!(client.sub(1).rows.contains_key("W1"));
    let heard = client.live_origins.len();
    // The head moves past the client's cut with a change it does not see.
    pg.psql("INSERT INTO teams (id, key, name) VALUES ('T9', 'OPS', 'Operations');");
    let mut other = Client::connect(&second, &ca, "c2").await;
    other.subscribe(1, "SELECT * FROM teams", None).await;
    other
        .until("the other team", |c| {
            c.sub(1).end.is_some() && c.sub(1).rows.contains_key("T9")
        })
        .await;
    client.writes.clear();
    client
        .write(1, vec![insert_issue("W1", "T1", "open", 3)])
        .await;
    client
        .until("the resend's ack", |c| c.writes.contains_key(&1))
        .await;
    let WriteOutcome::Committed { sync_id } = client.writes[&1].clone() else {
        panic!("{:?}", client.writes[&1]);
    };
    let past = other.sub(1).end.unwrap().max(other.sub(1).last_sync);
    assert!(
        sync_id >= past && sync_id > cut,
        "answered at {sync_id}: the head (past {past}), not the client's cut {cut}"
    );
    client
        .until("its own transaction at the answer's sync id", |c| {
            c.live_origins.len() > heard
        })
        .await;
    let own = Some((sluice::ids::ClientId("c1".into()), 1));
    assert_eq!(client.live_origins[heard..], [(sync_id, own)]);
    assert_eq!(
        pg.psql("SELECT count(*) FROM issues WHERE id = 'W1'"),
        "1",
        "applied once"
    );
    second.shutdown().await;
}

/// A cut that is another server's copy point, not a commit of this one (nothing was
/// committed in between), is not ahead of a server that has applied the WAL past it: the
/// welcome's head covers it (so the client library does not wait for this server) and a
/// resume from it is served at once, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_at_another_servers_copy_point_resumes() {
    let Some(pg) = PgCluster::start("copypoint") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let b = start_pg_server(&dir.path().join("b.db"), &pg.url).await;
    pg.psql(TEAM);
    let a = start_pg_server(&dir.path().join("a.db"), &pg.url).await;
    let mut client = Client::connect(&a, a.cert_path().unwrap(), "c1").await;
    client.subscribe(1, "SELECT * FROM teams", None).await;
    client.until("snapshot", |c| c.sub(1).end.is_some()).await;
    let cut = client.sub(1).end.unwrap();
    assert_eq!(client.sub(1).rows.keys().collect::<Vec<_>>(), ["T1"]);

    let mut resumed = Client::connect(&b, b.cert_path().unwrap(), "c1").await;
    let head = resumed.conn.welcome().head;
    assert!(head >= cut, "welcome head {head} below the cut {cut}");
    resumed.subscribe(1, "SELECT * FROM teams", Some(cut)).await;
    resumed
        .until("resume answered", |c| {
            c.sub(1).end.is_some() || c.sub(1).resume_refused
        })
        .await;
    assert!(!resumed.sub(1).resume_refused, "the cut {cut} was refused");
    assert!(
        resumed.sub(1).rows.is_empty(),
        "nothing changed since the cut"
    );
    a.shutdown().await;
    b.shutdown().await;
}
