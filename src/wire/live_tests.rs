use super::*;
use crate::value::Value;
use crate::wire::{FrameDecoder, MoveOut};

fn events(rows: usize, width: usize) -> Vec<(String, RowEvent)> {
    (0..rows)
        .map(|i| {
            let key = Value::Integer(i as i64);
            let row = vec![key.clone(), Value::Text("x".repeat(width))];
            ("t".to_string(), RowEvent::Insert { key, row })
        })
        .collect()
}

fn group(subs: &[u64], events: &[(String, RowEvent)]) -> EventGroup {
    EventGroup {
        subs: subs.iter().map(|&s| SubId(s)).collect(),
        events: EncodedEvents::encode(events).unwrap(),
    }
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

/// Feeds decoded frames to an assembler until the transaction is whole.
fn assemble(frames: Vec<Live>) -> Result<LiveTxn, FrameError> {
    let mut assembler = TxnAssembler::default();
    for frame in frames {
        match frame {
            Live::Part(part) => assembler.part(part)?,
            Live::Txn(txn) => return assembler.finish(txn),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    panic!("no Txn frame");
}

#[test]
fn a_group_expands_to_every_subscription_it_names_in_change_order() {
    let first = events(2, 3);
    let deleted = vec![(
        "u".to_string(),
        RowEvent::Delete {
            key: Value::Text("k".into()),
            reason: MoveOut::Forbidden,
        },
    )];
    let txn = TxnFrame {
        sync_id: SyncId(9),
        origin: Some((ClientId("me".into()), 4)),
        groups: vec![group(&[1, 5], &first), group(&[2], &deleted)],
    };
    let mut buf = Vec::new();
    encode_txn(txn, &mut buf).unwrap();
    let frames = decode(&buf);
    assert_eq!(frames.len(), 1, "a small transaction is one frame");
    let whole = assemble(frames).unwrap();
    assert_eq!(whole.sync_id, SyncId(9));
    assert_eq!(whole.origin, Some((ClientId("me".into()), 4)));
    let expected: Vec<(SubId, String, RowEvent)> = [1, 5]
        .iter()
        .flat_map(|&s| {
            first
                .iter()
                .map(move |(t, e)| (SubId(s), t.clone(), e.clone()))
        })
        .chain(
            deleted
                .iter()
                .map(|(t, e)| (SubId(2), t.clone(), e.clone())),
        )
        .collect();
    assert_eq!(whole.events, expected);
}

#[test]
fn a_transaction_without_groups_still_arrives_to_confirm_its_author() {
    let txn = TxnFrame {
        sync_id: SyncId(3),
        origin: Some((ClientId("me".into()), 1)),
        groups: Vec::new(),
    };
    let mut buf = Vec::new();
    encode_txn(txn, &mut buf).unwrap();
    let whole = assemble(decode(&buf)).unwrap();
    assert!(whole.events.is_empty());
    assert_eq!(whole.origin, Some((ClientId("me".into()), 1)));
}

#[test]
fn clones_of_encoded_events_share_their_bytes() {
    let one = EncodedEvents::encode(&events(3, 5)).unwrap();
    let again = EncodedEvents::encode(&events(3, 5)).unwrap();
    assert!(one.shares_bytes_with(&one.clone()));
    assert_eq!(one, again);
    assert!(
        !one.shares_bytes_with(&again),
        "equal bytes elsewhere are not shared"
    );
    assert_eq!(one.decode().unwrap(), events(3, 5));
}

#[test]
fn a_large_transaction_goes_in_parts_that_add_up_to_it() {
    // 40 rows of 1 MiB: more than a frame may carry.
    let rows = events(40, 1 << 20);
    let chunks = EncodedEvents::encode_chunks(&rows).unwrap();
    assert!(chunks.len() >= 10, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.len() <= LIVE_PART_BYTES));
    let groups = chunks
        .into_iter()
        .map(|events| EventGroup {
            subs: vec![SubId(7)],
            events,
        })
        .collect();
    let txn = TxnFrame {
        sync_id: SyncId(7),
        origin: Some((ClientId("me".into()), 2)),
        groups,
    };
    let mut buf = Vec::new();
    encode_txn(txn, &mut buf).unwrap();
    let frames = decode(&buf);
    assert!(frames.len() >= 10, "{} frames", frames.len());
    let (last, parts) = frames.split_last().unwrap();
    for part in parts {
        let Live::Part(p) = part else {
            panic!("expected a part, got {part:?}");
        };
        assert_eq!(p.sync_id, SyncId(7));
        assert_eq!(p.origin, None, "only the last frame names the author");
    }
    assert!(matches!(last, Live::Txn(t) if t.origin.is_some()));
    let whole = assemble(frames).unwrap();
    let expected: Vec<_> = rows.into_iter().map(|(t, e)| (SubId(7), t, e)).collect();
    assert_eq!(
        whole.events, expected,
        "the parts in order are the transaction"
    );
}

#[test]
fn one_event_too_large_for_any_frame_is_refused() {
    let huge = events(1, MAX_FRAME_BYTES + 1);
    assert!(matches!(
        EncodedEvents::encode_chunks(&huge),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn an_unsendable_transaction_leaves_the_buffer_as_it_was() {
    // More groups than MAX_TXN_PARTS parts can hold: each fills a part.
    let one = EncodedEvents::encode(&events(1, LIVE_PART_BYTES - 64)).unwrap();
    let groups = (0..=MAX_TXN_PARTS + 1)
        .map(|_| EventGroup {
            subs: vec![SubId(1)],
            events: one.clone(),
        })
        .collect();
    let mut buf = vec![1, 2, 3];
    let txn = TxnFrame {
        sync_id: SyncId(1),
        origin: None,
        groups,
    };
    assert!(encode_txn(txn, &mut buf).is_err());
    assert_eq!(buf, [1, 2, 3]);
}

#[test]
fn the_assembler_refuses_parts_of_another_transaction() {
    let part = |s| TxnFrame {
        sync_id: SyncId(s),
        origin: None,
        groups: vec![group(&[1], &events(1, 1))],
    };
    let mut assembler = TxnAssembler::default();
    assembler.part(part(4)).unwrap();
    assert!(assembler.part(part(5)).is_err());
    let mut assembler = TxnAssembler::default();
    assembler.part(part(4)).unwrap();
    assert!(assembler.finish(part(5)).is_err());
}

#[test]
fn the_assembler_refuses_more_parts_than_the_protocol_allows() {
    let mut assembler = TxnAssembler::default();
    for _ in 0..MAX_TXN_PARTS {
        assembler
            .part(TxnFrame {
                sync_id: SyncId(2),
                origin: None,
                groups: Vec::new(),
            })
            .unwrap();
    }
    let one_more = TxnFrame {
        sync_id: SyncId(2),
        origin: None,
        groups: Vec::new(),
    };
    assert!(matches!(
        assembler.part(one_more),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn a_group_that_would_expand_past_the_bound_is_refused_before_decoding() {
    // 1 MiB of events for 1,025 subscriptions: past 1 GiB expanded.
    let big = EncodedEvents::encode(&events(1, 1 << 20)).unwrap();
    let txn = TxnFrame {
        sync_id: SyncId(1),
        origin: None,
        groups: vec![EventGroup {
            subs: (0..1025).map(SubId).collect(),
            events: big,
        }],
    };
    let mut buf = Vec::new();
    encode_txn(txn, &mut buf).unwrap();
    let result = assemble(decode(&buf));
    assert!(
        matches!(result, Err(FrameError::TooLarge { max, .. }) if max == MAX_EXPANDED_TXN_BYTES),
        "{result:?}"
    );
}

#[test]
fn corrupt_group_bytes_are_an_error_not_a_panic() {
    let txn = TxnFrame {
        sync_id: SyncId(1),
        origin: None,
        groups: vec![EventGroup {
            subs: vec![SubId(1)],
            events: EncodedEvents(Bytes::from_static(&[0xff, 0xff, 0xff, 0x01, 0x07])),
        }],
    };
    assert!(matches!(
        TxnAssembler::default().finish(txn),
        Err(FrameError::Invalid(_))
    ));
}

#[test]
fn a_one_subscription_group_decodes_as_the_list_would() {
    let list = events(4, 3);
    let encoded = EncodedEvents::encode(&list).unwrap();
    let mut out = vec![(SubId(0), "before".to_string(), list[0].1.clone())];
    encoded.decode_into(SubId(7), &mut out).unwrap();
    let expected: Vec<_> = list.into_iter().map(|(t, e)| (SubId(7), t, e)).collect();
    assert_eq!(
        out[1..],
        expected[..],
        "appended, in order, under the subscription"
    );
    // A length the bytes cannot back is an error, not a huge reservation.
    let lying = EncodedEvents(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]));
    assert!(lying.decode_into(SubId(1), &mut Vec::new()).is_err());
}
