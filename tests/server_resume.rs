//! Resume over real QUIC on 127.0.0.1: a subscription resumed from a sync id gets only
//! the matching changes it missed; a cut below the horizon, past the head, or a replay
//! larger than a snapshot is refused (and counted), and the subscription bootstraps
//! again under the same id.

mod common;

use common::*;

const OPEN_T1: &str = "SELECT * FROM issues WHERE team_id = 'T1' AND status != 'done'";

#[tokio::test]
async fn resume_replays_only_the_missed_matching_changes() {
    let server = TestServer::start().await;
    server.write(vec![insert_issue("a", "T1", "todo", 1)]).await;
    let mut client = server.client("c").await;
    client.subscribe(1, OPEN_T1, None).await;
    client.until("snapshot", |c| c.sub(1).end.is_some()).await;
    let mut rows = client.sub(1).rows.clone();
    let w = client.sub(1).end.unwrap();
    client.conn.close().await;

    server.write(vec![insert_issue("b", "T1", "todo", 1)]).await;
    server.write(vec![insert_issue("x", "T2", "todo", 1)]).await;
    server
        .write(vec![set_issue("a", "status", text("done"))])
        .await;

    let mut again = server.client("c").await;
    again.subscribe(1, OPEN_T1, Some(w)).await;
    again.until("replay", |c| c.sub(1).end.is_some()).await;
    let replay = again.sub(1);
    assert!(replay.inserts_seen.contains_key("b"));
    assert!(
        !replay.inserts_seen.contains_key("x"),
        "non-matching change replayed"
    );
    // Apply the replay onto what the client had.
    rows.remove("a");
    for (k, v) in &replay.rows {
        rows.insert(k.clone(), v.clone());
    }
    assert_eq!(rows, expected_rows(&server.db(), OPEN_T1));
}

#[tokio::test]
async fn compaction_refuses_only_the_subscription_that_is_too_old() {
    let server = TestServer::start().await;
    let old = server.write(vec![insert_issue("a", "T1", "todo", 1)]).await;
    let mid = server.write(vec![insert_issue("b", "T2", "todo", 1)]).await;
    server.write(vec![insert_issue("c", "T2", "todo", 1)]).await;
    server.handle.compact(mid).await.unwrap();
    let mut client = server.client("c").await;
    client.subscribe(1, OPEN_T1, Some(old)).await;
    client
        .subscribe(2, "SELECT * FROM issues WHERE team_id = 'T2'", Some(mid))
        .await;
    client
        .until("answers", |c| {
            c.sub(1).resume_refused && c.sub(2).end.is_some()
        })
        .await;
    assert!(client.sub(2).rows.contains_key("c"));
    assert!(!client.sub(2).resume_refused);
    let metrics = server.handle.metrics();
    for (reason, n) in [
        ("compacted", 1),
        ("ahead", 0),
        ("shape", 0),
        ("too_many", 0),
    ] {
        let line = format!("sluice_resume_refusals_total{{reason=\"{reason}\"}} {n}\n");
        assert!(metrics.contains(&line), "{line}{metrics}");
    }
    // Re-bootstrap of the refused one only.
    client.subscribe(3, OPEN_T1, None).await;
    client
        .until("rebootstrap", |c| c.sub(3).end.is_some())
        .await;
    assert_eq!(client.sub(3).rows.keys().collect::<Vec<_>>(), vec!["a"]);
}

/// A cut past the head (a database restored from an older backup, or a forged cut) is
/// refused at once, never answered from behind it; the fresh snapshot is the store's.
#[tokio::test]
async fn a_cut_past_the_head_is_refused() {
    let server = TestServer::start().await;
    let head = server.write(vec![insert_issue("a", "T1", "todo", 1)]).await;
    let mut client = server.client("c").await;
    let ahead = sluice::ids::SyncId(head.0 + 1000);
    client.subscribe(1, OPEN_T1, Some(ahead)).await;
    client
        .until("the refusal", |c| {
            c.sub(1).resume_refused || c.sub(1).end.is_some()
        })
        .await;
    assert!(client.sub(1).resume_refused && client.sub(1).end.is_none());
    let metrics = server.handle.metrics();
    assert!(
        metrics.contains("sluice_resume_refusals_total{reason=\"ahead\"} 1"),
        "{metrics}"
    );
    client.subscribe(1, OPEN_T1, None).await;
    client.until("snapshot", |c| c.sub(1).end.is_some()).await;
    assert_eq!(client.sub(1).rows.keys().collect::<Vec<_>>(), vec!["a"]);
}

/// A subscription refused after it was registered (here: a resume that would replay more
/// rows than a snapshot costs) leaves nothing behind: the client subscribes again under
/// the same id and gets its snapshot, and no shape stays registered for it.
#[tokio::test]
async fn a_refused_resume_frees_its_subscription_id() {
    let server = TestServer::start().await;
    let rows: Vec<_> = (0..=sluice::server::MAX_RESUME_ROWS)
        .map(|i| insert_issue(&format!("r{i:06}"), "T1", "todo", 1))
        .collect();
    server.write(rows).await;
    let mut client = server.client("c").await;
    client
        .subscribe(1, "SELECT id FROM issues", Some(sluice::ids::SyncId::ZERO))
        .await;
    client
        .until("the refusal", |c| c.sub(1).resume_refused)
        .await;
    let metrics = server.handle.metrics();
    assert!(
        metrics.contains("sluice_resume_refusals_total{reason=\"too_many\"} 1"),
        "{metrics}"
    );
    client.subscribe(1, "SELECT id FROM issues", None).await;
    client
        .until("the snapshot", |c| c.sub(1).end.is_some())
        .await;
    assert!(client.sub(1).failed.is_none(), "{:?}", client.sub(1).failed);
    assert_eq!(
        client.sub(1).rows.len(),
        sluice::server::MAX_RESUME_ROWS + 1
    );
    assert_eq!(server.handle.shape_count(), 1);
}
