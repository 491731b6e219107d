//! Server and client endpoints, connection limits, connecting, and migration.
//!
//! # Connection migration
//!
//! A QUIC connection is not tied to a UDP socket: when a client's address changes (Wi-Fi
//! to cellular, NAT rebinding) it keeps its connections by moving its endpoint to a new
//! socket with [`rebind`], which wraps [`quinn::Endpoint::rebind`]. The server validates
//! the new path and answers there; streams and their state carry on untouched.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    sync::Arc,
    time::Duration,
};

use quinn::{ConnectionError, Endpoint, IdleTimeout, TransportErrorCode, VarInt};

use super::{
    error::TransportError,
    tls::{client_crypto, server_crypto, Identity, TlsFiles},
};

/// Where [`client_endpoint`] binds: any IPv4 address, a port chosen by the system.
const CLIENT_BIND: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// TLS alerts a client raises when it rejects the server's certificate (RFC 8446 §6.2):
/// `bad_certificate`, `unsupported_certificate`, `certificate_revoked`,
/// `certificate_expired`, `certificate_unknown`, `unknown_ca`, and `decrypt_error`, which
/// rustls raises when a chain's signature does not verify against the trusted
/// certificate (two self-signed certificates with the same subject, for instance).
const CERTIFICATE_ALERTS: [u8; 7] = [42, 43, 44, 45, 46, 48, 51];

/// Per-connection QUIC limits, applied to both ends of a connection.
///
/// The windows bound how much data may be in flight, and so buffered, per stream and per
/// connection; they are ceilings, not preallocations: an idle connection buffers nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportLimits {
    /// Bidirectional streams the peer may have open at once. Default 32. Each open stream
    /// costs a little bookkeeping plus whatever it buffers (bounded by
    /// `stream_receive_window`).
    pub max_concurrent_bidi_streams: u32,
    /// Unidirectional streams the peer may have open at once. Default 32.
    pub max_concurrent_uni_streams: u32,
    /// A connection with no traffic for this long is closed. Default 30 s. Also bounds how
    /// long a handshake with an unresponsive peer may take. Values above `u32::MAX`
    /// milliseconds (about 49 days) are clamped to that.
    pub idle_timeout: Duration,
    /// Send a keep-alive ping after this much silence so an idle but healthy connection
    /// outlives `idle_timeout` (and NAT bindings stay open). Default 10 s; `None` disables
    /// it. Costs one small packet per interval per idle connection.
    pub keep_alive: Option<Duration>,
    /// Bytes the peer may send on one stream ahead of what the application has read.
    /// Default 1 MiB. Larger speeds up bulk transfer on high-latency links, at up to this
    /// much memory per busy stream.
    pub stream_receive_window: u32,
    /// Bytes the peer may send on the whole connection ahead of what the application has
    /// read. Default 8 MiB: the most one connection can make us buffer.
    pub receive_window: u32,
    /// Bytes we keep unacknowledged in flight per connection. Default 8 MiB: the most one
    /// connection's unacknowledged sends can occupy.
    pub send_window: u64,
    /// The receive buffer asked for the server's UDP socket (`SO_RCVBUF`), shared by every
    /// connection. Default 4 MiB: with a thousand clients acknowledging one burst at once,
    /// the system's usual 208 KiB drops datagrams (ACKs the server then waits for). The
    /// kernel caps it at `net.core.rmem_max`; the size granted is logged. `None` keeps
    /// the system's default.
    pub udp_receive_buffer: Option<usize>,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            max_concurrent_bidi_streams: 32,
            max_concurrent_uni_streams: 32,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(10)),
            stream_receive_window: 1024 * 1024,
            receive_window: 8 * 1024 * 1024,
            send_window: 8 * 1024 * 1024,
            udp_receive_buffer: Some(4 * 1024 * 1024),
        }
    }
}

impl TransportLimits {
    /// The quinn transport configuration these limits describe.
    fn transport_config(&self) -> quinn::TransportConfig {
        let idle_ms = u32::try_from(self.idle_timeout.as_millis()).unwrap_or(u32::MAX);
        let mut config = quinn::TransportConfig::default();
        config
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_bidi_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_concurrent_uni_streams))
            .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(idle_ms))))
            .keep_alive_interval(self.keep_alive)
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.receive_window))
            .send_window(self.send_window);
        config
    }
}

/// A server endpoint listening on `listen` (e.g. `127.0.0.1:0`; read the real port with
/// [`Endpoint::local_addr`]).
///
/// With `tls: None`, generates a self-signed certificate for `localhost` and `127.0.0.1`
/// and, if `generated_cert_path` is given, writes it there as PEM so clients can use it as
/// their CA file. A new certificate is generated on every call. Must be called inside a
/// tokio runtime.
pub fn server_endpoint(
    listen: SocketAddr,
    tls: Option<&TlsFiles>,
    generated_cert_path: Option<&Path>,
    limits: &TransportLimits,
) -> Result<Endpoint, TransportError> {
    let identity = match tls {
        Some(files) => Identity::load(files)?,
        None => Identity::self_signed(generated_cert_path)?,
    };
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto(identity)?));
    config.transport_config(Arc::new(limits.transport_config()));
    let bind = |source| TransportError::Bind {
        addr: listen,
        source,
    };
    let runtime = quinn::default_runtime()
        .ok_or_else(|| bind(std::io::Error::other("no async runtime found")))?;
    let socket = server_socket(listen, limits).map_err(bind)?;
    Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        runtime,
    )
    .map_err(bind)
}

/// The server's UDP socket on `listen`, its receive buffer asked for as `limits` say.
fn server_socket(listen: SocketAddr, limits: &TransportLimits) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(listen)?;
    if let Some(bytes) = limits.udp_receive_buffer {
        let state = quinn::udp::UdpSocketState::new((&socket).into())?;
        // Best effort: a smaller grant (the kernel's cap) still serves.
        match state.set_recv_buffer_size((&socket).into(), bytes) {
            Ok(()) => {
                let granted = state.recv_buffer_size((&socket).into()).unwrap_or(0);
                tracing::debug!(asked = bytes, granted, "UDP receive buffer");
            }
            Err(e) => {
                tracing::warn!(error = %e, asked = bytes, "cannot size the UDP receive buffer")
            }
        }
    }
    Ok(socket)
}

/// A client endpoint on an ephemeral IPv4 port that trusts only the certificates in the
/// PEM file `ca_pem`, with default [`TransportLimits`]. Must be called inside a tokio
/// runtime.
pub fn client_endpoint(ca_pem: &Path) -> Result<Endpoint, TransportError> {
    client_endpoint_with(ca_pem, CLIENT_BIND, &TransportLimits::default())
}

/// Like [`client_endpoint`], bound to `bind` (use `[::]:0` to reach IPv6 servers) and
/// with the given limits.
pub fn client_endpoint_with(
    ca_pem: &Path,
    bind: SocketAddr,
    limits: &TransportLimits,
) -> Result<Endpoint, TransportError> {
    let mut config = quinn::ClientConfig::new(Arc::new(client_crypto(ca_pem)?));
    config.transport_config(Arc::new(limits.transport_config()));
    let mut endpoint =
        Endpoint::client(bind).map_err(|source| TransportError::Bind { addr: bind, source })?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Connects to the server at `addr`, checking that its certificate is valid for
/// `server_name` and signed by the endpoint's CA file.
///
/// A certificate the CA file does not vouch for is reported as
/// [`TransportError::UntrustedCertificate`].
pub async fn connect(
    endpoint: &Endpoint,
    addr: SocketAddr,
    server_name: &str,
) -> Result<quinn::Connection, TransportError> {
    let connecting = endpoint
        .connect(addr, server_name)
        .map_err(|source| TransportError::Connect { addr, source })?;
    connecting.await.map_err(|source| match source {
        // A locally raised TLS alert about certificates: we rejected the server's chain.
        ConnectionError::TransportError(ref err)
            if CERTIFICATE_ALERTS
                .iter()
                .any(|&a| err.code == TransportErrorCode::crypto(a)) =>
        {
            TransportError::UntrustedCertificate {
                server_name: server_name.to_string(),
                detail: err.reason.clone(),
            }
        }
        source => TransportError::Connection { addr, source },
    })
}

/// Moves `endpoint` to a fresh UDP socket bound to `bind` (port 0 for any), keeping its
/// connections alive through QUIC connection migration. Returns the new local address.
///
/// Packets still addressed to the old socket are lost, which QUIC recovers from like any
/// other loss.
pub fn rebind(endpoint: &Endpoint, bind: SocketAddr) -> Result<SocketAddr, TransportError> {
    let bind_error = |source| TransportError::Bind { addr: bind, source };
    let socket = UdpSocket::bind(bind).map_err(bind_error)?;
    endpoint.rebind(socket).map_err(bind_error)?;
    endpoint.local_addr().map_err(bind_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keep_alive_is_shorter_than_idle_timeout() {
        let limits = TransportLimits::default();
        assert!(limits.keep_alive.is_some_and(|k| k < limits.idle_timeout));
    }

    #[test]
    fn huge_idle_timeout_is_clamped_not_rejected() {
        let limits = TransportLimits {
            idle_timeout: Duration::MAX,
            ..Default::default()
        };
        let _ = limits.transport_config();
    }

    #[test]
    fn the_server_socket_gets_the_receive_buffer_asked_for() {
        let size = |asked: Option<usize>| {
            let limits = TransportLimits {
                udp_receive_buffer: asked,
                ..Default::default()
            };
            let socket = server_socket("127.0.0.1:0".parse().unwrap(), &limits).unwrap();
            let state = quinn::udp::UdpSocketState::new((&socket).into()).unwrap();
            state.recv_buffer_size((&socket).into()).unwrap()
        };
        let system = size(None);
        // A small ask is granted as asked (Linux doubles it for its bookkeeping), a large
        // one up to the kernel's cap: never below the system's default.
        assert!(size(Some(4096)) < system, "small: {}", size(Some(4096)));
        assert!(size(Some(4 * 1024 * 1024)) >= system);
    }

    #[test]
    fn server_endpoint_outside_a_runtime_is_an_error_not_a_panic() {
        let err = server_endpoint(
            "127.0.0.1:0".parse().unwrap(),
            None,
            None,
            &TransportLimits::default(),
        )
        .err()
        .unwrap();
        assert!(matches!(err, TransportError::Bind { .. }), "{err}");
    }
}
