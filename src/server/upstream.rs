//! PostgreSQL mode: the server's store is a local replica of PostgreSQL
//! ([`crate::postgres`]). This file ties it in: one task applies the replication stream
//! to the replica and fans each transaction out like the committer does; the committer
//! hands client and backend transactions here to be committed in PostgreSQL, and answers
//! them once the stream has brought them back (so the author's ack never comes before
//! its data, and carries the sync id every server gives that transaction). A lost
//! stream is resynchronised (a new slot, the replica compared with its snapshot) while
//! the server goes on serving; lost write and monitor connections are made again.
//!
//! Server-internal. Data flows down: PostgreSQL → replica → fan-out; writes go up to
//! PostgreSQL only.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use super::committer::{advance_delivered, fan_out, Outbox};
use super::metrics::Cutoff;
use super::registry::Deliveries;
use super::windows::{WindowEvents, WindowObserver};
use super::Shared;
use crate::ids::SyncId;
use crate::postgres::{self, Event, Lsn, PgError, PgWriter, Source, Written};
use crate::query::ShapeId;
use crate::schema::Schema;
use crate::store::{
    Replicated, ReplicatedTxn, SqliteStore, Store, StoreError, StoreOptions, WriteGuard,
};
use crate::vocab::{ClientId, RejectCode, TxnOutcome, WriteTxn};

/// How long a committed write waits for the stream to bring it back before it is
/// answered `unavailable` (it is committed; a resend learns its sync id).
pub const REPLICATION_WAIT: Duration = Duration::from_secs(30);
/// How long a new session waits for the replica to catch up with PostgreSQL before it
/// is welcomed anyway.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// Keepalive requests waiting for the stream task (one is enough; more are dropped).
const PING_QUEUE: usize = 1;
/// Resends waiting for the stream task to confirm them in order ([`Confirm`]); past it a
/// resend is answered `unavailable` and comes again.
pub const CONFIRM_QUEUE: usize = 256;
/// Transactions committed in PostgreSQL and waiting for the stream to bring them back,
/// at most; past it the committer waits before it writes the next.
pub const REPLICATING_MAX: usize = 1024;
/// Parts of one large transaction ([`Event::Part`]) waiting for the replica's writer;
/// past it the stream is not read until the writer takes one.
const PART_QUEUE: usize = 2;
/// The first wait before resynchronising after the stream was lost (PostgreSQL may be
/// restarting); it doubles after each failed attempt up to [`RESYNC_BACKOFF_MAX`].
pub const RESYNC_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between two attempts to resynchronise.
pub const RESYNC_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The PostgreSQL side of a server.
pub(crate) struct Upstream {
    pub replica: Arc<SqliteStore>,
    /// Where PostgreSQL is, to connect again after a connection was lost.
    config: postgres::PgConfig,
    schema: Arc<Schema>,
    /// tokio Mutex: held across the round trips of one PostgreSQL transaction.
    writer: tokio::sync::Mutex<PgWriter>,
    /// A connection for short reads (the WAL position) that never waits on a write.
    /// tokio Mutex: held across its one query, to connect again when it was lost.
    monitor: tokio::sync::Mutex<tokio_postgres::Client>,
    /// Writes committed in PostgreSQL waiting for the stream, by transaction id.
    /// std Mutex: short critical sections, never across an await.
    waiters: Mutex<HashMap<u32, oneshot::Sender<SyncId>>>,
    /// The WAL position up to which the replica has applied everything.
    progress: watch::Sender<Lsn>,
    pings: mpsc::Sender<()>,
    confirms: mpsc::Sender<Confirm>,
    /// Places for transactions waiting for the stream ([`REPLICATING_MAX`]).
    pub replicating: Arc<tokio::sync::Semaphore>,
    /// False while the stream is lost (until it is resynchronised): writes are answered
    /// `unavailable` at once.
    streaming: AtomicBool,
    /// The stream task, stopped at shutdown (its connection's end drops the slot).
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A transaction [`Upstream::write`] handed to PostgreSQL, for [`Upstream::answer`].
pub(crate) enum Pending {
    /// Answered without waiting (refused before PostgreSQL was asked).
    Answered(TxnOutcome),
    /// What PostgreSQL said; `registered` is its transaction id when the stream's answer
    /// is awaited on `replicated`.
    Written {
        written: Result<Written, PgError>,
        registered: Option<u32>,
        replicated: oneshot::Receiver<SyncId>,
        origin: Option<(ClientId, u64)>,
    },
}

/// A resend PostgreSQL holds that this replica has no record of (its data came with the
/// copy or a resynchronisation): the stream task confirms it to its author at the
/// replica's head, with an empty transaction of the author's queued after every
/// transaction up to that head, so the author's cut reaches the answer's sync id exactly
/// when its view holds the data.
struct Confirm {
    author: (ClientId, u64),
    reply: oneshot::Sender<SyncId>,
}

/// What the stream task takes besides the stream: keepalive requests and resends to
/// confirm in order.
pub(crate) struct Requests {
    pings: mpsc::Receiver<()>,
    confirms: mpsc::Receiver<Confirm>,
}

/// Connects, prepares the database, fills a fresh replica at `replica_path` and opens
/// the stream. The stream task starts with [`start_stream`] once the server is built.
pub(crate) async fn open(
    url: &str,
    schema: Arc<Schema>,
    replica_path: &Path,
    options: StoreOptions,
) -> Result<(Arc<Upstream>, Source, Requests), PgError> {
    let config = postgres::parse_url(url)?;
    let mut setup = postgres::connect(&config).await?;
    let identity = postgres::ddl::prepare(&mut setup, &schema).await?;
    let (source, replica) =
        postgres::connect_source(&config, schema.clone(), replica_path, options, &identity).await?;
    let writer = PgWriter::connect(&config, schema.clone()).await?;
    let start = Lsn(replica.head().0);
    let (pings, ping_queue) = mpsc::channel(PING_QUEUE);
    let (confirms, confirm_queue) = mpsc::channel(CONFIRM_QUEUE);
    let upstream = Upstream {
        replica,
        config,
        schema,
        writer: tokio::sync::Mutex::new(writer),
        monitor: tokio::sync::Mutex::new(setup),
        waiters: Mutex::new(HashMap::new()),
        progress: watch::channel(start).0,
        pings,
        confirms,
        replicating: Arc::new(tokio::sync::Semaphore::new(REPLICATING_MAX)),
        streaming: AtomicBool::new(true),
        task: Mutex::new(None),
    };
    let requests = Requests {
        pings: ping_queue,
        confirms: confirm_queue,
    };
    Ok((Arc::new(upstream), source, requests))
}

/// Starts the task that applies the stream to the replica and fans it out.
pub(crate) fn start_stream(shared: &Arc<Shared>, source: Source, requests: Requests) {
    let Some(upstream) = shared.upstream.clone() else {
        return;
    };
    let task = tokio::spawn(stream(shared.clone(), upstream.clone(), source, requests));
    *upstream.task.lock().expect("task lock") = Some(task);
}

impl Upstream {
    /// Stops the stream task (at shutdown, after the committer drained).
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().expect("task lock").take() {
            task.abort();
        }
    }

    /// Commits one transaction in PostgreSQL (transactions are written one at a time, in
    /// the order this is called); [`Upstream::answer`] then waits until the replica has
    /// it. The committer writes the next transaction while this one is replicating.
    pub async fn write(&self, txn: WriteTxn, guard: Option<Arc<dyn WriteGuard>>) -> Pending {
        if !self.streaming.load(Ordering::Acquire) {
            return Pending::Answered(unavailable(
                "this server is resynchronising with PostgreSQL",
            ));
        }
        let (tx, rx) = oneshot::channel();
        let mut registered = None;
        let written = {
            let mut writer = self.writer.lock().await;
            if writer.is_closed() {
                match PgWriter::connect(&self.config, self.schema.clone()).await {
                    Ok(fresh) => *writer = fresh,
                    Err(e) => return Pending::Answered(unavailable(&e.to_string())),
                }
            }
            writer
                .commit(&txn, guard, |xid| {
                    registered = Some(xid);
                    debug!(xid, "committing in PostgreSQL");
                    self.waiters.lock().expect("waiters").insert(xid, tx);
                })
                .await
        };
        Pending::Written {
            written,
            registered,
            replicated: rx,
            origin: txn.origin,
        }
    }

    /// The outcome of a transaction [`Upstream::write`] wrote: for one committed, once
    /// the stream has brought it into the replica (at most [`REPLICATION_WAIT`]).
    pub async fn answer(&self, pending: Pending) -> TxnOutcome {
        let (written, registered, rx, origin) = match pending {
            Pending::Answered(outcome) => return outcome,
            Pending::Written {
                written,
                registered,
                replicated,
                origin,
            } => (written, registered, replicated, origin),
        };
        let unregister = |xid: Option<u32>| {
            if let Some(xid) = xid {
                self.waiters.lock().expect("waiters").remove(&xid);
            }
        };
        match written {
            Ok(Written::Committed { changed: true, xid }) => {
                match tokio::time::timeout(REPLICATION_WAIT, rx).await {
                    Ok(Ok(sync_id)) => TxnOutcome::Committed {
                        sync_id,
                        changes: Vec::new(),
                    },
                    _ => {
                        unregister(Some(xid));
                        unavailable("committed in PostgreSQL, not yet replicated here")
                    }
                }
            }
            Ok(Written::Committed { changed: false, .. }) => {
                unregister(registered);
                TxnOutcome::Committed {
                    sync_id: self.replica.head(),
                    changes: Vec::new(),
                }
            }
            Ok(Written::Duplicate) => {
                let Some(author) = origin else {
                    return unavailable("duplicate without an origin");
                };
                self.caught_up().await;
                let (replica, (client, seq)) = (self.replica.clone(), author.clone());
                let recorded =
                    tokio::task::spawn_blocking(move || replica.recorded_sync_id(&client, seq))
                        .await;
                match recorded {
                    Ok(Ok(Some(sync_id))) => TxnOutcome::Committed {
                        sync_id,
                        changes: Vec::new(),
                    },
                    // Committed before this replica's copy, while no stream ran, or its
                    // record was pruned here: its data came with the copy or the
                    // resynchronisation, already in what this server serves. No sync id
                    // of this replica is its own; the stream task confirms it at the
                    // head, in order (see [`Confirm`]).
                    Ok(Ok(None)) => {
                        debug!("a resend committed before this replica's record of it");
                        self.confirm_in_order(author).await
                    }
                    _ => unavailable("cannot read the idempotency record"),
                }
            }
            Ok(Written::Rejected { code, message }) => TxnOutcome::Rejected { code, message },
            Err(e) => {
                unregister(registered);
                warn!(error = %e, "PostgreSQL write failed");
                unavailable(&e.to_string())
            }
        }
    }

    /// Has the stream task confirm `author`'s resend in order ([`Confirm`]).
    async fn confirm_in_order(&self, author: (ClientId, u64)) -> TxnOutcome {
        let (reply, answer) = oneshot::channel();
        if self.confirms.try_send(Confirm { author, reply }).is_err() {
            return unavailable("too many resends waiting to be confirmed");
        }
        match tokio::time::timeout(REPLICATION_WAIT, answer).await {
            Ok(Ok(sync_id)) => TxnOutcome::Committed {
                sync_id,
                changes: Vec::new(),
            },
            _ => unavailable("the replication stream did not confirm the resend in time"),
        }
    }

    /// Waits (at most [`CATCH_UP_WAIT`]) until the replica has applied everything
    /// PostgreSQL had written when called: a client that saw a transaction through
    /// another server then finds it here too.
    pub async fn caught_up(&self) {
        if !self.streaming.load(Ordering::Acquire) {
            return;
        }
        let position = match self.monitor().await {
            Ok(monitor) => monitor
                .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                .await
                .map_err(PgError::from),
            Err(e) => Err(e),
        };
        let target = match position {
            Ok(row) => Lsn::parse(&row.get::<_, String>(0)).unwrap_or_default(),
            Err(e) => {
                warn!(error = %e, "cannot read PostgreSQL's WAL position");
                return;
            }
        };
        let mut progress = self.progress.subscribe();
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
        while *progress.borrow_and_update() < target {
            let _ = self.pings.try_send(());
            let wait = tokio::time::timeout(Duration::from_millis(50), progress.changed());
            if tokio::time::Instant::now() > deadline {
                warn!(%target, "the replica did not catch up in time");
                return;
            }
            let _ = wait.await;
        }
    }

    /// The monitor connection, made again when it was lost.
    async fn monitor(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, tokio_postgres::Client>, PgError> {
        let mut monitor = self.monitor.lock().await;
        if monitor.is_closed() {
            *monitor = postgres::connect(&self.config).await?;
        }
        Ok(monitor)
    }

    /// Prunes the idempotency records in PostgreSQL (see [`postgres::prune_outcomes`]).
    pub async fn prune_outcomes(
        &self,
        max_age: Duration,
        max_records: u64,
    ) -> Result<u64, PgError> {
        let monitor = self.monitor().await?;
        postgres::prune_outcomes(&monitor, max_age, max_records).await
    }

    /// The WAL position up to which every transaction is applied to the replica and
    /// fanned out, as a sync id: the replica's state there is its state at its head. A
    /// cut taken elsewhere at a position that is no commit of this replica (another
    /// server's copy or resynchronisation point) is reached once this passes it.
    pub fn applied(&self) -> watch::Receiver<Lsn> {
        self.progress.subscribe()
    }

    fn advance(&self, lsn: Lsn) {
        self.progress.send_if_modified(|p| {
            let newer = lsn > *p;
            if newer {
                *p = lsn;
            }
            newer
        });
    }
}

fn unavailable(message: &str) -> TxnOutcome {
    TxnOutcome::Rejected {
        code: RejectCode::Unavailable,
        message: message.to_string(),
    }
}

/// Applies the stream to the replica, one PostgreSQL transaction at a time, and fans
/// each out. When the stream is lost (PostgreSQL restarted, the connection dropped),
/// writes are answered `unavailable` while it resynchronises (a new slot, the replica
/// compared with its snapshot, the difference applied and fanned out as one
/// transaction), then streaming goes on. Runs until the server stops it.
async fn stream(
    shared: Arc<Shared>,
    upstream: Arc<Upstream>,
    mut source: Source,
    mut requests: Requests,
) {
    loop {
        info!(slot = %source.slot, "replication stream running");
        let lost = follow(&shared, &upstream, &mut source, &mut requests).await;
        upstream.streaming.store(false, Ordering::Release);
        // Their transactions may be committed: the authors resend, and the idempotency
        // record answers them once the replica has their data.
        upstream.waiters.lock().expect("waiters").clear();
        error!(error = %lost, slot = %source.slot, "replication stream lost; resynchronising");
        source = resync(&shared, &upstream).await;
        upstream.streaming.store(true, Ordering::Release);
    }
}

/// Follows the stream until it fails; returns why.
async fn follow(
    shared: &Arc<Shared>,
    upstream: &Arc<Upstream>,
    source: &mut Source,
    requests: &mut Requests,
) -> String {
    // A transaction arriving in parts, applied as they come; dropped (so rolled back)
    // when the stream is lost before its last part.
    let mut parted: Option<Parted> = None;
    loop {
        let event = tokio::select! {
            event = source.next() => Some(event),
            Some(()) = requests.pings.recv() => None,
            Some(confirm) = requests.confirms.recv() => {
                confirm_at_head(shared, upstream, confirm);
                continue;
            }
        };
        let event = match event {
            None => {
                if let Err(e) = source.ping().await {
                    return e.to_string();
                }
                continue;
            }
            Some(Ok(event)) => event,
            Some(Err(e)) => return e.to_string(),
        };
        match event {
            Event::Progress(lsn) => {
                upstream.advance(lsn);
                // Everything up to it is applied: the slot may let go of that WAL (also
                // WAL of tables sluice does not publish), and a walsender stopping for a
                // PostgreSQL shutdown waits for this confirmation before it exits.
                if let Err(e) = source.confirm(lsn).await {
                    return e.to_string();
                }
            }
            Event::Part(part) => {
                let open = parted.get_or_insert_with(|| Parted::start(shared, upstream, &part));
                open.author = open.author.take().or_else(|| part.origins.first().cloned());
                if open.parts.send(part).await.is_err() {
                    // The writer stopped early: its error says why.
                    let open = parted.take().expect("open");
                    return match open.applying.await {
                        Ok(Err(e)) => format!("cannot apply transaction {}: {e}", open.sync_id),
                        Ok(Ok(_)) => "a transaction was applied before its last part".into(),
                        Err(e) => format!("the replica's task died: {e}"),
                    };
                }
            }
            Event::Txn { txn, xid, end } => {
                let applied = match parted.take() {
                    Some(open) => open.finish(txn).await,
                    None => apply(shared, upstream, txn).await,
                };
                if let Err(e) = publish(shared, upstream, applied, Some(xid), end).await {
                    return e;
                }
                if let Err(e) = source.confirm(end).await {
                    return e.to_string();
                }
            }
        }
    }
}

/// Confirms a resend to its author at the replica's head ([`Confirm`]). Runs on the
/// stream task between transactions: every transaction up to the head is already in the
/// sessions' queues, so the author's empty transaction comes after them.
fn confirm_at_head(shared: &Arc<Shared>, upstream: &Upstream, confirm: Confirm) {
    let sync_id = upstream.replica.head();
    let mut outbox = Outbox::default();
    let txn = (sync_id, Some(confirm.author), &[][..]);
    fan_out(shared, &mut outbox, txn, &Vec::new(), None);
    outbox.hand_over(shared, std::time::Instant::now());
    let _ = confirm.reply.send(sync_id);
}

/// Makes a new slot and brings the replica to its snapshot, retrying with a growing
/// wait until PostgreSQL answers; returns the new stream.
async fn resync(shared: &Arc<Shared>, upstream: &Arc<Upstream>) -> Source {
    let mut wait = RESYNC_BACKOFF_MIN;
    loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RESYNC_BACKOFF_MAX);
        let resynced =
            postgres::resync_source(&upstream.config, upstream.schema.clone(), &upstream.replica)
                .await;
        let (source, sync_id) = match resynced {
            Ok(resynced) => resynced,
            Err(e) => {
                warn!(error = %e, retry_in = ?wait, "cannot resynchronise with PostgreSQL yet");
                continue;
            }
        };
        let resyncing = apply_blocking(shared, upstream, move |replica, observer| {
            replica.apply_resync(sync_id, observer)
        });
        let applied = outcome(sync_id, None, resyncing.await);
        let changes = match &applied {
            Ok(outcome) => match &outcome.replicated {
                Replicated::Changes(changes) => changes.len(),
                Replicated::Spilled { changes, .. } => *changes,
            },
            Err(_) => 0,
        };
        match publish(shared, upstream, applied, None, Lsn(sync_id.0)).await {
            Ok(()) => {
                info!(%sync_id, changes, "replica resynchronised with PostgreSQL");
                return source;
            }
            Err(e) => warn!(error = %e, retry_in = ?wait, "cannot apply the resynchronisation"),
        }
    }
}

/// A transaction applied to the replica ([`Outcome`]), or why it could not be.
type Applied = Result<Outcome, String>;

/// What the blocking apply returns: the outcome, the windows' events and the window
/// shapes a spilled transaction touched.
type Joined = Result<(Replicated, Vec<(SyncId, WindowEvents)>, HashSet<ShapeId>), StoreError>;

/// What applying a transaction did, with its sync id and author (its first client
/// transaction), for [`publish`].
struct Outcome {
    sync_id: SyncId,
    author: Option<(ClientId, u64)>,
    replicated: Replicated,
    window_events: Vec<(SyncId, WindowEvents)>,
    spilled_windows: HashSet<ShapeId>,
}

/// Runs `apply` on the replica on a blocking thread, with the windows as observer.
fn apply_blocking(
    shared: &Arc<Shared>,
    upstream: &Upstream,
    apply: impl FnOnce(&SqliteStore, &mut WindowObserver) -> Result<Replicated, StoreError>
        + Send
        + 'static,
) -> tokio::task::JoinHandle<Joined> {
    let (replica, windows) = (upstream.replica.clone(), shared.windows.clone());
    tokio::task::spawn_blocking(move || {
        let mut observer = WindowObserver::new(&windows);
        let replicated = apply(&replica, &mut observer)?;
        Ok((replicated, observer.events, observer.spilled))
    })
}

/// Applies a whole transaction to the replica.
async fn apply(shared: &Arc<Shared>, upstream: &Upstream, txn: ReplicatedTxn) -> Applied {
    let (sync_id, author) = (txn.sync_id, txn.origins.first().cloned());
    let applying = apply_blocking(shared, upstream, move |replica, observer| {
        replica.apply_replicated(txn, observer)
    });
    outcome(sync_id, author, applying.await)
}

fn outcome(
    sync_id: SyncId,
    author: Option<(ClientId, u64)>,
    joined: Result<Joined, tokio::task::JoinError>,
) -> Applied {
    match joined {
        Ok(Ok((replicated, window_events, spilled_windows))) => Ok(Outcome {
            sync_id,
            author,
            replicated,
            window_events,
            spilled_windows,
        }),
        Ok(Err(e)) => Err(format!("cannot apply transaction {sync_id}: {e}")),
        Err(e) => Err(format!("the replica's task died: {e}")),
    }
}

/// A transaction applied in parts as the stream brings them ([`Event::Part`]): the
/// replica's writer holds its SQLite transaction open on a blocking thread meanwhile.
struct Parted {
    parts: mpsc::Sender<ReplicatedTxn>,
    applying: tokio::task::JoinHandle<Joined>,
    sync_id: SyncId,
    author: Option<(ClientId, u64)>,
}

impl Parted {
    fn start(shared: &Arc<Shared>, upstream: &Upstream, first: &ReplicatedTxn) -> Parted {
        let (parts, mut queue) = mpsc::channel(PART_QUEUE);
        let applying = apply_blocking(shared, upstream, move |replica, observer| {
            replica.apply_replicated_parts(&mut || Ok(queue.blocking_recv()), observer)
        });
        info!(sync_id = %first.sync_id, "a large transaction: applying it in parts");
        Parted {
            parts,
            applying,
            sync_id: first.sync_id,
            author: None,
        }
    }

    /// Hands over the last part and waits for the transaction to commit.
    async fn finish(self, last: ReplicatedTxn) -> Applied {
        let author = self.author.or_else(|| last.origins.first().cloned());
        // A writer that stopped early reports why when joined.
        let _ = self.parts.send(last).await;
        drop(self.parts);
        outcome(self.sync_id, author, self.applying.await)
    }
}

/// Fans an applied transaction out and answers the write waiting for it (PostgreSQL
/// transaction `xid`); `end` is the WAL read so far. A spilled transaction is not fanned
/// out: the sessions its rows reach are cut off and resume from the log
/// ([`cut_followers`]).
async fn publish(
    shared: &Arc<Shared>,
    upstream: &Upstream,
    applied: Applied,
    xid: Option<u32>,
    end: Lsn,
) -> Result<(), String> {
    let Outcome {
        sync_id,
        author,
        replicated,
        window_events,
        spilled_windows,
    } = applied?;
    let committed = std::time::Instant::now();
    let mut outbox = Outbox::default();
    match replicated {
        Replicated::Changes(changes) if !changes.is_empty() => {
            shared.metrics.committed(changes.len());
            let windows = window_events
                .into_iter()
                .find(|(s, _)| *s == sync_id)
                .map(|(_, events)| events)
                .unwrap_or_default();
            let origin = changes.first().and_then(|c| c.origin.clone());
            fan_out(
                shared,
                &mut outbox,
                (sync_id, origin, &changes),
                &windows,
                Some(committed),
            );
        }
        replicated => {
            if let Replicated::Spilled { tables, changes } = replicated {
                shared.metrics.committed(changes);
                cut_followers(
                    shared,
                    upstream,
                    sync_id,
                    (tables, changes),
                    spilled_windows,
                )
                .await;
            }
            if author.is_some() {
                // A client transaction that changed nothing (it set what was there), or
                // one too large to fan out: its author still hears of it, so its cut
                // reaches the ack's sync id.
                fan_out(
                    shared,
                    &mut outbox,
                    (sync_id, author, &[]),
                    &Vec::new(),
                    Some(committed),
                );
            }
        }
    }
    outbox.hand_over(shared, committed);
    advance_delivered(shared, sync_id);
    upstream.advance(end);
    if let Some(xid) = xid {
        if let Some(waiter) = upstream.waiters.lock().expect("waiters").remove(&xid) {
            let _ = waiter.send(sync_id);
        }
    }
    Ok(())
}

/// Changes of a spilled transaction matched at a time when its followers are found.
const FOLLOWERS_CHUNK: usize = 1_000;

/// Cuts off every session that hears of a row of the spilled transaction at `sync_id`:
/// its changes are read back from the log a chunk at a time and matched as the fan-out
/// matches them (subscriptions and pinned rows), and the sessions of `windows` (window
/// shapes it had events for) are added. When the log does not give back all `changes`,
/// every session that follows one of `tables` is cut instead. Each client resumes from
/// its cut, and the replay (or a new snapshot, for a replay too large) brings the whole
/// transaction at once.
async fn cut_followers(
    shared: &Arc<Shared>,
    upstream: &Upstream,
    sync_id: SyncId,
    (tables, changes): (Vec<String>, usize),
    windows: HashSet<ShapeId>,
) {
    let (found, replica) = (shared.clone(), upstream.replica.clone());
    let matched = tokio::task::spawn_blocking(move || {
        let mut sessions = HashSet::new();
        let mut deliveries = Deliveries::default();
        let mut chunk = Vec::with_capacity(FOLLOWERS_CHUNK);
        let read = replica.read_logged_txn(sync_id, &mut |change| {
            chunk.push(change);
            if chunk.len() == FOLLOWERS_CHUNK {
                followers(&found, &mut chunk, &mut deliveries, &mut sessions);
            }
            std::ops::ControlFlow::Continue(())
        });
        followers(&found, &mut chunk, &mut deliveries, &mut sessions);
        read.map(|read| (read, sessions))
    })
    .await;
    let mut sessions = {
        let registry = shared.registry.lock().expect("registry lock");
        match matched {
            Ok(Ok((read, sessions))) if read == changes => {
                let mut sessions = sessions;
                sessions.extend(registry.sessions_on(&[], &windows));
                sessions
            }
            _ => {
                warn!(%sync_id, "the log did not give the transaction back: cutting off every follower of its tables");
                registry.sessions_on(&tables, &windows)
            }
        }
    };
    for session in sessions.drain() {
        if let Some(handle) = shared.sessions.get(&session) {
            handle.cut_off(
                Cutoff::Oversized,
                b"a transaction too large to send live: resume from the last sync id",
            );
        }
    }
    warn!(
        %sync_id,
        changes,
        ?tables,
        "a transaction too large to hold in memory: the sessions that hear of its rows resume from the log"
    );
}

/// Adds the sessions `chunk`'s changes reach to `sessions`, and empties `chunk`.
fn followers(
    shared: &Shared,
    chunk: &mut Vec<crate::store::Change>,
    deliveries: &mut Deliveries,
    sessions: &mut HashSet<crate::vocab::SessionId>,
) {
    if chunk.is_empty() {
        return;
    }
    shared
        .registry
        .lock()
        .expect("registry lock")
        .deliveries(chunk, deliveries);
    sessions.extend(deliveries.sessions().map(|(session, _)| session));
    chunk.clear();
}
