//! Memory per idle connection: `sluice serve` (this build's binary, in its own process so
//! its memory is its own) on the example schema with a few issues; this process connects
//! N protocol-level clients ([`sluice::client::Connection`], handshake done), then
//! subscribes each to one shape (`SELECT * FROM issues WHERE team_id = 'T1'`, its
//! snapshot received), and reads the server's resident set (`VmRSS` in
//! `/proc/PID/status`) before and after each step, once the server has settled.
//!
//! Prints `idle connections: N, server RSS +X KB per connection (Y KB with one
//! subscription each)`. `SLUICE_IDLE_CLIENTS` sets N (default 1,000). Linux only.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sluice::client::{Connection, Event};
use sluice::store::Mutation;
use sluice::value::Value;
use sluice::wire::{BootstrapFrame, ClientMessage, ServerMessage, WriteOutcome};

/// How long the server is left alone before its memory is read.
const SETTLE: Duration = Duration::from_secs(2);
/// Bound on any single wait; a bench that stalls fails instead of hanging.
const WAIT: Duration = Duration::from_secs(120);
const SUBSCRIPTION: &str = "SELECT * FROM issues WHERE team_id = 'T1'";

/// The server process, killed when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(db: &Path) -> (Served, String) {
    let schema = support::schema_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--schema"])
        .arg(schema)
        .arg("--db")
        .arg(db)
        .args(["--listen", "127.0.0.1:0", "--no-auth"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sluice serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (Served(child), addr)
}

/// The resident set of process `pid`, in KB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

async fn settled_rss(pid: u32) -> u64 {
    tokio::time::sleep(SETTLE).await;
    rss_kb(pid)
}

async fn connect_all(addr: std::net::SocketAddr, ca: &Path, n: usize) -> Vec<Connection> {
    let ca = ca.to_path_buf();
    support::in_waves(n, |i| {
        support::connect(addr, ca.clone(), format!("idle-{i}"))
    })
    .await
}

/// Subscribes every connection and waits for each one's snapshot end.
async fn subscribe_all(conns: &mut [Connection]) {
    for conn in conns.iter_mut() {
        conn.send(support::subscribe(SUBSCRIPTION))
            .await
            .expect("subscribe");
    }
    for conn in conns.iter_mut() {
        tokio::time::timeout(WAIT, async {
            while let Some(event) = conn.next_event().await {
                if let Event::Bootstrap(_, BootstrapFrame::End { .. }) = event {
                    return;
                }
            }
            panic!("connection closed before its snapshot ended");
        })
        .await
        .expect("snapshot in time");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects nothing here.
    let n: usize = std::env::var("SLUICE_IDLE_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("idle.db");
    let (served, addr) = serve(&db);
    let pid = served.0.id();
    let ca = PathBuf::from(format!("{}.cert.pem", db.display()));
    let addr: std::net::SocketAddr = addr.parse().expect("address");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut writer = connect_all(addr, &ca, 1).await;
        let text = |s: &str| Value::Text(s.into());
        let mut rows = vec![Mutation::Insert {
            table: "teams".into(),
            values: vec![
                ("id".into(), text("T1")),
                ("key".into(), text("ENG")),
                ("name".into(), text("Engineering")),
            ],
        }];
        rows.extend((0..20).map(|i| Mutation::Insert {
            table: "issues".into(),
            values: vec![
                ("id".into(), text(&format!("I{i}"))),
                ("team_id".into(), text("T1")),
                ("number".into(), Value::Integer(i)),
                ("title".into(), text(&format!("issue {i}"))),
                ("status".into(), text("todo")),
                ("priority".into(), Value::Integer(i % 4)),
            ],
        }));
        writer[0]
            .send(ClientMessage::Write {
                seq: 1,
                mutations: rows,
                preconditions: Vec::new(),
            })
            .await
            .expect("write");
        let outcome = tokio::time::timeout(WAIT, async {
            while let Some(event) = writer[0].next_event().await {
                if let Event::Control(ServerMessage::WriteResult { outcome, .. }) = event {
                    return outcome;
                }
            }
            panic!("connection closed before the write's answer");
        })
        .await
        .expect("write answered in time");
        assert!(
            matches!(outcome, WriteOutcome::Committed { .. }),
            "{outcome:?}"
        );
        let before = settled_rss(pid).await;
        let mut conns = connect_all(addr, &ca, n).await;
        let connected = settled_rss(pid).await;
        subscribe_all(&mut conns).await;
        let subscribed = settled_rss(pid).await;
        let per = |from: u64, to: u64| to.saturating_sub(from) as f64 / n as f64;
        println!(
            "server RSS: {before} KB before, {connected} KB with {n} idle connections, \
             {subscribed} KB with one subscription each"
        );
        println!(
            "idle connections: {n}, server RSS +{:.1} KB per connection ({:.1} KB with one \
             subscription each)",
            per(before, connected),
            per(before, subscribed)
        );
        drop(conns);
        drop(writer);
    });
}
