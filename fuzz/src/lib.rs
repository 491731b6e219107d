//! Fuzz harness: the checks each fuzz target runs on one input, shared by the libFuzzer
//! targets in `fuzz_targets/` and by the corpus replay test of the main crate (which
//! includes this file as a module), so a saved input replays through exactly the code the
//! fuzzer ran.
//!
//! Every function takes arbitrary bytes and panics only when it finds a bug:
//!
//! - [`frame_decoder`]: bytes pushed in chunks into [`FrameDecoder`]s for each frame type;
//!   decoded messages must re-encode to a frame no longer than the one received and
//!   decode again to the same encoding; the decoder's buffer never exceeds what was pushed.
//! - [`handshake`]: bytes as the client's side of a control stream: the first frame must
//!   be an acceptable `Hello`, later requests go through what a session does with them
//!   without sockets (subscription compile + snapshot + log replay, writes applied twice
//!   for idempotency, fetches), against a real [`SqliteStore`].
//! - [`query`]: UTF-8 text compiled as a subscription against the example schema; the
//!   normalized text must compile back to the same shape, and evaluation on fixed rows
//!   must agree with SQLite running the rendered `WHERE`.

use std::ops::ControlFlow;
use std::sync::Arc;

use rusqlite::Connection;
use serde::{de::DeserializeOwned, Serialize};
use sluice::ids::{ClientId, SyncId};
use sluice::query::{self, Params, Shape, Truth};
use sluice::schema::{quote_ident, Schema, Table};
use sluice::store::{LogRead, SqliteStore, Store, StoreOptions, Synchronous, TxnOutcome, WriteTxn};
use sluice::value::{Affinity, Value};
use sluice::wire::MAX_FETCH_KEYS;
use sluice::wire::{
    encode_with_max, BootstrapFrame, ClientFrame, ClientMessage, FrameDecoder, FrameError,
    LiveFrame, ServerFrame, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};

/// The example application schema (issue tracker and chat).
pub const SCHEMA_SQL: &str = concat!(
    include_str!("../../schema/01_tracker.sql"),
    "\n",
    include_str!("../../schema/02_chat.sql")
);

/// Frames one input may carry to [`handshake`]; more are ignored.
pub const MAX_SESSION_FRAMES: usize = 64;

/// Rows a subscription snapshot or log replay reads per request in [`handshake`].
pub const MAX_ROWS_READ: usize = 50;

/// Parameters every fuzzed subscription is bound with.
pub fn params() -> Params {
    Params::new()
        .value("team", Value::Text("T1".into()))
        .value("n", Value::Integer(3))
        .value("x", Value::Real(2.5))
        .value("nothing", Value::Null)
        .value("auth.user", Value::Text("u1".into()))
        .list(
            "auth.teams",
            vec![Value::Text("T1".into()), Value::Text("T2".into())],
        )
        .list(
            "ids",
            vec![Value::Integer(1), Value::Text("1".into()), Value::Null],
        )
}

/// The example schema, parsed.
pub fn schema() -> Schema {
    Schema::parse("schema.sql", SCHEMA_SQL).expect("the example schema parses")
}

// ---------------------------------------------------------------------------------------
// frame decoder

/// Feeds `data[1..]` to one decoder per frame type, in chunks whose size and decoder
/// maximum come from `data[0]`.
/// Returns how many messages were decoded, over all frame types.
pub fn frame_decoder(data: &[u8]) -> usize {
    let Some((&control, body)) = data.split_first() else {
        return 0;
    };
    let max = [16, 300, 4096, MAX_FRAME_BYTES][usize::from(control & 3)];
    let chunk = usize::from(control >> 2) + 1;
    drive::<ClientFrame>(body, max, chunk)
        + drive::<ServerFrame>(body, max, chunk)
        + drive::<LiveFrame>(body, max, chunk)
        + drive::<BootstrapFrame>(body, max, chunk)
}

fn drive<T: Serialize + DeserializeOwned>(body: &[u8], max: usize, chunk: usize) -> usize {
    let mut decoder = FrameDecoder::new(max);
    let mut decoded = 0;
    let mut pushed = 0;
    let mut consumed = 0;
    'chunks: for piece in body.chunks(chunk) {
        decoder.push(piece);
        pushed += piece.len();
        loop {
            let before = decoder.buffered();
            assert_eq!(
                before,
                pushed - consumed,
                "buffered bytes are pushed - consumed"
            );
            match decoder.next::<T>() {
                Ok(Some(message)) => {
                    let frame = before - decoder.buffered();
                    consumed += frame;
                    decoded += 1;
                    check_reencoding(&message, frame, max);
                }
                Ok(None) => break,
                Err(FrameError::Invalid(_)) => consumed += before - decoder.buffered(),
                Err(FrameError::TooLarge { len, max: limit }) => {
                    assert!(len > limit && limit == max, "{len} > {limit} (max {max})");
                    // The stream cannot be trusted any more, and nothing was buffered
                    // beyond what arrived.
                    assert_eq!(decoder.buffered(), pushed - consumed);
                    break 'chunks;
                }
                Err(other) => panic!("next() returned {other:?}"),
            }
        }
    }
    if decoder.buffered() == 0 {
        assert_eq!(decoder.finish(), Ok(()));
    } else {
        assert!(decoder.finish().is_err());
    }
    decoded
}

/// A decoded message re-encodes to a frame no longer than the `frame` bytes it came from
/// (postcard's canonical form is the shortest), which decodes to the same encoding.
fn check_reencoding<T: Serialize + DeserializeOwned>(message: &T, frame: usize, max: usize) {
    let mut bytes = Vec::new();
    encode_with_max(message, max, &mut bytes).expect("a decoded message re-encodes");
    assert!(
        bytes.len() <= frame,
        "re-encoded frame of {} bytes is longer than the {frame} received",
        bytes.len()
    );
    let mut decoder = FrameDecoder::new(max);
    decoder.push(&bytes);
    let again: T = decoder
        .next()
        .expect("re-encoded frame decodes")
        .expect("re-encoded frame is whole");
    let mut bytes_again = Vec::new();
    encode_with_max(&again, max, &mut bytes_again).expect("re-encodes");
    assert_eq!(bytes, bytes_again, "encoding is stable across a round trip");
}

// ---------------------------------------------------------------------------------------
// handshake and requests

/// A server store for [`handshake`] inputs, in a temporary folder removed on drop.
pub struct SessionEnv {
    pub schema: Arc<Schema>,
    pub store: SqliteStore,
    _dir: tempfile::TempDir,
}

impl SessionEnv {
    pub fn new() -> SessionEnv {
        let dir = tempfile::tempdir().expect("temporary folder");
        let schema = Arc::new(schema());
        let options = StoreOptions::default().synchronous(Synchronous::Normal);
        let store = SqliteStore::open(dir.path().join("fuzz.db"), schema.clone(), options)
            .expect("store opens");
        SessionEnv {
            schema,
            store,
            _dir: dir,
        }
    }
}

impl Default for SessionEnv {
    fn default() -> SessionEnv {
        SessionEnv::new()
    }
}

/// Treats `data` as what a client sends on its control stream. Returns how many requests
/// after the handshake were handled (0 when the handshake was refused).
pub fn handshake(env: &SessionEnv, data: &[u8]) -> usize {
    let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
    decoder.push(data);
    // The server refuses anything but a well-formed Hello of its protocol version.
    let client_id = match decoder.next::<ClientFrame>() {
        Ok(Some(ClientFrame::V1(ClientMessage::Hello {
            protocol,
            client_id,
            token,
            ..
        }))) if protocol == PROTOCOL_VERSION => {
            let _ = token.as_deref().map(str::len);
            client_id
        }
        _ => return 0,
    };
    let mut handled = 0;
    for _ in 0..MAX_SESSION_FRAMES {
        match decoder.next::<ClientFrame>() {
            Ok(Some(ClientFrame::V1(message))) => {
                request(env, &client_id, message);
                handled += 1;
            }
            Ok(None) | Err(FrameError::TooLarge { .. }) => break,
            Err(_) => continue,
        }
    }
    handled
}

fn request(env: &SessionEnv, client_id: &ClientId, message: ClientMessage) {
    match message {
        ClientMessage::Subscribe {
            sql,
            params,
            resume_after,
            ..
        } => {
            if let Ok(shape) = query::compile(&env.schema, &sql, &params) {
                subscribe(env, &shape, resume_after);
            }
        }
        ClientMessage::Write {
            seq,
            mutations,
            preconditions,
        } => write(
            env,
            WriteTxn {
                origin: Some((client_id.clone(), seq)),
                mutations,
                preconditions,
            },
        ),
        ClientMessage::Fetch { table, keys, .. } => {
            if keys.len() > MAX_FETCH_KEYS {
                return;
            }
            if let Some(table) = env.schema.table(&table) {
                let (_, rows) = env
                    .store
                    .fetch(&table.name, &keys)
                    .expect("fetch of a known table");
                assert!(rows.len() <= keys.len(), "at most one row per key");
                for row in rows {
                    assert_eq!(row.len(), table.columns.len(), "full rows");
                }
            }
        }
        _ => {}
    }
}

/// What a bootstrap does: the snapshot (every row must satisfy the shape as evaluated in
/// memory: SQLite and the evaluator agree) or the log replay after `resume_after`.
fn subscribe(env: &SessionEnv, shape: &Shape, resume_after: Option<SyncId>) {
    env.store.count_estimate(shape).expect("count estimate");
    match resume_after {
        None => {
            let mut read = 0;
            env.store
                .snapshot(shape, &mut |row| {
                    assert!(
                        shape.matches(&row),
                        "snapshot row {row:?} fails {}",
                        shape.text()
                    );
                    read += 1;
                    if read >= MAX_ROWS_READ {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .expect("snapshot");
        }
        Some(after) => {
            let mut read = 0;
            let outcome = env
                .store
                .read_log(after, &mut |change| {
                    assert!(change.sync_id > after, "replay starts after {after:?}");
                    for image in [&change.old, &change.new].into_iter().flatten() {
                        let _ = shape.matches(image);
                    }
                    read += 1;
                    if read >= MAX_ROWS_READ {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .expect("log read");
            if after < env.store.horizon() {
                assert!(matches!(outcome, LogRead::Compacted { .. }) || read == 0);
            }
        }
    }
}

/// Applies a client transaction, then resends it: the resend must return the stored
/// outcome and commit nothing new.
fn write(env: &SessionEnv, txn: WriteTxn) {
    let first = apply_one(env, txn.clone());
    let head = env.store.head();
    let second = apply_one(env, txn);
    assert_eq!(env.store.head(), head, "a resend commits nothing");
    match (&first, &second) {
        (TxnOutcome::Committed { sync_id: a, .. }, TxnOutcome::Committed { sync_id: b, .. }) => {
            assert_eq!(a, b, "a resend returns the original sync id")
        }
        (TxnOutcome::Rejected { code: a, .. }, TxnOutcome::Rejected { code: b, .. }) => {
            assert_eq!(a, b, "a resend returns the original rejection")
        }
        _ => panic!("resend outcome {second:?} differs from {first:?}"),
    }
}

fn apply_one(env: &SessionEnv, txn: WriteTxn) -> TxnOutcome {
    let mut outcomes = env
        .store
        .apply(vec![txn])
        .expect("the database does not fail");
    assert_eq!(outcomes.len(), 1, "one outcome per transaction");
    outcomes.remove(0)
}

// ---------------------------------------------------------------------------------------
// subscription compiler and evaluator

/// An in-memory SQLite database holding a few fixed rows per table of the example schema,
/// stored with the tables' declared types (so SQLite applied column affinity) but no
/// constraints, and the same rows as read back.
pub struct Oracle {
    schema: Schema,
    conn: Connection,
    rows: std::collections::HashMap<String, Vec<(i64, Vec<Value>)>>,
}

impl Oracle {
    pub fn new() -> Oracle {
        let schema = schema();
        let conn = Connection::open_in_memory().expect("in-memory database");
        let mut rows = std::collections::HashMap::new();
        for table in schema.tables() {
            let columns: Vec<String> = table
                .columns
                .iter()
                .map(|c| format!("{} {}", quote_ident(&c.name), c.declared_type))
                .collect();
            let name = quote_ident(&table.name);
            conn.execute_batch(&format!("CREATE TABLE {name} ({})", columns.join(", ")))
                .expect("create table");
            let marks = vec!["?"; table.columns.len()].join(", ");
            let insert = format!("INSERT INTO {name} VALUES ({marks})");
            for row in fixed_rows(table) {
                conn.execute(&insert, rusqlite::params_from_iter(row.iter()))
                    .expect("insert fixed row");
            }
            let mut stmt = conn
                .prepare(&format!("SELECT rowid, * FROM {name} ORDER BY rowid"))
                .expect("select");
            let stored: Vec<(i64, Vec<Value>)> = stmt
                .query_map([], |r| {
                    let mut row = Vec::with_capacity(table.columns.len());
                    for i in 0..table.columns.len() {
                        row.push(r.get::<_, Value>(i + 1)?);
                    }
                    Ok((r.get(0)?, row))
                })
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            rows.insert(table.name.clone(), stored);
        }
        Oracle { schema, conn, rows }
    }
}

impl Default for Oracle {
    fn default() -> Oracle {
        Oracle::new()
    }
}

/// Rows exercising NULLs, each storage class in each column, and edge values.
fn fixed_rows(table: &Table) -> Vec<Vec<Value>> {
    let pick = |variant: usize, col: usize, affinity: Affinity| -> Value {
        match (variant + col) % 9 {
            0 => Value::Null,
            1 => Value::Integer(3),
            2 => Value::Text("T1".into()),
            3 => Value::Real(2.5),
            4 => Value::Text("10".into()),
            5 => Value::Blob(vec![0, 0x54, 0x31]),
            6 => Value::Integer(i64::MIN),
            7 => Value::Text(
                if affinity == Affinity::Text {
                    "a_b%"
                } else {
                    ""
                }
                .into(),
            ),
            _ => Value::Real(-0.0),
        }
    };
    (0..9)
        .map(|variant| {
            table
                .columns
                .iter()
                .enumerate()
                .map(|(col, c)| pick(variant, col, c.affinity))
                .collect()
        })
        .collect()
}

/// Compiles `data` (if UTF-8) as a subscription and as `sluice exec` writes, and checks
/// the compiled shape against SQLite. Returns whether it compiled as a subscription.
pub fn query(oracle: &Oracle, data: &[u8]) -> bool {
    let Ok(sql) = std::str::from_utf8(data) else {
        return false;
    };
    let _ = query::check(&oracle.schema, sql);
    let _ = query::parse_writes(&oracle.schema, sql);
    let Ok(shape) = query::compile(&oracle.schema, sql, &params()) else {
        return false;
    };
    let again = query::compile(&oracle.schema, shape.text(), &Params::new())
        .unwrap_or_else(|e| panic!("normalized text {:?} does not compile: {e}", shape.text()));
    assert_eq!(
        again.text(),
        shape.text(),
        "normalized text is a fixed point"
    );
    assert_eq!(again.id(), shape.id());

    let table = shape.table();
    let width = shape
        .projection()
        .map_or(table.columns.len(), <[usize]>::len);
    let (where_sql, values) = query::where_sql(shape.filter(), table);
    let select = format!(
        "SELECT rowid FROM {} WHERE {where_sql} ORDER BY rowid",
        quote_ident(&table.name)
    );
    let selected: Vec<i64> = {
        let mut stmt = oracle
            .conn
            .prepare(&select)
            .unwrap_or_else(|e| panic!("rendered WHERE {select:?} is invalid: {e}"));
        stmt.query_map(rusqlite::params_from_iter(values.iter()), |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    for (rowid, row) in &oracle.rows[&table.name] {
        let truth = shape.filter().eval(row);
        assert_eq!(shape.matches(row), truth == Truth::True);
        assert_eq!(
            truth == Truth::True,
            selected.contains(rowid),
            "{} on {row:?}: evaluator says {truth:?}, SQLite ran {select:?} with {values:?}",
            shape.text()
        );
        assert_eq!(shape.project(row).len(), width);
    }
    true
}
