//! The client library against a real server over QUIC: local reads offline, optimistic
//! writes with rollback and rebase, the outbox across restarts, coverage, convergence,
//! the consistent cut, schema changes and connection migration.

mod common;

use std::path::Path;

use common::client::{client_at, client_of, committed, eventually, ids, restart_on, subscribed};
use common::{backend_write, insert_issue, schema_dir, set_issue, text, TestServer, WAIT};
use sluice::client::{Client, ClientConfig, ConnectionState, Interest, Source};
use sluice::query::Params;
use sluice::server::Server;
use sluice::value::Value;
use sluice::wire::WriteOutcome;

const OPEN_T1: &str = "SELECT * FROM issues WHERE team_id = 'T1' AND status != 'done'";

#[tokio::test]
async fn subscription_rows_arrive_and_stay_live() {
    let server = TestServer::start().await;
    server
        .write(vec![
            insert_issue("a", "T1", "todo", 1),
            insert_issue("b", "T2", "todo", 1),
        ])
        .await;
    let local = tempfile::tempdir().unwrap();
    let client = client_of(&server.handle, &local.path().join("c.db")).await;
    let _sub = subscribed(&client, OPEN_T1).await;
    assert_eq!(ids(&client, "SELECT id FROM issues ORDER BY id"), vec!["a"]);
    let mut observer = client.observe(Interest::Table("issues".into()));
    server.write(vec![insert_issue("c", "T1", "todo", 1)]).await;
    let note = tokio::time::timeout(WAIT, observer.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(note.source, Source::Server { .. }));
    assert_eq!(note.rows, vec![("issues".to_string(), text("c"))]);
    assert_eq!(
        ids(&client, "SELECT id FROM issues ORDER BY id"),
        vec!["a", "c"]
    );
    assert_eq!(*client.state().borrow(), ConnectionState::Online);
}

#[tokio::test]
async fn offline_edits_reach_the_server_and_the_other_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_on(dir.path()).await;
    let addr = server.local_addr();
    let ca = server.cert_path().unwrap().to_path_buf();
    let local = tempfile::tempdir().unwrap();
    let alice = client_at(addr, &ca, &local.path().join("alice.db")).await;
    let bob = client_at(addr, &ca, &local.path().join("bob.db")).await;
    subscribed(&alice, OPEN_T1).await;
    subscribed(&bob, OPEN_T1).await;

    // The server goes away: alice is offline and keeps editing.
    server.shutdown().await;
    let mut state = alice.state();
    tokio::time::timeout(WAIT, state.wait_for(|s| *s != ConnectionState::Online))
        .await
        .unwrap()
        .unwrap();
    let insert = alice
        .transaction()
        .insert(
            "issues",
            vec![
                ("id", text("x")),
                ("team_id", text("T1")),
                ("number", Value::Integer(7)),
                ("title", text("written offline")),
                ("status", text("todo")),
            ],
        )
        .commit()
        .unwrap();
    assert_eq!(
        ids(&alice, "SELECT id FROM issues"),
        vec!["x"],
        "optimistic write is visible"
    );
    assert_eq!(alice.pending_writes(), 1);

    let server = restart_on(dir.path(), addr).await;
    committed(insert).await;
    eventually("bob sees alice's offline edit", || {
        ids(&bob, "SELECT id FROM issues") == ["x"]
    })
    .await;
    eventually("alice's outbox drains", || alice.pending_writes() == 0).await;
    assert_eq!(ids(&alice, "SELECT id FROM issues"), vec!["x"]);
    server.shutdown().await;
}

#[tokio::test]
async fn outbox_survives_a_client_restart_and_is_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_on(dir.path()).await;
    let addr = server.local_addr();
    let ca = server.cert_path().unwrap().to_path_buf();
    server.shutdown().await;
    let local = tempfile::tempdir().unwrap();
    let db = local.path().join("c.db");
    {
        // Offline from the start: both transactions wait in the outbox.
        let client = client_at(addr, &ca, &db).await;
        for id in ["p", "q"] {
            client
                .transaction()
                .insert(
                    "issues",
                    vec![
                        ("id", text(id)),
                        ("team_id", text("T1")),
                        ("number", Value::Integer(1)),
                        ("title", text("t")),
                    ],
                )
                .commit()
                .unwrap();
        }
        assert_eq!(client.pending_writes(), 2);
        // The process dies: nothing is flushed on purpose.
        drop(client);
    }
    let server = restart_on(dir.path(), addr).await;
    let client = client_at(addr, &ca, &db).await;
    eventually("outbox sent", || client.pending_writes() == 0).await;
    // Reopen once more: nothing is pending, nothing is sent again.
    let reopened_id = client.client_id().unwrap();
    client.close().await;
    let client = client_at(addr, &ca, &db).await;
    assert_eq!(client.client_id().unwrap(), reopened_id);
    assert_eq!(client.pending_writes(), 0);
    let rows = common::expected_rows(&dir.path().join("app.db"), "SELECT * FROM issues");
    assert_eq!(rows.keys().collect::<Vec<_>>(), vec!["p", "q"]);
    // Exactly two transactions in the server's log: none applied twice.
    let store = common::open_server_store(&dir.path().join("app.db"));
    use sluice::store::Store;
    assert_eq!(store.head().0, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn rejected_write_rolls_back_fires_observers_and_does_not_block() {
    let server = TestServer::start().await;
    server.write(vec![insert_issue("a", "T1", "todo", 1)]).await;
    let local = tempfile::tempdir().unwrap();
    let client = client_of(&server.handle, &local.path().join("c.db")).await;
    subscribed(&client, OPEN_T1).await;
    let mut row_observer = client.observe(Interest::Row("issues".into(), text("a")));

    let doomed = client
        .transaction()
        .update("issues", text("a"), vec![("title", text("mine"))])
        .expect("issues", text("a"), "status", text("in_review"))
        .commit()
        .unwrap();
    let next = client
        .transaction()
        .update("issues", text("a"), vec![("priority", Value::Integer(3))])
        .commit()
        .unwrap();
    // Optimistic view first.
    let first = row_observer.next().await.unwrap();
    assert!(matches!(first.source, Source::Local { .. }));
    match tokio::time::timeout(WAIT, doomed.outcome())
        .await
        .unwrap()
        .unwrap()
    {
        WriteOutcome::Rejected { code, message } => {
            assert_eq!(code, sluice::store::RejectCode::PreconditionFailed);
            assert!(message.contains("status"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    committed(next).await;
    let mut saw_rollback = false;
    while let Some(note) = row_observer.try_next() {
        saw_rollback |= matches!(note.source, Source::Rollback { .. });
    }
    assert!(saw_rollback, "the rollback notified the row's observers");
    eventually("server state confirmed", || client.pending_writes() == 0).await;
    let row = client.row("issues", &text("a")).unwrap().unwrap();
    assert_eq!(row[4], text("issue a"), "title rolled back");
    assert_eq!(
        row[7],
        Value::Integer(3),
        "the later transaction still applied"
    );
}

#[tokio::test]
async fn pending_edit_is_rebased_over_concurrent_server_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_on(dir.path()).await;
    let addr = server.local_addr();
    let ca = server.cert_path().unwrap().to_path_buf();
    backend_write(&server, vec![insert_issue("a", "T1", "todo", 1)]).await;
    let local = tempfile::tempdir().unwrap();
    let client = client_at(addr, &ca, &local.path().join("c.db")).await;
    subscribed(&client, OPEN_T1).await;
    server.shutdown().await;
    // Offline: edit the title; meanwhile the server changes priority (another column)
    // and, later, the title too (same column).
    client
        .transaction()
        .update("issues", text("a"), vec![("title", text("client title"))])
        .commit()
        .unwrap();
    let server = restart_on(dir.path(), addr).await;
    let direct = |m| {
        server.write(sluice::store::WriteTxn {
            origin: None,
            mutations: vec![m],
            preconditions: vec![],
        })
    };
    direct(set_issue("a", "priority", Value::Integer(9)))
        .await
        .unwrap();
    eventually("both edits visible", || {
        let row = client.row("issues", &text("a")).unwrap().unwrap();
        row[4] == text("client title") && row[7] == Value::Integer(9)
    })
    .await;
    eventually("outbox drained", || client.pending_writes() == 0).await;
    // Last writer wins per column: a later server title replaces the client's.
    direct(set_issue("a", "title", text("server title")))
        .await
        .unwrap();
    eventually("server title wins", || {
        let row = client.row("issues", &text("a")).unwrap().unwrap();
        row[4] == text("server title") && row[7] == Value::Integer(9)
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn overlapping_subscriptions_share_coverage() {
    let server = TestServer::start().await;
    server
        .write(vec![
            insert_issue("a", "T1", "todo", 5),
            insert_issue("b", "T1", "todo", 1),
        ])
        .await;
    let local = tempfile::tempdir().unwrap();
    let client = client_of(&server.handle, &local.path().join("c.db")).await;
    let team = client.subscribe(OPEN_T1, Params::new()).unwrap();
    let urgent = client
        .subscribe(
            "SELECT * FROM issues WHERE priority >= :p",
            Params::new().value("p", Value::Integer(5)),
        )
        .unwrap();
    team.ready().await.unwrap();
    urgent.ready().await.unwrap();
    assert_eq!(
        ids(&client, "SELECT id FROM issues ORDER BY id"),
        vec!["a", "b"]
    );
    client.unsubscribe(team.id).unwrap();
    assert_eq!(
        ids(&client, "SELECT id FROM issues ORDER BY id"),
        vec!["a"],
        "a is still covered"
    );
    server
        .write(vec![set_issue("a", "priority", Value::Integer(1))])
        .await;
    eventually("a leaves with its last subscription", || {
        ids(&client, "SELECT id FROM issues").is_empty()
    })
    .await;
}

#[tokio::test]
async fn two_clients_converge_on_the_server_state() {
    let server = TestServer::start().await;
    let local = tempfile::tempdir().unwrap();
    let a = client_of(&server.handle, &local.path().join("a.db")).await;
    let b = client_of(&server.handle, &local.path().join("b.db")).await;
    subscribed(&a, "SELECT * FROM issues").await;
    subscribed(&b, "SELECT * FROM issues").await;
    let mut writes = Vec::new();
    for i in 0..20 {
        let (writer, other) = if i % 2 == 0 { (&a, "a") } else { (&b, "b") };
        let id = format!("{other}{i}");
        writes.push(
            writer
                .transaction()
                .insert(
                    "issues",
                    vec![
                        ("id", text(&id)),
                        ("team_id", text("T1")),
                        ("number", Value::Integer(i)),
                        ("title", text("t")),
                    ],
                )
                .commit()
                .unwrap(),
        );
        // Conflicting edits of the same row from both sides.
        if i > 0 {
            writer
                .transaction()
                .update(
                    "issues",
                    text("a0"),
                    vec![("title", text(&format!("by {other} {i}")))],
                )
                .commit()
                .unwrap();
        }
    }
    for w in writes {
        assert!(matches!(
            w.outcome().await.unwrap(),
            WriteOutcome::Committed { .. }
        ));
    }
    let expected = common::expected_rows(&server.db(), "SELECT * FROM issues");
    let expected: Vec<Vec<Value>> = expected.into_values().collect();
    for client in [&a, &b] {
        eventually("convergence", || {
            client.pending_writes() == 0
                && client
                    .query("SELECT * FROM issues ORDER BY id", &[])
                    .unwrap()
                    == expected
        })
        .await;
    }
}

#[tokio::test]
async fn observers_never_see_half_a_server_transaction() {
    let server = TestServer::start().await;
    // Two rows in two subscriptions; every transaction moves one unit between them, so
    // the sum of their priorities is constant in every committed state.
    server
        .write(vec![
            insert_issue("left", "T1", "todo", 50),
            insert_issue("right", "T2", "todo", 50),
        ])
        .await;
    let local = tempfile::tempdir().unwrap();
    let client = client_of(&server.handle, &local.path().join("c.db")).await;
    subscribed(&client, "SELECT * FROM issues WHERE team_id = 'T1'").await;
    subscribed(&client, "SELECT * FROM issues WHERE team_id = 'T2'").await;
    let mut observer = client.observe(Interest::All);
    let sum = |c: &Client| -> i64 {
        let rows = c.query("SELECT priority FROM issues", &[]).unwrap();
        rows.iter()
            .map(|r| if let Value::Integer(i) = r[0] { i } else { 0 })
            .sum()
    };
    assert_eq!(sum(&client), 100);
    for i in 1..=30i64 {
        server
            .write(vec![
                set_issue("left", "priority", Value::Integer(50 - i)),
                set_issue("right", "priority", Value::Integer(50 + i)),
            ])
            .await;
    }
    let mut seen = 0;
    while seen < 30 {
        let note = tokio::time::timeout(WAIT, observer.next())
            .await
            .unwrap()
            .unwrap();
        if matches!(note.source, Source::Server { .. }) {
            seen += 1;
            assert_eq!(note.rows.len(), 2, "both rows change in one notification");
            assert_eq!(sum(&client), 100, "a half-applied transaction is visible");
        }
    }
}

#[tokio::test]
async fn reopening_offline_serves_reads_from_the_last_session() {
    let server = TestServer::start().await;
    server.write(vec![insert_issue("a", "T1", "todo", 1)]).await;
    let local = tempfile::tempdir().unwrap();
    let db = local.path().join("c.db");
    let client = client_of(&server.handle, &db).await;
    subscribed(&client, OPEN_T1).await;
    client.close().await;
    // No server at all this time.
    let offline = Client::open(ClientConfig::new(&db)).await.unwrap();
    assert_eq!(ids(&offline, "SELECT id FROM issues"), vec!["a"]);
    assert!(
        offline.query("DELETE FROM issues", &[]).is_err(),
        "local reads are read-only"
    );
    assert_eq!(*offline.state().borrow(), ConnectionState::Offline);
}

#[tokio::test]
async fn resume_after_reconnect_applies_missed_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_on(dir.path()).await;
    let addr = server.local_addr();
    let ca = server.cert_path().unwrap().to_path_buf();
    backend_write(&server, vec![insert_issue("a", "T1", "todo", 1)]).await;
    let local = tempfile::tempdir().unwrap();
    let client = client_at(addr, &ca, &local.path().join("c.db")).await;
    subscribed(&client, OPEN_T1).await;
    client.close().await;
    backend_write(&server, vec![insert_issue("b", "T1", "todo", 1)]).await;
    backend_write(&server, vec![set_issue("a", "status", text("done"))]).await;
    let client = client_at(addr, &ca, &local.path().join("c.db")).await;
    eventually("resumed", || ids(&client, "SELECT id FROM issues") == ["b"]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn connection_migrates_to_a_new_local_address() {
    let server = TestServer::start().await;
    let local = tempfile::tempdir().unwrap();
    let client = client_of(&server.handle, &local.path().join("c.db")).await;
    subscribed(&client, OPEN_T1).await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.rebind(socket).await.unwrap();
    server.write(vec![insert_issue("m", "T1", "todo", 1)]).await;
    eventually("live after migration", || {
        ids(&client, "SELECT id FROM issues") == ["m"]
    })
    .await;
}

/// A copy of the example schema with `issues` gaining a nullable column (additive) and
/// `labels.color` changing type (breaking).
fn changed_schema(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("schema_v2");
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(schema_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sql") {
            let mut sql = std::fs::read_to_string(&path).unwrap();
            sql = sql.replace(
                "    updated_at INTEGER NOT NULL DEFAULT 0\n);",
                "    updated_at INTEGER NOT NULL DEFAULT 0,\n    due_date INTEGER\n);",
            );
            sql = sql.replace("color TEXT NOT NULL DEFAULT '#888888'", "color INTEGER");
            std::fs::write(out.join(path.file_name().unwrap()), sql).unwrap();
        }
    }
    out
}

#[tokio::test]
async fn schema_changes_keep_additive_tables_and_rebootstrap_broken_ones() {
    let dir = tempfile::tempdir().unwrap();
    let label = |color: Value| sluice::store::Mutation::Insert {
        table: "labels".into(),
        values: vec![
            ("id".into(), text("L1")),
            ("team_id".into(), text("T1")),
            ("name".into(), text("bug")),
            ("color".into(), color),
        ],
    };
    std::fs::create_dir_all(dir.path().join("v1")).unwrap();
    let v1 = common::start_on(&dir.path().join("v1")).await;
    backend_write(&v1, vec![insert_issue("a", "T1", "todo", 1)]).await;
    backend_write(&v1, vec![label(text("#ff0000"))]).await;
    let local = tempfile::tempdir().unwrap();
    let db = local.path().join("c.db");
    let client = client_of(&v1, &db).await;
    subscribed(&client, "SELECT * FROM issues").await;
    subscribed(&client, "SELECT * FROM labels").await;
    client.close().await;
    v1.shutdown().await;

    // The same data behind a server whose schema changed.
    let v2_dir = dir.path().join("v2");
    std::fs::create_dir_all(&v2_dir).unwrap();
    let v2 = Server::builder(changed_schema(dir.path()), v2_dir.join("app.db"))
        .listen("127.0.0.1:0".parse().unwrap())
        .no_auth()
        .start()
        .await
        .unwrap();
    backend_write(&v2, vec![insert_issue("a", "T1", "todo", 1)]).await;
    backend_write(&v2, vec![label(Value::Integer(255))]).await;
    let mut observer = {
        let client = client_of(&v2, &db).await;
        let observer = client.observe(Interest::Table("labels".into()));
        (client, observer)
    };
    eventually("labels re-bootstrapped with the new type", || {
        observer.0.query("SELECT color FROM labels", &[]).unwrap()
            == vec![vec![Value::Integer(255)]]
    })
    .await;
    let client = &observer.0;
    // The additive change kept the issues rows and added the column locally.
    let rows = client
        .query("SELECT id, due_date FROM issues", &[])
        .unwrap();
    assert_eq!(rows, vec![vec![text("a"), Value::Null]]);
    // Observers fire after the local transaction commits; a read may see it first.
    let heard = tokio::time::timeout(WAIT, observer.1.next()).await;
    assert!(
        matches!(heard, Ok(Some(_))),
        "observers heard of the re-bootstrap"
    );
    v2.shutdown().await;
}

#[tokio::test]
async fn subscription_status_moves_to_ready_at_the_snapshot_sync_id() {
    let server = TestServer::start().await;
    let rows: Vec<_> = (0..2500)
        .map(|i| insert_issue(&format!("p{i:04}"), "T1", "todo", 1))
        .collect();
    let head = server.write(rows).await;
    let local = tempfile::tempdir().unwrap();
    let client = client_of(&server.handle, &local.path().join("c.db")).await;
    let sub = client.subscribe(OPEN_T1, Params::new()).unwrap();
    assert!(matches!(
        sub.status(),
        sluice::client::SubStatus::Pending | sluice::client::SubStatus::Bootstrapping { .. }
    ));
    assert_eq!(sub.ready().await.unwrap(), head);
    assert_eq!(
        sub.status(),
        sluice::client::SubStatus::Ready { sync_id: head }
    );
    let count = client.query("SELECT count(*) FROM issues", &[]).unwrap();
    assert_eq!(count[0][0], Value::Integer(2500));
}

#[tokio::test]
async fn a_bootstrap_staged_in_many_batches_joins_every_row_with_its_last_content() {
    // Several staging batches: the sync task hands each to the staging writer and keeps
    // receiving while it is written; the batches must still land in order, whole.
    let n = 3 * sluice::client::core::STAGE_BATCH + 100;
    let server = TestServer::start().await;
    let rows = (0..n)
        .map(|i| insert_issue(&format!("i{i:05}"), "T1", "todo", 1))
        .collect();
    server.write(rows).await;
    let local = tempfile::tempdir().unwrap();
    let client = client_of(&server.handle, &local.path().join("c.db")).await;
    let sub = client.subscribe(OPEN_T1, Params::new()).unwrap();
    // Changes while the snapshot streams: staged behind it, applied after it.
    server
        .write(vec![
            set_issue("i00001", "status", text("done")),
            set_issue("i00002", "priority", Value::Integer(7)),
        ])
        .await;
    sub.ready().await.unwrap();
    let expected = n - 1;
    eventually("every row but the one moved out", || {
        ids(&client, "SELECT id FROM issues").len() == expected
    })
    .await;
    let first_ids = ids(&client, "SELECT id FROM issues ORDER BY id LIMIT 3");
    assert_eq!(first_ids, vec!["i00000", "i00002", "i00003"]);
    eventually("the change after the snapshot", || {
        client
            .query("SELECT priority FROM issues WHERE id = 'i00002'", &[])
            .unwrap()
            == vec![vec![Value::Integer(7)]]
    })
    .await;
    let staged = client
        .query(
            "SELECT count(*) FROM sqlite_schema WHERE name LIKE '_sluice_stage_%' \
             AND name != '_sluice_stage_rows'",
            &[],
        )
        .unwrap();
    assert_eq!(staged, vec![vec![Value::Integer(0)]], "nothing left staged");
}
