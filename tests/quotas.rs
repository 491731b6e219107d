//! Every quota, as a client meets it: the refused request is answered `quota_exceeded`
//! naming the quota, the rest of that client's work goes on, and other users are not
//! affected. Servers here run with small quotas so each test reaches them quickly.

mod common;

use common::auth::AuthServer;
use common::permissions::users;
use common::*;
use sluice::client::{ClientError, ConnectionError};
use sluice::server::Quotas;
use sluice::value::Value;
use sluice::wire::{ClientMessage, Quota, QuotaRequest, RefuseCode, ServerMessage, WriteOutcome};

const T1: &str = "SELECT * FROM issues WHERE team_id = 'T1'";
const T2: &str = "SELECT * FROM issues WHERE team_id = 'T2'";
const T3: &str = "SELECT * FROM issues WHERE team_id = 'T3'";
/// Shapes no index serves: `!=` gives the matcher nothing to look up.
const RESIDUAL_A: &str = "SELECT * FROM users WHERE name != 'a'";
const RESIDUAL_B: &str = "SELECT * FROM users WHERE name != 'b'";

/// Subscribes and waits until the subscription has its snapshot or its refusal.
async fn subscribe(client: &mut Client, sub: u64, sql: &str) {
    client.subscribe(sub, sql, None).await;
    client
        .until("the subscription's answer", |c| {
            let s = c.sub(sub);
            s.end.is_some() || s.quota.is_some() || s.failed.is_some()
        })
        .await;
}

fn refused_by(client: &Client, sub: u64) -> Option<Quota> {
    client.sub(sub).quota.map(|q| q.quota)
}

/// A client write that must commit, and a live change its subscription must see.
async fn still_works(server: &TestServer, client: &mut Client, seq: u64, sub: u64) {
    let id = format!("after-{seq}");
    client
        .write(seq, vec![insert_issue(&id, "T1", "todo", 1)])
        .await;
    client
        .until("the write and its live change", |c| {
            c.writes.contains_key(&seq) && c.sub(sub).rows.contains_key(&id)
        })
        .await;
    assert!(matches!(
        client.writes[&seq],
        WriteOutcome::Committed { .. }
    ));
    assert!(server.handle.session_count() > 0);
}

#[tokio::test]
async fn subscriptions_per_session() {
    let server = TestServer::with_quotas(Quotas {
        subscriptions_per_session: 2,
        ..Quotas::default()
    })
    .await;
    let mut client = server.client("c").await;
    subscribe(&mut client, 1, T1).await;
    subscribe(&mut client, 2, T2).await;
    subscribe(&mut client, 3, T3).await;
    assert_eq!(refused_by(&client, 3), Some(Quota::SubscriptionsPerSession));
    assert_eq!(client.sub(3).quota.unwrap().limit, 2);
    still_works(&server, &mut client, 1, 1).await;
    // Another session has its own places.
    let mut other = server.client("other").await;
    subscribe(&mut other, 1, T1).await;
    subscribe(&mut other, 2, T2).await;
    assert!(other.sub(2).end.is_some());
    // A place freed is a place again, under the refused id.
    client
        .conn
        .send(ClientMessage::Unsubscribe { sub: 2.into() })
        .await
        .unwrap();
    subscribe(&mut client, 3, T3).await;
    assert!(client.sub(3).end.is_some());
    server.handle.shutdown().await;
}

#[tokio::test]
async fn subscriptions_per_user_count_every_session_of_the_user() {
    let server = AuthServer::with_quotas(Quotas {
        subscriptions_per_user: 2,
        ..Quotas::default()
    })
    .await;
    let (alice, bob) = (&users()[0], &users()[1]);
    let mut phone = server.connect("phone", Some(alice.token())).await.unwrap();
    let mut laptop = server.connect("laptop", Some(alice.token())).await.unwrap();
    subscribe(&mut phone, 1, T1).await;
    subscribe(&mut laptop, 1, T2).await;
    subscribe(&mut laptop, 2, T1).await;
    assert_eq!(refused_by(&laptop, 2), Some(Quota::SubscriptionsPerUser));
    assert!(phone.sub(1).end.is_some() && laptop.sub(1).end.is_some());
    assert_eq!(server.handle.user_usage("alice").subscriptions, 2);
    // Bob is not affected.
    let mut bob = server.user(bob).await;
    subscribe(&mut bob, 1, T1).await;
    subscribe(&mut bob, 2, T2).await;
    assert!(bob.sub(2).end.is_some());
    // A session that ends gives its places back.
    phone.conn.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.handle.user_usage("alice").subscriptions > 1 {
        assert!(tokio::time::Instant::now() < deadline, "places given back");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    subscribe(&mut laptop, 3, T1).await;
    assert!(laptop.sub(3).end.is_some());
    server.handle.shutdown().await;
}

#[tokio::test]
async fn residual_shapes_per_user() {
    let server = AuthServer::with_quotas(Quotas {
        residual_shapes_per_user: 1,
        ..Quotas::default()
    })
    .await;
    let (alice, bob) = (&users()[0], &users()[1]);
    let mut client = server.user(alice).await;
    subscribe(&mut client, 1, RESIDUAL_A).await;
    subscribe(&mut client, 2, RESIDUAL_B).await;
    assert_eq!(refused_by(&client, 2), Some(Quota::ResidualShapesPerUser));
    // Indexed subscriptions are not counted.
    subscribe(&mut client, 3, "SELECT * FROM users WHERE id = 'bob'").await;
    assert!(client.sub(3).end.is_some());
    let mut bob = server.user(bob).await;
    subscribe(&mut bob, 1, RESIDUAL_B).await;
    assert!(bob.sub(1).end.is_some());
    assert_eq!(server.handle.user_usage("alice").residual, 1);
    server.handle.shutdown().await;
}

#[tokio::test]
async fn residual_shapes_in_total_count_distinct_shapes() {
    let server = TestServer::with_quotas(Quotas {
        residual_shapes: 1,
        ..Quotas::default()
    })
    .await;
    let mut first = server.client("first").await;
    let mut second = server.client("second").await;
    subscribe(&mut first, 1, RESIDUAL_A).await;
    // The same shape costs nothing more: it is shared.
    subscribe(&mut second, 1, RESIDUAL_A).await;
    assert!(second.sub(1).end.is_some());
    subscribe(&mut second, 2, RESIDUAL_B).await;
    assert_eq!(refused_by(&second, 2), Some(Quota::ResidualShapes));
    subscribe(&mut second, 3, T1).await;
    assert!(second.sub(3).end.is_some());
    still_works(&server, &mut second, 1, 3).await;
    // Once nobody holds the residual shape, another may take its place.
    for client in [&mut first, &mut second] {
        client
            .conn
            .send(ClientMessage::Unsubscribe { sub: 1.into() })
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        subscribe(&mut second, 4, RESIDUAL_B).await;
        if second.sub(4).end.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        second.subs.remove(&4.into());
    }
    server.handle.shutdown().await;
}

/// Sends a pin and returns its answer.
async fn pin(client: &mut Client, keys: &[&str]) -> ServerMessage {
    let keys = keys.iter().map(|k| text(k)).collect();
    client
        .conn
        .send(ClientMessage::Pin {
            table: "users".into(),
            keys,
        })
        .await
        .unwrap();
    loop {
        let event = tokio::time::timeout(WAIT, client.conn.next_event())
            .await
            .expect("an answer in time")
            .expect("connection open");
        match event {
            sluice::client::Event::Control(
                m @ (ServerMessage::Pinned { .. } | ServerMessage::QuotaExceeded { .. }),
            ) => return m,
            other => client.handle(other),
        }
    }
}

#[tokio::test]
async fn pins_per_session() {
    let server = TestServer::with_quotas(Quotas {
        pins_per_session: 3,
        ..Quotas::default()
    })
    .await;
    let mut client = server.client("c").await;
    subscribe(&mut client, 1, T1).await;
    assert!(matches!(
        pin(&mut client, &["a", "b", "c"]).await,
        ServerMessage::Pinned { pinned: 3, .. }
    ));
    match pin(&mut client, &["d"]).await {
        ServerMessage::QuotaExceeded {
            request: QuotaRequest::Pin { table },
            exceeded,
        } => {
            assert_eq!(table, "users");
            assert_eq!(exceeded.quota, Quota::PinsPerSession);
            assert_eq!(exceeded.limit, 3);
        }
        other => panic!("expected a quota refusal, got {other:?}"),
    }
    // Keys already pinned may be pinned again, and the session goes on.
    assert!(matches!(
        pin(&mut client, &["a"]).await,
        ServerMessage::Pinned { pinned: 3, .. }
    ));
    let answer = fetch(&mut client, 1, "users", vec![text("a")]).await;
    assert!(
        matches!(answer, ServerMessage::Fetched { .. }),
        "{answer:?}"
    );
    still_works(&server, &mut client, 1, 1).await;
    let mut other = server.client("other").await;
    assert!(matches!(
        pin(&mut other, &["a", "b", "c"]).await,
        ServerMessage::Pinned { pinned: 3, .. }
    ));
    server.handle.shutdown().await;
}

#[tokio::test]
async fn connections_in_total_are_refused_with_a_reason() {
    let server = TestServer::with_quotas(Quotas {
        connections: 2,
        ..Quotas::default()
    })
    .await;
    let mut first = server.client("first").await;
    let second = server.client("second").await;
    let refused =
        Client::connect_with(server.handle.local_addr(), &server.ca(), "third", None).await;
    match refused {
        Err(ConnectionError::Refused { code, message }) => {
            assert_eq!(code, RefuseCode::QuotaExceeded(Quota::Connections));
            assert!(message.contains("quota_exceeded: connections"), "{message}");
        }
        Err(other) => panic!("refused without the quota: {other}"),
        Ok(_) => panic!("the quota was not enforced"),
    }
    subscribe(&mut first, 1, T1).await;
    still_works(&server, &mut first, 1, 1).await;
    second.conn.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let again =
            Client::connect_with(server.handle.local_addr(), &server.ca(), "again", None).await;
        if again.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a freed place is a place"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.handle.shutdown().await;
}

/// The client library surfaces a refused subscription as `ClientError::QuotaExceeded`,
/// and a load whose pin was refused as a failed load naming the quota; its other
/// subscriptions stay live.
#[tokio::test]
async fn the_client_library_surfaces_the_quota() {
    let server = TestServer::with_quotas(Quotas {
        subscriptions_per_session: 1,
        pins_per_session: 2,
        ..Quotas::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let client = common::client::client_of(&server.handle, &dir.path().join("c.db")).await;
    let first = client.subscribe(T1, Default::default()).unwrap();
    first.ready().await.unwrap();
    let second = client.subscribe(T2, Default::default()).unwrap();
    match tokio::time::timeout(WAIT, second.ready()).await.unwrap() {
        Err(ClientError::QuotaExceeded(exceeded)) => {
            assert_eq!(exceeded.quota, Quota::SubscriptionsPerSession);
            assert_eq!(
                exceeded.to_string(),
                "quota_exceeded: subscriptions_per_session (limit 1)"
            );
        }
        other => panic!("expected the quota, got {other:?}"),
    }
    let keys: Vec<Value> = ["u1", "u2", "u3"].iter().map(|k| text(k)).collect();
    let loaded = tokio::time::timeout(WAIT, client.load_many("users", keys))
        .await
        .unwrap();
    match loaded {
        Err(ClientError::Fetch(message)) => {
            assert!(
                message.contains("quota_exceeded: pins_per_session"),
                "{message}"
            )
        }
        other => panic!("expected the pin quota, got {other:?}"),
    }
    server
        .write(vec![insert_issue("live", "T1", "todo", 1)])
        .await;
    common::client::eventually("the live change", || {
        common::client::ids(&client, "SELECT id FROM issues").contains(&"live".to_string())
    })
    .await;
    server.handle.shutdown().await;
}

/// `sluice serve` takes quotas from a config file and from `--quota NAME=VALUE` (the
/// flag wins), and refuses an unknown quota with one clear line; `sluice sub` prints the
/// refusal with the quota's name and exits 2.
#[test]
fn the_command_line_sets_quotas() {
    use common::cli::{serve_with, sluice, sub};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.json");
    std::fs::write(
        &config,
        r#"{"quotas": {"subscriptions_per_session": 5, "residual_shapes": 0}}"#,
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let served = serve_with(
        &dir.path().join("app.db"),
        &[
            "--no-auth",
            "--config",
            config,
            "--quota",
            "subscriptions_per_session=0",
        ],
    );
    let (code, lines, stderr) = sub(&served, T1);
    assert_eq!(code, 2, "{stderr}");
    assert!(lines.is_empty());
    assert!(
        stderr.contains("quota_exceeded: subscriptions_per_session (limit 0)"),
        "{stderr}"
    );
    drop(served);
    let out = sluice()
        .args(["serve", "--schema"])
        .arg(schema_dir())
        .arg("--db")
        .arg(dir.path().join("other.db"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-auth",
            "--quota",
            "subscriptions=5",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(stderr.contains("unknown quota `subscriptions`"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
