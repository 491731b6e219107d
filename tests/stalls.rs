//! Fifty clients that subscribe at once and never read their bootstrap streams: commits
//! go on beside their open read transactions, the stall timeout ends every one of them
//! (closing those sessions as lagging, counted in the metrics), and once they are gone
//! the WAL stops growing however much is written. A client that asks for fetches and
//! reads none of the answers is ended by the same timeout.

mod common;

use std::time::Duration;

use common::*;
use sluice::server::Quotas;
use sluice::store::Mutation;
use sluice::wire::{ClientFrame, ClientMessage, WriteOutcome, PROTOCOL_VERSION};

const STALLED: usize = 50;
const ROWS: usize = 1000;

fn long_issue(id: &str) -> Mutation {
    let mut m = insert_issue(id, "T1", "todo", 1);
    if let Mutation::Insert { values, .. } = &mut m {
        values.push(("description".into(), text(&"x".repeat(2000))));
    }
    m
}

/// A client with tiny receive windows that subscribes to every issue and then reads
/// nothing: its bootstrap cannot finish, so the server's snapshot reader waits.
async fn stalled_subscriber(
    addr: std::net::SocketAddr,
    ca: std::path::PathBuf,
    name: String,
) -> Stalled {
    let subscribe = ClientMessage::Subscribe {
        sub: 1.into(),
        sql: "SELECT * FROM issues".into(),
        params: sluice::query::Params::new(),
        resume_after: None,
        resume_shape: None,
    };
    stalled_client(addr, ca, name, vec![subscribe]).await
}

/// A client with tiny receive windows that sends `requests` after its hello and reads
/// nothing.
async fn stalled_client(
    addr: std::net::SocketAddr,
    ca: std::path::PathBuf,
    name: String,
    requests: Vec<ClientMessage>,
) -> Stalled {
    let limits = sluice::transport::TransportLimits {
        stream_receive_window: 16 * 1024,
        receive_window: 64 * 1024,
        ..Default::default()
    };
    let endpoint =
        sluice::transport::client_endpoint_with(&ca, "127.0.0.1:0".parse().unwrap(), &limits)
            .unwrap();
    let connection = sluice::transport::connect(&endpoint, addr, "localhost")
        .await
        .unwrap();
    // The answers are never read, but the stream stays open.
    let (send, answers) = connection.open_bi().await.unwrap();
    let mut control = sluice::transport::FrameWriter::new(send);
    let hello = ClientMessage::Hello {
        protocol: PROTOCOL_VERSION,
        schema_version: None,
        client_id: sluice::ids::ClientId(name),
        token: None,
    };
    for message in std::iter::once(hello).chain(requests) {
        control.send(&ClientFrame::V1(message)).await.unwrap();
    }
    Stalled {
        _endpoint: endpoint,
        connection,
        _control: control,
        _answers: answers,
    }
}

/// A stalled client: everything it opened stays open (a dropped control stream would be
/// a finished one, and end the session).
struct Stalled {
    _endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    _control: sluice::transport::FrameWriter,
    _answers: quinn::RecvStream,
}

async fn wait_for(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn wal_bytes(server: &TestServer) -> u64 {
    let wal = format!("{}-wal", server.db().display());
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_stalled_bootstraps_neither_block_commits_nor_hold_the_wal() {
    let server = TestServer::with_quotas(Quotas {
        stall_timeout_ms: 3_000,
        ..Quotas::default()
    })
    .await;
    let rows: Vec<_> = (0..ROWS).map(|i| long_issue(&format!("r{i:05}"))).collect();
    server.write(rows).await;
    // Connected all at once, so that their bootstraps overlap.
    let tasks: Vec<_> = (0..STALLED)
        .map(|n| {
            let (addr, ca) = (server.handle.local_addr(), server.ca());
            tokio::spawn(stalled_subscriber(addr, ca, format!("stalled-{n}")))
        })
        .collect();
    let mut stalled = Vec::new();
    for task in tasks {
        stalled.push(task.await.unwrap());
    }

    // Commits go on beside the open snapshot readers.
    let mut writer = server.client("writer").await;
    for seq in 1..=10u64 {
        writer
            .write(seq, vec![insert_issue(&format!("w{seq}"), "T2", "todo", 1)])
            .await;
    }
    writer.until("every answer", |c| c.writes.len() == 10).await;
    assert!(writer
        .writes
        .values()
        .all(|o| matches!(o, WriteOutcome::Committed { .. })));

    // The stall timeout ends every bootstrap and closes its session as lagging.
    let cut_off = format!("sluice_session_cutoffs_total{{reason=\"stalled\"}} {STALLED}");
    wait_for("every stalled bootstrap cut off", || {
        server.handle.metrics().contains(&cut_off)
    })
    .await;
    wait_for("every stalled bootstrap ended", || {
        server.handle.bootstraps_running() == 0
    })
    .await;
    for client in &stalled {
        match tokio::time::timeout(WAIT, client.connection.closed()).await {
            Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
                let reason = String::from_utf8_lossy(&close.reason);
                assert!(reason.contains("lagging"), "{reason}");
            }
            other => panic!("expected a lagging close, got {other:?}"),
        }
    }

    // With no reader left behind, checkpoints reset the WAL: rewriting every row many
    // times over does not grow it past a few checkpoints' worth.
    let before = wal_bytes(&server);
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        let updates = (0..ROWS / 2)
            .map(|i| {
                set_issue(
                    &format!("r{i:05}"),
                    "description",
                    text(&format!("{round}{}", "y".repeat(2000))),
                )
            })
            .collect();
        server.write(updates).await;
    }
    // Each round rewrites 500 rows of 2 KB (with their old and new images in the log):
    // about 3 MB per round, 60 MB in all.
    let after = wal_bytes(&server);
    let bound = before.max(8 << 20) + (8 << 20);
    assert!(
        after <= bound,
        "the WAL grew from {before} to {after} bytes (bound {bound})"
    );
    server.handle.shutdown().await;
}

#[tokio::test]
async fn a_client_that_reads_no_fetch_answers_is_ended_by_the_stall_timeout() {
    let server = TestServer::with_quotas(Quotas {
        stall_timeout_ms: 1_000,
        ..Quotas::default()
    })
    .await;
    server.write(vec![long_issue("big")]).await;
    // More answers than the session's control queue holds, each larger than the
    // client's window: the last fetches find the queue full and wait.
    let fetches = (1..=400)
        .map(|request| ClientMessage::Fetch {
            request,
            table: "issues".into(),
            keys: vec![text("big")],
        })
        .collect();
    let (addr, ca) = (server.handle.local_addr(), server.ca());
    let stalled = stalled_client(addr, ca, "no-reader".into(), fetches).await;
    match tokio::time::timeout(WAIT, stalled.connection.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
            let reason = String::from_utf8_lossy(&close.reason);
            assert!(reason.contains("lagging: a fetch answer"), "{reason}");
        }
        other => panic!("expected a lagging close, got {other:?}"),
    }
    assert!(server
        .handle
        .metrics()
        .contains("sluice_session_cutoffs_total{reason=\"stalled\"} 1"));
    // Another client fetches as before.
    let mut other = server.client("reader").await;
    let answer = fetch(&mut other, 1, "issues", vec![text("big")]).await;
    assert!(
        matches!(&answer, sluice::wire::ServerMessage::Fetched { rows, .. } if rows.len() == 1),
        "{answer:?}"
    );
    server.handle.shutdown().await;
}
