//! The live stream's frames.
//!
//! A committed transaction reaches a session as one [`TxnFrame`]: its events in groups,
//! one group per shape that the transaction touched (or per window shape, or the session's
//! pinned rows). A group names the session's subscriptions it is for and carries its events
//! already encoded ([`EncodedEvents`]): the server encodes a shape's events once per
//! transaction and every session subscribed to that shape sends the same bytes, under its
//! own subscription ids. The client expands the groups back into one [`LiveTxn`] with an
//! event per subscription, so nothing above the connection sees the grouping.
//!
//! A transaction too large for one frame goes as [`Live::Part`]s and a last [`Live::Txn`]
//! ([`encode_txn`]); [`TxnAssembler`] puts them back together within [`MAX_TXN_PARTS`]
//! and [`MAX_EXPANDED_TXN_BYTES`].
//!
//! Pure: no IO. Depends on the codec and the shared vocabulary only.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::codec::{encode, encode_with_max, FrameError, LENGTH_PREFIX_BYTES, MAX_FRAME_BYTES};
use crate::vocab::{ClientId, RowEvent, SubId, SyncId};

/// Payload bytes the server puts in one [`Live::Part`] (the last part, the `Txn`, may
/// hold less), and the most event bytes one [`EncodedEvents`] holds unless a single event
/// is larger. A transaction whose frame would pass [`LIVE_SPLIT_BYTES`] is split.
pub const LIVE_PART_BYTES: usize = 4 * 1024 * 1024;

/// A live transaction frame larger than this is sent as [`Live::Part`]s.
pub const LIVE_SPLIT_BYTES: usize = 8 * 1024 * 1024;

/// Parts one transaction may have: with [`LIVE_PART_BYTES`], 1 GiB. A client holds a
/// transaction's parts until its `Txn`; a stream that sends more is refused.
pub const MAX_TXN_PARTS: usize = 256;

/// The most a transaction may weigh once its groups are expanded (encoded event bytes
/// times the subscriptions each group is for): what [`MAX_TXN_PARTS`] parts could carry
/// one event per subscription. A stream whose transaction expands past it is refused.
pub const MAX_EXPANDED_TXN_BYTES: usize = MAX_TXN_PARTS * LIVE_PART_BYTES;

/// Everything one committed server transaction means for one session, expanded: an event
/// per subscription it concerns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveTxn {
    /// The transaction's sync id; transactions arrive in increasing order.
    pub sync_id: SyncId,
    /// The client transaction that produced it, so its author can confirm it.
    pub origin: Option<(ClientId, u64)>,
    /// `(subscription, table, event)` per affected row of each of the session's
    /// subscriptions (and [`super::PIN_SUB`] for pinned rows); in change order for each
    /// subscription.
    pub events: Vec<(SubId, String, RowEvent)>,
}

/// A list of `(table, event)` encoded once (postcard, as a `Vec<(String, RowEvent)>`) and
/// shared by reference: cloning it copies no event.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedEvents(Bytes);

impl EncodedEvents {
    /// Encodes `events` as one list.
    pub fn encode(events: &[(String, RowEvent)]) -> Result<EncodedEvents, FrameError> {
        postcard::to_allocvec(events)
            .map(|bytes| EncodedEvents(Bytes::from(bytes)))
            .map_err(|e| FrameError::Invalid(e.to_string()))
    }

    /// Encodes `events` as lists of at most [`LIVE_PART_BYTES`] each (a single larger event
    /// is a list of its own), in order. Fails when one event alone is too large for any
    /// frame.
    pub fn encode_chunks(events: &[(String, RowEvent)]) -> Result<Vec<EncodedEvents>, FrameError> {
        let whole = EncodedEvents::encode(events)?;
        if whole.len() <= LIVE_PART_BYTES {
            return Ok(vec![whole]);
        }
        let mut chunks = Vec::new();
        let (mut start, mut size) = (0, 0);
        for (i, event) in events.iter().enumerate() {
            let n = postcard::experimental::serialized_size(event)
                .map_err(|e| FrameError::Invalid(e.to_string()))?;
            // Room for the frame's own fields and the list's length.
            if n > MAX_FRAME_BYTES - 1024 {
                return Err(FrameError::TooLarge {
                    len: n,
                    max: MAX_FRAME_BYTES - 1024,
                });
            }
            if i > start && size + n > LIVE_PART_BYTES {
                chunks.push(EncodedEvents::encode(&events[start..i])?);
                (start, size) = (i, 0);
            }
            size += n;
        }
        chunks.push(EncodedEvents::encode(&events[start..])?);
        Ok(chunks)
    }

    /// The events back.
    pub fn decode(&self) -> Result<Vec<(String, RowEvent)>, FrameError> {
        postcard::from_bytes(&self.0).map_err(|e| FrameError::Invalid(e.to_string()))
    }

    /// Encoded bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no encoded bytes (never true of an encoded list).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `self` and `other` are the same bytes in memory (not merely equal ones).
    pub fn shares_bytes_with(&self, other: &EncodedEvents) -> bool {
        self.0.as_ptr() == other.0.as_ptr() && self.0.len() == other.0.len()
    }
}

impl fmt::Debug for EncodedEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncodedEvents({} bytes)", self.0.len())
    }
}

impl Serialize for EncodedEvents {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for EncodedEvents {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EncodedEvents;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("encoded events")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<EncodedEvents, E> {
                Ok(EncodedEvents(Bytes::copy_from_slice(v)))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<EncodedEvents, E> {
                Ok(EncodedEvents(Bytes::from(v)))
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

/// Events of one shape (a window shape, or a session's pinned rows) for some of a
/// session's subscriptions: every subscription in `subs` gets every event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventGroup {
    /// The session's subscriptions the events are for.
    pub subs: Vec<SubId>,
    /// The events, in change order.
    pub events: EncodedEvents,
}

/// A committed transaction for one session, as the live stream carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxnFrame {
    /// The transaction's sync id; transactions arrive in increasing order.
    pub sync_id: SyncId,
    /// The client transaction that produced it, named only to its author.
    pub origin: Option<(ClientId, u64)>,
    /// The transaction's events for this session, a group per shape.
    pub groups: Vec<EventGroup>,
}

/// What the live stream carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Live {
    /// A committed transaction's events for this session (possibly none, when it only
    /// confirms the session's own transaction to its author).
    Txn(TxnFrame),
    /// Everything up to `sync_id` that concerns this session is now ahead of this point in
    /// the live stream, and subscription `sub`'s bootstrap covers exactly `sync_id`: its
    /// staged rows can join the local view here (invariant 10).
    Joined {
        /// The subscription whose bootstrap ended.
        sub: SubId,
        /// The sync id its bootstrap covers (its `End`).
        sync_id: SyncId,
    },
    /// The first groups of a transaction too large for one frame (`origin` unset): more
    /// `Part`s may follow, then the `Txn` with the same sync id and the last groups. A
    /// client applies the whole transaction at its `Txn`, never a part alone. At most
    /// [`MAX_TXN_PARTS`] parts precede a `Txn`.
    Part(TxnFrame),
    /// Window subscription `sub` was resized at `sync_id` (a state the client has already
    /// received every transaction of): the rows between the old and the new edge, as
    /// inserts (it grew) or deletes with reason `window` (it shrank). Live transactions
    /// after it carry the resized window's events.
    Resized {
        /// The subscription.
        sub: SubId,
        /// The state the delta was read at.
        sync_id: SyncId,
        /// `(table, event)` per row that moved in or out.
        events: Vec<(String, RowEvent)>,
    },
}

/// Frames of the live stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LiveFrame {
    /// Protocol version 1.
    V1(Live),
}

/// Appends `txn` to `buf` as one [`Live::Txn`] frame, or, past [`LIVE_SPLIT_BYTES`], as
/// [`Live::Part`]s of about [`LIVE_PART_BYTES`] and a last `Txn` carrying the origin.
/// Fails (leaving `buf` as it was) when a group is too large for a frame or the
/// transaction needs more than [`MAX_TXN_PARTS`] parts.
pub fn encode_txn(txn: TxnFrame, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = buf.len();
    let frame = LiveFrame::V1(Live::Txn(txn));
    let txn = match encode_with_max(&frame, LIVE_SPLIT_BYTES, buf) {
        Err(FrameError::TooLarge { .. }) => match frame {
            LiveFrame::V1(Live::Txn(txn)) => txn,
            _ => unreachable!("the frame is a Txn"),
        },
        other => return other,
    };
    let TxnFrame {
        sync_id,
        origin,
        groups,
    } = txn;
    let part = |groups| {
        LiveFrame::V1(Live::Part(TxnFrame {
            sync_id,
            origin: None,
            groups,
        }))
    };
    let result = (|| {
        let (mut current, mut size, mut parts) = (Vec::new(), 0, 0);
        for group in groups {
            let n = group.events.len() + group.subs.len() * 5 + LENGTH_PREFIX_BYTES;
            if !current.is_empty() && size + n > LIVE_PART_BYTES {
                parts += 1;
                if parts > MAX_TXN_PARTS {
                    return Err(FrameError::TooLarge {
                        len: MAX_TXN_PARTS * LIVE_PART_BYTES,
                        max: MAX_TXN_PARTS * LIVE_PART_BYTES,
                    });
                }
                encode(&part(std::mem::take(&mut current)), buf)?;
                size = 0;
            }
            size += n;
            current.push(group);
        }
        let last = Live::Txn(TxnFrame {
            sync_id,
            origin,
            groups: current,
        });
        encode(&LiveFrame::V1(last), buf)
    })();
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// Puts a transaction back together from its frames and expands its groups into one event
/// per subscription, refusing a stream that passes [`MAX_TXN_PARTS`] or
/// [`MAX_EXPANDED_TXN_BYTES`].
#[derive(Debug, Default)]
pub struct TxnAssembler {
    /// The transaction whose parts are arriving: its sync id, the parts so far, and its
    /// expanded weight so far.
    pending: Option<(SyncId, Vec<EventGroup>, usize, usize)>,
}

impl TxnAssembler {
    /// Takes one [`Live::Part`].
    pub fn part(&mut self, part: TxnFrame) -> Result<(), FrameError> {
        let (sync_id, groups, count, weight) = self
            .pending
            .get_or_insert_with(|| (part.sync_id, Vec::new(), 0, 0));
        *count += 1;
        if *sync_id != part.sync_id {
            return Err(FrameError::Invalid(format!(
                "a part of transaction {} inside transaction {}",
                part.sync_id.0, sync_id.0
            )));
        }
        if *count > MAX_TXN_PARTS {
            return Err(FrameError::TooLarge {
                len: *count,
                max: MAX_TXN_PARTS,
            });
        }
        *weight = add_weight(*weight, &part.groups)?;
        groups.extend(part.groups);
        Ok(())
    }

    /// Takes the [`Live::Txn`] that ends a transaction (with or without parts before it)
    /// and returns the whole transaction, expanded.
    pub fn finish(&mut self, txn: TxnFrame) -> Result<LiveTxn, FrameError> {
        let TxnFrame {
            sync_id,
            origin,
            groups: last,
        } = txn;
        let groups = match self.pending.take() {
            Some((pending, mut groups, _, weight)) => {
                if pending != sync_id {
                    return Err(FrameError::Invalid(format!(
                        "the parts of transaction {} end with transaction {}",
                        pending.0, sync_id.0
                    )));
                }
                add_weight(weight, &last)?;
                groups.extend(last);
                groups
            }
            None => {
                add_weight(0, &last)?;
                last
            }
        };
        let mut events = Vec::new();
        for group in groups {
            match group.subs.as_slice() {
                [] => {}
                // The usual case: decoded straight into the transaction's events.
                &[sub] => group.events.decode_into(sub, &mut events)?,
                [others @ .., last] => {
                    let decoded = group.events.decode()?;
                    for &sub in others {
                        events.extend(decoded.iter().map(|(t, e)| (sub, t.clone(), e.clone())));
                    }
                    events.extend(decoded.into_iter().map(|(t, e)| (*last, t, e)));
                }
            }
        }
        Ok(LiveTxn {
            sync_id,
            origin,
            events,
        })
    }
}

/// Decodes an [`EncodedEvents`] list straight into a transaction's events, each under
/// `sub`.
struct DecodeInto<'a> {
    sub: SubId,
    out: &'a mut Vec<(SubId, String, RowEvent)>,
}

impl<'de> serde::de::DeserializeSeed<'de> for DecodeInto<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DecodeInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of events")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // The length is the sender's word: room for at most what a frame could hold.
        let room = MAX_FRAME_BYTES / std::mem::size_of::<(SubId, String, RowEvent)>();
        self.out.reserve(seq.size_hint().unwrap_or(0).min(room));
        while let Some((table, event)) = seq.next_element::<(String, RowEvent)>()? {
            self.out.push((self.sub, table, event));
        }
        Ok(())
    }
}

impl EncodedEvents {
    /// Appends the events to `out` under `sub`, as [`EncodedEvents::decode`] would read
    /// them (on error, `out` may hold some of them).
    fn decode_into(
        &self,
        sub: SubId,
        out: &mut Vec<(SubId, String, RowEvent)>,
    ) -> Result<(), FrameError> {
        use serde::de::DeserializeSeed;
        let mut deserializer = postcard::Deserializer::from_bytes(&self.0);
        DecodeInto { sub, out }
            .deserialize(&mut deserializer)
            .map_err(|e| FrameError::Invalid(e.to_string()))
    }
}

/// `weight` plus what `groups` weigh expanded, within [`MAX_EXPANDED_TXN_BYTES`].
fn add_weight(weight: usize, groups: &[EventGroup]) -> Result<usize, FrameError> {
    let total = groups.iter().fold(weight, |total, group| {
        total.saturating_add(group.events.len().saturating_mul(group.subs.len()))
    });
    if total > MAX_EXPANDED_TXN_BYTES {
        return Err(FrameError::TooLarge {
            len: total,
            max: MAX_EXPANDED_TXN_BYTES,
        });
    }
    Ok(total)
}

#[cfg(test)]
#[path = "live_tests.rs"]
mod tests;
