//! Errors of the transport layer: loading certificates, binding sockets, connecting, and
//! moving frames over streams.

use std::{net::SocketAddr, path::PathBuf};

use crate::wire::FrameError;

/// Why a transport operation failed. Messages name the file, address or server involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A certificate or key file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The generated certificate could not be written.
    #[error("cannot write {}: {source}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable of the expected kind.
    #[error("{}: {detail}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was expected and not found.
        detail: String,
    },
    /// rustls refused the configuration (for example a key that does not match the
    /// certificate).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The self-signed development certificate could not be generated.
    #[error("cannot generate a self-signed certificate: {0}")]
    CertificateGeneration(#[from] rcgen::Error),
    /// The UDP socket could not be bound (or rebound).
    #[error("cannot bind UDP socket on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The connection attempt could not even start (bad server name, endpoint closing...).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The server's address.
        addr: SocketAddr,
        /// quinn's reason.
        source: quinn::ConnectError,
    },
    /// The connection failed or was lost.
    #[error("connection to {addr} failed: {source}")]
    Connection {
        /// The server's address.
        addr: SocketAddr,
        /// quinn's reason.
        source: quinn::ConnectionError,
    },
    /// The client rejected the server's certificate during the handshake.
    #[error(
        "the server's certificate for {server_name} is not trusted by the given CA file \
         ({detail})"
    )]
    UntrustedCertificate {
        /// The name the certificate was checked against.
        server_name: String,
        /// rustls's reason.
        detail: String,
    },
    /// A frame on a stream was oversized, malformed or cut short.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Reading from a stream failed.
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing to a stream failed.
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
}
