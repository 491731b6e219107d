//! An issue tracker in the spirit of Linear, end to end: a sluice server on the example
//! schema and two clients (Ada and Grace) on team T1. Both subscribe to their team's open
//! issues; Ada goes offline, edits, and comes back; Grace sees her edits live; an edit
//! guarded by a precondition is rejected and rolled back on Ada's side; opening an issue
//! loads its comments lazily and their authors by id through the batch loader.
//!
//! Run with `cargo run --example issue_tracker`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use sluice::client::{Client, ClientConfig, ConnectionState, Interest, ServerAddress};
use sluice::query::Params;
use sluice::server::{Server, ServerHandle};
use sluice::store::{Mutation, WriteTxn};
use sluice::value::Value;
use sluice::wire::WriteOutcome;

const OPEN_ISSUES: &str = "SELECT id, title, status, priority FROM issues \
                           WHERE team_id = :team AND status != 'done'";

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn issue(id: &str, title: &str, priority: i64) -> Mutation {
    Mutation::Insert {
        table: "issues".into(),
        values: vec![
            ("id".into(), text(id)),
            ("team_id".into(), text("T1")),
            ("number".into(), Value::Integer(1)),
            ("title".into(), text(title)),
            ("status".into(), text("todo")),
            ("priority".into(), Value::Integer(priority)),
        ],
    }
}

async fn start_server(dir: &Path, listen: &str) -> Result<ServerHandle> {
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/schema");
    Ok(Server::builder(schema, dir.join("tracker.db"))
        .listen(listen.parse()?)
        .no_auth()
        .start()
        .await?)
}

async fn open_client(server: &ServerHandle, dir: &Path, name: &str) -> Result<Client> {
    let address = ServerAddress::new(server.local_addr(), server.cert_path().expect("cert"));
    let config = ClientConfig::new(dir.join(format!("{name}.db"))).server(address);
    Ok(Client::open(config).await?)
}

fn board(client: &Client) -> Result<String> {
    let rows = client.query("SELECT id, title, status FROM issues ORDER BY id", &[])?;
    let items: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {} [{}]", plain(&r[0]), plain(&r[1]), plain(&r[2])))
        .collect();
    Ok(if items.is_empty() {
        "(empty)".into()
    } else {
        items.join("; ")
    })
}

fn plain(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    for _ in 0..500 {
        if done() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("timed out waiting for {what}")
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path(), "127.0.0.1:0").await?;
    let addr = server.local_addr();
    println!(
        "server: listening on {addr} (SQLite in {})",
        dir.path().display()
    );
    for m in [
        issue("ISS-1", "Crash on launch", 3),
        issue("ISS-2", "Dark mode", 1),
    ] {
        server
            .write(WriteTxn {
                origin: None,
                mutations: vec![m],
                preconditions: vec![],
            })
            .await?;
    }

    let ada = open_client(&server, dir.path(), "ada").await?;
    let grace = open_client(&server, dir.path(), "grace").await?;
    let team = Params::new().value("team", text("T1"));
    for (name, client) in [("ada", &ada), ("grace", &grace)] {
        let sub = client.subscribe(OPEN_ISSUES, team.clone())?;
        let at = sub.ready().await?;
        println!(
            "{name}: subscribed to T1's open issues, synced at #{at}: {}",
            board(client)?
        );
    }
    let mut grace_sees = grace.observe(Interest::Table("issues".into()));

    println!("\n-- ada's laptop loses the network (the server restarts without her) --");
    server.shutdown().await;
    let mut state = ada.state();
    state
        .wait_for(|s| *s == ConnectionState::Offline || *s == ConnectionState::Connecting)
        .await?;
    let edit = ada
        .transaction()
        .update("issues", text("ISS-1"), vec![("status", text("doing"))])
        .insert(
            "issues",
            vec![
                ("id", text("ISS-3")),
                ("team_id", text("T1")),
                ("number", Value::Integer(3)),
                ("title", text("Offline mode")),
                ("status", text("todo")),
            ],
        )
        .commit()?;
    println!(
        "ada (offline): edits ISS-1 and files ISS-3; her board: {}",
        board(&ada)?
    );
    println!(
        "ada (offline): {} transaction waiting in her outbox",
        ada.pending_writes()
    );
    println!("grace: still sees {}", board(&grace)?);

    println!("\n-- the network is back --");
    let server = start_server(dir.path(), &addr.to_string()).await?;
    match edit.outcome().await? {
        WriteOutcome::Committed { sync_id } => {
            println!("ada: her offline edit committed as #{sync_id}")
        }
        WriteOutcome::Rejected { message, .. } => bail!("offline edit rejected: {message}"),
    }
    tokio::time::timeout(Duration::from_secs(10), grace_sees.next()).await?;
    wait_until("grace to see the edits", || {
        board(&grace).map(|b| b.contains("ISS-3")).unwrap_or(false)
    })
    .await?;
    println!("grace: sees ada's edits live: {}", board(&grace)?);

    println!("\n-- a guarded edit: rename ISS-2 only if it is still 'todo' --");
    grace
        .transaction()
        .update("issues", text("ISS-2"), vec![("status", text("doing"))])
        .commit()?
        .outcome()
        .await?;
    println!("grace: moves ISS-2 to 'doing' first");
    wait_until("ada to see grace's change", || {
        board(&ada)
            .map(|b| b.contains("ISS-2 Dark mode [doing]"))
            .unwrap_or(false)
    })
    .await?;
    let guarded = ada
        .transaction()
        .update(
            "issues",
            text("ISS-2"),
            vec![("title", text("Dark mode (ada)"))],
        )
        .expect("issues", text("ISS-2"), "status", text("todo"))
        .commit()?;
    println!(
        "ada: renames ISS-2 expecting status 'todo'; optimistic board: {}",
        board(&ada)?
    );
    match guarded.outcome().await? {
        WriteOutcome::Rejected { code, message } => {
            println!("ada: rejected ({}): {message}", code.as_str());
            println!("ada: rolled back: {}", board(&ada)?);
        }
        WriteOutcome::Committed { .. } => bail!("the guarded edit should have been rejected"),
    }

    println!("\n-- ISS-1 is done: it leaves both boards --");
    server
        .write(WriteTxn {
            origin: None,
            mutations: vec![Mutation::Update {
                table: "issues".into(),
                key: text("ISS-1"),
                set: vec![("status".into(), text("done"))],
            }],
            preconditions: vec![],
        })
        .await?;
    wait_until("ISS-1 to leave", || {
        board(&ada).map(|b| !b.contains("ISS-1")).unwrap_or(false)
            && board(&grace).map(|b| !b.contains("ISS-1")).unwrap_or(false)
    })
    .await?;
    println!("ada:   {}", board(&ada)?);
    println!("grace: {}", board(&grace)?);

    println!("\n-- grace opens ISS-3: its comments load lazily, their authors by id --");
    let mut seed = vec![
        Mutation::Insert {
            table: "users".into(),
            values: vec![
                ("id".into(), text("u-ada")),
                ("name".into(), text("Ada")),
                ("email".into(), text("ada@example.com")),
            ],
        },
        Mutation::Insert {
            table: "users".into(),
            values: vec![
                ("id".into(), text("u-grace")),
                ("name".into(), text("Grace")),
                ("email".into(), text("grace@example.com")),
            ],
        },
    ];
    for (i, author) in ["u-ada", "u-grace", "u-ada"].iter().enumerate() {
        seed.push(Mutation::Insert {
            table: "comments".into(),
            values: vec![
                ("id".into(), text(&format!("C-{i}"))),
                ("issue_id".into(), text("ISS-3")),
                ("team_id".into(), text("T1")),
                ("author_id".into(), text(author)),
                ("body".into(), text(&format!("comment {i}"))),
            ],
        });
    }
    server
        .write(WriteTxn {
            origin: None,
            mutations: seed,
            preconditions: vec![],
        })
        .await?;
    let comments = Params::new().value("issue", text("ISS-3"));
    grace
        .hydrate(
            "SELECT * FROM comments WHERE issue_id = :issue",
            comments,
            Duration::from_secs(60),
        )
        .await?;
    let authors: Vec<Value> = grace
        .query(
            "SELECT author_id FROM comments WHERE issue_id = 'ISS-3' ORDER BY id",
            &[],
        )?
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let users = grace.load_many("users", authors).await?;
    for (i, user) in users.iter().enumerate() {
        let name = user
            .as_ref()
            .map(|u| plain(&u[1]))
            .unwrap_or_else(|| "(unknown)".into());
        println!("grace: comment {i} by {name}");
    }
    let stats = grace.fetch_stats();
    println!(
        "grace: {} author loads -> {} fetch request(s) for {} distinct key(s)",
        users.len(),
        stats.requests,
        stats.keys
    );

    ada.close().await;
    grace.close().await;
    server.shutdown().await;
    Ok(())
}
