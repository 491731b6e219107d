//! Column-level write rules over real QUIC, with the example rules: an update may set only
//! the columns its `ALLOW UPDATE (...)` lists and must leave `KEEP (...)` columns
//! unchanged. The `creator_id` takeover (rewrite the creator of someone else's issue, then
//! delete it as its "creator"; or hand one's own issue to someone else) is refused and
//! writes nothing, while edits of the listed columns still commit. A mistake in the new
//! syntax stops the server with the file, line and column.

mod common;

use std::path::Path;

use common::auth::{AuthServer, SECRET};
use common::cli::sluice;
use common::permissions::{forbidden, issue, users, write_outcome};
use common::*;
use serde_json::json;
use sluice::auth::{Claims, JwtAuthenticator};
use sluice::server::Server;
use sluice::store::Mutation;
use sluice::value::Value;
use sluice::wire::WriteOutcome;

/// `(team_id, creator_id, title, status)` of an issue, read straight from the database.
fn issue_row(db: &Path, id: &str) -> Option<(String, String, String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT team_id, creator_id, title, status FROM issues WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .ok()
}

fn row(team: &str, creator: &str, title: &str, status: &str) -> (String, String, String, String) {
    (team.into(), creator.into(), title.into(), status.into())
}

fn update(table: &str, key: Value, set: &[(&str, Value)]) -> Mutation {
    Mutation::Update {
        table: table.into(),
        key,
        set: set
            .iter()
            .map(|(c, v)| (c.to_string(), v.clone()))
            .collect(),
    }
}

fn committed(outcome: &WriteOutcome) -> bool {
    matches!(outcome, WriteOutcome::Committed { .. })
}

fn message(outcome: &WriteOutcome) -> &str {
    match outcome {
        WriteOutcome::Rejected { message, .. } => message,
        WriteOutcome::Committed { .. } => "",
    }
}

#[tokio::test]
async fn a_member_cannot_take_over_an_issue_by_rewriting_its_creator() {
    let server = AuthServer::start().await;
    server
        .write(vec![
            issue("bobs", "T1", "bob", "todo", 1),
            issue("mine", "T1", "alice", "todo", 1),
        ])
        .await;
    let db = server.db();
    let alice = &users()[0]; // teams T1 and T2
    let mut client = server.user(alice).await;
    let mut seq = 0;
    let mut send = |mutations: Vec<Mutation>| {
        seq += 1;
        (seq, mutations)
    };

    // Step one of the takeover: make bob's issue "hers".
    let (s, m) = send(vec![set_issue("bobs", "creator_id", text("alice"))]);
    let outcome = write_outcome(&mut client, s, m).await;
    assert!(forbidden(&outcome), "{outcome:?}");
    assert_eq!(
        message(&outcome),
        "permission denied: you may not update issues['bobs'].creator_id"
    );
    // Step two, "only the creator deletes": still bob's, still refused.
    let (s, m) = send(vec![delete_issue("bobs")]);
    let outcome = write_outcome(&mut client, s, m).await;
    assert!(forbidden(&outcome), "{outcome:?}");
    assert_eq!(
        issue_row(&db, "bobs"),
        Some(row("T1", "bob", "issue bobs", "todo"))
    );

    // Handing her own issue to carol (or naming its creator at all, even unchanged: a
    // column list limits what an update sets).
    for creator in ["carol", "alice"] {
        let (s, m) = send(vec![set_issue("mine", "creator_id", text(creator))]);
        let outcome = write_outcome(&mut client, s, m).await;
        assert!(forbidden(&outcome), "{creator}: {outcome:?}");
        assert!(message(&outcome).contains("creator_id"), "{outcome:?}");
    }
    // Moving an issue between her own teams: team_id is not listed either.
    let (s, m) = send(vec![set_issue("bobs", "team_id", text("T2"))]);
    let outcome = write_outcome(&mut client, s, m).await;
    assert!(forbidden(&outcome), "{outcome:?}");
    assert!(
        message(&outcome).ends_with("issues['bobs'].team_id"),
        "{outcome:?}"
    );

    // A forbidden column refuses the whole transaction: the allowed edit before it and
    // the listed column beside it are not written either.
    let (s, m) = send(vec![
        set_issue("mine", "status", text("doing")),
        update(
            "issues",
            text("bobs"),
            &[("title", text("mine now")), ("creator_id", text("alice"))],
        ),
    ]);
    let outcome = write_outcome(&mut client, s, m).await;
    assert!(forbidden(&outcome), "{outcome:?}");
    assert_eq!(
        issue_row(&db, "bobs"),
        Some(row("T1", "bob", "issue bobs", "todo"))
    );
    assert_eq!(
        issue_row(&db, "mine"),
        Some(row("T1", "alice", "issue mine", "todo"))
    );

    // Every listed column of anyone's issue in her teams is still hers to edit.
    let (s, m) = send(vec![update(
        "issues",
        text("bobs"),
        &[
            ("title", text("triaged")),
            ("description", text("steps to reproduce")),
            ("status", text("doing")),
            ("priority", Value::Integer(3)),
            ("assignee_id", text("alice")),
            ("estimate", Value::Real(2.5)),
            ("project_id", Value::Null),
            ("updated_at", Value::Integer(7)),
        ],
    )]);
    let outcome = write_outcome(&mut client, s, m).await;
    assert!(committed(&outcome), "{outcome:?}");
    assert_eq!(
        issue_row(&db, "bobs"),
        Some(row("T1", "bob", "triaged", "doing"))
    );
    // And she deletes what she really created.
    let (s, m) = send(vec![delete_issue("mine")]);
    let outcome = write_outcome(&mut client, s, m).await;
    assert!(committed(&outcome), "{outcome:?}");
    assert_eq!(issue_row(&db, "mine"), None);

    // Bob, the real creator, still deletes his issue once he is in its team.
    let bob = Claims::for_user("bob")
        .with("teams", json!(["T1"]))
        .unwrap();
    let token = JwtAuthenticator::new(SECRET).sign(&bob);
    let mut bob = server.connect("bob-t1", Some(token)).await.unwrap();
    let outcome = write_outcome(&mut bob, 1, vec![delete_issue("bobs")]).await;
    assert!(committed(&outcome), "{outcome:?}");
}

#[tokio::test]
async fn kept_columns_may_be_set_but_not_changed() {
    let server = AuthServer::start().await;
    let db = server.db();
    let mut alice = server.user(&users()[0]).await;
    let label = Mutation::Insert {
        table: "labels".into(),
        values: vec![
            ("id".into(), text("l1")),
            ("team_id".into(), text("T1")),
            ("name".into(), text("bug")),
        ],
    };
    assert!(committed(&write_outcome(&mut alice, 1, vec![label]).await));
    // `ALLOW ALL ON labels KEEP (team_id) ...`: T1 -> T2 is between her own teams, and
    // still refused, naming the column.
    let outcome = write_outcome(
        &mut alice,
        2,
        vec![update("labels", text("l1"), &[("team_id", text("T2"))])],
    )
    .await;
    assert!(forbidden(&outcome), "{outcome:?}");
    assert_eq!(
        message(&outcome),
        "permission denied: you may not change labels['l1'].team_id"
    );
    // Setting it to the value it has, with another column, is no change.
    let outcome = write_outcome(
        &mut alice,
        3,
        vec![update(
            "labels",
            text("l1"),
            &[("team_id", text("T1")), ("name", text("defect"))],
        )],
    )
    .await;
    assert!(committed(&outcome), "{outcome:?}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: (String, String) = conn
        .query_row(
            "SELECT team_id, name FROM labels WHERE id = 'l1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(stored, ("T1".into(), "defect".into()));
}

#[tokio::test]
async fn a_chat_message_stays_with_its_author_room_and_time() {
    let server = AuthServer::start().await;
    let claims = Claims::for_user("ann")
        .with("rooms", json!(["r1", "r2"]))
        .unwrap();
    let token = JwtAuthenticator::new(SECRET).sign(&claims);
    let mut ann = server.connect("ann", Some(token)).await.unwrap();
    let message_row = Mutation::Insert {
        table: "messages".into(),
        values: vec![
            ("id".into(), Value::Integer(1)),
            ("room_id".into(), text("r1")),
            ("author_id".into(), text("ann")),
            ("body".into(), text("hello")),
            ("sent_at".into(), Value::Integer(100)),
        ],
    };
    assert!(committed(
        &write_outcome(&mut ann, 1, vec![message_row]).await
    ));
    let key = Value::Integer(1);
    let refused = [
        ("room_id", text("r2")),
        ("author_id", text("bob")),
        ("sent_at", Value::Integer(1)),
    ];
    for (seq, (column, value)) in refused.into_iter().enumerate() {
        let m = update("messages", key.clone(), &[(column, value)]);
        let outcome = write_outcome(&mut ann, seq as u64 + 2, vec![m]).await;
        assert!(forbidden(&outcome), "{column}: {outcome:?}");
        assert!(
            message(&outcome).ends_with(&format!(".{column}")),
            "{outcome:?}"
        );
    }
    let edit = update(
        "messages",
        key,
        &[
            ("body", text("hello, all")),
            ("edited_at", Value::Integer(101)),
        ],
    );
    assert!(committed(&write_outcome(&mut ann, 9, vec![edit]).await));
    let conn = rusqlite::Connection::open(server.db()).unwrap();
    let stored: (String, String, String, i64) = conn
        .query_row(
            "SELECT room_id, author_id, body, sent_at FROM messages WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        stored,
        ("r1".into(), "ann".into(), "hello, all".into(), 100)
    );
}

/// A rules file with a mistake in a column list or KEEP.
fn bad_rules(dir: &Path, text: &str) -> std::path::PathBuf {
    let rules = dir.join("bad.rules");
    std::fs::write(&rules, text).unwrap();
    rules
}

#[test]
fn mistakes_in_column_lists_and_keep_stop_startup_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "ALLOW READ ON issues;\nALLOW UPDATE (title, creator) ON issues;",
            "bad.rules:2:22",
            "unknown column `creator`",
        ),
        (
            "ALLOW READ ON issues;\n\nALLOW UPDATE ON issues\n    KEEP creator_id;",
            "bad.rules:4:10",
            "expected `(`",
        ),
        (
            "ALLOW DELETE ON issues KEEP (creator_id) WHERE creator_id = :auth.sub;",
            "bad.rules:1:24",
            "no UPDATE",
        ),
        (
            "ALLOW READ (title) ON issues;",
            "bad.rules:1:12",
            "INSERT or UPDATE only",
        ),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (text, at, what) in cases {
        let rules = bad_rules(dir.path(), text);
        let err = rt
            .block_on(
                Server::builder(schema_dir(), dir.path().join("app.db"))
                    .no_auth()
                    .rules_file(&rules)
                    .start(),
            )
            .err()
            .expect("refused");
        let m = err.to_string();
        assert!(m.contains(at) && m.contains(what), "{text}: {m}");
    }
}

#[test]
fn sluice_serve_reports_a_rules_mistake_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let rules = bad_rules(
        dir.path(),
        "-- members edit a few columns\nALLOW UPDATE (title, status,) ON issues;",
    );
    let out = sluice()
        .args(["serve", "--schema"])
        .arg(schema_dir())
        .arg("--db")
        .arg(dir.path().join("app.db"))
        .args(["--listen", "127.0.0.1:0", "--no-auth", "--rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("bad.rules:2:29") && stderr.contains("expected a column name"),
        "{stderr}"
    );
}
