//! Convergence in PostgreSQL mode: clients of the client library, each on its own local
//! store, subscribed to overlapping subscriptions (a window among them), write through
//! two servers on one database while rows also change straight in PostgreSQL (psql);
//! clients go offline and come back on the other server (resuming from a cut the other
//! server gave them), a server is replaced by a new one (new slot, and a new replica or
//! the one it kept), and PostgreSQL drops every connection or restarts (the servers
//! resynchronise their replicas while clients stay on them). The second server holds at
//! most 2 changes of a transaction in memory, so larger ones (client transactions, psql
//! updates of every row) reach its clients through the log, as a cut-off and a resume.
//! At quiescence every client holds exactly what SQLite returns on a server's replica
//! for its subscriptions, the replica holds exactly PostgreSQL's rows, and no committed
//! client transaction was recorded twice.
//!
//! `SLUICE_PG_TORTURE_STEPS` sets the schedule length (default 50), `SLUICE_PG_TORTURE_SEED`
//! the seed (default random, printed).

mod common;
mod pg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::text;
use pg::PgCluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::client::{Backoff, Client, ClientConfig, PendingWrite, ServerAddress};
use sluice::query::Params;
use sluice::server::ServerHandle;
use sluice::store::StoreOptions;
use sluice::value::Value;
use sluice::wire::WriteOutcome;

const SUBSCRIPTIONS: [&str; 6] = [
    "SELECT * FROM issues WHERE team_id = 'T1'",
    "SELECT * FROM issues WHERE team_id = 'T2' AND status != 'done'",
    "SELECT * FROM issues WHERE priority >= 3",
    "SELECT * FROM issues WHERE team_id IN ('T2', 'T3') OR priority = 0",
    "SELECT * FROM issues",
    "SELECT * FROM issues WHERE team_id = 'T1' ORDER BY priority DESC LIMIT 3",
];
const TEAMS: [&str; 3] = ["T1", "T2", "T3"];
const STATUSES: [&str; 3] = ["todo", "doing", "done"];

struct Peer {
    db: PathBuf,
    client: Option<Client>,
    server: usize,
    subs: Vec<&'static str>,
    writes: Vec<PendingWrite>,
}

async fn open_client(db: &Path, server: &ServerHandle) -> Client {
    let backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(150),
        jitter: 0.3,
    };
    let address = ServerAddress::new(server.local_addr(), server.cert_path().unwrap());
    Client::open(ClientConfig::new(db).server(address).backoff(backoff))
        .await
        .unwrap()
}

fn random_write(rng: &mut StdRng, client: &Client, next_id: &mut u64) -> PendingWrite {
    let known: Vec<String> = client
        .query("SELECT id FROM issues", &[])
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| match &r[0] {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let roll = rng.gen_range(0..10);
    let tx = client.transaction();
    let tx = if known.is_empty() || roll < 4 {
        *next_id += 1;
        tx.insert(
            "issues",
            vec![
                ("id", text(&format!("c{next_id}"))),
                ("team_id", text(TEAMS[rng.gen_range(0..3)])),
                ("number", Value::Integer(*next_id as i64)),
                ("title", text("t")),
                ("status", text(STATUSES[rng.gen_range(0..3)])),
                ("priority", Value::Integer(rng.gen_range(0..5))),
            ],
        )
    } else {
        let id = text(&known[rng.gen_range(0..known.len())]);
        match roll {
            4..=7 => match rng.gen_range(0..3) {
                0 => tx.update(
                    "issues",
                    id,
                    vec![("status", text(STATUSES[rng.gen_range(0..3)]))],
                ),
                1 => tx.update(
                    "issues",
                    id,
                    vec![("priority", Value::Integer(rng.gen_range(0..5)))],
                ),
                _ => tx.update(
                    "issues",
                    id,
                    vec![("team_id", text(TEAMS[rng.gen_range(0..3)]))],
                ),
            },
            // A precondition that fails: rejected, rolled back.
            8 => tx
                .update("issues", id.clone(), vec![("title", text("x"))])
                .expect("issues", id, "priority", Value::Integer(99)),
            _ => tx.delete("issues", id),
        }
    };
    tx.commit().unwrap()
}

fn psql_write(rng: &mut StdRng, pg: &PgCluster, next_id: &mut u64) {
    let ids = pg.psql("SELECT id FROM issues ORDER BY id");
    let ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
    let sql = if rng.gen_bool(0.3) {
        // Every row at once: past the second server's bound (see `start_server`).
        "UPDATE issues SET priority = (priority + 1) % 5".to_string()
    } else if ids.is_empty() || rng.gen_bool(0.4) {
        *next_id += 1;
        format!(
            "INSERT INTO issues (id, team_id, number, title, status, priority) \
             VALUES ('p{next_id}', '{}', {next_id}, 'psql', '{}', {})",
            TEAMS[rng.gen_range(0..3)],
            STATUSES[rng.gen_range(0..3)],
            rng.gen_range(0..5)
        )
    } else {
        let id = ids[rng.gen_range(0..ids.len())];
        if rng.gen_bool(0.3) {
            format!("DELETE FROM issues WHERE id = '{id}'")
        } else {
            format!(
                "UPDATE issues SET priority = {}, team_id = '{}' WHERE id = '{id}'",
                rng.gen_range(0..5),
                TEAMS[rng.gen_range(0..3)]
            )
        }
    };
    pg.psql(&sql);
}

/// Server `s` on `replica`: the second holds at most 2 changes of a transaction in
/// memory, so larger ones reach its clients through the log (cut-off and resume), the
/// first fans everything out live.
async fn start_server(replica: &Path, url: &str, s: usize) -> ServerHandle {
    let bound = if s == 1 { 2 } else { 10_000 };
    common::pg_server(replica, url)
        .store_options(StoreOptions::default().replicated_changes_in_memory(bound))
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_converge_across_two_servers_on_one_database() {
    let Some(pg) = PgCluster::start("torture") else {
        return;
    };
    // RUST_LOG=sluice=debug shows what the servers did.
    common::trace_from_env();
    let steps: usize = std::env::var("SLUICE_PG_TORTURE_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("SLUICE_PG_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("SLUICE_PG_TORTURE_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut generation = 0;
    let mut servers = Vec::new();
    // Each server's replica file.
    let mut replicas = Vec::new();
    for s in 0..2 {
        generation += 1;
        let replica = dir.path().join(format!("replica-{generation}.db"));
        servers.push(start_server(&replica, &pg.url, s).await);
        replicas.push(replica);
    }
    let mut peers = Vec::new();
    for i in 0..3 {
        let db = dir.path().join(format!("client{i}.db"));
        let server = i % 2;
        let client = open_client(&db, &servers[server]).await;
        let mut subs = Vec::new();
        for _ in 0..2 {
            let sql = SUBSCRIPTIONS[rng.gen_range(0..SUBSCRIPTIONS.len())];
            if !subs.contains(&sql) {
                client.subscribe(sql, Params::new()).unwrap();
                subs.push(sql);
            }
        }
        peers.push(Peer {
            db,
            client: Some(client),
            server,
            subs,
            writes: Vec::new(),
        });
    }
    let mut next_id = 0u64;
    for _ in 0..steps {
        let p = rng.gen_range(0..peers.len());
        match rng.gen_range(0..14) {
            0..=5 => {
                if let Some(client) = &peers[p].client {
                    let write = random_write(&mut rng, client, &mut next_id);
                    peers[p].writes.push(write);
                }
            }
            6 | 7 => psql_write(&mut rng, &pg, &mut next_id),
            8 | 9 => {
                // Offline, or back online on the other server.
                let peer = &mut peers[p];
                match peer.client.take() {
                    Some(client) => client.close().await,
                    None => {
                        peer.server = 1 - peer.server;
                        peer.client = Some(open_client(&peer.db, &servers[peer.server]).await);
                    }
                }
            }
            10 => {
                // A server is replaced by a new one, on a new replica or on the one it
                // kept: its clients move with it.
                let s = rng.gen_range(0..2);
                let keep = rng.gen_bool(0.5);
                let mut moved = Vec::new();
                for (i, peer) in peers.iter_mut().enumerate() {
                    if peer.server == s {
                        if let Some(client) = peer.client.take() {
                            client.close().await;
                            moved.push(i);
                        }
                    }
                }
                if keep {
                    // The same file: the old server goes first.
                    servers.remove(s).shutdown().await;
                    servers.insert(s, start_server(&replicas[s], &pg.url, s).await);
                } else {
                    generation += 1;
                    replicas[s] = dir.path().join(format!("replica-{generation}.db"));
                    let new = start_server(&replicas[s], &pg.url, s).await;
                    let old = std::mem::replace(&mut servers[s], new);
                    old.shutdown().await;
                }
                for i in moved {
                    peers[i].client = Some(open_client(&peers[i].db, &servers[s]).await);
                }
            }
            11 => {
                // PostgreSQL drops every connection, or restarts: both servers lose
                // their streams and resynchronise; clients stay on them.
                if !(rng.gen_bool(0.3) && pg.restart()) {
                    pg.terminate_connections();
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(rng.gen_range(0..30))).await,
        }
    }
    // Quiescence: everyone online; views equal to the replica's, the replica to PostgreSQL.
    for peer in &mut peers {
        if peer.client.is_none() {
            peer.client = Some(open_client(&peer.db, &servers[peer.server]).await);
        }
    }
    let replica = &replicas[0];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let in_pg: Vec<String> = pg
            .psql("SELECT id FROM issues ORDER BY id")
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        let all = common::expected_rows(replica, "SELECT * FROM issues");
        let mut mismatch = None;
        if all.keys().cloned().collect::<Vec<_>>() != in_pg {
            mismatch = Some(format!("replica {:?} vs PostgreSQL {in_pg:?}", all.keys()));
        }
        for (i, peer) in peers.iter().enumerate() {
            let client = peer.client.as_ref().unwrap();
            let mut expected: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for sql in &peer.subs {
                expected.extend(common::expected_rows(replica, sql));
            }
            // A client that never finished a handshake has no tables yet.
            let rows = client
                .query("SELECT * FROM issues", &[])
                .unwrap_or_default();
            let mut actual: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for row in rows {
                actual.insert(common::key_string(&row[0]), row);
            }
            if mismatch.is_none() && (client.pending_writes() > 0 || actual != expected) {
                mismatch = Some(format!(
                    "client{i} ({} pending)\nexpected {expected:?}\nactual   {actual:?}",
                    client.pending_writes()
                ));
            }
        }
        let Some(mismatch) = mismatch else { break };
        assert!(
            tokio::time::Instant::now() < deadline,
            "seed {seed}: did not converge: {mismatch}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Committed client transactions were recorded once each (the key forbids more).
    let mut committed = 0usize;
    for peer in &mut peers {
        for write in peer.writes.drain(..) {
            if let Ok(WriteOutcome::Committed { .. }) = write.outcome().await {
                committed += 1;
            }
        }
    }
    let recorded: usize = pg
        .psql("SELECT count(*) FROM _sluice_txns")
        .parse()
        .unwrap();
    assert!(
        recorded >= committed,
        "seed {seed}: {recorded} recorded < {committed} acked"
    );
    for peer in peers {
        peer.client.unwrap().close().await;
    }
    for server in servers {
        server.shutdown().await;
    }
}
