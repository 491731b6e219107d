//! A replication-mode connection to PostgreSQL (`replication=database`), spoken over the
//! wire protocol directly: tokio-postgres does not open replication connections nor
//! stream `CopyBoth`. It runs the replication commands (`CREATE_REPLICATION_SLOT`,
//! `START_REPLICATION`) as simple queries and then carries the `CopyData` stream both
//! ways. Authentication: trust, password, MD5 and SCRAM-SHA-256 (through
//! `postgres-protocol`); TLS as the connection string says (see [`super::tls`]): an
//! `SSLRequest` first, then the handshake, then the startup message.
//!
//! Async IO only; the payloads are decoded by [`super::pgoutput`].

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::config::Host;

use super::tls::MakeRustls;
use super::{PgConfig, PgError};

/// Largest message accepted from the server (a row image of a huge row fits).
const MAX_MESSAGE_BYTES: usize = 1 << 30;

/// The code of an `SSLRequest` (in place of a protocol version).
const SSL_REQUEST_CODE: i32 = 80_877_103;

/// A byte stream, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection in replication mode.
pub struct ReplicationConn {
    stream: Box<dyn Io>,
    read: BytesMut,
    write: BytesMut,
}

/// One message from the server, framed (tag and body).
struct Frame {
    tag: u8,
    body: BytesMut,
}

/// Asks the server for TLS (`SSLRequest`) and performs the handshake, verifying the
/// server as `host`. Fails when the server does not accept TLS or the handshake fails.
async fn start_tls(
    mut stream: TcpStream,
    tls: MakeRustls,
    host: &str,
) -> Result<super::tls::RustlsStream<TcpStream>, PgError> {
    let connect = tls.for_host(host)?;
    let mut request = Vec::with_capacity(8);
    request.extend_from_slice(&8i32.to_be_bytes());
    request.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    let io = |e: std::io::Error| PgError::Connect(format!("{host}: {e}"));
    stream.write_all(&request).await.map_err(io)?;
    match stream.read_u8().await.map_err(io)? {
        b'S' => {}
        b'N' => {
            return Err(PgError::Connect(format!(
                "{host} does not accept TLS (sslrootcert asks for it)"
            )))
        }
        other => {
            return Err(PgError::Connect(format!(
                "{host} answered the TLS request with {other:#04x}"
            )))
        }
    }
    tokio_postgres::tls::TlsConnect::connect(connect, stream)
        .await
        .map_err(|e| PgError::Tls(format!("{host}: {e}")))
}

impl ReplicationConn {
    /// Connects to the first host of `config` with `replication=database` and
    /// authenticates. Fails with [`PgError::Connect`].
    pub async fn connect(config: &PgConfig) -> Result<ReplicationConn, PgError> {
        let host = match config.pg.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            None => "localhost".to_string(),
            #[allow(unreachable_patterns)]
            Some(_) => {
                return Err(PgError::Connect(
                    "the replication connection needs a TCP host, not a socket path".into(),
                ))
            }
        };
        let port = config.pg.get_ports().first().copied().unwrap_or(5432);
        let stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| PgError::Connect(format!("{host}:{port}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn Io> = match &config.tls {
            None => Box::new(stream),
            Some(tls) => Box::new(start_tls(stream, MakeRustls(tls.clone()), &host).await?),
        };
        let mut conn = ReplicationConn {
            stream,
            read: BytesMut::with_capacity(64 * 1024),
            write: BytesMut::new(),
        };
        let user = config.pg.get_user().unwrap_or("postgres").to_string();
        let db = config.pg.get_dbname().unwrap_or(&user).to_string();
        let params = [
            ("user", user.as_str()),
            ("database", db.as_str()),
            ("replication", "database"),
            ("application_name", "sluice"),
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(params.iter().copied(), &mut conn.write)
            .map_err(|e| PgError::Connect(e.to_string()))?;
        conn.flush().await?;
        conn.authenticate(&user, config.pg.get_password().unwrap_or_default())
            .await?;
        Ok(conn)
    }

    async fn authenticate(&mut self, user: &str, password: &[u8]) -> Result<(), PgError> {
        let mut scram: Option<ScramSha256> = None;
        loop {
            let frame = self.frame().await?;
            match frame.tag {
                b'R' => {
                    let mut body = frame.body;
                    let code = body.get_i32();
                    match code {
                        0 => {}
                        3 => {
                            let mut pw = password.to_vec();
                            pw.push(0);
                            self.raw_message(b'p', &pw);
                            self.flush().await?;
                        }
                        5 => {
                            let mut salt = [0u8; 4];
                            salt.copy_from_slice(&body[..4]);
                            let hash = postgres_protocol::authentication::md5_hash(
                                user.as_bytes(),
                                password,
                                salt,
                            );
                            frontend::password_message(hash.as_bytes(), &mut self.write)
                                .map_err(|e| PgError::Connect(e.to_string()))?;
                            self.flush().await?;
                        }
                        10 => {
                            let s = ScramSha256::new(password, ChannelBinding::unsupported());
                            frontend::sasl_initial_response(
                                "SCRAM-SHA-256",
                                s.message(),
                                &mut self.write,
                            )
                            .map_err(|e| PgError::Connect(e.to_string()))?;
                            scram = Some(s);
                            self.flush().await?;
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                PgError::Connect("SASL continue before SASL start".into())
                            })?;
                            s.update(&body)
                                .map_err(|e| PgError::Connect(format!("SCRAM: {e}")))?;
                            frontend::sasl_response(s.message(), &mut self.write)
                                .map_err(|e| PgError::Connect(e.to_string()))?;
                            self.flush().await?;
                        }
                        12 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                PgError::Connect("SASL final before SASL start".into())
                            })?;
                            s.finish(&body)
                                .map_err(|e| PgError::Connect(format!("SCRAM: {e}")))?;
                        }
                        other => {
                            return Err(PgError::Connect(format!(
                                "unsupported authentication method {other}"
                            )))
                        }
                    }
                }
                b'E' => return Err(PgError::Connect(error_text(&frame.body))),
                b'Z' => return Ok(()),
                _ => {}
            }
        }
    }

    /// Runs one replication command or query; returns its rows as text.
    /// Fails with [`PgError::Replication`] carrying the server's words.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        frontend::query(sql, &mut self.write).map_err(|e| PgError::Replication(e.to_string()))?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let frame = self.frame().await?;
            match frame.tag {
                b'D' => rows.push(data_row(frame.body)?),
                b'E' => error = Some(error_text(&frame.body)),
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(PgError::Replication(format!("{sql}: {e}"))),
            None => Ok(rows),
        }
    }

    /// Sends `START_REPLICATION …` and waits for the stream to open.
    pub async fn start(&mut self, sql: &str) -> Result<(), PgError> {
        frontend::query(sql, &mut self.write).map_err(|e| PgError::Replication(e.to_string()))?;
        self.flush().await?;
        loop {
            let frame = self.frame().await?;
            match frame.tag {
                b'W' => return Ok(()),
                b'E' => {
                    return Err(PgError::Replication(format!(
                        "{sql}: {}",
                        error_text(&frame.body)
                    )))
                }
                _ => {}
            }
        }
    }

    /// The next `CopyData` payload of the stream. Fails when the server ends the stream
    /// or reports an error.
    pub async fn recv(&mut self) -> Result<BytesMut, PgError> {
        loop {
            let frame = self.frame().await?;
            match frame.tag {
                b'd' => return Ok(frame.body),
                b'E' => return Err(PgError::Replication(error_text(&frame.body))),
                b'c' => return Err(PgError::Replication("the server ended the stream".into())),
                _ => {}
            }
        }
    }

    /// Sends one `CopyData` payload (a status update).
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), PgError> {
        self.raw_message(b'd', payload);
        self.flush().await
    }

    fn raw_message(&mut self, tag: u8, body: &[u8]) {
        self.write.extend_from_slice(&[tag]);
        self.write
            .extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        self.write.extend_from_slice(body);
    }

    async fn flush(&mut self) -> Result<(), PgError> {
        self.stream
            .write_all(&self.write)
            .await
            .map_err(|e| PgError::Replication(format!("write: {e}")))?;
        self.write.clear();
        Ok(())
    }

    async fn frame(&mut self) -> Result<Frame, PgError> {
        loop {
            if self.read.len() >= 5 {
                let len =
                    i32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]]);
                let len = usize::try_from(len)
                    .ok()
                    .filter(|l| (4..MAX_MESSAGE_BYTES).contains(l))
                    .ok_or_else(|| PgError::Replication(format!("bad message length {len}")))?;
                if self.read.len() > len {
                    let tag = self.read[0];
                    self.read.advance(5);
                    let body = self.read.split_to(len - 4);
                    return Ok(Frame { tag, body });
                }
                self.read.reserve(len + 1 - self.read.len());
            }
            let n = self
                .stream
                .read_buf(&mut self.read)
                .await
                .map_err(|e| PgError::Replication(format!("read: {e}")))?;
            if n == 0 {
                return Err(PgError::Replication(
                    "the server closed the connection".into(),
                ));
            }
        }
    }
}

fn data_row(mut body: BytesMut) -> Result<Vec<Option<String>>, PgError> {
    let bad = || PgError::Replication("malformed data row".into());
    if body.len() < 2 {
        return Err(bad());
    }
    let n = body.get_i16();
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        if body.len() < 4 {
            return Err(bad());
        }
        let len = body.get_i32();
        if len < 0 {
            row.push(None);
            continue;
        }
        let len = len as usize;
        if body.len() < len {
            return Err(bad());
        }
        let bytes = body.split_to(len);
        row.push(Some(String::from_utf8_lossy(&bytes).into_owned()));
    }
    Ok(row)
}

/// The severity and message of an `ErrorResponse`.
fn error_text(body: &[u8]) -> String {
    let mut severity = "";
    let mut message = "";
    for field in body.split(|&b| b == 0) {
        let Some((&kind, value)) = field.split_first() else {
            continue;
        };
        let value = std::str::from_utf8(value).unwrap_or("");
        match kind {
            b'S' => severity = value,
            b'M' => message = value,
            _ => {}
        }
    }
    format!("{severity}: {message}")
}
