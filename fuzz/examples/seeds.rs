//! Writes the seed corpus (`corpus/<target>/seed-*`): well-formed and slightly broken
//! inputs that give each fuzz target a head start. Run from the fuzz folder with
//! `cargo run --example seeds`; the output is committed and replayed by the main crate's
//! `fuzz_corpus` test.

use std::path::Path;

use serde::Serialize;
use sluice::ids::{ClientId, SyncId};
use sluice::query::{Params, ShapeId};
use sluice::store::{Mutation, Precondition, RejectCode};
use sluice::value::Value;
use sluice::wire::{
    encode, BootstrapFrame, ClientFrame, ClientMessage, EncodedEvents, EventGroup, Live, LiveFrame,
    MoveOut, RefuseCode, RowEvent, ServerFrame, ServerMessage, SubId, TxnFrame, WriteOutcome,
    PROTOCOL_VERSION,
};

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn frames<T: Serialize>(messages: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        encode(m, &mut out).expect("encode");
    }
    out
}

fn client(m: ClientMessage) -> ClientFrame {
    ClientFrame::V1(m)
}

fn hello(protocol: u32) -> ClientFrame {
    client(ClientMessage::Hello {
        protocol,
        schema_version: None,
        client_id: ClientId("seed-client".into()),
        token: Some("token".into()),
    })
}

fn subscribe(sub: u64, sql: &str, params: Params, resume_after: Option<u64>) -> ClientFrame {
    client(ClientMessage::Subscribe {
        sub: SubId(sub),
        sql: sql.into(),
        params,
        resume_after: resume_after.map(SyncId),
        resume_shape: None,
    })
}

fn insert_issue(id: &str, team: &str, priority: Value) -> Mutation {
    Mutation::Insert {
        table: "issues".into(),
        values: vec![
            ("id".into(), text(id)),
            ("team_id".into(), text(team)),
            ("number".into(), Value::Integer(1)),
            ("title".into(), text("a title")),
            ("priority".into(), priority),
        ],
    }
}

fn write(seq: u64, mutations: Vec<Mutation>, preconditions: Vec<Precondition>) -> ClientFrame {
    client(ClientMessage::Write {
        seq,
        mutations,
        preconditions,
    })
}

fn client_frames() -> Vec<ClientFrame> {
    vec![
        hello(PROTOCOL_VERSION),
        subscribe(
            1,
            "SELECT * FROM issues WHERE team_id = :team",
            Params::new().value("team", text("T1")),
            None,
        ),
        write(1, vec![insert_issue("i1", "T1", Value::Integer(2))], vec![]),
        client(ClientMessage::Fetch {
            request: 1,
            table: "issues".into(),
            keys: vec![text("i1"), Value::Integer(7)],
        }),
        client(ClientMessage::Unsubscribe { sub: SubId(1) }),
    ]
}

fn server_frames() -> Vec<ServerFrame> {
    vec![
        ServerFrame::V1(ServerMessage::Welcome {
            protocol: PROTOCOL_VERSION,
            schema_version: 0x1234_5678,
            schema_sql: "CREATE TABLE t (id TEXT PRIMARY KEY)".into(),
            head: SyncId(10),
            horizon: SyncId(2),
            server_id: "0123456789abcdef0123456789abcdef".into(),
        }),
        ServerFrame::V1(ServerMessage::Refused {
            code: RefuseCode::SchemaMismatch,
            message: "no".into(),
        }),
        ServerFrame::V1(ServerMessage::Subscribed {
            sub: SubId(1),
            shape: "SELECT * FROM issues".into(),
            columns: vec!["id".into(), "title".into()],
            estimate: 3,
        }),
        ServerFrame::V1(ServerMessage::WriteResult {
            seq: 4,
            outcome: WriteOutcome::Rejected {
                code: RejectCode::Schema,
                message: "bad".into(),
            },
        }),
        ServerFrame::V1(ServerMessage::Fetched {
            request: 1,
            sync_id: SyncId(3),
            rows: vec![vec![
                text("i1"),
                Value::Real(1.5),
                Value::Null,
                Value::Blob(vec![1]),
            ]],
            columns: vec!["id".into()],
        }),
    ]
}

fn live_frames() -> Vec<LiveFrame> {
    vec![
        LiveFrame::V1(Live::Txn(TxnFrame {
            sync_id: SyncId(5),
            origin: Some((ClientId("c".into()), 9)),
            groups: vec![
                EventGroup {
                    subs: vec![SubId(1), SubId(3)],
                    events: EncodedEvents::encode(&[(
                        "issues".into(),
                        RowEvent::Insert {
                            key: text("i1"),
                            row: vec![text("i1"), Value::Integer(-3)],
                        },
                    )])
                    .expect("encode"),
                },
                EventGroup {
                    subs: vec![SubId(2)],
                    events: EncodedEvents::encode(&[(
                        "issues".into(),
                        RowEvent::Delete {
                            key: text("i2"),
                            reason: MoveOut::MovedOut,
                        },
                    )])
                    .expect("encode"),
                },
            ],
        })),
        LiveFrame::V1(Live::Joined {
            sub: SubId(1),
            sync_id: SyncId(5),
        }),
    ]
}

fn bootstrap_frames() -> Vec<BootstrapFrame> {
    vec![
        BootstrapFrame::Begin {
            sub: SubId(1),
            table: "issues".into(),
            columns: vec!["id".into(), "title".into()],
            estimate: 2,
            access: ShapeId(1),
        },
        BootstrapFrame::Row {
            key: Value::Integer(1),
            row: vec![Value::Integer(1), text("x")],
        },
        BootstrapFrame::Replay {
            sync_id: SyncId(7),
            event: RowEvent::Update {
                key: Value::Integer(1),
                row: vec![Value::Integer(1), text("y")],
            },
        },
        BootstrapFrame::Progress { sent: 1000 },
        BootstrapFrame::End { sync_id: SyncId(7) },
    ]
}

/// Frame decoder seeds: a control byte (max selector in the low 2 bits, chunk size - 1
/// above) followed by a byte stream.
fn frame_decoder_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let with = |control: u8, body: Vec<u8>| {
        let mut v = vec![control];
        v.extend(body);
        v
    };
    let mut garbage_then_valid = vec![0, 0, 0, 3, 0xFF, 0xFF, 0xFF];
    garbage_then_valid.extend(frames(&[hello(PROTOCOL_VERSION)]));
    let mut truncated = frames(&server_frames());
    truncated.truncate(truncated.len() - 3);
    vec![
        ("client-frames", with(0xFF, frames(&client_frames()))),
        (
            "client-frames-bytewise",
            with(0x03, frames(&client_frames())),
        ),
        ("server-frames", with(0x7B, frames(&server_frames()))),
        ("live-frames", with(0x13, frames(&live_frames()))),
        ("bootstrap-frames", with(0x23, frames(&bootstrap_frames()))),
        ("oversized-prefix", with(0x00, vec![0, 0, 1, 0, 1, 2, 3])),
        ("huge-prefix", with(0xFE, vec![0xFF, 0xFF, 0xFF, 0xFF])),
        ("garbage-then-valid", with(0x0F, garbage_then_valid)),
        ("truncated-stream", with(0x43, truncated)),
        ("empty-frame", with(0x03, vec![0, 0, 0, 0])),
    ]
}

fn handshake_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let session = |rest: Vec<ClientFrame>| {
        let mut all = vec![hello(PROTOCOL_VERSION)];
        all.extend(rest);
        frames(&all)
    };
    vec![
        ("full-session", frames(&client_frames())),
        (
            "writes-and-snapshot",
            session(vec![
                write(
                    1,
                    vec![
                        insert_issue("a", "T1", Value::Integer(1)),
                        insert_issue("b", "T2", text("7")),
                    ],
                    vec![],
                ),
                write(
                    2,
                    vec![Mutation::Update {
                        table: "issues".into(),
                        key: text("a"),
                        set: vec![("status".into(), text("done"))],
                    }],
                    vec![Precondition {
                        table: "issues".into(),
                        key: text("a"),
                        column: "priority".into(),
                        expected: text("1"),
                    }],
                ),
                subscribe(
                    1,
                    "SELECT id, status FROM issues WHERE status != 'done' OR priority > 0",
                    Params::new(),
                    None,
                ),
                write(
                    3,
                    vec![Mutation::Delete {
                        table: "issues".into(),
                        key: text("b"),
                    }],
                    vec![],
                ),
            ]),
        ),
        (
            "rejected-writes",
            session(vec![
                write(1, vec![insert_issue("x", "T1", text("high"))], vec![]),
                write(
                    2,
                    vec![Mutation::Insert {
                        table: "nope".into(),
                        values: vec![],
                    }],
                    vec![],
                ),
                write(
                    3,
                    vec![Mutation::Update {
                        table: "issues".into(),
                        key: text("missing"),
                        set: vec![("id".into(), text("other"))],
                    }],
                    vec![],
                ),
                write(
                    4,
                    vec![Mutation::Insert {
                        table: "messages".into(),
                        values: vec![("id".into(), Value::Real(1.5))],
                    }],
                    vec![],
                ),
            ]),
        ),
        (
            "resume",
            session(vec![
                write(9, vec![insert_issue("r", "T3", Value::Null)], vec![]),
                subscribe(2, "SELECT * FROM issues", Params::new(), Some(0)),
                subscribe(
                    3,
                    "SELECT * FROM issues WHERE id > 'a'",
                    Params::new(),
                    Some(1),
                ),
            ]),
        ),
        (
            "fetches",
            session(vec![
                client(ClientMessage::Fetch {
                    request: 2,
                    table: "ISSUES".into(),
                    keys: vec![text("a"), text("a"), Value::Null, Value::Blob(vec![0])],
                }),
                client(ClientMessage::Fetch {
                    request: 3,
                    table: "messages".into(),
                    keys: vec![Value::Integer(1), text("1"), Value::Real(1.0)],
                }),
            ]),
        ),
        (
            "bad-subscription",
            session(vec![subscribe(
                1,
                "DELETE FROM issues",
                Params::new(),
                None,
            )]),
        ),
        ("old-protocol", frames(&[hello(0)])),
        ("no-hello", frames(&client_frames()[1..])),
        ("second-hello", session(vec![hello(PROTOCOL_VERSION)])),
    ]
}

const QUERY_SEEDS: &[(&str, &str)] = &[
    ("eq-and-ne", "SELECT * FROM issues WHERE team_id = 'T1' AND status != 'done'"),
    ("projection-between", "SELECT id, title FROM issues WHERE priority BETWEEN 1 AND 3"),
    ("not-between", "SELECT * FROM issues WHERE priority NOT BETWEEN '1' AND 3.5"),
    ("in-list", "SELECT * FROM issues WHERE status IN ('todo', 'done', NULL)"),
    ("not-in", "SELECT * FROM issues WHERE priority NOT IN (1, '2', 3.0)"),
    ("in-param", "SELECT * FROM issues WHERE team_id IN :auth.teams"),
    ("params", "SELECT * FROM issues WHERE team_id = :team AND priority < :n OR estimate >= :x"),
    ("null-param", "SELECT * FROM issues WHERE assignee_id = :nothing"),
    ("is-null", "SELECT * FROM issues WHERE assignee_id IS NULL AND estimate IS NOT NULL"),
    ("is-value", "SELECT * FROM issues WHERE priority IS 3 OR title IS NOT 'x'"),
    ("like", "SELECT * FROM issues WHERE title LIKE 'a\\_b%' ESCAPE '\\'"),
    ("not-like", "SELECT * FROM issues WHERE title NOT LIKE '%T_'"),
    ("glob", "SELECT * FROM issues WHERE id GLOB 'T[0-9]*' AND title NOT GLOB '*?'"),
    ("nested-not", "SELECT * FROM issues WHERE NOT (priority > 2 AND (status = 'a' OR NOT team_id = 'T1'))"),
    ("plus-column", "SELECT * FROM issues WHERE +priority = '3' AND number > '10'"),
    ("integer-pk", "SELECT * FROM messages WHERE id >= 3 AND room_id = 'T1'"),
    ("real-column", "SELECT * FROM issues WHERE estimate > 2 AND estimate <= '2.5'"),
    ("truth", "SELECT * FROM rooms WHERE is_private AND NOT topic"),
    ("alias", "SELECT i.id FROM issues AS i WHERE i.priority <> 0"),
    ("blob", "SELECT * FROM issues WHERE description = X'005431'"),
    ("no-where", "SELECT * FROM comments"),
    ("unknown-column", "SELECT * FROM issues WHERE nope = 1"),
    ("unknown-table", "SELECT * FROM nope"),
    ("syntax-error", "SELECT * FROM issues WHERE (priority = "),
    ("join", "SELECT * FROM issues JOIN teams ON issues.team_id = teams.id"),
    ("two-statements", "SELECT * FROM issues; SELECT * FROM teams"),
    ("delete", "DELETE FROM issues WHERE id = 'a'"),
    ("insert", "INSERT INTO issues (id, team_id, number, title) VALUES ('a', 'T1', 1, 'x'), ('b', 'T2', 2, 'y')"),
    ("update", "UPDATE issues SET status = 'done', priority = 2 WHERE id = 'a'"),
    ("unicode", "SELECT * FROM issues WHERE title = 'ÿ€𝄞' OR title LIKE 'É%'"),
    ("big-numbers", "SELECT * FROM issues WHERE priority > 9223372036854775807 OR priority < -9223372036854775808 OR estimate = 1e308"),
    ("hex-and-negative", "SELECT * FROM issues WHERE priority = 0x10 OR priority = -(-3)"),
];

fn write_dir(root: &Path, target: &str, seeds: Vec<(&str, Vec<u8>)>) {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).expect("create corpus folder");
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    write_dir(&root, "frame_decoder", frame_decoder_seeds());
    write_dir(&root, "handshake", handshake_seeds());
    write_dir(
        &root,
        "query",
        QUERY_SEEDS
            .iter()
            .map(|(name, sql)| (*name, sql.as_bytes().to_vec()))
            .collect(),
    );
    println!("seeds written to {}", root.display());
}
