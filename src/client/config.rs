//! How a client is opened: its local file, its server, where its tokens come from, its
//! schema, reconnection delays and batch-loader settings. Plain configuration: no IO.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::backoff::Backoff;
use super::loader::LoaderConfig;
use crate::schema::Schema;

/// Where the server is.
#[derive(Debug, Clone)]
pub struct ServerAddress {
    /// The server's UDP address.
    pub addr: SocketAddr,
    /// PEM file of the certificate authority to trust.
    pub ca: PathBuf,
    /// Name the server's certificate must carry. Default "localhost".
    pub server_name: String,
}

impl ServerAddress {
    /// The server at `addr`, trusted through the CA file `ca`, with server name
    /// `localhost`.
    pub fn new(addr: SocketAddr, ca: impl Into<PathBuf>) -> ServerAddress {
        ServerAddress {
            addr,
            ca: ca.into(),
            server_name: "localhost".into(),
        }
    }
}

/// Where a client's tokens come from: called before each connection
/// ([`ClientConfig::token_provider`]).
#[derive(Clone)]
pub struct TokenSource(Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl TokenSource {
    /// A source that calls `provider` for each connection.
    pub fn new(provider: impl Fn() -> Option<String> + Send + Sync + 'static) -> TokenSource {
        TokenSource(Arc::new(provider))
    }

    /// The token to present now.
    pub fn current(&self) -> Option<String> {
        (self.0)()
    }
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSource(..)")
    }
}

/// How to open a client. Only the database path is required.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The local SQLite file (created if missing).
    pub db_path: PathBuf,
    /// The server to sync with; `None` works purely locally.
    pub server: Option<ServerAddress>,
    /// Where the token presented at each handshake comes from.
    pub token: Option<TokenSource>,
    /// The app's schema; without it the schema is learnt from the server (and kept).
    pub schema: Option<Schema>,
    /// Reconnection delays. Default: [`Backoff::default`].
    pub backoff: Backoff,
    /// The batch loader: batch window, pin bound and TTL.
    pub loader: LoaderConfig,
    /// How long the client stays offline, its view kept, while a server of its own
    /// database announces a head behind the local cut (a PostgreSQL-mode server still
    /// catching up or resynchronising) before it takes that database as restored from
    /// an older backup and starts over. Meanwhile it reconnects with its backoff. Default
    /// [`BEHIND_SERVER_WAIT`].
    pub behind_server_wait: Duration,
}

/// The default [`ClientConfig::behind_server_wait`]: long enough for a PostgreSQL-mode
/// server to resynchronise (its retries back off to 5 s), short enough that a restored
/// database is adopted soon.
pub const BEHIND_SERVER_WAIT: Duration = Duration::from_secs(30);

impl ClientConfig {
    /// A purely local client on the SQLite file `db_path`, with default settings.
    pub fn new(db_path: impl Into<PathBuf>) -> ClientConfig {
        ClientConfig {
            db_path: db_path.into(),
            server: None,
            token: None,
            schema: None,
            backoff: Backoff::default(),
            loader: LoaderConfig::default(),
            behind_server_wait: BEHIND_SERVER_WAIT,
        }
    }

    /// Syncs with this server.
    pub fn server(mut self, server: ServerAddress) -> Self {
        self.server = Some(server);
        self
    }

    /// Presents this token at every handshake.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.token = Some(TokenSource::new(move || Some(token.clone())));
        self
    }

    /// Asks `provider` for the token before each connection and reconnection, so an app
    /// can refresh a token that expired (the server closes a session when its token
    /// expires; the client then reconnects with whatever the provider returns). It runs on
    /// the sync task: it must return quickly (hand back a token refreshed elsewhere), and
    /// `None` connects without a token.
    pub fn token_provider(
        mut self,
        provider: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.token = Some(TokenSource::new(provider));
        self
    }

    /// Starts from the app's schema, so local reads and validation work before the first
    /// connection; the server's schema is still adopted on every connection.
    pub fn schema(mut self, schema: Schema) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Sets the reconnection delays.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets how long to wait for a server behind the local cut
    /// ([`ClientConfig::behind_server_wait`]).
    pub fn behind_server_wait(mut self, wait: Duration) -> Self {
        self.behind_server_wait = wait;
        self
    }

    /// Sets how the batch loader batches, bounds and expires.
    pub fn loader(mut self, loader: LoaderConfig) -> Self {
        self.loader = loader;
        self
    }
}
