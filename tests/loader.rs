//! The batch loader against a real server over QUIC: coalescing, local hits, not-found,
//! pinned rows kept live (updates, deletes, permission loss), eviction and TTL,
//! split fetches, hydration, permissions, and pins across a restart.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::auth::{start_with_rules, token};
use common::client::{config_at, eventually, subscribed, wait_online};
use common::{backend_write, insert_issue, set_issue, text, TestServer, WAIT};
use sluice::client::{Client, ClientError, LoaderConfig};
use sluice::query::Params;
use sluice::server::ServerHandle;
use sluice::store::Mutation;
use sluice::value::Value;
use sluice::wire::{ClientMessage, ServerMessage, MAX_FETCH_KEYS};

/// A batch window wide enough that a test's loads, issued back to back, share a batch.
fn wide_window() -> LoaderConfig {
    LoaderConfig {
        batch_window: Duration::from_millis(50),
        ..LoaderConfig::default()
    }
}

async fn client_with(
    server: &ServerHandle,
    db: &Path,
    loader: LoaderConfig,
    token: Option<String>,
) -> Client {
    let mut config = config_at(server.local_addr(), server.cert_path().unwrap(), db).loader(loader);
    if let Some(token) = token {
        config = config.token(token);
    }
    let client = Client::open(config).await.unwrap();
    wait_online(&client).await;
    client
}

/// A client on a fresh local store (kept in the returned folder) with [`wide_window`].
async fn wide_client(server: &TestServer) -> (tempfile::TempDir, Client) {
    let local = tempfile::tempdir().unwrap();
    let client = client_with(
        &server.handle,
        &local.path().join("c.db"),
        wide_window(),
        None,
    )
    .await;
    (local, client)
}

fn user_id(i: usize) -> String {
    format!("u{i:04}")
}

fn insert_user(i: usize, name: &str) -> Mutation {
    Mutation::Insert {
        table: "users".into(),
        values: vec![
            ("id".into(), text(&user_id(i))),
            ("name".into(), text(name)),
            ("email".into(), text(&format!("{}@example.com", user_id(i)))),
            ("password_hash".into(), text("$secret")),
        ],
    }
}

fn set_user_name(i: usize, name: &str) -> Mutation {
    Mutation::Update {
        table: "users".into(),
        key: text(&user_id(i)),
        set: vec![("name".into(), text(name))],
    }
}

fn delete_user(i: usize) -> Mutation {
    Mutation::Delete {
        table: "users".into(),
        key: text(&user_id(i)),
    }
}

async fn seed_users(server: &TestServer, n: usize) {
    let mutations = (0..n)
        .map(|i| insert_user(i, &format!("user {i}")))
        .collect();
    server.write(mutations).await;
}

/// Column 1 of `users` / `issues`.
fn name_of(row: &Option<Vec<Value>>) -> Option<Value> {
    row.as_ref().map(|r| r[1].clone())
}

fn user_row(client: &Client, i: usize) -> Option<Vec<Value>> {
    client.row("users", &text(&user_id(i))).unwrap()
}

#[tokio::test]
async fn concurrent_loads_fetch_each_key_once_in_few_requests() {
    let server = TestServer::start().await;
    seed_users(&server, 100).await;
    let (_local, client) = wide_client(&server).await;
    let loads: Vec<_> = (0..1000)
        .map(|i| (i % 100, client.load("users", text(&user_id(i % 100)))))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, load) in loads {
        tasks.spawn(async move { (i, load.await) });
    }
    let mut answered = 0;
    while let Some(joined) = tasks.join_next().await {
        let (i, row) = joined.unwrap();
        assert_eq!(name_of(&row.unwrap()), Some(text(&format!("user {i}"))));
        answered += 1;
    }
    assert_eq!(answered, 1000);
    let stats = client.fetch_stats();
    assert_eq!(stats.keys, 100, "each key fetched once: {stats:?}");
    assert!(stats.requests <= 3, "a few fetch requests: {stats:?}");
    assert_eq!(stats.coalesced, 900, "{stats:?}");
    assert_eq!(client.pinned_count(), 100);
    // Everything is local now: loading again asks the server nothing.
    for i in 0..100 {
        assert!(client
            .load("users", text(&user_id(i)))
            .await
            .unwrap()
            .is_some());
    }
    assert_eq!(client.fetch_stats().keys, 100);
    assert_eq!(client.fetch_stats().local_hits, 100);
}

#[tokio::test]
async fn rows_covered_locally_are_answered_without_a_request() {
    let server = TestServer::start().await;
    seed_users(&server, 10).await;
    let (_local, client) = wide_client(&server).await;
    subscribed(
        &client,
        "SELECT * FROM users WHERE id IN ('u0001', 'u0002')",
    )
    .await;
    let rows = client
        .load_many("users", vec![text(&user_id(1)), text(&user_id(2))])
        .await
        .unwrap();
    assert_eq!(name_of(&rows[0]), Some(text("user 1")));
    assert_eq!(name_of(&rows[1]), Some(text("user 2")));
    let stats = client.fetch_stats();
    assert_eq!((stats.requests, stats.local_hits), (0, 2), "{stats:?}");
    assert_eq!(client.pinned_count(), 0, "covered rows need no pin");
    // A local write not yet confirmed is visible, hence a local hit too.
    client
        .transaction()
        .insert(
            "users",
            vec![
                ("id", text("local")),
                ("name", text("Local")),
                ("email", text("l@example.com")),
            ],
        )
        .commit()
        .unwrap();
    let row = client.load("users", text("local")).await.unwrap();
    assert_eq!(name_of(&row), Some(text("Local")));
    assert_eq!(client.fetch_stats().requests, 0);
    // A miss is fetched once, then it is local.
    let row = client.load("users", text(&user_id(3))).await.unwrap();
    assert_eq!(name_of(&row), Some(text("user 3")));
    assert!(client
        .load("users", text(&user_id(3)))
        .await
        .unwrap()
        .is_some());
    assert_eq!(client.fetch_stats().requests, 1);
}

#[tokio::test]
async fn missing_rows_resolve_to_none() {
    let server = TestServer::start().await;
    seed_users(&server, 3).await;
    let (_local, client) = wide_client(&server).await;
    let rows = client
        .load_many(
            "users",
            vec![text(&user_id(0)), text("nobody"), text(&user_id(2))],
        )
        .await
        .unwrap();
    assert!(rows[0].is_some() && rows[1].is_none() && rows[2].is_some());
    assert_eq!(client.pinned_count(), 2, "a missing key is not pinned");
    assert!(matches!(
        client.load("no_such_table", text("x")).await,
        Err(ClientError::UnknownTable(_))
    ));
    // Not found is not remembered: the row may appear later.
    server.write(vec![insert_user(7, "late")]).await;
    let row = client.load("users", text(&user_id(7))).await.unwrap();
    assert_eq!(name_of(&row), Some(text("late")));
}

#[tokio::test]
async fn pinned_rows_receive_updates_and_deletes() {
    let server = TestServer::start().await;
    seed_users(&server, 5).await;
    let (_local, client) = wide_client(&server).await;
    client.load("users", text(&user_id(1))).await.unwrap();
    client.load("users", text(&user_id(2))).await.unwrap();
    // Each pinned key is one entry of the server's pin index, no shape of its own.
    assert_eq!(server.handle.pinned_rows(), 2);
    assert_eq!(server.handle.shape_count(), 0);
    server.write(vec![set_user_name(1, "renamed")]).await;
    eventually("the update of a pinned row", || {
        name_of(&user_row(&client, 1)) == Some(text("renamed"))
    })
    .await;
    server.write(vec![delete_user(2)]).await;
    eventually("the delete of a pinned row", || {
        user_row(&client, 2).is_none()
    })
    .await;
    // A row that was not loaded does not arrive.
    server.write(vec![set_user_name(3, "not pinned")]).await;
    server.write(vec![set_user_name(1, "again")]).await;
    eventually("a later update", || {
        name_of(&user_row(&client, 1)) == Some(text("again"))
    })
    .await;
    assert!(user_row(&client, 3).is_none());
    // Released: no longer live, gone from the view.
    let pinned = server.handle.pinned_rows();
    client.unpin("users", text(&user_id(1))).await.unwrap();
    assert!(user_row(&client, 1).is_none());
    eventually("the server forgets the pin", || {
        server.handle.pinned_rows() == pinned - 1
    })
    .await;
    server.write(vec![set_user_name(1, "after unpin")]).await;
    server.write(vec![set_user_name(4, "marker")]).await;
    client.load("users", text(&user_id(4))).await.unwrap();
    assert!(user_row(&client, 1).is_none());
}

#[tokio::test]
async fn eviction_at_the_bound_releases_rows_no_subscription_covers() {
    let server = TestServer::start().await;
    seed_users(&server, 10).await;
    let local = tempfile::tempdir().unwrap();
    let config = LoaderConfig {
        max_pins: 3,
        ..wide_window()
    };
    let client = client_with(&server.handle, &local.path().join("c.db"), config, None).await;
    for i in [1, 2, 3] {
        client.load("users", text(&user_id(i))).await.unwrap();
    }
    // u0001 is also covered by a subscription from now on.
    let _sub = subscribed(&client, "SELECT * FROM users WHERE id = 'u0001'").await;
    client.load("users", text(&user_id(4))).await.unwrap();
    assert_eq!(client.pinned_count(), 3);
    assert_eq!(client.fetch_stats().evicted, 1);
    assert!(
        user_row(&client, 1).is_some(),
        "evicted, but the subscription covers it"
    );
    client.load("users", text(&user_id(5))).await.unwrap();
    assert_eq!(client.fetch_stats().evicted, 2);
    assert!(
        user_row(&client, 2).is_none(),
        "evicted and uncovered: gone"
    );
    for i in [3, 4, 5] {
        assert!(user_row(&client, i).is_some());
    }
    // Using a pin makes it recent: u0003 survives the next eviction, u0004 does not.
    client.load("users", text(&user_id(3))).await.unwrap();
    client.load("users", text(&user_id(6))).await.unwrap();
    assert!(user_row(&client, 3).is_some());
    assert!(user_row(&client, 4).is_none());
    // An evicted row is fetched again on the next load.
    let before = client.fetch_stats().requests;
    client.load("users", text(&user_id(2))).await.unwrap();
    assert_eq!(client.fetch_stats().requests, before + 1);
}

#[tokio::test]
async fn pins_expire_after_their_ttl() {
    let server = TestServer::start().await;
    seed_users(&server, 3).await;
    let local = tempfile::tempdir().unwrap();
    let config = LoaderConfig {
        pin_ttl: Some(Duration::from_millis(200)),
        ..wide_window()
    };
    let client = client_with(&server.handle, &local.path().join("c.db"), config, None).await;
    let _sub = subscribed(&client, "SELECT * FROM users WHERE id = 'u0002'").await;
    let row = client.load("users", text(&user_id(1))).await.unwrap();
    assert!(row.is_some());
    assert!(user_row(&client, 1).is_some());
    eventually("the pin to expire", || client.pinned_count() == 0).await;
    assert!(user_row(&client, 1).is_none());
    assert_eq!(client.fetch_stats().expired, 1);
    assert!(user_row(&client, 2).is_some(), "subscribed rows stay");
}

#[tokio::test]
async fn large_loads_are_split_into_bounded_fetches() {
    let server = TestServer::start().await;
    // Wide rows, so that one fetch answer also spans several frames.
    let bio = "x".repeat(600);
    let n = 2500;
    let mutations = (0..n)
        .map(|i| insert_user(i, &format!("{i} {bio}")))
        .collect();
    server.write(mutations).await;
    let (_local, client) = wide_client(&server).await;
    let keys: Vec<Value> = (0..n).map(|i| text(&user_id(i))).collect();
    let rows = client.load_many("users", keys).await.unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(name_of(row), Some(text(&format!("{i} {bio}"))));
    }
    let stats = client.fetch_stats();
    assert_eq!(
        stats.requests as usize,
        n.div_ceil(MAX_FETCH_KEYS),
        "{stats:?}"
    );
    assert_eq!(stats.keys as usize, n);
    // All of them stay live, past the length of a client's own IN list too.
    assert!(n > sluice::query::MAX_IN_LIST);
    server
        .write(vec![set_user_name(n - 1, "last, renamed")])
        .await;
    eventually("the update of the last pinned row", || {
        name_of(&user_row(&client, n - 1)) == Some(text("last, renamed"))
    })
    .await;

    // Over the protocol, a fetch past the bound is refused with a clear reason.
    let mut raw = server.client("raw").await;
    let keys: Vec<Value> = (0..=MAX_FETCH_KEYS).map(|i| text(&user_id(i))).collect();
    raw.conn
        .send(ClientMessage::Fetch {
            request: 9,
            table: "users".into(),
            keys,
        })
        .await
        .unwrap();
    let message = loop {
        match tokio::time::timeout(WAIT, raw.conn.next_event()).await {
            Ok(Some(sluice::client::Event::Control(ServerMessage::FetchFailed {
                request: 9,
                message,
            }))) => break message,
            Ok(Some(_)) => {}
            other => panic!("no answer: {other:?}"),
        }
    };
    assert!(message.contains("at most 1000"), "{message}");
}

#[tokio::test]
async fn hydration_resolves_with_its_snapshot_and_expires() {
    let server = TestServer::start().await;
    server
        .write(vec![insert_issue("i1", "T1", "todo", 1)])
        .await;
    let comments = (0..20)
        .map(|i| Mutation::Insert {
            table: "comments".into(),
            values: vec![
                ("id".into(), text(&format!("c{i:02}"))),
                ("issue_id".into(), text(if i < 15 { "i1" } else { "i2" })),
                ("team_id".into(), text("T1")),
                ("author_id".into(), text("u0001")),
                ("body".into(), text("hello")),
            ],
        })
        .collect();
    server.write(comments).await;
    let (_local, client) = wide_client(&server).await;
    let sql = "SELECT * FROM comments WHERE issue_id = :id";
    let params = Params::new().value("id", text("i1"));
    let ttl = Duration::from_millis(300);
    let sub = client.hydrate(sql, params.clone(), ttl).await.unwrap();
    let count = |c: &Client| c.query("SELECT count(*) FROM comments", &[]).unwrap()[0][0].clone();
    assert_eq!(count(&client), Value::Integer(15), "resolved when complete");
    let again = client.hydrate(sql, params, ttl).await.unwrap();
    assert_eq!(again.id, sub.id, "hydrating again reuses the subscription");
    assert_eq!(client.hydrated_count(), 1);
    eventually("the hydration to expire", || client.hydrated_count() == 0).await;
    assert_eq!(count(&client), Value::Integer(0));
    assert!(client.subscription(sub.id).is_none());
}

#[tokio::test]
async fn pins_persist_and_are_refreshed_after_a_restart() {
    let server = TestServer::start().await;
    seed_users(&server, 3).await;
    let local = tempfile::tempdir().unwrap();
    let db = local.path().join("c.db");
    let client = client_with(&server.handle, &db, wide_window(), None).await;
    client.load("users", text(&user_id(1))).await.unwrap();
    client.load("users", text(&user_id(2))).await.unwrap();
    client.close().await;
    // While the client is away, one pinned row changes and one is deleted.
    server
        .write(vec![set_user_name(1, "changed offline")])
        .await;
    server.write(vec![delete_user(2)]).await;
    let client = client_with(&server.handle, &db, wide_window(), None).await;
    eventually("pins refreshed on connect", || {
        name_of(&user_row(&client, 1)) == Some(text("changed offline"))
            && user_row(&client, 2).is_none()
    })
    .await;
    assert_eq!(client.pinned_count(), 1);
    // Re-pinned on the new session: live again.
    server.write(vec![set_user_name(1, "live again")]).await;
    eventually("a live update after the restart", || {
        name_of(&user_row(&client, 1)) == Some(text("live again"))
    })
    .await;
    let before = client.fetch_stats().requests;
    assert!(client
        .load("users", text(&user_id(1)))
        .await
        .unwrap()
        .is_some());
    assert_eq!(client.fetch_stats().requests, before, "a local hit");
}

// ----- permissions -----

#[tokio::test]
async fn loads_never_return_rows_the_caller_may_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_rules(dir.path()).await;
    let issues = (0..20)
        .map(|i| insert_issue(&format!("i{i:02}"), ["T1", "T2"][i % 2], "todo", 1))
        .collect();
    backend_write(&server, issues).await;
    backend_write(&server, vec![insert_user(1, "Alice")]).await;
    let local = tempfile::tempdir().unwrap();
    let client = client_with(
        &server,
        &local.path().join("c.db"),
        wide_window(),
        Some(token("bob", &["T1"])),
    )
    .await;
    let keys: Vec<Value> = (0..20).map(|i| text(&format!("i{i:02}"))).collect();
    let rows = client.load_many("issues", keys).await.unwrap();
    let got: BTreeSet<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_some())
        .map(|(i, _)| i)
        .collect();
    let t1: BTreeSet<usize> = (0..20).filter(|i| i % 2 == 0).collect();
    assert_eq!(got, t1, "exactly the readable issues");
    assert!(rows.iter().flatten().all(|r| r[1] == text("T1")));
    let visible = client.query("SELECT id FROM issues WHERE team_id != 'T1'", &[]);
    assert!(visible.unwrap().is_empty(), "nothing unreadable stored");
    // Hidden columns are never sent, nor named: the local table has no such column.
    let user = client
        .load("users", text(&user_id(1)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user[1], text("Alice"));
    assert_eq!(user.len(), 4, "id, name, email, created_at: {user:?}");
    assert!(client
        .query("SELECT password_hash FROM users", &[])
        .is_err());
    // A pinned issue moved to a team the caller may not read leaves the view; an
    // update of a pinned user arrives without its hidden column.
    backend_write(&server, vec![set_issue("i00", "team_id", text("T2"))]).await;
    eventually("the forbidden row to leave", || {
        client.row("issues", &text("i00")).unwrap().is_none()
    })
    .await;
    backend_write(&server, vec![set_user_name(1, "Alice B")]).await;
    eventually("the pinned user's update", || {
        name_of(&user_row(&client, 1)) == Some(text("Alice B"))
    })
    .await;
    assert_eq!(
        user_row(&client, 1).unwrap().len(),
        4,
        "still no hidden column"
    );
    // Moving it back makes it readable again: the pin still holds its key.
    backend_write(&server, vec![set_issue("i00", "team_id", text("T1"))]).await;
    eventually("the row to be readable again", || {
        client.row("issues", &text("i00")).unwrap().is_some()
    })
    .await;
}
