//! Write permissions over real QUIC: every mutation of a client transaction is checked
//! against the write rules, atomically (one forbidden change refuses the whole
//! transaction and writes nothing), a row the caller cannot read is refused as missing,
//! and rules apply without an authenticator too.

mod common;

use std::path::Path;

use common::auth::{rules_file, AuthServer};
use common::permissions::{forbidden, issue, users, write_outcome};
use common::*;
use sluice::server::Server;
use sluice::store::{Mutation, RejectCode};
use sluice::wire::WriteOutcome;

/// What a case of [`writes_are_checked_against_the_rules`] must answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Committed,
    Forbidden,
    /// Refused as if the row did not exist: the caller may not read it.
    NotFound,
}

fn issue_row(db: &Path, id: &str) -> Option<(String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT team_id, title FROM issues WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .ok()
}

#[tokio::test]
async fn writes_are_checked_against_the_rules() {
    let server = AuthServer::start().await;
    server
        .write(vec![
            issue("mine", "T1", "alice", "todo", 1),
            issue("bobs", "T1", "bob", "todo", 1),
            issue("other", "T3", "dave", "todo", 1),
        ])
        .await;
    server
        .write(vec![Mutation::Insert {
            table: "users".into(),
            values: vec![
                ("id".into(), text("alice")),
                ("name".into(), text("Alice")),
                ("email".into(), text("a@example.com")),
            ],
        }])
        .await;
    let alice = &users()[0];
    let mut client = server.user(alice).await;
    let db = server.db();
    let mut refused = 0;
    let mut cases: Vec<(&str, Vec<Mutation>, Expect)> = vec![
        (
            "insert into another team",
            vec![issue("x1", "T3", "alice", "todo", 1)],
            Expect::Forbidden,
        ),
        (
            "insert with a forged creator",
            vec![issue("x2", "T1", "bob", "todo", 1)],
            Expect::Forbidden,
        ),
        (
            "update a row of another team",
            vec![set_issue("other", "title", text("pwned"))],
            Expect::NotFound,
        ),
        (
            "move a row to another team",
            vec![set_issue("mine", "team_id", text("T3"))],
            Expect::Forbidden,
        ),
        (
            "delete a row created by someone else",
            vec![delete_issue("bobs")],
            Expect::Forbidden,
        ),
        (
            "delete a row of another team",
            vec![delete_issue("other")],
            Expect::NotFound,
        ),
        (
            "an allowed change followed by a forbidden one",
            vec![
                set_issue("mine", "title", text("half")),
                set_issue("other", "title", text("half")),
            ],
            Expect::NotFound,
        ),
        (
            "write a hidden column",
            vec![Mutation::Update {
                table: "users".into(),
                key: text("alice"),
                set: vec![("password_hash".into(), text("x"))],
            }],
            Expect::Forbidden,
        ),
        (
            "insert in own team",
            vec![issue("ok1", "T2", "alice", "todo", 1)],
            Expect::Committed,
        ),
        (
            "edit a row of own team",
            vec![set_issue("bobs", "title", text("edited"))],
            Expect::Committed,
        ),
        (
            "move between own teams (an update keeps the team)",
            vec![set_issue("bobs", "team_id", text("T2"))],
            Expect::Forbidden,
        ),
        (
            "delete own row",
            vec![delete_issue("mine")],
            Expect::Committed,
        ),
        (
            "edit own profile",
            vec![Mutation::Update {
                table: "users".into(),
                key: text("alice"),
                set: vec![("name".into(), text("Alice A."))],
            }],
            Expect::Committed,
        ),
    ];
    for (seq, (what, mutations, expect)) in cases.drain(..).enumerate() {
        let outcome = write_outcome(&mut client, seq as u64 + 1, mutations).await;
        match expect {
            Expect::Committed => assert!(
                matches!(outcome, WriteOutcome::Committed { .. }),
                "{what}: {outcome:?}"
            ),
            Expect::Forbidden => assert!(forbidden(&outcome), "{what}: {outcome:?}"),
            Expect::NotFound => assert!(
                matches!(
                    outcome,
                    WriteOutcome::Rejected {
                        code: RejectCode::NotFound,
                        ..
                    }
                ),
                "{what}: {outcome:?}"
            ),
        }
        if expect != Expect::Committed {
            refused += 1;
        }
    }
    assert_eq!(refused, 9);
    // Nothing of a refused transaction was written.
    assert_eq!(issue_row(&db, "x1"), None);
    assert_eq!(issue_row(&db, "x2"), None);
    assert_eq!(
        issue_row(&db, "other"),
        Some(("T3".into(), "issue other".into()))
    );
    // The example rules keep an issue in its team: the move was refused.
    assert_eq!(issue_row(&db, "bobs"), Some(("T1".into(), "edited".into())));
    assert_eq!(issue_row(&db, "mine"), None);
    assert_eq!(issue_row(&db, "ok1").map(|r| r.0), Some("T2".into()));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let hash: Option<String> = conn
        .query_row(
            "SELECT password_hash FROM users WHERE id = 'alice'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(hash, None);
    // Someone without teams can write nothing to issues.
    let mut mallory = server.user(&users()[4]).await;
    let outcome = write_outcome(
        &mut mallory,
        1,
        vec![issue("m1", "T1", "mallory", "todo", 1)],
    )
    .await;
    assert!(forbidden(&outcome), "{outcome:?}");
    assert_eq!(issue_row(&db, "m1"), None);
}

#[tokio::test]
async fn rules_apply_with_no_auth_too() {
    // A rules file without an authenticator: claims are empty, so only rules that need
    // no claim grant anything.
    let dir = tempfile::tempdir().unwrap();
    let handle = Server::builder(schema_dir(), dir.path().join("app.db"))
        .listen("127.0.0.1:0".parse().unwrap())
        .no_auth()
        .rules_file(rules_file())
        .start()
        .await
        .unwrap();
    let mut writer = Client::connect(&handle, handle.cert_path().unwrap(), "w").await;
    let outcome = write_outcome(&mut writer, 1, vec![issue("a", "T1", "x", "todo", 1)]).await;
    assert!(forbidden(&outcome), "{outcome:?}");
    let room = Mutation::Insert {
        table: "rooms".into(),
        values: vec![("id".into(), text("r1")), ("name".into(), text("lobby"))],
    };
    let outcome = write_outcome(&mut writer, 2, vec![room]).await;
    assert!(
        matches!(outcome, WriteOutcome::Committed { .. }),
        "{outcome:?}"
    );
    writer.subscribe(1, "SELECT * FROM rooms", None).await;
    writer.subscribe(2, "SELECT * FROM issues", None).await;
    writer
        .until("snapshots", |c| {
            c.sub(1).end.is_some() && c.sub(2).end.is_some()
        })
        .await;
    assert_eq!(writer.sub(1).rows.len(), 1);
    assert!(writer.sub(2).rows.is_empty());
}
