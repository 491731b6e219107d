//! The client library against a test server: opening clients with a fast reconnect
//! backoff, waiting for a condition, reading ids, and restarting a server on the same
//! address.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sluice::client::{
    Backoff, Client, ClientConfig, ConnectionState, PendingWrite, ServerAddress, Subscription,
};
use sluice::query::Params;
use sluice::server::{Server, ServerHandle};
use sluice::wire::WriteOutcome;

use super::{key_string, schema_dir, WAIT};

/// Reconnects quickly so tests that stop and start servers stay short.
pub fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        jitter: 0.2,
    }
}

/// A client configuration for the server at `addr` (trusting `ca`) with [`fast_backoff`].
pub fn config_at(addr: SocketAddr, ca: &Path, db: &Path) -> ClientConfig {
    ClientConfig::new(db)
        .server(ServerAddress::new(addr, ca))
        .backoff(fast_backoff())
}

pub async fn client_at(addr: SocketAddr, ca: &Path, db: &Path) -> Client {
    Client::open(config_at(addr, ca, db)).await.unwrap()
}

pub async fn client_of(server: &ServerHandle, db: &Path) -> Client {
    client_at(server.local_addr(), server.cert_path().unwrap(), db).await
}

/// Subscribes `client` to `sql` (no parameters) and waits until its snapshot is in the
/// local view.
pub async fn subscribed(client: &Client, sql: &str) -> Subscription {
    let sub = client.subscribe(sql, Params::new()).unwrap();
    sub.ready().await.unwrap();
    sub
}

/// Waits (at most [`WAIT`]) until the client is online.
pub async fn wait_online(client: &Client) {
    let mut state = client.state();
    tokio::time::timeout(WAIT, async {
        while !matches!(*state.borrow_and_update(), ConnectionState::Online) {
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("client online");
}

/// The first column of every row `sql` returns from the local database, as text.
pub fn ids(client: &Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .unwrap()
        .into_iter()
        .map(|r| key_string(&r[0]))
        .collect()
}

/// Polls `check` until it holds; panics after [`WAIT`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A server over the database in `dir` on the address a previous one had.
pub async fn restart_on(dir: &Path, addr: SocketAddr) -> ServerHandle {
    // The old endpoint may need a moment to release the port.
    for _ in 0..100 {
        let started = Server::builder(schema_dir(), dir.join("app.db"))
            .listen(addr)
            .no_auth()
            .start()
            .await;
        if let Ok(server) = started {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not restart the server on {addr}");
}

/// Waits (at most [`WAIT`]) for the server's answer to `write` and asserts it committed.
pub async fn committed(write: PendingWrite) {
    let outcome = tokio::time::timeout(WAIT, write.outcome())
        .await
        .expect("the write is answered in time")
        .expect("the client is still running");
    assert!(
        matches!(outcome, WriteOutcome::Committed { .. }),
        "{outcome:?}"
    );
}
