//! What a caller is told, and what it keeps, when what it may read differs from what the
//! app knows or from what it was allowed before: the handshake's schema names only the
//! tables and columns the caller may know of, a client store keeps the server's narrower
//! form across restarts, and a resume under changed claims starts the subscription over
//! instead of keeping rows the caller may no longer read.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::auth::{start_with_rules, token, SECRET};
use common::client::{config_at, eventually, ids, subscribed};
use common::permissions::{oracle, seed_issues};
use common::*;
use sluice::auth::JwtAuthenticator;
use sluice::client::Client as AppClient;
use sluice::schema::Schema;
use sluice::server::{Server, ServerHandle};
use sluice::store::Mutation;

fn user_row(id: &str) -> Mutation {
    Mutation::Insert {
        table: "users".into(),
        values: vec![
            ("id".into(), text(id)),
            ("name".into(), text(&format!("name of {id}"))),
            ("email".into(), text(&format!("{id}@example.com"))),
            ("password_hash".into(), text("secret-hash")),
        ],
    }
}

/// A real client of `server` presenting `token`, starting from the app's full schema.
async fn app_client(server: &ServerHandle, db: &std::path::Path, token: String) -> AppClient {
    let schema = Schema::load_dir(&schema_dir()).unwrap();
    let config = config_at(server.local_addr(), server.cert_path().unwrap(), db)
        .token(token)
        .schema(schema);
    AppClient::open(config).await.unwrap()
}

#[tokio::test]
async fn the_handshake_names_only_what_the_caller_may_know() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("narrow.rules");
    std::fs::write(
        &rules,
        "ALLOW READ ON issues WHERE team_id IN :auth.teams;
         ALLOW READ ON users; HIDE users.password_hash;
         ALLOW INSERT ON comments WHERE author_id = :auth.sub;",
    )
    .unwrap();
    let server = Server::builder(schema_dir(), dir.path().join("app.db"))
        .listen("127.0.0.1:0".parse().unwrap())
        .authenticator(Arc::new(JwtAuthenticator::new(SECRET)))
        .rules_file(rules)
        .start()
        .await
        .unwrap();
    let ca = server.cert_path().unwrap().to_path_buf();
    let client = common::Client::connect_with(
        server.local_addr(),
        &ca,
        "phone",
        Some(token("alice", &["T1"])),
    )
    .await
    .unwrap();
    let told = &client.conn.welcome().schema_sql;
    let schema = Schema::parse("told", told).unwrap();
    let tables: BTreeSet<&str> = schema.tables().map(|t| t.name.as_str()).collect();
    // Readable tables, and a write-only one (its columns are needed to write it); no
    // closed table and no hidden column is mentioned, not even in a constraint.
    assert_eq!(
        tables,
        BTreeSet::from(["comments", "issues", "users"]),
        "{told}"
    );
    assert!(!told.contains("password_hash"), "{told}");
    for closed in ["messages", "rooms", "teams", "labels"] {
        assert!(!told.contains(closed), "{closed} named in {told}");
    }
    let users: Vec<&str> = schema
        .table("users")
        .unwrap()
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(users, ["id", "name", "email", "created_at"]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_store_keeps_the_servers_narrower_table_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_rules(dir.path()).await;
    write_committed(&server, vec![user_row("u1"), user_row("u2")]).await;
    let local = tempfile::tempdir().unwrap();
    let db = local.path().join("c.db");
    let client = app_client(&server, &db, token("alice", &["T1"])).await;
    subscribed(&client, "SELECT * FROM users").await;
    assert_eq!(
        ids(&client, "SELECT id FROM users ORDER BY id"),
        ["u1", "u2"]
    );
    client.close().await;
    let (addr, ca) = (
        server.local_addr(),
        server.cert_path().unwrap().to_path_buf(),
    );
    server.shutdown().await;

    // Offline (nothing listens any more), with the same app schema, which has the
    // hidden column: the rows are still there, in the server's form.
    let schema = Schema::load_dir(&schema_dir()).unwrap();
    let config = config_at(addr, &ca, &db)
        .token(token("alice", &["T1"]))
        .schema(schema);
    let client = AppClient::open(config).await.unwrap();
    assert_eq!(
        ids(&client, "SELECT id FROM users ORDER BY id"),
        ["u1", "u2"]
    );
    assert!(
        client
            .query("SELECT password_hash FROM users", &[])
            .is_err(),
        "the hidden column is not in the local store"
    );
    client.close().await;
}

#[tokio::test]
async fn a_resume_under_changed_claims_drops_rows_no_longer_readable() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_rules(dir.path()).await;
    write_committed(&server, seed_issues()).await;
    let db_path = dir.path().join("app.db");
    let local = tempfile::tempdir().unwrap();
    let db = local.path().join("c.db");
    let all = "SELECT * FROM issues";
    let client = app_client(&server, &db, token("alice", &["T1", "T2"])).await;
    subscribed(&client, all).await;
    let both = oracle(&db_path, "1", "team_id IN ('T1', 'T2')");
    let local_ids = |c: &AppClient| -> BTreeSet<String> {
        ids(c, "SELECT id FROM issues").into_iter().collect()
    };
    assert_eq!(local_ids(&client), both);
    client.close().await;

    // Alice left team T2. Nothing changed in the data since the client's cut, so no
    // change in the log would ever remove T2's issues: the resume must be refused and
    // the subscription bootstrapped again under the new rule.
    let only_t1 = oracle(&db_path, "1", "team_id IN ('T1')");
    assert!(only_t1.len() < both.len());
    let client = app_client(&server, &db, token("alice", &["T1"])).await;
    eventually("T2's issues leave the local store", || {
        let now = local_ids(&client);
        // At every poll: the old rows whole, or the new ones whole (atomic replacement).
        assert!(now == both || now == only_t1, "a torn state: {now:?}");
        now == only_t1
    })
    .await;

    // The same claims again: the resume is accepted and nothing is sent twice.
    client.close().await;
    write_committed(
        &server,
        vec![common::permissions::issue("n1", "T1", "alice", "todo", 1)],
    )
    .await;
    let client = app_client(&server, &db, token("alice", &["T1"])).await;
    let mut expected = only_t1.clone();
    expected.insert("n1".to_string());
    eventually("the resumed subscription sees the new issue", || {
        local_ids(&client) == expected
    })
    .await;
    client.close().await;
    server.shutdown().await;
}
