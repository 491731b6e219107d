//! Read permissions over real QUIC: read rules ANDed into subscriptions and resumes,
//! adversarial subscriptions trying to escape them, move-out reasons, shapes shared by
//! identical bindings, and the bound rule kept from the client. SQLite is the oracle:
//! every user must see exactly `subscription AND rule`, and nothing else, ever.

mod common;

use std::collections::BTreeSet;

use common::auth::AuthServer;
use common::permissions::{issue, oracle, seed_issues, users, User, ISSUE_TEAM, TEAMS};
use common::*;
use serde_json::json;
use sluice::client::Event;
use sluice::ids::{SubId, SyncId};
use sluice::store::Mutation;
use sluice::value::Value;
use sluice::wire::{BootstrapFrame, MoveOut, RowEvent, ServerMessage};

/// Escape attempts: (subscription, the same WHERE for SQLite).
const ESCAPES: [(&str, &str); 10] = [
    ("SELECT * FROM issues", "1"),
    (
        "SELECT * FROM issues WHERE team_id = 'T3' OR team_id IS NULL",
        "team_id = 'T3' OR team_id IS NULL",
    ),
    (
        "SELECT * FROM issues WHERE NOT (team_id = 'T1')",
        "NOT (team_id = 'T1')",
    ),
    (
        "SELECT * FROM issues WHERE NOT (team_id IN ('T1', 'T2') AND priority > 100)",
        "NOT (team_id IN ('T1', 'T2') AND priority > 100)",
    ),
    (
        "SELECT * FROM issues WHERE team_id = ':auth.teams' OR title = ':auth.sub'",
        "team_id = ':auth.teams' OR title = ':auth.sub'",
    ),
    (
        "SELECT * FROM issues WHERE assignee_id IS NULL OR assignee_id IS NOT NULL",
        "assignee_id IS NULL OR assignee_id IS NOT NULL",
    ),
    (
        "SELECT * FROM issues WHERE priority >= 0 OR priority < 0 OR priority IS NULL",
        "priority >= 0 OR priority < 0 OR priority IS NULL",
    ),
    (
        "SELECT id, team_id, title FROM issues WHERE status != 'x' OR status IS NULL",
        "status != 'x' OR status IS NULL",
    ),
    (
        "SELECT * FROM issues WHERE team_id LIKE '%' OR NOT (team_id LIKE '%')",
        "team_id LIKE '%' OR NOT (team_id LIKE '%')",
    ),
    (
        "SELECT * FROM issues WHERE status = 'todo' AND NOT (team_id NOT IN ('T4'))",
        "status = 'todo' AND NOT (team_id NOT IN ('T4'))",
    ),
];

/// Applies one event to the client, first checking that no `issues` row image it
/// carries breaks the user's read rule. Returns the number of leaked rows in it.
fn check_and_handle(client: &mut Client, user: &User, event: Event) -> usize {
    let mut leaks = 0;
    let mut check = |row: &[Value]| {
        if !user.may_read_team(&row[ISSUE_TEAM]) {
            leaks += 1;
        }
    };
    match &event {
        Event::Bootstrap(sub, BootstrapFrame::Row { row, .. }) if *sub != SENTINEL => check(row),
        Event::Bootstrap(
            sub,
            BootstrapFrame::Replay {
                event: RowEvent::Insert { row, .. } | RowEvent::Update { row, .. },
                ..
            },
        ) if *sub != SENTINEL => check(row),
        Event::Live(txn) => {
            for (_, table, e) in &txn.events {
                if let RowEvent::Insert { row, .. } | RowEvent::Update { row, .. } = e {
                    if table == "issues" {
                        check(row)
                    }
                }
            }
        }
        _ => {}
    }
    client.handle(event);
    leaks
}

async fn drive(
    client: &mut Client,
    user: &User,
    what: &str,
    reasons: &mut Vec<(String, MoveOut)>,
    done: impl Fn(&Client) -> bool,
) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut leaks = 0;
    while !done(client) {
        let event = match tokio::time::timeout_at(deadline, client.conn.next_event()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("{}: connection ended waiting for {what}", user.sub),
            Err(_) => panic!("{}: timed out waiting for {what}", user.sub),
        };
        if let Event::Live(txn) = &event {
            for (_, _, e) in &txn.events {
                if let RowEvent::Delete { key, reason } = e {
                    reasons.push((key_string(key), *reason));
                }
            }
        }
        leaks += check_and_handle(client, user, event);
    }
    leaks
}

/// A subscription every user has, to learn when all earlier transactions have arrived.
const SENTINEL: SubId = SubId(50);

fn sentinel_user() -> Mutation {
    Mutation::Insert {
        table: "users".into(),
        values: vec![
            ("id".into(), text("sentinel")),
            ("name".into(), text("S")),
            ("email".into(), text("s@example.com")),
        ],
    }
}

#[tokio::test]
async fn escape_attempts_see_exactly_subscription_and_rule() {
    let server = AuthServer::start().await;
    server.write(seed_issues()).await;
    let users = users();
    let mut clients = Vec::new();
    let mut leaks = 0;
    let mut reasons: Vec<Vec<(String, MoveOut)>> = Vec::new();
    for user in &users {
        let mut client = server.user(user).await;
        for (n, (sql, _)) in ESCAPES.iter().enumerate() {
            client.subscribe(n as u64 + 1, sql, None).await;
        }
        // Every user may read users: the sentinel write below reaches everyone.
        client
            .subscribe(SENTINEL, "SELECT * FROM users", None)
            .await;
        // A constant predicate is refused outright.
        client
            .subscribe(
                99,
                "SELECT * FROM issues WHERE team_id = 'T3' OR 1 = 1",
                None,
            )
            .await;
        let mut r = Vec::new();
        leaks += drive(&mut client, user, "snapshots", &mut r, |c| {
            (1..=ESCAPES.len() as u64).all(|s| c.sub(s).end.is_some())
                && c.sub(99).failed.is_some()
                && c.sub(SENTINEL).end.is_some()
        })
        .await;
        assert!(client.sub(99).failed.as_ref().unwrap().contains("constant"));
        reasons.push(r);
        clients.push(client);
    }

    // Live changes: moves between teams, a status change, inserts into every team, and
    // deletes, written by the backend.
    server
        .write(vec![
            set_issue("i00", "team_id", text("T3")), // T1 -> T3: alice loses it
            set_issue("i02", "team_id", text("T2")), // T3 -> T2: alice and bob gain it
            set_issue("i05", "status", text("done")), // T2, within
            set_issue("i03", "team_id", text("T1")), // T4 -> T1
        ])
        .await;
    let mut writes = Vec::new();
    for (i, team) in TEAMS.iter().enumerate() {
        writes.push(issue(&format!("n{i}"), team, "alice", "todo", 7));
    }
    server.write(writes).await;
    server
        .write(vec![delete_issue("i01"), delete_issue("i06")])
        .await;
    server
        .write(vec![set_issue("i04", "team_id", text("T4"))]) // T1 -> T4
        .await;
    let last = server.write(vec![sentinel_user()]).await;

    let mut checked = 0;
    for ((user, client), reasons) in users.iter().zip(&mut clients).zip(&mut reasons) {
        leaks += drive(client, user, "live changes", reasons, |c| {
            c.last_sync >= last
        })
        .await;
        for (n, (_, where_sql)) in ESCAPES.iter().enumerate() {
            let sub = n as u64 + 1;
            let expected = oracle(&server.db(), where_sql, &user.rule_sql());
            let seen: BTreeSet<String> = client.sub(sub).rows.keys().cloned().collect();
            assert_eq!(seen, expected, "{} / {}", user.sub, ESCAPES[n].0);
            // Every row ever delivered was readable when delivered (checked above); none
            // of another team even flashed by.
            checked += expected.len();
        }
    }
    assert_eq!(leaks, 0, "rows outside the read rule were delivered");
    assert!(checked > 0);
    // alice's unfiltered subscription lost i00 and i04 because they left her teams.
    let alice = &reasons[0];
    assert!(
        alice.contains(&("i00".into(), MoveOut::Forbidden)),
        "{alice:?}"
    );
    assert!(
        alice.contains(&("i04".into(), MoveOut::Forbidden)),
        "{alice:?}"
    );
    assert!(
        alice.contains(&("i01".into(), MoveOut::Deleted)),
        "{alice:?}"
    );
}

#[tokio::test]
async fn move_out_reason_tells_forbidden_from_moved_out() {
    let server = AuthServer::start().await;
    server
        .write(vec![
            issue("a", "T1", "bob", "todo", 1),
            issue("b", "T1", "bob", "todo", 1),
        ])
        .await;
    let alice = &users()[0];
    let mut client = server.user(alice).await;
    client
        .subscribe(1, "SELECT * FROM issues WHERE status = 'todo'", None)
        .await;
    let mut reasons = Vec::new();
    drive(&mut client, alice, "snapshot", &mut reasons, |c| {
        c.sub(1).end.is_some()
    })
    .await;
    server
        .write(vec![set_issue("a", "status", text("done"))])
        .await;
    let last = server
        .write(vec![set_issue("b", "team_id", text("T4"))])
        .await;
    drive(&mut client, alice, "moves", &mut reasons, |c| {
        c.last_sync >= last
    })
    .await;
    assert_eq!(
        reasons,
        vec![
            ("a".to_string(), MoveOut::MovedOut),
            ("b".to_string(), MoveOut::Forbidden)
        ]
    );
}

#[tokio::test]
async fn resume_from_zero_replays_only_readable_rows() {
    let server = AuthServer::start().await;
    server.write(seed_issues()).await;
    server
        .write(vec![set_issue("i00", "team_id", text("T4"))])
        .await;
    server
        .write(vec![set_issue("i03", "team_id", text("T2"))])
        .await;
    server.write(vec![delete_issue("i05")]).await;
    for user in users() {
        let mut client = server.user(&user).await;
        client
            .subscribe(1, "SELECT * FROM issues", Some(SyncId::ZERO))
            .await;
        let mut leaks = 0;
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut replayed_forbidden = Vec::new();
        while client.sub(1).end.is_none() {
            let event = tokio::time::timeout_at(deadline, client.conn.next_event())
                .await
                .expect("replay in time")
                .expect("connection open");
            if let Event::Bootstrap(
                _,
                BootstrapFrame::Replay {
                    event:
                        RowEvent::Delete {
                            key,
                            reason: MoveOut::Forbidden,
                        },
                    ..
                },
            ) = &event
            {
                replayed_forbidden.push(key_string(key));
            }
            leaks += check_and_handle(&mut client, &user, event);
        }
        assert_eq!(leaks, 0, "{}: replay leaked rows", user.sub);
        let seen: BTreeSet<String> = client.sub(1).rows.keys().cloned().collect();
        assert_eq!(
            seen,
            oracle(&server.db(), "1", &user.rule_sql()),
            "{}",
            user.sub
        );
        // The replay is net: i00 entered and left alice's view after sync id 0, so a
        // client that had nothing at 0 hears nothing of it (no row, no move-out).
        assert!(replayed_forbidden.is_empty(), "{replayed_forbidden:?}");
    }
}

#[tokio::test]
async fn identical_bindings_share_one_shape() {
    let server = AuthServer::start().await;
    let same_teams = User {
        sub: "zoe",
        teams: Some(json!(["T2", "T1"])),
    };
    let sql = "SELECT * FROM issues WHERE status = 'todo'";
    let mut a = server.user(&users()[0]).await;
    let mut z = server.user(&same_teams).await;
    let mut b = server.user(&users()[1]).await;
    for c in [&mut a, &mut z, &mut b] {
        c.subscribe(1, sql, None).await;
        c.until("snapshot", |c| c.sub(1).end.is_some()).await;
    }
    assert_eq!(
        server.handle.shape_count(),
        2,
        "alice and zoe share, bob differs"
    );
}

#[tokio::test]
async fn the_bound_read_rule_is_never_shown_to_the_client() {
    let server = AuthServer::start().await;
    let alice = &users()[0];
    let mut client = server.user(alice).await;
    client
        .subscribe(1, "SELECT * FROM issues WHERE status = 'todo'", None)
        .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let event = tokio::time::timeout_at(deadline, client.conn.next_event())
            .await
            .expect("an answer in time")
            .expect("connection open");
        if let Event::Control(ServerMessage::Subscribed { shape, .. }) = &event {
            assert!(shape.contains("status = 'todo'"), "{shape}");
            assert!(!shape.contains("team_id"), "the rule leaked: {shape}");
            assert!(!shape.contains("T1"), "a claim leaked: {shape}");
            break;
        }
        client.handle(event);
    }
}
