//! sluice in one file: a server on the example schema (SQLite in a temporary folder),
//! one client subscribing to a team's open issues, and changes flowing to it live.
//!
//! Run with `cargo run --example quickstart`.

use std::time::Duration;

use anyhow::{bail, Result};
use sluice::client::{ConnectOptions, Connection, Event};
use sluice::ids::{ClientId, SubId};
use sluice::query::Params;
use sluice::server::Server;
use sluice::store::{Mutation, TxnOutcome, WriteTxn};
use sluice::value::Value;
use sluice::wire::{BootstrapFrame, ClientMessage, RowEvent, ServerMessage};

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn issue(id: &str, team: &str, title: &str, status: &str) -> Mutation {
    Mutation::Insert {
        table: "issues".into(),
        values: vec![
            ("id".into(), text(id)),
            ("team_id".into(), text(team)),
            ("number".into(), Value::Integer(1)),
            ("title".into(), text(title)),
            ("status".into(), text(status)),
        ],
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
    println!("server listening on {}", server.local_addr());

    let backend_write = |mutations: Vec<Mutation>| {
        server.write(WriteTxn {
            origin: None,
            mutations,
            preconditions: Vec::new(),
        })
    };
    backend_write(vec![
        issue("I-1", "T1", "Crash on launch", "todo"),
        issue("I-2", "T1", "Dark mode", "done"),
        issue("I-3", "T2", "Billing export", "todo"),
    ])
    .await?;

    let ca = server
        .cert_path()
        .expect("self-signed certificate")
        .to_path_buf();
    let mut client = Connection::connect(ConnectOptions {
        addr: server.local_addr(),
        ca: &ca,
        server_name: "localhost",
        client_id: ClientId("quickstart".into()),
        token: None,
        schema_version: None,
    })
    .await?;
    let sql = "SELECT id, title, status FROM issues WHERE team_id = 'T1' AND status != 'done'";
    println!("client subscribes: {sql}");
    client
        .send(ClientMessage::Subscribe {
            sub: SubId(1),
            sql: sql.into(),
            params: Params::new(),
            resume_after: None,
            resume_shape: None,
        })
        .await?;

    let mut step = 0;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), client.next_event()).await?;
        match event {
            Some(Event::Control(ServerMessage::Subscribed { shape, .. })) => {
                println!("  server compiled it to: {shape}")
            }
            Some(Event::Bootstrap(_, BootstrapFrame::Row { row, .. })) => {
                println!("  snapshot row: {}", render(&row))
            }
            Some(Event::Bootstrap(_, BootstrapFrame::End { sync_id })) => {
                println!("  snapshot complete at sync id {sync_id}; now live");
                println!("backend: opens I-4 for T1, reopens I-2, closes I-1, files I-5 for T2");
                backend_write(vec![issue("I-4", "T1", "Offline edits", "todo")]).await?;
                let reopen = Mutation::Update {
                    table: "issues".into(),
                    key: text("I-2"),
                    set: vec![("status".into(), text("todo"))],
                };
                backend_write(vec![reopen]).await?;
                let close = Mutation::Update {
                    table: "issues".into(),
                    key: text("I-1"),
                    set: vec![("status".into(), text("done"))],
                };
                if let TxnOutcome::Rejected { message, .. } = backend_write(vec![close]).await? {
                    bail!("write rejected: {message}");
                }
                backend_write(vec![issue("I-5", "T2", "Not for this client", "todo")]).await?;
            }
            Some(Event::Live(txn)) => {
                for (_, table, event) in &txn.events {
                    match event {
                        RowEvent::Insert { row, .. } => {
                            println!("  live #{}: {table} moved in: {}", txn.sync_id, render(row))
                        }
                        RowEvent::Update { row, .. } => {
                            println!("  live #{}: {table} changed: {}", txn.sync_id, render(row))
                        }
                        RowEvent::Delete { key, reason } => println!(
                            "  live #{}: {table} {key} left ({})",
                            txn.sync_id,
                            reason.as_str()
                        ),
                    }
                    step += 1;
                }
                if step >= 3 {
                    println!(
                        "the T2 issue never reached the client: it is outside its subscription"
                    );
                    break;
                }
            }
            Some(Event::Closed(reason)) => bail!("connection closed: {reason}"),
            Some(_) => {}
            None => bail!("connection ended"),
        }
    }
    client.close().await;
    server.shutdown().await;
    Ok(())
}

fn render(row: &[Value]) -> String {
    row.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
