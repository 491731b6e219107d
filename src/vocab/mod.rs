//! The words every layer shares: ids, transactions (mutations, preconditions, reject
//! codes, outcomes), quotas by name and row changes (change-log entries,
//! per-subscription row events).
//!
//! Pure data with serde, below `query`, `wire` and `store`: it depends on nothing but
//! [`crate::value`] and must not depend on any of them (nor on SQLite or IO). SQLite
//! conversions of these types live in the store, their frame encoding in the wire codec.

pub mod change;
pub mod ids;
pub mod quota;
pub mod txn;

pub use change::{Change, ChangeKind, MoveOut, RowEvent};
pub use ids::{ClientId, SessionId, SubId, SyncId};
pub use quota::{Quota, QuotaExceeded};
pub use txn::{Mutation, Precondition, RejectCode, TxnOutcome, WriteOutcome, WriteTxn};
