//! Column and key permissions over real QUIC: fetches by key return only the rows the
//! read rule allows and never a hidden column; subscriptions naming a hidden column or
//! binding an `:auth` parameter themselves are refused, and live rows are projected.

mod common;

use std::collections::BTreeSet;

use common::auth::AuthServer;
use common::permissions::{oracle, seed_issues, users, ISSUE_TEAM, USERS_WIDTH_VISIBLE};
use common::*;
use sluice::query::Params;
use sluice::store::Mutation;
use sluice::value::Value;
use sluice::wire::{ClientMessage, ServerMessage, SubId};

#[tokio::test]
async fn fetches_return_only_readable_rows_and_columns() {
    let server = AuthServer::start().await;
    server.write(seed_issues()).await;
    server
        .write(vec![Mutation::Insert {
            table: "users".into(),
            values: vec![
                ("id".into(), text("alice")),
                ("name".into(), text("Alice")),
                ("email".into(), text("a@example.com")),
                ("password_hash".into(), text("$argon2$secret")),
            ],
        }])
        .await;
    let all_keys: Vec<Value> = (0..48).map(|i| text(&format!("i{i:02}"))).collect();
    for user in users() {
        let mut client = server.user(&user).await;
        match fetch(&mut client, 1, "issues", all_keys.clone()).await {
            ServerMessage::Fetched { rows, .. } => {
                let got: BTreeSet<String> = rows.iter().map(|r| key_string(&r[0])).collect();
                assert_eq!(
                    got,
                    oracle(&server.db(), "1", &user.rule_sql()),
                    "{}",
                    user.sub
                );
                assert!(rows.iter().all(|r| user.may_read_team(&r[ISSUE_TEAM])));
            }
            other => panic!("{other:?}"),
        }
        match fetch(&mut client, 2, "users", vec![text("alice")]).await {
            ServerMessage::Fetched { rows, columns, .. } => {
                assert_eq!(columns, vec!["id", "name", "email", "created_at"]);
                assert_eq!(rows.len(), 1);
                assert_eq!(rows[0].len(), USERS_WIDTH_VISIBLE);
                assert!(!rows[0].contains(&text("$argon2$secret")));
            }
            other => panic!("{other:?}"),
        }
        // Messages of rooms the user has not joined (no `rooms` claim): nothing.
        match fetch(&mut client, 3, "messages", vec![Value::Integer(1)]).await {
            ServerMessage::Fetched { rows, .. } => assert!(rows.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn hidden_columns_and_auth_params_are_refused() {
    let server = AuthServer::start().await;
    server
        .write(vec![Mutation::Insert {
            table: "users".into(),
            values: vec![
                ("id".into(), text("u1")),
                ("name".into(), text("U")),
                ("email".into(), text("u@example.com")),
                ("password_hash".into(), text("hash!")),
            ],
        }])
        .await;
    let alice = &users()[0];
    let mut client = server.user(alice).await;
    client
        .subscribe(1, "SELECT id, password_hash FROM users", None)
        .await;
    client
        .subscribe(
            2,
            "SELECT id FROM users WHERE password_hash LIKE 'h%'",
            None,
        )
        .await;
    client
        .subscribe(
            3,
            "SELECT * FROM users WHERE NOT (password_hash IS NULL)",
            None,
        )
        .await;
    client.subscribe(4, "SELECT * FROM users", None).await;
    client.subs.insert(SubId(5), SubState::default());
    client
        .conn
        .send(ClientMessage::Subscribe {
            sub: SubId(5),
            sql: "SELECT * FROM issues WHERE team_id IN :auth.teams".into(),
            params: Params::new().list("auth.teams", vec![text("T3"), text("T4")]),
            resume_after: None,
            resume_shape: None,
        })
        .await
        .unwrap();
    client
        .until("answers", |c| {
            [1, 2, 3, 5].iter().all(|s| c.sub(*s).failed.is_some()) && c.sub(4).end.is_some()
        })
        .await;
    for s in [1, 2, 3] {
        let m = client.sub(s).failed.clone().unwrap();
        assert!(m.contains("password_hash") && m.contains("hidden"), "{m}");
    }
    assert!(client.sub(2).failed.as_ref().unwrap().contains("column 28"));
    assert!(client
        .sub(5)
        .failed
        .as_ref()
        .unwrap()
        .contains(":auth.teams"));
    let row = &client.sub(4).rows["u1"];
    assert_eq!(row.len(), USERS_WIDTH_VISIBLE);
    assert!(!row.contains(&text("hash!")));
    // A live update carries the projected row too.
    let last = server
        .write(vec![Mutation::Update {
            table: "users".into(),
            key: text("u1"),
            set: vec![
                ("name".into(), text("U2")),
                ("password_hash".into(), text("hash2!")),
            ],
        }])
        .await;
    client.until("update", |c| c.last_sync >= last).await;
    let row = &client.sub(4).rows["u1"];
    assert_eq!(row.len(), USERS_WIDTH_VISIBLE);
    assert_eq!(row[1], text("U2"));
    assert!(!row.contains(&text("hash2!")));
}
