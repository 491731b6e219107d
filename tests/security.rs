//! Attacks on the write path, performed through the protocol as an attacker would: a
//! write is no way to read what the read rules hide. Preconditions never echo stored
//! values and fail alike for unreadable and missing rows; `not_found`, `already_exists`
//! and `forbidden` say nothing about rows the caller cannot read.

mod common;

use common::auth::AuthServer;
use common::permissions::{issue, users};
use common::*;
use sluice::store::{Mutation, Precondition, RejectCode};
use sluice::value::Value;
use sluice::wire::{ClientMessage, WriteOutcome};

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
