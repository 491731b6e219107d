//! Differential test of live windows against SQLite: random data with NULLs, mixed
//! storage classes and ties; random windows (1-3 order terms, both directions, NULLS
//! FIRST/LAST, small and large limits, with and without a WHERE clause); random
//! transactions. After every transaction, each window's rows as a model client folds the
//! server's events (snapshot, then inserts, updates and deletes), sorted in the window's
//! order, must equal what SQLite returns for `SELECT * ... ORDER BY ..., id LIMIT n` on
//! the server's database at that sync id; and so must the client library's local view of
//! the same windows (`Client::window`), once its cut reaches that sync id.
//!
//! Windows are also resized at random, on both clients: the model checks that exactly the
//! rows between the old and the new edge travel.
//!
//! `SLUICE_WINDOW_STEPS=<n>` sets the number of transactions per seed;
//! `SLUICE_WINDOW_SEED=a,b` replaces the default seeds.

mod common;

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use common::client::{client_at, eventually};
use common::{key_string, Client};
use sluice::query::{compile, Params};
use sluice::server::{Server, ServerHandle};
use sluice::store::{Mutation, StoreOptions};
use sluice::wire::{SubId, WriteOutcome};
use sluice::{Schema, Shape, Value};

const DEFAULT_SEEDS: [u64; 1] = [0x3d0e_0001];
const DEFAULT_STEPS: usize = 100;
const WINDOWS: usize = 14;
const COLUMNS: [&str; 4] = ["grp", "a", "b", "c"];
const FILTERS: [&str; 8] = [
    "",
    "WHERE grp = 1",
    "WHERE grp IN (0, 2)",
    "WHERE a IS NOT NULL",
    "WHERE b > 0",
    "WHERE c < 'm'",
    "WHERE grp = 1 OR b IS NULL",
    "WHERE grp != 2 AND a >= 1",
];
const LIMITS: [u64; 7] = [1, 2, 3, 5, 8, 20, 200];

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/window_schema")
}

fn seeds() -> Vec<u64> {
    match std::env::var("SLUICE_WINDOW_SEED") {
        Ok(s) => s
            .split(',')
            .map(|x| x.trim().parse().expect("seed"))
            .collect(),
        Err(_) => DEFAULT_SEEDS.to_vec(),
    }
}

fn steps() -> usize {
    std::env::var("SLUICE_WINDOW_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_STEPS)
}

/// A random value for `column` (before the column's affinity; the store refuses values
/// a typed column cannot hold, so mixed storage classes live in the untyped `a`).
fn value(rng: &mut StdRng, column: &str) -> Value {
    let pool: Vec<Value> = match column {
        "grp" => (0..3).map(Value::Integer).collect(),
        "a" => vec![
            Value::Null,
            Value::Integer(-1),
            Value::Integer(0),
            Value::Integer(1),
            Value::Integer(2),
            Value::Real(1.0),
            Value::Real(1.5),
            Value::Text(String::new()),
            Value::Text("a".into()),
            Value::Text("B".into()),
            Value::Text("10".into()),
            Value::Blob(vec![0]),
            Value::Blob(vec![1, 2]),
        ],
        "b" => vec![
            Value::Null,
            Value::Integer(0),
            Value::Integer(1),
            Value::Real(1.5),
            Value::Real(-2.0),
            Value::Text("3".into()),
        ],
        _ => vec![
            Value::Null,
            Value::Text("a".into()),
            Value::Text("b".into()),
            Value::Text("A".into()),
            Value::Text("10".into()),
            Value::Text("z".into()),
            Value::Text(String::new()),
        ],
    };
    pool.choose(rng).expect("pool").clone()
}

/// One random window: the subscription text and the same query for SQLite with the
/// tie-break appended.
fn window(rng: &mut StdRng) -> (String, String) {
    let filter = FILTERS.choose(rng).expect("filters");
    let mut columns = COLUMNS.to_vec();
    columns.shuffle(rng);
    let terms: Vec<String> = columns[..rng.gen_range(1..=3)]
        .iter()
        .map(|c| {
            let dir = ["", " ASC", " DESC"].choose(rng).expect("dir");
            let nulls = ["", "", " NULLS FIRST", " NULLS LAST"]
                .choose(rng)
                .expect("nulls");
            format!("{c}{dir}{nulls}")
        })
        .collect();
    let order = terms.join(", ");
    let limit = LIMITS.choose(rng).expect("limits");
    (
        format!("SELECT * FROM items {filter} ORDER BY {order} LIMIT {limit}"),
        format!("SELECT * FROM items {filter} ORDER BY {order}, id ASC LIMIT {limit}"),
    )
}

fn from_sql(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8(t.to_vec()).expect("utf-8")),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// SQLite's answer for `sql` on the server's database.
fn sqlite_rows(db: &Path, sql: &str) -> Vec<Vec<Value>> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    let mut stmt = conn.prepare(sql).expect(sql);
    let width = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            Ok((0..width)
                .map(|i| from_sql(r.get_ref(i).expect("column")))
                .collect::<Vec<_>>())
        })
        .expect(sql);
    rows.map(|r| r.expect("row")).collect()
}

async fn start(dir: &Path) -> ServerHandle {
    Server::builder(schema_dir(), dir.join("items.db"))
        .listen("127.0.0.1:0".parse().expect("addr"))
        .no_auth()
        .store_options(StoreOptions::default())
        .start()
        .await
        .expect("server starts")
}

/// A random transaction over the rows `ids` holds (kept up to date).
fn transaction(rng: &mut StdRng, ids: &mut Vec<i64>, next_id: &mut i64) -> Vec<Mutation> {
    let mut mutations = Vec::new();
    for _ in 0..rng.gen_range(1..=4) {
        let choice = rng.gen_range(0..10);
        if ids.is_empty() || choice < 4 {
            let id = *next_id;
            *next_id += 1;
            ids.push(id);
            let mut values = vec![("id".to_string(), Value::Integer(id))];
            for c in COLUMNS {
                values.push((c.to_string(), value(rng, c)));
            }
            mutations.push(Mutation::Insert {
                table: "items".into(),
                values,
            });
        } else if choice < 8 {
            let id = *ids.choose(rng).expect("ids");
            let mut columns = COLUMNS.to_vec();
            columns.shuffle(rng);
            let set = columns[..rng.gen_range(1..=2)]
                .iter()
                .map(|c| (c.to_string(), value(rng, c)))
                .collect();
            mutations.push(Mutation::Update {
                table: "items".into(),
                key: Value::Integer(id),
                set,
            });
        } else {
            let i = rng.gen_range(0..ids.len());
            let id = ids.swap_remove(i);
            mutations.push(Mutation::Delete {
                table: "items".into(),
                key: Value::Integer(id),
            });
        }
    }
    mutations
}

/// Writes one transaction as `client` and waits until its live transaction arrived.
async fn commit(client: &mut Client, seq: u64, mutations: Vec<Mutation>) -> sluice::ids::SyncId {
    client.write(seq, mutations).await;
    client
        .until("write result", |c| c.writes.contains_key(&seq))
        .await;
    let sync_id = match &client.writes[&seq] {
        WriteOutcome::Committed { sync_id } => *sync_id,
        other => panic!("transaction {seq} not committed: {other:?}"),
    };
    client
        .until("own transaction", |c| c.last_sync >= sync_id)
        .await;
    sync_id
}

/// `sql` with its limit replaced.
fn with_limit(sql: &str, limit: u64) -> String {
    let end = sql.rfind(" LIMIT ").expect("a window");
    format!("{} LIMIT {limit}", &sql[..end])
}

/// Resizes a random window, both on the model client (checking that only the rows
/// between the edges travel) and in the client library.
async fn resize(
    rng: &mut StdRng,
    client: &mut Client,
    app: &sluice::client::Client,
    app_subs: &[SubId],
    db: &Path,
    windows: &mut [(String, String, Shape)],
) {
    let i = rng.gen_range(0..windows.len());
    let limit = *LIMITS.choose(rng).expect("limits");
    let (sql, oracle, _) = &windows[i];
    let (sql, oracle) = (with_limit(sql, limit), with_limit(oracle, limit));
    let before = sqlite_rows(db, &windows[i].1).len();
    let after = sqlite_rows(db, &oracle).len();
    let sub = SubId(i as u64 + 1);
    let resizes = client.sub(sub).resized.len();
    client
        .conn
        .send(sluice::wire::ClientMessage::Resize { sub, limit })
        .await
        .expect("send");
    client
        .until("the resize", |c| c.sub(sub).resized.len() > resizes)
        .await;
    let moved = client.sub(sub).resized.last().expect("resized").1;
    assert_eq!(
        moved,
        before.abs_diff(after),
        "{sql}: rows moved by the resize"
    );
    app.set_limit(app_subs[i], limit).expect("set_limit");
    let schema = Schema::load_dir(&schema_dir()).expect("schema");
    let shape = compile(&schema, &sql, &Params::new()).expect(&sql);
    windows[i] = (sql, oracle, shape);
}

/// Compares every window with SQLite; returns a description of the first difference.
fn check(
    client: &Client,
    db: &Path,
    windows: &[(String, String, Shape)],
    step: usize,
) -> Result<(), String> {
    for (i, (sql, oracle, shape)) in windows.iter().enumerate() {
        let want = sqlite_rows(db, oracle);
        let state = client.sub(i as u64 + 1);
        let mut got: Vec<Vec<Value>> = state.rows.values().cloned().collect();
        let w = shape.window().expect("a window");
        got.sort_by(|a, b| w.cmp_rows(a, b));
        if got != want {
            let keys = |rows: &[Vec<Value>]| -> Vec<String> {
                rows.iter().map(|r| key_string(&r[0])).collect()
            };
            return Err(format!(
                "step {step}, window {sql}:\n  model  {:?}\n  sqlite {:?}",
                keys(&got),
                keys(&want)
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_follow_sqlite_after_every_transaction() {
    let schema = Schema::load_dir(&schema_dir()).expect("schema");
    for seed in seeds() {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().expect("tempdir");
        let server = start(dir.path()).await;
        let db = dir.path().join("items.db");
        let ca = server.cert_path().expect("cert").to_path_buf();
        let mut client = Client::connect(&server, &ca, "model").await;
        let (mut ids, mut next_id, mut seq) = (Vec::new(), 1i64, 0u64);
        seq += 1;
        let mark = Mutation::Insert {
            table: "marks".into(),
            values: vec![("id".into(), Value::Integer(1))],
        };
        commit(&mut client, seq, vec![mark]).await;
        // Some rows before the windows start, some after.
        for _ in 0..8 {
            seq += 1;
            let mutations = transaction(&mut rng, &mut ids, &mut next_id);
            commit(&mut client, seq, mutations).await;
        }
        let mut windows = Vec::new();
        for i in 0..WINDOWS {
            let (sql, oracle) = window(&mut rng);
            let shape = compile(&schema, &sql, &Params::new()).expect(&sql);
            client.subscribe(i as u64 + 1, &sql, None).await;
            windows.push((sql, oracle, shape));
        }
        client
            .until("snapshots", |c| {
                (1..=WINDOWS as u64)
                    .all(|s| c.subs.get(&SubId(s)).is_some_and(|x| x.joined.is_some()))
            })
            .await;
        for (i, (sql, ..)) in windows.iter().enumerate() {
            assert_eq!(client.sub(i as u64 + 1).failed, None, "{sql}");
        }
        // The client library holds the same windows in its local view.
        let app = client_at(server.local_addr(), &ca, &dir.path().join("app.db")).await;
        let mut app_subs = Vec::new();
        for (sql, ..) in &windows {
            let sub = app.subscribe(sql, Params::new()).expect(sql);
            sub.ready().await.expect(sql);
            app_subs.push(sub.id);
        }
        let mut moved_by_window = 0;
        for step in 0..steps() {
            seq += 1;
            let mutations = transaction(&mut rng, &mut ids, &mut next_id);
            commit(&mut client, seq, mutations).await;
            if rng.gen_bool(0.1) {
                resize(&mut rng, &mut client, &app, &app_subs, &db, &mut windows).await;
            }
            if let Err(e) = check(&client, &db, &windows, step) {
                panic!("seed {seed:#x}: {e}");
            }
            // A write of the app's own that touches no window: once its cut is there,
            // the app has applied every transaction before it.
            let mark = app
                .transaction()
                .update(
                    "marks",
                    Value::Integer(1),
                    vec![("n", Value::Integer(step as i64))],
                )
                .commit()
                .expect("mark");
            let at = match mark.outcome().await.expect("answer") {
                WriteOutcome::Committed { sync_id } => sync_id,
                other => panic!("mark not committed: {other:?}"),
            };
            eventually("the app's cut", || app.cut().is_ok_and(|c| c >= at)).await;
            for ((sql, oracle, _), sub) in windows.iter().zip(&app_subs) {
                let want = sqlite_rows(&db, oracle);
                let got = app.window(*sub).expect("window");
                assert_eq!(got, want, "seed {seed:#x}, step {step}, app's window {sql}");
            }
            moved_by_window = client.subs.values().map(|s| s.window_moves).sum::<usize>();
        }
        assert!(
            moved_by_window > 0,
            "seed {seed:#x}: no row ever left by `window`"
        );
        app.close().await;
        server.shutdown().await;
    }
}
