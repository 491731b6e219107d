//! Attacks on the write path, performed through the protocol as an attacker would: a
//! write is no way to read what the read rules hide. Preconditions never echo stored
//! values and fail alike for unreadable and missing rows; `not_found`, `already_exists`
//! and `forbidden` say nothing about rows the caller cannot read.

mod common;

use common::auth::AuthServer;
use common::permissions::{issue, users, write_outcome, User};
use common::*;
use sluice::client::ConnectionError;
use sluice::store::{Mutation, Precondition, RejectCode};
use sluice::value::Value;
use sluice::wire::{ClientMessage, RefuseCode, ServerMessage, WriteOutcome};

/// Sends one transaction with preconditions and waits for its outcome.
async fn write_with(
    client: &mut Client,
    seq: u64,
    mutations: Vec<Mutation>,
    preconditions: Vec<Precondition>,
) -> (RejectCode, String) {
    client
        .conn
        .send(ClientMessage::Write {
            seq,
            mutations,
            preconditions,
        })
        .await
        .unwrap();
    client
        .until("write outcome", |c| c.writes.contains_key(&seq))
        .await;
    match client.writes[&seq].clone() {
        WriteOutcome::Rejected { code, message } => (code, message),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn check(table: &str, key: &str, column: &str, expected: Value) -> Precondition {
    Precondition {
        table: table.into(),
        key: text(key),
        column: column.into(),
        expected,
    }
}

/// The answer with the key's spelling taken out, to compare two answers that differ only
/// in the key they name.
fn shape(message: &str, key: &str) -> String {
    message.replace(key, "KEY")
}

async fn seeded() -> AuthServer {
    let server = AuthServer::start().await;
    server
        .write(vec![
            Mutation::Insert {
                table: "users".into(),
                values: vec![
                    ("id".into(), text("bob")),
                    ("name".into(), text("Bob")),
                    ("email".into(), text("bob@example.com")),
                    ("password_hash".into(), text("s3cret-hash")),
                ],
            },
            issue("mine", "T1", "alice", "todo", 1),
            issue("hidden", "T3", "dave", "todo", 1),
        ])
        .await;
    server
}

#[tokio::test]
async fn preconditions_read_nothing_the_caller_may_not_read() {
    let server = seeded().await;
    let alice = &users()[0];
    let mut client = server.user(alice).await;

    // A hidden column of a readable row: the same answer as a row that does not exist,
    // and never the stored value.
    let (code, on_hidden) = write_with(
        &mut client,
        1,
        vec![],
        vec![check("users", "bob", "password_hash", text("x"))],
    )
    .await;
    assert_eq!(code, RejectCode::PreconditionFailed);
    assert!(!on_hidden.contains("s3cret"), "{on_hidden}");
    let (_, on_missing) = write_with(
        &mut client,
        2,
        vec![],
        vec![check("users", "nobody", "password_hash", text("x"))],
    )
    .await;
    assert_eq!(shape(&on_hidden, "bob"), shape(&on_missing, "nobody"));

    // A row of another team: alike with a missing row, and its title never shown.
    let (code, on_other_team) = write_with(
        &mut client,
        3,
        vec![],
        vec![check("issues", "hidden", "title", text("x"))],
    )
    .await;
    assert_eq!(code, RejectCode::PreconditionFailed);
    assert!(!on_other_team.contains("issue hidden"), "{on_other_team}");
    let (_, on_ghost) = write_with(
        &mut client,
        4,
        vec![],
        vec![check("issues", "ghost", "title", text("x"))],
    )
    .await;
    assert_eq!(shape(&on_other_team, "hidden"), shape(&on_ghost, "ghost"));

    // Even on a row the caller reads, a failed precondition names what was expected,
    // not what is stored.
    let (code, on_readable) = write_with(
        &mut client,
        5,
        vec![],
        vec![check("issues", "mine", "title", text("x"))],
    )
    .await;
    assert_eq!(code, RejectCode::PreconditionFailed);
    assert!(!on_readable.contains("issue mine"), "{on_readable}");

    // A precondition that holds on a readable row still lets the write through.
    client
        .conn
        .send(ClientMessage::Write {
            seq: 6,
            mutations: vec![set_issue("mine", "status", text("doing"))],
            preconditions: vec![check("issues", "mine", "title", text("issue mine"))],
        })
        .await
        .unwrap();
    client.until("write 6", |c| c.writes.contains_key(&6)).await;
    assert!(
        matches!(client.writes[&6], WriteOutcome::Committed { .. }),
        "{:?}",
        client.writes[&6]
    );
    server.handle.shutdown().await;
}

#[tokio::test]
async fn write_errors_do_not_tell_whether_an_unreadable_row_exists() {
    let server = seeded().await;
    let alice = &users()[0];
    let mut client = server.user(alice).await;
    let mut seq = 0;
    let mut outcome = async |mutations: Vec<Mutation>| {
        seq += 1;
        write_with(&mut client, seq, mutations, vec![]).await
    };

    // Update and delete: a row of another team answers exactly as a missing row.
    let on_hidden = outcome(vec![set_issue("hidden", "title", text("x"))]).await;
    let on_ghost = outcome(vec![set_issue("ghost", "title", text("x"))]).await;
    assert_eq!(on_hidden.0, RejectCode::NotFound);
    assert_eq!(on_ghost.0, RejectCode::NotFound);
    assert_eq!(shape(&on_hidden.1, "hidden"), shape(&on_ghost.1, "ghost"));
    let on_hidden = outcome(vec![delete_issue("hidden")]).await;
    let on_ghost = outcome(vec![delete_issue("ghost")]).await;
    assert_eq!(on_hidden.0, on_ghost.0);
    assert_eq!(shape(&on_hidden.1, "hidden"), shape(&on_ghost.1, "ghost"));

    // Insert: a key taken by a row of another team answers as an insert the rules
    // refuse; only a row the caller reads is reported as already existing.
    let taken = outcome(vec![issue("hidden", "T1", "alice", "todo", 1)]).await;
    let refused = outcome(vec![issue("ghost", "T3", "alice", "todo", 1)]).await;
    assert_eq!(taken.0, RejectCode::Forbidden, "{}", taken.1);
    assert_eq!(refused.0, RejectCode::Forbidden, "{}", refused.1);
    assert_eq!(shape(&taken.1, "hidden"), shape(&refused.1, "ghost"));
    let mine = outcome(vec![issue("mine", "T1", "alice", "todo", 1)]).await;
    assert_eq!(mine.0, RejectCode::AlreadyExists, "{}", mine.1);

    // Nothing of the refused transactions was written.
    let rows = expected_rows(&server.db(), "SELECT * FROM issues");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows["hidden"][4], text("issue hidden"));
    server.handle.shutdown().await;
}

/// User `a/b` with client `c` and user `a` with client `b/c` once shared one idempotency
/// key: the second write was acknowledged as committed and never written.
#[tokio::test]
async fn client_ids_of_different_users_never_collide() {
    let server = AuthServer::start().await;
    let slashed = User {
        sub: "a/b",
        teams: Some(serde_json::json!(["T1"])),
    };
    let plain = User {
        sub: "a",
        teams: Some(serde_json::json!(["T1"])),
    };
    let mut first = server.connect("c", Some(slashed.token())).await.unwrap();
    let mut second = server.connect("b/c", Some(plain.token())).await.unwrap();
    let one = write_outcome(&mut first, 1, vec![issue("x1", "T1", "a/b", "todo", 1)]).await;
    let two = write_outcome(&mut second, 1, vec![issue("x2", "T1", "a", "todo", 1)]).await;
    assert!(matches!(one, WriteOutcome::Committed { .. }), "{one:?}");
    assert!(matches!(two, WriteOutcome::Committed { .. }), "{two:?}");
    let rows = expected_rows(&server.db(), "SELECT * FROM issues");
    assert!(
        rows.contains_key("x1") && rows.contains_key("x2"),
        "{rows:?}"
    );
    server.handle.shutdown().await;
}

/// Who wrote a transaction is the author's business: its own sessions see the origin
/// (under the id they chose), everyone else sees none.
#[tokio::test]
async fn the_origin_of_a_write_goes_only_to_its_author() {
    let server = seeded().await;
    let users = users();
    let (alice, bob) = (&users[0], &users[1]);
    let mut writer = server.user(alice).await;
    let mut watcher = server.connect("watcher", Some(bob.token())).await.unwrap();
    // Both read team T2.
    for client in [&mut writer, &mut watcher] {
        client
            .subscribe(1, "SELECT * FROM issues WHERE team_id = 'T2'", None)
            .await;
        client.until("snapshot", |c| c.sub(1).end.is_some()).await;
    }
    let outcome = write_outcome(&mut writer, 9, vec![issue("t2", "T2", "alice", "todo", 1)]).await;
    let WriteOutcome::Committed { sync_id } = outcome else {
        panic!("{outcome:?}");
    };
    writer
        .until("own live txn", |c| {
            c.live_origins.iter().any(|(s, _)| *s == sync_id)
        })
        .await;
    watcher
        .until("the live txn", |c| c.sub(1).rows.contains_key("t2"))
        .await;
    let seen = |c: &Client| {
        c.live_origins
            .iter()
            .find(|(s, _)| *s == sync_id)
            .map(|(_, o)| o.clone())
            .expect("the transaction arrived")
    };
    let own = seen(&writer).expect("the author sees its origin");
    assert_eq!((own.0 .0.as_str(), own.1), ("client-alice", 9));
    assert_eq!(seen(&watcher), None, "others never learn who wrote it");
    server.handle.shutdown().await;
}

/// A fetch that names one row a thousand times (as it is, and as text its affinity turns
/// into the same key) returns it once: duplicates cost no memory.
#[tokio::test]
async fn a_fetch_returns_each_row_once_however_often_it_is_named() {
    let server = seeded().await;
    let mut client = server.user(&users()[0]).await;
    let keys = vec![text("mine"); sluice::wire::MAX_FETCH_KEYS];
    match fetch(&mut client, 1, "issues", keys).await {
        ServerMessage::Fetched { rows, .. } => assert_eq!(rows.len(), 1),
        other => panic!("{other:?}"),
    }
    server.handle.shutdown().await;
}

/// Before its token is verified a peer may send only a small `Hello`: a megabyte of
/// "token" is refused without the server buffering it, and the server serves on.
#[tokio::test]
async fn an_oversized_hello_is_refused_before_the_token_is_read() {
    let server = seeded().await;
    let huge = "x".repeat(1024 * 1024);
    let refused = server.connect("big", Some(huge)).await;
    assert!(refused.is_err(), "an oversized hello must not be accepted");
    let mut client = server.user(&users()[0]).await;
    client
        .subscribe(1, "SELECT * FROM issues WHERE team_id = 'T1'", None)
        .await;
    client.until("snapshot", |c| c.sub(1).end.is_some()).await;
    const { assert!(sluice::server::MAX_HELLO_BYTES < 1024 * 1024) };
    server.handle.shutdown().await;
}

/// One user cannot hold more than its share of connections; others still connect.
#[tokio::test]
async fn connections_per_user_are_capped() {
    let server = seeded().await;
    let users = users();
    let alice = &users[0];
    let mut held = Vec::new();
    for n in 0..sluice::server::Quotas::default().connections_per_user {
        let client = server
            .connect(&format!("device-{n}"), Some(alice.token()))
            .await
            .unwrap();
        held.push(client);
    }
    match server.connect("one-more", Some(alice.token())).await {
        Err(ConnectionError::Refused { code, message }) => {
            let quota = sluice::wire::Quota::ConnectionsPerUser;
            assert_eq!(code, RefuseCode::QuotaExceeded(quota), "{message}");
            assert!(
                message.contains("quota_exceeded: connections_per_user"),
                "{message}"
            );
        }
        Err(other) => panic!("refused without a reason: {other}"),
        Ok(_) => panic!("the cap was not enforced"),
    }
    // Another user is not affected, and a place freed is a place again.
    server.connect("bob", Some(users[1].token())).await.unwrap();
    let first = held.remove(0);
    first.conn.close().await;
    let mut reconnected = None;
    for _ in 0..100 {
        if let Ok(c) = server.connect("again", Some(alice.token())).await {
            reconnected = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(reconnected.is_some(), "a freed place can be used again");
    server.handle.shutdown().await;
}

/// Resuming from sync id 0 is no way to read history: the replay is the net change of
/// each row, so rows that were deleted, rows that moved to a team the caller cannot
/// read, and contents since overwritten are never sent; what a fresh snapshot shows is.
#[tokio::test]
async fn resume_sends_net_state_not_history() {
    let server = AuthServer::start().await;
    server
        .write(vec![
            issue("gone", "T1", "alice", "todo", 1),
            issue("moved", "T1", "alice", "todo", 1),
            issue("kept", "T1", "alice", "todo", 1),
        ])
        .await;
    server
        .write(vec![set_issue("kept", "title", text("first draft"))])
        .await;
    server.write(vec![delete_issue("gone")]).await;
    server
        .write(vec![set_issue("moved", "team_id", text("T3"))])
        .await;
    server
        .write(vec![set_issue("kept", "title", text("final"))])
        .await;
    let mut client = server.user(&users()[0]).await;
    client
        .subscribe(1, "SELECT * FROM issues", Some(sluice::ids::SyncId::ZERO))
        .await;
    let mut replayed = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.sub(1).end.is_none() {
        let event = tokio::time::timeout_at(deadline, client.conn.next_event())
            .await
            .expect("replay in time")
            .expect("connection open");
        if let sluice::client::Event::Bootstrap(
            _,
            sluice::wire::BootstrapFrame::Replay { event, .. },
        ) = &event
        {
            replayed.push(format!("{event:?}"));
        }
        client.handle(event);
    }
    let all = replayed.join("\n");
    assert_eq!(replayed.len(), 1, "only the row that is there now: {all}");
    for secret in ["gone", "moved", "first draft"] {
        assert!(
            !all.contains(secret),
            "{secret} leaked through the replay: {all}"
        );
    }
    assert!(all.contains("final"), "{all}");
    assert_eq!(
        client.sub(1).rows.keys().cloned().collect::<Vec<_>>(),
        vec!["kept".to_string()]
    );
    server.handle.shutdown().await;
}
