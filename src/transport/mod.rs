//! QUIC transport: quinn endpoints secured with rustls, and frame streams on top.
//!
//! This is the only place that knows about sockets and TLS. Everything above it (server
//! sessions, client sync) sees a [`quinn::Connection`] and exchanges typed messages with
//! [`FrameWriter`] / [`FrameReader`], which carry frames of the pure
//! [`wire`](crate::wire) codec.
//!
//! - `tls`: certificates: load PEM files, generate a self-signed development certificate,
//!   build rustls configurations with an explicit `ring` crypto provider (nothing relies on
//!   a process-wide default provider).
//! - `endpoint`: server and client endpoints, [`TransportLimits`], [`connect`], and
//!   connection migration with [`rebind`].
//! - `frames`: async frame reader and writer over quinn streams.
//!
//! Endpoints must be created inside a tokio runtime.

mod endpoint;
mod error;
mod frames;
mod tls;

pub use endpoint::{
    client_endpoint, client_endpoint_with, connect, rebind, server_endpoint, TransportLimits,
};
pub use error::TransportError;
pub use frames::{FrameReader, FrameWriter};
pub use tls::TlsFiles;
pub(crate) use tls::{root_store, Identity};

/// The ALPN protocol id of sluice connections; a peer speaking anything else is refused
/// during the handshake.
pub const ALPN: &[u8] = b"sluice/1";

/// Names the development certificate is generated for.
pub const SELF_SIGNED_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];
