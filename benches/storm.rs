//! Reconnect storm: many connected clients subscribe to the same shape at the same moment
//! (as after a server restart or a network blip), over real QUIC on 127.0.0.1, all in
//! this process (server, clients and the measuring loop share one 2-worker runtime).
//!
//! - `storm/sluice/N`: `N` connected [`sluice::client::Connection`]s each send one
//!   `Subscribe` to `SELECT * FROM issues WHERE team_id = 'T1'` at once; timed until every
//!   client has received `End`. Reported: wall time, store snapshot reads (the server's
//!   `sluice_snapshot_reads_total`), bootstrap bytes (the frames client 0 received,
//!   re-encoded, times `N`: every client gets as many frames), throughput in bootstrapped
//!   clients per second.
//! - `storm/raw_quic/N`: the same bytes without sluice: the bootstrap stream a sluice
//!   client receives (`Begin`, rows, progress, `End`, encoded once before timing) written
//!   by plain quinn to a new unidirectional stream of each of `N` connections; clients
//!   read and decode every frame.
//!
//! Plain harness (`cargo bench --bench storm`); sizes from `SLUICE_STORM_CLIENTS`
//! (default 1000), `SLUICE_STORM_ROWS` (table rows, default 10000),
//! `SLUICE_STORM_MATCHING` (rows in the shape, default 1000) and `SLUICE_STORM_ROUNDS`
//! (default 3; a commit before each sluice round moves the head, so each round is a
//! fresh read).

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::client::{Connection, Event};
use sluice::ids::SubId;
use sluice::query::Params;
use sluice::server::{Server, ServerHandle};
use sluice::store::{Mutation, StoreOptions, TxnOutcome, WriteTxn};
use sluice::transport::{self, TransportLimits};
use sluice::value::Value;
use sluice::wire::{encode, BootstrapFrame, ClientMessage, FrameDecoder, ServerMessage};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

/// Bound on any single wait; a bench that stalls fails instead of hanging.
const WAIT: Duration = Duration::from_secs(300);
const SUBSCRIPTION: &str = "SELECT * FROM issues WHERE team_id = 'T1'";
/// Rows per backend write while filling the table.
const FILL_BATCH: usize = 1000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Issue `n`; one in `every` is in team T1 (the subscribed shape).
fn issue_values(n: usize, every: usize) -> Vec<(String, Value)> {
    let team = if n.is_multiple_of(every) { "T1" } else { "T2" };
    vec![
        ("id".into(), Value::Text(format!("issue-{n:012}"))),
        ("team_id".into(), Value::Text(team.into())),
        ("number".into(), Value::Integer(n as i64)),
        ("title".into(), Value::Text(format!("Issue number {n}"))),
        ("status".into(), Value::Text("todo".into())),
        ("priority".into(), Value::Integer((n % 4) as i64)),
    ]
}

async fn write(server: &ServerHandle, rows: std::ops::Range<usize>, every: usize) {
    let mutations = rows
        .map(|n| Mutation::Insert {
            table: "issues".into(),
            values: issue_values(n, every),
        })
        .collect();
    let txn = WriteTxn {
        origin: None,
        mutations,
        preconditions: Vec::new(),
    };
    match server.write(txn).await.expect("write") {
        TxnOutcome::Committed { .. } => {}
        other => panic!("write not committed: {other:?}"),
    }
}

fn snapshot_reads(server: &ServerHandle) -> u64 {
    server
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("sluice_snapshot_reads_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// What one client got from one round: bootstrap frames, and (from client 0 only, which
/// re-encodes what it receives) the stream's bytes, to replay in the raw baseline.
type Done = (usize, Vec<u8>);

struct Storm {
    wall: Duration,
    reads: u64,
    bytes: usize,
    stream: Vec<u8>,
}

async fn sluice_storm(clients: usize, rows: usize, matching: usize, rounds: usize) -> Vec<Storm> {
    let every = (rows / matching.max(1)).max(1);
    let dir = tempfile::tempdir().expect("temporary folder");
    let server = Server::builder(support::schema_dir(), dir.path().join("app.db"))
        .listen("127.0.0.1:0".parse().expect("address"))
        .no_auth()
        .store_options(StoreOptions::default())
        .start()
        .await
        .expect("server starts");
    for start in (0..rows).step_by(FILL_BATCH) {
        write(&server, start..(start + FILL_BATCH).min(rows), every).await;
    }
    let ca = support::cert(&server);
    let addr = server.local_addr();
    let (go_tx, go) = watch::channel(0usize);
    let (done_tx, mut done) = mpsc::unbounded_channel::<Done>();
    let conns = support::in_waves(clients, |i| {
        support::connect(addr, ca.clone(), format!("storm-{i}"))
    })
    .await;
    for (i, conn) in conns.into_iter().enumerate() {
        tokio::spawn(client_loop(conn, i == 0, go.clone(), done_tx.clone()));
    }
    let mut storms = Vec::new();
    for round in 1..=rounds {
        // A commit first: the head moves, so this round cannot reuse the last one's read.
        write(&server, rows + round..rows + round + 1, every).await;
        let reads = snapshot_reads(&server);
        let start = Instant::now();
        go_tx.send_replace(round);
        let (mut frames, mut stream) = (Vec::new(), Vec::new());
        for _ in 0..clients {
            let (got, encoded) = tokio::time::timeout(WAIT, done.recv())
                .await
                .expect("bootstrap in time")
                .expect("client alive");
            frames.push(got);
            if !encoded.is_empty() {
                stream = encoded;
            }
        }
        // Every client got the same frames (the snapshot-cache test checks their content).
        assert!(frames.iter().all(|f| *f == frames[0]), "clients differ");
        storms.push(Storm {
            wall: start.elapsed(),
            reads: snapshot_reads(&server) - reads,
            bytes: stream.len() * clients,
            stream,
        });
    }
    server.shutdown().await;
    storms
}

/// Subscribes (under sub id = round) each time `go` changes, reports the bootstrap.
async fn client_loop(
    mut conn: Connection,
    keep: bool,
    mut go: watch::Receiver<usize>,
    done: mpsc::UnboundedSender<Done>,
) {
    let mut encoded = Vec::new();
    loop {
        if go.changed().await.is_err() {
            return;
        }
        let round = *go.borrow_and_update();
        let sub = SubId(round as u64);
        conn.send(ClientMessage::Subscribe {
            sub,
            sql: SUBSCRIPTION.into(),
            params: Params::new(),
            resume_after: None,
            resume_shape: None,
        })
        .await
        .expect("subscribe");
        encoded.clear();
        let mut frames = 0;
        while let Some(event) = conn.next_event().await {
            match event {
                Event::Bootstrap(s, frame) if s == sub => {
                    frames += 1;
                    if keep {
                        encode(&frame, &mut encoded).expect("encodes");
                    }
                    if matches!(frame, BootstrapFrame::End { .. }) {
                        let _ = done.send((frames, encoded.clone()));
                        break;
                    }
                }
                Event::Control(ServerMessage::SubscribeFailed { message, .. }) => {
                    panic!("subscription failed: {message}")
                }
                Event::Closed(_) => return,
                _ => {}
            }
        }
    }
}

/// The raw baseline: `stream` written to a fresh uni stream of each of `clients`
/// connections at once; time until every client has read and decoded all of it.
async fn raw_storm(clients: usize, stream: Bytes, rounds: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().expect("temporary folder");
    let cert = dir.path().join("raw.cert.pem");
    let server = transport::server_endpoint(
        "127.0.0.1:0".parse().expect("address"),
        None,
        Some(&cert),
        &TransportLimits::default(),
    )
    .expect("server endpoint");
    let addr = server.local_addr().expect("address");
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    let acceptor = server.clone();
    tokio::spawn(async move {
        while let Some(incoming) = acceptor.accept().await {
            let accepted_tx = accepted_tx.clone();
            tokio::spawn(async move {
                let _ = accepted_tx.send(incoming.await.expect("accepted"));
            });
        }
    });
    let (done_tx, mut done) = mpsc::unbounded_channel::<usize>();
    let keep = support::in_waves(clients, |_| {
        let (cert, done_tx) = (cert.clone(), done_tx.clone());
        async move {
            let (endpoint, conn) = support::raw_connect(cert, addr).await;
            tokio::spawn(raw_client_loop(conn.clone(), done_tx));
            (endpoint, conn)
        }
    })
    .await;
    let mut server_conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        server_conns.push(accepted.recv().await.expect("accepted"));
    }
    let mut walls = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        for conn in &server_conns {
            let (conn, stream) = (conn.clone(), stream.clone());
            tokio::spawn(async move {
                let mut send = conn.open_uni().await.expect("uni stream");
                send.write_chunk(stream).await.expect("send");
                let _ = send.finish();
                // The connection stays open (held by `server_conns`) until read.
            });
        }
        for _ in 0..clients {
            tokio::time::timeout(WAIT, done.recv())
                .await
                .expect("raw delivery in time")
                .expect("clients alive");
        }
        walls.push(start.elapsed());
    }
    drop(keep);
    walls
}

async fn raw_client_loop(conn: quinn::Connection, done: mpsc::UnboundedSender<usize>) {
    while let Ok(mut recv) = conn.accept_uni().await {
        let mut decoder = FrameDecoder::default();
        let mut frames = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(Some(n)) = recv.read(&mut buf).await {
            decoder.push(&buf[..n]);
            while let Some(frame) = decoder.next::<BootstrapFrame>().expect("decodes") {
                frames += 1;
                std::hint::black_box(frame);
            }
        }
        let _ = done.send(frames);
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn main() {
    // `cargo bench` passes `--bench`; a filter other than "storm" skips the run.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"storm".contains(&a))
    {
        return;
    }
    let clients = env("SLUICE_STORM_CLIENTS", 1000);
    let rows = env("SLUICE_STORM_ROWS", 10_000);
    let matching = env("SLUICE_STORM_MATCHING", 1000);
    let rounds = env("SLUICE_STORM_ROUNDS", 3);
    let rt = runtime();
    let storms = rt.block_on(sluice_storm(clients, rows, matching, rounds));
    let stream = Bytes::from(storms[0].stream.clone());
    let raws = rt.block_on(raw_storm(clients, stream.clone(), rounds));
    println!(
        "storm: {clients} clients, shape of {matching} rows in a table of {rows}, \
         {} bootstrap bytes per client",
        stream.len()
    );
    for (round, (s, raw)) in storms.iter().zip(&raws).enumerate() {
        let rate = |d: &Duration| clients as f64 / d.as_secs_f64();
        println!(
            "storm/sluice/{clients} round {}: {:.3}s, {} store reads, {} bytes, {:.0} clients/s \
             ({:.1} MB/s) | storm/raw_quic/{clients}: {:.3}s, {:.0} clients/s | sluice/raw {:.0}%",
            round + 1,
            s.wall.as_secs_f64(),
            s.reads,
            s.bytes,
            rate(&s.wall),
            s.bytes as f64 / s.wall.as_secs_f64() / 1e6,
            raw.as_secs_f64(),
            rate(raw),
            100.0 * raw.as_secs_f64() / s.wall.as_secs_f64(),
        );
    }
}
