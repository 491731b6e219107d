//! A session's live stream: the transactions the committer queued for it, gathered into
//! as few stream writes as a burst allows, each sent only to the subscriptions whose
//! bootstraps it follows (the seams), its origin named only to its author.
//!
//! A transaction too large for one frame is split into parts the client reassembles
//! before applying anything of it.
//!
//! Writes only to its own stream; it must not touch the store or the registry.

use super::*;
use crate::wire::{
    encode, encode_with_max, FrameError, LiveFrame, LIVE_PART_BYTES, LIVE_SPLIT_BYTES,
    MAX_TXN_PARTS,
};

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
                LiveItem::Resized {
                    sub,
                    sync_id,
                    events,
                } => Some(Live::Resized {
                    sub,
                    sync_id,
                    events,
                }),
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
                if let Err(e) = encode_live(frame, &mut buf) {
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

/// Appends one live frame to `buf`; a transaction too large for one frame
/// ([`LIVE_SPLIT_BYTES`]) goes as [`Live::Part`]s of about [`LIVE_PART_BYTES`] and a last
/// `Txn`. Fails (leaving `buf` as it was) when one event alone is too large for a frame or
/// the transaction needs more than [`MAX_TXN_PARTS`] parts.
pub(super) fn encode_live(frame: Live, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = buf.len();
    let frame = LiveFrame::V1(frame);
    let txn = match encode_with_max(&frame, LIVE_SPLIT_BYTES, buf) {
        Err(FrameError::TooLarge { .. }) => match frame {
            LiveFrame::V1(Live::Txn(txn)) => txn,
            _ => return encode(&frame, buf),
        },
        other => return other,
    };
    let LiveTxn {
        sync_id,
        origin,
        events,
    } = txn;
    let mut part = Vec::new();
    let (mut size, mut parts) = (0, 0);
    let result = (|| {
        for event in events {
            let n = postcard::to_allocvec(&event)
                .map_err(|e| FrameError::Invalid(e.to_string()))?
                .len();
            if !part.is_empty() && size + n > LIVE_PART_BYTES {
                parts += 1;
                if parts > MAX_TXN_PARTS {
                    return Err(FrameError::TooLarge {
                        len: MAX_TXN_PARTS * LIVE_PART_BYTES,
                        max: MAX_TXN_PARTS * LIVE_PART_BYTES,
                    });
                }
                let events = std::mem::take(&mut part);
                let piece = Live::Part(LiveTxn {
                    sync_id,
                    origin: None,
                    events,
                });
                encode(&LiveFrame::V1(piece), buf)?;
                size = 0;
            }
            size += n;
            part.push(event);
        }
        let last = Live::Txn(LiveTxn {
            sync_id,
            origin,
            events: part,
        });
        encode(&LiveFrame::V1(last), buf)
    })();
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SyncId;
    use crate::value::Value;
    use crate::wire::{FrameDecoder, RowEvent, SubId};

    fn txn(rows: usize, width: usize) -> Live {
        let events = (0..rows)
            .map(|i| {
                let key = Value::Integer(i as i64);
                let row = vec![key.clone(), Value::Text("x".repeat(width))];
                (SubId(1), "t".to_string(), RowEvent::Insert { key, row })
            })
            .collect();
        Live::Txn(LiveTxn {
            sync_id: SyncId(7),
            origin: None,
            events,
        })
    }

    fn decode(buf: &[u8]) -> Vec<Live> {
        let mut decoder = FrameDecoder::default();
        decoder.push(buf);
        let mut out = Vec::new();
        while let Some(LiveFrame::V1(live)) = decoder.next::<LiveFrame>().unwrap() {
            out.push(live);
        }
        out
    }

    #[test]
    fn a_small_transaction_is_one_frame() {
        let mut buf = Vec::new();
        encode_live(txn(3, 10), &mut buf).unwrap();
        assert_eq!(decode(&buf), vec![txn(3, 10)]);
    }

    #[test]
    fn a_large_transaction_goes_in_parts_that_add_up_to_it() {
        // 40 rows of 1 MiB: more than a frame may carry.
        let whole = txn(40, 1 << 20);
        let mut buf = Vec::new();
        encode_live(whole.clone(), &mut buf).unwrap();
        let frames = decode(&buf);
        assert!(frames.len() >= 10, "{} frames", frames.len());
        let mut events = Vec::new();
        let (last, parts) = frames.split_last().unwrap();
        for part in parts {
            match part {
                Live::Part(p) => {
                    assert_eq!(p.sync_id, SyncId(7));
                    events.extend(p.events.clone());
                }
                other => panic!("expected a part, got {other:?}"),
            }
        }
        let Live::Txn(t) = last else {
            panic!("the transaction ends with its Txn");
        };
        events.extend(t.events.clone());
        let Live::Txn(w) = whole else { unreachable!() };
        assert_eq!(events, w.events, "the parts in order are the transaction");
    }

    #[test]
    fn one_event_too_large_for_any_frame_is_refused_and_nothing_is_written() {
        let mut buf = vec![1, 2, 3];
        let huge = txn(1, crate::wire::MAX_FRAME_BYTES + 1);
        assert!(encode_live(huge, &mut buf).is_err());
        assert_eq!(buf, [1, 2, 3]);
    }
}
