//! The store's own vocabulary ([`LogRead`]) and the SQLite conversions of the shared ids
//! and change kinds (the types themselves live in [`crate::vocab`], which has no SQLite).
//!
//! Depends only on the vocabulary and rusqlite.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::vocab::{ChangeKind, SubId, SyncId};

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

/// Subscription ids are stored as their bit pattern in an INTEGER column, so the
/// reserved [`SubId::PINS`] (`u64::MAX`) is stored as -1.
impl ToSql for SubId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0 as i64))
    }
}

impl FromSql for SubId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(value).map(|v| SubId(v as u64))
    }
}

/// The code a change kind is stored as in the change log.
pub(crate) fn kind_code(kind: ChangeKind) -> i64 {
    match kind {
        ChangeKind::Insert => 1,
        ChangeKind::Update => 2,
        ChangeKind::Delete => 3,
    }
}

/// The inverse of [`kind_code`]; `None` for a code no version of sluice writes.
pub(crate) fn kind_from_code(code: i64) -> Option<ChangeKind> {
    match code {
        1 => Some(ChangeKind::Insert),
        2 => Some(ChangeKind::Update),
        3 => Some(ChangeKind::Delete),
        _ => None,
    }
}

/// How a [`crate::store::Store::read_log`] call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogRead {
    /// Every change after the requested id up to and including `head` was delivered.
    Complete {
        /// The head of the committed state the read saw.
        head: SyncId,
    },
    /// The callback stopped the read; `last` is the sync id of the last change delivered
    /// (that transaction's later changes, if any, were not).
    Stopped {
        /// The sync id of the last change delivered.
        last: SyncId,
    },
    /// Changes right after the requested id were compacted away; the log starts after
    /// `horizon`. The reader must re-bootstrap.
    Compacted {
        /// The log's horizon.
        horizon: SyncId,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_kinds_round_trip_through_codes() {
        for kind in [ChangeKind::Insert, ChangeKind::Update, ChangeKind::Delete] {
            assert_eq!(kind_from_code(kind_code(kind)), Some(kind));
        }
        assert_eq!(kind_from_code(0), None);
    }
}
