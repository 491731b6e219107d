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

mod bootstrap;
mod committer;
mod pins;
mod registry;
mod session;

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
pub use committer::{MAX_WRITE_BATCH, WRITE_QUEUE_CAPACITY};
pub use pins::{PinError, MAX_PINS_PER_SESSION};
pub use session::{
    close, CONTROL_QUEUE_CAPACITY, FETCH_FRAME_BYTES, HANDSHAKE_TIMEOUT, LIVE_BATCH_BYTES,
    LIVE_BATCH_FRAMES, MAX_FETCH_KEYS, MAX_SUBSCRIPTIONS_PER_SESSION, SESSION_QUEUE_CAPACITY,
};

use crate::auth::{Claims, Rules, RulesError};
use crate::ids::ClientId;
use crate::schema::{Schema, SchemaError};
use crate::store::{SqliteStore, Store, StoreError, StoreOptions, TxnOutcome, WriteTxn};
use crate::transport::{self, TlsFiles, TransportError, TransportLimits};
use registry::{Registry, SessionId};
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
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// State shared by every task of a server.
pub(crate) struct Shared {
    pub schema: Arc<Schema>,
    pub store: Arc<dyn Store>,
    /// std Mutex: held only for short, non-async sections (register, match a change).
    pub registry: Mutex<Registry>,
    pub sessions: DashMap<SessionId, Arc<SessionHandle>>,
    /// The latest session of each connected client, to confirm its own transactions.
    pub authors: DashMap<ClientId, SessionId>,
    /// The last sync id whose transaction has been fanned out to every session queue.
    pub delivered: tokio::sync::watch::Sender<crate::ids::SyncId>,
    pub writes: mpsc::Sender<committer::WriteRequest>,
    pub write_hook: Option<WriteHook>,
    pub authenticator: Arc<dyn Authenticator>,
    /// Permission rules; `None`: everything open.
    pub rules: Option<Arc<Rules>>,
    /// The user (`sub`) of each authenticated session, to close a user's sessions.
    pub users: DashMap<SessionId, (Option<String>, quinn::Connection)>,
}

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

    /// A check run on every transaction before it commits.
    pub fn write_hook(
        mut self,
        hook: impl Fn(&WriteContext, &WriteTxn) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.write_hook = Some(Arc::new(hook));
        self
    }

    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    pub fn store_options(mut self, options: StoreOptions) -> Self {
        self.store_options = options;
        self
    }

    pub fn transport_limits(mut self, limits: TransportLimits) -> Self {
        self.transport_limits = limits;
        self
    }

    /// Opens the database and starts listening. The returned handle serves until
    /// [`ServerHandle::shutdown`] or [`ServerHandle::run_until`].
    pub async fn start(self) -> Result<ServerHandle, ServerError> {
        let schema = Arc::new(Schema::load_dir(&self.schema_dir)?);
        let rules = match &self.rules_file {
            Some(file) => Some(Arc::new(Rules::load(&schema, file)?)),
            None => None,
        };
        let db_path = self.db_path.clone();
        let store_schema = schema.clone();
        let options = self.store_options.clone();
        let store: Arc<dyn Store> = Arc::new(
            tokio::task::spawn_blocking(move || SqliteStore::open(&db_path, store_schema, options))
                .await
                .map_err(|_| ServerError::ShuttingDown)??,
        );
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
        let (writes, write_queue) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let (delivered, _) = tokio::sync::watch::channel(store.head());
        let shared = Arc::new(Shared {
            schema,
            store,
            registry: Mutex::new(Registry::new()),
            sessions: DashMap::new(),
            authors: DashMap::new(),
            delivered,
            writes,
            write_hook: self.write_hook,
            authenticator: self.authenticator,
            rules,
            users: DashMap::new(),
        });
        let committer = tokio::spawn(committer::run(shared.clone(), write_queue));
        let (stop_tx, stop_rx) = oneshot::channel();
        let acceptor = tokio::spawn(accept_loop(shared.clone(), endpoint.clone(), stop_rx));
        let compactor = tokio::spawn(compact_loop(shared.clone(), self.retention));
        info!(%local_addr, "sluice server listening");
        Ok(ServerHandle {
            local_addr,
            cert_path,
            shared,
            endpoint,
            stop: Some(stop_tx),
            tasks: vec![acceptor, compactor],
            committer: Some(committer),
        })
    }
}

/// A running server.
pub struct ServerHandle {
    local_addr: SocketAddr,
    cert_path: Option<PathBuf>,
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    stop: Option<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    committer: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    /// The address actually bound (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The generated self-signed certificate clients should trust, if one was generated.
    pub fn cert_path(&self) -> Option<&Path> {
        self.cert_path.as_deref()
    }

    /// Commits a transaction from the backend itself; it reaches subscribers like any other.
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
    /// claims are fixed for a session's lifetime). Returns how many were closed.
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

    /// Distinct shapes registered in the matcher.
    pub fn shape_count(&self) -> usize {
        self.shared
            .registry
            .lock()
            .expect("registry lock")
            .shape_count()
    }

    /// Compacts the change log up to and including `sync_id` now.
    pub async fn compact(&self, sync_id: crate::ids::SyncId) -> Result<u64, ServerError> {
        let store = self.shared.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.compact(sync_id))
            .await
            .map_err(|_| ServerError::ShuttingDown)??)
    }

    /// Serves until `shutdown` completes, then shuts down.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.shutdown().await;
    }

    /// Stops accepting, closes every connection, and waits for pending commits.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.endpoint
            .close(close::SHUTDOWN, b"server shutting down");
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.shared.sessions.clear();
        if let Some(committer) = self.committer.take() {
            committer.abort();
        }
        info!("sluice server stopped");
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    mut stop: oneshot::Receiver<()>,
) {
    let next_id = AtomicU64::new(1);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(session::serve(shared.clone(), id, incoming));
            }
        }
    }
}

async fn compact_loop(shared: Arc<Shared>, retention: Retention) {
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
    }
}
