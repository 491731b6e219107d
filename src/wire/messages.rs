//! Protocol messages: what a client and a server say to each other, as versioned enums.
//!
//! Streams of a connection:
//! - the **control** stream (bidirectional, opened by the client): `Hello` / `Welcome`,
//!   then requests (`Subscribe`, `Unsubscribe`, `Write`, `Fetch`, `Pin`, `Unpin`) and
//!   their answers;
//! - the **live** stream (unidirectional, opened by the server after `Welcome`): one
//!   [`super::TxnFrame`] per committed server transaction that touches the session
//!   (its frames are in [`super::live`]);
//! - one **bootstrap** stream per subscription (unidirectional, opened by the server):
//!   [`BootstrapFrame`]s (snapshot rows or replayed changes) ending in `End { sync_id }`,
//!   so a large snapshot never delays live traffic.
//!
//! Pure: no IO. Frames are encoded with [`super::encode`]. Depends only on the shared
//! vocabulary, [`crate::value`] and [`crate::query::Params`]; it must not depend on the
//! transport, the store, the server or the client.

use serde::{Deserialize, Serialize};

use crate::query::{Params, ShapeId};
use crate::value::Value;
use crate::vocab::{
    ClientId, Mutation, Precondition, QuotaExceeded, RowEvent, SubId, SyncId, WriteOutcome,
};

/// The protocol version this build speaks. 2: `BootstrapFrame::Begin` carries the
/// stream's columns and `access`, `Subscribe` its `resume_shape`. 3: a live transaction
/// carries its events in groups shared by subscriptions ([`super::TxnFrame`]).
pub const PROTOCOL_VERSION: u32 = 3;

/// Keys one [`ClientMessage::Fetch`] may ask for: a protocol limit, so a client splits
/// larger requests and a server refuses them.
pub const MAX_FETCH_KEYS: usize = 1000;

/// Reserved subscription id: live events of the rows a session has pinned (the batch
/// loader's key sets) arrive under it. A client may not subscribe with it.
pub const PIN_SUB: SubId = SubId::PINS;

/// Every frame a client sends, tagged with its protocol generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// Protocol version 1.
    V1(ClientMessage),
}

/// Every frame a server sends on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// Protocol version 1.
    V1(ServerMessage),
}

/// What a client says on the control stream: the handshake's `Hello`, then requests.
/// Each request is answered by a [`ServerMessage`] on the same stream; answers to
/// different requests may come in any order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClientMessage {
    /// First frame of a connection, answered by `Welcome` or `Refused`.
    Hello {
        /// The protocol version the client speaks ([`PROTOCOL_VERSION`] of its build).
        protocol: u32,
        /// The schema version the client was built for; `None` for schema-agnostic
        /// tools such as `sluice sub`.
        schema_version: Option<u64>,
        /// The client's stable identity; the server scopes it by the verified user.
        client_id: ClientId,
        /// The token the server's authenticator verifies; `None` when the client has none.
        token: Option<String>,
    },
    /// Start a subscription. With `resume_after`, the server replays the matching changes
    /// after that sync id instead of sending a snapshot (or refuses with `ResumeRefused`
    /// when its log no longer reaches back that far).
    Subscribe {
        /// The client-chosen id of the subscription in this session (never [`PIN_SUB`]).
        sub: SubId,
        /// The subscription, e.g. `SELECT * FROM issues WHERE team_id = :team`.
        sql: String,
        /// Values of the `:name` parameters in `sql`.
        params: Params,
        /// The sync id the client's copy already covers, to resume from; `None` for a
        /// fresh snapshot.
        resume_after: Option<SyncId>,
        /// With `resume_after`: the `access` of the subscription's last bootstrap stream
        /// ([`BootstrapFrame::Begin`]), the shape the client's rows were read under. A
        /// resume under another shape (the caller's claims or the rules changed since) is
        /// refused with `ResumeRefused`, so rows the caller may no longer read do not stay
        /// behind unchanged. `None` resumes unchecked: what is replayed is still checked
        /// against today's rules.
        resume_shape: Option<ShapeId>,
    },
    /// Stop a subscription; answered by `Unsubscribed` (also for an unknown id).
    Unsubscribe {
        /// The subscription to stop.
        sub: SubId,
    },
    /// One client transaction, applied at most once per `(client_id, seq)`; answered by
    /// `WriteResult` with the same `seq`.
    Write {
        /// The client's sequence number of the transaction: its idempotency key.
        seq: u64,
        /// The writes, applied in order, all or none.
        mutations: Vec<Mutation>,
        /// Checks that must hold before the writes, or the transaction is rejected.
        preconditions: Vec<Precondition>,
    },
    /// Rows by primary key (the batch loader); answered by `Fetched` (after any
    /// `FetchedPart`s) or `FetchFailed` with the same `request`.
    Fetch {
        /// A client-chosen id echoed in the answer.
        request: u64,
        /// The table, as the schema names it.
        table: String,
        /// The primary keys wanted, at most [`MAX_FETCH_KEYS`].
        keys: Vec<Value>,
    },
    /// Keep these rows live: the server adds the keys to the session's pinned key set of
    /// `table`, and changes to those rows arrive on the live stream under [`PIN_SUB`].
    /// Sent before the `Fetch` of the same keys, so no change between the two is missed.
    /// Answered by `Pinned`, or by `Error` when refused.
    Pin {
        /// The table, as the schema names it.
        table: String,
        /// The primary keys to add to the pinned set.
        keys: Vec<Value>,
    },
    /// Stop keeping these rows live; answered by `Pinned` like `Pin`.
    Unpin {
        /// The table, as the schema names it.
        table: String,
        /// The primary keys to remove from the pinned set.
        keys: Vec<Value>,
    },
    /// Grow or shrink a window subscription (`... LIMIT n`) in place, once it is ready:
    /// only the rows between the old and the new edge travel, as one `Live::Resized` on
    /// the live stream. Answered by `Resized`, or by `Error` when refused.
    Resize {
        /// The window subscription.
        sub: SubId,
        /// The new `n`, at most [`crate::query::MAX_WINDOW_LIMIT`].
        limit: u64,
    },
}

/// What a server says on the control stream: the handshake's answer, then the answers to
/// the client's requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ServerMessage {
    /// The handshake succeeded: the connection is open.
    Welcome {
        /// The protocol version the server speaks.
        protocol: u32,
        /// The server's schema version ([`crate::schema::SchemaVersion`], a hash of the
        /// normalized schema).
        schema_version: u64,
        /// The server's schema as `CREATE TABLE` text, for tools that bring none.
        schema_sql: String,
        /// The sync id of the server's last committed transaction at the handshake (in
        /// PostgreSQL mode, the WAL position its replica has applied everything up to,
        /// when that is later: its state there is the same).
        head: SyncId,
        /// The log's horizon at the handshake: a resume from before it is refused.
        horizon: SyncId,
        /// The identity of the server's database ([`crate::store::Store::server_id`]):
        /// sync ids mean something only within one database.
        server_id: String,
    },
    /// The connection is refused; the server closes it after this frame.
    Refused {
        /// Why, as a code a client can branch on.
        code: RefuseCode,
        /// Why, for a person.
        message: String,
    },
    /// The subscription compiled; its rows follow on its bootstrap stream.
    Subscribed {
        /// The subscription.
        sub: SubId,
        /// The subscription's normalized text (without the read rule the server ANDs in).
        shape: String,
        /// The projected columns its rows carry.
        columns: Vec<String>,
        /// The server's estimate of the snapshot's rows (0 when unknown or resuming).
        estimate: u64,
    },
    /// The subscription did not compile or is not allowed.
    SubscribeFailed {
        /// The subscription.
        sub: SubId,
        /// Why, for a person.
        message: String,
    },
    /// The resume cannot be served: `resume_after` is older than the log's horizon (or
    /// further back than a fresh snapshot costs), `resume_shape` is not the shape the
    /// caller may read today, or the subscription is a window (windows are not replayed:
    /// a fresh snapshot of at most [`crate::query::MAX_WINDOW_LIMIT`] rows replaces them).
    /// Subscribe again without `resume_after`.
    ResumeRefused {
        /// The subscription.
        sub: SubId,
        /// The log's current horizon.
        horizon: SyncId,
    },
    /// The subscription is stopped: no more of its events follow.
    Unsubscribed {
        /// The subscription.
        sub: SubId,
    },
    /// How a client transaction ended.
    WriteResult {
        /// The transaction's `seq`, as the client sent it.
        seq: u64,
        /// Committed at a sync id, or rejected with a code.
        outcome: WriteOutcome,
    },
    /// The answer to a fetch (its last frame).
    Fetched {
        /// The fetch's `request` id.
        request: u64,
        /// The committed state the rows were read at.
        sync_id: SyncId,
        /// The rows found that the caller may read, in key order (missing keys are
        /// absent), carrying `columns`; preceded by the rows of any `FetchedPart`s.
        rows: Vec<Vec<Value>>,
        /// The columns each row carries (the readable ones).
        columns: Vec<String>,
    },
    /// Leading part of a large fetch answer; the final `Fetched` of the same request
    /// carries the rest (answers are split to keep frames small).
    FetchedPart {
        /// The fetch's `request` id.
        request: u64,
        /// Leading rows of the answer, laid out like `Fetched`'s.
        rows: Vec<Vec<Value>>,
    },
    /// The fetch was refused (too many keys, unknown table, not allowed) or failed.
    FetchFailed {
        /// The fetch's `request` id.
        request: u64,
        /// Why, for a person.
        message: String,
    },
    /// The session's pinned key set of `table` changed; its live rows carry `columns`.
    Pinned {
        /// The table, as the schema names it.
        table: String,
        /// The columns the table's pinned rows carry on the live stream (the readable
        /// ones; empty when nothing is pinned).
        columns: Vec<String>,
        /// How many keys of `table` are now pinned.
        pinned: u64,
    },
    /// A request the server could not read or accept; the connection stays open.
    Error {
        /// Why, for a person.
        message: String,
    },
    /// The window subscription now holds `limit` rows; its `Live::Resized` is on the live
    /// stream (sent before this answer).
    Resized {
        /// The subscription.
        sub: SubId,
        /// Its new limit.
        limit: u64,
        /// Its normalized text with the new limit (without the server's read rule).
        shape: String,
    },
    /// A request refused by one of the server's quotas. Nothing of it was done; the
    /// session and the rest of its work go on.
    QuotaExceeded {
        /// The refused request.
        request: QuotaRequest,
        /// Which quota, and its value.
        exceeded: QuotaExceeded,
    },
}

/// The request a [`ServerMessage::QuotaExceeded`] answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum QuotaRequest {
    /// A `Subscribe` (the subscription is not registered; its id is free again).
    Subscribe {
        /// The subscription.
        sub: SubId,
    },
    /// A `Pin` of `table` (none of its keys were pinned). Pins are answered in the order
    /// they were sent, each by `Pinned`, `Error` or this.
    Pin {
        /// The table, as the request named it.
        table: String,
    },
}

/// Why a connection was refused at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RefuseCode {
    /// The client speaks an older protocol than the server: the client must upgrade.
    ClientTooOld,
    /// The client speaks a newer protocol than the server: the server must upgrade.
    ClientTooNew,
    /// The client was built for another schema version than the server's.
    SchemaMismatch,
    /// The authenticator rejected the token (or its absence).
    Unauthenticated,
    /// The first frame was not a readable `Hello`.
    Malformed,
    /// A quota refused the connection: the server's connections
    /// ([`crate::vocab::Quota::Connections`]) or the user's
    /// ([`crate::vocab::Quota::ConnectionsPerUser`]).
    QuotaExceeded(crate::vocab::Quota),
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
        /// The effective shape the rows are read under (the subscription ANDed with the
        /// caller's read rule, projected to the columns it may read); sent back as
        /// `resume_shape` to resume.
        access: ShapeId,
    },
    /// A snapshot row (projected).
    Row {
        /// The row's primary key.
        key: Value,
        /// The row, carrying `Begin`'s columns.
        row: Vec<Value>,
    },
    /// A replayed change (resume), in sync-id order.
    Replay {
        /// The transaction that made the change.
        sync_id: SyncId,
        /// What it means for the subscription.
        event: RowEvent,
    },
    /// Rows sent so far, for progress display; sent every [`PROGRESS_EVERY`] rows.
    Progress {
        /// `Row` and `Replay` frames sent so far on this stream.
        sent: u64,
    },
    /// The subscription is complete at `sync_id`: live changes after it follow.
    End {
        /// The sync id the snapshot (or replay) covers.
        sync_id: SyncId,
    },
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
                resume_shape: Some(ShapeId(7)),
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
