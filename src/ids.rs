//! Identifiers shared by every layer: sync ids (the server's clock) and client ids.
//! They are defined next to the store, which persists them, and re-exported here.

pub use crate::store::{ClientId, SyncId};
