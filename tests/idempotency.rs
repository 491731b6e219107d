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
