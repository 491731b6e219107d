//! A protocol-level connection to a sluice server: handshake, requests, and one merged
//! stream of events (control answers, live transactions, bootstrap frames).
//!
//! This is the layer under the local-store client and the `sluice sub` / `sluice exec`
//! commands. It keeps no state of its own beyond the connection. Depends on the wire and
//! the transport; it must not depend on the store or the server.

use std::net::SocketAddr;
use std::path::Path;

use tokio::sync::mpsc;
use tracing::debug;

use crate::ids::{ClientId, SyncId};
use crate::transport::{self, FrameReader, FrameWriter, TransportError};
use crate::wire::{
    BootstrapFrame, ClientFrame, ClientMessage, Live, LiveFrame, LiveTxn, RefuseCode, ServerFrame,
    ServerMessage, SubId, TxnAssembler, PROTOCOL_VERSION,
};

/// Events received but not yet taken by the application. When the queue is full the
/// stream readers wait, so QUIC flow control slows the server down instead of memory
/// growing.
pub const EVENT_QUEUE_CAPACITY: usize = 1024;

/// Errors of a protocol connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The endpoint could not be set up (CA file unreadable or empty) or the QUIC
    /// connection could not be established (unreachable, untrusted certificate).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The server answered the handshake with `Refused`.
    #[error("server refused the connection: {message}")]
    Refused {
        /// Why, as a code.
        code: RefuseCode,
        /// Why, for a person.
        message: String,
    },
    /// The connection or the control stream failed, or the server closed it (the text
    /// carries the server's close reason when it gave one).
    #[error("connection lost: {0}")]
    Lost(String),
    /// The server's first answer was not `Welcome` or `Refused`.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// What the server said when it accepted the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The server's schema version (a hash of its normalized schema).
    pub schema_version: u64,
    /// The server's schema as `CREATE TABLE` statements.
    pub schema_sql: String,
    /// The server's last committed sync id at the handshake.
    pub head: SyncId,
    /// The server log's horizon at the handshake: resuming from before it is refused.
    pub horizon: SyncId,
    /// The identity of the server's database: another one means the client's sync ids
    /// mean nothing there.
    pub server_id: String,
}

/// Something that arrived from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An answer on the control stream.
    Control(ServerMessage),
    /// A committed transaction's events, from the live stream.
    Live(LiveTxn),
    /// Subscription `sub` may join the local view at this point (see [`Live::Joined`]).
    Joined {
        /// The subscription.
        sub: SubId,
        /// The sync id its bootstrap covers.
        sync_id: SyncId,
    },
    /// A frame of the bootstrap stream of subscription `sub`.
    Bootstrap(SubId, BootstrapFrame),
    /// Window subscription `sub` was resized (see [`Live::Resized`]): apply `events` at
    /// `sync_id`, right after the transactions before it.
    Resized {
        /// The subscription.
        sub: SubId,
        /// The state the delta was read at.
        sync_id: SyncId,
        /// `(table, event)` per row that moved in or out.
        events: Vec<(String, crate::wire::RowEvent)>,
    },
    /// The connection ended; the text says why (e.g. "lagging").
    Closed(String),
}

/// How to reach a server.
#[derive(Debug, Clone)]
pub struct ConnectOptions<'a> {
    /// The server's UDP address.
    pub addr: SocketAddr,
    /// PEM file with the certificate(s) to trust.
    pub ca: &'a Path,
    /// The name the server's certificate must be valid for (e.g. `localhost`).
    pub server_name: &'a str,
    /// The client's stable identity, sent in `Hello`.
    pub client_id: ClientId,
    /// The token for the server's authenticator, if any.
    pub token: Option<String>,
    /// The schema version the client expects; `None` accepts any.
    pub schema_version: Option<u64>,
}

/// An open connection. Two background tasks read the server's streams into one event
/// queue; they end when the connection does.
pub struct Connection {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    control: FrameWriter,
    events: mpsc::Receiver<Event>,
    welcome: Welcome,
}

impl Connection {
    /// Connects, says hello and waits for the welcome. Must be called inside a tokio
    /// runtime; it has no timeout of its own (wrap it in one).
    ///
    /// Fails with [`ConnectionError::Transport`] when the CA file cannot be used or the
    /// QUIC handshake fails, [`ConnectionError::Refused`] when the server refuses the
    /// hello, [`ConnectionError::Lost`] when the connection ends during the handshake, and
    /// [`ConnectionError::Protocol`] when the server answers with anything else.
    pub async fn connect(options: ConnectOptions<'_>) -> Result<Connection, ConnectionError> {
        let endpoint = transport::client_endpoint(options.ca)?;
        let connection = transport::connect(&endpoint, options.addr, options.server_name).await?;
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| ConnectionError::Lost(e.to_string()))?;
        let mut control = FrameWriter::new(send);
        let mut reader = FrameReader::new(recv);
        let hello = ClientMessage::Hello {
            protocol: PROTOCOL_VERSION,
            schema_version: options.schema_version,
            client_id: options.client_id,
            token: options.token,
        };
        control
            .send(&ClientFrame::V1(hello))
            .await
            .map_err(|e| ConnectionError::Lost(e.to_string()))?;
        let welcome = match reader.recv::<ServerFrame>().await {
            Ok(Some(ServerFrame::V1(ServerMessage::Welcome {
                schema_version,
                schema_sql,
                head,
                horizon,
                server_id,
                ..
            }))) => Welcome {
                schema_version,
                schema_sql,
                head,
                horizon,
                server_id,
            },
            Ok(Some(ServerFrame::V1(ServerMessage::Refused { code, message }))) => {
                return Err(ConnectionError::Refused { code, message })
            }
            Ok(Some(other)) => {
                return Err(ConnectionError::Protocol(format!(
                    "expected Welcome, got {other:?}"
                )))
            }
            Ok(None) => return Err(ConnectionError::Lost("server closed the handshake".into())),
            Err(e) => {
                // A refusal whose frame was overtaken by the close still names its reason.
                if let Some(quinn::ConnectionError::ApplicationClosed(close)) =
                    connection.close_reason()
                {
                    let message = String::from_utf8_lossy(&close.reason).into_owned();
                    return Err(ConnectionError::Lost(message));
                }
                return Err(ConnectionError::Lost(e.to_string()));
            }
        };
        let (tx, events) = mpsc::channel(EVENT_QUEUE_CAPACITY);
        tokio::spawn(read_control(reader, connection.clone(), tx.clone()));
        tokio::spawn(accept_streams(connection.clone(), tx));
        Ok(Connection {
            endpoint,
            connection,
            control,
            events,
            welcome,
        })
    }

    /// What the server said when it accepted the connection.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Sends one request on the control stream; its answer arrives as an
    /// [`Event::Control`]. Fails with [`ConnectionError::Lost`] when the stream is gone.
    pub async fn send(&mut self, message: ClientMessage) -> Result<(), ConnectionError> {
        self.control
            .send(&ClientFrame::V1(message))
            .await
            .map_err(|e| ConnectionError::Lost(e.to_string()))
    }

    /// The next event; `None` once the connection is gone and every event was taken.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event if one already arrived, without waiting (e.g. to take a bootstrap's
    /// queued rows together).
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Moves the connection to a new local UDP socket (e.g. after a network change);
    /// QUIC migrates the connection without a new handshake. Fails when the socket cannot
    /// be set up for the endpoint.
    pub fn rebind(&self, socket: std::net::UdpSocket) -> std::io::Result<()> {
        self.endpoint.rebind(socket)
    }

    /// The local UDP address the connection uses. Fails only if the socket's address
    /// cannot be read.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Closes the connection (close code [`crate::server::close::NORMAL`]) and waits up to
    /// one second for the close to reach the server.
    pub async fn close(self) {
        self.connection
            .close(quinn::VarInt::from_u32(0), b"client closed");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.endpoint.wait_idle())
            .await;
    }
}

/// Why the connection ended, in the server's words when it closed it with a reason;
/// otherwise `fallback` (what the failed read said).
fn close_text(connection: &quinn::Connection, fallback: String) -> String {
    match connection.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(close)) => {
            String::from_utf8_lossy(&close.reason).into_owned()
        }
        _ => fallback,
    }
}

async fn read_control(
    mut reader: FrameReader,
    connection: quinn::Connection,
    tx: mpsc::Sender<Event>,
) {
    loop {
        match reader.recv::<ServerFrame>().await {
            Ok(Some(ServerFrame::V1(message))) => {
                if tx.send(Event::Control(message)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                let reason = close_text(&connection, e.to_string());
                let _ = tx.send(Event::Closed(reason)).await;
                return;
            }
        }
    }
}

/// The first unidirectional stream the server opens is the live stream; each later one
/// is a bootstrap stream (quinn hands streams over in the order they were opened).
async fn accept_streams(connection: quinn::Connection, tx: mpsc::Sender<Event>) {
    let mut first = true;
    loop {
        let recv = match connection.accept_uni().await {
            Ok(r) => r,
            Err(e) => {
                let reason = match &e {
                    quinn::ConnectionError::ApplicationClosed(close) => {
                        String::from_utf8_lossy(&close.reason).into_owned()
                    }
                    other => other.to_string(),
                };
                let _ = tx.send(Event::Closed(reason)).await;
                return;
            }
        };
        let reader = FrameReader::new(recv);
        if first {
            first = false;
            tokio::spawn(read_live(reader, tx.clone()));
        } else {
            tokio::spawn(read_bootstrap(reader, tx.clone()));
        }
    }
}

async fn read_live(mut reader: FrameReader, tx: mpsc::Sender<Event>) {
    // The parts of a transaction too large for one frame, until its `Txn`.
    let mut assembler = TxnAssembler::default();
    while let Ok(Some(LiveFrame::V1(live))) = reader.recv::<LiveFrame>().await {
        let event = match live {
            Live::Part(part) => {
                if let Err(e) = assembler.part(part) {
                    debug!(error = %e, "malformed transaction parts on the live stream");
                    return;
                }
                continue;
            }
            Live::Txn(txn) => match assembler.finish(txn) {
                Ok(txn) => Event::Live(txn),
                Err(e) => {
                    debug!(error = %e, "malformed transaction on the live stream");
                    return;
                }
            },
            Live::Joined { sub, sync_id } => Event::Joined { sub, sync_id },
            Live::Resized {
                sub,
                sync_id,
                events,
            } => Event::Resized {
                sub,
                sync_id,
                events,
            },
            #[allow(unreachable_patterns)]
            _ => continue,
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

async fn read_bootstrap(mut reader: FrameReader, tx: mpsc::Sender<Event>) {
    let sub = match reader.recv::<BootstrapFrame>().await {
        Ok(Some(frame @ BootstrapFrame::Begin { sub, .. })) => {
            if tx.send(Event::Bootstrap(sub, frame)).await.is_err() {
                return;
            }
            sub
        }
        other => {
            debug!(?other, "bootstrap stream without Begin");
            return;
        }
    };
    while let Ok(Some(frame)) = reader.recv::<BootstrapFrame>().await {
        if tx.send(Event::Bootstrap(sub, frame)).await.is_err() {
            return;
        }
    }
}
