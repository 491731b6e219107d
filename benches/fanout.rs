//! Fan-out: commit -> delivered latency over real QUIC on 127.0.0.1, with 1, 100 and 1000
//! connected clients, all in this process (server, clients and the measuring loop share
//! one tokio runtime, so on a small machine they compete for the same cores).
//!
//! - `fanout/sluice/N`: a backend write (`ServerHandle::write`) of one issue that every
//!   client's subscription (`... WHERE team_id = 'T1'`) matches; one iteration lasts from
//!   issuing the write until the last of the `N` [`sluice::client::Connection`]s has
//!   received the `Event::Live`.
//! - `fanout/raw_quic/N`: the same work without sluice: the same row inserted with raw
//!   rusqlite (same `synchronous`, WAL), then one length-prefixed frame (the encoded
//!   `LiveFrame` a sluice client would get) written by plain quinn to a unidirectional
//!   stream of each of `N` connections; clients read and decode it.
//! - `fanout/sluice_burst/N` and `fanout/raw_quic_burst/N`: [`BURST`] writes at once, until
//!   every client has received all of them; throughput in deliveries (writes x clients).
//!
//! Besides criterion's per-iteration times, the per-delivery latencies (write issued ->
//! one client has the change) are collected and printed as p50/p99 per scenario.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rusqlite::Connection as Sqlite;
use sluice::client::{Connection, Event};
use sluice::ids::{SubId, SyncId};
use sluice::schema::{quote_ident, Schema};
use sluice::server::{Server, ServerHandle};
use sluice::store::{Mutation, StoreOptions, TxnOutcome, WriteTxn};
use sluice::transport::{self, TransportLimits};
use sluice::value::Value;
use sluice::wire::{
    encode, BootstrapFrame, EncodedEvents, EventGroup, Live, LiveFrame, RowEvent, ServerMessage,
    TxnAssembler, TxnFrame, MAX_FRAME_BYTES,
};
use support::Latencies;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

/// Connected clients per scenario.
const CLIENTS: [usize; 3] = [1, 100, 1000];
/// Writes issued at once in the burst scenarios.
const BURST: usize = 32;
/// Bound on any single wait; a bench that stalls fails instead of hanging.
const WAIT: Duration = Duration::from_secs(120);
const SUBSCRIPTION: &str = "SELECT * FROM issues WHERE team_id = 'T1'";

fn issue_values(n: u64) -> Vec<(String, Value)> {
    vec![
        ("id".into(), Value::Text(format!("issue-{n:012}"))),
        ("team_id".into(), Value::Text("T1".into())),
        ("number".into(), Value::Integer(n as i64)),
        ("title".into(), Value::Text(format!("Issue number {n}"))),
        ("status".into(), Value::Text("todo".into())),
        ("priority".into(), Value::Integer((n % 4) as i64)),
    ]
}

/// One delivery: which client, which sync id (or raw sequence number), when.
type Receipt = (usize, u64, Instant);

/// Prints a scenario's summary line (scripts read it).
fn report(latencies: &mut Latencies, name: &str, clients: usize, wall: Duration, deliveries: u64) {
    let (p50, p99, max) = latencies.summary();
    println!(
        "fanout-latency {name}/{clients}: deliveries={} p50={:.3}ms p99={:.3}ms max={:.3}ms \
         deliveries/s={:.0}",
        latencies.0.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        deliveries as f64 / wall.as_secs_f64().max(1e-9),
    );
}

/// Waits for `count` receipts of the given ids, recording latency from `start`.
async fn collect(
    receipts: &mut mpsc::UnboundedReceiver<Receipt>,
    count: usize,
    start: Instant,
    latencies: &mut Latencies,
) -> Instant {
    let mut last = start;
    for _ in 0..count {
        let (_, _, at) = tokio::time::timeout(WAIT, receipts.recv())
            .await
            .expect("delivery in time")
            .expect("clients alive");
        latencies.0.push(at - start);
        last = last.max(at);
    }
    last
}

// ---------------------------------------------------------------------------------------
// sluice

struct SluiceSetup {
    _dir: tempfile::TempDir,
    server: Arc<ServerHandle>,
    receipts: mpsc::UnboundedReceiver<Receipt>,
    next_row: u64,
}

async fn sluice_setup(clients: usize) -> SluiceSetup {
    let dir = tempfile::tempdir().expect("temporary folder");
    let server = Server::builder(support::schema_dir(), dir.path().join("app.db"))
        .listen("127.0.0.1:0".parse().expect("address"))
        .no_auth()
        .store_options(StoreOptions::default())
        .start()
        .await
        .expect("server starts");
    let ca = support::cert(&server);
    let addr = server.local_addr();
    let (tx, receipts) = mpsc::unbounded_channel();
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let conns = support::in_waves(clients, |i| {
        support::connect(addr, ca.clone(), format!("bench-{i}"))
    })
    .await;
    for (i, mut conn) in conns.into_iter().enumerate() {
        conn.send(support::subscribe(SUBSCRIPTION))
            .await
            .expect("subscribe");
        tokio::spawn(client_loop(i, conn, tx.clone(), ready_tx.clone()));
    }
    for _ in 0..clients {
        tokio::time::timeout(WAIT, ready.recv())
            .await
            .expect("bootstrap in time")
            .expect("client alive");
    }
    SluiceSetup {
        _dir: dir,
        server: Arc::new(server),
        receipts,
        next_row: 0,
    }
}

async fn client_loop(
    i: usize,
    mut conn: Connection,
    receipts: mpsc::UnboundedSender<Receipt>,
    ready: mpsc::UnboundedSender<()>,
) {
    while let Some(event) = conn.next_event().await {
        match event {
            Event::Live(txn) if !txn.events.is_empty() => {
                let _ = receipts.send((i, txn.sync_id.0, Instant::now()));
            }
            Event::Bootstrap(_, BootstrapFrame::End { .. }) => {
                let _ = ready.send(());
            }
            Event::Control(ServerMessage::SubscribeFailed { message, .. }) => {
                panic!("subscription failed: {message}")
            }
            Event::Closed(_) => return,
            _ => {}
        }
    }
}

async fn sluice_write(server: &ServerHandle, row: u64) -> SyncId {
    let txn = WriteTxn {
        origin: None,
        mutations: vec![Mutation::Insert {
            table: "issues".into(),
            values: issue_values(row),
        }],
        preconditions: Vec::new(),
    };
    match server.write(txn).await.expect("write") {
        TxnOutcome::Committed { sync_id, .. } => sync_id,
        other => panic!("write not committed: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// raw baseline: rusqlite + quinn

struct RawSetup {
    _dir: tempfile::TempDir,
    db: Sqlite,
    insert: String,
    streams: Vec<quinn::SendStream>,
    receipts: mpsc::UnboundedReceiver<Receipt>,
    next_row: u64,
    _endpoints: Vec<quinn::Endpoint>,
    _connections: Vec<quinn::Connection>,
}

async fn raw_setup(clients: usize) -> RawSetup {
    let dir = tempfile::tempdir().expect("temporary folder");
    let schema = Schema::load_dir(&support::schema_dir()).expect("schema");
    let table = schema.table("issues").expect("issues").clone();
    let db = Sqlite::open(dir.path().join("raw.db")).expect("open");
    let _: String = db
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .expect("wal");
    db.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    db.execute_batch(&table.create_sql()).expect("create");
    for index in table.index_sql() {
        db.execute_batch(&index).expect("index");
    }
    let columns: Vec<String> = issue_values(0)
        .into_iter()
        .map(|(c, _)| quote_ident(&c))
        .collect();
    let insert = format!(
        "INSERT INTO issues ({}) VALUES ({})",
        columns.join(", "),
        vec!["?"; columns.len()].join(", ")
    );

    let cert = dir.path().join("raw.cert.pem");
    let limits = TransportLimits::default();
    let server = transport::server_endpoint(
        "127.0.0.1:0".parse().expect("address"),
        None,
        Some(&cert),
        &limits,
    )
    .expect("server endpoint");
    let addr = server.local_addr().expect("address");
    let (tx, receipts) = mpsc::unbounded_channel();
    let mut streams = Vec::with_capacity(clients);
    let mut endpoints = vec![server.clone()];
    let mut connections = Vec::with_capacity(2 * clients);
    // The server side accepts connections and opens each one's stream as they come.
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    let acceptor = server.clone();
    tokio::spawn(async move {
        while let Some(incoming) = acceptor.accept().await {
            let accepted_tx = accepted_tx.clone();
            tokio::spawn(async move {
                let conn = incoming.await.expect("accepted");
                let mut send = conn.open_uni().await.expect("uni stream");
                // A stream is announced to the peer with its first bytes: an empty frame.
                send.write_all(&[0, 0, 0, 0]).await.expect("empty frame");
                let _ = accepted_tx.send((conn, send));
            });
        }
    });
    let clients_side = support::in_waves(clients, |i| {
        let (cert, tx) = (cert.clone(), tx.clone());
        async move {
            let (endpoint, conn) = support::raw_connect(cert, addr).await;
            let recv = conn.accept_uni().await.expect("accept uni");
            tokio::spawn(raw_client_loop(i, recv, tx));
            (endpoint, conn)
        }
    })
    .await;
    for (endpoint, client_conn) in clients_side {
        endpoints.push(endpoint);
        connections.push(client_conn);
    }
    for _ in 0..clients {
        let (server_conn, send) = tokio::time::timeout(WAIT, accepted.recv())
            .await
            .expect("accepted in time")
            .expect("acceptor alive");
        streams.push(send);
        connections.push(server_conn);
    }
    RawSetup {
        _dir: dir,
        db,
        insert,
        streams,
        receipts,
        next_row: 1 << 40,
        _endpoints: endpoints,
        _connections: connections,
    }
}

async fn raw_client_loop(
    i: usize,
    mut recv: quinn::RecvStream,
    tx: mpsc::UnboundedSender<Receipt>,
) {
    let mut prefix = [0u8; 4];
    let mut payload = Vec::new();
    loop {
        if recv.read_exact(&mut prefix).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(prefix) as usize;
        assert!(len <= MAX_FRAME_BYTES);
        payload.resize(len, 0);
        if recv.read_exact(&mut payload).await.is_err() {
            return;
        }
        if len == 0 {
            continue;
        }
        let frame: LiveFrame = postcard::from_bytes(&payload).expect("decodes");
        if let LiveFrame::V1(Live::Txn(txn)) = frame {
            // Expanded as a sluice client does.
            let txn = TxnAssembler::default().finish(txn).expect("expands");
            let _ = tx.send((i, txn.sync_id.0, Instant::now()));
        }
    }
}

/// Commits `rows` in one transaction with raw rusqlite, then writes one frame per row to
/// every client.
async fn raw_commit_and_send(setup: &mut RawSetup, rows: usize) {
    let mut frames = Vec::new();
    {
        let tx = setup.db.unchecked_transaction().expect("begin");
        let mut stmt = tx.prepare_cached(&setup.insert).expect("prepare");
        for _ in 0..rows {
            setup.next_row += 1;
            let values = issue_values(setup.next_row);
            stmt.execute(rusqlite::params_from_iter(values.iter().map(|(_, v)| v)))
                .expect("insert");
            let events = vec![(
                "issues".to_string(),
                RowEvent::Insert {
                    key: values[0].1.clone(),
                    row: values.into_iter().map(|(_, v)| v).collect(),
                },
            )];
            let live = LiveFrame::V1(Live::Txn(TxnFrame {
                sync_id: SyncId(setup.next_row),
                origin: None,
                groups: vec![EventGroup {
                    subs: vec![SubId(1)],
                    events: EncodedEvents::encode(&events).expect("encode"),
                }],
            }));
            encode(&live, &mut frames).expect("encode");
        }
        drop(stmt);
        tx.commit().expect("commit");
    }
    for send in &mut setup.streams {
        send.write_all(&frames).await.expect("send");
    }
}

// ---------------------------------------------------------------------------------------

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn bench_fanout(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("fanout");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let mut summary = Vec::new();
    for clients in CLIENTS {
        // sluice
        let setup_start = Instant::now();
        let mut sluice = rt.block_on(sluice_setup(clients));
        summary.push(format!(
            "fanout-setup sluice/{clients}: {:.1}s to connect and subscribe",
            setup_start.elapsed().as_secs_f64()
        ));
        let mut latencies = Latencies::default();
        let (mut wall, mut deliveries) = (Duration::ZERO, 0u64);
        group.throughput(Throughput::Elements(clients as u64));
        group.bench_function(BenchmarkId::new("sluice", clients), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        sluice.next_row += 1;
                        let start = Instant::now();
                        sluice_write(&sluice.server, sluice.next_row).await;
                        let last =
                            collect(&mut sluice.receipts, clients, start, &mut latencies).await;
                        total += last - start;
                    }
                    wall += total;
                    deliveries += iters * clients as u64;
                    total
                })
            })
        });
        report(&mut latencies, "sluice", clients, wall, deliveries);

        let mut burst_latencies = Latencies::default();
        let (mut wall, mut deliveries) = (Duration::ZERO, 0u64);
        group.throughput(Throughput::Elements((clients * BURST) as u64));
        group.bench_function(BenchmarkId::new("sluice_burst", clients), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let mut writes = tokio::task::JoinSet::new();
                        for _ in 0..BURST {
                            sluice.next_row += 1;
                            let (server, row) = (sluice.server.clone(), sluice.next_row);
                            writes.spawn(async move { sluice_write(&server, row).await });
                        }
                        let last = collect(
                            &mut sluice.receipts,
                            clients * BURST,
                            start,
                            &mut burst_latencies,
                        )
                        .await;
                        while writes.join_next().await.is_some() {}
                        total += last - start;
                    }
                    wall += total;
                    deliveries += iters * (clients * BURST) as u64;
                    total
                })
            })
        });
        report(
            &mut burst_latencies,
            "sluice_burst",
            clients,
            wall,
            deliveries,
        );
        rt.block_on(async move {
            if let Ok(server) = Arc::try_unwrap(sluice.server) {
                server.shutdown().await;
            }
        });

        // raw baseline
        let mut raw = rt.block_on(raw_setup(clients));
        let mut latencies = Latencies::default();
        let (mut wall, mut deliveries) = (Duration::ZERO, 0u64);
        group.throughput(Throughput::Elements(clients as u64));
        group.bench_function(BenchmarkId::new("raw_quic", clients), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        raw_commit_and_send(&mut raw, 1).await;
                        let last = collect(&mut raw.receipts, clients, start, &mut latencies).await;
                        total += last - start;
                    }
                    wall += total;
                    deliveries += iters * clients as u64;
                    total
                })
            })
        });
        report(&mut latencies, "raw_quic", clients, wall, deliveries);

        let mut burst_latencies = Latencies::default();
        let (mut wall, mut deliveries) = (Duration::ZERO, 0u64);
        group.throughput(Throughput::Elements((clients * BURST) as u64));
        group.bench_function(BenchmarkId::new("raw_quic_burst", clients), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        raw_commit_and_send(&mut raw, BURST).await;
                        let last = collect(
                            &mut raw.receipts,
                            clients * BURST,
                            start,
                            &mut burst_latencies,
                        )
                        .await;
                        total += last - start;
                    }
                    wall += total;
                    deliveries += iters * (clients * BURST) as u64;
                    total
                })
            })
        });
        report(
            &mut burst_latencies,
            "raw_quic_burst",
            clients,
            wall,
            deliveries,
        );
        rt.block_on(async move {
            for mut send in raw.streams.drain(..) {
                let _ = send.finish();
            }
            drop(raw);
        });
    }
    group.finish();
    for line in summary {
        println!("{line}");
    }
}

criterion_group!(benches, bench_fanout);
criterion_main!(benches);
