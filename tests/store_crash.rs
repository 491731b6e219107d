//! Crash safety of the store: a child process commits transactions and acknowledges each
//! one on stdout only after `apply` returned; the parent kills it with SIGKILL at an
//! arbitrary moment, reopens the database, and checks that every acknowledged transaction
//! is present and that the change log replays to exactly the stored data.
//!
//! The child is this same test binary, re-run with `--exact child_process_entry_point`
//! and the database path in an environment variable. A killed process loses nothing the
//! operating system already has, so this checks atomicity and recovery after a process
//! crash, not durability across power loss (that is what `Synchronous::Full` is for).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use sluice::store::{
    ChangeKind, ClientId, Mutation, SqliteStore, Store, StoreOptions, SyncId, TxnOutcome, WriteTxn,
};
use sluice::{compile, Params, Schema, Value};

/// Set in the child's environment to the database path.
const CHILD_ENV: &str = "SLUICE_STORE_CRASH_CHILD_DB";
/// The child stops by itself after this many transactions if nobody kills it.
const CHILD_MAX_TXNS: u64 = 20_000;
const CLIENT: &str = "crash-client";

const SCHEMA_SQL: &str = "
CREATE TABLE items (id INTEGER PRIMARY KEY, batch INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE counters (id TEXT PRIMARY KEY, v INTEGER NOT NULL);
";

fn open(path: &Path) -> SqliteStore {
    let schema = Arc::new(Schema::parse("crash.sql", SCHEMA_SQL).unwrap());
    SqliteStore::open(path, schema, StoreOptions::default()).unwrap()
}

/// Transaction `k`: inserts item `k` and sets the counter to `k`, as client seq `k`.
fn txn(k: u64, batch: u64) -> WriteTxn {
    let body = "x".repeat((k % 17) as usize * 40);
    WriteTxn {
        origin: Some((ClientId(CLIENT.into()), k)),
        mutations: vec![
            Mutation::Insert {
                table: "items".into(),
                values: vec![
                    ("id".into(), Value::Integer(k as i64)),
                    ("batch".into(), Value::Integer(batch as i64)),
                    ("body".into(), Value::Text(body)),
                ],
            },
            Mutation::Update {
                table: "counters".into(),
                key: Value::Text("c".into()),
                set: vec![("v".into(), Value::Integer(k as i64))],
            },
        ],
        preconditions: Vec::new(),
    }
}

/// The child: commits batches of one to four transactions and prints `ack <sync> <k>`
/// for each, flushed, after the batch has committed.
fn run_child(path: &Path) {
    let store = open(path);
    if store
        .fetch("counters", &[Value::Text("c".into())])
        .unwrap()
        .1
        .is_empty()
    {
        let insert = Mutation::Insert {
            table: "counters".into(),
            values: vec![
                ("id".into(), Value::Text("c".into())),
                ("v".into(), Value::Integer(0)),
            ],
        };
        let init = WriteTxn {
            origin: None,
            mutations: vec![insert],
            preconditions: vec![],
        };
        assert!(store.apply(vec![init]).unwrap()[0].sync_id().is_some());
    }
    let mut next = store.head().0 + 1;
    let mut stdout = std::io::stdout().lock();
    for batch in 0..CHILD_MAX_TXNS {
        let size = 1 + batch % 4;
        let txns: Vec<WriteTxn> = (next..next + size).map(|k| txn(k, batch)).collect();
        let outcomes = store.apply(txns).unwrap();
        for (k, outcome) in (next..).zip(&outcomes) {
            let sync_id = outcome.sync_id().expect("crash workload never rejects");
            writeln!(stdout, "ack {sync_id} {k}").unwrap();
        }
        stdout.flush().unwrap();
        next += size;
    }
}

/// Entry point of the child process; returns at once when run as an ordinary test.
#[test]
fn child_process_entry_point() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        run_child(Path::new(&path));
    }
}

/// Runs the child until it has acknowledged `kill_after` transactions, kills it, and
/// returns every acknowledgement it printed, `(sync_id, k)`.
fn run_and_kill(path: &Path, kill_after: usize) -> Vec<(SyncId, u64)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_entry_point",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut acks = Vec::new();
    let mut killed = false;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        // A line cut short by the kill has no newline and is not an acknowledgement.
        let Some(text) = line.strip_suffix('\n') else {
            continue;
        };
        let mut words = text.split(' ');
        if words.next() != Some("ack") {
            continue;
        }
        let sync_id: u64 = words.next().unwrap().parse().unwrap();
        let k: u64 = words.next().unwrap().parse().unwrap();
        acks.push((SyncId(sync_id), k));
        if acks.len() >= kill_after && !killed {
            child.kill().unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(killed, "the child exited by itself: {status}");
    acks
}

/// Checks the reopened database against the acknowledgements and the log.
fn check_after_crash(path: &Path, acks: &[(SyncId, u64)]) {
    let store = open(path);
    let head = store.head();
    let last_ack = acks.last().unwrap().0;
    assert!(
        head >= last_ack,
        "head {head} is behind the last acknowledged {last_ack}"
    );

    // Replay the whole log: sync ids in order, every transaction 1..=head present.
    let mut replayed: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    let mut inserted_at: BTreeMap<i64, SyncId> = BTreeMap::new();
    let mut last = SyncId::ZERO;
    store
        .read_log(SyncId::ZERO, &mut |c| {
            assert!(
                c.sync_id == last || c.sync_id == last.next(),
                "gap after {last}"
            );
            last = c.sync_id;
            let key = (c.table.clone(), c.key.to_sql_literal());
            if c.kind == ChangeKind::Insert && c.table == "items" {
                if let Value::Integer(k) = c.key {
                    inserted_at.insert(k, c.sync_id);
                }
            }
            match c.new {
                Some(new) => replayed.insert(key, new),
                None => replayed.remove(&key),
            };
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(last, head, "the log ends at the head");

    // Every acknowledged transaction is in the data and in the log at its sync id.
    let keys: Vec<Value> = acks
        .iter()
        .map(|(_, k)| Value::Integer(*k as i64))
        .collect();
    let (_, rows) = store.fetch("items", &keys).unwrap();
    assert_eq!(rows.len(), acks.len(), "an acknowledged row is missing");
    for (sync_id, k) in acks {
        assert_eq!(inserted_at.get(&(*k as i64)), Some(sync_id), "item {k}");
    }

    // The log replays to exactly the stored data.
    let mut stored = BTreeMap::new();
    for table in ["items", "counters"] {
        let shape = compile(
            store.schema(),
            &format!("SELECT * FROM {table}"),
            &Params::new(),
        );
        store
            .snapshot(&shape.unwrap(), &mut |row| {
                stored.insert((table.to_string(), row[0].to_sql_literal()), row);
                ControlFlow::Continue(())
            })
            .unwrap();
    }
    assert_eq!(stored, replayed);
    let counter = &stored[&("counters".to_string(), "'c'".to_string())];
    assert_eq!(
        counter[1],
        Value::Integer(*inserted_at.keys().last().unwrap())
    );

    // Acknowledged client transactions are remembered: a resend is not applied again.
    let (sync_id, k) = acks[acks.len() / 2];
    let outcome = store.apply(vec![txn(k, 0)]).unwrap().remove(0);
    assert_eq!(
        outcome,
        TxnOutcome::Committed {
            sync_id,
            changes: vec![]
        }
    );
    assert_eq!(store.head(), head);
}

#[test]
fn acknowledged_transactions_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut all_acks = Vec::new();
    for (round, kill_after) in [25, 140, 61].into_iter().enumerate() {
        let acks = run_and_kill(&path, kill_after);
        assert!(
            acks.len() >= kill_after,
            "round {round}: {} acks",
            acks.len()
        );
        all_acks.extend(acks);
        check_after_crash(&path, &all_acks);
    }
}
