//! The sync server: accepts QUIC connections, runs a session per client, commits
//! writes through one writer, fans changes out through the matcher, and compacts the log.
//!
//! Authentication and permissions: [`ServerBuilder::authenticator`] (e.g.
//! [`crate::auth::JwtAuthenticator`]) verifies the token at the handshake and yields the
//! session's [`Claims`]; [`ServerBuilder::rules_file`] loads per-table read/write rules
//! ([`crate::auth::Rules`]) that are bound with those claims and ANDed into every
//! subscription, fetch and write of the session. Without a rules file everything is open.
//! Claims are fixed for a session: a revoked user keeps access until the token expires
//! (the session is closed then) or the backend calls [`ServerHandle::disconnect_user`].
//!
//! The server is the top of the library: it uses every layer below it (store, matcher,
//! query, auth, wire, transport) and nothing may depend on it; in particular it must not
//! depend on [`crate::client`].
//!
//! Embedding:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let server = sluice::server::Server::builder("schema", "app.db")
//!     .listen("127.0.0.1:4433".parse()?)
//!     .no_auth()
//!     .start()
//!     .await?;
//! println!("listening on {}", server.local_addr());
//! server.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```

mod admin;
mod bootstrap;
mod committer;
mod config;
mod metrics;
mod pins;
mod quotas;
mod registry;
mod resize;
mod session;
mod snapshots;
mod upstream;
mod windows;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

pub use crate::auth::{Authenticator, NoAuth};
pub use admin::{AdminConfig, AdminError, ADMIN_HEADER_TIMEOUT, MAX_ADMIN_CONNECTIONS};
pub use bootstrap::MAX_RESUME_ROWS;
pub use committer::{MAX_WRITE_BATCH, WRITE_QUEUE_CAPACITY};
pub use config::{Idempotency, ServerConfig};
pub use pins::PinError;
pub use quotas::{Quotas, UserUsage};
pub use session::SessionInfo;
pub use session::{
    close, scoped_client_id, CONTROL_QUEUE_CAPACITY, FETCH_FRAME_BYTES, HANDSHAKE_TIMEOUT,
    LIVE_BATCH_BYTES, LIVE_BATCH_FRAMES, MAX_ECHO_CHARS, MAX_HELLO_BYTES, REFUSALS_IN_FLIGHT,
    SESSION_QUEUE_CAPACITY, SESSION_QUEUE_ITEMS,
};
pub use upstream::{CATCH_UP_WAIT, CONFIRM_QUEUE, REPLICATION_WAIT};

use crate::auth::{Claims, Rules, RulesError};
use crate::schema::{Schema, SchemaError};
use crate::store::{SqliteStore, Store, StoreError, StoreOptions};
use crate::transport::{self, TlsFiles, TransportError, TransportLimits};
use crate::vocab::{ClientId, SessionId, TxnOutcome, WriteTxn};
use registry::Registry;
use session::SessionHandle;

/// Who is writing, as the write hook sees it.
#[derive(Debug, Clone)]
pub struct WriteContext {
    /// The client that sent the transaction; `None` for the backend's own writes.
    pub client_id: Option<ClientId>,
    /// The verified claims of the client's session; `None` for the backend's own writes.
    pub claims: Option<Arc<Claims>>,
}

/// A backend check run on every transaction before it is committed: `Err(reason)` rejects
/// it with that reason (code `invalid`).
pub type WriteHook = Arc<dyn Fn(&WriteContext, &WriteTxn) -> Result<(), String> + Send + Sync>;

/// How much of the change log to keep. Older entries are compacted away; a client that
/// resumes from before the horizon re-bootstraps.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Keep at least this many most recent transactions. Default 100,000.
    pub keep_last: u64,
    /// Also drop entries older than this, if set. Default: none.
    pub max_age: Option<Duration>,
    /// How often compaction runs. Default 60 s.
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            keep_last: 100_000,
            max_age: None,
            interval: Duration::from_secs(60),
        }
    }
}

/// Errors starting or running a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The schema folder could not be read or a `CREATE TABLE` file is invalid.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The database could not be opened, or a store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The certificate or key could not be loaded or generated, or the socket not bound.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The rules file could not be read or does not fit the schema.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The admin listener could not start.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// PostgreSQL could not be reached, does not fit the schema, or refused replication.
    #[error(transparent)]
    Postgres(#[from] crate::postgres::PgError),
    /// The server stopped (or its blocking task died) before the request was answered.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// State shared by every task of a server.
pub(crate) struct Shared {
    pub schema: Arc<Schema>,
    pub store: Arc<dyn Store>,
    /// std Mutex: held only for short, non-async sections (register, match a change).
    pub registry: Mutex<Registry>,
    /// Window shapes and their state. std Mutex: taken on the writer thread inside a
    /// commit and under the store's writer lock (always after it), never across an await.
    pub windows: Arc<Mutex<windows::Windows>>,
    pub sessions: DashMap<SessionId, Arc<SessionHandle>>,
    /// The latest session of each connected client, to confirm its own transactions.
    pub authors: DashMap<ClientId, SessionId>,
    /// The last sync id whose transaction has been fanned out to every session queue.
    pub delivered: tokio::sync::watch::Sender<crate::ids::SyncId>,
    pub writes: mpsc::Sender<committer::WriteRequest>,
    /// Window resizes for the committer, which runs them between batches.
    pub resizes: mpsc::Sender<resize::ResizeRequest>,
    pub write_hook: Option<WriteHook>,
    pub authenticator: Arc<dyn Authenticator>,
    /// Permission rules; `None`: everything open.
    pub rules: Option<Arc<Rules>>,
    /// The user (`sub`) of each authenticated session, to close a user's sessions.
    pub users: DashMap<SessionId, (Option<String>, quinn::Connection)>,
    /// Set once when the server starts shutting down: sessions stop reading requests and
    /// answer what is in flight, the committer drains its queue and stops.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Every admission limit and quota ([`ServerBuilder::quotas`]).
    pub quotas: Quotas,
    /// What each user holds, for the per-user quotas.
    pub ledger: quotas::Ledger,
    /// Places for bootstraps running at once, across sessions ([`Quotas::bootstraps`]).
    pub bootstraps: Arc<tokio::sync::Semaphore>,
    /// Places for fetches running at once, across sessions ([`Quotas::fetches`]).
    pub fetches: Arc<tokio::sync::Semaphore>,
    /// Counters and histograms ([`ServerHandle::metrics`]).
    pub metrics: Arc<metrics::Metrics>,
    /// The writer thread's queue ([`committer::start_writer`]).
    pub writer: std::sync::mpsc::SyncSender<committer::ApplyJob>,
    /// Snapshots read once for many bootstraps ([`snapshots::SnapshotCache`]).
    pub snapshots: snapshots::SnapshotCache,
    /// PostgreSQL mode ([`ServerBuilder::postgres`]): the source of truth and the stream
    /// that feeds the store, a replica. `None`: the store is the source of truth.
    pub upstream: Option<Arc<upstream::Upstream>>,
}

/// How long [`ServerHandle::shutdown`] waits for sessions to answer their in-flight
/// requests, and then for the committer to drain its queue, before it stops them anyway.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Configures a server; [`ServerBuilder::start`] opens the database and the endpoint.
pub struct ServerBuilder {
    schema_dir: PathBuf,
    db_path: PathBuf,
    listen: SocketAddr,
    tls: Option<TlsFiles>,
    authenticator: Arc<dyn Authenticator>,
    rules_file: Option<PathBuf>,
    write_hook: Option<WriteHook>,
    retention: Retention,
    store_options: StoreOptions,
    transport_limits: TransportLimits,
    quotas: Quotas,
    idempotency: Idempotency,
    admin: Option<AdminConfig>,
    postgres: Option<String>,
}

/// Entry point of the embedding API.
pub struct Server;

impl Server {
    /// A server for the schema in `schema_dir`, storing data in the SQLite file `db_path`.
    pub fn builder(schema_dir: impl Into<PathBuf>, db_path: impl Into<PathBuf>) -> ServerBuilder {
        ServerBuilder {
            schema_dir: schema_dir.into(),
            db_path: db_path.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            authenticator: Arc::new(NoAuth),
            rules_file: None,
            write_hook: None,
            retention: Retention::default(),
            store_options: StoreOptions::default(),
            transport_limits: TransportLimits::default(),
            quotas: Quotas::default(),
            idempotency: Idempotency::default(),
            admin: None,
            postgres: None,
        }
    }
}

impl ServerBuilder {
    /// Address to listen on; port 0 picks a free port. Default `127.0.0.1:0`.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Certificate and key PEM files. Without them a self-signed certificate for
    /// localhost is generated and written next to the database as `FILE.cert.pem`.
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Accept every client without a token.
    pub fn no_auth(mut self) -> Self {
        self.authenticator = Arc::new(NoAuth);
        self
    }

    /// How clients are authenticated at the handshake (e.g.
    /// [`crate::auth::JwtAuthenticator`]). Default: [`NoAuth`], every client accepted.
    pub fn authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = authenticator;
        self
    }

    /// Permission rules (see [`crate::auth::rules`] for the format), validated against
    /// the schema at start. Tables without a rule are then closed. Default: none, every
    /// table open to every client.
    pub fn rules_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.rules_file = Some(path.into());
        self
    }

    /// A check run on every transaction before it commits (see [`WriteHook`]). It runs on
    /// the single writer task, so its cost adds to every commit.
    pub fn write_hook(
        mut self,
        hook: impl Fn(&WriteContext, &WriteTxn) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.write_hook = Some(Arc::new(hook));
        self
    }

    /// How much of the change log to keep. Default: [`Retention::default`].
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// SQLite tuning (durability, caches, busy timeout). Default:
    /// [`StoreOptions::default`].
    pub fn store_options(mut self, options: StoreOptions) -> Self {
        self.store_options = options;
        self
    }

    /// QUIC limits (streams, windows, idle timeout). Default:
    /// [`TransportLimits::default`].
    pub fn transport_limits(mut self, limits: TransportLimits) -> Self {
        self.transport_limits = limits;
        self
    }

    /// Admission limits and quotas: connections, subscriptions, residual shapes, pins,
    /// concurrent fetches and bootstraps, the stall timeout. Default:
    /// [`Quotas::default`] (each field's doc says its default and what it costs).
    pub fn quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// Applies an operator's configuration ([`ServerConfig`], e.g. from
    /// [`ServerConfig::load`]): its quotas replace the builder's.
    pub fn config(self, config: ServerConfig) -> Self {
        self.quotas(config.quotas).idempotency(config.idempotency)
    }

    /// Serves metrics (`/metrics`, Prometheus text format) and the inspector page (`/`)
    /// over HTTP on `config.addr`, never on the QUIC port. Off by default. An address that
    /// is not loopback needs `config.token` ([`AdminError::TokenRequired`] otherwise).
    pub fn admin(mut self, config: AdminConfig) -> Self {
        self.admin = Some(config);
        self
    }

    /// Makes PostgreSQL at `url` the source of truth (several servers may share it): the
    /// builder's SQLite file becomes this server's local replica, filled by an initial
    /// copy (or, when the file holds this database's replica from a previous run, kept
    /// and resynchronised) and fed by logical replication (see [`crate::postgres`]).
    /// Start fails with [`ServerError::Postgres`] when the database cannot be reached,
    /// does not fit the schema, or refuses replication. Costs one replication slot and
    /// three connections per server, and a read of every table at start. TLS is asked
    /// for in the URL (`sslmode=verify-full&sslrootcert=CA.pem`, see
    /// [`crate::postgres::parse_url`]).
    pub fn postgres(mut self, url: impl Into<String>) -> Self {
        self.postgres = Some(url.into());
        self
    }

    /// How long idempotency records are kept. Default: [`Idempotency::default`] (at
    /// least 7 days, at most 1,000,000 records).
    pub fn idempotency(mut self, idempotency: Idempotency) -> Self {
        self.idempotency = idempotency;
        self
    }

    /// How long a bootstrap stream or a fetch answer may make no progress (the client
    /// reads none of it) before it ends, its read transaction is released and the
    /// session is closed as lagging (the client resumes later): sets
    /// [`Quotas::stall_timeout_ms`]. Default 30 s.
    pub fn bootstrap_stall_timeout(mut self, timeout: Duration) -> Self {
        self.quotas.stall_timeout_ms = timeout.as_millis().try_into().unwrap_or(u64::MAX);
        self
    }

    /// Opens the database and starts listening. The returned handle serves until
    /// [`ServerHandle::shutdown`] or [`ServerHandle::run_until`]. Must be called inside a
    /// tokio runtime.
    ///
    /// Fails with [`ServerError::Schema`] when the schema folder cannot be loaded,
    /// [`ServerError::Rules`] when the rules file is unreadable or invalid,
    /// [`ServerError::Store`] when the database cannot be opened (see
    /// [`SqliteStore::open`]), and [`ServerError::Transport`] when the certificate cannot be
    /// loaded or generated or the address cannot be bound.
    pub async fn start(self) -> Result<ServerHandle, ServerError> {
        let schema = Arc::new(Schema::load_dir(&self.schema_dir)?);
        let rules = match &self.rules_file {
            Some(file) => Some(Arc::new(Rules::load(&schema, file)?)),
            None => None,
        };
        let db_path = self.db_path.clone();
        let store_schema = schema.clone();
        let options = self.store_options.clone();
        let (store, upstream): (Arc<SqliteStore>, _) = match &self.postgres {
            None => (
                Arc::new(
                    tokio::task::spawn_blocking(move || {
                        SqliteStore::open(&db_path, store_schema, options)
                    })
                    .await
                    .map_err(|_| ServerError::ShuttingDown)??,
                ),
                None,
            ),
            Some(url) => {
                let opened = upstream::open(url, store_schema, &db_path, options).await?;
                (opened.0.replica.clone(), Some(opened))
            }
        };
        let store_closed = store.close_watch();
        let store: Arc<dyn Store> = store;
        let cert_path = match self.tls {
            Some(_) => None,
            None => Some(PathBuf::from(format!(
                "{}.cert.pem",
                self.db_path.display()
            ))),
        };
        let endpoint = transport::server_endpoint(
            self.listen,
            self.tls.as_ref(),
            cert_path.as_deref(),
            &self.transport_limits,
        )?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: self.listen,
                source,
            })?;
        let admin = match &self.admin {
            Some(config) => Some((admin::bind(config).await?, config.token.clone())),
            None => None,
        };
        let (writes, write_queue) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let (resizes, resize_queue) = mpsc::channel(resize::RESIZE_QUEUE_CAPACITY);
        let (delivered, _) = tokio::sync::watch::channel(store.head());
        let windows = Arc::new(Mutex::new(windows::Windows::new()));
        let writer = committer::start_writer(store.clone(), windows.clone());
        let shared = Arc::new(Shared {
            schema,
            store,
            registry: Mutex::new(Registry::new()),
            windows,
            sessions: DashMap::new(),
            authors: DashMap::new(),
            delivered,
            writes,
            resizes,
            write_hook: self.write_hook,
            authenticator: self.authenticator,
            rules,
            users: DashMap::new(),
            shutdown: tokio::sync::watch::channel(false).0,
            bootstraps: Arc::new(tokio::sync::Semaphore::new(self.quotas.bootstraps)),
            fetches: Arc::new(tokio::sync::Semaphore::new(self.quotas.fetches)),
            quotas: self.quotas,
            ledger: quotas::Ledger::default(),
            metrics: Arc::new(metrics::Metrics::new()),
            writer,
            snapshots: snapshots::SnapshotCache::default(),
            upstream: upstream.as_ref().map(|(u, _, _)| u.clone()),
        });
        if let Some((_, source, pings)) = upstream {
            upstream::start_stream(&shared, source, pings);
        }
        let committer = tokio::spawn(committer::run(shared.clone(), write_queue, resize_queue));
        let (stop_tx, stop_rx) = oneshot::channel();
        let (sessions_tx, sessions_done) = mpsc::channel(1);
        let acceptor = tokio::spawn(accept_loop(
            shared.clone(),
            endpoint.clone(),
            stop_rx,
            sessions_tx,
        ));
        let compactor = tokio::spawn(compact_loop(
            shared.clone(),
            self.retention,
            self.idempotency,
        ));
        let (admin_addr, admin) = match admin {
            Some(((listener, addr), token)) => (
                Some(addr),
                Some(tokio::spawn(admin::serve(shared.clone(), listener, token))),
            ),
            None => (None, None),
        };
        info!(%local_addr, "sluice server listening");
        Ok(ServerHandle {
            admin_addr,
            admin,
            local_addr,
            cert_path,
            shared,
            endpoint,
            stop: Some(stop_tx),
            acceptor: Some(acceptor),
            compactor,
            sessions_done,
            committer: Some(committer),
            store_closed,
        })
    }
}

/// A running server.
pub struct ServerHandle {
    local_addr: SocketAddr,
    /// The admin listener's address and task, when one was asked for.
    admin_addr: Option<SocketAddr>,
    admin: Option<tokio::task::JoinHandle<()>>,
    cert_path: Option<PathBuf>,
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    stop: Option<oneshot::Sender<()>>,
    acceptor: Option<tokio::task::JoinHandle<()>>,
    compactor: tokio::task::JoinHandle<()>,
    /// Every session task holds a sender of this channel: `recv` returns `None` once all
    /// of them (and the acceptor, which hands them out) have ended.
    sessions_done: mpsc::Receiver<()>,
    committer: Option<tokio::task::JoinHandle<()>>,
    /// See [`SqliteStore::close_watch`].
    store_closed: std::sync::Weak<()>,
}

impl ServerHandle {
    /// The address actually bound (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's address (the real port when 0 was asked), if it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The generated self-signed certificate clients should trust, if one was generated.
    pub fn cert_path(&self) -> Option<&Path> {
        self.cert_path.as_deref()
    }

    /// Commits a transaction from the backend itself; it reaches subscribers like any other.
    /// It goes through the write hook but no permission rule. A rejection is an
    /// `Ok(TxnOutcome::Rejected)` (a failure of the store is reported that way too, with
    /// code `invalid`); fails with [`ServerError::ShuttingDown`] when the server stops
    /// before answering.
    pub async fn write(&self, txn: WriteTxn) -> Result<TxnOutcome, ServerError> {
        let (reply, outcome) = oneshot::channel();
        let request = committer::WriteRequest {
            context: WriteContext {
                client_id: None,
                claims: None,
            },
            txn,
            guard: None,
            reply,
        };
        self.shared
            .writes
            .send(request)
            .await
            .map_err(|_| ServerError::ShuttingDown)?;
        outcome.await.map_err(|_| ServerError::ShuttingDown)
    }

    /// Closes every session of user `sub` (for instance after revoking their access;
    /// claims are fixed for a session's lifetime). Returns how many were closed. Costs a
    /// scan of every authenticated session.
    pub fn disconnect_user(&self, sub: &str) -> usize {
        let mut closed = 0;
        for entry in self.shared.users.iter() {
            let (user, connection) = entry.value();
            if user.as_deref() == Some(sub) {
                connection.close(close::REVOKED, b"access revoked");
                closed += 1;
            }
        }
        closed
    }

    /// Connected sessions.
    pub fn session_count(&self) -> usize {
        self.shared.sessions.len()
    }

    /// Bootstraps (snapshots and resumes) running now, across sessions; at most
    /// [`Quotas::bootstraps`], the others wait for a place.
    pub fn bootstraps_running(&self) -> usize {
        self.shared.quotas.bootstraps - self.shared.bootstraps.available_permits()
    }

    /// The server's metrics in Prometheus text format (what the admin listener serves at
    /// `/metrics`). Costs a walk of every session and a short registry lock.
    pub fn metrics(&self) -> String {
        metrics::render(&self.shared)
    }

    /// Every connected session, as the inspector lists them.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.shared
            .sessions
            .iter()
            .map(|s| s.value().info())
            .collect()
    }

    /// The quotas the server runs with.
    pub fn quotas(&self) -> &Quotas {
        &self.shared.quotas
    }

    /// What user `sub` holds now (sessions, subscriptions, residual ones).
    pub fn user_usage(&self, sub: &str) -> UserUsage {
        self.shared.ledger.usage(sub)
    }

    /// Rows kept live by batch-loader pins, over all sessions (a key pinned by several
    /// sessions counts once).
    pub fn pinned_rows(&self) -> usize {
        self.shared
            .registry
            .lock()
            .expect("registry lock")
            .pinned_rows()
    }

    /// Distinct shapes registered in the matcher.
    pub fn shape_count(&self) -> usize {
        self.shared
            .registry
            .lock()
            .expect("registry lock")
            .shape_count()
    }

    /// Compacts the change log up to and including `sync_id` (capped at the head) now;
    /// returns the number of changes deleted. Fails with [`ServerError::Store`] when the
    /// database does, and [`ServerError::ShuttingDown`] when the blocking task dies.
    pub async fn compact(&self, sync_id: crate::ids::SyncId) -> Result<u64, ServerError> {
        let store = self.shared.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.compact(sync_id))
            .await
            .map_err(|_| ServerError::ShuttingDown)??)
    }

    /// Prunes idempotency records now, as the server does after each compaction: forgets
    /// outcomes older than `max_age` and the oldest past `max_records` (see
    /// [`Idempotency`]); returns how many. In PostgreSQL mode it prunes PostgreSQL's
    /// records too (shared by every server) and returns how many of those went. Fails
    /// like [`ServerHandle::compact`], and with [`ServerError::Postgres`].
    pub async fn prune_outcomes(
        &self,
        max_age: Duration,
        max_records: u64,
    ) -> Result<u64, ServerError> {
        let store = self.shared.store.clone();
        let here = tokio::task::spawn_blocking(move || store.prune_outcomes(max_age, max_records))
            .await
            .map_err(|_| ServerError::ShuttingDown)??;
        match &self.shared.upstream {
            Some(upstream) => Ok(upstream.prune_outcomes(max_age, max_records).await?),
            None => Ok(here),
        }
    }

    /// Serves until `shutdown` completes, then shuts down.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.shutdown().await;
    }

    /// Shuts down and drains: stops accepting connections; every session stops reading
    /// requests, waits for the answers to the writes it already queued (committed or
    /// rejected, never dropped) and sends them; the committer commits what is queued and
    /// stops; then every connection is closed with the `SHUTDOWN` code, and the store is
    /// closed once the last task using it (a read still running, say) lets go of it, so
    /// that the database files are closed when this returns (a copy taken then is whole).
    /// Each wait is bounded by [`SHUTDOWN_DRAIN`]: a peer that does not read cannot hold
    /// the shutdown.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.await;
        }
        self.compactor.abort();
        if let Some(admin) = self.admin.take() {
            admin.abort();
        }
        self.shared.shutdown.send_replace(true);
        if tokio::time::timeout(SHUTDOWN_DRAIN, self.sessions_done.recv())
            .await
            .is_err()
        {
            warn!("sessions did not drain in time; closing them");
        }
        if let Some(committer) = self.committer.take() {
            let abort = committer.abort_handle();
            if tokio::time::timeout(SHUTDOWN_DRAIN, committer)
                .await
                .is_err()
            {
                warn!("the committer did not drain in time; stopping it");
                abort.abort();
            }
        }
        if let Some(upstream) = &self.shared.upstream {
            upstream.stop();
        }
        self.endpoint
            .close(close::SHUTDOWN, b"server shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.shared.sessions.clear();
        let store_closed = self.store_closed.clone();
        drop(self);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DRAIN;
        while store_closed.strong_count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                warn!("the store is still in use; leaving it to close when released");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        info!("sluice server stopped");
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    mut stop: oneshot::Receiver<()>,
    sessions: mpsc::Sender<()>,
) {
    let next_id = AtomicU64::new(1);
    // One permit per connection served ([`Quotas::connections`]). Past the bound a
    // connection is told why (`quota_exceeded: connections`) by a short refusal task;
    // past [`REFUSALS_IN_FLIGHT`] of those it is refused at the QUIC level.
    let places = Arc::new(tokio::sync::Semaphore::new(shared.quotas.connections));
    let refusals = Arc::new(tokio::sync::Semaphore::new(REFUSALS_IN_FLIGHT));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let id = SessionId(next_id.fetch_add(1, Ordering::Relaxed));
                let alive = sessions.clone();
                let shared = shared.clone();
                match places.clone().try_acquire_owned() {
                    Ok(place) => {
                        tokio::spawn(async move {
                            session::serve(shared, id, incoming, None).await;
                            drop((alive, place));
                        });
                    }
                    Err(_) => match refusals.clone().try_acquire_owned() {
                        Ok(refusal) => {
                            let full = crate::vocab::QuotaExceeded::new(
                                crate::vocab::Quota::Connections,
                                shared.quotas.connections,
                            );
                            tokio::spawn(async move {
                                session::serve(shared, id, incoming, Some(full)).await;
                                drop((alive, refusal));
                            });
                        }
                        Err(_) => incoming.refuse(),
                    },
                }
            }
        }
    }
}

async fn compact_loop(shared: Arc<Shared>, retention: Retention, idempotency: Idempotency) {
    let mut ticker = tokio::time::interval(retention.interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let store = shared.store.clone();
        let (keep, age) = (retention.keep_last, retention.max_age);
        match tokio::task::spawn_blocking(move || store.compact_retain(keep, age)).await {
            Ok(Ok(n)) if n > 0 => info!(removed = n, "change log compacted"),
            Ok(Err(e)) => warn!(error = %e, "compaction failed"),
            _ => {}
        }
        let store = shared.store.clone();
        let (age, records) = (idempotency.max_age(), idempotency.max_records);
        match tokio::task::spawn_blocking(move || store.prune_outcomes(age, records)).await {
            Ok(Ok(n)) if n > 0 => info!(forgotten = n, "idempotency records pruned"),
            Ok(Err(e)) => warn!(error = %e, "pruning idempotency records failed"),
            _ => {}
        }
        if let Some(upstream) = &shared.upstream {
            match upstream.prune_outcomes(age, records).await {
                Ok(n) if n > 0 => info!(forgotten = n, "PostgreSQL's idempotency records pruned"),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "pruning PostgreSQL's idempotency records failed"),
            }
        }
    }
}
