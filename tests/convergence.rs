//! Convergence torture test: a seeded random schedule of clients with overlapping
//! subscriptions writing (conflicting and rejected transactions included), going offline,
//! crashing with a pending outbox and restarting, while the server process is killed with
//! SIGKILL, restarted, and its log compacted so resumes are refused and re-bootstrap.
//! Some subscriptions are windows (`ORDER BY ... LIMIT n`), resized now and then.
//!
//! In flight, after every step: each online client without a window subscription that
//! is not staging and has nothing pending shows exactly the server's rows at its cut (the
//! server's rows now with every logged change after the cut undone), for its
//! subscriptions: never half of a server transaction, never a row without its columns.
//!
//! After quiescence: every client holds exactly what SQLite returns on the server database
//! for its subscriptions; every transaction a client ever queued reached the server once
//! (its recorded outcome is there, and a resend changes nothing); committed transactions
//! account for every sync id.
//!
//! `SLUICE_TORTURE_STEPS` sets the schedule length (default 160), `SLUICE_TORTURE_SEED`
//! the seed(s) (comma-separated; default a fixed list).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use common::text;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::client::{Backoff, Client, ClientConfig, PendingWrite, ServerAddress};
use sluice::query::Params;
use sluice::store::{Store, TxnOutcome, WriteTxn};
use sluice::value::Value;
use sluice::wire::SubId;

const TEAMS: [&str; 3] = ["T1", "T2", "T3"];
const STATUSES: [&str; 3] = ["todo", "doing", "done"];
const SUBSCRIPTIONS: [&str; 8] = [
    "SELECT * FROM issues WHERE team_id = 'T1'",
    "SELECT * FROM issues WHERE team_id = 'T2' AND status != 'done'",
    "SELECT * FROM issues WHERE priority >= 3",
    "SELECT * FROM issues WHERE team_id IN ('T2', 'T3') OR priority = 0",
    "SELECT * FROM issues WHERE status = 'doing'",
    "SELECT * FROM issues",
    "SELECT * FROM issues WHERE team_id = 'T1' ORDER BY priority DESC LIMIT 3",
    "SELECT * FROM issues ORDER BY status ASC, priority DESC LIMIT 4",
];

struct ServerProcess {
    child: Option<Child>,
    dir: PathBuf,
    addr: SocketAddr,
}

impl ServerProcess {
    fn db(&self) -> PathBuf {
        self.dir.join("server.db")
    }

    fn ca(&self) -> PathBuf {
        common::cli::ca_of(&self.db())
    }

    fn spawn(dir: &Path, listen: &str) -> (Child, SocketAddr) {
        let (child, addr) =
            common::cli::spawn_serve(&dir.join("server.db"), listen, &["--no-auth"]);
        (child, addr.parse().unwrap())
    }

    fn start(dir: &Path) -> ServerProcess {
        let (child, addr) = ServerProcess::spawn(dir, "127.0.0.1:0");
        ServerProcess {
            child: Some(child),
            dir: dir.to_path_buf(),
            addr,
        }
    }

    /// SIGKILL: no shutdown code runs.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            let (mut child, addr) = ServerProcess::spawn(&self.dir, &self.addr.to_string());
            if addr == self.addr {
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not restart the server on {}", self.addr);
    }

    /// Compacts the log while the server is down (keeps only the newest `keep` sync ids).
    fn compact_offline(&mut self, keep: u64) {
        self.kill();
        let store = common::open_server_store(&self.db());
        let head = store.head().0;
        store
            .compact(sluice::ids::SyncId(head.saturating_sub(keep)))
            .unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Peer {
    name: String,
    db: PathBuf,
    client: Option<Client>,
    /// Each subscription's text (a window's changes when it is resized) and id.
    subs: Vec<(String, SubId)>,
    writes: Vec<PendingWrite>,
}

async fn open_client(db: &Path, server: &ServerProcess) -> Client {
    let backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(150),
        jitter: 0.3,
    };
    let address = ServerAddress::new(server.addr, server.ca());
    Client::open(ClientConfig::new(db).server(address).backoff(backoff))
        .await
        .unwrap()
}

fn random_write(
    rng: &mut StdRng,
    client: &Client,
    next_id: &mut u64,
    trace: &mut Vec<String>,
    name: &str,
) -> PendingWrite {
    let known: Vec<String> = client
        .query("SELECT id FROM issues", &[])
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| {
            if let Value::Text(s) = &r[0] {
                Some(s.clone())
            } else {
                None
            }
        })
        .collect();
    let roll = rng.gen_range(0..10);
    let tx = client.transaction();
    let (tx, what) = if known.is_empty() || roll < 4 {
        *next_id += 1;
        let id = format!("i{next_id}");
        let team = TEAMS[rng.gen_range(0..3)];
        let tx = tx.insert(
            "issues",
            vec![
                ("id", text(&id)),
                ("team_id", text(team)),
                ("number", Value::Integer(*next_id as i64)),
                ("title", text("t")),
                ("status", text(STATUSES[rng.gen_range(0..3)])),
                ("priority", Value::Integer(rng.gen_range(0..5))),
            ],
        );
        (tx, format!("insert {id} {team}"))
    } else {
        let id = known[rng.gen_range(0..known.len())].clone();
        match roll {
            4..=7 => {
                let (col, v) = match rng.gen_range(0..3) {
                    0 => ("status", text(STATUSES[rng.gen_range(0..3)])),
                    1 => ("priority", Value::Integer(rng.gen_range(0..5))),
                    _ => ("team_id", text(TEAMS[rng.gen_range(0..3)])),
                };
                let what = format!("update {id} {col}={v}");
                (tx.update("issues", text(&id), vec![(col, v)]), what)
            }
            8 => {
                // A precondition that usually fails: rejected, rolled back.
                let what = format!("update {id} expecting priority 99");
                let tx = tx
                    .update("issues", text(&id), vec![("title", text("x"))])
                    .expect("issues", text(&id), "priority", Value::Integer(99));
                (tx, what)
            }
            _ => (tx.delete("issues", text(&id)), format!("delete {id}")),
        }
    };
    // One write in three carries more: new issues and an update of another issue, so
    // server transactions bring several events to one client at once (a client that
    // applied only part of a transaction shows in the in-flight check).
    let (mut tx, mut what) = (tx, what);
    if rng.gen_range(0..3) == 0 {
        for _ in 0..rng.gen_range(1..=2) {
            *next_id += 1;
            let id = format!("i{next_id}");
            let team = TEAMS[rng.gen_range(0..3)];
            tx = tx.insert(
                "issues",
                vec![
                    ("id", text(&id)),
                    ("team_id", text(team)),
                    ("number", Value::Integer(*next_id as i64)),
                    ("title", text("t")),
                    ("status", text(STATUSES[rng.gen_range(0..3)])),
                    ("priority", Value::Integer(rng.gen_range(0..5))),
                ],
            );
            what.push_str(&format!(", insert {id} {team}"));
        }
        let first = what
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let start = if known.is_empty() {
            0
        } else {
            rng.gen_range(0..known.len())
        };
        let mut others = known[start..].iter().chain(&known[..start]);
        if let Some(other) = others.find(|k| **k != first) {
            let status = text(STATUSES[rng.gen_range(0..3)]);
            what.push_str(&format!(", update {other} status={status}"));
            tx = tx.update("issues", text(other), vec![("status", status)]);
        }
    }
    trace.push(format!("{name}: {what}"));
    tx.commit().unwrap()
}

/// A column value as SQLite returned it.
fn value_of(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// The server's `issues` rows at sync id `at`, read from its database (the server may be
/// running): today's rows with every logged change after `at` undone, newest first, all
/// in one read transaction. `None` when the log no longer reaches back to `at`.
fn server_issues_at(db: &Path, at: u64) -> Option<BTreeMap<String, Vec<Value>>> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let conn = rusqlite::Connection::open_with_flags(db, flags).ok()?;
    conn.busy_timeout(Duration::from_secs(5)).ok()?;
    conn.execute_batch("BEGIN").ok()?;
    let (head, horizon): (i64, i64) = conn
        .query_row("SELECT head, horizon FROM _sluice_meta", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .ok()?;
    if (at as i64) < horizon || (at as i64) > head {
        return None;
    }
    let mut rows = BTreeMap::new();
    let mut stmt = conn.prepare("SELECT * FROM issues").ok()?;
    let width = stmt.column_count();
    let mut all = stmt.query([]).ok()?;
    while let Some(r) = all.next().ok()? {
        let row: Vec<Value> = (0..width)
            .map(|i| value_of(r.get_ref(i).unwrap()))
            .collect();
        rows.insert(common::key_string(&row[0]), row);
    }
    let mut changes = Vec::new();
    sluice::store::read_log_in(&conn, sluice::ids::SyncId(at), &mut |c| {
        changes.push(c);
        std::ops::ControlFlow::Continue(())
    })
    .ok()?;
    for change in changes.into_iter().rev().filter(|c| c.table == "issues") {
        let key = common::key_string(&change.key);
        match change.old {
            Some(old) => {
                rows.insert(key, old);
            }
            None => {
                rows.remove(&key);
            }
        }
    }
    Some(rows)
}

/// Checks one online client in flight (see the module documentation); returns whether
/// it did. Skipped when the client is staging, has writes pending, or moved while it was
/// being read.
fn check_in_flight(seed: u64, peer: &Peer, server_db: &Path, schema: &sluice::Schema) -> bool {
    let Some(client) = &peer.client else {
        return false;
    };
    // A window's content depends on resizes the client may not have heard back from;
    // clients holding one are checked at quiescence only.
    if peer.subs.iter().any(|(sql, _)| sql.contains(" LIMIT ")) {
        return false;
    }
    let settled = || {
        *client.state().borrow() == sluice::client::ConnectionState::Online
            && client.pending_writes() == 0
    };
    let before = client.cut().unwrap();
    if !settled() {
        return false;
    }
    let mut view: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for row in client.query("SELECT * FROM issues", &[]).unwrap() {
        view.insert(common::key_string(&row[0]), row);
    }
    if !settled() || client.cut().unwrap() != before {
        return false;
    }
    let Some(state) = server_issues_at(server_db, before.0) else {
        return false;
    };
    let shapes: Vec<_> = peer
        .subs
        .iter()
        .map(|(sql, _)| sluice::query::compile(schema, sql, &Params::new()).unwrap())
        .collect();
    let expected: BTreeMap<String, Vec<Value>> = state
        .into_iter()
        .filter(|(_, row)| shapes.iter().any(|s| s.matches(row)))
        .collect();
    assert_eq!(
        view, expected,
        "seed {seed}: {} at cut {before} shows a state the server never had",
        peer.name
    );
    true
}

async fn run_schedule(seed: u64, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path());
    let mut trace: Vec<String> = Vec::new();
    let mut peers = Vec::new();
    for i in 0..3 {
        let db = dir.path().join(format!("client{i}.db"));
        let client = open_client(&db, &server).await;
        let mut subs = Vec::new();
        for _ in 0..2 {
            let sql = SUBSCRIPTIONS[rng.gen_range(0..SUBSCRIPTIONS.len())];
            if !subs.iter().any(|(s, _): &(String, SubId)| s == sql) {
                let sub = client.subscribe(sql, Params::new()).unwrap();
                sub.ready().await.unwrap();
                subs.push((sql.to_string(), sub.id));
            }
        }
        trace.push(format!("c{i} subscribes {subs:?}"));
        peers.push(Peer {
            name: format!("c{i}"),
            db,
            client: Some(client),
            subs,
            writes: Vec::new(),
        });
    }
    let schema = sluice::Schema::load_dir(&common::schema_dir()).unwrap();
    let mut next_id = 0u64;
    let mut checked = 0usize;
    for _ in 0..steps {
        let roll = rng.gen_range(0..100);
        let p = rng.gen_range(0..peers.len());
        match roll {
            0..=69 => {
                let peer = &mut peers[p];
                if let Some(client) = &peer.client {
                    let w = random_write(&mut rng, client, &mut next_id, &mut trace, &peer.name);
                    peer.writes.push(w);
                }
            }
            70..=79 => {
                // Offline for a while (clean close), or a crash with the outbox pending.
                let peer = &mut peers[p];
                if let Some(client) = peer.client.take() {
                    if rng.gen_bool(0.5) {
                        trace.push(format!("{} goes offline", peer.name));
                        client.close().await;
                    } else {
                        trace.push(format!("{} crashes", peer.name));
                        drop(client);
                    }
                } else {
                    trace.push(format!("{} comes back", peer.name));
                    peer.client = Some(open_client(&peer.db, &server).await);
                }
            }
            80..=84 => {
                trace.push("server killed with SIGKILL and restarted".into());
                server.restart();
            }
            85..=87 => {
                trace.push("server killed, log compacted, restarted".into());
                server.compact_offline(rng.gen_range(0..5));
                server.restart();
            }
            88..=91 => {
                // Resize a window in place (while it bootstraps again, at its join; while
                // the server is down, with its next subscribe).
                let peer = &mut peers[p];
                let windows: Vec<usize> = (0..peer.subs.len())
                    .filter(|&i| peer.subs[i].0.contains(" LIMIT "))
                    .collect();
                if let (Some(client), Some(&i)) = (&peer.client, windows.first()) {
                    let limit = rng.gen_range(1..=6);
                    client.set_limit(peer.subs[i].1, limit).unwrap();
                    let sql = &peer.subs[i].0;
                    let end = sql.rfind(" LIMIT ").unwrap();
                    peer.subs[i].0 = format!("{} LIMIT {limit}", &sql[..end]);
                    trace.push(format!("{}: resizes to {}", peer.name, peer.subs[i].0));
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(rng.gen_range(1..20))).await,
        }
        if rng.gen_bool(0.3) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for peer in &peers {
            if check_in_flight(seed, peer, &server.db(), &schema) {
                checked += 1;
            }
        }
    }
    // A schedule with a client to check that checked nothing proves nothing.
    let plain = peers
        .iter()
        .any(|p| !p.subs.iter().any(|(sql, _)| sql.contains(" LIMIT ")));
    assert!(
        !plain || checked > 0,
        "seed {seed}: no in-flight check in {steps} steps"
    );
    trace.push(format!("{checked} in-flight checks"));
    // Quiescence: everyone online, outboxes drained, views equal to the server's.
    for peer in &mut peers {
        if peer.client.is_none() {
            peer.client = Some(open_client(&peer.db, &server).await);
        }
    }
    // A client may hold a connection to a killed server until its 30 s idle timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut mismatch = None;
        for peer in &peers {
            let client = peer.client.as_ref().unwrap();
            let mut expected: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for (sql, _) in &peer.subs {
                expected.extend(common::expected_rows(&server.db(), sql));
            }
            let mut actual: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for row in client.query("SELECT * FROM issues", &[]).unwrap() {
                actual.insert(common::key_string(&row[0]), row);
            }
            if client.pending_writes() > 0 || actual != expected {
                mismatch = Some((peer.name.clone(), client.pending_writes(), expected, actual));
                break;
            }
        }
        let Some((name, pending, expected, actual)) = mismatch else {
            break;
        };
        if tokio::time::Instant::now() > deadline {
            let tail: Vec<&String> = trace.iter().rev().take(40).collect();
            panic!(
                "seed {seed}: {name} did not converge ({pending} pending)\nexpected {expected:?}\n\
                 actual   {actual:?}\nlast steps (newest first): {tail:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Durability and exactly-once: every transaction a client queued has one recorded
    // outcome on the server; replaying it changes nothing; and the committed ones are
    // exactly the sync ids there are (none was applied twice).
    let mut queued = Vec::new();
    for peer in &mut peers {
        let client = peer.client.take().unwrap();
        queued.push((
            sluice::server::scoped_client_id(None, &client.client_id().unwrap()),
            peer.writes.len() as u64,
        ));
        client.close().await;
    }
    server.kill();
    let store = common::open_server_store(&server.db());
    let head = store.head();
    let mut committed = 0u64;
    const PROBE: &str = "probe: only runs if the server never saw this transaction";
    for (client_id, count) in &queued {
        for seq in 1..=*count {
            let probe = WriteTxn {
                origin: Some((client_id.clone(), seq)),
                mutations: vec![sluice::store::Mutation::Delete {
                    table: "issues".into(),
                    key: text(PROBE),
                }],
                preconditions: vec![],
            };
            match store.apply(vec![probe]).unwrap().pop().unwrap() {
                TxnOutcome::Committed { sync_id, changes } => {
                    assert!(changes.is_empty(), "seed {seed}: a replay applied changes");
                    assert!(sync_id <= head, "seed {seed}: unknown sync id {sync_id}");
                    committed += 1;
                }
                TxnOutcome::Rejected { message, .. } => assert!(
                    !message.contains(PROBE),
                    "seed {seed}: transaction {client_id}/{seq} never reached the server"
                ),
                other => panic!("seed {seed}: unexpected outcome {other:?}"),
            }
        }
    }
    assert_eq!(
        store.head(),
        head,
        "seed {seed}: a replay created a transaction"
    );
    assert_eq!(
        committed, head.0,
        "seed {seed}: commits and sync ids disagree"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_converge_and_lose_nothing_under_crashes() {
    common::trace_from_env();
    let steps: usize = std::env::var("SLUICE_TORTURE_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(160);
    let seeds: Vec<u64> = std::env::var("SLUICE_TORTURE_SEED")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2]);
    for seed in seeds {
        run_schedule(seed, steps).await;
    }
}
