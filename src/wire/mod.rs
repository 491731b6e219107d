//! The wire protocol: how messages travel between a sluice client and server.
//!
//! Pure, no IO: everything here works on byte slices and is tested without sockets. The
//! async glue that moves frames over QUIC streams lives in [`crate::transport`]; this
//! module must not depend on it, nor on the store, the server or the client.
//!
//! - `codec`: length-prefixed frames (4-byte big-endian length + postcard payload) with a
//!   decoder that tells "need more bytes" apart from "invalid".
//! - `messages`: the versioned protocol message enums carried in
//!   those frames.
//! - `live`: the live stream's frames: a transaction's events in groups encoded once and
//!   shared by every session of a shape, and their reassembly on the client.

mod codec;
mod live;
mod messages;

pub use codec::*;
pub use live::*;
pub use messages::*;

pub use crate::vocab::{MoveOut, Quota, QuotaExceeded, RowEvent, SubId, WriteOutcome};
