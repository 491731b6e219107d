//! The users, data and oracle of the permission tests: users with `teams` claims, issues
//! spread over four teams, and SQLite evaluating `subscription AND rule`.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::json;
use sluice::auth::{Claims, JwtAuthenticator};
use sluice::store::{Mutation, RejectCode};
use sluice::value::Value;
use sluice::wire::WriteOutcome;

use super::auth::{AuthServer, SECRET};
use super::{text, Client};

pub const TEAMS: [&str; 4] = ["T1", "T2", "T3", "T4"];
/// Column indexes in `issues`.
pub const ISSUE_TEAM: usize = 1;
pub const USERS_WIDTH_VISIBLE: usize = 4;

/// A test user: its token claims and what its read rule on issues means in SQL.
pub struct User {
    pub sub: &'static str,
    pub teams: Option<serde_json::Value>,
}

impl User {
    pub fn token(&self) -> String {
        let mut claims = Claims::for_user(self.sub);
        if let Some(teams) = &self.teams {
            claims = claims.with("teams", teams.clone()).unwrap();
        }
        JwtAuthenticator::new(SECRET).sign(&claims)
    }

    /// The teams the user may read, as the rule binds them.
    pub fn team_list(&self) -> Vec<String> {
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
    pub fn rule_sql(&self) -> String {
        if self.teams.is_none() {
            return "team_id IN (NULL)".into();
        }
        let list: Vec<String> = self.team_list().iter().map(|t| format!("'{t}'")).collect();
        format!("team_id IN ({})", list.join(", "))
    }

    pub fn may_read_team(&self, team: &Value) -> bool {
        matches!(team, Value::Text(t) if self.team_list().contains(t))
    }
}

impl AuthServer {
    /// A protocol client of `user`, with its token.
    pub async fn user(&self, user: &User) -> Client {
        self.connect(&format!("client-{}", user.sub), Some(user.token()))
            .await
            .unwrap()
    }
}

pub fn users() -> Vec<User> {
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

pub fn issue(id: &str, team: &str, creator: &str, status: &str, priority: i64) -> Mutation {
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
pub fn seed_issues() -> Vec<Mutation> {
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
pub fn oracle(db: &Path, where_sql: &str, rule: &str) -> BTreeSet<String> {
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

/// Sends a write and waits for its outcome.
pub async fn write_outcome(
    client: &mut Client,
    seq: u64,
    mutations: Vec<Mutation>,
) -> WriteOutcome {
    client.write(seq, mutations).await;
    client
        .until("write outcome", |c| c.writes.contains_key(&seq))
        .await;
    client.writes[&seq].clone()
}

pub fn forbidden(outcome: &WriteOutcome) -> bool {
    matches!(
        outcome,
        WriteOutcome::Rejected {
            code: RejectCode::Forbidden,
            ..
        }
    )
}
