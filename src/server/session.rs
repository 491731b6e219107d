//! One client connection: handshake, then requests on the control stream, live
//! transactions on the live stream, and one bootstrap stream per subscription.
//!
//! Server-internal apart from its limits and close codes; it must not depend on the
//! client or touch SQLite directly (reads and writes go through the store and the
//! committer).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, warn, Instrument};

mod fetch;
mod handshake;
mod live;
mod subscribe;
mod window;

pub use live::LiveItem;
pub(crate) use live::LiveQueue;
use live::{live_queue, write_live, LiveStream, Undelivered};

pub use handshake::scoped_client_id;

use super::committer::WriteRequest;
use super::metrics::{Cutoff, Metrics};
use super::pins::Pins;
use super::{Shared, WriteContext};
use crate::auth::{token::unix_now, Claims, Policy};
use crate::query;
use crate::transport::{FrameReader, FrameWriter};
use crate::vocab::{ClientId, QuotaExceeded, SessionId, SyncId, TxnOutcome, WriteTxn};
use crate::wire::{
    ClientFrame, ClientMessage, Live, QuotaRequest, RefuseCode, ServerFrame, ServerMessage, SubId,
    TxnFrame, WriteOutcome, MAX_FETCH_KEYS, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};

/// Live transactions waiting to be written to one session; past this the session is
/// cut off as lagging (close code [`close::LAGGING`]; the client resumes from its last
/// sync id). Memory per session grows with it, by the size of the queued transactions.
/// A commit batch's transactions reach a session as one item of its queue
/// ([`LiveItem::Txns`]), but each counts here.
pub const SESSION_QUEUE_CAPACITY: usize = 1024;
/// Items of one session's live queue (a batch of transactions, a seam, a resize...);
/// past this the session is cut off as lagging too. Each item holds at least one
/// transaction or one subscription's marker, so this bounds the queue with
/// [`SESSION_QUEUE_CAPACITY`].
pub const SESSION_QUEUE_ITEMS: usize = 1024;
/// Most live frames gathered into one write of the live stream: larger batches mean fewer
/// stream writes under a burst of commits.
pub const LIVE_BATCH_FRAMES: usize = 256;
/// Once the encoded batch reaches this many bytes it is written; it bounds the batch
/// buffer each session keeps.
pub const LIVE_BATCH_BYTES: usize = 256 * 1024;
/// Subscriptions of one session that ended without joining, waiting for the session to
/// unregister them (each bootstrap sends at most one).
pub const ENDED_QUEUE_CAPACITY: usize = 64;
/// Characters of a client's input an answer or a log line repeats at most.
pub const MAX_ECHO_CHARS: usize = 200;
/// Control-stream answers waiting to be written to one session; when it is full the
/// session stops reading requests until the client reads its answers.
pub const CONTROL_QUEUE_CAPACITY: usize = 256;
/// Row bytes (roughly, as encoded) per fetch answer frame; a larger answer is split
/// into `FetchedPart` frames ending with `Fetched`.
pub const FETCH_FRAME_BYTES: usize = 256 * 1024;
/// The largest `Hello` frame (read before the token is verified): 64 KiB, room for any
/// token; later frames may reach [`crate::wire::MAX_FRAME_BYTES`].
pub const MAX_HELLO_BYTES: usize = 64 * 1024;
/// Connections past [`super::Quotas::connections`] being told so at once; past this many
/// a further one is refused at the QUIC level without a reason (each refusal holds a
/// connection for at most [`HANDSHAKE_TIMEOUT`] and a short grace to read the refusal).
pub const REFUSALS_IN_FLIGHT: usize = 64;
/// How long a client has to open its control stream, and then to say hello, before the
/// server gives up on the connection.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a refused client gets to read the refusal before the connection is closed.
pub const REFUSAL_GRACE: Duration = Duration::from_secs(2);

/// QUIC application close codes; the close reason carries a text for people.
pub mod close {
    use quinn::VarInt;
    /// An ordinary close (the client's [`crate::client::Connection::close`]).
    pub const NORMAL: VarInt = VarInt::from_u32(0);
    /// The peer sent a frame that could not be decoded, or did not start with `Hello`.
    pub const PROTOCOL_ERROR: VarInt = VarInt::from_u32(1);
    /// The session's live queue overflowed ([`super::SESSION_QUEUE_CAPACITY`]): the client
    /// should reconnect and resume.
    pub const LAGGING: VarInt = VarInt::from_u32(2);
    /// The handshake was refused (after the `Refused` frame).
    pub const REFUSED: VarInt = VarInt::from_u32(3);
    /// The server is shutting down.
    pub const SHUTDOWN: VarInt = VarInt::from_u32(4);
    /// The backend closed the user's sessions (`ServerHandle::disconnect_user`).
    pub const REVOKED: VarInt = VarInt::from_u32(5);
    /// The session's token expired.
    pub const EXPIRED: VarInt = VarInt::from_u32(6);
}

/// What the rest of the server keeps of a session.
pub struct SessionHandle {
    live: LiveQueue,
    /// The live stream, which the committer writes to directly when nothing is queued.
    live_stream: Arc<tokio::sync::Mutex<LiveStream>>,
    connection: quinn::Connection,
    lagging: AtomicBool,
    metrics: Arc<Metrics>,
    /// The verified user, if any.
    user: Option<String>,
    /// The client's own id.
    client: ClientId,
    /// Subscriptions held now.
    subscriptions: AtomicUsize,
    /// Rows pinned now.
    pins: AtomicUsize,
}

/// One session as the inspector shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionInfo {
    /// The verified user, if any.
    pub user: Option<String>,
    /// The id the client chose.
    pub client: String,
    /// The client's address.
    pub remote: String,
    /// Subscriptions held.
    pub subscriptions: usize,
    /// Rows pinned.
    pub pins: usize,
    /// Live transactions queued for it, not yet written (its lag; at
    /// [`SESSION_QUEUE_CAPACITY`] it is cut off).
    pub queued: usize,
    /// Bytes sent to it (UDP payload, every stream and retransmission included).
    pub bytes_sent: u64,
}

impl SessionHandle {
    /// A snapshot of the session for the inspector and the metrics.
    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            user: self.user.clone(),
            client: self.client.0.clone(),
            remote: self.connection.remote_address().to_string(),
            subscriptions: self.subscriptions.load(Ordering::Relaxed),
            pins: self.pins.load(Ordering::Relaxed),
            queued: self.live.queued(),
            bytes_sent: self.connection.stats().udp_tx.bytes,
        }
    }

    /// Hands a batch's live transactions (in sync-id order) to the session without
    /// waiting: written to its stream at once when nothing is queued ahead of them,
    /// otherwise queued as one item. Past [`SESSION_QUEUE_CAPACITY`] transactions, or a
    /// full queue, cuts the session off (and queues none of them), as does a transaction
    /// that cannot be encoded.
    pub fn deliver(&self, txns: Vec<TxnFrame>, committed: Instant) {
        match self.live.deliver(&self.live_stream, txns, committed) {
            Ok(()) => {}
            Err(Undelivered::Full) => self.lagging(),
            Err(Undelivered::Unsendable(e)) => {
                warn!(error = %e, "live frame not encodable");
                self.unsendable();
            }
        }
    }

    /// Cuts the session off: a change it should get cannot be encoded as a live frame.
    pub fn unsendable(&self) {
        self.cut_off(Cutoff::Unsendable, b"a change too large for a live frame");
    }

    /// Queues a live item without waiting; a full queue cuts the session off.
    pub fn deliver_item(&self, item: LiveItem) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.live.try_send(item) {
            self.lagging();
        }
    }

    fn lagging(&self) {
        self.cut_off(
            Cutoff::Lagging,
            b"lagging: the client fell too far behind; resume from the last sync id",
        );
    }

    /// Closes the session as lagging (the client resumes later), once: several stalled
    /// streams of one session count one cut-off.
    pub fn cut_off(&self, why: Cutoff, reason: &[u8]) {
        if !self.lagging.swap(true, Ordering::SeqCst) {
            self.metrics.cut_off(why);
            warn!(remote = %self.connection.remote_address(), ?why, "cutting the session off");
            self.connection.close(close::LAGGING, reason);
        }
    }
}

struct Subscription {
    shape: Arc<query::Shape>,
    /// The subscription's own predicate, when a read rule was ANDed in.
    base: Option<Arc<query::Pred>>,
    /// A window shape: also held in [`super::windows::Windows`].
    window: bool,
    /// Its seam is queued (see [`bootstrap::Job::ready`]).
    ready: Arc<AtomicBool>,
    /// Whether no index serves its shape (counted by the residual quotas).
    residual: bool,
    bootstrap: JoinHandle<()>,
}

struct Session {
    id: SessionId,
    shared: Arc<Shared>,
    connection: quinn::Connection,
    client_id: ClientId,
    claims: Arc<Claims>,
    /// The rules bound with this session's claims.
    policy: Arc<Policy>,
    control: mpsc::Sender<ServerMessage>,
    live: LiveQueue,
    /// What the rest of the server sees of this session (its counts are kept here).
    handle: Arc<SessionHandle>,
    subscriptions: HashMap<SubId, Subscription>,
    /// Rows the client's batch loader keeps live.
    pins: Pins,
    /// Places for fetches in flight ([`super::Quotas::fetches_per_session`]).
    fetches: Arc<tokio::sync::Semaphore>,
    /// Places for writes in flight ([`super::Quotas::writes_per_session`]).
    writes: Arc<tokio::sync::Semaphore>,
    /// Places for bootstraps running ([`super::Quotas::bootstraps_per_session`]).
    bootstraps: Arc<tokio::sync::Semaphore>,
    /// Bootstraps that ended without joining tell the session here (see
    /// [`bootstrap::Job::ended`]).
    ended: mpsc::Sender<SubId>,
}

/// Serves one incoming connection until it closes; with `full`, only tells the client
/// that the server has no place for it.
pub async fn serve(
    shared: Arc<Shared>,
    id: SessionId,
    incoming: quinn::Incoming,
    full: Option<QuotaExceeded>,
) {
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %e, "connection failed during setup");
            return;
        }
    };
    let span = info_span!("session", id = id.0, remote = %connection.remote_address());
    async move {
        match handshake::handshake(&shared, &connection, full).await {
            Ok(handshake::Handshaken {
                client_id,
                chosen_id,
                claims,
                policy,
                writer,
                reader,
            }) => {
                info!(client = %client_id, user = claims.sub.as_deref(), "session started");
                shared
                    .users
                    .insert(id, (claims.sub.clone(), connection.clone()));
                let expiry = claims.exp.map(|exp| {
                    let connection = connection.clone();
                    tokio::spawn(async move {
                        let left = exp.saturating_sub(unix_now());
                        tokio::time::sleep(Duration::from_secs(left)).await;
                        connection.close(close::EXPIRED, b"token expired");
                    })
                });
                let user = claims.sub.clone();
                let auth = (Arc::new(claims), policy);
                run(
                    shared.clone(),
                    id,
                    connection.clone(),
                    (client_id, chosen_id),
                    auth,
                    writer,
                    reader,
                )
                .await;
                if let Some(expiry) = expiry {
                    expiry.abort();
                }
                shared.users.remove(&id);
                if let Some(user) = &user {
                    shared.ledger.release_connection(user);
                }
            }
            Err(reason) => debug!(%reason, "handshake failed"),
        }
        shared.sessions.remove(&id);
    }
    .instrument(span)
    .await
}

async fn run(
    shared: Arc<Shared>,
    id: SessionId,
    connection: quinn::Connection,
    (client_id, chosen_id): (ClientId, ClientId),
    (claims, policy): (Arc<Claims>, Arc<Policy>),
    writer: FrameWriter,
    mut reader: FrameReader,
) {
    let live_stream = match connection.open_uni().await {
        Ok(s) => s,
        Err(e) => {
            debug!(error = %e, "could not open the live stream");
            return;
        }
    };
    let (live_tx, live_stream, live_rx) = live_queue(
        live_stream,
        (client_id.clone(), chosen_id.clone()),
        &shared.metrics,
    );
    shared.authors.insert(client_id.clone(), id);
    let handle = Arc::new(SessionHandle {
        live: live_tx.clone(),
        live_stream: live_stream.clone(),
        connection: connection.clone(),
        lagging: AtomicBool::new(false),
        metrics: shared.metrics.clone(),
        user: claims.sub.clone(),
        client: chosen_id.clone(),
        subscriptions: AtomicUsize::new(0),
        pins: AtomicUsize::new(0),
    });
    shared.sessions.insert(id, handle.clone());
    let live_task =
        tokio::spawn(write_live(live_stream, live_rx, live_tx.clone()).in_current_span());
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE_CAPACITY);
    let (ended, mut ended_rx) = mpsc::channel(ENDED_QUEUE_CAPACITY);
    let control_task = tokio::spawn(write_control(writer, control_rx).in_current_span());
    let mut session = Session {
        id,
        shared: shared.clone(),
        connection: connection.clone(),
        client_id,
        claims,
        policy,
        control: control_tx,
        live: live_tx,
        handle,
        subscriptions: HashMap::new(),
        pins: Pins::default(),
        fetches: Arc::new(tokio::sync::Semaphore::new(
            shared.quotas.fetches_per_session,
        )),
        writes: Arc::new(tokio::sync::Semaphore::new(
            shared.quotas.writes_per_session,
        )),
        bootstraps: Arc::new(tokio::sync::Semaphore::new(
            shared.quotas.bootstraps_per_session,
        )),
        ended,
    };
    let mut shutdown = shared.shutdown.subscribe();
    let mut stopping = false;
    loop {
        let frame = tokio::select! {
            biased;
            _ = async { shutdown.wait_for(|stopping| *stopping).await.map(|_| ()) } => {
                stopping = true;
                break;
            }
            // Before the next request: the refusal that follows may bring the client
            // back with the same subscription id.
            Some(sub) = ended_rx.recv() => {
                session.forget(sub);
                continue;
            }
            frame = reader.recv::<ClientFrame>() => frame,
        };
        match frame {
            Ok(Some(ClientFrame::V1(message))) => session.handle(message).await,
            Ok(None) => break,
            Err(e) => {
                let reason = format!("invalid frame: {e}");
                debug!(%reason, "closing session");
                connection.close(close::PROTOCOL_ERROR, reason.as_bytes());
                break;
            }
        }
    }
    session.close();
    drop(session);
    // The control task ends once every in-flight write has its answer sent.
    let _ = control_task.await;
    live_task.abort();
    if stopping {
        connection.close(close::SHUTDOWN, b"server shutting down");
    }
}

impl Session {
    async fn reply(&self, message: ServerMessage) {
        let _ = self.control.send(message).await;
    }

    async fn handle(&mut self, message: ClientMessage) {
        match message {
            ClientMessage::Subscribe {
                sub,
                sql,
                params,
                resume_after,
                resume_shape,
            } => {
                let resume = resume_after.map(|after| (after, resume_shape));
                self.subscribe(sub, sql, params, resume).await
            }
            ClientMessage::Unsubscribe { sub } => {
                self.unsubscribe(sub);
                self.reply(ServerMessage::Unsubscribed { sub }).await;
            }
            ClientMessage::Write {
                seq,
                mutations,
                preconditions,
            } => {
                self.write(
                    seq,
                    WriteTxn {
                        origin: Some((self.client_id.clone(), seq)),
                        mutations,
                        preconditions,
                    },
                )
                .await
            }
            ClientMessage::Fetch {
                request,
                table,
                keys,
            } => self.fetch(request, table, keys).await,
            ClientMessage::Pin { table, keys } => self.pin(table, keys, true).await,
            ClientMessage::Resize { sub, limit } => self.resize(sub, limit).await,
            ClientMessage::Unpin { table, keys } => self.pin(table, keys, false).await,
            ClientMessage::Hello { .. } => {
                self.reply(ServerMessage::Error {
                    message: "Hello was already received".into(),
                })
                .await
            }
            #[allow(unreachable_patterns)]
            _ => {
                self.reply(ServerMessage::Error {
                    message: "unsupported request".into(),
                })
                .await
            }
        }
    }

    async fn write(&self, seq: u64, txn: WriteTxn) {
        let span = info_span!("transaction", client = %self.client_id, seq);
        let Ok(place) = self.writes.clone().acquire_owned().await else {
            return;
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        let request = WriteRequest {
            context: WriteContext {
                client_id: Some(self.client_id.clone()),
                claims: Some(self.claims.clone()),
            },
            txn,
            guard: self
                .policy
                .is_restricted()
                .then(|| self.policy.clone() as Arc<dyn crate::store::WriteGuard>),
            reply: reply_tx,
        };
        if self.shared.writes.send(request).await.is_err() {
            return;
        }
        let control = self.control.clone();
        tokio::spawn(
            async move {
                let _place = place;
                let outcome = match reply_rx.await {
                    Ok(TxnOutcome::Committed { sync_id, .. }) => {
                        WriteOutcome::Committed { sync_id }
                    }
                    Ok(TxnOutcome::Rejected { code, message }) => {
                        debug!(code = code.as_str(), %message, "transaction rejected");
                        WriteOutcome::Rejected { code, message }
                    }
                    Err(_) => return,
                };
                let _ = control
                    .send(ServerMessage::WriteResult { seq, outcome })
                    .await;
            }
            .instrument(span),
        );
    }

    /// Adds keys to (or removes them from) the session's pinned key set of `table`.
    async fn pin(&mut self, table: String, keys: Vec<crate::value::Value>, pin: bool) {
        let changed = self
            .pins
            .change(&self.shared, &self.policy, self.id, &table, keys, pin);
        self.handle.pins.store(self.pins.total(), Ordering::Relaxed);
        let answer = match changed {
            Ok(c) => ServerMessage::Pinned {
                table: c.table,
                columns: c.columns,
                pinned: c.pinned,
            },
            Err(super::PinError::Quota(exceeded)) => {
                debug!(%exceeded, "pin refused");
                self.shared.metrics.refused(exceeded.quota);
                let request = QuotaRequest::Pin { table };
                ServerMessage::QuotaExceeded { request, exceeded }
            }
            Err(e) => {
                debug!(error = %e, "pin refused");
                ServerMessage::Error {
                    message: format!("pin on `{table}` refused: {e}"),
                }
            }
        };
        self.reply(answer).await;
    }

    fn close(&mut self) {
        let subs: Vec<SubId> = self.subscriptions.keys().copied().collect();
        for sub in subs {
            self.unsubscribe(sub);
        }
        self.pins.clear(&self.shared, self.id);
        self.shared.sessions.remove(&self.id);
        self.shared
            .authors
            .remove_if(&self.client_id, |_, session| *session == self.id);
    }
}

/// At most [`MAX_ECHO_CHARS`] characters of `text`, for logs and error answers that
/// would otherwise repeat what a client sent (a subscription may be megabytes).
pub(crate) fn brief(text: &str) -> String {
    query::truncate(text, MAX_ECHO_CHARS).into_owned()
}

async fn write_control(mut writer: FrameWriter, mut queue: mpsc::Receiver<ServerMessage>) {
    while let Some(message) = queue.recv().await {
        if writer.send(&ServerFrame::V1(message)).await.is_err() {
            return;
        }
    }
    // Wait (briefly) until the client has every answer, so that closing the connection
    // right after cannot discard them.
    if writer.finish().is_ok() {
        let _ = tokio::time::timeout(super::SHUTDOWN_DRAIN, writer.stream().stopped()).await;
    }
}
