//! The client an app embeds: a local SQLite store that serves reads with or without a
//! network, subscriptions by SQL string, transactions that apply optimistically and
//! resolve when the server commits or rejects them, change observers, and a background
//! task that keeps it all in sync.
//!
//! The client sits beside the server, above the store, the wire and the transport; it
//! must not depend on [`crate::server`] (only on the protocol both speak).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use sluice::client::{Client, ClientConfig, ServerAddress};
//! let client = Client::open(ClientConfig::new("app-local.db").server(ServerAddress::new(
//!     "127.0.0.1:4433".parse()?,
//!     "app.db.cert.pem",
//! )))
//! .await?;
//! let open = client.subscribe("SELECT * FROM issues WHERE status != 'done'", Default::default())?;
//! open.ready().await?;
//! let rows = client.query("SELECT id, title FROM issues ORDER BY id", &[])?;
//! # Ok(()) }
//! ```

mod backoff;
mod command;
mod config;
mod connection;
pub mod core;
mod loader;
mod sync;
mod window;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use backoff::Backoff;
pub use config::{ClientConfig, ServerAddress, TokenSource, BEHIND_SERVER_WAIT};
pub use connection::{
    ConnectOptions, Connection, ConnectionError, Event, Welcome, EVENT_QUEUE_CAPACITY,
};
pub use loader::{
    FetchStats, LoaderConfig, DEFAULT_BATCH_WINDOW, DEFAULT_MAX_PENDING_LOADS, DEFAULT_MAX_PINS,
};
pub use sync::COMMAND_QUEUE_CAPACITY;

use crate::ids::{ClientId, SyncId};
use crate::query::Params;
use crate::store::{LocalStore, StoreError};
use crate::value::Value;
use crate::vocab::{Mutation, Precondition, RejectCode};
use crate::wire::{SubId, WriteOutcome};
use command::Command;

/// Notifications kept for observers that fall behind (each kept notification costs its
/// row list); an observer further behind skips the oldest (see [`Observer::next`]).
pub const OBSERVER_QUEUE_CAPACITY: usize = 1024;

/// Errors of the client API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The local database failed (see [`StoreError`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The client (or its sync task) has stopped, so no answer will come.
    #[error("the client is closed")]
    Closed,
    /// The subscription did not compile against the schema, or the server refused it.
    #[error("subscription failed: {0}")]
    SubscriptionFailed(String),
    /// The schema has no such table.
    #[error("unknown table `{0}`")]
    UnknownTable(String),
    /// The request is malformed (an empty transaction), or rebinding the socket failed.
    #[error("{0}")]
    Invalid(String),
    /// A fetch got no rows: offline, no server configured, the connection was lost, or the
    /// server refused it.
    #[error("fetch failed: {0}")]
    Fetch(String),
    /// The server refused the request by one of its quotas (which one, and its value).
    /// The rest of the client's work goes on.
    #[error(transparent)]
    QuotaExceeded(crate::vocab::QuotaExceeded),
    /// The batch loader already has [`LoaderConfig::max_pending`] loads waiting.
    #[error("too many loads waiting (at most {limit})")]
    TooManyLoads {
        /// The configured bound.
        limit: usize,
    },
}

/// The connection as an app would show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not connected (no server configured, or waiting before the next attempt).
    Offline,
    /// Connecting or in the handshake.
    Connecting,
    /// Connected; some subscription is still bootstrapping or resuming.
    Syncing,
    /// Connected and every subscription is live.
    Online,
}

/// Where a subscription is.
#[derive(Debug, Clone, PartialEq)]
pub enum SubStatus {
    /// Waiting for a connection or for the server.
    Pending,
    /// Its snapshot (or replay) is arriving.
    Bootstrapping {
        /// Rows (or changes) received so far.
        received: u64,
        /// The server's estimate of the total (0 when unknown or resuming).
        estimate: u64,
    },
    /// Its rows are in the local view, consistent at `sync_id` or later.
    Ready {
        /// The cut at which it joined the local view.
        sync_id: SyncId,
    },
    /// The server refused it; the text says why.
    Failed(String),
    /// The server refused it by one of its quotas (a per-user, per-session or total
    /// limit); the client may subscribe again once it holds less.
    QuotaExceeded(crate::vocab::QuotaExceeded),
}

/// What caused a notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A server transaction was applied.
    Server {
        /// The transaction's sync id.
        sync_id: SyncId,
    },
    /// A local transaction was applied optimistically.
    Local {
        /// The transaction's sequence number ([`PendingWrite::seq`]).
        seq: u64,
    },
    /// A local transaction was rejected and rolled back.
    Rollback {
        /// The transaction's sequence number.
        seq: u64,
    },
    /// A local transaction was committed by the server.
    Confirmed {
        /// The transaction's sequence number.
        seq: u64,
    },
    /// Staged subscriptions joined the local view.
    Joined {
        /// The subscriptions that joined.
        subs: Vec<SubId>,
    },
    /// A subscription ended (by the app, by a hydration's expiry, or refused by the
    /// server); rows only it covered left the local view.
    Unsubscribed {
        /// The subscription.
        sub: SubId,
    },
    /// Batch-loader pins changed.
    Pins,
}

/// One change to the local view: everything one applied transaction changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// What caused it.
    pub source: Source,
    /// Rows whose visible content changed, as (table, key), listed up to
    /// [`crate::store::MAX_NOTIFY_ROWS`] (a large bootstrap lists only its tables).
    pub rows: Vec<(String, Value)>,
    /// Every table with changed rows.
    pub tables: Vec<String>,
    /// More rows changed than `rows` lists: re-read rather than patch.
    pub truncated: bool,
    /// Subscriptions whose rows changed.
    pub subs: Vec<SubId>,
}

/// What an observer wants to hear about.
#[derive(Debug, Clone, PartialEq)]
pub enum Interest {
    /// Every notification.
    All,
    /// Notifications that change rows of this table (name compared case-insensitively).
    Table(String),
    /// Notifications that change rows of this subscription.
    Subscription(SubId),
    /// Notifications that change this row (table, primary key), or that may have
    /// (a truncated notification about its table).
    Row(String, Value),
}

impl Interest {
    fn wants(&self, note: &Notification) -> bool {
        match self {
            Interest::All => true,
            Interest::Table(t) => note
                .tables
                .iter()
                .any(|table| table.eq_ignore_ascii_case(t)),
            Interest::Subscription(s) => note.subs.contains(s),
            Interest::Row(t, k) => {
                let listed = note
                    .rows
                    .iter()
                    .any(|(table, key)| table.eq_ignore_ascii_case(t) && key.sqlite_cmp(k).is_eq());
                let in_table = note.tables.iter().any(|x| x.eq_ignore_ascii_case(t));
                listed || (note.truncated && in_table)
            }
        }
    }
}

/// Receives the notifications matching its interest, once per applied transaction.
pub struct Observer {
    interest: Interest,
    rx: broadcast::Receiver<Arc<Notification>>,
}

impl Observer {
    /// The next matching notification; `None` when the client is gone. An observer that
    /// fell more than [`OBSERVER_QUEUE_CAPACITY`] notifications behind skips ahead (it
    /// should re-read what it shows).
    pub async fn next(&mut self) -> Option<Arc<Notification>> {
        loop {
            match self.rx.recv().await {
                Ok(note) if self.interest.wants(&note) => return Some(note),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// A matching notification already received, without waiting.
    pub fn try_next(&mut self) -> Option<Arc<Notification>> {
        loop {
            match self.rx.try_recv() {
                Ok(note) if self.interest.wants(&note) => return Some(note),
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => return None,
            }
        }
    }
}

/// A subscription handle: its id and its progress.
pub struct Subscription {
    /// The subscription's id, stable across runs.
    pub id: SubId,
    status: watch::Receiver<SubStatus>,
}

impl Subscription {
    /// Where the subscription is now.
    pub fn status(&self) -> SubStatus {
        self.status.borrow().clone()
    }

    /// Waits until the rows are in the local view; returns the cut they joined at. Fails
    /// with [`ClientError::SubscriptionFailed`] when the server refused it and
    /// [`ClientError::Closed`] when the client closed first.
    pub async fn ready(&self) -> Result<SyncId, ClientError> {
        let mut rx = self.status.clone();
        loop {
            match rx.borrow_and_update().clone() {
                SubStatus::Ready { sync_id } => return Ok(sync_id),
                SubStatus::Failed(m) => return Err(ClientError::SubscriptionFailed(m)),
                SubStatus::QuotaExceeded(q) => return Err(ClientError::QuotaExceeded(q)),
                _ => {}
            }
            rx.changed().await.map_err(|_| ClientError::Closed)?;
        }
    }
}

/// A local transaction that has been applied optimistically; await it for the
/// server's answer.
pub struct PendingWrite {
    /// The transaction's sequence number in the outbox (its idempotency key).
    pub seq: u64,
    outcome: oneshot::Receiver<WriteOutcome>,
}

impl PendingWrite {
    /// Resolves when the server commits (with its sync id) or rejects (with a reason; the
    /// local view has been rolled back by then). Fails with [`ClientError::Closed`] when
    /// the client closes before the answer arrives (the transaction stays in the outbox
    /// and is sent again on the next run).
    pub async fn outcome(self) -> Result<WriteOutcome, ClientError> {
        self.outcome.await.map_err(|_| ClientError::Closed)
    }
}

/// Builds one local transaction.
pub struct Transaction<'a> {
    client: &'a Client,
    mutations: Vec<Mutation>,
    preconditions: Vec<Precondition>,
}

impl Transaction<'_> {
    /// Inserts a row; `values` are (column, value) pairs and must include the primary
    /// key. Nothing is checked until [`Transaction::commit`].
    pub fn insert(mut self, table: &str, values: Vec<(&str, Value)>) -> Self {
        let values = values
            .into_iter()
            .map(|(c, v)| (c.to_string(), v))
            .collect();
        self.mutations.push(Mutation::Insert {
            table: table.into(),
            values,
        });
        self
    }

    /// Sets some columns of one row; the others keep their value.
    pub fn update(mut self, table: &str, key: Value, set: Vec<(&str, Value)>) -> Self {
        let set = set.into_iter().map(|(c, v)| (c.to_string(), v)).collect();
        self.mutations.push(Mutation::Update {
            table: table.into(),
            key,
            set,
        });
        self
    }

    /// Deletes the row with this primary key.
    pub fn delete(mut self, table: &str, key: Value) -> Self {
        self.mutations.push(Mutation::Delete {
            table: table.into(),
            key,
        });
        self
    }

    /// Rejects the transaction unless the row's `column` still equals `expected`.
    pub fn expect(mut self, table: &str, key: Value, column: &str, expected: Value) -> Self {
        self.preconditions.push(Precondition {
            table: table.into(),
            key,
            column: column.into(),
            expected,
        });
        self
    }

    /// Persists the transaction in the outbox, applies it to the local view, and queues it
    /// for the server. Works offline: it is sent when the client connects.
    ///
    /// Fails with [`ClientError::Invalid`] for a transaction without writes,
    /// [`ClientError::UnknownTable`] when a write names a table the known schema lacks, and
    /// [`ClientError::Store`] when the local database fails. Constraint and permission
    /// checks happen on the server: their failures arrive as a rejected outcome.
    pub fn commit(self) -> Result<PendingWrite, ClientError> {
        self.client.commit(self.mutations, self.preconditions)
    }
}

/// State shared by the app-facing handle and the sync task.
pub(crate) struct ClientShared {
    pub config: ClientConfig,
    /// std Mutex, never held across an await. The sync task holds it for as long as a
    /// join takes: app reads go through `reader` instead.
    local: Mutex<LocalStore>,
    /// App reads, on a connection of their own (`None` for a store with no file).
    reader: Option<crate::store::LocalReader>,
    notify: broadcast::Sender<Arc<Notification>>,
    state: watch::Sender<ConnectionState>,
    subs: Mutex<HashMap<SubId, watch::Sender<SubStatus>>>,
    writes: Mutex<HashMap<u64, oneshot::Sender<WriteOutcome>>>,
    last_error: Mutex<Option<String>>,
    /// Batch-loader queues, pins and hydrations.
    pub(crate) loader: Arc<loader::LoaderShared>,
    /// App requests that found the command queue full: kept here (one entry per
    /// subscription or queued write at most, so bounded by what the local store holds)
    /// and handed to the sync task when `kick` wakes it. Never dropped.
    pub(crate) deferred: Mutex<std::collections::BTreeSet<command::Deferred>>,
    /// Wakes the sync task for `deferred`.
    pub(crate) kick: tokio::sync::Notify,
}

impl ClientShared {
    pub(crate) fn local(&self) -> MutexGuard<'_, LocalStore> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_state(&self, state: ConnectionState) {
        self.state.send_if_modified(|s| {
            let changed = *s != state;
            *s = state;
            changed
        });
    }

    pub(crate) fn set_last_error(&self, message: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }

    pub(crate) fn set_sub_status(&self, sub: SubId, status: SubStatus) {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        match subs.get(&sub) {
            Some(tx) => {
                let _ = tx.send(status);
            }
            None => {
                subs.insert(sub, watch::channel(status).0);
            }
        }
    }

    pub(crate) fn resolve_write(&self, seq: u64, outcome: WriteOutcome) {
        let waiter = self
            .writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&seq);
        if let Some(tx) = waiter {
            let _ = tx.send(outcome);
        }
    }
}

/// The app's handle on its local database and its sync with the server.
pub struct Client {
    shared: Arc<ClientShared>,
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
    loader_task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Opens the local store (reads work at once, offline) and starts syncing in the
    /// background when a server is configured. Must be called inside a tokio runtime.
    /// Fails with [`ClientError::Store`] when the local database cannot be opened or read
    /// (see [`LocalStore::open`]).
    pub async fn open(config: ClientConfig) -> Result<Client, ClientError> {
        let path = config.db_path.clone();
        let schema = config.schema.clone();
        let local = tokio::task::spawn_blocking(move || LocalStore::open(&path, schema))
            .await
            .map_err(|_| ClientError::Closed)??;
        let (notify, _) = broadcast::channel(OBSERVER_QUEUE_CAPACITY);
        let (state, _) = watch::channel(ConnectionState::Offline);
        let mut statuses = HashMap::new();
        for sub in local.subs()? {
            let status = if sub.joined {
                SubStatus::Ready {
                    sync_id: local.cut()?,
                }
            } else {
                SubStatus::Pending
            };
            statuses.insert(sub.id, watch::channel(status).0);
        }
        let mut waiters = HashMap::new();
        for p in local.pending() {
            // Answers to transactions of a previous run reach `outcome_of` observers only.
            let (tx, _) = oneshot::channel();
            waiters.insert(p.seq, tx);
        }
        let loader = Arc::new(loader::LoaderShared::new(config.loader.clone(), &local)?);
        let reader = local.reader().ok();
        let shared = Arc::new(ClientShared {
            config,
            local: Mutex::new(local),
            reader,
            notify,
            state,
            subs: Mutex::new(statuses),
            writes: Mutex::new(waiters),
            last_error: Mutex::new(None),
            loader,
            deferred: Mutex::new(Default::default()),
            kick: tokio::sync::Notify::new(),
        });
        let (commands, queue) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
        let task = tokio::spawn(sync::run(shared.clone(), queue));
        let loader_task = tokio::spawn(loader::run(
            shared.loader.clone(),
            Arc::downgrade(&shared),
            commands.downgrade(),
        ));
        Ok(Client {
            shared,
            commands,
            task,
            loader_task,
        })
    }

    /// This installation's client id (generated and stored on first use). Fails with
    /// [`ClientError::Store`] when the local database does.
    pub fn client_id(&self) -> Result<ClientId, ClientError> {
        Ok(self.shared.local().client_id()?)
    }

    /// The sync id the local view reflects. Fails with [`ClientError::Store`] when the
    /// local database does.
    pub fn cut(&self) -> Result<SyncId, ClientError> {
        Ok(self.shared.local().cut()?)
    }

    /// Subscribes; rows arrive in the background (see [`Subscription::ready`]). The
    /// subscription is remembered in the local store and resumed on every later run.
    /// Fails with [`ClientError::SubscriptionFailed`] when the known schema rejects it,
    /// and [`ClientError::Store`] when the local database fails.
    pub fn subscribe(&self, sql: &str, params: Params) -> Result<Subscription, ClientError> {
        {
            // Validate locally when the schema is known, for an immediate, precise error.
            let local = self.shared.local();
            if local.schema().tables().next().is_some() {
                crate::query::compile(local.schema(), sql, &params)
                    .map_err(|e| ClientError::SubscriptionFailed(e.to_string()))?;
            }
        }
        let id = self.shared.local().add_sub(sql, &params)?;
        let (tx, rx) = watch::channel(SubStatus::Pending);
        self.shared
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        self.send(command::Deferred::Subscribe(id));
        Ok(Subscription { id, status: rx })
    }

    /// The handle of a subscription made earlier (also in a previous run).
    pub fn subscription(&self, id: SubId) -> Option<Subscription> {
        let subs = self.shared.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.get(&id).map(|tx| Subscription {
            id,
            status: tx.subscribe(),
        })
    }

    /// Ends a subscription; rows nothing else covers leave the local view. Fails with
    /// [`ClientError::Store`] when the local database does.
    pub fn unsubscribe(&self, id: SubId) -> Result<(), ClientError> {
        let applied = self.shared.local().remove_sub(id)?;
        self.shared
            .notify(Source::Unsubscribed { sub: id }, applied);
        self.shared
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.send(command::Deferred::Unsubscribe(id));
        Ok(())
    }

    /// Runs a read-only SQL query on the local view; works offline. Fails with
    /// [`ClientError::Store`] when the statement writes, does not prepare or fails.
    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, ClientError> {
        match &self.shared.reader {
            Some(reader) => Ok(reader.query(sql, params)?.1),
            None => Ok(self.shared.local().query(sql, params)?.1),
        }
    }

    /// One visible row by primary key (`None` also for an unknown table). Fails with
    /// [`ClientError::Store`] when the local database does.
    pub fn row(&self, table: &str, key: &Value) -> Result<Option<Vec<Value>>, ClientError> {
        match &self.shared.reader {
            Some(reader) => Ok(reader.row(table, key)?),
            None => Ok(self.shared.local().row(table, key)?),
        }
    }

    /// Starts a local transaction.
    pub fn transaction(&self) -> Transaction<'_> {
        Transaction {
            client: self,
            mutations: Vec::new(),
            preconditions: Vec::new(),
        }
    }

    fn commit(
        &self,
        mutations: Vec<Mutation>,
        preconditions: Vec<Precondition>,
    ) -> Result<PendingWrite, ClientError> {
        if mutations.is_empty() {
            return Err(ClientError::Invalid(
                "a transaction needs at least one write".into(),
            ));
        }
        {
            let local = self.shared.local();
            for m in &mutations {
                if local.schema().tables().next().is_some()
                    && local.schema().table(m.table()).is_none()
                {
                    return Err(ClientError::UnknownTable(m.table().to_string()));
                }
            }
        }
        let (seq, applied) = self.shared.local().enqueue(mutations, preconditions)?;
        let (tx, rx) = oneshot::channel();
        self.shared
            .writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(seq, tx);
        self.shared.notify(Source::Local { seq }, applied);
        self.send(command::Deferred::Write(seq));
        Ok(PendingWrite { seq, outcome: rx })
    }

    /// Hands a request to the sync task without waiting: through the command queue, or,
    /// when it is full, through the deferred set the sync task drains next. Never lost.
    fn send(&self, request: command::Deferred) {
        match self.commands.try_send(request.command()) {
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared
                    .deferred
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(request);
                self.shared.kick.notify_one();
            }
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Local transactions the server has not confirmed yet.
    pub fn pending_writes(&self) -> usize {
        self.shared.local().pending().len()
    }

    /// Notifications about `interest`, one per applied transaction.
    pub fn observe(&self, interest: Interest) -> Observer {
        Observer {
            interest,
            rx: self.shared.notify.subscribe(),
        }
    }

    /// The connection state, as a watch the app can await.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// Why the server last refused the connection, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Moves the connection to a new local UDP socket (the device changed networks);
    /// QUIC migrates it without a new handshake. A no-op while offline. Fails with
    /// [`ClientError::Invalid`] when the socket cannot be used and [`ClientError::Closed`]
    /// when the sync task is gone (or no server is configured).
    pub async fn rebind(&self, socket: std::net::UdpSocket) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Rebind(socket, tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await
            .map_err(|_| ClientError::Closed)?
            .map_err(|e| ClientError::Invalid(e.to_string()))
    }

    /// Fetches rows by key from the server, bypassing the local store (the batch loader
    /// builds on this); the rows found, in the order of `keys`, carry the columns the
    /// caller may read. Fails with [`ClientError::Fetch`] when offline, without a server, on a lost
    /// connection or a refusal, and [`ClientError::Closed`] when the client has stopped.
    pub async fn fetch(
        &self,
        table: &str,
        keys: Vec<Value>,
    ) -> Result<Vec<Vec<Value>>, ClientError> {
        let answer = loader::fetch(&self.shared.loader, &self.commands, table, keys).await?;
        Ok(answer.rows)
    }

    /// Stops syncing. The local store keeps everything, the outbox included.
    pub async fn close(self) {
        self.loader_task.abort();
        drop(self.commands);
        let _ = self.task.await;
    }
}

impl RejectCode {
    /// Whether retrying the same transaction cannot succeed: true for every code except
    /// [`RejectCode::PreconditionFailed`] (the row may change so that it holds) and
    /// [`RejectCode::Unavailable`] (the server could not store it now; a client keeps
    /// such a transaction queued and sends it again by itself).
    pub fn is_permanent(self) -> bool {
        !matches!(
            self,
            RejectCode::PreconditionFailed | RejectCode::Unavailable
        )
    }
}
