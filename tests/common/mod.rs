//! Helpers shared by the integration tests: a server on 127.0.0.1:0 over the example
//! schema in a temporary folder, and protocol clients that collect what they receive.
//!
//! Submodules hold the helpers of one kind of test: `auth` (a server with tokens and the
//! example rules), `permissions` (the users and data of the permission tests), `client`
//! (the client library against a server), `cli` (the `sluice` binary as a subprocess),
//! `http` (a small HTTP client for the admin listener) and `store` (the store on a small
//! schema of its own).

#![allow(dead_code)]

pub mod auth;
pub mod cli;
pub mod client;
pub mod http;
pub mod permissions;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::net::SocketAddr;

use sluice::client::{ConnectOptions, Connection, ConnectionError, Event};
use sluice::ids::{ClientId, SyncId};
use sluice::query::Params;
use sluice::server::{Quotas, Server, ServerHandle};
use sluice::store::{Mutation, SqliteStore, StoreOptions, TxnOutcome, WriteTxn};
use sluice::value::Value;
use sluice::wire::{BootstrapFrame, ClientMessage, RowEvent, ServerMessage, SubId, WriteOutcome};

/// The test's own tracing, filtered by `RUST_LOG` (errors only without it), in the
/// test's captured output (for chasing a failure: with `SLUICE_TEST_SERVER_LOG` too, a
/// `sluice serve` child's log is kept beside it).
pub fn trace_from_env() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Generous bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema")
}

/// A server on the example schema in PostgreSQL mode (`url`), its replica at `replica`,
/// on a free loopback port, without authentication.
pub async fn start_pg_server(replica: &Path, url: &str) -> ServerHandle {
    pg_server(replica, url).start().await.unwrap()
}

/// A server without authentication on 127.0.0.1:0 with PostgreSQL at `url` as its
/// source of truth and `replica` as its local copy, not started yet.
pub fn pg_server(replica: &Path, url: &str) -> sluice::server::ServerBuilder {
    Server::builder(schema_dir(), replica)
        .listen("127.0.0.1:0".parse().unwrap())
        .no_auth()
        .postgres(url)
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub handle: ServerHandle,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with_quotas(Quotas::default()).await
    }

    /// A server with these quotas.
    pub async fn with_quotas(quotas: Quotas) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let handle = start_with(dir.path(), quotas).await;
        TestServer { dir, handle }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("app.db")
    }

    pub fn ca(&self) -> PathBuf {
        self.handle.cert_path().unwrap().to_path_buf()
    }

    pub async fn client(&self, id: &str) -> Client {
        Client::connect(&self.handle, &self.ca(), id).await
    }

    /// A backend write; panics unless committed.
    pub async fn write(&self, mutations: Vec<Mutation>) -> SyncId {
        write_committed(&self.handle, mutations).await
    }
}

/// One backend transaction (no client origin, no preconditions) and its outcome.
pub async fn backend_write(server: &ServerHandle, mutations: Vec<Mutation>) -> TxnOutcome {
    let txn = WriteTxn {
        origin: None,
        mutations,
        preconditions: Vec::new(),
    };
    server.write(txn).await.unwrap()
}

/// A backend write; panics unless committed.
pub async fn write_committed(server: &ServerHandle, mutations: Vec<Mutation>) -> SyncId {
    match backend_write(server, mutations).await {
        TxnOutcome::Committed { sync_id, .. } => sync_id,
        other => panic!("backend write failed: {other:?}"),
    }
}

/// The server's database opened directly as a store over the example schema.
pub fn open_server_store(db: &Path) -> SqliteStore {
    let schema = sluice::Schema::load_dir(&schema_dir()).unwrap();
    SqliteStore::open(db, std::sync::Arc::new(schema), StoreOptions::default()).unwrap()
}

pub async fn start_on(dir: &Path) -> ServerHandle {
    start_with(dir, Quotas::default()).await
}

/// A server without authentication in `dir`, with these quotas.
pub async fn start_with(dir: &Path, quotas: Quotas) -> ServerHandle {
    Server::builder(schema_dir(), dir.join("app.db"))
        .listen("127.0.0.1:0".parse().unwrap())
        .no_auth()
        .store_options(StoreOptions::default())
        .quotas(quotas)
        .start()
        .await
        .unwrap()
}

pub fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

pub fn insert_issue(id: &str, team: &str, status: &str, priority: i64) -> Mutation {
    Mutation::Insert {
        table: "issues".into(),
        values: vec![
            ("id".into(), text(id)),
            ("team_id".into(), text(team)),
            ("number".into(), Value::Integer(1)),
            ("title".into(), text(&format!("issue {id}"))),
            ("status".into(), text(status)),
            ("priority".into(), Value::Integer(priority)),
        ],
    }
}

pub fn set_issue(id: &str, column: &str, value: Value) -> Mutation {
    Mutation::Update {
        table: "issues".into(),
        key: text(id),
        set: vec![(column.into(), value)],
    }
}

pub fn delete_issue(id: &str) -> Mutation {
    Mutation::Delete {
        table: "issues".into(),
        key: text(id),
    }
}

/// The state one subscription has reached on the client side.
#[derive(Debug, Default, Clone)]
pub struct SubState {
    pub rows: BTreeMap<String, Vec<Value>>,
    pub end: Option<SyncId>,
    /// Live transactions that arrived before `end`, applied when it arrives.
    pub early: Vec<(SyncId, RowEvent)>,
    pub inserts_seen: BTreeMap<String, usize>,
    pub failed: Option<String>,
    /// The quota that refused the subscription, if one did.
    pub quota: Option<sluice::wire::QuotaExceeded>,
    pub resume_refused: bool,
    pub last_sync: SyncId,
    /// Where the live stream said the subscription joins the view.
    pub joined: Option<SyncId>,
    /// Rows that left because a window moved past them (reason `window`).
    pub window_moves: usize,
    /// Resizes received: the sync id and the number of rows that moved.
    pub resized: Vec<(SyncId, usize)>,
}

impl SubState {
    fn apply(&mut self, sync_id: SyncId, event: &RowEvent) {
        let key = key_string(event.key());
        match event {
            RowEvent::Insert { row, .. } => {
                *self.inserts_seen.entry(key.clone()).or_default() += 1;
                self.rows.insert(key, row.clone());
            }
            RowEvent::Update { row, .. } => {
                self.rows.insert(key, row.clone());
            }
            RowEvent::Delete { reason, .. } => {
                if *reason == sluice::wire::MoveOut::Window {
                    self.window_moves += 1;
                }
                self.rows.remove(&key);
            }
        }
        self.last_sync = self.last_sync.max(sync_id);
    }
}

pub fn key_string(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A protocol client that applies what it receives to per-subscription states.
pub struct Client {
    pub conn: Connection,
    pub subs: BTreeMap<SubId, SubState>,
    pub writes: BTreeMap<u64, WriteOutcome>,
    pub live_origins: Vec<(SyncId, Option<(ClientId, u64)>)>,
    pub closed: Option<String>,
    pub last_sync: SyncId,
}

impl Client {
    pub async fn connect(server: &ServerHandle, ca: &Path, id: &str) -> Client {
        Client::connect_with(server.local_addr(), ca, id, None)
            .await
            .unwrap()
    }

    /// Connects as `id`, presenting `token` if given; the handshake's refusal is returned.
    pub async fn connect_with(
        addr: SocketAddr,
        ca: &Path,
        id: &str,
        token: Option<String>,
    ) -> Result<Client, ConnectionError> {
        let conn = Connection::connect(ConnectOptions {
            addr,
            ca,
            server_name: "localhost",
            client_id: ClientId(id.to_string()),
            token,
            schema_version: None,
        })
        .await?;
        Ok(Client {
            conn,
            subs: BTreeMap::new(),
            writes: BTreeMap::new(),
            live_origins: Vec::new(),
            closed: None,
            last_sync: SyncId::ZERO,
        })
    }

    pub async fn subscribe(
        &mut self,
        sub: impl Into<SubId>,
        sql: &str,
        resume_after: Option<SyncId>,
    ) {
        let sub = sub.into();
        self.subs.insert(sub, SubState::default());
        self.conn
            .send(ClientMessage::Subscribe {
                sub,
                sql: sql.to_string(),
                params: Params::new(),
                resume_after,
                resume_shape: None,
            })
            .await
            .unwrap();
    }

    pub async fn write(&mut self, seq: u64, mutations: Vec<Mutation>) {
        self.conn
            .send(ClientMessage::Write {
                seq,
                mutations,
                preconditions: Vec::new(),
            })
            .await
            .unwrap();
    }

    /// Handles one event; false when the connection is gone.
    pub async fn step(&mut self) -> bool {
        let Some(event) = self.conn.next_event().await else {
            return false;
        };
        self.handle(event);
        true
    }

    pub fn handle(&mut self, event: Event) {
        match event {
            Event::Control(ServerMessage::WriteResult { seq, outcome }) => {
                self.writes.insert(seq, outcome);
            }
            Event::Control(ServerMessage::SubscribeFailed { sub, message }) => {
                self.subs.entry(sub).or_default().failed = Some(message);
            }
            Event::Control(ServerMessage::QuotaExceeded {
                request: sluice::wire::QuotaRequest::Subscribe { sub },
                exceeded,
            }) => {
                self.subs.entry(sub).or_default().quota = Some(exceeded);
            }
            Event::Control(ServerMessage::ResumeRefused { sub, .. }) => {
                self.subs.entry(sub).or_default().resume_refused = true;
            }
            Event::Control(_) => {}
            Event::Bootstrap(sub, frame) => {
                let state = self.subs.entry(sub).or_default();
                match frame {
                    BootstrapFrame::Row { key, row } => {
                        let k = key_string(&key);
                        *state.inserts_seen.entry(k.clone()).or_default() += 1;
                        state.rows.insert(k, row);
                    }
                    BootstrapFrame::Replay { sync_id, event } => state.apply(sync_id, &event),
                    BootstrapFrame::End { sync_id } => {
                        state.end = Some(sync_id);
                        state.last_sync = state.last_sync.max(sync_id);
                        for (s, event) in std::mem::take(&mut state.early) {
                            if s > sync_id {
                                state.apply(s, &event);
                            }
                        }
                    }
                    _ => {}
                }
            }
            Event::Live(txn) => {
                self.last_sync = self.last_sync.max(txn.sync_id);
                self.live_origins.push((txn.sync_id, txn.origin.clone()));
                for (sub, _, event) in txn.events {
                    let state = self.subs.entry(sub).or_default();
                    match state.end {
                        None => state.early.push((txn.sync_id, event)),
                        Some(w) if txn.sync_id > w => state.apply(txn.sync_id, &event),
                        Some(_) => {}
                    }
                }
            }
            Event::Resized {
                sub,
                sync_id,
                events,
            } => {
                let state = self.subs.entry(sub).or_default();
                for (_, event) in &events {
                    state.apply(sync_id, event);
                }
                state.resized.push((sync_id, events.len()));
            }
            Event::Joined { sub, sync_id } => {
                self.subs.entry(sub).or_default().joined = Some(sync_id);
            }
            Event::Closed(reason) => self.closed = Some(reason),
        }
    }

    /// Processes events until `done` holds (panics after [`WAIT`]).
    pub async fn until(&mut self, what: &str, done: impl Fn(&Client) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(self) {
            match tokio::time::timeout_at(deadline, self.conn.next_event()).await {
                Ok(Some(event)) => self.handle(event),
                Ok(None) => panic!("connection ended while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Processes events until subscription `sub` has both its snapshot's end and its
    /// seam (they come on different streams, in either order).
    pub async fn until_joined(&mut self, sub: impl Into<SubId>) {
        let sub = sub.into();
        self.until("the snapshot's end and the seam", |c| {
            c.subs
                .get(&sub)
                .is_some_and(|s| s.end.is_some() && s.joined.is_some())
        })
        .await;
    }

    pub fn sub(&self, sub: impl Into<SubId>) -> &SubState {
        &self.subs[&sub.into()]
    }
}

/// What a subscription should hold: the shape evaluated over the server database.
pub fn expected_rows(db: &Path, sql: &str) -> BTreeMap<String, Vec<Value>> {
    let store = open_server_store(db);
    let shape = sluice::query::compile(store.schema(), sql, &Params::new()).unwrap();
    let mut rows = BTreeMap::new();
    use sluice::store::Store;
    store
        .snapshot(&shape, &mut |row| {
            rows.insert(key_string(&row[shape.table().pk]), shape.project(&row));
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    rows
}

/// Sends a fetch and returns its answer (`Fetched` or `FetchFailed`), handling
/// whatever else arrives meanwhile.
pub async fn fetch(
    client: &mut Client,
    request: u64,
    table: &str,
    keys: Vec<Value>,
) -> ServerMessage {
    client
        .conn
        .send(ClientMessage::Fetch {
            request,
            table: table.into(),
            keys,
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, client.conn.next_event())
            .await
            .expect("fetch answer in time")
            .expect("connection open");
        match event {
            Event::Control(m @ ServerMessage::Fetched { request: r, .. })
            | Event::Control(m @ ServerMessage::FetchFailed { request: r, .. })
                if r == request =>
            {
                return m
            }
            other => client.handle(other),
        }
    }
}
