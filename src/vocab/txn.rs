//! Client and server transactions: the mutations they make, the preconditions they
//! carry, and how they end (committed at a sync id, or rejected with a code).
//!
//! Pure data with serde: the store applies them, the wire carries them, the client queues
//! them in its outbox. Depends only on [`crate::value`] and the rest of the vocabulary,
//! never on the store, the wire or any IO.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::change::Change;
use super::ids::{ClientId, SyncId};
use crate::value::Value;

/// One write inside a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Mutation {
    /// A new row. Must include the primary key; columns left out get their DEFAULT.
    Insert {
        /// The table, as the schema names it (case-insensitive).
        table: String,
        /// Column values by column name.
        values: Vec<(String, Value)>,
    },
    /// A partial update of the row with this primary key. The key itself cannot change.
    Update {
        /// The table, as the schema names it (case-insensitive).
        table: String,
        /// The primary key of the row to update.
        key: Value,
        /// The columns to set, by name.
        set: Vec<(String, Value)>,
    },
    /// Deletes the row with this primary key.
    Delete {
        /// The table, as the schema names it (case-insensitive).
        table: String,
        /// The primary key of the row to delete.
        key: Value,
    },
}

impl Mutation {
    /// The table the mutation writes, as given.
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
    /// The table of the row checked.
    pub table: String,
    /// The primary key of the row checked.
    pub key: Value,
    /// The column compared.
    pub column: String,
    /// The value the column must hold.
    pub expected: Value,
}

/// A transaction to apply atomically: all of its mutations, or none.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WriteTxn {
    /// `(client, seq)` of the client transaction, used for idempotency; `None` for
    /// server-side writes (never deduplicated).
    pub origin: Option<(ClientId, u64)>,
    /// The writes, applied in order.
    pub mutations: Vec<Mutation>,
    /// Checked before any mutation; one failing rejects the transaction.
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
    /// The server could not store the transaction now (its database failed: disk full,
    /// locked past the busy timeout). Nothing was written and nothing recorded: the same
    /// transaction may be sent again, and a client keeps it queued and does.
    Unavailable,
    /// The transaction was sent again after the server forgot its outcome (idempotency
    /// records are kept for a documented time): it may have been applied the first time,
    /// and is not applied again.
    Expired,
}

impl RejectCode {
    /// The snake_case name stored with a client transaction's recorded outcome and printed
    /// by the command line (on the wire the code travels as its serde variant).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::Schema => "schema",
            RejectCode::NotFound => "not_found",
            RejectCode::AlreadyExists => "already_exists",
            RejectCode::Constraint => "constraint",
            RejectCode::PreconditionFailed => "precondition_failed",
            RejectCode::Forbidden => "forbidden",
            RejectCode::Invalid => "invalid",
            RejectCode::Unavailable => "unavailable",
            RejectCode::Expired => "expired",
        }
    }

    /// Every code, in declaration order.
    pub const ALL: [RejectCode; 9] = [
        RejectCode::Schema,
        RejectCode::NotFound,
        RejectCode::AlreadyExists,
        RejectCode::Constraint,
        RejectCode::PreconditionFailed,
        RejectCode::Forbidden,
        RejectCode::Invalid,
        RejectCode::Unavailable,
        RejectCode::Expired,
    ];

    /// The inverse of [`RejectCode::as_str`].
    pub fn parse(name: &str) -> Option<RejectCode> {
        RejectCode::ALL.into_iter().find(|c| c.as_str() == name)
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
        /// The transaction's sync id.
        sync_id: SyncId,
        /// The change-log entries it wrote (empty for a replay).
        changes: Vec<Change>,
    },
    /// Nothing was written. A replay returns the original rejection.
    Rejected {
        /// Why, as a code an app can branch on.
        code: RejectCode,
        /// Why, for a person.
        message: String,
    },
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

/// What happened to a client transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// Committed at `sync_id`: the client's view holds it once its cut reaches that id.
    Committed {
        /// The transaction's sync id.
        sync_id: SyncId,
    },
    /// Rejected: nothing was written and the client rolls the transaction back.
    Rejected {
        /// Why, as a code an app can branch on.
        code: RejectCode,
        /// Why, for a person.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_codes_round_trip_through_names() {
        for code in RejectCode::ALL {
            assert_eq!(RejectCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(
            RejectCode::PreconditionFailed.as_str(),
            "precondition_failed"
        );
        assert_eq!(RejectCode::parse("nope"), None);
    }
}
