//! The loader's asynchronous side: fetches sent through the sync task (pin first, then
//! fetch, then the answer applied), unpins, hydration expiry, and the background task
//! that sends due batches and re-pins after each new connection.
//!
//! Reaches the server only through the sync task's commands, never a connection of its
//! own.

use super::*;

/// Sends one fetch and waits for its (reassembled) answer.
pub(crate) async fn fetch(
    loader: &LoaderShared,
    commands: &mpsc::Sender<Command>,
    table: &str,
    keys: Vec<Value>,
) -> Result<FetchAnswer, ClientError> {
    let (tx, rx) = oneshot::channel();
    loader.counters.requests.fetch_add(1, Ordering::Relaxed);
    loader
        .counters
        .keys
        .fetch_add(keys.len() as u64, Ordering::Relaxed);
    let command = Command::Fetch {
        table: table.into(),
        keys,
        reply: tx,
    };
    commands
        .send(command)
        .await
        .map_err(|_| ClientError::Closed)?;
    rx.await
        .map_err(|_| ClientError::Fetch("connection lost".into()))?
        .map_err(ClientError::Fetch)
}

/// Pins `keys` on the server, fetches them and applies the answer.
async fn fetch_batch(
    shared: Arc<ClientShared>,
    commands: mpsc::Sender<Command>,
    table: String,
    keys: Vec<Value>,
) {
    let loader = &shared.loader;
    let pin = ClientMessage::Pin {
        table: table.clone(),
        keys: keys.clone(),
    };
    let (pinned, refusal) = oneshot::channel();
    if commands.send(Command::Pin(pin, pinned)).await.is_err() {
        loader.fail(&shared, &table, &keys, "the client is closed");
        return;
    }
    let result = fetch(loader, &commands, &table, keys.clone()).await;
    // The pin's answer came before the fetch's (the server answers in order); a pin a
    // quota refused fails the load, since its rows would not be kept live.
    let result = match refusal.await {
        Ok(Some(exceeded)) => Err(ClientError::QuotaExceeded(exceeded)),
        _ => result,
    };
    let schema_table = shared.local().schema().table(&table).cloned();
    let outcome = match (result, schema_table) {
        (Ok(answer), Some(t)) => loader
            .apply_answer(&shared, &t, &keys, answer)
            .map_err(|e| e.to_string()),
        (Ok(_), None) => Err(format!("unknown table `{table}`")),
        (Err(e), _) => Err(e.to_string()),
    };
    match outcome {
        Ok(release) => send_unpins(&commands, release).await,
        Err(message) => {
            loader.fail(&shared, &table, &keys, &message);
            let unpin = ClientMessage::Unpin { table, keys };
            let _ = commands.send(Command::Send(unpin)).await;
        }
    }
}

pub(super) async fn send_unpins(commands: &mpsc::Sender<Command>, release: Vec<(String, Value)>) {
    let mut by_table: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (table, key) in release {
        by_table.entry(table).or_default().push(key);
    }
    for (table, keys) in by_table {
        let _ = commands
            .send(Command::Send(ClientMessage::Unpin { table, keys }))
            .await;
    }
}

pub(super) async fn unsubscribe(
    shared: &ClientShared,
    commands: &mpsc::Sender<Command>,
    sub: SubId,
) -> Result<(), ClientError> {
    let applied = {
        let mut local = shared.local();
        local.set_sub_expiry(sub, None)?;
        local.remove_sub(sub)?
    };
    shared.notify(Source::Unsubscribed { sub }, applied);
    shared
        .subs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&sub);
    let _ = commands.send(Command::Unsubscribe(sub)).await;
    Ok(())
}

/// The loader's background task: sends due batches, re-pins after each new connection,
/// releases expired pins and hydrations. Ends when the client is gone.
pub(crate) async fn run(
    loader: Arc<LoaderShared>,
    shared: Weak<ClientShared>,
    commands: mpsc::WeakSender<Command>,
) {
    let mut connections = loader.connections.subscribe();
    if *connections.borrow() > 0 {
        // Connected before this task started watching.
        connections.mark_changed();
    }
    loop {
        let mut reconnected = false;
        let deadline = loader.deadline();
        tokio::select! {
            _ = loader.wake.notified() => {}
            _ = tokio::time::sleep_until(deadline.into()) => {}
            changed = connections.changed() => {
                if changed.is_err() {
                    return;
                }
                reconnected = true;
            }
        }
        let (Some(shared), Some(commands)) = (shared.upgrade(), commands.upgrade()) else {
            return;
        };
        let mut batches = loader.take_due();
        if reconnected {
            batches.extend(loader.pinned_batches());
        }
        for (table, keys) in batches {
            tokio::spawn(fetch_batch(shared.clone(), commands.clone(), table, keys));
        }
        loader.housekeeping(&shared, &commands).await;
    }
}
