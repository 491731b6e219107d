//! Idempotency records are pruned, and pruning never makes a resend apply twice: within
//! the kept window a resend gets its first outcome back; after its record was forgotten
//! it is rejected `expired`, and the database is unchanged by it.

mod common;

use std::time::Duration;

use common::*;
use sluice::store::RejectCode;
use sluice::wire::WriteOutcome;

/// Sends `seq` and waits for its outcome (forgetting any earlier outcome of `seq`).
async fn send(client: &mut Client, seq: u64, id: &str) -> WriteOutcome {
    client.writes.remove(&seq);
    client
        .write(seq, vec![insert_issue(id, "T1", "todo", 1)])
        .await;
    client
        .until("the outcome", |c| c.writes.contains_key(&seq))
        .await;
    client.writes[&seq].clone()
}

#[tokio::test]
async fn a_resend_after_its_record_is_pruned_is_told_so_and_not_applied() {
    let server = TestServer::start().await;
    let mut client = server.client("phone").await;
    let first = send(&mut client, 1, "a").await;
    let WriteOutcome::Committed { sync_id } = first else {
        panic!("{first:?}")
    };
    // Within the window, a resend gets its first answer back.
    let forgotten = server
        .handle
        .prune_outcomes(Duration::from_secs(3600), 1_000)
        .await
        .unwrap();
    assert_eq!(forgotten, 0);
    assert_eq!(send(&mut client, 1, "a").await, first);
    // Another client's record, to see that pruning by count forgets the oldest first
    // (records are timed to the millisecond).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut other = server.client("laptop").await;
    assert!(matches!(
        send(&mut other, 1, "b").await,
        WriteOutcome::Committed { .. }
    ));
    let forgotten = server
        .handle
        .prune_outcomes(Duration::from_secs(3600), 1)
        .await
        .unwrap();
    assert_eq!(forgotten, 1, "the oldest record goes");
    match send(&mut client, 1, "a").await {
        WriteOutcome::Rejected { code, message } => {
            assert_eq!(code, RejectCode::Expired, "{message}");
            assert!(message.contains("not applied again"), "{message}");
        }
        other => panic!("expected `expired`, got {other:?}"),
    }
    // Nothing was written by the resend: the next commit follows the last one.
    let next = send(&mut client, 2, "c").await;
    let WriteOutcome::Committed { sync_id: next } = next else {
        panic!("{next:?}")
    };
    assert_eq!(next.0, sync_id.0 + 2, "only `b` committed in between");
    // The other client's record was kept and still answers.
    assert!(matches!(
        send(&mut other, 1, "b").await,
        WriteOutcome::Committed { .. }
    ));
    // Pruning by age forgets everything older than the age.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let forgotten = server
        .handle
        .prune_outcomes(Duration::ZERO, 1_000)
        .await
        .unwrap();
    assert_eq!(forgotten, 2);
    for (c, seq, id) in [(&mut client, 2, "c"), (&mut other, 1, "b")] {
        assert!(matches!(
            send(c, seq, id).await,
            WriteOutcome::Rejected {
                code: RejectCode::Expired,
                ..
            }
        ));
    }
    server.handle.shutdown().await;
}

/// A resend that commits nothing new answers with its first sync id, older than the
/// head. When it is the last transaction of a batch that also committed new ones, the
/// server must still count the batch's newest commit as handed to its sessions: a
/// bootstrap that read its snapshot at that head waits for it before it joins, and with
/// no later write it would wait for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resend_ending_a_batch_does_not_hold_back_the_bootstraps_after_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    // The hook holds the committer on the transaction that inserts `gate`, so that what
    // the client sends meanwhile is committed as one batch.
    let (entered, open) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let dir = tempfile::tempdir().unwrap();
    let handle = {
        let (entered, open) = (entered.clone(), open.clone());
        sluice::server::Server::builder(schema_dir(), dir.path().join("app.db"))
            .listen("127.0.0.1:0".parse().unwrap())
            .no_auth()
            .write_hook(move |_, txn| {
                let gate = txn.mutations.iter().any(|m| {
                    matches!(m, sluice::store::Mutation::Insert { values, .. }
                        if values.iter().any(|(_, v)| *v == text("gate")))
                });
                if gate {
                    entered.store(true, Ordering::SeqCst);
                    while !open.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Ok(())
            })
            .start()
            .await
            .unwrap()
    };
    let ca = handle.cert_path().unwrap().to_path_buf();
    let mut writer = Client::connect(&handle, &ca, "phone").await;
    let first = send(&mut writer, 1, "a").await;
    let WriteOutcome::Committed { sync_id: first_id } = first else {
        panic!("{first:?}")
    };
    writer
        .write(2, vec![insert_issue("gate", "T1", "todo", 1)])
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !entered.load(Ordering::SeqCst) {
        assert!(tokio::time::Instant::now() < deadline, "the hook never ran");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // A new transaction, then the resend of the first: both wait behind the gate.
    writer
        .write(3, vec![insert_issue("b", "T1", "todo", 1)])
        .await;
    writer
        .write(1, vec![insert_issue("a", "T1", "todo", 1)])
        .await;
    // The session handles requests in order: once a later fetch is answered, both
    // writes are in the committer's queue.
    fetch(&mut writer, 1, "issues", vec![text("a")]).await;
    open.store(true, Ordering::SeqCst);
    writer
        .until("every outcome", |c| {
            [2, 3].iter().all(|seq| c.writes.contains_key(seq))
        })
        .await;
    let WriteOutcome::Committed { sync_id: newest } = writer.writes[&3].clone() else {
        panic!("{:?}", writer.writes[&3])
    };
    assert_eq!(
        writer.writes[&1],
        WriteOutcome::Committed { sync_id: first_id },
        "the resend answers with its first outcome"
    );
    // A new subscriber reads at the head (the newest commit) and joins there.
    let mut reader = Client::connect(&handle, &ca, "laptop").await;
    reader
        .subscribe(1, "SELECT * FROM issues WHERE team_id = 'T1'", None)
        .await;
    reader.until_joined(1).await;
    assert_eq!(reader.sub(1).end, Some(newest));
    assert_eq!(reader.sub(1).rows.len(), 3, "a, gate and b");
    handle.shutdown().await;
}
