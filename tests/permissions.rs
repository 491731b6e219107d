//! Permissions over real QUIC: HS256 tokens at the handshake, read rules ANDed into
//! subscriptions, fetches and resumes, hidden columns, write rules checked atomically,
//! and adversarial clients trying to escape all of it. SQLite is the oracle: every user
//! must see exactly `subscription AND rule`, and nothing else, ever.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use serde_json::json;
use sluice::auth::{Claims, JwtAuthenticator};
use sluice::client::{ConnectOptions, Connection, ConnectionError, Event};
use sluice::ids::{ClientId, SubId, SyncId};
use sluice::query::Params;
use sluice::server::{Server, ServerHandle};
use sluice::store::{Mutation, RejectCode};
use sluice::value::Value;
use sluice::wire::{
    BootstrapFrame, ClientMessage, MoveOut, RefuseCode, RowEvent, ServerMessage, WriteOutcome,
};

const SECRET: &str = "permissions-test-secret";
const TEAMS: [&str; 4] = ["T1", "T2", "T3", "T4"];
/// Column indexes in `issues`.
const ISSUE_TEAM: usize = 1;
const USERS_WIDTH_VISIBLE: usize = 4;

fn rules_file() -> PathBuf {
    schema_dir().join("access.rules")
}

struct AuthServer {
    dir: tempfile::TempDir,
    handle: ServerHandle,
}

impl AuthServer {
    async fn start() -> AuthServer {
        let dir = tempfile::tempdir().unwrap();
        let handle = Server::builder(schema_dir(), dir.path().join("app.db"))
            .listen("127.0.0.1:0".parse().unwrap())
            .authenticator(Arc::new(JwtAuthenticator::new(SECRET)))
            .rules_file(rules_file())
            .start()
            .await
            .unwrap();
        AuthServer { dir, handle }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("app.db")
    }

    async fn connect(&self, id: &str, token: Option<String>) -> Result<Client, ConnectionError> {
        let ca = self.handle.cert_path().unwrap().to_path_buf();
        let conn = Connection::connect(ConnectOptions {
            addr: self.handle.local_addr(),
            ca: &ca,
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

    async fn user(&self, user: &User) -> Client {
        self.connect(&format!("client-{}", user.sub), Some(user.token()))
            .await
            .unwrap()
    }

    async fn write(&self, mutations: Vec<Mutation>) -> SyncId {
        let txn = sluice::store::WriteTxn {
            origin: None,
            mutations,
            preconditions: Vec::new(),
        };
        match self.handle.write(txn).await.unwrap() {
            sluice::store::TxnOutcome::Committed { sync_id, .. } => sync_id,
            other => panic!("backend write failed: {other:?}"),
        }
    }
}

/// A test user: its token claims and what its read rule on issues means in SQL.
struct User {
    sub: &'static str,
    teams: Option<serde_json::Value>,
}

impl User {
    fn token(&self) -> String {
        let mut claims = Claims::for_user(self.sub);
        if let Some(teams) = &self.teams {
            claims = claims.with("teams", teams.clone()).unwrap();
        }
        JwtAuthenticator::new(SECRET).sign(&claims)
    }

    /// The teams the user may read, as the rule binds them.
    fn team_list(&self) -> Vec<String> {
        match &self.teams {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }

    /// The read rule of `issues` as SQLite text (a missing claim binds as NULL).
    fn rule_sql(&self) -> String {
        if self.teams.is_none() {
            return "team_id IN (NULL)".into();
        }
        let list: Vec<String> = self.team_list().iter().map(|t| format!("'{t}'")).collect();
        format!("team_id IN ({})", list.join(", "))
    }

    fn may_read_team(&self, team: &Value) -> bool {
        matches!(team, Value::Text(t) if self.team_list().contains(t))
    }
}

fn users() -> Vec<User> {
    vec![
        User {
            sub: "alice",
            teams: Some(json!(["T1", "T2"])),
        },
        User {
            sub: "bob",
            teams: Some(json!(["T2"])),
        },
        User {
            sub: "carol",
            teams: Some(json!([])),
        },
        User {
            sub: "dave",
            teams: Some(json!("T3")),
        },
        User {
            sub: "mallory",
            teams: None,
        },
    ]
}

fn issue(id: &str, team: &str, creator: &str, status: &str, priority: i64) -> Mutation {
    Mutation::Insert {
        table: "issues".into(),
        values: vec![
            ("id".into(), text(id)),
            ("team_id".into(), text(team)),
            ("number".into(), Value::Integer(1)),
            ("title".into(), text(&format!("issue {id}"))),
            ("status".into(), text(status)),
            ("priority".into(), Value::Integer(priority)),
            ("creator_id".into(), text(creator)),
        ],
    }
}

/// A deterministic spread of issues over four teams, some with NULL assignees.
fn seed_issues() -> Vec<Mutation> {
    let statuses = ["todo", "doing", "done"];
    (0..48)
        .map(|i| {
            let team = TEAMS[i % 4];
            let creator = ["alice", "bob", "carol", "dave"][(i / 4) % 4];
            let mut m = issue(
                &format!("i{i:02}"),
                team,
                creator,
                statuses[i % 3],
                (i % 5) as i64,
            );
            if i % 2 == 0 {
                if let Mutation::Insert { values, .. } = &mut m {
                    values.push(("assignee_id".into(), text("alice")));
                }
            }
            m
        })
        .collect()
}

/// Ids SQLite returns for `SELECT id FROM issues WHERE (where_sql) AND (rule)`.
fn oracle(db: &Path, where_sql: &str, rule: &str) -> BTreeSet<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let sql = format!("SELECT id FROM issues WHERE ({where_sql}) AND ({rule})");
    let mut stmt = conn.prepare(&sql).unwrap();
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

/// Escape attempts: (subscription, the same WHERE for SQLite).
const ESCAPES: [(&str, &str); 10] = [
    ("SELECT * FROM issues", "1"),
    (
        "SELECT * FROM issues WHERE team_id = 'T3' OR team_id IS NULL",
        "team_id = 'T3' OR team_id IS NULL",
    ),
    (
        "SELECT * FROM issues WHERE NOT (team_id = 'T1')",
        "NOT (team_id = 'T1')",
    ),
    (
        "SELECT * FROM issues WHERE NOT (team_id IN ('T1', 'T2') AND priority > 100)",
        "NOT (team_id IN ('T1', 'T2') AND priority > 100)",
    ),
    (
        "SELECT * FROM issues WHERE team_id = ':auth.teams' OR title = ':auth.sub'",
        "team_id = ':auth.teams' OR title = ':auth.sub'",
    ),
    (
        "SELECT * FROM issues WHERE assignee_id IS NULL OR assignee_id IS NOT NULL",
        "assignee_id IS NULL OR assignee_id IS NOT NULL",
    ),
    (
        "SELECT * FROM issues WHERE priority >= 0 OR priority < 0 OR priority IS NULL",
        "priority >= 0 OR priority < 0 OR priority IS NULL",
    ),
    (
        "SELECT id, team_id, title FROM issues WHERE status != 'x' OR status IS NULL",
        "status != 'x' OR status IS NULL",
    ),
    (
        "SELECT * FROM issues WHERE team_id LIKE '%' OR NOT (team_id LIKE '%')",
        "team_id LIKE '%' OR NOT (team_id LIKE '%')",
    ),
    (
        "SELECT * FROM issues WHERE status = 'todo' AND NOT (team_id NOT IN ('T4'))",
        "status = 'todo' AND NOT (team_id NOT IN ('T4'))",
    ),
];

/// Applies one event to the client, first checking that no `issues` row image it
/// carries breaks the user's read rule. Returns the number of leaked rows in it.
fn check_and_handle(client: &mut Client, user: &User, event: Event) -> usize {
    let mut leaks = 0;
    let mut check = |row: &[Value]| {
        if !user.may_read_team(&row[ISSUE_TEAM]) {
            leaks += 1;
        }
    };
    match &event {
        Event::Bootstrap(sub, BootstrapFrame::Row { row, .. }) if *sub != SENTINEL => check(row),
        Event::Bootstrap(
            sub,
            BootstrapFrame::Replay {
                event: RowEvent::Insert { row, .. } | RowEvent::Update { row, .. },
                ..
            },
        ) if *sub != SENTINEL => check(row),
        Event::Live(txn) => {
            for (_, table, e) in &txn.events {
                if let RowEvent::Insert { row, .. } | RowEvent::Update { row, .. } = e {
                    if table == "issues" {
                        check(row)
                    }
                }
            }
        }
        _ => {}
    }
    client.handle(event);
    leaks
}

async fn drive(
    client: &mut Client,
    user: &User,
    what: &str,
    reasons: &mut Vec<(String, MoveOut)>,
    done: impl Fn(&Client) -> bool,
) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut leaks = 0;
    while !done(client) {
        let event = match tokio::time::timeout_at(deadline, client.conn.next_event()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("{}: connection ended waiting for {what}", user.sub),
            Err(_) => panic!("{}: timed out waiting for {what}", user.sub),
        };
        if let Event::Live(txn) = &event {
            for (_, _, e) in &txn.events {
                if let RowEvent::Delete { key, reason } = e {
                    reasons.push((key_string(key), *reason));
                }
            }
        }
        leaks += check_and_handle(client, user, event);
    }
    leaks
}

/// A subscription every user has, to learn when all earlier transactions have arrived.
const SENTINEL: SubId = SubId(50);

fn sentinel_user() -> Mutation {
    Mutation::Insert {
        table: "users".into(),
        values: vec![
            ("id".into(), text("sentinel")),
            ("name".into(), text("S")),
            ("email".into(), text("s@example.com")),
        ],
    }
}

#[tokio::test]
async fn escape_attempts_see_exactly_subscription_and_rule() {
    let server = AuthServer::start().await;
    server.write(seed_issues()).await;
    let users = users();
    let mut clients = Vec::new();
    let mut leaks = 0;
    let mut reasons: Vec<Vec<(String, MoveOut)>> = Vec::new();
    for user in &users {
        let mut client = server.user(user).await;
        for (n, (sql, _)) in ESCAPES.iter().enumerate() {
            client.subscribe(n as u64 + 1, sql, None).await;
        }
        // Every user may read users: the sentinel write below reaches everyone.
        client
            .subscribe(SENTINEL, "SELECT * FROM users", None)
            .await;
        // A constant predicate is refused outright.
        client
            .subscribe(
                99,
                "SELECT * FROM issues WHERE team_id = 'T3' OR 1 = 1",
                None,
            )
            .await;
        let mut r = Vec::new();
        leaks += drive(&mut client, user, "snapshots", &mut r, |c| {
            (1..=ESCAPES.len() as u64).all(|s| c.sub(s).end.is_some())
                && c.sub(99).failed.is_some()
                && c.sub(SENTINEL).end.is_some()
        })
        .await;
        assert!(client.sub(99).failed.as_ref().unwrap().contains("constant"));
        reasons.push(r);
        clients.push(client);
    }

    // Live changes: moves between teams, a status change, inserts into every team, and
    // deletes, written by the backend.
    server
        .write(vec![
            set_issue("i00", "team_id", text("T3")), // T1 -> T3: alice loses it
            set_issue("i02", "team_id", text("T2")), // T3 -> T2: alice and bob gain it
            set_issue("i05", "status", text("done")), // T2, within
            set_issue("i03", "team_id", text("T1")), // T4 -> T1
        ])
        .await;
    let mut writes = Vec::new();
    for (i, team) in TEAMS.iter().enumerate() {
        writes.push(issue(&format!("n{i}"), team, "alice", "todo", 7));
    }
    server.write(writes).await;
    server
        .write(vec![delete_issue("i01"), delete_issue("i06")])
        .await;
    server
        .write(vec![set_issue("i04", "team_id", text("T4"))]) // T1 -> T4
        .await;
    let last = server.write(vec![sentinel_user()]).await;

    let mut checked = 0;
    for ((user, client), reasons) in users.iter().zip(&mut clients).zip(&mut reasons) {
        leaks += drive(client, user, "live changes", reasons, |c| {
            c.last_sync >= last
        })
        .await;
        for (n, (_, where_sql)) in ESCAPES.iter().enumerate() {
            let sub = n as u64 + 1;
            let expected = oracle(&server.db(), where_sql, &user.rule_sql());
            let seen: BTreeSet<String> = client.sub(sub).rows.keys().cloned().collect();
            assert_eq!(seen, expected, "{} / {}", user.sub, ESCAPES[n].0);
            // Every row ever delivered was readable when delivered (checked above); none
            // of another team even flashed by.
            checked += expected.len();
        }
    }
    assert_eq!(leaks, 0, "rows outside the read rule were delivered");
    assert!(checked > 0);
    // alice's unfiltered subscription lost i00 and i04 because they left her teams.
    let alice = &reasons[0];
    assert!(
        alice.contains(&("i00".into(), MoveOut::Forbidden)),
        "{alice:?}"
    );
    assert!(
        alice.contains(&("i04".into(), MoveOut::Forbidden)),
        "{alice:?}"
    );
    assert!(
        alice.contains(&("i01".into(), MoveOut::Deleted)),
        "{alice:?}"
    );
}

#[tokio::test]
async fn move_out_reason_tells_forbidden_from_moved_out() {
    let server = AuthServer::start().await;
    server
        .write(vec![
            issue("a", "T1", "bob", "todo", 1),
            issue("b", "T1", "bob", "todo", 1),
        ])
        .await;
    let alice = &users()[0];
    let mut client = server.user(alice).await;
    client
        .subscribe(1, "SELECT * FROM issues WHERE status = 'todo'", None)
        .await;
    let mut reasons = Vec::new();
    drive(&mut client, alice, "snapshot", &mut reasons, |c| {
        c.sub(1).end.is_some()
    })
    .await;
    server
        .write(vec![set_issue("a", "status", text("done"))])
        .await;
    let last = server
        .write(vec![set_issue("b", "team_id", text("T4"))])
        .await;
    drive(&mut client, alice, "moves", &mut reasons, |c| {
        c.last_sync >= last
    })
    .await;
    assert_eq!(
        reasons,
        vec![
            ("a".to_string(), MoveOut::MovedOut),
            ("b".to_string(), MoveOut::Forbidden)
        ]
    );
}

#[tokio::test]
async fn resume_from_zero_replays_only_readable_rows() {
    let server = AuthServer::start().await;
    server.write(seed_issues()).await;
    server
        .write(vec![set_issue("i00", "team_id", text("T4"))])
        .await;
    server
        .write(vec![set_issue("i03", "team_id", text("T2"))])
        .await;
    server.write(vec![delete_issue("i05")]).await;
    for user in users() {
        let mut client = server.user(&user).await;
        client
            .subscribe(1, "SELECT * FROM issues", Some(SyncId::ZERO))
            .await;
        let mut leaks = 0;
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut replayed_forbidden = Vec::new();
        while client.sub(1).end.is_none() {
            let event = tokio::time::timeout_at(deadline, client.conn.next_event())
                .await
                .expect("replay in time")
                .expect("connection open");
            if let Event::Bootstrap(
                _,
                BootstrapFrame::Replay {
                    event:
                        RowEvent::Delete {
                            key,
                            reason: MoveOut::Forbidden,
                        },
                    ..
                },
            ) = &event
            {
                replayed_forbidden.push(key_string(key));
            }
            leaks += check_and_handle(&mut client, &user, event);
        }
        assert_eq!(leaks, 0, "{}: replay leaked rows", user.sub);
        let seen: BTreeSet<String> = client.sub(1).rows.keys().cloned().collect();
        assert_eq!(
            seen,
            oracle(&server.db(), "1", &user.rule_sql()),
            "{}",
            user.sub
        );
        if user.sub == "alice" {
            assert_eq!(replayed_forbidden, vec!["i00".to_string()]);
        }
    }
}

async fn fetch(client: &mut Client, request: u64, table: &str, keys: Vec<Value>) -> ServerMessage {
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

#[tokio::test]
async fn fetches_return_only_readable_rows_and_columns() {
    let server = AuthServer::start().await;
    server.write(seed_issues()).await;
    server
        .write(vec![Mutation::Insert {
            table: "users".into(),
            values: vec![
                ("id".into(), text("alice")),
                ("name".into(), text("Alice")),
                ("email".into(), text("a@example.com")),
                ("password_hash".into(), text("$argon2$secret")),
            ],
        }])
        .await;
    let all_keys: Vec<Value> = (0..48).map(|i| text(&format!("i{i:02}"))).collect();
    for user in users() {
        let mut client = server.user(&user).await;
        match fetch(&mut client, 1, "issues", all_keys.clone()).await {
            ServerMessage::Fetched { rows, .. } => {
                let got: BTreeSet<String> = rows.iter().map(|r| key_string(&r[0])).collect();
                assert_eq!(
                    got,
                    oracle(&server.db(), "1", &user.rule_sql()),
                    "{}",
                    user.sub
                );
                assert!(rows.iter().all(|r| user.may_read_team(&r[ISSUE_TEAM])));
            }
            other => panic!("{other:?}"),
        }
        match fetch(&mut client, 2, "users", vec![text("alice")]).await {
            ServerMessage::Fetched { rows, columns, .. } => {
                assert_eq!(columns, vec!["id", "name", "email", "created_at"]);
                assert_eq!(rows.len(), 1);
                assert_eq!(rows[0].len(), USERS_WIDTH_VISIBLE);
                assert!(!rows[0].contains(&text("$argon2$secret")));
            }
            other => panic!("{other:?}"),
        }
        // Messages of rooms the user has not joined (no `rooms` claim): nothing.
        match fetch(&mut client, 3, "messages", vec![Value::Integer(1)]).await {
            ServerMessage::Fetched { rows, .. } => assert!(rows.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn hidden_columns_and_auth_params_are_refused() {
    let server = AuthServer::start().await;
    server
        .write(vec![Mutation::Insert {
            table: "users".into(),
            values: vec![
                ("id".into(), text("u1")),
                ("name".into(), text("U")),
                ("email".into(), text("u@example.com")),
                ("password_hash".into(), text("hash!")),
            ],
        }])
        .await;
    let alice = &users()[0];
    let mut client = server.user(alice).await;
    client
        .subscribe(1, "SELECT id, password_hash FROM users", None)
        .await;
    client
        .subscribe(
            2,
            "SELECT id FROM users WHERE password_hash LIKE 'h%'",
            None,
        )
        .await;
    client
        .subscribe(
            3,
            "SELECT * FROM users WHERE NOT (password_hash IS NULL)",
            None,
        )
        .await;
    client.subscribe(4, "SELECT * FROM users", None).await;
    client.subs.insert(SubId(5), SubState::default());
    client
        .conn
        .send(ClientMessage::Subscribe {
            sub: SubId(5),
            sql: "SELECT * FROM issues WHERE team_id IN :auth.teams".into(),
            params: Params::new().list("auth.teams", vec![text("T3"), text("T4")]),
            resume_after: None,
        })
        .await
        .unwrap();
    client
        .until("answers", |c| {
            [1, 2, 3, 5].iter().all(|s| c.sub(*s).failed.is_some()) && c.sub(4).end.is_some()
        })
        .await;
    for s in [1, 2, 3] {
        let m = client.sub(s).failed.clone().unwrap();
        assert!(m.contains("password_hash") && m.contains("hidden"), "{m}");
    }
    assert!(client.sub(2).failed.as_ref().unwrap().contains("column 28"));
    assert!(client
        .sub(5)
        .failed
        .as_ref()
        .unwrap()
        .contains(":auth.teams"));
    let row = &client.sub(4).rows["u1"];
    assert_eq!(row.len(), USERS_WIDTH_VISIBLE);
    assert!(!row.contains(&text("hash!")));
    // A live update carries the projected row too.
    let last = server
        .write(vec![Mutation::Update {
            table: "users".into(),
            key: text("u1"),
            set: vec![
                ("name".into(), text("U2")),
                ("password_hash".into(), text("hash2!")),
            ],
        }])
        .await;
    client.until("update", |c| c.last_sync >= last).await;
    let row = &client.sub(4).rows["u1"];
    assert_eq!(row.len(), USERS_WIDTH_VISIBLE);
    assert_eq!(row[1], text("U2"));
    assert!(!row.contains(&text("hash2!")));
}

async fn write_outcome(client: &mut Client, seq: u64, mutations: Vec<Mutation>) -> WriteOutcome {
    client.write(seq, mutations).await;
    client
        .until("write outcome", |c| c.writes.contains_key(&seq))
        .await;
    client.writes[&seq].clone()
}

fn forbidden(outcome: &WriteOutcome) -> bool {
    matches!(
        outcome,
        WriteOutcome::Rejected {
            code: RejectCode::Forbidden,
            ..
        }
    )
}

fn issue_row(db: &Path, id: &str) -> Option<(String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT team_id, title FROM issues WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .ok()
}

#[tokio::test]
async fn writes_are_checked_against_the_rules() {
    let server = AuthServer::start().await;
    server
        .write(vec![
            issue("mine", "T1", "alice", "todo", 1),
            issue("bobs", "T1", "bob", "todo", 1),
            issue("other", "T3", "dave", "todo", 1),
        ])
        .await;
    server
        .write(vec![Mutation::Insert {
            table: "users".into(),
            values: vec![
                ("id".into(), text("alice")),
                ("name".into(), text("Alice")),
                ("email".into(), text("a@example.com")),
            ],
        }])
        .await;
    let alice = &users()[0];
    let mut client = server.user(alice).await;
    let db = server.db();
    let mut refused = 0;
    let mut cases: Vec<(&str, Vec<Mutation>, bool)> = vec![
        (
            "insert into another team",
            vec![issue("x1", "T3", "alice", "todo", 1)],
            false,
        ),
        (
            "insert with a forged creator",
            vec![issue("x2", "T1", "bob", "todo", 1)],
            false,
        ),
        (
            "update a row of another team",
            vec![set_issue("other", "title", text("pwned"))],
            false,
        ),
        (
            "move a row to another team",
            vec![set_issue("mine", "team_id", text("T3"))],
            false,
        ),
        (
            "delete a row created by someone else",
            vec![delete_issue("bobs")],
            false,
        ),
        (
            "delete a row of another team",
            vec![delete_issue("other")],
            false,
        ),
        (
            "an allowed change followed by a forbidden one",
            vec![
                set_issue("mine", "title", text("half")),
                set_issue("other", "title", text("half")),
            ],
            false,
        ),
        (
            "write a hidden column",
            vec![Mutation::Update {
                table: "users".into(),
                key: text("alice"),
                set: vec![("password_hash".into(), text("x"))],
            }],
            false,
        ),
        (
            "insert in own team",
            vec![issue("ok1", "T2", "alice", "todo", 1)],
            true,
        ),
        (
            "edit a row of own team",
            vec![set_issue("bobs", "title", text("edited"))],
            true,
        ),
        (
            "move between own teams",
            vec![set_issue("bobs", "team_id", text("T2"))],
            true,
        ),
        ("delete own row", vec![delete_issue("mine")], true),
        (
            "edit own profile",
            vec![Mutation::Update {
                table: "users".into(),
                key: text("alice"),
                set: vec![("name".into(), text("Alice A."))],
            }],
            true,
        ),
    ];
    for (seq, (what, mutations, allowed)) in cases.drain(..).enumerate() {
        let outcome = write_outcome(&mut client, seq as u64 + 1, mutations).await;
        if allowed {
            assert!(
                matches!(outcome, WriteOutcome::Committed { .. }),
                "{what}: {outcome:?}"
            );
        } else {
            assert!(forbidden(&outcome), "{what}: {outcome:?}");
            refused += 1;
        }
    }
    assert_eq!(refused, 8);
    // Nothing of a refused transaction was written.
    assert_eq!(issue_row(&db, "x1"), None);
    assert_eq!(issue_row(&db, "x2"), None);
    assert_eq!(
        issue_row(&db, "other"),
        Some(("T3".into(), "issue other".into()))
    );
    assert_eq!(issue_row(&db, "bobs"), Some(("T2".into(), "edited".into())));
    assert_eq!(issue_row(&db, "mine"), None);
    assert_eq!(issue_row(&db, "ok1").map(|r| r.0), Some("T2".into()));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let hash: Option<String> = conn
        .query_row(
            "SELECT password_hash FROM users WHERE id = 'alice'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(hash, None);
    // Someone without teams can write nothing to issues.
    let mut mallory = server.user(&users()[4]).await;
    let outcome = write_outcome(
        &mut mallory,
        1,
        vec![issue("m1", "T1", "mallory", "todo", 1)],
    )
    .await;
    assert!(forbidden(&outcome), "{outcome:?}");
    assert_eq!(issue_row(&db, "m1"), None);
}

async fn refusal(server: &AuthServer, token: Option<String>) -> String {
    match server.connect("probe", token).await {
        Err(ConnectionError::Refused { code, message }) => {
            assert_eq!(code, RefuseCode::Unauthenticated);
            message
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("connection accepted"),
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_at_the_handshake() {
    let server = AuthServer::start().await;
    assert!(refusal(&server, None).await.contains("token is required"));
    let expired = Claims {
        exp: Some(sluice::auth::token::unix_now() - 3600),
        ..Claims::for_user("alice")
    };
    let m = refusal(&server, Some(JwtAuthenticator::new(SECRET).sign(&expired))).await;
    assert!(m.contains("expired"), "{m}");
    let forged = JwtAuthenticator::new("not-the-secret").sign(&Claims::for_user("alice"));
    assert!(refusal(&server, Some(forged)).await.contains("signature"));
    assert!(refusal(&server, Some("garbage".into()))
        .await
        .contains("malformed"));
    // A valid token's payload swapped for one with more teams.
    let good = users()[1].token();
    let parts: Vec<&str> = good.split('.').collect();
    use base64::Engine;
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        json!({"sub": "bob", "exp": sluice::auth::token::unix_now() + 999, "teams": ["T1","T2","T3","T4"]})
            .to_string(),
    );
    let tampered = format!("{}.{body}.{}", parts[0], parts[2]);
    assert!(refusal(&server, Some(tampered)).await.contains("signature"));
    assert!(server.connect("ok", Some(good)).await.is_ok());
}

#[tokio::test]
async fn sessions_end_when_the_token_expires_or_the_user_is_disconnected() {
    let server = AuthServer::start().await;
    let short = Claims {
        exp: Some(sluice::auth::token::unix_now() + 2),
        ..Claims::for_user("eve")
    };
    let mut eve = server
        .connect("eve", Some(JwtAuthenticator::new(SECRET).sign(&short)))
        .await
        .unwrap();
    let mut bob = server.user(&users()[1]).await;
    let mut bob2 = server
        .connect("bob-2", Some(users()[1].token()))
        .await
        .unwrap();
    bob.subscribe(1, "SELECT * FROM issues", None).await;
    bob.until("snapshot", |c| c.sub(1).end.is_some()).await;
    assert_eq!(server.handle.disconnect_user("bob"), 2);
    for client in [&mut bob, &mut bob2] {
        let reasons = close_reasons(client).await;
        assert!(
            reasons.iter().any(|r| r.contains("access revoked")),
            "{reasons:?}"
        );
    }
    let reasons = close_reasons(&mut eve).await;
    assert!(
        reasons.iter().any(|r| r.contains("token expired")),
        "{reasons:?}"
    );
}

/// Every reason the client reports for its connection closing, until the connection
/// has reported everything it will.
async fn close_reasons(client: &mut Client) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut reasons = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, client.conn.next_event()).await {
            Ok(Some(Event::Closed(reason))) => reasons.push(reason),
            Ok(Some(_)) => {}
            Ok(None) => return reasons,
            Err(_) if !reasons.is_empty() => return reasons,
            Err(_) => panic!("connection not closed"),
        }
    }
}

#[tokio::test]
async fn identical_bindings_share_one_shape() {
    let server = AuthServer::start().await;
    let same_teams = User {
        sub: "zoe",
        teams: Some(json!(["T2", "T1"])),
    };
    let sql = "SELECT * FROM issues WHERE status = 'todo'";
    let mut a = server.user(&users()[0]).await;
    let mut z = server.user(&same_teams).await;
    let mut b = server.user(&users()[1]).await;
    for c in [&mut a, &mut z, &mut b] {
        c.subscribe(1, sql, None).await;
        c.until("snapshot", |c| c.sub(1).end.is_some()).await;
    }
    assert_eq!(
        server.handle.shape_count(),
        2,
        "alice and zoe share, bob differs"
    );
}

#[tokio::test]
async fn rules_apply_with_no_auth_too() {
    // A rules file without an authenticator: claims are empty, so only rules that need
    // no claim grant anything.
    let dir = tempfile::tempdir().unwrap();
    let handle = Server::builder(schema_dir(), dir.path().join("app.db"))
        .listen("127.0.0.1:0".parse().unwrap())
        .no_auth()
        .rules_file(rules_file())
        .start()
        .await
        .unwrap();
    let mut writer = Client::connect(&handle, handle.cert_path().unwrap(), "w").await;
    let outcome = write_outcome(&mut writer, 1, vec![issue("a", "T1", "x", "todo", 1)]).await;
    assert!(forbidden(&outcome), "{outcome:?}");
    let room = Mutation::Insert {
        table: "rooms".into(),
        values: vec![("id".into(), text("r1")), ("name".into(), text("lobby"))],
    };
    let outcome = write_outcome(&mut writer, 2, vec![room]).await;
    assert!(
        matches!(outcome, WriteOutcome::Committed { .. }),
        "{outcome:?}"
    );
    writer.subscribe(1, "SELECT * FROM rooms", None).await;
    writer.subscribe(2, "SELECT * FROM issues", None).await;
    writer
        .until("snapshots", |c| {
            c.sub(1).end.is_some() && c.sub(2).end.is_some()
        })
        .await;
    assert_eq!(writer.sub(1).rows.len(), 1);
    assert!(writer.sub(2).rows.is_empty());
}

#[test]
fn invalid_rules_fail_startup_with_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("bad.rules");
    std::fs::write(
        &rules,
        "ALLOW READ ON issues\n  WHERE team_id IN :auth.teams AND bogus = 1;",
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(
            Server::builder(schema_dir(), dir.path().join("app.db"))
                .no_auth()
                .rules_file(&rules)
                .start(),
        )
        .err()
        .expect("refused");
    let m = err.to_string();
    assert!(m.contains("bad.rules:2:36") && m.contains("bogus"), "{m}");
}

#[tokio::test]
async fn the_bound_read_rule_is_never_shown_to_the_client() {
    let server = AuthServer::start().await;
    let alice = &users()[0];
    let mut client = server.user(alice).await;
    client
        .subscribe(1, "SELECT * FROM issues WHERE status = 'todo'", None)
        .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let event = tokio::time::timeout_at(deadline, client.conn.next_event())
            .await
            .expect("an answer in time")
            .expect("connection open");
        if let Event::Control(ServerMessage::Subscribed { shape, .. }) = &event {
            assert!(shape.contains("status = 'todo'"), "{shape}");
            assert!(!shape.contains("team_id"), "the rule leaked: {shape}");
            assert!(!shape.contains("T1"), "a claim leaked: {shape}");
            break;
        }
        client.handle(event);
    }
}
