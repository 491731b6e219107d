//! The store's vocabulary: sync ids, client ids, write transactions, their outcomes and
//! the change-log entries they produce.
//!
//! Plain data with serde; the only SQLite-specific items are the `ToSql`/`FromSql`
//! conversions of the ids, which live here so that the ids can be bound directly.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

use crate::value::Value;

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

impl ToSql for SyncId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let v = i64::try_from(self.0)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(ToSqlOutput::from(v))
    }
}

impl FromSql for SyncId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let v = i64::column_result(value)?;
        u64::try_from(v)
            .map(SyncId)
            .map_err(|_| FromSqlError::OutOfRange(v))
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

/// What a change did to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
}

impl ChangeKind {
    /// The code stored in the change log.
    pub(crate) fn code(self) -> i64 {
        match self {
            ChangeKind::Insert => 1,
            ChangeKind::Update => 2,
            ChangeKind::Delete => 3,
        }
    }

    pub(crate) fn from_code(code: i64) -> Option<ChangeKind> {
        match code {
            1 => Some(ChangeKind::Insert),
            2 => Some(ChangeKind::Update),
            3 => Some(ChangeKind::Delete),
            _ => None,
        }
    }
}

/// One committed row change, as recorded in the change log.
///
/// `old` is the full row before the change (absent for inserts), `new` the full row after
/// it (absent for deletes), both in the table's column order and exactly as SQLite stored
/// them (its type affinity applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub sync_id: SyncId,
    /// The table's name as the schema spells it.
    pub table: String,
    /// The primary key, as stored.
    pub key: Value,
    pub kind: ChangeKind,
    pub old: Option<Vec<Value>>,
    pub new: Option<Vec<Value>>,
    /// The client transaction that wrote it; `None` for server-side writes.
    pub origin: Option<(ClientId, u64)>,
}

/// One write inside a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Mutation {
    /// A new row. Must include the primary key; columns left out get their DEFAULT.
    Insert {
        table: String,
        values: Vec<(String, Value)>,
    },
    /// A partial update of the row with this primary key. The key itself cannot change.
    Update {
        table: String,
        key: Value,
        set: Vec<(String, Value)>,
    },
    /// Deletes the row with this primary key.
    Delete { table: String, key: Value },
}

impl Mutation {
    pub fn table(&self) -> &str {
        match self {
            Mutation::Insert { table, .. }
            | Mutation::Update { table, .. }
            | Mutation::Delete { table, .. } => table,
        }
    }
}

/// A check made before a transaction's mutations: the row's `column` must currently equal
/// `expected` (compared the way SQLite compares with the column's affinity; NULL equals
/// NULL). A missing row fails the check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Precondition {
    pub table: String,
    pub key: Value,
    pub column: String,
    pub expected: Value,
}

/// A transaction to apply atomically: all of its mutations, or none.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WriteTxn {
    /// `(client, seq)` of the client transaction, used for idempotency; `None` for
    /// server-side writes (never deduplicated).
    pub origin: Option<(ClientId, u64)>,
    pub mutations: Vec<Mutation>,
    pub preconditions: Vec<Precondition>,
}

/// Why a transaction was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RejectCode {
    /// Unknown table or column, missing primary key, or a value of the wrong type.
    Schema,
    /// An update or delete named a row that does not exist.
    NotFound,
    /// An insert named a primary key that already exists.
    AlreadyExists,
    /// A NOT NULL, UNIQUE, CHECK or other SQLite constraint failed.
    Constraint,
    /// A precondition did not hold.
    PreconditionFailed,
    /// The caller may not write this (decided above the store).
    Forbidden,
    /// The transaction is malformed (duplicate column, primary key update, ...).
    Invalid,
}

impl RejectCode {
    /// The snake_case name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::Schema => "schema",
            RejectCode::NotFound => "not_found",
            RejectCode::AlreadyExists => "already_exists",
            RejectCode::Constraint => "constraint",
            RejectCode::PreconditionFailed => "precondition_failed",
            RejectCode::Forbidden => "forbidden",
            RejectCode::Invalid => "invalid",
        }
    }

    /// The inverse of [`RejectCode::as_str`].
    pub fn parse(name: &str) -> Option<RejectCode> {
        [
            RejectCode::Schema,
            RejectCode::NotFound,
            RejectCode::AlreadyExists,
            RejectCode::Constraint,
            RejectCode::PreconditionFailed,
            RejectCode::Forbidden,
            RejectCode::Invalid,
        ]
        .into_iter()
        .find(|c| c.as_str() == name)
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TxnOutcome {
    /// Committed at `sync_id`. `changes` are the change-log entries it wrote; for a replayed
    /// (already applied) client transaction they are empty, the sync id is the original.
    Committed {
        sync_id: SyncId,
        changes: Vec<Change>,
    },
    /// Nothing was written. A replay returns the original rejection.
    Rejected { code: RejectCode, message: String },
}

impl TxnOutcome {
    /// The sync id if committed.
    pub fn sync_id(&self) -> Option<SyncId> {
        match self {
            TxnOutcome::Committed { sync_id, .. } => Some(*sync_id),
            TxnOutcome::Rejected { .. } => None,
        }
    }
}

/// How a [`crate::store::Store::read_log`] call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogRead {
    /// Every change after the requested id up to and including `head` was delivered.
    Complete { head: SyncId },
    /// The callback stopped the read; `last` is the sync id of the last change delivered
    /// (that transaction's later changes, if any, were not).
    Stopped { last: SyncId },
    /// Changes right after the requested id were compacted away; the log starts after
    /// `horizon`. The reader must re-bootstrap.
    Compacted { horizon: SyncId },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_codes_round_trip_through_names() {
        for code in [
            RejectCode::Schema,
            RejectCode::NotFound,
            RejectCode::AlreadyExists,
            RejectCode::Constraint,
            RejectCode::PreconditionFailed,
            RejectCode::Forbidden,
            RejectCode::Invalid,
        ] {
            assert_eq!(RejectCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(
            RejectCode::PreconditionFailed.as_str(),
            "precondition_failed"
        );
        assert_eq!(RejectCode::parse("nope"), None);
    }

    #[test]
    fn change_kinds_round_trip_through_codes() {
        for kind in [ChangeKind::Insert, ChangeKind::Update, ChangeKind::Delete] {
            assert_eq!(ChangeKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(ChangeKind::from_code(0), None);
    }
}
