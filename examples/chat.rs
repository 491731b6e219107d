//! A chat with windowed history: a room with a few thousand messages, and a client that
//! shows only the last 50 (`ORDER BY sent_at DESC LIMIT 50`). New messages arrive live
//! and push the oldest out of the window; scrolling up grows the window to 100 and only
//! the 50 older messages travel; a message posted offline shows at the top at once and
//! stays there when the server acknowledges it.
//!
//! Run with `cargo run --example chat`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use sluice::client::{Client, ClientConfig, Interest, ServerAddress};
use sluice::query::Params;
use sluice::server::{Server, ServerHandle};
use sluice::store::{Mutation, WriteTxn};
use sluice::value::Value;
use sluice::wire::WriteOutcome;

/// The room's last `:n` messages, newest first.
const HISTORY: &str = "SELECT id, author_id, body, sent_at FROM messages \
                       WHERE room_id = :room ORDER BY sent_at DESC LIMIT :n";
const MESSAGES: i64 = 3_000;

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn message(id: i64, author: &str, body: &str) -> Mutation {
    Mutation::Insert {
        table: "messages".into(),
        values: vec![
            ("id".into(), Value::Integer(id)),
            ("room_id".into(), text("general")),
            ("author_id".into(), text(author)),
            ("body".into(), text(body)),
            ("sent_at".into(), Value::Integer(id)),
        ],
    }
}

async fn start_server(dir: &Path, listen: &str) -> Result<ServerHandle> {
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/schema");
    Ok(Server::builder(schema, dir.join("chat.db"))
        .listen(listen.parse()?)
        .no_auth()
        .start()
        .await?)
}

async fn backend(server: &ServerHandle, mutations: Vec<Mutation>) -> Result<()> {
    server
        .write(WriteTxn {
            origin: None,
            mutations,
            preconditions: vec![],
        })
        .await?;
    Ok(())
}

/// The window as the app shows it: `(id, body)` newest first. Its rows carry the
/// selected columns plus those the window filters and sorts on, in table order: `id,
/// room_id, author_id, body, sent_at`.
fn window(client: &Client, sub: sluice::wire::SubId) -> Result<Vec<(i64, String)>> {
    Ok(client
        .window(sub)?
        .into_iter()
        .map(|r| {
            let id = match &r[0] {
                Value::Integer(i) => *i,
                _ => -1,
            };
            let body = match &r[3] {
                Value::Text(s) => s.clone(),
                other => other.to_string(),
            };
            (id, body)
        })
        .collect())
}

/// The body of the newest (`first`) or oldest message shown, or `-`.
fn body(shown: &[(i64, String)], first: bool) -> &str {
    let m = if first { shown.first() } else { shown.last() };
    m.map_or("-", |m| m.1.as_str())
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    for _ in 0..1000 {
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
    backend(
        &server,
        vec![Mutation::Insert {
            table: "rooms".into(),
            values: vec![
                ("id".into(), text("general")),
                ("name".into(), text("General")),
            ],
        }],
    )
    .await?;
    for chunk in (1..=MESSAGES).collect::<Vec<_>>().chunks(500) {
        let batch = chunk
            .iter()
            .map(|&i| message(i, "bot", &format!("message {i}")))
            .collect();
        backend(&server, batch).await?;
    }
    println!("server: room `general` holds {MESSAGES} messages");

    let address = ServerAddress::new(addr, server.cert_path().expect("cert"));
    let client =
        Client::open(ClientConfig::new(dir.path().join("phone.db")).server(address)).await?;
    let params = Params::new()
        .value("room", text("general"))
        .value("n", Value::Integer(50));
    let sub = client.subscribe(HISTORY, params)?;
    sub.ready().await?;
    let shown = window(&client, sub.id)?;
    println!(
        "phone: shows the last {} messages, newest `{}`, oldest `{}`",
        shown.len(),
        body(&shown, true),
        body(&shown, false)
    );

    println!("\n-- new messages arrive live; the oldest leave the window (reason `window`) --");
    let mut notes = client.observe(Interest::Subscription(sub.id));
    for i in 1..=3 {
        let id = MESSAGES + i;
        backend(&server, vec![message(id, "ada", &format!("hello {i}"))]).await?;
    }
    wait_until("the new messages", || {
        window(&client, sub.id).is_ok_and(|w| w.first().is_some_and(|m| m.0 == MESSAGES + 3))
    })
    .await?;
    let shown = window(&client, sub.id)?;
    println!(
        "phone: still {} messages, newest `{}`, oldest now `{}` (messages {} to {} left)",
        shown.len(),
        body(&shown, true),
        body(&shown, false),
        MESSAGES - 49,
        MESSAGES - 47,
    );
    while notes.try_next().is_some() {}

    println!("\n-- the user scrolls up: the window grows from 50 to 100 in place --");
    client.set_limit(sub.id, 100)?;
    let Some(note) = tokio::time::timeout(Duration::from_secs(10), notes.next()).await? else {
        bail!("the client stopped");
    };
    let shown = window(&client, sub.id)?;
    println!(
        "phone: {} rows travelled for the resize; the window holds {} messages, oldest `{}`",
        note.rows.len(),
        shown.len(),
        body(&shown, false),
    );

    println!("\n-- offline: the phone posts a message --");
    server.shutdown().await;
    let id = MESSAGES + 100;
    let post = client
        .transaction()
        .insert(
            "messages",
            vec![
                ("id", Value::Integer(id)),
                ("room_id", text("general")),
                ("author_id", text("me")),
                ("body", text("sent from the subway")),
                ("sent_at", Value::Integer(id)),
            ],
        )
        .commit()?;
    let shown = window(&client, sub.id)?;
    println!(
        "phone (offline): newest `{}` at once; the window shows {} messages",
        body(&shown, true),
        shown.len()
    );
    let _server = start_server(dir.path(), &addr.to_string()).await?;
    match post.outcome().await? {
        WriteOutcome::Committed { sync_id } => println!("phone: back online, posted as #{sync_id}"),
        WriteOutcome::Rejected { message, .. } => bail!("post rejected: {message}"),
    }
    let shown = window(&client, sub.id)?;
    println!(
        "phone: newest `{}`, {} messages: nothing moved",
        body(&shown, true),
        shown.len()
    );
    Ok(())
}
