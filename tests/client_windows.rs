//! Windows through the client library: `Client::window` reads a window in order from the
//! local view (the app's pending writes sorted in at once, nothing moving when the server
//! acknowledges them); `Client::set_limit` grows and shrinks it in place, sending only
//! the rows between the edges; a window comes back after the server restarts.

mod common;

use common::client::{client_of, committed, eventually, restart_on};
use common::{write_committed, TestServer, WAIT};
use sluice::client::{Client, Interest};
use sluice::query::Params;
use sluice::store::Mutation;
use sluice::value::Value;
use sluice::wire::SubId;

const HISTORY: &str = "SELECT id, body, sent_at FROM messages WHERE room_id = :room \
                       ORDER BY sent_at DESC LIMIT :n";

fn message(id: i64, room: &str) -> Mutation {
    Mutation::Insert {
        table: "messages".into(),
        values: vec![
            ("id".into(), Value::Integer(id)),
            ("room_id".into(), Value::Text(room.into())),
            ("author_id".into(), Value::Text("bot".into())),
            ("body".into(), Value::Text(format!("message {id}"))),
            ("sent_at".into(), Value::Integer(id)),
        ],
    }
}

/// The ids of the window, in its order.
fn ids(client: &Client, sub: SubId) -> Vec<i64> {
    client
        .window(sub)
        .unwrap()
        .iter()
        .map(|r| match r[0] {
            Value::Integer(i) => i,
            _ => panic!("integer ids"),
        })
        .collect()
}

/// `count` newest ids up to `newest`, newest first.
fn newest(newest: i64, count: i64) -> Vec<i64> {
    (newest - count + 1..=newest).rev().collect()
}

async fn room_with(server: &TestServer, messages: i64) {
    let mut all: Vec<Mutation> = (1..=messages).map(|i| message(i, "r1")).collect();
    // Another room's messages never enter r1's window.
    all.extend((10_001..=10_020).map(|i| message(i, "r2")));
    write_committed(&server.handle, all).await;
}

#[tokio::test]
async fn pending_writes_sort_in_at_once_and_nothing_moves_on_ack() {
    let server = TestServer::start().await;
    room_with(&server, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let app = client_of(&server.handle, &dir.path().join("app.db")).await;
    let params = Params::new()
        .value("room", Value::Text("r1".into()))
        .value("n", Value::Integer(10));
    let sub = app.subscribe(HISTORY, params).unwrap();
    sub.ready().await.unwrap();
    assert_eq!(ids(&app, sub.id), newest(200, 10));

    // The app's own message is at the top before the server has heard of it.
    let post = app
        .transaction()
        .insert(
            "messages",
            vec![
                ("id", Value::Integer(1000)),
                ("room_id", Value::Text("r1".into())),
                ("author_id", Value::Text("me".into())),
                ("body", Value::Text("mine".into())),
                ("sent_at", Value::Integer(1000)),
            ],
        )
        .commit()
        .unwrap();
    let mut shown = vec![1000];
    shown.extend(newest(200, 9));
    assert_eq!(ids(&app, sub.id), shown);
    committed(post).await;
    eventually("the server's window to hold the message", || {
        app.pending_writes() == 0
    })
    .await;
    assert_eq!(ids(&app, sub.id), shown, "the window moved on the ack");
    // The server's window pushed its oldest row out (reason `window`): the local copy
    // holds exactly the window.
    let held = app
        .query("SELECT count(*) FROM messages WHERE room_id = 'r1'", &[])
        .unwrap();
    assert_eq!(held, vec![vec![Value::Integer(10)]]);
    app.close().await;
}

#[tokio::test]
async fn set_limit_sends_only_the_rows_between_the_edges() {
    let server = TestServer::start().await;
    room_with(&server, 300).await;
    let dir = tempfile::tempdir().unwrap();
    let app = client_of(&server.handle, &dir.path().join("app.db")).await;
    let params = Params::new()
        .value("room", Value::Text("r1".into()))
        .value("n", Value::Integer(50));
    let sub = app.subscribe(HISTORY, params).unwrap();
    sub.ready().await.unwrap();
    assert_eq!(ids(&app, sub.id), newest(300, 50));
    let mut changes = app.observe(Interest::Subscription(sub.id));

    app.set_limit(sub.id, 100).unwrap();
    let note = tokio::time::timeout(WAIT, changes.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(note.rows.len(), 50, "growing 50 -> 100 moves 50 rows");
    assert_eq!(ids(&app, sub.id), newest(300, 100));

    app.set_limit(sub.id, 30).unwrap();
    let note = tokio::time::timeout(WAIT, changes.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(note.rows.len(), 70, "shrinking 100 -> 30 moves 70 rows out");
    assert_eq!(ids(&app, sub.id), newest(300, 30));
    let held = app.query("SELECT count(*) FROM messages", &[]).unwrap();
    assert_eq!(held, vec![vec![Value::Integer(30)]]);

    // Live changes follow the resized window.
    write_committed(&server.handle, vec![message(301, "r1")]).await;
    eventually("the new message", || {
        ids(&app, sub.id).first() == Some(&301)
    })
    .await;
    assert_eq!(ids(&app, sub.id), newest(301, 30));

    // Past the largest window: refused, nothing changes.
    assert!(app.set_limit(sub.id, 10_001).is_err());
    assert!(app.set_limit(sub.id, 0).is_err());
    app.close().await;
}

#[tokio::test]
async fn a_window_comes_back_after_the_server_restarts() {
    let server = TestServer::start().await;
    room_with(&server, 40).await;
    let dir = tempfile::tempdir().unwrap();
    let app = client_of(&server.handle, &dir.path().join("app.db")).await;
    let params = Params::new()
        .value("room", Value::Text("r1".into()))
        .value("n", Value::Integer(5));
    let sub = app.subscribe(HISTORY, params).unwrap();
    sub.ready().await.unwrap();
    app.set_limit(sub.id, 8).unwrap();
    eventually("the resize", || ids(&app, sub.id).len() == 8).await;
    let addr = server.handle.local_addr();
    let TestServer {
        dir: server_dir,
        handle,
    } = server;
    handle.shutdown().await;
    // Offline: the window still reads from the local view.
    assert_eq!(ids(&app, sub.id), newest(40, 8));
    let handle = restart_on(server_dir.path(), addr).await;
    write_committed(&handle, vec![message(41, "r1"), message(42, "r1")]).await;
    eventually("the window after the restart", || {
        ids(&app, sub.id) == newest(42, 8)
    })
    .await;
    app.close().await;
    handle.shutdown().await;
}
