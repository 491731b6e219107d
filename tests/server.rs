//! The sync server over real QUIC on 127.0.0.1: bootstrap, live changes with move
//! semantics, the snapshot/live seam, writes, and bad clients (resume and compaction:
//! `tests/server_resume.rs`).

mod common;

use std::time::Duration;

use common::*;
use sluice::store::{Precondition, RejectCode};
use sluice::wire::{MoveOut, RowEvent, SubId, WriteOutcome};

const OPEN_T1: &str = "SELECT * FROM issues WHERE team_id = 'T1' AND status != 'done'";

#[tokio::test]
async fn snapshot_then_live_moves_in_out_and_within() {
    let server = TestServer::start().await;
    server
        .write(vec![
            insert_issue("a", "T1", "todo", 1),
            insert_issue("b", "T2", "todo", 1),
        ])
        .await;
    server.write(vec![insert_issue("c", "T1", "done", 1)]).await;
    let mut client = server.client("c1").await;
    client.subscribe(1, OPEN_T1, None).await;
    client.until("snapshot", |c| c.sub(1).end.is_some()).await;
    assert_eq!(client.sub(1).rows.keys().collect::<Vec<_>>(), vec!["a"]);

    // Move in (c reopened), within (a renamed), out (a done), insert, delete.
    server
        .write(vec![set_issue("c", "status", text("todo"))])
        .await;
    server
        .write(vec![set_issue("a", "title", text("renamed"))])
        .await;
    server.write(vec![insert_issue("d", "T1", "todo", 2)]).await;
    server.write(vec![delete_issue("d")]).await;
    let last = server
        .write(vec![set_issue("a", "status", text("done"))])
        .await;
    client
        .until("last change", |c| c.sub(1).last_sync >= last)
        .await;
    let state = client.sub(1);
    assert_eq!(state.rows.keys().collect::<Vec<_>>(), vec!["c"]);
    assert_eq!(state.rows, expected_rows(&server.db(), OPEN_T1));
}

#[tokio::test]
async fn live_events_carry_reasons_and_origin() {
    let server = TestServer::start().await;
    server
        .write(vec![
            insert_issue("a", "T1", "todo", 1),
            insert_issue("b", "T1", "todo", 1),
        ])
        .await;
    let mut client = server.client("writer").await;
    client.subscribe(1, OPEN_T1, None).await;
    client.until("snapshot", |c| c.sub(1).end.is_some()).await;
    // Collect raw events for two changes: one moves out, one is deleted.
    server
        .write(vec![set_issue("a", "status", text("done"))])
        .await;
    client.write(7, vec![delete_issue("b")]).await;
    let mut reasons = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while reasons.len() < 2 {
        let event = tokio::time::timeout_at(deadline, client.conn.next_event())
            .await
            .expect("events in time")
            .expect("connection open");
        if let sluice::client::Event::Live(txn) = &event {
            for (_, _, e) in &txn.events {
                if let RowEvent::Delete { key, reason } = e {
                    reasons.push((key_string(key), *reason, txn.origin.clone()));
                }
            }
        }
        client.handle(event);
    }
    assert_eq!(reasons[0].0, "a");
    assert_eq!(reasons[0].1, MoveOut::MovedOut);
    assert_eq!(reasons[0].2, None);
    assert_eq!(reasons[1].0, "b");
    assert_eq!(reasons[1].1, MoveOut::Deleted);
    let origin = reasons[1]
        .2
        .clone()
        .expect("client write tagged with its origin");
    assert_eq!((origin.0 .0.as_str(), origin.1), ("writer", 7));
}

#[tokio::test]
async fn seam_under_concurrent_writes_loses_nothing_and_repeats_nothing() {
    let server = TestServer::start().await;
    for i in 0..200 {
        server
            .write(vec![insert_issue(
                &format!("pre{i:03}"),
                "T1",
                "todo",
                i % 5,
            )])
            .await;
    }
    let handle_writes = {
        let mut client = server.client("w").await;
        tokio::spawn(async move {
            for i in 0..300u64 {
                let id = format!("live{i:03}");
                let m = if i % 3 == 2 {
                    set_issue(&format!("pre{:03}", i % 200), "status", text("done"))
                } else {
                    insert_issue(&id, "T1", "todo", (i % 5) as i64)
                };
                client.write(i + 1, vec![m]).await;
            }
            client.until("all acks", |c| c.writes.len() == 300).await;
            client
                .writes
                .values()
                .filter_map(|o| match o {
                    WriteOutcome::Committed { sync_id } => Some(*sync_id),
                    _ => None,
                })
                .max()
                .unwrap()
        })
    };
    let mut reader = server.client("r").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    reader.subscribe(1, OPEN_T1, None).await;
    let last = handle_writes.await.unwrap();
    reader
        .until("every write seen", |c| {
            c.sub(1).end.is_some() && c.last_sync.max(c.sub(1).last_sync) >= last
        })
        .await;
    let state = reader.sub(1);
    assert_eq!(state.rows, expected_rows(&server.db(), OPEN_T1));
    assert!(
        state.inserts_seen.values().all(|&n| n == 1),
        "a row arrived twice"
    );
}

#[tokio::test]
async fn resend_is_applied_once_and_rejections_do_not_block() {
    let server = TestServer::start().await;
    let mut client = server.client("c").await;
    client
        .write(1, vec![insert_issue("a", "T1", "todo", 1)])
        .await;
    client.until("ack 1", |c| c.writes.contains_key(&1)).await;
    let first = client.writes[&1].clone();
    client.writes.clear();
    client
        .write(1, vec![insert_issue("a", "T1", "todo", 1)])
        .await;
    client
        .until("ack resend", |c| c.writes.contains_key(&1))
        .await;
    assert_eq!(
        client.writes[&1], first,
        "resend must return the original outcome"
    );

    // Duplicate key -> rejected with a reason; the next transaction still commits.
    client
        .write(2, vec![insert_issue("a", "T1", "todo", 1)])
        .await;
    client
        .write(3, vec![insert_issue("b", "T1", "todo", 1)])
        .await;
    client.until("acks 2 and 3", |c| c.writes.len() == 3).await;
    match &client.writes[&2] {
        WriteOutcome::Rejected { code, message } => {
            assert_eq!(*code, RejectCode::AlreadyExists);
            assert!(!message.is_empty());
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(matches!(client.writes[&3], WriteOutcome::Committed { .. }));
}

#[tokio::test]
async fn precondition_failure_rejects_and_writes_nothing() {
    let server = TestServer::start().await;
    server.write(vec![insert_issue("a", "T1", "todo", 1)]).await;
    let mut client = server.client("c").await;
    client
        .conn
        .send(sluice::wire::ClientMessage::Write {
            seq: 1,
            mutations: vec![set_issue("a", "title", text("mine"))],
            preconditions: vec![Precondition {
                table: "issues".into(),
                key: text("a"),
                column: "status".into(),
                expected: text("in_progress"),
            }],
        })
        .await
        .unwrap();
    client.until("answer", |c| c.writes.contains_key(&1)).await;
    assert!(matches!(
        client.writes[&1],
        WriteOutcome::Rejected {
            code: RejectCode::PreconditionFailed,
            ..
        }
    ));
    let rows = expected_rows(&server.db(), "SELECT title FROM issues");
    assert_eq!(rows["a"][1], text("issue a"));
}

#[tokio::test]
async fn bad_subscription_gets_a_precise_error_and_the_session_lives_on() {
    let server = TestServer::start().await;
    let mut client = server.client("c").await;
    client
        .subscribe(1, "SELECT * FROM issues WHERE titel = 'x'", None)
        .await;
    client.until("failure", |c| c.sub(1).failed.is_some()).await;
    let message = client.sub(1).failed.clone().unwrap();
    assert!(
        message.contains("line 1, column 28") && message.contains("titel"),
        "{message}"
    );
    client.subscribe(2, OPEN_T1, None).await;
    client
        .until("second subscription", |c| c.sub(2).end.is_some())
        .await;
}

#[tokio::test]
async fn a_stalled_client_is_cut_off_while_another_keeps_receiving() {
    let server = TestServer::start().await;
    // The stalled client: small receive windows, and it never reads its live stream.
    let limits = sluice::transport::TransportLimits {
        stream_receive_window: 16 * 1024,
        receive_window: 64 * 1024,
        ..Default::default()
    };
    let endpoint = sluice::transport::client_endpoint_with(
        &server.ca(),
        "127.0.0.1:0".parse().unwrap(),
        &limits,
    )
    .unwrap();
    let stalled = sluice::transport::connect(&endpoint, server.handle.local_addr(), "localhost")
        .await
        .unwrap();
    let (send, recv) = stalled.open_bi().await.unwrap();
    let mut control = sluice::transport::FrameWriter::new(send);
    let mut answers = sluice::transport::FrameReader::new(recv);
    for message in [
        sluice::wire::ClientMessage::Hello {
            protocol: sluice::wire::PROTOCOL_VERSION,
            schema_version: None,
            client_id: sluice::ids::ClientId("stalled".into()),
            token: None,
        },
        sluice::wire::ClientMessage::Subscribe {
            sub: SubId(1),
            sql: "SELECT * FROM issues".into(),
            params: sluice::query::Params::new(),
            resume_after: None,
            resume_shape: None,
        },
    ] {
        control
            .send(&sluice::wire::ClientFrame::V1(message))
            .await
            .unwrap();
    }
    let welcome: Option<sluice::wire::ServerFrame> = answers.recv().await.unwrap();
    assert!(welcome.is_some());

    let mut healthy = server.client("healthy").await;
    healthy.subscribe(1, "SELECT * FROM issues", None).await;
    healthy.until("snapshot", |c| c.sub(1).end.is_some()).await;

    // Writes pour in, pipelined by a third client so the server commits them in batches.
    const WRITES: u64 = 4000;
    let mut writer = server.client("writer").await;
    let writes = async {
        for i in 0..WRITES {
            writer
                .write(
                    i + 1,
                    vec![insert_issue(&format!("k{i:05}"), "T1", "todo", 1)],
                )
                .await;
        }
        writer
            .until("all acks", |c| c.writes.len() == WRITES as usize)
            .await;
        assert!(writer
            .writes
            .values()
            .all(|o| matches!(o, WriteOutcome::Committed { .. })));
    };
    let read = healthy.until("all rows", |c| c.sub(1).rows.len() == WRITES as usize);
    tokio::join!(writes, read);
    let closed = tokio::time::timeout(WAIT, stalled.closed())
        .await
        .expect("stalled client cut off");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert!(
                String::from_utf8_lossy(&close.reason).contains("lagging"),
                "{close:?}"
            )
        }
        other => panic!("expected an application close, got {other:?}"),
    }
    assert!(healthy.closed.is_none());
}

#[tokio::test]
async fn schema_and_protocol_mismatches_are_refused_clearly() {
    let server = TestServer::start().await;
    let err = sluice::client::Connection::connect(sluice::client::ConnectOptions {
        addr: server.handle.local_addr(),
        ca: &server.ca(),
        server_name: "localhost",
        client_id: sluice::ids::ClientId("old".into()),
        token: None,
        schema_version: Some(12345),
    })
    .await
    .err()
    .expect("schema mismatch refused");
    assert!(err.to_string().contains("schema"), "{err}");

    // A client from the future: speak protocol 99 by hand.
    let endpoint = sluice::transport::client_endpoint(&server.ca()).unwrap();
    let conn = sluice::transport::connect(&endpoint, server.handle.local_addr(), "localhost")
        .await
        .unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    let mut writer = sluice::transport::FrameWriter::new(send);
    let mut reader = sluice::transport::FrameReader::new(recv);
    writer
        .send(&sluice::wire::ClientFrame::V1(
            sluice::wire::ClientMessage::Hello {
                protocol: 99,
                schema_version: None,
                client_id: sluice::ids::ClientId("future".into()),
                token: None,
            },
        ))
        .await
        .unwrap();
    let answer: Option<sluice::wire::ServerFrame> = reader.recv().await.unwrap();
    match answer {
        Some(sluice::wire::ServerFrame::V1(sluice::wire::ServerMessage::Refused {
            message,
            ..
        })) => {
            assert!(message.contains("server must upgrade"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The server still serves well-behaved clients.
    let mut ok = server.client("ok").await;
    ok.subscribe(1, OPEN_T1, None).await;
    ok.until("snapshot", |c| c.sub(1).end.is_some()).await;
}

#[tokio::test]
async fn malformed_and_oversized_frames_close_only_that_connection() {
    let server = TestServer::start().await;
    let mut good = server.client("good").await;
    good.subscribe(1, OPEN_T1, None).await;
    good.until("snapshot", |c| c.sub(1).end.is_some()).await;

    for bytes in [
        // A valid length prefix followed by garbage.
        {
            let mut b = 5u32.to_be_bytes().to_vec();
            b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff]);
            b
        },
        // A length prefix beyond the maximum frame size.
        u32::MAX.to_be_bytes().to_vec(),
    ] {
        let endpoint = sluice::transport::client_endpoint(&server.ca()).unwrap();
        let conn = sluice::transport::connect(&endpoint, server.handle.local_addr(), "localhost")
            .await
            .unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&bytes).await.unwrap();
        let closed = tokio::time::timeout(WAIT, conn.closed())
            .await
            .expect("server closes it");
        assert!(
            matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
            "{closed:?}"
        );
    }
    let sync = server.write(vec![insert_issue("z", "T1", "todo", 1)]).await;
    good.until("still live", |c| c.sub(1).last_sync >= sync)
        .await;
    assert!(good.sub(1).rows.contains_key("z"));
}

#[tokio::test]
async fn acked_writes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_on(dir.path()).await;
    let ca = handle.cert_path().unwrap().to_path_buf();
    let mut client = Client::connect(&handle, &ca, "c").await;
    for i in 0..20 {
        client
            .write(i + 1, vec![insert_issue(&format!("r{i}"), "T1", "todo", 1)])
            .await;
    }
    client.until("acks", |c| c.writes.len() == 20).await;
    handle.shutdown().await;
    let handle = start_on(dir.path()).await;
    let rows = expected_rows(&dir.path().join("app.db"), "SELECT * FROM issues");
    assert_eq!(rows.len(), 20);
    assert!(handle.local_addr().port() > 0);
}

#[tokio::test]
async fn bootstrap_reports_its_estimate_and_progress() {
    let server = TestServer::start().await;
    let rows: Vec<_> = (0..2500)
        .map(|i| insert_issue(&format!("p{i:04}"), "T1", "todo", 1))
        .collect();
    server.write(rows).await;
    let mut client = server.client("c").await;
    client.subscribe(1, OPEN_T1, None).await;
    let (mut estimate, mut progress, mut rows_seen) = (None, Vec::new(), 0u64);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, client.conn.next_event())
            .await
            .expect("bootstrap in time")
            .expect("connection open");
        match &event {
            sluice::client::Event::Control(sluice::wire::ServerMessage::Subscribed {
                estimate: e,
                ..
            }) => estimate = Some(*e),
            sluice::client::Event::Bootstrap(_, sluice::wire::BootstrapFrame::Row { .. }) => {
                rows_seen += 1
            }
            sluice::client::Event::Bootstrap(
                _,
                sluice::wire::BootstrapFrame::Progress { sent },
            ) => {
                assert_eq!(*sent, rows_seen, "progress counts the rows sent before it");
                progress.push(*sent)
            }
            sluice::client::Event::Bootstrap(_, sluice::wire::BootstrapFrame::End { .. }) => break,
            _ => {}
        }
        client.handle(event);
    }
    assert_eq!(estimate, Some(2500));
    assert_eq!(progress, vec![1000, 2000]);
    assert_eq!(rows_seen, 2500);
}

/// Shutdown drains: writes a session already handed to the committer are committed and
/// answered before the connection closes; nothing is committed without its answer, and
/// nothing answered is missing from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_every_write_it_committed() {
    const WRITES: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let handle = start_on(dir.path()).await;
    let ca = handle.cert_path().unwrap().to_path_buf();
    let mut client = Client::connect(&handle, &ca, "c").await;
    for seq in 1..=WRITES {
        let id = format!("s{seq}");
        client
            .write(seq, vec![insert_issue(&id, "T1", "todo", 1)])
            .await;
    }
    client
        .until("a first answer", |c| !c.writes.is_empty())
        .await;
    let stopping = tokio::spawn(handle.shutdown());
    while tokio::time::timeout(WAIT, client.step()).await.unwrap() {}
    stopping.await.unwrap();
    assert!(
        client
            .closed
            .as_deref()
            .is_some_and(|r| r.contains("shutting down")),
        "closed with the shutdown reason: {:?}",
        client.closed
    );
    let answered: Vec<String> = client
        .writes
        .iter()
        .map(|(seq, outcome)| {
            assert!(
                matches!(outcome, WriteOutcome::Committed { .. }),
                "{outcome:?}"
            );
            format!("s{seq}")
        })
        .collect();
    let stored: Vec<String> = expected_rows(&dir.path().join("app.db"), "SELECT * FROM issues")
        .into_keys()
        .collect();
    let mut answered_sorted = answered.clone();
    answered_sorted.sort();
    assert_eq!(
        stored, answered_sorted,
        "committed exactly what was answered"
    );
    assert!(!answered.is_empty());
}

/// Clients that subscribe and never read their bootstrap streams hold no more than their
/// share of bootstrap places, never delay another client's commit, and are cut off once
/// their streams make no progress for the stall timeout (the read transactions with them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bootstraps_are_bounded_and_ended() {
    let dir = tempfile::tempdir().unwrap();
    let handle = sluice::server::Server::builder(schema_dir(), dir.path().join("app.db"))
        .listen("127.0.0.1:0".parse().unwrap())
        .no_auth()
        .bootstrap_stall_timeout(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let ca = handle.cert_path().unwrap().to_path_buf();
    // Enough rows, with long titles, that a snapshot cannot fit in the stream windows.
    let rows: Vec<_> = (0..6000)
        .map(|i| {
            let mut m = insert_issue(&format!("r{i:05}"), "T1", "todo", 1);
            if let sluice::store::Mutation::Insert { values, .. } = &mut m {
                values.push(("description".into(), text(&"x".repeat(2000))));
            }
            m
        })
        .collect();
    write_committed(&handle, rows).await;
    const SESSIONS: usize = 3;
    const SUBS: u64 = 6;
    let mut stalled = Vec::new();
    for n in 0..SESSIONS {
        let mut client = Client::connect(&handle, &ca, &format!("stalled-{n}")).await;
        for sub in 1..=SUBS {
            client.subscribe(sub, "SELECT * FROM issues", None).await;
        }
        // Never reads another event.
        stalled.push(client);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let running = handle.bootstraps_running();
    assert!(
        running <= SESSIONS * sluice::server::Quotas::default().bootstraps_per_session,
        "{running} bootstraps running"
    );
    // Another client's write is not held up by the stalled readers.
    let mut writer = Client::connect(&handle, &ca, "writer").await;
    writer
        .write(1, vec![insert_issue("w", "T2", "todo", 1)])
        .await;
    writer
        .until("the write's answer", |c| c.writes.contains_key(&1))
        .await;
    assert!(matches!(writer.writes[&1], WriteOutcome::Committed { .. }));
    // The stalled sessions are cut off, and their bootstraps end with them.
    let deadline = tokio::time::Instant::now() + WAIT;
    while handle.bootstraps_running() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stalled bootstraps were never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for mut client in stalled {
        let closed = tokio::time::timeout(WAIT, async { while client.step().await {} }).await;
        assert!(closed.is_ok(), "a stalled session was closed");
        let reason = client.closed.clone().unwrap_or_default();
        assert!(reason.contains("lagging"), "{reason}");
    }
    handle.shutdown().await;
}

/// A subscription's error answer repeats at most a short prefix of what the client sent.
#[tokio::test]
async fn errors_never_echo_a_large_subscription() {
    let server = TestServer::start().await;
    let mut client = server.client("c").await;
    let sql = format!(
        "SELECT * FROM issues WHERE nope = '{}'",
        "x".repeat(100_000)
    );
    client.subscribe(1, &sql, None).await;
    client
        .until("the refusal", |c| c.sub(1).failed.is_some())
        .await;
    let message = client.sub(1).failed.clone().unwrap();
    assert!(message.len() < 1000, "{} bytes echoed", message.len());
    assert_eq!(server.handle.shape_count(), 0);
}

/// A client that floods writes without reading its answers is held back by its own share
/// of the write queue: another client's write still commits meanwhile, and the flood
/// loses nothing (every write is answered once its client reads again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_flood_is_held_back_without_losing_writes_or_slowing_others() {
    let server = TestServer::start().await;
    let flood = (sluice::server::Quotas::default().writes_per_session * 4) as u64;
    let mut flooder = server.client("flooder").await;
    let sender = async {
        for seq in 1..=flood {
            flooder
                .write(
                    seq,
                    vec![insert_issue(&format!("f{seq:05}"), "T1", "todo", 1)],
                )
                .await;
        }
        flooder
    };
    let other = async {
        let mut other = server.client("other").await;
        other
            .write(1, vec![insert_issue("o", "T2", "todo", 1)])
            .await;
        other
            .until("its answer", |c| c.writes.contains_key(&1))
            .await;
        other
    };
    let (mut flooder, other) = tokio::join!(sender, other);
    assert!(matches!(other.writes[&1], WriteOutcome::Committed { .. }));
    flooder
        .until("every flooded write's answer", |c| {
            c.writes.len() == flood as usize
        })
        .await;
    assert!(flooder
        .writes
        .values()
        .all(|o| matches!(o, WriteOutcome::Committed { .. })));
    let rows = expected_rows(&server.db(), "SELECT * FROM issues");
    assert_eq!(rows.len(), flood as usize + 1);
}

/// Once `shutdown` returns the database files are closed: the last connection folded the
/// write-ahead log into the database and removed it, so a copy of the database file
/// taken then holds every committed row (what a backup or a restore does). Before,
/// tasks still holding the store (a read finishing) closed it after `shutdown`
/// returned, and a copy could miss the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_the_database_files_are_closed() {
    let server = TestServer::start().await;
    for i in 0..20 {
        server
            .write(vec![insert_issue(&format!("i{i:02}"), "T1", "todo", 1)])
            .await;
    }
    let mut client = server.client("c1").await;
    client.subscribe(1, OPEN_T1, None).await;
    client.until("snapshot", |c| c.sub(1).end.is_some()).await;
    let db = server.db();
    server.handle.shutdown().await;
    for suffix in ["-wal", "-shm"] {
        let file = format!("{}{suffix}", db.display());
        assert!(
            !std::path::Path::new(&file).exists(),
            "{file} is still there"
        );
    }
    let copy = server.dir.path().join("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM issues", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 20);
}
