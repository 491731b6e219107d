//! Bootstrap bench: one subscription of N rows streamed over QUIC (loopback) into a
//! client's local store, against the raw baseline of a SQLite scan of the same rows
//! inserted into another SQLite database in one transaction.
//!
//! A plain harness (`harness = false`): each size runs once per repetition, because a
//! 1M-row bootstrap takes long enough to be measured directly. Peak resident memory is
//! read from /proc after each sluice run (server and client share this process).
//! `SLUICE_BOOTSTRAP_SIZES=100000,1000000` picks the sizes.
//!
//! While the bootstrap runs, a thread reads one row by primary key through the client
//! every millisecond, as an app would: its latency (p50/p99/max) says how long an app
//! read waits while snapshot rows are staged and joined.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::client::{Client, ClientConfig, ServerAddress};
use sluice::query::Params;
use sluice::server::Server;
use sluice::store::{Mutation, SqliteStore, Store, StoreOptions, WriteTxn};
use sluice::value::Value;

const BATCH: usize = 10_000;

fn schema_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema")
}

fn fill(db: &std::path::Path, n: usize) {
    let schema = Arc::new(sluice::Schema::load_dir(&schema_dir()).unwrap());
    let store = SqliteStore::open(db, schema, StoreOptions::default()).unwrap();
    let mut next = 0;
    while next < n {
        let end = (next + BATCH).min(n);
        let mutations = (next..end)
            .map(|i| Mutation::Insert {
                table: "messages".into(),
                values: vec![
                    ("id".into(), Value::Integer(i as i64)),
                    ("room_id".into(), Value::Text(format!("room{}", i % 10))),
                    ("author_id".into(), Value::Text(format!("user{}", i % 100))),
                    (
                        "body".into(),
                        Value::Text(format!("message number {i} with some text")),
                    ),
                    ("sent_at".into(), Value::Integer(1_700_000_000 + i as i64)),
                ],
            })
            .collect();
        store
            .apply(vec![WriteTxn {
                origin: None,
                mutations,
                preconditions: vec![],
            }])
            .unwrap();
        next = end;
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn raw_copy(db: &std::path::Path, out: &std::path::Path) -> Duration {
    let start = Instant::now();
    let src = rusqlite::Connection::open(db).unwrap();
    let mut dst = rusqlite::Connection::open(out).unwrap();
    dst.pragma_update(None, "journal_mode", "WAL").unwrap();
    dst.pragma_update(None, "synchronous", "FULL").unwrap();
    dst.execute_batch(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, room_id TEXT, author_id TEXT, \
         body TEXT, sent_at INTEGER, edited_at INTEGER)",
    )
    .unwrap();
    let tx = dst.transaction().unwrap();
    {
        let mut insert = tx
            .prepare("INSERT INTO messages VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .unwrap();
        let mut scan = src.prepare("SELECT * FROM messages").unwrap();
        let mut rows = scan.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            let values: Vec<rusqlite::types::Value> = (0..6).map(|i| r.get(i).unwrap()).collect();
            insert.execute(rusqlite::params_from_iter(values)).unwrap();
        }
    }
    tx.commit().unwrap();
    start.elapsed()
}

/// What one sluice bootstrap measured.
struct Run {
    elapsed: Duration,
    /// App read latencies during the bootstrap, sorted.
    reads: Vec<Duration>,
}

impl Run {
    fn read_percentile(&self, p: f64) -> Duration {
        if self.reads.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.reads.len() - 1) as f64 * p).round() as usize;
        self.reads[i]
    }
}

async fn sluice_bootstrap(dir: &std::path::Path, n: usize) -> Run {
    let server = Server::builder(schema_dir(), dir.join("server.db"))
        .listen("127.0.0.1:0".parse().unwrap())
        .no_auth()
        .start()
        .await
        .unwrap();
    let address = ServerAddress::new(server.local_addr(), server.cert_path().unwrap());
    let local = dir.join(format!("client-{}.db", std::process::id()));
    let start = Instant::now();
    let client = Client::open(ClientConfig::new(&local).server(address))
        .await
        .unwrap();
    let client = Arc::new(client);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let client = client.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut reads = Vec::new();
            let mut i: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = Value::Integer((i.wrapping_mul(7919) % n as u64) as i64);
                let t = Instant::now();
                client.row("messages", &key).unwrap();
                reads.push(t.elapsed());
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            reads
        })
    };
    let sub = client
        .subscribe("SELECT * FROM messages", Params::new())
        .unwrap();
    sub.ready().await.unwrap();
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut reads = reader.join().unwrap();
    reads.sort();
    let count = client.query("SELECT count(*) FROM messages", &[]).unwrap();
    assert_eq!(count[0][0], Value::Integer(n as i64), "every row arrived");
    drop(sub);
    let client = Arc::try_unwrap(client)
        .ok()
        .expect("the reader thread ended");
    client.close().await;
    server.shutdown().await;
    let _ = std::fs::remove_file(&local);
    Run { elapsed, reads }
}

fn main() {
    // `cargo test --benches` runs bench binaries with no arguments too; only run on `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("SLUICE_BOOTSTRAP_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000, 1_000_000]);
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let fill_start = Instant::now();
        fill(&dir.path().join("server.db"), n);
        eprintln!(
            "bootstrap/{n}: server database filled in {:.1?}",
            fill_start.elapsed()
        );
        let raw = raw_copy(&dir.path().join("server.db"), &dir.path().join("raw.db"));
        let rss_before = peak_rss_mib();
        let run = runtime.block_on(sluice_bootstrap(dir.path(), n));
        let sluice = run.elapsed;
        let rss_after = peak_rss_mib();
        println!(
            "bootstrap/{n}: sluice {:.2?} ({:.0} rows/s), raw_sqlite {:.2?} ({:.0} rows/s), \
             sluice/raw throughput {:.0}%, peak RSS {:.0} MiB (before the bootstrap {:.0} MiB), \
             app reads during it: {} reads, p50 {:.2?}, p99 {:.2?}, max {:.2?}",
            sluice,
            n as f64 / sluice.as_secs_f64(),
            raw,
            n as f64 / raw.as_secs_f64(),
            100.0 * raw.as_secs_f64() / sluice.as_secs_f64(),
            rss_after,
            rss_before,
            run.reads.len(),
            run.read_percentile(0.5),
            run.read_percentile(0.99),
            run.reads.last().copied().unwrap_or_default(),
        );
    }
}
