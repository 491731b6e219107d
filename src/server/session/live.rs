//! A session's live stream: the transactions the committer queued for it, gathered into
//! as few stream writes as a burst allows, each sent only to the subscriptions whose
//! bootstraps it follows (the seams), its origin named only to its author.
//!
//! The events arrive encoded, shared with every other session of the same shapes; what
//! a session writes per transaction is its own frame around those bytes. A transaction
//! too large for one frame is split into parts the client reassembles before applying
//! anything of it ([`crate::wire::encode_txn`]).
//!
//! Writes only to its own stream; it must not touch the store or the registry.

use super::*;
use crate::wire::{encode, encode_txn, LiveFrame, TxnFrame};

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
            let written = match item {
                LiveItem::Seam { sub, through } => {
                    seams.insert(sub, through);
                    let joined = Live::Joined {
                        sub,
                        sync_id: through,
                    };
                    encode(&LiveFrame::V1(joined), &mut buf)
                }
                LiveItem::Forget { sub } => {
                    seams.remove(&sub);
                    Ok(())
                }
                LiveItem::Resized {
                    sub,
                    sync_id,
                    events,
                } => {
                    let resized = Live::Resized {
                        sub,
                        sync_id,
                        events,
                    };
                    encode(&LiveFrame::V1(resized), &mut buf)
                }
                LiveItem::Txn(txn, at) => {
                    committed.push(at);
                    match for_session(txn, &seams, (&client_id, &chosen_id)) {
                        Some(txn) => encode_txn(txn, &mut buf),
                        None => Ok(()),
                    }
                }
            };
            if let Err(e) = written {
                warn!(error = %e, "live frame not encodable; closing the live stream");
                return;
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

/// What of `txn` this session sends: the groups of subscriptions whose bootstraps the
/// transaction follows, its origin only to its author (under the id the author chose).
/// `None` when nothing is left to send: no event, and not the session's own transaction.
fn for_session(
    mut txn: TxnFrame,
    seams: &HashMap<SubId, SyncId>,
    (client_id, chosen_id): (&ClientId, &ClientId),
) -> Option<TxnFrame> {
    let sync_id = txn.sync_id;
    for group in &mut txn.groups {
        group
            .subs
            .retain(|sub| seams.get(sub).is_none_or(|&w| sync_id > w));
    }
    txn.groups.retain(|group| !group.subs.is_empty());
    // An empty transaction still goes to its author, to confirm it in order.
    let authored = txn.origin.as_ref().is_some_and(|(c, _)| c == client_id);
    txn.origin = match txn.origin.take() {
        Some((_, seq)) if authored => Some((chosen_id.clone(), seq)),
        _ => None,
    };
    (!txn.groups.is_empty() || authored).then_some(txn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use crate::wire::{EncodedEvents, EventGroup, RowEvent};

    fn group(subs: &[u64]) -> EventGroup {
        let key = Value::Integer(1);
        let events = vec![(
            "t".to_string(),
            RowEvent::Insert {
                key: key.clone(),
                row: vec![key],
            },
        )];
        EventGroup {
            subs: subs.iter().map(|&s| SubId(s)).collect(),
            events: EncodedEvents::encode(&events).unwrap(),
        }
    }

    fn txn(sync_id: u64, origin: Option<&str>, groups: Vec<EventGroup>) -> TxnFrame {
        TxnFrame {
            sync_id: SyncId(sync_id),
            origin: origin.map(|c| (ClientId(c.into()), 3)),
            groups,
        }
    }

    const ME: (&str, &str) = ("server-name", "chosen");

    fn ids() -> (ClientId, ClientId) {
        (ClientId(ME.0.into()), ClientId(ME.1.into()))
    }

    #[test]
    fn a_subscription_hears_only_what_follows_its_bootstrap() {
        let seams = HashMap::from([(SubId(1), SyncId(10)), (SubId(2), SyncId(4))]);
        let (me, chosen) = ids();
        let sent = for_session(
            txn(10, None, vec![group(&[1, 2]), group(&[1])]),
            &seams,
            (&me, &chosen),
        )
        .unwrap();
        // Subscription 1's bootstrap covers sync id 10: only 2 hears of it.
        assert_eq!(sent.groups.len(), 1);
        assert_eq!(sent.groups[0].subs, vec![SubId(2)]);
        assert!(
            for_session(txn(10, None, vec![group(&[1])]), &seams, (&me, &chosen)).is_none(),
            "a transaction with nothing left for anyone is not sent"
        );
    }

    #[test]
    fn the_origin_goes_to_its_author_alone_under_the_id_it_chose() {
        let seams = HashMap::new();
        let (me, chosen) = ids();
        let mine = for_session(txn(5, Some(ME.0), vec![]), &seams, (&me, &chosen)).unwrap();
        assert_eq!(mine.origin, Some((ClientId(ME.1.into()), 3)));
        let theirs = for_session(
            txn(5, Some("someone-else"), vec![group(&[1])]),
            &seams,
            (&me, &chosen),
        )
        .unwrap();
        assert_eq!(theirs.origin, None, "nobody learns who wrote what");
        assert!(
            for_session(txn(6, Some("someone-else"), vec![]), &seams, (&me, &chosen)).is_none()
        );
    }

    #[test]
    fn filtering_keeps_the_shared_bytes() {
        let shared = group(&[1, 2]);
        let (me, chosen) = ids();
        let sent = for_session(
            txn(3, None, vec![shared.clone()]),
            &HashMap::new(),
            (&me, &chosen),
        )
        .unwrap();
        assert!(sent.groups[0].events.shares_bytes_with(&shared.events));
    }
}
