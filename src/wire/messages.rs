//! Protocol messages: what a client and a server say to each other, as versioned enums.
//!
//! Streams of a connection:
//! - the **control** stream (bidirectional, opened by the client): `Hello` / `Welcome`,
//!   then requests (`Subscribe`, `Unsubscribe`, `Write`, `Fetch`, `Pin`, `Unpin`) and
//!   their answers;
//! - the **live** stream (unidirectional, opened by the server after `Welcome`): one
//!   [`LiveTxn`] per committed server transaction that touches the session;
//! - one **bootstrap** stream per subscription (unidirectional, opened by the server):
//!   [`BootstrapFrame`]s (snapshot rows or replayed changes) ending in `End { sync_id }`,
//!   so a large snapshot never delays live traffic.
//!
//! Pure: no IO. Frames are encoded with [`super::encode`].

use serde::{Deserialize, Serialize};

use crate::query::Params;
use crate::value::Value;
use crate::vocab::{ClientId, Mutation, Precondition, RowEvent, SubId, SyncId, WriteOutcome};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Keys one [`ClientMessage::Fetch`] may ask for: a protocol limit, so a client splits
/// larger requests and a server refuses them.
pub const MAX_FETCH_KEYS: usize = 1000;

/// Reserved subscription id: live events of the rows a session has pinned (the batch
/// loader's key sets) arrive under it. A client may not subscribe with it.
pub const PIN_SUB: SubId = SubId::PINS;

/// Every frame a client sends, tagged with its protocol generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientFrame {
    V1(ClientMessage),
}

/// Every frame a server sends on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerFrame {
    V1(ServerMessage),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClientMessage {
    /// First frame of a connection.
    Hello {
        protocol: u32,
        /// The schema version the client was built for; `None` for schema-agnostic
        /// tools such as `sluice sub`.
        schema_version: Option<u64>,
        client_id: ClientId,
        token: Option<String>,
    },
    /// Start a subscription. With `resume_after`, the server replays the matching changes
    /// after that sync id instead of sending a snapshot (or refuses with `ResumeRefused`
    /// when its log no longer reaches back that far).
    Subscribe {
        sub: SubId,
        sql: String,
        params: Params,
        resume_after: Option<SyncId>,
    },
    Unsubscribe {
        sub: SubId,
    },
    /// One client transaction, applied at most once per `(client_id, seq)`.
    Write {
        seq: u64,
        mutations: Vec<Mutation>,
        preconditions: Vec<Precondition>,
    },
    /// Rows by primary key (the batch loader).
    Fetch {
        request: u64,
        table: String,
        keys: Vec<Value>,
    },
    /// Keep these rows live: the server adds the keys to the session's pinned key set of
    /// `table`, and changes to those rows arrive on the live stream under [`PIN_SUB`].
    /// Sent before the `Fetch` of the same keys, so no change between the two is missed.
    Pin {
        table: String,
        keys: Vec<Value>,
    },
    /// Stop keeping these rows live.
    Unpin {
        table: String,
        keys: Vec<Value>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ServerMessage {
    Welcome {
        protocol: u32,
        schema_version: u64,
        /// The server's schema as `CREATE TABLE` text, for tools that bring none.
        schema_sql: String,
        head: SyncId,
        horizon: SyncId,
    },
    /// The connection is refused; the server closes it after this frame.
    Refused {
        code: RefuseCode,
        message: String,
    },
    /// The subscription compiled; its rows follow on its bootstrap stream.
    Subscribed {
        sub: SubId,
        shape: String,
        columns: Vec<String>,
        estimate: u64,
    },
    /// The subscription did not compile or is not allowed.
    SubscribeFailed {
        sub: SubId,
        message: String,
    },
    /// `resume_after` is older than the log's horizon: subscribe again without it.
    ResumeRefused {
        sub: SubId,
        horizon: SyncId,
    },
    Unsubscribed {
        sub: SubId,
    },
    WriteResult {
        seq: u64,
        outcome: WriteOutcome,
    },
    Fetched {
        request: u64,
        sync_id: SyncId,
        rows: Vec<Vec<Value>>,
        columns: Vec<String>,
    },
    /// Leading part of a large fetch answer; the final `Fetched` of the same request
    /// carries the rest (answers are split to keep frames small).
    FetchedPart {
        request: u64,
        rows: Vec<Vec<Value>>,
    },
    FetchFailed {
        request: u64,
        message: String,
    },
    /// The session's pinned key set of `table` changed; its live rows carry `columns`.
    Pinned {
        table: String,
        columns: Vec<String>,
        pinned: u64,
    },
    /// A request the server could not read or accept; the connection stays open.
    Error {
        message: String,
    },
}

/// Why a connection was refused at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RefuseCode {
    ClientTooOld,
    ClientTooNew,
    SchemaMismatch,
    Unauthenticated,
    Malformed,
}

/// Everything one committed server transaction means for one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveTxn {
    pub sync_id: SyncId,
    /// The client transaction that produced it, so its author can confirm it.
    pub origin: Option<(ClientId, u64)>,
    pub events: Vec<(SubId, String, RowEvent)>,
}

/// What the live stream carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Live {
    /// A committed transaction's events for this session (possibly none, when it only
    /// confirms the session's own transaction to its author).
    Txn(LiveTxn),
    /// Everything up to `sync_id` that concerns this session is now ahead of this point in
    /// the live stream, and subscription `sub`'s bootstrap covers exactly `sync_id`: its
    /// staged rows can join the local view here (invariant 10).
    Joined { sub: SubId, sync_id: SyncId },
}

/// Frames of the live stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LiveFrame {
    V1(Live),
}

/// Frames of a subscription's bootstrap stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BootstrapFrame {
    /// First frame: which subscription this stream serves, and what its rows carry.
    /// A stream is self-describing: its rows are never read against columns learned
    /// elsewhere (the control stream's `Subscribed` may arrive after them).
    Begin {
        /// The subscription this stream serves.
        sub: SubId,
        /// The subscription's table.
        table: String,
        /// The projected columns, in the order every `Row` and `Replay` row carries them.
        columns: Vec<String>,
        /// The server's estimate of the rows to come (0 when unknown or resuming).
        estimate: u64,
    },
    /// A snapshot row (projected).
    Row { key: Value, row: Vec<Value> },
    /// A replayed change (resume), in sync-id order.
    Replay { sync_id: SyncId, event: RowEvent },
    /// Rows sent so far, for progress display; sent every [`PROGRESS_EVERY`] rows.
    Progress { sent: u64 },
    /// The subscription is complete at `sync_id`: live changes after it follow.
    End { sync_id: SyncId },
}

/// How often a bootstrap stream reports progress, in rows.
pub const PROGRESS_EVERY: u64 = 1000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode, FrameDecoder, MAX_FRAME_BYTES};

    #[test]
    fn messages_round_trip_through_the_codec() {
        let frames = vec![
            ClientFrame::V1(ClientMessage::Hello {
                protocol: PROTOCOL_VERSION,
                schema_version: Some(7),
                client_id: ClientId("c1".into()),
                token: None,
            }),
            ClientFrame::V1(ClientMessage::Subscribe {
                sub: SubId(3),
                sql: "SELECT * FROM t".into(),
                params: Params::new().value("team", Value::Text("T1".into())),
                resume_after: Some(SyncId(9)),
            }),
        ];
        let mut bytes = Vec::new();
        for f in &frames {
            encode(f, &mut bytes).unwrap();
        }
        let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
        decoder.push(&bytes);
        for f in &frames {
            assert_eq!(decoder.next::<ClientFrame>().unwrap().as_ref(), Some(f));
        }
        assert_eq!(decoder.next::<ClientFrame>().unwrap(), None);
    }
}
