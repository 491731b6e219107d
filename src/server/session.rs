//! One client connection: handshake, then requests on the control stream, live
//! transactions on the live stream, and one bootstrap stream per subscription.
//!
//! Server-internal apart from its limits and close codes; it must not depend on the
//! client or touch SQLite directly (reads and writes go through the store and the
//! committer).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, warn, Instrument};

mod fetch;
mod handshake;
mod window;

pub use handshake::scoped_client_id;

use super::bootstrap;
use super::committer::WriteRequest;
use super::pins::Pins;
use super::{Shared, WriteContext};
use crate::auth::{token::unix_now, Claims, Policy};
use crate::query;
use crate::transport::{FrameReader, FrameWriter};
use crate::vocab::{ClientId, SessionId, SyncId, TxnOutcome, WriteTxn};
use crate::wire::{
    encode, ClientFrame, ClientMessage, Live, LiveFrame, LiveTxn, RefuseCode, ServerFrame,
    ServerMessage, SubId, WriteOutcome, MAX_FETCH_KEYS, MAX_FRAME_BYTES, PIN_SUB, PROTOCOL_VERSION,
};

/// Live transactions waiting to be written to one session; past this the session is
/// cut off as lagging (close code [`close::LAGGING`]; the client resumes from its last
/// sync id). Memory per session grows with it, by the size of the queued transactions.
pub const SESSION_QUEUE_CAPACITY: usize = 1024;
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
/// Subscriptions one session may hold at once; one more is answered with
/// `SubscribeFailed`. Each costs a shape in the matcher (shared with identical ones) and a
/// bootstrap task while it runs.
pub const MAX_SUBSCRIPTIONS_PER_SESSION: usize = 1000;
/// Row bytes (roughly, as encoded) per fetch answer frame; a larger answer is split
/// into `FetchedPart` frames ending with `Fetched`.
pub const FETCH_FRAME_BYTES: usize = 256 * 1024;
/// Fetches one session may have in flight; a further one waits for a place before the
/// session reads its next request (back-pressure on that client alone). Each holds at
/// most [`crate::store::MAX_FETCH_BYTES`] of rows.
pub const MAX_FETCHES_IN_FLIGHT: usize = 8;
/// Writes one session may have waiting for the committer: its share of the shared write
/// queue ([`super::WRITE_QUEUE_CAPACITY`]). A further write waits for a place before the
/// session reads its next request, so one busy client cannot fill the queue for all.
pub const MAX_WRITES_IN_FLIGHT: usize = 256;
/// The largest `Hello` frame (read before the token is verified): 64 KiB, room for any
/// token; later frames may reach [`crate::wire::MAX_FRAME_BYTES`].
pub const MAX_HELLO_BYTES: usize = 64 * 1024;
/// Connections a server serves at once; past it new connections wait in the QUIC
/// accept queue (each session costs its queues and a few tasks).
pub const MAX_CONNECTIONS: usize = 10_000;
/// Sessions one verified user may hold at once; a further one is refused at the
/// handshake with `TooManyConnections`.
pub const MAX_CONNECTIONS_PER_USER: usize = 64;
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

/// Items of a session's live queue.
pub enum LiveItem {
    /// A committed transaction's events for this session.
    Txn(LiveTxn),
    /// The subscription's bootstrap covered everything up to `through`.
    Seam {
        /// The subscription.
        sub: SubId,
        /// The sync id its bootstrap covers.
        through: SyncId,
    },
    /// The subscription ended: forget its seam.
    Forget {
        /// The subscription.
        sub: SubId,
    },
    /// The window subscription was resized at `sync_id`: the rows that moved in or out.
    Resized {
        /// The subscription.
        sub: SubId,
        /// The state the delta was read at.
        sync_id: SyncId,
        /// `(table, event)` per row.
        events: Vec<(String, crate::vocab::RowEvent)>,
    },
}

/// What the rest of the server keeps of a session.
pub struct SessionHandle {
    live: mpsc::Sender<LiveItem>,
    connection: quinn::Connection,
    lagging: AtomicBool,
}

impl SessionHandle {
    /// Queues a live transaction without waiting; a full queue cuts the session off.
    pub fn deliver(&self, txn: LiveTxn) {
        self.deliver_item(LiveItem::Txn(txn));
    }

    /// Queues a live item without waiting; a full queue cuts the session off.
    pub fn deliver_item(&self, item: LiveItem) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.live.try_send(item) {
            if !self.lagging.swap(true, Ordering::SeqCst) {
                warn!(remote = %self.connection.remote_address(), "session lagging; cutting it off");
                self.connection.close(
                    close::LAGGING,
                    b"lagging: the client fell too far behind; resume from the last sync id",
                );
            }
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
    live: mpsc::Sender<LiveItem>,
    subscriptions: HashMap<SubId, Subscription>,
    /// Rows the client's batch loader keeps live.
    pins: Pins,
    /// Places for fetches in flight ([`MAX_FETCHES_IN_FLIGHT`]).
    fetches: Arc<tokio::sync::Semaphore>,
    /// Places for writes in flight ([`MAX_WRITES_IN_FLIGHT`]).
    writes: Arc<tokio::sync::Semaphore>,
    /// Places for bootstraps running ([`bootstrap::MAX_BOOTSTRAPS_PER_SESSION`]).
    bootstraps: Arc<tokio::sync::Semaphore>,
    /// Bootstraps that ended without joining tell the session here (see
    /// [`bootstrap::Job::ended`]).
    ended: mpsc::Sender<SubId>,
}

/// Serves one incoming connection until it closes.
pub async fn serve(shared: Arc<Shared>, id: SessionId, incoming: quinn::Incoming) {
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %e, "connection failed during setup");
            return;
        }
    };
    let span = info_span!("session", id = id.0, remote = %connection.remote_address());
    async move {
        match handshake::handshake(&shared, &connection).await {
            Ok((client_id, chosen_id, claims, writer, reader)) => {
                info!(client = %client_id, user = claims.sub.as_deref(), "session started");
                let policy = Arc::new(match &shared.rules {
                    Some(rules) => Policy::bind(rules, &claims),
                    None => Policy::open(&claims),
                });
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
    let (live_tx, live_rx) = mpsc::channel(SESSION_QUEUE_CAPACITY);
    shared.authors.insert(client_id.clone(), id);
    shared.sessions.insert(
        id,
        Arc::new(SessionHandle {
            live: live_tx.clone(),
            connection: connection.clone(),
            lagging: AtomicBool::new(false),
        }),
    );
    let live_task = tokio::spawn(
        write_live(
            FrameWriter::new(live_stream),
            live_rx,
            (client_id.clone(), chosen_id),
        )
        .in_current_span(),
    );
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
        subscriptions: HashMap::new(),
        pins: Pins::default(),
        fetches: Arc::new(tokio::sync::Semaphore::new(MAX_FETCHES_IN_FLIGHT)),
        writes: Arc::new(tokio::sync::Semaphore::new(MAX_WRITES_IN_FLIGHT)),
        bootstraps: Arc::new(tokio::sync::Semaphore::new(
            bootstrap::MAX_BOOTSTRAPS_PER_SESSION,
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
            } => self.subscribe(sub, sql, params, resume_after).await,
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

    async fn subscribe(
        &mut self,
        sub: SubId,
        sql: String,
        params: query::Params,
        resume_after: Option<SyncId>,
    ) {
        let span = info_span!("subscription", sub = sub.0, sql = %brief(&sql));
        self.subscribe_in(span.clone(), sub, sql, params, resume_after)
            .instrument(span)
            .await
    }

    /// [`Session::subscribe`] inside its span (`span` goes on with the bootstrap task).
    async fn subscribe_in(
        &mut self,
        span: tracing::Span,
        sub: SubId,
        sql: String,
        params: query::Params,
        resume_after: Option<SyncId>,
    ) {
        if sub == PIN_SUB {
            let message = format!("subscription id {sub} is reserved for pinned rows");
            return self
                .reply(ServerMessage::SubscribeFailed { sub, message })
                .await;
        }
        if self.subscriptions.contains_key(&sub) {
            let message = format!("subscription {sub} already exists");
            return self
                .reply(ServerMessage::SubscribeFailed { sub, message })
                .await;
        }
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS_PER_SESSION {
            let message =
                format!("at most {MAX_SUBSCRIPTIONS_PER_SESSION} subscriptions per session");
            return self
                .reply(ServerMessage::SubscribeFailed { sub, message })
                .await;
        }
        // Compiled on a blocking thread: a large subscription never holds an async worker.
        let compiled = {
            let (policy, schema) = (self.policy.clone(), self.shared.schema.clone());
            tokio::task::spawn_blocking(move || {
                policy
                    .subscription(&schema, &sql, &params)
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(format!("the subscription could not be compiled: {e}")))
        };
        let (shape, base) = match compiled {
            Ok(effective) => (Arc::new(effective.shape), effective.base),
            Err(e) => {
                let message = brief(&e);
                debug!(error = %message, "subscription refused");
                return self
                    .reply(ServerMessage::SubscribeFailed { sub, message })
                    .await;
            }
        };
        if let Some(after) = resume_after {
            let horizon = self.shared.store.horizon();
            if after < horizon {
                return self
                    .reply(ServerMessage::ResumeRefused { sub, horizon })
                    .await;
            }
        }
        let window = shape.window().is_some();
        if window && resume_after.is_some() {
            // A window is at most MAX_WINDOW_LIMIT rows: a fresh snapshot replaces it.
            let horizon = self.shared.store.head();
            return self
                .reply(ServerMessage::ResumeRefused { sub, horizon })
                .await;
        }
        // Registered before the snapshot opens, so no later change can be missed.
        let shape_id = {
            let mut registry = self.shared.registry.lock().expect("registry lock");
            if window {
                registry.subscribe_window(&shape, self.id, sub)
            } else {
                registry.subscribe(shape.clone(), base.clone(), self.id, sub)
            }
        };
        if window {
            if let Err(message) = self.start_window(&shape, base.clone()).await {
                self.shared
                    .registry
                    .lock()
                    .expect("registry lock")
                    .unsubscribe(shape_id, self.id, sub);
                let message = brief(&message);
                return self
                    .reply(ServerMessage::SubscribeFailed { sub, message })
                    .await;
            }
        }
        let _ = shape_id;
        let ready = Arc::new(AtomicBool::new(false));
        let job = bootstrap::Job {
            shared: self.shared.clone(),
            connection: self.connection.clone(),
            control: self.control.clone(),
            live: self.live.clone(),
            places: self.bootstraps.clone(),
            ended: self.ended.clone(),
            sub,
            shape: shape.clone(),
            base: base.clone(),
            resume_after,
            ready: ready.clone(),
        };
        let task = tokio::spawn(bootstrap::run(job).instrument(span));
        self.subscriptions.insert(
            sub,
            Subscription {
                shape,
                base,
                window,
                ready,
                bootstrap: task,
            },
        );
    }

    /// Unregisters a subscription whose bootstrap ended without joining (its task is
    /// finishing by itself and still has the refusal to send).
    fn forget(&mut self, sub: SubId) {
        self.drop_subscription(sub, false);
    }

    fn unsubscribe(&mut self, sub: SubId) {
        self.drop_subscription(sub, true);
    }

    /// Unregisters `sub` and tells the live writer to forget its seam; `abort` also stops
    /// its bootstrap task (not when the task is ending by itself with a refusal to send).
    fn drop_subscription(&mut self, sub: SubId, abort: bool) {
        if let Some(s) = self.subscriptions.remove(&sub) {
            if abort {
                s.bootstrap.abort();
            }
            self.shared
                .registry
                .lock()
                .expect("registry lock")
                .unsubscribe(s.shape.id(), self.id, sub);
            if s.window {
                self.shared
                    .windows
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .release(s.shape.id());
            }
            let _ = self.live.try_send(LiveItem::Forget { sub });
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
        let answer = match changed {
            Ok(c) => ServerMessage::Pinned {
                table: c.table,
                columns: c.columns,
                pinned: c.pinned,
            },
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

/// Writes the session's live stream. `client_id` is the server's name for the client
/// (to recognize its own transactions), `chosen_id` the id it chose: a transaction's
/// origin goes only to its author, under the author's own id; nobody else learns who
/// wrote what.
async fn write_live(
    mut writer: FrameWriter,
    mut queue: mpsc::Receiver<LiveItem>,
    (client_id, chosen_id): (ClientId, ClientId),
) {
    // Per subscription, the last sync id its bootstrap already covered.
    let mut seams: HashMap<SubId, SyncId> = HashMap::new();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(first) = queue.recv().await {
        // Whatever else is already queued goes out in the same stream write: a burst of
        // commits costs one write per session, not one per transaction.
        let mut next = Some(first);
        let mut batched = 0;
        while let Some(item) = next.take() {
            let frame = match item {
                LiveItem::Seam { sub, through } => {
                    seams.insert(sub, through);
                    Some(Live::Joined {
                        sub,
                        sync_id: through,
                    })
                }
                LiveItem::Forget { sub } => {
                    seams.remove(&sub);
                    None
                }
                LiveItem::Resized {
                    sub,
                    sync_id,
                    events,
                } => Some(Live::Resized {
                    sub,
                    sync_id,
                    events,
                }),
                LiveItem::Txn(mut txn) => {
                    txn.events
                        .retain(|(sub, _, _)| seams.get(sub).is_none_or(|&w| txn.sync_id > w));
                    // An empty transaction still goes to its author, to confirm it in order.
                    let authored = txn.origin.as_ref().is_some_and(|(c, _)| *c == client_id);
                    txn.origin = match txn.origin.take() {
                        Some((_, seq)) if authored => Some((chosen_id.clone(), seq)),
                        _ => None,
                    };
                    (!txn.events.is_empty() || authored).then_some(Live::Txn(txn))
                }
            };
            if let Some(frame) = frame {
                if let Err(e) = encode(&LiveFrame::V1(frame), &mut buf) {
                    warn!(error = %e, "live frame not encodable; closing the live stream");
                    return;
                }
            }
            batched += 1;
            if batched < LIVE_BATCH_FRAMES && buf.len() < LIVE_BATCH_BYTES {
                next = queue.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            if writer.stream().write_all(&buf).await.is_err() {
                break;
            }
            buf.clear();
            buf.shrink_to(LIVE_BATCH_BYTES);
        }
    }
}
