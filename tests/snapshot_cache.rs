//! The snapshot cache (reconnect storms): many sessions subscribing to one shape at one
//! sync id cost one store read, counted by `sluice_snapshot_reads_total`; a subscriber
//! after a commit gets a fresh snapshot (never a stale cached one); another shape or
//! another projection gets its own read. Over real QUIC on 127.0.0.1.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice::client::{ConnectOptions, Connection, Event};
use sluice::ids::{ClientId, SubId, SyncId};
use sluice::query::Params;
use sluice::server::{Server, ServerHandle};
use sluice::store::{Mutation, TxnOutcome, WriteTxn};
use sluice::value::Value;
use sluice::wire::{BootstrapFrame, ClientMessage, ServerMessage};

const WAIT: Duration = Duration::from_secs(60);
const T1: &str = "SELECT * FROM issues WHERE team_id = 'T1'";

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema")
}

fn issue(n: usize, team: &str) -> Mutation {
    Mutation::Insert {
        table: "issues".into(),
        values: vec![
            ("id".into(), Value::Text(format!("issue-{n:05}"))),
            ("team_id".into(), Value::Text(team.into())),
            ("number".into(), Value::Integer(n as i64)),
            ("title".into(), Value::Text(format!("Issue {n}"))),
            ("status".into(), Value::Text("todo".into())),
            ("priority".into(), Value::Integer((n % 4) as i64)),
        ],
    }
}

async fn write(server: &ServerHandle, mutations: Vec<Mutation>) -> SyncId {
    let txn = WriteTxn {
        origin: None,
        mutations,
        preconditions: Vec::new(),
    };
    match server.write(txn).await.expect("write") {
        TxnOutcome::Committed { sync_id, .. } => sync_id,
        other => panic!("not committed: {other:?}"),
    }
}

fn counter(server: &ServerHandle, name: &str) -> u64 {
    server
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .expect("counter present")
}

async fn connect(server: &ServerHandle, i: usize) -> Connection {
    let ca = server.cert_path().expect("certificate").to_path_buf();
    Connection::connect(ConnectOptions {
        addr: server.local_addr(),
        ca: &ca,
        server_name: "localhost",
        client_id: ClientId(format!("storm-{i}")),
        token: None,
        schema_version: None,
    })
    .await
    .expect("connects")
}

/// A bootstrap as one client saw it: the snapshot's keys and rows, and its sync id.
#[derive(Debug, PartialEq)]
struct Snapshot {
    rows: BTreeSet<String>,
    sync_id: SyncId,
}

/// Subscribes `conn` to `sql` and reads its bootstrap to the end.
async fn bootstrap(conn: &mut Connection, sub: u64, sql: &str) -> Snapshot {
    let sub = SubId(sub);
    conn.send(ClientMessage::Subscribe {
        sub,
        sql: sql.into(),
        params: Params::new(),
        resume_after: None,
        resume_shape: None,
    })
    .await
    .expect("subscribe");
    let mut rows = BTreeSet::new();
    loop {
        let event = tokio::time::timeout(WAIT, conn.next_event())
            .await
            .expect("bootstrap in time")
            .expect("connection open");
        match event {
            Event::Bootstrap(s, BootstrapFrame::Row { key, row }) if s == sub => {
                rows.insert(format!("{key:?} {row:?}"));
            }
            Event::Bootstrap(s, BootstrapFrame::End { sync_id }) if s == sub => {
                return Snapshot { rows, sync_id };
            }
            Event::Control(ServerMessage::SubscribeFailed { message, .. }) => {
                panic!("subscription failed: {message}")
            }
            Event::Closed(why) => panic!("closed: {why:?}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_reads_each_shape_once_per_sync_id_and_never_serves_a_stale_snapshot() {
    const CLIENTS: usize = 24;
    let dir = tempfile::tempdir().expect("temporary folder");
    let server = Server::builder(schema_dir(), dir.path().join("app.db"))
        .listen("127.0.0.1:0".parse().expect("address"))
        .no_auth()
        .start()
        .await
        .expect("server starts");
    let rows: Vec<Mutation> = (0..300)
        .map(|n| issue(n, if n % 3 == 0 { "T1" } else { "T2" }))
        .collect();
    let first = write(&server, rows).await;
    let mut conns = Vec::new();
    for i in 0..CLIENTS {
        conns.push(connect(&server, i).await);
    }
    let reads = counter(&server, "sluice_snapshot_reads_total");

    // Every client subscribes to the same shape at once: one read at `first`.
    let mut storm = tokio::task::JoinSet::new();
    for mut conn in conns.drain(..) {
        storm.spawn(async move {
            let snapshot = bootstrap(&mut conn, 1, T1).await;
            (conn, snapshot)
        });
    }
    let mut snapshots = Vec::new();
    while let Some(done) = storm.join_next().await {
        let (conn, snapshot) = done.expect("client task");
        conns.push(conn);
        snapshots.push(snapshot);
    }
    assert_eq!(counter(&server, "sluice_snapshot_reads_total") - reads, 1);
    assert_eq!(
        counter(&server, "sluice_snapshot_cache_hits_total"),
        CLIENTS as u64 - 1
    );
    assert!(snapshots.iter().all(|s| *s == snapshots[0]));
    assert_eq!(snapshots[0].rows.len(), 100);
    assert_eq!(snapshots[0].sync_id, first);

    // Another shape at the same sync id is its own read; a second subscriber to it is not.
    let narrow = "SELECT id, title FROM issues WHERE team_id = 'T1'";
    let projected = bootstrap(&mut conns[0], 2, narrow).await;
    assert_eq!(projected.rows.len(), 100);
    assert_ne!(projected.rows, snapshots[0].rows, "projection applied");
    assert_eq!(bootstrap(&mut conns[1], 2, narrow).await, projected);
    assert_eq!(counter(&server, "sluice_snapshot_reads_total") - reads, 2);

    // A commit moves the head: the next subscriber must see it, from a fresh read.
    let second = write(&server, vec![issue(1000, "T1")]).await;
    let late = bootstrap(&mut conns[2], 3, T1).await;
    assert_eq!(late.sync_id, second);
    assert_eq!(late.rows.len(), 101);
    assert!(late.rows.is_superset(&snapshots[0].rows));
    assert_eq!(counter(&server, "sluice_snapshot_reads_total") - reads, 3);
    // And a subscriber at that same head shares it.
    assert_eq!(bootstrap(&mut conns[3], 3, T1).await, late);
    assert_eq!(counter(&server, "sluice_snapshot_reads_total") - reads, 3);

    for conn in conns {
        conn.close().await;
    }
    server.shutdown().await;
}
