//! The client through failures it must ride out without losing or showing anything
//! wrong: a server that cannot store a write right now, an expired token, a burst of
//! app requests past the command queue, a server database replaced behind the same
//! address, a server of the same database behind the client's cut, and a server
//! transaction too large for one frame.

mod common;

use common::client::{client_of, committed, config_at, eventually, ids, subscribed};
use common::{backend_write, insert_issue, schema_dir, text, TestServer};
use sluice::client::Client;
use sluice::server::Server;
use sluice::value::Value;

/// The columns of a new open issue of team T1.
fn new_issue(id: &str, number: i64, title: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("id", text(id)),
        ("team_id", text("T1")),
        ("number", Value::Integer(number)),
        ("title", text(title)),
        ("status", text("todo")),
    ]
}

/// A server whose database cannot take a write right now (another process holds the
/// write lock past the busy timeout) answers `unavailable`: the client keeps the write
/// queued and visible and sends it again, and it commits once the database is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_server_cannot_store_now_is_retried_not_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let server = Server::builder(schema_dir(), &db)
        .listen("127.0.0.1:0".parse().unwrap())
        .no_auth()
        .store_options(sluice::store::StoreOptions {
            busy_timeout_ms: 50,
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    let local = tempfile::tempdir().unwrap();
    let client = client_of(&server, &local.path().join("c.db")).await;
    subscribed(&client, "SELECT * FROM issues").await;
    // Another process takes the database's write lock.
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let write = client
        .transaction()
        .insert("issues", new_issue("w", 1, "while locked"))
        .commit()
        .unwrap();
    // Through several refused attempts the write stays queued and visible.
    for _ in 0..25 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(ids(&client, "SELECT id FROM issues"), vec!["w"]);
        assert_eq!(client.pending_writes(), 1);
    }
    blocker.execute_batch("ROLLBACK").unwrap();
    committed(write).await;
    eventually("the outbox drains", || client.pending_writes() == 0).await;
    assert_eq!(ids(&client, "SELECT id FROM issues"), vec!["w"]);
    server.shutdown().await;
}

/// A token provider is asked before every connection: when the server closes a session
/// because its token expired, the client reconnects with the fresh token the provider
/// hands back, and goes on syncing and writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refreshed_through_the_provider() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use sluice::auth::{Claims, JwtAuthenticator};

    let dir = tempfile::tempdir().unwrap();
    let server = common::auth::start_with_rules(dir.path()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let provider = {
        let calls = calls.clone();
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let mut claims = Claims::for_user("alice")
                .with("teams", serde_json::json!(["T1"]))
                .unwrap();
            // The first token lives one second; the ones after it an hour.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            claims.exp = Some(now + if n == 0 { 1 } else { 3600 });
            Some(JwtAuthenticator::new(common::auth::SECRET).sign(&claims))
        }
    };
    let local = tempfile::tempdir().unwrap();
    let config = common::client::config_at(
        server.local_addr(),
        server.cert_path().unwrap(),
        &local.path().join("c.db"),
    )
    .token_provider(provider);
    let client = Client::open(config).await.unwrap();
    subscribed(&client, "SELECT * FROM issues").await;
    eventually("a reconnection with a fresh token", || {
        calls.load(Ordering::SeqCst) >= 2
    })
    .await;
    common::client::wait_online(&client).await;
    let write = client
        .transaction()
        .insert("issues", {
            let mut values = new_issue("fresh", 1, "after the refresh");
            values.push(("creator_id", text("alice")));
            values
        })
        .commit()
        .unwrap();
    committed(write).await;
    server.shutdown().await;
}

/// An app that writes faster than the sync task takes requests (here: thousands of
/// commits without yielding) fills the command queue; no request is dropped: every
/// write reaches the server and is answered.
#[tokio::test]
async fn a_burst_of_writes_past_the_command_queue_loses_none() {
    let server = TestServer::start().await;
    let local = tempfile::tempdir().unwrap();
    let client = client_of(&server.handle, &local.path().join("c.db")).await;
    common::client::wait_online(&client).await;
    let n = sluice::client::COMMAND_QUEUE_CAPACITY + 100;
    let writes: Vec<_> = (0..n)
        .map(|i| {
            client
                .transaction()
                .insert("issues", new_issue(&format!("b{i:05}"), i as i64, "burst"))
                .commit()
                .unwrap()
        })
        .collect();
    for write in writes {
        committed(write).await;
    }
    let rows = common::expected_rows(&server.db(), "SELECT * FROM issues");
    assert_eq!(rows.len(), n);
    server.handle.shutdown().await;
}

/// Sync ids mean something only within one server database. A client that finds
/// another database behind the same address (replaced, or restored from a backup and
/// so behind its cut) bootstraps every subscription again instead of resuming: it ends
/// with exactly that database's rows, and its queued writes are kept and sent there.
#[tokio::test]
async fn a_replaced_server_database_makes_the_client_start_over() {
    let local = tempfile::tempdir().unwrap();
    let db = local.path().join("c.db");
    let first_dir = tempfile::tempdir().unwrap();
    let first = common::start_on(first_dir.path()).await;
    backend_write(&first, vec![insert_issue("a", "T1", "todo", 1)]).await;
    backend_write(&first, vec![insert_issue("b", "T1", "todo", 1)]).await;
    let client = client_of(&first, &db).await;
    subscribed(&client, "SELECT * FROM issues").await;
    assert_eq!(
        ids(&client, "SELECT id FROM issues ORDER BY id"),
        vec!["a", "b"]
    );
    client.close().await;
    first.shutdown().await;

    // Another database, behind the client's cut.
    let second_dir = tempfile::tempdir().unwrap();
    let second = common::start_on(second_dir.path()).await;
    backend_write(&second, vec![insert_issue("c", "T1", "todo", 1)]).await;
    let client = client_of(&second, &db).await;
    let queued = client
        .transaction()
        .insert("issues", new_issue("d", 4, "queued"))
        .commit()
        .unwrap();
    committed(queued).await;
    eventually("exactly the second database's rows", || {
        ids(&client, "SELECT id FROM issues ORDER BY id") == ["c", "d"]
    })
    .await;
    second.shutdown().await;
}

/// A server of the client's own database whose head is behind the client's cut (here
/// restored from an older backup; in PostgreSQL mode, a replica still catching up) is
/// not adopted at once: for `behind_server_wait` the client stays offline and its view
/// keeps what it showed (starting over would show an older state); then it takes the
/// database as restored and starts over on it.
#[tokio::test]
async fn a_server_behind_the_cut_is_waited_for_before_starting_over() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_on(dir.path()).await;
    backend_write(&server, vec![insert_issue("a", "T1", "todo", 1)]).await;
    server.shutdown().await;
    let backup = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("app.db") && !name.ends_with(".pem") {
            std::fs::copy(&path, backup.path().join(&name)).unwrap();
        }
    }
    let server = common::start_on(dir.path()).await;
    backend_write(&server, vec![insert_issue("b", "T1", "todo", 1)]).await;
    let local = tempfile::tempdir().unwrap();
    let db = local.path().join("c.db");
    let client = client_of(&server, &db).await;
    subscribed(&client, "SELECT * FROM issues").await;
    let all = "SELECT id FROM issues ORDER BY id";
    assert_eq!(ids(&client, all), ["a", "b"]);
    client.close().await;
    server.shutdown().await;

    let restored = common::start_on(backup.path()).await;
    let wait = std::time::Duration::from_secs(2);
    let config = config_at(restored.local_addr(), restored.cert_path().unwrap(), &db)
        .behind_server_wait(wait);
    let opened = std::time::Instant::now();
    let client = Client::open(config).await.unwrap();
    let mut changed = None;
    eventually("the restored database's rows", || {
        let rows = ids(&client, all);
        if rows != ["a", "b"] {
            changed.get_or_insert(opened.elapsed());
            assert_eq!(rows, ["a"], "only ever the old view or the restored one");
        }
        rows == ["a"]
    })
    .await;
    let changed = changed.unwrap();
    assert!(
        changed >= wait,
        "the view changed {changed:?} after opening"
    );
    restored.shutdown().await;
}

/// A server transaction too large for one frame (40 rows of 1 MiB) arrives in parts and
/// is applied whole: at every poll the client holds none of its rows or all of them.
#[tokio::test]
async fn a_transaction_larger_than_a_frame_arrives_whole() {
    let server = TestServer::start().await;
    let local = tempfile::tempdir().unwrap();
    let client = client_of(&server.handle, &local.path().join("c.db")).await;
    subscribed(&client, "SELECT * FROM issues").await;
    let big = "x".repeat(1 << 20);
    let rows: Vec<_> = (0..40)
        .map(|i| {
            let mut m = insert_issue(&format!("big{i:02}"), "T1", "todo", 1);
            if let sluice::store::Mutation::Insert { values, .. } = &mut m {
                values.push(("description".into(), text(&big)));
            }
            m
        })
        .collect();
    let sync_id = server.write(rows).await;
    eventually("the large transaction", || {
        let n = ids(&client, "SELECT id FROM issues").len();
        assert!(n == 0 || n == 40, "half a transaction: {n} rows");
        n == 40
    })
    .await;
    let lengths = client
        .query("SELECT length(description) FROM issues", &[])
        .unwrap();
    assert!(lengths.iter().all(|r| r[0] == Value::Integer(1 << 20)));
    assert!(client.cut().unwrap() >= sync_id);
    client.close().await;
}
