//! Lazy loading with the batch loader: the app subscribes to a team's issues only;
//! opening one issue hydrates its comments (a subscription with a time to live) and loads
//! the comment authors by id, all misses of one moment sharing one fetch. Loaded rows are
//! pinned and stay live.
//!
//! Run with `cargo run --example lazy_loading`.

use std::time::Duration;

use anyhow::Result;
use sluice::client::{Client, ClientConfig, ConnectionState, ServerAddress};
use sluice::query::Params;
use sluice::server::Server;
use sluice::store::{Mutation, WriteTxn};
use sluice::value::Value;

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn insert(table: &str, values: &[(&str, Value)]) -> Mutation {
    Mutation::Insert {
        table: table.into(),
        values: values
            .iter()
            .map(|(c, v)| (c.to_string(), v.clone()))
            .collect(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/schema");
    let server = Server::builder(schema, dir.path().join("app.db"))
        .listen("127.0.0.1:0".parse()?)
        .no_auth()
        .start()
        .await?;
    let write = |mutations: Vec<Mutation>| {
        server.write(WriteTxn {
            origin: None,
            mutations,
            preconditions: Vec::new(),
        })
    };
    let mut seed = Vec::new();
    for (id, name) in [("ada", "Ada"), ("bo", "Bo"), ("cy", "Cy"), ("di", "Di")] {
        let email = text(&format!("{id}@example.com"));
        seed.push(insert(
            "users",
            &[("id", text(id)), ("name", text(name)), ("email", email)],
        ));
    }
    seed.push(insert(
        "issues",
        &[
            ("id", text("I-1")),
            ("team_id", text("T1")),
            ("number", Value::Integer(1)),
            ("title", text("Crash on launch")),
            ("assignee_id", text("ada")),
        ],
    ));
    let authors = ["bo", "cy", "bo", "di", "cy", "bo"];
    for (n, author) in authors.iter().enumerate() {
        seed.push(insert(
            "comments",
            &[
                ("id", text(&format!("C-{n}"))),
                ("issue_id", text("I-1")),
                ("team_id", text("T1")),
                ("author_id", text(author)),
                ("body", text(&format!("comment {n}"))),
            ],
        ));
    }
    write(seed).await?;

    let ca = server.cert_path().expect("generated certificate");
    let client = Client::open(
        ClientConfig::new(dir.path().join("client.db"))
            .server(ServerAddress::new(server.local_addr(), ca)),
    )
    .await?;
    let mut state = client.state();
    while *state.borrow_and_update() != ConnectionState::Online {
        state.changed().await?;
    }
    // The app's standing subscription: the team's issues (no comments, no users).
    client
        .subscribe("SELECT * FROM issues WHERE team_id = 'T1'", Params::new())?
        .ready()
        .await?;

    // Navigation: the user opens I-1.
    let issue = &client.query("SELECT id, title, assignee_id FROM issues", &[])?[0];
    println!("opened {} {}", issue[0], issue[1]);
    let comments = client
        .hydrate(
            "SELECT * FROM comments WHERE issue_id = :id",
            Params::new().value("id", issue[0].clone()),
            Duration::from_secs(60),
        )
        .await?;
    let rows = client.query(
        "SELECT author_id, body FROM comments WHERE issue_id = ?1 ORDER BY id",
        std::slice::from_ref(&issue[0]),
    )?;
    println!(
        "hydrated {} comments (subscription {})",
        rows.len(),
        comments.id
    );

    // Authors and the assignee by id: every load of this moment shares one fetch.
    let mut ids: Vec<Value> = rows.iter().map(|r| r[0].clone()).collect();
    ids.push(issue[2].clone());
    let people = client.load_many("users", ids.clone()).await?;
    for (id, person) in ids.iter().zip(&people) {
        let name = person.as_ref().map(|p| p[1].to_string());
        println!("  {id} -> {}", name.unwrap_or_else(|| "(not found)".into()));
    }
    let stats = client.fetch_stats();
    println!(
        "{} loads: {} fetch request(s) for {} distinct key(s), {} coalesced",
        ids.len(),
        stats.requests,
        stats.keys,
        stats.coalesced
    );

    // Loaded again: local hits, no request.
    client.load_many("users", ids.clone()).await?;
    println!(
        "loaded again: still {} fetch request(s), {} local hits",
        client.fetch_stats().requests,
        client.fetch_stats().local_hits
    );

    // Pinned rows stay live.
    let mut observer = client.observe(sluice::client::Interest::Row("users".into(), text("bo")));
    write(vec![Mutation::Update {
        table: "users".into(),
        key: text("bo"),
        set: vec![("name".into(), text("Bo (renamed)"))],
    }])
    .await?;
    tokio::time::timeout(Duration::from_secs(10), observer.next()).await?;
    let bo = client.row("users", &text("bo"))?.expect("pinned");
    println!("live update of a pinned row: bo -> {}", bo[1]);

    client.close().await;
    server.shutdown().await;
    Ok(())
}
