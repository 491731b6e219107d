//! Row changes: what a committed transaction did to one row ([`Change`], as the change
//! log records it) and what that means for one subscription ([`RowEvent`], with the
//! reason a row left it, [`MoveOut`]).
//!
//! Pure data with serde: depends only on [`crate::value`] and the ids, never on the
//! store, the wire or any IO.

use serde::{Deserialize, Serialize};

use super::ids::{ClientId, SyncId};
use crate::value::Value;

/// What a change did to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ChangeKind {
    /// The row did not exist before.
    Insert,
    /// The row existed before and after (its primary key unchanged).
    Update,
    /// The row does not exist after.
    Delete,
}

/// One committed row change, as recorded in the change log.
///
/// `old` is the full row before the change (absent for inserts), `new` the full row after
/// it (absent for deletes), both in the table's column order and exactly as SQLite stored
/// them (its type affinity applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The transaction that made the change.
    pub sync_id: SyncId,
    /// The table's name as the schema spells it.
    pub table: String,
    /// The primary key, as stored.
    pub key: Value,
    /// Insert, update or delete.
    pub kind: ChangeKind,
    /// The full row before the change; `None` for inserts.
    pub old: Option<Vec<Value>>,
    /// The full row after the change; `None` for deletes.
    pub new: Option<Vec<Value>>,
    /// The client transaction that wrote it; `None` for server-side writes.
    pub origin: Option<(ClientId, u64)>,
}

/// Why a row left a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MoveOut {
    /// The row was deleted.
    Deleted,
    /// The row changed and no longer matches.
    MovedOut,
    /// The caller may no longer read the row.
    Forbidden,
    /// The row still matches, but a window (`ORDER BY ... LIMIT n`) moved past it: rows
    /// that sort before it came in, or the window shrank.
    Window,
}

impl MoveOut {
    /// The snake_case name used by the command line (`"deleted"`, `"moved_out"`,
    /// `"forbidden"`, `"window"`).
    pub fn as_str(self) -> &'static str {
        match self {
            MoveOut::Deleted => "deleted",
            MoveOut::MovedOut => "moved_out",
            MoveOut::Forbidden => "forbidden",
            MoveOut::Window => "window",
        }
    }
}

/// One row event of one subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RowEvent {
    /// The row entered the subscription; `row` is projected by the subscription.
    Insert {
        /// The row's primary key.
        key: Value,
        /// The row, projected.
        row: Vec<Value>,
    },
    /// The row changed and still matches; `row` is the full new row, projected.
    Update {
        /// The row's primary key.
        key: Value,
        /// The new row, projected.
        row: Vec<Value>,
    },
    /// The row left the subscription.
    Delete {
        /// The row's primary key.
        key: Value,
        /// Why it left.
        reason: MoveOut,
    },
}

impl RowEvent {
    /// The primary key of the row the event is about.
    pub fn key(&self) -> &Value {
        match self {
            RowEvent::Insert { key, .. } | RowEvent::Update { key, .. } => key,
            RowEvent::Delete { key, .. } => key,
        }
    }
}
