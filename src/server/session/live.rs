//! A session's live stream: the transactions the committer queued for it, gathered into
//! as few stream writes as a burst allows, each sent only to the subscriptions whose
//! bootstraps it follows (the seams), its origin named only to its author.
//!
//! Writes only to its own stream; it must not touch the store or the registry.

use super::*;

/// Writes the session's live stream. `client_id` is the server's name for the client
/// (to recognize its own transactions), `chosen_id` the id it chose: a transaction's
/// origin goes only to its author, under the author's own id; nobody else learns who
/// wrote what.
pub(super) async fn write_live(
    mut writer: FrameWriter,
    mut queue: mpsc::Receiver<LiveItem>,
    (client_id, chosen_id): (ClientId, ClientId),
    metrics: Arc<Metrics>,
) {
    // When each transaction of the batch being gathered was committed.
    let mut committed: Vec<Instant> = Vec::new();
    // Per subscription, the last sync id its bootstrap already covered.
    let mut seams: HashMap<SubId, SyncId> = HashMap::new();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(first) = queue.recv().await {
        // Whatever else is already queued goes out in the same stream write: a burst of
        // commits costs one write per session, not one per transaction.
        let mut next = Some(first);
        let mut batched = 0;
        while let Some(item) = next.take() {
            let frame = match item {
                LiveItem::Seam { sub, through } => {
                    seams.insert(sub, through);
                    Some(Live::Joined {
                        sub,
                        sync_id: through,
                    })
                }
                LiveItem::Forget { sub } => {
                    seams.remove(&sub);
                    None
                }
                LiveItem::Txn(mut txn, at) => {
                    committed.push(at);
                    txn.events
                        .retain(|(sub, _, _)| seams.get(sub).is_none_or(|&w| txn.sync_id > w));
                    // An empty transaction still goes to its author, to confirm it in order.
                    let authored = txn.origin.as_ref().is_some_and(|(c, _)| *c == client_id);
                    txn.origin = match txn.origin.take() {
                        Some((_, seq)) if authored => Some((chosen_id.clone(), seq)),
                        _ => None,
                    };
                    (!txn.events.is_empty() || authored).then_some(Live::Txn(txn))
                }
            };
            if let Some(frame) = frame {
                if let Err(e) = encode(&LiveFrame::V1(frame), &mut buf) {
                    warn!(error = %e, "live frame not encodable; closing the live stream");
                    return;
                }
            }
            batched += 1;
            if batched < LIVE_BATCH_FRAMES && buf.len() < LIVE_BATCH_BYTES {
                next = queue.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            if writer.stream().write_all(&buf).await.is_err() {
                break;
            }
            for at in committed.drain(..) {
                metrics.sent(at.elapsed());
            }
            buf.clear();
            buf.shrink_to(LIVE_BATCH_BYTES);
        }
        // Transactions that sent this session nothing are no send to time.
        committed.clear();
    }
}
