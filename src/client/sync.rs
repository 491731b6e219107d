//! The client's background sync task: connects (with exponential backoff and jitter),
//! resumes every subscription from the local cut, resends the outbox, stages bootstraps
//! until they can join the consistent cut, and applies live transactions atomically.
//!
//! The only task that talks to the server on the client's behalf; the app-facing API
//! reaches it through a bounded command queue. It must not depend on the server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, info_span, warn, Instrument};

use super::backoff::Jitter;
use super::command::{Command, FetchAnswer, FetchReply};
use super::connection::{ConnectOptions, Connection, ConnectionError, Event};
use super::core::{is_row_or_progress, Action, StoreOp, SyncCore};
use super::{ClientShared, ConnectionState, Notification, Source, SubStatus, TokenSource};
use crate::ids::SyncId;
use crate::store::{Applied, StoreError};
use crate::vocab::{QuotaExceeded, RejectCode, WriteOutcome};
use crate::wire::{ClientMessage, QuotaRequest, ServerMessage, SubId};

/// How long a write the server could not store now (`unavailable`) waits before it is
/// sent again.
pub const WRITE_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Waits until `at`; never, without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Commands waiting for the sync task. Subscribe, unsubscribe and write commands are
/// dropped when it is full (the outbox and the stored subscriptions are re-sent on the
/// next connection); fetches wait for room.
pub const COMMAND_QUEUE_CAPACITY: usize = 1024;

/// One connected period.
/// Snapshot rows already queued that are taken in one go, behind the one that woke the
/// sync task: one pass through the store actions (and one status update) per batch
/// instead of per row. Bounds how long commands wait behind a stream of rows.
const ROW_DRAIN: usize = 1024;

struct Online<'a> {
    shared: &'a Arc<ClientShared>,
    conn: Connection,
    /// The protocol state of this connection.
    core: SyncCore,
    /// Fetches waiting for their answer, with the rows of its leading parts.
    fetches: HashMap<u64, (oneshot::Sender<FetchReply>, Vec<Vec<crate::value::Value>>)>,
    next_fetch: u64,
    /// Transactions the server could not store now (`unavailable`), sent again at
    /// `retry_at`: they stay in the outbox and in the view meanwhile.
    retry: Vec<u64>,
    retry_at: Option<tokio::time::Instant>,
    /// Pins and unpins sent on this connection, waiting for their answers (the server
    /// answers them in order), with where a [`Command::Pin`] wants its answer.
    pins: std::collections::VecDeque<Option<oneshot::Sender<Option<QuotaExceeded>>>>,
    /// The batch of snapshot rows being staged on the blocking pool while the next ones
    /// arrive (see [`Online::act`]).
    staging: Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
}

pub(crate) async fn run(shared: Arc<ClientShared>, mut commands: mpsc::Receiver<Command>) {
    let Some(server) = shared.config.server.clone() else {
        // Offline-only client: nothing to sync; keep draining commands.
        while let Some(command) = commands.recv().await {
            if let Command::Fetch { reply, .. } = command {
                let _ = reply.send(Err("no server configured".into()));
            }
        }
        return;
    };
    let mut jitter = Jitter::new();
    let mut attempt: u32 = 0;
    let mut behind_since: Option<Instant> = None;
    loop {
        shared.set_state(ConnectionState::Connecting);
        let client_id = match shared.local().client_id() {
            Ok(id) => id,
            Err(e) => {
                warn!(error = %e, "local store unusable");
                return;
            }
        };
        let connect = Connection::connect(ConnectOptions {
            addr: server.addr,
            ca: &server.ca,
            server_name: &server.server_name,
            client_id: client_id.clone(),
            token: shared.config.token.as_ref().and_then(TokenSource::current),
            schema_version: None,
        });
        tokio::pin!(connect);
        // An attempt can take until the handshake times out: commands are answered
        // meanwhile, and closing the client does not wait for it.
        let connected = loop {
            tokio::select! {
                connected = &mut connect => break connected,
                command = commands.recv() => match command {
                    None => return,
                    Some(command) => answer_offline(command),
                },
            }
        };
        match connected {
            Ok(conn) => {
                attempt = 0;
                let span = info_span!("client_session", client = %client_id);
                let result = async {
                    let mut online = Online {
                        shared: &shared,
                        conn,
                        core: SyncCore::new(),
                        fetches: HashMap::new(),
                        next_fetch: 1,
                        retry: Vec::new(),
                        retry_at: None,
                        pins: Default::default(),
                        staging: None,
                    };
                    online.run(&mut commands, &mut behind_since).await
                }
                .instrument(span)
                .await;
                match result {
                    Ok(Exit::Shutdown) => return,
                    Ok(Exit::Lost(reason)) => info!(%reason, "connection lost; reconnecting"),
                    Err(e) => warn!(error = %e, "sync failed; reconnecting"),
                }
            }
            Err(ConnectionError::Refused { message, .. }) => {
                warn!(%message, "server refused the connection");
                shared.set_last_error(message);
            }
            Err(e) => debug!(error = %e, "connect failed"),
        }
        shared.set_state(ConnectionState::Offline);
        let delay = shared.config.backoff.delay(attempt, jitter.next());
        attempt = attempt.saturating_add(1);
        // While offline, commands only need answering where they wait for the server.
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                command = commands.recv() => match command {
                    None => return,
                    Some(command) => answer_offline(command),
                },
            }
        }
    }
}

/// A command while not connected: only those that wait for an answer need one. The
/// others are carried out from the local store when the connection opens (every
/// subscription starts, every pending write is sent).
fn answer_offline(command: Command) {
    match command {
        Command::Fetch { reply, .. } => {
            let _ = reply.send(Err("offline".into()));
        }
        Command::Rebind(_, reply) => {
            let _ = reply.send(Ok(()));
        }
        _ => {}
    }
}

enum Exit {
    Shutdown,
    Lost(String),
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Connection(#[from] ConnectionError),
}

impl Online<'_> {
    /// Serves one connection. `behind_since`: since when servers of this database have
    /// announced heads behind the local cut, across reconnections.
    async fn run(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        behind_since: &mut Option<Instant>,
    ) -> Result<Exit, SyncError> {
        let (server_id, head) = {
            let welcome = self.conn.welcome();
            (welcome.server_id.clone(), welcome.head)
        };
        // Starting over would replace the view with an older state: first give a server
        // that is catching up the time to get past the cut, offline with the view kept.
        if self.shared.local().is_behind(&server_id, head)? {
            let since = *behind_since.get_or_insert_with(Instant::now);
            if since.elapsed() < self.shared.config.behind_server_wait {
                let why = format!("the server's head {head} is behind this client's cut");
                self.shared.set_last_error(why.clone());
                return Ok(Exit::Lost(why));
            }
        }
        *behind_since = None;
        if self.shared.local().adopt_server(&server_id, head)? {
            self.shared.loader.server_changed();
            info!(
                %server_id,
                "a different (or restored) server database: every subscription starts over"
            );
        }
        let schema_sql = self.conn.welcome().schema_sql.clone();
        let reset = self.shared.local().adopt_schema(&schema_sql)?;
        if !reset.is_empty() {
            info!(
                ?reset,
                "schema changed incompatibly; re-bootstrapping those subscriptions"
            );
        }
        self.shared.set_state(ConnectionState::Syncing);
        let (subs, pending, cut) = {
            let local = self.shared.local();
            (local.subs()?, local.pending().to_vec(), local.cut()?)
        };
        let actions = self.core.connected(&subs, cut, &pending);
        self.act(actions).await?;
        self.update_state();
        self.shared.loader.connected();
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => return Ok(Exit::Shutdown),
                    Some(command) => self.command(command).await?,
                },
                event = self.conn.next_event() => match event {
                    None => return Ok(Exit::Lost("connection ended".into())),
                    Some(Event::Closed(reason)) => return Ok(Exit::Lost(reason)),
                    Some(event) => {
                        if let Some(reason) = self.event(event).await? {
                            return Ok(Exit::Lost(reason));
                        }
                    }
                },
                // Only once the queue is empty: deferred requests came after what it holds.
                _ = self.shared.kick.notified(), if commands.is_empty() => {
                    let deferred = std::mem::take(
                        &mut *self.shared.deferred.lock().unwrap_or_else(|e| e.into_inner()),
                    );
                    for request in deferred {
                        self.command(request.command()).await?;
                    }
                }
                _ = sleep_until(self.retry_at), if self.retry_at.is_some() => {
                    self.retry_at = None;
                    for seq in std::mem::take(&mut self.retry) {
                        self.command(Command::Write(seq)).await?;
                    }
                }
            }
        }
    }

    fn update_state(&self) {
        let state = if self.core.is_settled() {
            ConnectionState::Online
        } else {
            ConnectionState::Syncing
        };
        self.shared.set_state(state);
    }

    async fn start(
        &mut self,
        sub: SubId,
        sql: &str,
        params: crate::query::Params,
        resume: Option<(SyncId, Option<crate::query::ShapeId>)>,
        in_group: bool,
    ) -> Result<(), SyncError> {
        let actions = self.core.start(sub, sql, params, resume, in_group);
        self.act(actions).await
    }

    /// Carries out what the core decided, in order: local-store operations on the
    /// blocking pool (each one local transaction, observers notified after it commits),
    /// frames, statuses.
    async fn act(&mut self, actions: Vec<Action>) -> Result<(), SyncError> {
        // A join leaves its pages in the WAL; they are copied into the database file once
        // its rows are visible and its statuses published (see `LocalStore::join`).
        let mut checkpoint = false;
        for action in actions {
            match action {
                Action::Send(message) => self.conn.send(message).await?,
                Action::Status(sub, status) => self.shared.set_sub_status(sub, status),
                // Snapshot rows are staged while the next ones are received and decoded;
                // every other store operation first waits for that write, so the store
                // still sees the operations in order.
                Action::Store(StoreOp::Stage(items)) => {
                    self.staged().await?;
                    let shared = self.shared.clone();
                    self.staging = Some(tokio::task::spawn_blocking(move || {
                        shared.local().stage_many(&items)
                    }));
                }
                Action::Store(op) => {
                    self.staged().await?;
                    let source = store_source(&op);
                    let started = std::time::Instant::now();
                    let applied = self
                        .blocking(move |shared| match &op {
                            StoreOp::Txn {
                                sync_id, pinned, ..
                            } if !pinned.is_empty() => shared.loader.apply_live(
                                shared,
                                *sync_id,
                                pinned.clone(),
                                |local, pins| op.run_with_pins(local, pins),
                            ),
                            _ => op.run(&mut shared.local()),
                        })
                        .await?;
                    if let Some(source) = source {
                        if matches!(source, Source::Joined { .. }) {
                            debug!(elapsed_ms = started.elapsed().as_millis() as u64, "joined");
                            checkpoint = true;
                        }
                        self.shared.notify(source, applied);
                    }
                }
            }
        }
        self.update_state();
        if checkpoint {
            self.blocking(|shared| shared.local().checkpoint()).await?;
        }
        Ok(())
    }

    /// What the local store remembers of subscription `sub`.
    fn sub_record(&self, sub: SubId) -> Result<Option<crate::store::SubRecord>, SyncError> {
        Ok(self
            .shared
            .local()
            .subs()?
            .into_iter()
            .find(|s| s.id == sub))
    }

    async fn command(&mut self, command: Command) -> Result<(), SyncError> {
        match command {
            Command::Subscribe(sub) if self.core.is_active(sub) => {}
            Command::Subscribe(sub) => {
                if let Some(record) = self.sub_record(sub)? {
                    self.start(sub, &record.sql, record.params, None, false)
                        .await?;
                    self.update_state();
                }
            }
            Command::Resize(sub, limit) => {
                let actions = self.core.resize(sub, limit);
                self.act(actions).await?;
            }
            Command::Unsubscribe(sub) => {
                let actions = self.core.unsubscribe(sub);
                self.act(actions).await?;
            }
            Command::Write(seq) => {
                let pending = self
                    .shared
                    .local()
                    .pending()
                    .iter()
                    .find(|p| p.seq == seq)
                    .cloned();
                if let Some(p) = pending {
                    self.conn
                        .send(ClientMessage::Write {
                            seq,
                            mutations: p.mutations,
                            preconditions: p.preconditions,
                        })
                        .await?;
                }
            }
            Command::Fetch { table, keys, reply } => {
                let request = self.next_fetch;
                self.next_fetch += 1;
                self.fetches.insert(request, (reply, Vec::new()));
                self.conn
                    .send(ClientMessage::Fetch {
                        request,
                        table,
                        keys,
                    })
                    .await?;
            }
            Command::Send(message) => {
                if matches!(
                    message,
                    ClientMessage::Pin { .. } | ClientMessage::Unpin { .. }
                ) {
                    self.pins.push_back(None);
                }
                self.conn.send(message).await?
            }
            Command::Pin(message, reply) => {
                self.pins.push_back(Some(reply));
                self.conn.send(message).await?
            }
            Command::Rebind(socket, reply) => {
                let _ = reply.send(self.conn.rebind(socket));
            }
        }
        Ok(())
    }

    /// Waits for the snapshot rows being staged, if any (see [`Online::act`]).
    async fn staged(&mut self) -> Result<(), SyncError> {
        if let Some(write) = self.staging.take() {
            write
                .await
                .map_err(|e| StoreError::Local(format!("local store task failed: {e}")))??;
        }
        Ok(())
    }

    /// Runs SQLite work on the blocking pool rather than on a runtime worker: a join of a
    /// million rows holds the store for seconds. Awaited, so the sync task's order holds;
    /// the work is one SQLite transaction, so it commits whole even if this task is
    /// dropped meanwhile.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&ClientShared) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, SyncError> {
        let shared = self.shared.clone();
        let done = tokio::task::spawn_blocking(move || work(&shared))
            .await
            .map_err(|e| StoreError::Local(format!("local store task failed: {e}")))?;
        Ok(done?)
    }

    /// Handles one event, and with a snapshot row every snapshot row already queued
    /// behind it (see [`ROW_DRAIN`]). Returns why the connection ended when an event
    /// taken that way says so.
    async fn event(&mut self, mut event: Event) -> Result<Option<String>, SyncError> {
        if let Event::Bootstrap(sub, frame) = event {
            if !is_row_or_progress(&frame) {
                self.one_event(Event::Bootstrap(sub, frame)).await?;
                return Ok(None);
            }
            let mut actions = self.core.bootstrap(sub, frame);
            let mut next = None;
            for _ in 1..ROW_DRAIN {
                match self.conn.try_next_event() {
                    Some(Event::Bootstrap(sub, frame)) if is_row_or_progress(&frame) => {
                        actions.extend(self.core.bootstrap(sub, frame));
                    }
                    other => {
                        next = other;
                        break;
                    }
                }
            }
            self.act(actions).await?;
            match next {
                None => return Ok(None),
                Some(e) => event = e,
            }
        }
        if let Event::Closed(reason) = event {
            return Ok(Some(reason));
        }
        self.one_event(event).await?;
        Ok(None)
    }

    async fn one_event(&mut self, event: Event) -> Result<(), SyncError> {
        // Buffered snapshot rows go to the staging table before anything else happens.
        if !matches!(&event, Event::Bootstrap(_, frame) if is_row_or_progress(frame)) {
            let actions = self.core.flush_rows();
            self.act(actions).await?;
        }
        let actions = match event {
            Event::Control(message) => return self.control(message).await,
            Event::Bootstrap(sub, frame) => {
                if let crate::wire::BootstrapFrame::End { sync_id } = &frame {
                    debug!(sub = sub.0, %sync_id, "snapshot ended");
                }
                self.core.bootstrap(sub, frame)
            }
            Event::Resized {
                sub,
                sync_id,
                events,
            } => {
                // The rows between the old and the new edge, at a state whose transactions
                // already arrived: applied like one more live transaction at it.
                let events = events.into_iter().map(|(t, e)| (sub, t, e)).collect();
                let txn = crate::wire::LiveTxn {
                    sync_id,
                    origin: None,
                    events,
                };
                self.core.live(txn, Vec::new())
            }
            Event::Live(mut txn) => {
                let pinned = super::loader::take_pin_events(&mut txn.events);
                self.core.live(txn, pinned)
            }
            Event::Joined { sub, sync_id } => {
                debug!(sub = sub.0, %sync_id, "seam");
                self.core.joined(sub, sync_id)
            }
            Event::Closed(_) => Vec::new(),
        };
        self.act(actions).await
    }

    async fn control(&mut self, message: ServerMessage) -> Result<(), SyncError> {
        match message {
            ServerMessage::Subscribed { sub, estimate, .. } => {
                self.core.subscribed(sub, estimate);
            }
            ServerMessage::SubscribeFailed { sub, message } => {
                self.failed(sub, SubStatus::Failed(message)).await?;
            }
            ServerMessage::QuotaExceeded {
                request: QuotaRequest::Subscribe { sub },
                exceeded,
            } => {
                warn!(sub = sub.0, %exceeded, "subscription refused");
                self.failed(sub, SubStatus::QuotaExceeded(exceeded)).await?;
            }
            ServerMessage::QuotaExceeded {
                request: QuotaRequest::Pin { .. },
                exceeded,
            } => {
                if let Some(Some(reply)) = self.pins.pop_front() {
                    let _ = reply.send(Some(exceeded));
                }
            }
            ServerMessage::Error { message } => {
                // Pins and unpins are the only requests answered this way.
                debug!(%message, "request refused");
                self.pins.pop_front();
            }
            ServerMessage::ResumeRefused { sub, .. } => {
                // The log no longer reaches our cut: this subscription alone bootstraps.
                if let Some(record) = self.sub_record(sub)? {
                    let in_group = self.core.in_group(sub);
                    self.start(sub, &record.sql, record.params, None, in_group)
                        .await?;
                }
            }
            ServerMessage::WriteResult {
                seq,
                outcome:
                    WriteOutcome::Rejected {
                        code: RejectCode::Unavailable,
                        message,
                    },
            } => {
                // Not an answer: the server stored nothing and recorded nothing. The
                // transaction stays queued and visible, and goes again shortly.
                debug!(seq, %message, "server could not store the write now; retrying");
                self.retry.push(seq);
                self.retry_at
                    .get_or_insert_with(|| tokio::time::Instant::now() + WRITE_RETRY_DELAY);
            }
            ServerMessage::WriteResult { seq, outcome } => {
                self.staged().await?;
                let applied = self.shared.local().resolve(seq, &outcome)?;
                let source = match &outcome {
                    crate::wire::WriteOutcome::Rejected { .. } => Source::Rollback { seq },
                    crate::wire::WriteOutcome::Committed { .. } => Source::Confirmed { seq },
                };
                self.shared.notify(source, applied);
                self.shared.resolve_write(seq, outcome);
            }
            ServerMessage::FetchedPart { request, rows } => {
                if let Some((_, parts)) = self.fetches.get_mut(&request) {
                    parts.extend(rows);
                }
            }
            ServerMessage::Fetched {
                request,
                sync_id,
                rows,
                columns,
            } => {
                if let Some((reply, mut parts)) = self.fetches.remove(&request) {
                    parts.extend(rows);
                    let answer = FetchAnswer {
                        sync_id,
                        rows: parts,
                        columns,
                    };
                    let _ = reply.send(Ok(answer));
                }
            }
            ServerMessage::FetchFailed { request, message } => {
                if let Some((reply, _)) = self.fetches.remove(&request) {
                    let _ = reply.send(Err(message));
                }
            }
            ServerMessage::Pinned { table, columns, .. } => {
                if let Some(Some(reply)) = self.pins.pop_front() {
                    let _ = reply.send(None);
                }
                self.shared.loader.learn_columns(&table, columns);
            }
            _ => {}
        }
        Ok(())
    }

    /// The server refused subscription `sub`: its rows leave, and `status` says why.
    async fn failed(&mut self, sub: SubId, status: SubStatus) -> Result<(), SyncError> {
        let actions = self.core.failed(sub, status);
        self.act(actions).await
    }
}

/// What a store operation's notification says caused it (`None`: nothing an app sees).
fn store_source(op: &StoreOp) -> Option<Source> {
    match op {
        StoreOp::Txn { sync_id, .. } => Some(Source::Server { sync_id: *sync_id }),
        StoreOp::Join { subs, .. } => Some(Source::Joined {
            subs: subs.iter().map(|(sub, _, _)| *sub).collect(),
        }),
        StoreOp::RemoveSub(sub) => Some(Source::Unsubscribed { sub: *sub }),
        StoreOp::StageClear(_) | StoreOp::Describe { .. } | StoreOp::Stage(_) => None,
    }
}

impl ClientShared {
    pub(crate) fn notify(&self, source: Source, applied: Applied) {
        if applied.is_empty() && !matches!(source, Source::Joined { .. }) {
            return;
        }
        let note = Notification {
            source,
            rows: applied.rows.into_iter().map(|(t, k)| (t, k.0)).collect(),
            tables: applied.tables.into_iter().collect(),
            truncated: applied.truncated,
            subs: applied.subs.into_iter().collect(),
        };
        let _ = self.notify.send(Arc::new(note));
    }
}
