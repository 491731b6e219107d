//! PostgreSQL mode (issue #14), each figure beside its raw baseline in the same run, on a
//! throwaway PostgreSQL cluster (`tests/pg/mod.rs`: `initdb` + `pg_ctl`, `wal_level =
//! logical`, `fsync = off`, `synchronous_commit = off`) or on `SLUICE_TEST_POSTGRES_URL`.
//! Without PostgreSQL it prints `skipped: ...` and exits 0.
//!
//! - `pg_commit/sluice/N`: one client transaction of `N` inserts into `issues`, sent by a
//!   [`sluice::client::Connection`] over QUIC to a server in PostgreSQL mode, timed until
//!   its `WriteResult` (committed in PostgreSQL and applied to the server's replica);
//!   `pg_commit/raw_tokio_postgres/N`: the same rows inserted with tokio-postgres into a
//!   table of the same definition (`raw_issues`), one prepared statement, one
//!   transaction per batch. Throughput in rows. `pg_commit/sluice_in_flight/32`: 32
//!   one-row transactions sent at once, until the last ack; against
//!   `raw_tokio_postgres_txns/32`, the same one after another.
//! - `pg_fanout/sluice_postgres/K`: a writer connected to server A commits one insert
//!   that the subscription of each of `K` clients connected to server B matches (both
//!   servers on the same database); one iteration lasts from the writer's commit call
//!   until the last client has the live transaction. Baselines: `sluice_embedded/K`, the
//!   same with one embedded server (SQLite store, no PostgreSQL) serving writer and
//!   clients; `raw_notify/L`, an insert and `NOTIFY` in one PostgreSQL transaction
//!   received by `L` tokio-postgres connections that `LISTEN`. Per-delivery latencies
//!   (commit call -> one client has it) are printed as p50/p99.
//! - `pg-copy` (plain timing, not criterion): a server started on a database whose
//!   `issues` table holds `R` rows, timed from `ServerBuilder::start` until a client has
//!   its `Welcome` (the replica copied, streaming and caught up); against reading the
//!   same table with `COPY issues TO STDOUT` through tokio-postgres's `copy_out`, and
//!   against that COPY with every row also written into SQLite.
//!
//! The bench sets `synchronous_commit = on` on its database (PostgreSQL's default; see
//! `main`). Environment: `SLUICE_PG_BENCHES` (comma list of `commit`, `fanout`, `copy`;
//! default all), `SLUICE_PG_CLIENTS` (K, default 1000), `SLUICE_PG_COPY_ROWS` (R,
//! default 1,000,000), `SLUICE_PG_COPY_ROUNDS` (default 3), `SLUICE_PG_SYNC_COMMIT`
//! (default `on`; `off` is the throwaway cluster's own setting). Server, clients,
//! PostgreSQL's connections and the measuring loop share one process and one 2-worker
//! tokio runtime; PostgreSQL runs beside them on the same cores.

#[path = "../tests/pg/mod.rs"]
mod pg;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use futures_util::StreamExt;
use sluice::client::{Connection, Event};
use sluice::server::{Server, ServerHandle};
use sluice::store::Mutation;
use sluice::value::Value;
use sluice::wire::{BootstrapFrame, ServerMessage};
use support::{Latencies, Writer};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

/// Rows per transaction in `pg_commit`.
const BATCHES: [usize; 3] = [1, 100, 1000];
/// Connections listening in the `raw_notify` baseline.
const NOTIFY_LISTENERS: usize = 10;
/// Bound on any single wait; a bench that stalls fails instead of hanging.
const WAIT: Duration = Duration::from_secs(120);
/// What every fan-out client subscribes to; only the fan-out's rows are in team `L1`.
const SUBSCRIPTION: &str = "SELECT * FROM issues WHERE team_id = 'L1'";
const COLUMNS: &str = "id, team_id, number, title, status, priority, created_at";

/// `name`'s value, else `default`; else `quick` when run as a test (`cargo test
/// --benches` runs without `--bench`, and criterion then runs each benchmark once).
fn env_usize(name: &str, default: usize, quick: usize) -> usize {
    let test_mode = !std::env::args().any(|a| a == "--bench");
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(if test_mode { quick } else { default })
}

fn wanted(part: &str) -> bool {
    match std::env::var("SLUICE_PG_BENCHES") {
        Ok(list) => list.split(',').any(|p| p.trim() == part),
        Err(_) => true,
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The `n`-th issue of `team`, keyed `{prefix}-{n}`: (column, value) in [`COLUMNS`] order.
fn issue(prefix: &str, team: &str, n: u64) -> Vec<(String, Value)> {
    vec![
        ("id".into(), Value::Text(format!("{prefix}-{n:012}"))),
        ("team_id".into(), Value::Text(team.into())),
        ("number".into(), Value::Integer(n as i64)),
        ("title".into(), Value::Text(format!("Issue number {n}"))),
        ("status".into(), Value::Text("todo".into())),
        ("priority".into(), Value::Integer((n % 4) as i64)),
        (
            "created_at".into(),
            Value::Integer(1_700_000_000 + n as i64),
        ),
    ]
}

fn insert(prefix: &str, team: &str, n: u64) -> Mutation {
    Mutation::Insert {
        table: "issues".into(),
        values: issue(prefix, team, n),
    }
}

async fn start_server(dir: &Path, name: &str, postgres: Option<&str>) -> ServerHandle {
    let mut builder = Server::builder(support::schema_dir(), dir.join(format!("{name}.db")))
        .listen("127.0.0.1:0".parse().expect("address"))
        .no_auth();
    if let Some(url) = postgres {
        builder = builder.postgres(url);
    }
    builder.start().await.expect("server starts")
}

/// A scenario's (p50, p99) in ms, and its printable line.
fn report(latencies: &mut Latencies, name: &str) -> ((f64, f64), String) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (p50, p99, max) = latencies.summary();
    let (p50, p99, max) = (ms(p50), ms(p99), ms(max));
    let line = format!(
        "pg-fanout {name}: deliveries={} p50={p50:.2}ms p99={p99:.2}ms max={max:.2}ms",
        latencies.0.len()
    );
    ((p50, p99), line)
}

/// Waits for `count` deliveries, recording each one's latency from `start`; returns the
/// last one's arrival.
async fn collect(
    receipts: &mut mpsc::UnboundedReceiver<Instant>,
    count: usize,
    start: Instant,
    latencies: &mut Latencies,
) -> Instant {
    let mut last = start;
    for _ in 0..count {
        let at = tokio::time::timeout(WAIT, receipts.recv())
            .await
            .expect("delivery in time")
            .expect("clients alive");
        latencies.0.push(at - start);
        last = last.max(at);
    }
    last
}

// ---------------------------------------------------------------------------------------
// 1. commit throughput

struct RawPg {
    client: tokio_postgres::Client,
    insert: tokio_postgres::Statement,
}

async fn raw_connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("raw connection");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

impl RawPg {
    async fn connect(url: &str) -> RawPg {
        let client = raw_connect(url).await;
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS raw_issues (LIKE issues INCLUDING ALL)")
            .await
            .expect("raw table");
        let insert = client
            .prepare(&format!(
                "INSERT INTO raw_issues ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ))
            .await
            .expect("prepare");
        RawPg { client, insert }
    }

    /// Inserts the rows in one transaction; `notify` adds a NOTIFY before the commit.
    async fn commit(&mut self, rows: &[Vec<(String, Value)>], notify: bool) {
        let tx = self.client.transaction().await.expect("begin");
        for row in rows {
            let text = |i: usize| match &row[i].1 {
                Value::Text(s) => s.clone(),
                other => panic!("not text: {other:?}"),
            };
            let int = |i: usize| match &row[i].1 {
                Value::Integer(n) => *n,
                other => panic!("not an integer: {other:?}"),
            };
            let (id, team, title, status) = (text(0), text(1), text(3), text(4));
            let (number, priority, created) = (int(2), int(5), int(6));
            tx.execute(
                &self.insert,
                &[&id, &team, &number, &title, &status, &priority, &created],
            )
            .await
            .expect("insert");
        }
        if notify {
            tx.batch_execute("NOTIFY sluice_bench")
                .await
                .expect("notify");
        }
        tx.commit().await.expect("commit");
    }
}

/// Rows per second of each side, per batch size, for the summary.
#[derive(Default, Clone, Copy)]
struct Rate {
    rows: u64,
    time: Duration,
}

impl Rate {
    fn per_second(self) -> f64 {
        self.rows as f64 / self.time.as_secs_f64().max(1e-9)
    }
}

fn bench_commit(c: &mut Criterion, rt: &Runtime, url: &str, summary: &mut Vec<String>) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let server = rt.block_on(start_server(dir.path(), "commit", Some(url)));
    let mut writer = rt.block_on(Writer::connect(&server, "bench-writer"));
    let mut raw = rt.block_on(RawPg::connect(url));
    let mut group = c.benchmark_group("pg_commit");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let (mut sluice_row, mut raw_row) = (0u64, 0u64);
    for n in BATCHES {
        let (mut sluice_rate, mut raw_rate) = (Rate::default(), Rate::default());
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("sluice", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mutations: Vec<Mutation> = (0..n)
                            .map(|_| {
                                sluice_row += 1;
                                insert("commit", "T1", sluice_row)
                            })
                            .collect();
                        let start = Instant::now();
                        writer.commit(mutations).await;
                        total += start.elapsed();
                    }
                    sluice_rate.rows += iters * n as u64;
                    sluice_rate.time += total;
                    total
                })
            })
        });
        group.bench_with_input(BenchmarkId::new("raw_tokio_postgres", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let rows: Vec<_> = (0..n)
                            .map(|_| {
                                raw_row += 1;
                                issue("commit", "T1", raw_row)
                            })
                            .collect();
                        let start = Instant::now();
                        raw.commit(&rows, false).await;
                        total += start.elapsed();
                    }
                    raw_rate.rows += iters * n as u64;
                    raw_rate.time += total;
                    total
                })
            })
        });
        if n == 1 {
            in_flight(&mut group, rt, &mut writer, &mut raw, summary);
        }
        summary.push(format!(
            "pg-commit {n} rows/txn: sluice {:.0} rows/s ({} rows), raw tokio-postgres {:.0} \
             rows/s ({} rows), sluice/raw {:.0}%",
            sluice_rate.per_second(),
            sluice_rate.rows,
            raw_rate.per_second(),
            raw_rate.rows,
            100.0 * sluice_rate.per_second() / raw_rate.per_second().max(1e-9),
        ));
    }
    group.finish();
    rt.block_on(server.shutdown());
}

/// `pg_commit/sluice_in_flight/32`: 32 one-row transactions sent at once, until the last
/// ack; against `raw_tokio_postgres_txns/32`, the same 32 transactions one after another.
fn in_flight(
    group: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>,
    rt: &Runtime,
    writer: &mut Writer,
    raw: &mut RawPg,
    summary: &mut Vec<String>,
) {
    const TXNS: usize = 32;
    let (mut sluice_rate, mut raw_rate, mut row) = (Rate::default(), Rate::default(), 0u64);
    let mut rows = |prefix: &str| -> Vec<Vec<(String, Value)>> {
        (0..TXNS)
            .map(|_| (row += 1, issue(prefix, "T1", row)).1)
            .collect()
    };
    group.bench_function(BenchmarkId::new("sluice_in_flight", TXNS), |b| {
        b.iter_custom(|iters| {
            let txns: Vec<Vec<Vec<Mutation>>> = (0..iters)
                .map(|_| {
                    rows("flight")
                        .into_iter()
                        .map(|r| {
                            vec![Mutation::Insert {
                                table: "issues".into(),
                                values: r,
                            }]
                        })
                        .collect()
                })
                .collect();
            let start = Instant::now();
            rt.block_on(async {
                for batch in txns {
                    writer.commit_all(batch).await;
                }
            });
            sluice_rate.rows += iters * TXNS as u64;
            sluice_rate.time += start.elapsed();
            start.elapsed()
        })
    });
    group.bench_function(BenchmarkId::new("raw_tokio_postgres_txns", TXNS), |b| {
        b.iter_custom(|iters| {
            let batches: Vec<_> = (0..iters).map(|_| rows("rawflight")).collect();
            let start = Instant::now();
            rt.block_on(async {
                for batch in batches {
                    for r in batch {
                        raw.commit(&[r], false).await;
                    }
                }
            });
            raw_rate.rows += iters * TXNS as u64;
            raw_rate.time += start.elapsed();
            start.elapsed()
        })
    });
    summary.push(format!(
        "pg-commit {TXNS} one-row transactions in flight: sluice {:.0} txn/s, raw tokio-postgres \
         one after another {:.0} txn/s, sluice/raw {:.0}%",
        sluice_rate.per_second(),
        raw_rate.per_second(),
        100.0 * sluice_rate.per_second() / raw_rate.per_second().max(1e-9),
    ));
}

// ---------------------------------------------------------------------------------------
// 2. commit -> client latency

/// Connects `count` clients to `server`, each subscribed to [`SUBSCRIPTION`], and waits
/// until every bootstrap is done. Each live transaction a client receives is reported
/// with its arrival time.
async fn subscribers(server: &ServerHandle, count: usize) -> mpsc::UnboundedReceiver<Instant> {
    let (ca, addr) = (support::cert(server), server.local_addr());
    let (tx, receipts) = mpsc::unbounded_channel();
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let conns = support::in_waves(count, |i| {
        support::connect(addr, ca.clone(), format!("bench-sub-{i}"))
    })
    .await;
    for mut conn in conns {
        conn.send(support::subscribe(SUBSCRIPTION))
            .await
            .expect("subscribe");
        tokio::spawn(subscriber_loop(conn, tx.clone(), ready_tx.clone()));
    }
    for _ in 0..count {
        tokio::time::timeout(WAIT, ready.recv())
            .await
            .expect("bootstrap in time")
            .expect("client alive");
    }
    receipts
}

async fn subscriber_loop(
    mut conn: Connection,
    receipts: mpsc::UnboundedSender<Instant>,
    ready: mpsc::UnboundedSender<()>,
) {
    while let Some(event) = conn.next_event().await {
        match event {
            Event::Live(txn) if !txn.events.is_empty() => {
                let _ = receipts.send(Instant::now());
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

/// What commits the fan-out's rows.
enum Committer {
    /// A sluice client; rows keyed `{prefix}-{n}`.
    Sluice(Writer, &'static str),
    /// tokio-postgres: insert and NOTIFY in one transaction.
    Notify(RawPg),
}

impl Committer {
    async fn commit(&mut self, n: u64) {
        match self {
            Committer::Sluice(writer, prefix) => writer.commit(vec![insert(prefix, "L1", n)]).await,
            Committer::Notify(raw) => raw.commit(&[issue("notify", "L1", n)], true).await,
        }
    }
}

/// One criterion benchmark of commit -> every client: each iteration commits one row
/// that every one of `clients` receivers gets. Returns (p50, p99) in ms and the
/// latency line.
fn measure_fanout(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    clients: usize,
    receipts: &mut mpsc::UnboundedReceiver<Instant>,
    committer: &mut Committer,
) -> ((f64, f64), String) {
    let mut latencies = Latencies::default();
    let mut next = 0u64;
    let mut group = c.benchmark_group("pg_fanout");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(clients as u64));
    group.bench_function(BenchmarkId::new(name, clients), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    next += 1;
                    let start = Instant::now();
                    let (_, last) = tokio::join!(
                        committer.commit(next),
                        collect(receipts, clients, start, &mut latencies)
                    );
                    total += last - start;
                }
                total
            })
        })
    });
    group.finish();
    report(&mut latencies, &format!("{name}/{clients}"))
}

fn bench_fanout(c: &mut Criterion, rt: &Runtime, url: &str, summary: &mut Vec<String>) {
    let clients = env_usize("SLUICE_PG_CLIENTS", 1000, 10);
    let dir = tempfile::tempdir().expect("temporary folder");

    // sluice, PostgreSQL mode: writer on A, clients on B.
    let (a, b) = rt.block_on(async {
        let a = start_server(dir.path(), "a", Some(url)).await;
        let b = start_server(dir.path(), "b", Some(url)).await;
        (a, b)
    });
    let setup = Instant::now();
    let mut receipts = rt.block_on(subscribers(&b, clients));
    summary.push(format!(
        "pg-fanout setup: {clients} clients connected and subscribed on server B in {:.1}s",
        setup.elapsed().as_secs_f64()
    ));
    let writer = rt.block_on(Writer::connect(&a, "bench-fanout-writer"));
    let mut committer = Committer::Sluice(writer, "pgfan");
    let ((pg50, pg99), line) = measure_fanout(
        c,
        rt,
        "sluice_postgres",
        clients,
        &mut receipts,
        &mut committer,
    );
    summary.push(line);
    drop(receipts);
    rt.block_on(async {
        b.shutdown().await;
        a.shutdown().await;
    });
    drop(committer);

    // Baseline: one embedded server (SQLite store) serving writer and clients.
    let embedded = rt.block_on(start_server(dir.path(), "embedded", None));
    let mut receipts = rt.block_on(subscribers(&embedded, clients));
    let writer = rt.block_on(Writer::connect(&embedded, "bench-fanout-writer"));
    let mut committer = Committer::Sluice(writer, "embfan");
    let ((e50, e99), line) = measure_fanout(
        c,
        rt,
        "sluice_embedded",
        clients,
        &mut receipts,
        &mut committer,
    );
    summary.push(line);
    drop(receipts);
    rt.block_on(embedded.shutdown());
    drop(committer);
    summary.push(format!(
        "pg-fanout postgres/embedded: p50 {:.2}x, p99 {:.2}x",
        pg50 / e50.max(1e-9),
        pg99 / e99.max(1e-9)
    ));

    // Baseline: PostgreSQL's own LISTEN/NOTIFY.
    let (raw, mut receipts, _listeners) = rt.block_on(async {
        let (tx, receipts) = mpsc::unbounded_channel();
        let mut listeners = Vec::new();
        for _ in 0..NOTIFY_LISTENERS {
            let (client, mut connection) = tokio_postgres::connect(url, NoTls)
                .await
                .expect("listener connects");
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(message)) = messages.next().await {
                    if let AsyncMessage::Notification(_) = message {
                        let _ = tx.send(Instant::now());
                    }
                }
            });
            client
                .batch_execute("LISTEN sluice_bench")
                .await
                .expect("listen");
            listeners.push(client);
        }
        (RawPg::connect(url).await, receipts, listeners)
    });
    let mut committer = Committer::Notify(raw);
    let (_, line) = measure_fanout(
        c,
        rt,
        "raw_notify",
        NOTIFY_LISTENERS,
        &mut receipts,
        &mut committer,
    );
    summary.push(line);
}

// ---------------------------------------------------------------------------------------
// 3. initial copy

fn bench_copy(rt: &Runtime, pg: &pg::PgCluster, summary: &mut Vec<String>) {
    let rows = env_usize("SLUICE_PG_COPY_ROWS", 1_000_000, 10_000);
    let rounds = env_usize("SLUICE_PG_COPY_ROUNDS", 3, 1);
    if rows == 0 || rounds == 0 {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary folder");
    // The tables exist once a server has started; then only the copied rows are left.
    rt.block_on(async {
        let server = start_server(dir.path(), "init", Some(&pg.url)).await;
        server.shutdown().await;
    });
    let fill = Instant::now();
    pg.psql("TRUNCATE issues, _sluice_txns");
    pg.psql(&format!(
        "INSERT INTO issues ({COLUMNS}) SELECT 'copy-' || lpad(n::text, 12, '0'), \
         'T' || (n % 10), n, 'Issue number ' || n, 'todo', n % 4, 1700000000 + n \
         FROM generate_series(1, {rows}) AS n"
    ));
    // Hint bits and the visibility map set now, not during whichever read comes first.
    pg.psql("VACUUM ANALYZE issues");
    let bytes = pg.psql("SELECT pg_total_relation_size('issues')");
    summary.push(format!(
        "pg-copy setup: {rows} rows inserted and vacuumed in {:.1}s; issues is {} MiB \
         with its indexes",
        fill.elapsed().as_secs_f64(),
        bytes.parse::<u64>().unwrap_or(0) >> 20
    ));
    let mut sluice_times = Vec::new();
    let (mut raw_times, mut sqlite_times) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // sluice: start (slot, copy into a fresh replica, stream) until a client is
        // welcomed (a new session waits for the replica to catch up).
        let sluice = rt.block_on(async {
            let start = Instant::now();
            let server = start_server(dir.path(), &format!("copy{round}"), Some(&pg.url)).await;
            let conn = support::connect(
                server.local_addr(),
                support::cert(&server),
                "bench-copy".into(),
            )
            .await;
            let elapsed = start.elapsed();
            conn.close().await;
            server.shutdown().await;
            elapsed
        });
        let _ = std::fs::remove_file(dir.path().join(format!("copy{round}.db")));
        // raw: the same table read with COPY ... TO STDOUT; then also written to SQLite.
        let (raw, copied, bytes) = rt.block_on(raw_copy(&pg.url, None));
        assert_eq!(copied, rows, "COPY returned every row");
        let into = dir.path().join(format!("raw{round}.db"));
        let (raw_sqlite, loaded, _) = rt.block_on(raw_copy(&pg.url, Some(&into)));
        assert_eq!(loaded, rows, "every row written to SQLite");
        let _ = std::fs::remove_file(&into);
        println!(
            "pg-copy round {round}: sluice {:.2}s, raw COPY {:.2}s ({} MiB), raw COPY into \
             SQLite {:.2}s",
            sluice.as_secs_f64(),
            raw.as_secs_f64(),
            bytes >> 20,
            raw_sqlite.as_secs_f64()
        );
        sluice_times.push(sluice);
        raw_times.push(raw);
        sqlite_times.push(raw_sqlite);
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort_unstable();
        times[times.len() / 2]
    };
    let (sluice, raw) = (median(&mut sluice_times), median(&mut raw_times));
    let sqlite = median(&mut sqlite_times);
    summary.push(format!(
        "pg-copy {rows} rows, median of {rounds}: sluice start to serving {:.2}s ({:.0} rows/s), \
         raw COPY TO STDOUT {:.2}s ({:.0} rows/s), sluice/raw {:.1}% (raw is {:.1}x faster); \
         all rounds sluice {:?}, raw {:?}",
        sluice.as_secs_f64(),
        rows as f64 / sluice.as_secs_f64(),
        raw.as_secs_f64(),
        rows as f64 / raw.as_secs_f64(),
        100.0 * raw.as_secs_f64() / sluice.as_secs_f64(),
        sluice.as_secs_f64() / raw.as_secs_f64(),
        sluice_times,
        raw_times,
    ));
    summary.push(format!(
        "pg-copy {rows} rows, median of {rounds}: raw COPY TO STDOUT into SQLite {:.2}s \
         ({:.0} rows/s), sluice/raw {:.0}%; all rounds {:?}",
        sqlite.as_secs_f64(),
        rows as f64 / sqlite.as_secs_f64(),
        100.0 * sqlite.as_secs_f64() / sluice.as_secs_f64(),
        sqlite_times,
    ));
}

/// Reads `issues` with `COPY ... TO STDOUT`; with `sqlite`, also writes every row into a
/// SQLite database there, into a table of the same definition and indexes (WAL,
/// `synchronous = FULL`, 5,000 rows per transaction, as the replica's copy). The table
/// is created before the clock starts. Returns the time, rows and bytes.
async fn raw_copy(url: &str, sqlite: Option<&Path>) -> (Duration, usize, usize) {
    let mut db = sqlite.map(|path| {
        let schema = sluice::Schema::load_dir(&support::schema_dir()).expect("schema");
        let table = schema.table("issues").expect("issues table");
        let db = rusqlite::Connection::open(path).expect("open");
        db.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .expect("wal");
        db.pragma_update(None, "synchronous", "FULL").expect("sync");
        db.execute_batch(&table.create_sql()).expect("create");
        for index in table.index_sql() {
            db.execute_batch(&index).expect("index");
        }
        let marks = vec!["?"; table.columns.len()].join(", ");
        (db, format!("INSERT INTO issues VALUES ({marks})"))
    });
    let client = raw_connect(url).await;
    let start = Instant::now();
    let stream = client
        .copy_out("COPY issues TO STDOUT")
        .await
        .expect("copy out");
    futures_util::pin_mut!(stream);
    let (mut rows, mut bytes, mut lines) = (0, 0, Vec::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("copy data");
        bytes += chunk.len();
        rows += chunk.iter().filter(|b| **b == b'\n').count();
        if let Some((db, insert)) = &mut db {
            // PostgreSQL sends each row of a COPY as one CopyData message.
            lines.push(chunk);
            if lines.len() == 5_000 {
                insert_lines(db, insert, &std::mem::take(&mut lines));
            }
        }
    }
    if let Some((db, insert)) = &mut db {
        insert_lines(db, insert, &lines);
    }
    (start.elapsed(), rows, bytes)
}

/// COPY text lines into SQLite in one transaction (`\N` is NULL; the bench's rows hold
/// no other escapes).
fn insert_lines(db: &mut rusqlite::Connection, insert: &str, lines: &[bytes::Bytes]) {
    let tx = db.transaction().expect("begin");
    {
        let mut stmt = tx.prepare_cached(insert).expect("prepare");
        for line in lines {
            let line = std::str::from_utf8(line)
                .expect("utf-8")
                .trim_end_matches('\n');
            let fields = line.split('\t').map(|f| (f != "\\N").then_some(f));
            stmt.execute(rusqlite::params_from_iter(fields))
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
}

fn main() {
    let Some(pg) = pg::PgCluster::start("bench") else {
        // `PgCluster::start` printed `skipped: PostgreSQL binaries (initdb, pg_ctl) not found`.
        return;
    };
    // The throwaway cluster runs with `synchronous_commit = off`: a commit's WAL is then
    // flushed by the WAL writer (every `wal_writer_delay`, 200 ms), and logical
    // replication sends only flushed WAL, which would put up to ~200 ms into every
    // replicated write. PostgreSQL's default is `on`; `SLUICE_PG_SYNC_COMMIT=off` keeps
    // the cluster's setting.
    let sync_commit = std::env::var("SLUICE_PG_SYNC_COMMIT").unwrap_or_else(|_| "on".into());
    let db = pg.psql("SELECT current_database()");
    pg.psql(&format!(
        "ALTER DATABASE {db} SET synchronous_commit = {sync_commit}"
    ));
    println!(
        "pg settings: synchronous_commit = {sync_commit} (this database), fsync = {}, \
         server {}",
        pg.psql("SHOW fsync"),
        pg.psql("SHOW server_version")
    );
    let rt = runtime();
    let mut criterion = Criterion::default().configure_from_args();
    let mut summary = Vec::new();
    if wanted("commit") {
        bench_commit(&mut criterion, &rt, &pg.url, &mut summary);
    }
    if wanted("fanout") {
        bench_fanout(&mut criterion, &rt, &pg.url, &mut summary);
    }
    criterion.final_summary();
    if wanted("copy") {
        bench_copy(&rt, &pg, &mut summary);
    }
    for line in summary {
        println!("{line}");
    }
}
