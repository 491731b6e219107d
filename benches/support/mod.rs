//! What the network benches share: the example schema, clients connected in waves, the
//! one subscription message they send, and latency percentiles. Each bench prints its
//! own summary lines (scripts read them), so formatting stays in the bench.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice::client::{ConnectOptions, Connection};
use sluice::ids::{ClientId, SubId};
use sluice::query::Params;
use sluice::server::ServerHandle;
use sluice::wire::ClientMessage;

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
