//! Identifiers: the server's clock ([`SyncId`]), a client's identity ([`ClientId`]), a
//! subscription within a session ([`SubId`]) and a server session ([`SessionId`]).
//!
//! Newtypes, so that one kind of id is never passed where another is expected. Pure: this
//! file depends on nothing else in the crate (no SQLite, no wire, no IO); the ids' SQLite
//! conversions live in the store.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The server's clock: one per committed transaction, strictly increasing.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub struct SyncId(pub u64);

impl SyncId {
    /// Before the first transaction: an empty store's head.
    pub const ZERO: SyncId = SyncId(0);

    /// The sync id after this one.
    pub fn next(self) -> SyncId {
        SyncId(self.0 + 1)
    }
}

impl fmt::Display for SyncId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A client's stable identity (chosen by the client, verified by the server's auth).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClientId(pub String);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client-chosen id for one subscription within a session (the local store numbers
/// them; the wire reserves [`SubId::PINS`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub struct SubId(pub u64);

impl SubId {
    /// Reserved: live events of the rows a session has pinned (the batch loader's key
    /// sets) arrive under it. A client may not subscribe with it.
    pub const PINS: SubId = SubId(u64::MAX);
}

impl From<u64> for SubId {
    fn from(id: u64) -> SubId {
        SubId(id)
    }
}

impl fmt::Display for SubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One connection's session on a server, numbered by the server from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
