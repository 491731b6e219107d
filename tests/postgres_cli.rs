//! Black box: two `sluice serve --postgres` processes on one database. A write through A
//! (`sluice exec`) reaches `sluice sub --follow` on B with the same sync id; writes made
//! with psql reach both; after A is killed with SIGKILL, a client that streamed from A
//! resumes on B from its last sync id with nothing lost or doubled, and its resend of a
//! transaction A acknowledged is applied once. `sluice slots` lists the servers' slots.

mod common;
mod pg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::cli::{sluice, spawn_listening};
use common::{insert_issue, Client};
use pg::PgCluster;
use sluice::ids::SyncId;
use sluice::wire::WriteOutcome;

/// A `sluice serve --postgres` process, killed when dropped.
struct PgServe {
    child: Child,
    addr: String,
    ca: PathBuf,
}

impl Drop for PgServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(url: &str, replica: &Path) -> PgServe {
    let (child, addr) = spawn_listening(
        sluice()
            .args(["serve", "--schema"])
            .arg(common::schema_dir())
            .args(["--postgres", url, "--replica"])
            .arg(replica)
            .args(["--listen", "127.0.0.1:0", "--no-auth"]),
    );
    PgServe {
        child,
        addr,
        ca: PathBuf::from(format!("{}.cert.pem", replica.display())),
    }
}

/// `sluice sub --follow` on a server; its JSON lines arrive on the receiver.
struct Follow {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Follow {
    fn start(server: &PgServe, sql: &str) -> Follow {
        let mut child = sluice()
            .args(["sub", "--follow", "--connect", &server.addr, "--ca"])
            .arg(&server.ca)
            .arg(sql)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sluice sub");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(json) = serde_json::from_str(&line) else {
                    continue;
                };
                if tx.send(json).is_err() {
                    break;
                }
            }
        });
        Follow {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line matching `want`; returns it.
    fn wait(&mut self, what: &str, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        if let Some(found) = self.seen.iter().find(|l| want(l)) {
            return found.clone();
        }
        let deadline = Instant::now() + common::WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what}; saw {:?}", self.seen));
            self.seen.push(line.clone());
            if want(&line) {
                return line;
            }
        }
    }
}

fn op(line: &serde_json::Value, op: &str, key: &str) -> bool {
    line["op"] == op && line["key"] == key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_database() {
    let Some(pg) = PgCluster::start("cli") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = serve(&pg.url, &dir.path().join("a.db"));
    let b = serve(&pg.url, &dir.path().join("b.db"));
    let sql = "SELECT * FROM issues WHERE team_id = 'T1'";
    let mut on_a = Follow::start(&a, sql);
    let mut on_b = Follow::start(&b, sql);
    on_a.wait("snapshot end on A", |l| l["op"] == "snapshot_end");
    on_b.wait("snapshot end on B", |l| l["op"] == "snapshot_end");

    // A write through A reaches B, under the same sync id.
    let out = sluice()
        .args(["exec", "--connect", &a.addr, "--ca"])
        .arg(&a.ca)
        .arg("INSERT INTO issues (id, team_id, number, title) VALUES ('X1', 'T1', 1, 'via A')")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acked: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seen_b = on_b.wait("X1 on B", |l| op(l, "insert", "X1"));
    let seen_a = on_a.wait("X1 on A", |l| op(l, "insert", "X1"));
    assert_eq!(seen_b["sync_id"], acked["sync_id"]);
    assert_eq!(seen_a["sync_id"], acked["sync_id"]);

    // Writes made straight in PostgreSQL reach both, with the same sync ids.
    pg.psql("INSERT INTO issues (id, team_id, number, title) VALUES ('X2', 'T1', 2, 'psql')");
    pg.psql("UPDATE issues SET title = 'edited' WHERE id = 'X1'");
    pg.psql("DELETE FROM issues WHERE id = 'X2'");
    for follow in [&mut on_a, &mut on_b] {
        follow.wait("X2 insert", |l| op(l, "insert", "X2"));
        follow.wait("X1 update", |l| {
            op(l, "update", "X1") && l["row"]["title"] == "edited"
        });
        follow.wait("X2 delete", |l| op(l, "delete", "X2"));
    }
    let ids = |f: &Follow| -> Vec<serde_json::Value> {
        f.seen
            .iter()
            .filter(|l| l["sync_id"].is_number() && l["op"] != "snapshot_end")
            .map(|l| l["sync_id"].clone())
            .collect()
    };
    assert_eq!(
        ids(&on_a),
        ids(&on_b),
        "every server numbers a transaction the same"
    );

    // `sluice slots` lists one active temporary slot per server.
    let slots = sluice()
        .args(["slots", "--postgres", &pg.url])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&slots.stdout).to_string();
    assert_eq!(
        listed
            .lines()
            .filter(|l| l.contains("active temporary"))
            .count(),
        2,
        "{listed}"
    );

    // A client streams from A, writes through it, then A dies.
    let mut client = Client::connect_with(a.addr.parse().unwrap(), &a.ca, "mover", None)
        .await
        .unwrap();
    client.subscribe(1, sql, None).await;
    client.until("snapshot", |c| c.sub(1).end.is_some()).await;
    client
        .write(1, vec![insert_issue("M1", "T1", "open", 1)])
        .await;
    client.until("ack", |c| c.writes.contains_key(&1)).await;
    let WriteOutcome::Committed { sync_id: acked } = client.writes[&1].clone() else {
        panic!("rejected: {:?}", client.writes[&1]);
    };
    pg.psql("INSERT INTO issues (id, team_id, number, title) VALUES ('M2', 'T1', 2, 'x')");
    client
        .until("M2", |c| c.sub(1).rows.contains_key("M2"))
        .await;
    let cut = client.sub(1).last_sync;
    let before = client.sub(1).rows.clone();
    drop(a); // SIGKILL
    drop(client);
    // Written while the client is away: it must get these, once.
    pg.psql("INSERT INTO issues (id, team_id, number, title) VALUES ('M3', 'T1', 3, 'x')");
    pg.psql("DELETE FROM issues WHERE id = 'M2'");

    let mut moved = Client::connect_with(b.addr.parse().unwrap(), &b.ca, "mover", None)
        .await
        .unwrap();
    moved.subs.insert(
        1u64.into(),
        common::SubState {
            rows: before,
            last_sync: cut,
            ..Default::default()
        },
    );
    moved
        .conn
        .send(sluice::wire::ClientMessage::Subscribe {
            sub: 1u64.into(),
            sql: sql.to_string(),
            params: sluice::Params::new(),
            resume_after: Some(cut),
            resume_shape: None,
        })
        .await
        .unwrap();
    moved
        .until("resumed", |c| {
            c.sub(1).end.is_some() || c.sub(1).resume_refused
        })
        .await;
    assert!(
        !moved.sub(1).resume_refused,
        "B refused to resume from A's cut"
    );
    moved
        .until("caught up", |c| {
            c.sub(1).rows.contains_key("M3") && !c.sub(1).rows.contains_key("M2")
        })
        .await;
    let keys: Vec<&String> = moved.sub(1).rows.keys().collect();
    assert_eq!(keys, ["M1", "M3", "X1"]);
    assert!(
        moved.sub(1).inserts_seen.values().all(|n| *n == 1),
        "{:?}",
        moved.sub(1).inserts_seen
    );
    assert!(moved.sub(1).last_sync > cut);

    // The transaction A acknowledged, sent again through B, is applied once.
    moved
        .write(1, vec![insert_issue("M1", "T1", "open", 1)])
        .await;
    moved
        .until("ack from B", |c| c.writes.contains_key(&1))
        .await;
    assert_eq!(moved.writes[&1], WriteOutcome::Committed { sync_id: acked });
    assert_eq!(pg.psql("SELECT count(*) FROM issues WHERE id = 'M1'"), "1");
    assert!(acked > SyncId(0));
}
