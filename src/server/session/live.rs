//! Live frames of one session's stream: a transaction too large for one frame is split
//! into parts the client reassembles before applying anything of it.

use crate::wire::{
    encode, encode_with_max, FrameError, Live, LiveFrame, LiveTxn, LIVE_PART_BYTES,
    LIVE_SPLIT_BYTES, MAX_TXN_PARTS,
};

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
