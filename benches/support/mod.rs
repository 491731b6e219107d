//! What the network benches share: the example schema, clients connected in waves, the
//! one subscription message they send, and latency percentiles. Each bench prints its
//! own summary lines (scripts read them), so formatting stays in the bench.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice::client::Event;
use sluice::client::{ConnectOptions, Connection};
use sluice::ids::{ClientId, SubId};
use sluice::query::Params;
use sluice::server::ServerHandle;
use sluice::store::Mutation;
use sluice::wire::{ClientMessage, ServerMessage, WriteOutcome};

/// Clients connecting at once: more makes the handshakes time out on two cores.
pub const CONNECT_PARALLELISM: usize = 50;

/// The example schema of the repository.
pub fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema")
}

/// The certificate a server generated for itself, for its clients to trust.
pub fn cert(server: &ServerHandle) -> PathBuf {
    server
        .cert_path()
        .expect("generated certificate")
        .to_path_buf()
}

/// Runs `start(i)` for `i` in `0..n`, [`CONNECT_PARALLELISM`] tasks at a time; their
/// results in order of `i`.
pub async fn in_waves<T, Fut>(n: usize, start: impl Fn(usize) -> Fut) -> Vec<T>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let wave = CONNECT_PARALLELISM.min(n - out.len());
        let joins: Vec<_> = (out.len()..out.len() + wave)
            .map(|i| tokio::spawn(start(i)))
            .collect();
        for join in joins {
            out.push(join.await.expect("join"));
        }
    }
    out
}

/// A protocol-level client of the server at `addr` (trusting `ca`) named `id`.
pub async fn connect(addr: SocketAddr, ca: PathBuf, id: String) -> Connection {
    Connection::connect(ConnectOptions {
        addr,
        ca: &ca,
        server_name: "localhost",
        client_id: ClientId(id),
        token: None,
        schema_version: None,
    })
    .await
    .expect("client connects")
}

/// A plain quinn connection to `addr` (trusting `ca`), for the raw baselines; the
/// endpoint must outlive it.
pub async fn raw_connect(ca: PathBuf, addr: SocketAddr) -> (quinn::Endpoint, quinn::Connection) {
    let endpoint = sluice::transport::client_endpoint(&ca).expect("client endpoint");
    let conn = sluice::transport::connect(&endpoint, addr, "localhost")
        .await
        .expect("connects");
    (endpoint, conn)
}

/// Subscription 1 to `sql`, without parameters or resume point.
pub fn subscribe(sql: &str) -> ClientMessage {
    ClientMessage::Subscribe {
        sub: SubId(1),
        sql: sql.into(),
        params: Params::new(),
        resume_after: None,
        resume_shape: None,
    }
}

/// Per-delivery latencies of one scenario, for percentiles.
#[derive(Default)]
pub struct Latencies(pub Vec<Duration>);

impl Latencies {
    /// The `p` quantile (0.0 to 1.0), nearest rank; zero when empty.
    pub fn percentile(&mut self, p: f64) -> Duration {
        self.0.sort_unstable();
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0.get(i).copied().unwrap_or_default()
    }

    /// p50, p99 and the maximum.
    pub fn summary(&mut self) -> (Duration, Duration, Duration) {
        (
            self.percentile(0.50),
            self.percentile(0.99),
            self.percentile(1.0),
        )
    }
}

/// Bound on the wait for a write's ack.
const WRITE_WAIT: Duration = Duration::from_secs(120);

/// A client that sends transactions one at a time and waits for each one's ack.
pub struct Writer {
    conn: Connection,
    seq: u64,
}

impl Writer {
    pub async fn connect(server: &ServerHandle, id: &str) -> Writer {
        let conn = connect(server.local_addr(), cert(server), id.to_string()).await;
        Writer { conn, seq: 0 }
    }

    /// Sends one transaction and waits until it is acknowledged as committed.
    pub async fn commit(&mut self, mutations: Vec<Mutation>) {
        self.commit_all(vec![mutations]).await;
    }

    /// Sends the transactions at once and waits until the last is acknowledged.
    pub async fn commit_all(&mut self, txns: Vec<Vec<Mutation>>) {
        for mutations in txns {
            self.seq += 1;
            let (seq, preconditions) = (self.seq, Vec::new());
            let write = ClientMessage::Write {
                seq,
                mutations,
                preconditions,
            };
            self.conn.send(write).await.expect("write sent");
        }
        loop {
            let event = tokio::time::timeout(WRITE_WAIT, self.conn.next_event())
                .await
                .expect("ack in time")
                .expect("writer connected");
            match event {
                Event::Control(ServerMessage::WriteResult { seq, outcome }) if seq == self.seq => {
                    match outcome {
                        WriteOutcome::Committed { .. } => return,
                        other => panic!("write {seq} not committed: {other:?}"),
                    }
                }
                Event::Closed(why) => panic!("writer disconnected: {why}"),
                _ => {}
            }
        }
    }
}
