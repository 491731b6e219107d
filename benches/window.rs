//! Window bench: what a change costs a live window (`ORDER BY sent_at DESC LIMIT 50`)
//! against the same change for a plain shape (`WHERE room_id = ?`), from the backend's
//! write to the subscribed client's live event, over QUIC on loopback.
//!
//! A `messages` table of `SLUICE_WINDOW_ROWS` rows (default 1,000,000) spread over
//! `SLUICE_WINDOW_ROOMS` rooms (default 10,000), one client holding a window of 50 on
//! every room and a plain subscription on as many other rooms. Four cases, each timed
//! `SLUICE_WINDOW_SAMPLES` times (default 500) on random rooms:
//!
//! - `window insert`: a message at the head of a window: one row in, the oldest out.
//! - `window delete`: a message inside a window deleted: one out, the next one read from
//!   the store and in (the top-up read).
//! - `plain insert` / `plain delete`: the same changes for a plain shape.
//!
//! The four cases take turns on random rooms (each round starting with the next case),
//! after a warm-up of a fifth as many rounds.
//!
//! A plain harness (`harness = false`): setup takes minutes at full size, and the figures
//! are per-change latencies (p50/p99), printed as a table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::client::{ConnectOptions, Connection, Event};
use sluice::ids::ClientId;
use sluice::query::Params;
use sluice::server::{Server, ServerHandle};
use sluice::store::{Mutation, SqliteStore, Store, StoreOptions, WriteTxn};
use sluice::value::Value;
use sluice::wire::{BootstrapFrame, ClientMessage, ServerMessage, SubId};

const BATCH: usize = 10_000;
const WINDOW: u64 = 50;
/// Rows in each plain room.
const PLAIN_ROWS: usize = 5;
/// Rooms per connection: a window and a plain subscription each, within a session's
/// 1000 subscriptions.
const ROOMS_PER_CONN: usize = 500;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn schema_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema")
}

fn message(id: i64, room: &str, sent_at: i64) -> Mutation {
    Mutation::Insert {
        table: "messages".into(),
        values: vec![
            ("id".into(), Value::Integer(id)),
            ("room_id".into(), Value::Text(room.to_string())),
            ("author_id".into(), Value::Text(format!("user{}", id % 100))),
            ("body".into(), Value::Text(format!("message {id}"))),
            ("sent_at".into(), Value::Integer(sent_at)),
        ],
    }
}

/// `rows` window-room messages (room `w{i % rooms}`) and `PLAIN_ROWS` per plain room
/// (`p{i}`), written straight to the store before the server starts.
fn fill(db: &std::path::Path, rows: usize, rooms: usize) {
    let schema = Arc::new(sluice::Schema::load_dir(&schema_dir()).expect("schema"));
    let store = SqliteStore::open(db, schema, StoreOptions::default()).expect("store");
    let all: Vec<(String, i64)> = (0..rows)
        .map(|i| (format!("w{}", i % rooms), i as i64))
        .chain((0..rooms * PLAIN_ROWS).map(|i| (format!("p{}", i % rooms), (rows + i) as i64)))
        .collect();
    for chunk in all.chunks(BATCH) {
        let mutations = chunk
            .iter()
            .map(|(room, id)| message(*id, room, *id))
            .collect();
        store
            .apply(vec![WriteTxn {
                origin: None,
                mutations,
                preconditions: vec![],
            }])
            .expect("fill");
    }
}

async fn write(server: &ServerHandle, mutation: Mutation) {
    server
        .write(WriteTxn {
            origin: None,
            mutations: vec![mutation],
            preconditions: vec![],
        })
        .await
        .expect("write");
}

/// Waits for the live transaction that carries an event of `sub`; returns its events'
/// count.
async fn until_event(conn: &mut Connection, sub: SubId) -> usize {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), conn.next_event()).await {
            Ok(Some(Event::Live(txn))) => {
                let n = txn.events.iter().filter(|(s, _, _)| *s == sub).count();
                if n > 0 {
                    return n;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("connection closed"),
            Err(_) => panic!("no event in 30 s"),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows = env("SLUICE_WINDOW_ROWS", 1_000_000);
    let rooms = env("SLUICE_WINDOW_ROOMS", 10_000);
    let samples = env("SLUICE_WINDOW_SAMPLES", 500);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("bench.db");
    let started = Instant::now();
    fill(&db, rows, rooms);
    eprintln!(
        "filled {rows} + {} rows in {:?}",
        rooms * PLAIN_ROWS,
        started.elapsed()
    );
    let server = Server::builder(schema_dir(), &db)
        .listen("127.0.0.1:0".parse().expect("addr"))
        .no_auth()
        .start()
        .await
        .expect("server");
    let ca = server.cert_path().expect("cert").to_path_buf();
    // A session holds at most 1000 subscriptions: one connection per ROOMS_PER_CONN rooms,
    // with the window of room i as subscription i + 1 and its plain twin as rooms + i + 1.
    let started = Instant::now();
    let mut conns = Vec::new();
    for c in 0..rooms.div_ceil(ROOMS_PER_CONN) {
        let mut conn = Connection::connect(ConnectOptions {
            addr: server.local_addr(),
            ca: &ca,
            server_name: "localhost",
            client_id: ClientId(format!("bench-{c}")),
            token: None,
            schema_version: None,
        })
        .await
        .expect("connect");
        let mut pending = 0usize;
        for i in c * ROOMS_PER_CONN..((c + 1) * ROOMS_PER_CONN).min(rooms) {
            for (sub, sql) in [
                (
                    i as u64 + 1,
                    format!(
                        "SELECT * FROM messages WHERE room_id = 'w{i}' \
                         ORDER BY sent_at DESC LIMIT {WINDOW}"
                    ),
                ),
                (
                    (rooms + i) as u64 + 1,
                    format!("SELECT * FROM messages WHERE room_id = 'p{i}'"),
                ),
            ] {
                conn.send(ClientMessage::Subscribe {
                    sub: SubId(sub),
                    sql,
                    params: Params::new(),
                    resume_after: None,
                    resume_shape: None,
                })
                .await
                .expect("subscribe");
                pending += 1;
            }
        }
        while pending > 0 {
            match conn.next_event().await {
                Some(Event::Bootstrap(_, BootstrapFrame::End { .. })) => pending -= 1,
                Some(Event::Control(ServerMessage::SubscribeFailed { message, .. })) => {
                    panic!("subscription failed: {message}")
                }
                Some(_) => {}
                None => panic!("connection closed"),
            }
        }
        conns.push(conn);
    }
    eprintln!(
        "{} subscriptions ready in {:?}",
        2 * rooms,
        started.elapsed()
    );

    let mut rng = StdRng::seed_from_u64(7);
    let mut next_id = (rows + rooms * PLAIN_ROWS) as i64;
    // Per window room touched, its newest messages (newest last), to pick one to delete.
    let mut newest: HashMap<usize, Vec<i64>> = HashMap::new();
    const CASES: [&str; 4] = [
        "window insert",
        "plain insert",
        "window delete",
        "plain delete",
    ];
    // The cases take turns, so that whatever else the machine does (a checkpoint of the
    // fill's WAL, other processes) weighs on all of them alike; the first rounds warm up.
    // Each round starts with the next case: a fixed order put the case after the plain
    // delete's extra write first in every round, and gave it twice the slow samples.
    let warmup = samples / 5;
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(samples); CASES.len()];
    for round in 0..warmup + samples {
        for k in 0..CASES.len() {
            let c = (k + round) % CASES.len();
            let case = CASES[c];
            let room = rng.gen_range(0..rooms);
            let (sub, mutation) = match case {
                "window insert" | "plain insert" => {
                    next_id += 1;
                    let (prefix, sub) = if case == "window insert" {
                        ("w", room as u64 + 1)
                    } else {
                        ("p", (rooms + room) as u64 + 1)
                    };
                    if case == "window insert" {
                        present(&mut newest, room, rows, rooms).push(next_id);
                    }
                    (sub, message(next_id, &format!("{prefix}{room}"), next_id))
                }
                "window delete" => {
                    // A row inside the window: one of the room's 50 newest.
                    let ids = present(&mut newest, room, rows, rooms);
                    let inside = ids.len().min(WINDOW as usize);
                    let i = ids.len() - rng.gen_range(1..=inside);
                    (room as u64 + 1, delete(ids.remove(i)))
                }
                _ => {
                    next_id += 1;
                    let id = next_id;
                    let sub = (rooms + room) as u64 + 1;
                    write(&server, message(id, &format!("p{room}"), id)).await;
                    until_event(&mut conns[room / ROOMS_PER_CONN], SubId(sub)).await;
                    (sub, delete(id))
                }
            };
            let conn = &mut conns[room / ROOMS_PER_CONN];
            let start = Instant::now();
            write(&server, mutation).await;
            until_event(conn, SubId(sub)).await;
            if round >= warmup {
                times[c].push(start.elapsed());
            }
        }
    }
    let results: Vec<(&str, Vec<Duration>)> = CASES
        .iter()
        .zip(times)
        .map(|(case, mut t)| {
            t.sort();
            (*case, t)
        })
        .collect();
    println!("| change | p50 | p99 | mean |");
    println!("|---|---|---|---|");
    for (case, times) in &results {
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        println!(
            "| {case} | {:.3} ms | {:.3} ms | {:.3} ms |",
            ms(percentile(times, 0.5)),
            ms(percentile(times, 0.99)),
            ms(mean)
        );
    }
    let p50 = |name: &str| {
        results
            .iter()
            .find(|(c, _)| *c == name)
            .map(|(_, t)| ms(percentile(t, 0.5)))
            .unwrap_or(f64::NAN)
    };
    println!(
        "window / plain p50: insert {:.2}x, delete {:.2}x",
        p50("window insert") / p50("plain insert"),
        p50("window delete") / p50("plain delete")
    );
    server.shutdown().await;
}

/// The newest messages of window room `room` (newest last), starting from the filled ones.
fn present(
    newest: &mut HashMap<usize, Vec<i64>>,
    room: usize,
    rows: usize,
    rooms: usize,
) -> &mut Vec<i64> {
    newest.entry(room).or_insert_with(|| {
        let mut ids: Vec<i64> = (0..rows)
            .rev()
            .filter(|i| i % rooms == room)
            .take(2 * WINDOW as usize)
            .map(|i| i as i64)
            .collect();
        ids.reverse();
        ids
    })
}

fn delete(id: i64) -> Mutation {
    Mutation::Delete {
        table: "messages".into(),
        key: Value::Integer(id),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
