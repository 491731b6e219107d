//! Fetch by key (the batch loader's requests): bounded in keys, read off the async
//! workers, filtered by the session's read rules, answered in frames of bounded size.
//!
//! Reads only through the [`crate::store::Store`] trait, on a blocking thread.

use super::*;
use crate::store::row_bytes;

impl Session {
    pub(super) async fn fetch(&self, request: u64, table: String, keys: Vec<crate::value::Value>) {
        let Ok(place) = self.fetches.clone().acquire_owned().await else {
            return;
        };
        let shared = self.shared.clone();
        let control = self.control.clone();
        let policy = self.policy.clone();
        let session = self.handle.clone();
        tokio::spawn(
            async move {
                let _place = place;
                // The server's share after the session's: a busy client waits for its own
                // places first.
                let Ok(_server_place) = shared.fetches.clone().acquire_owned().await else {
                    return;
                };
                // An answer the client does not read within the stall timeout ends the
                // fetch and the session (the rows read are released with it).
                let stall = shared.quotas.stall_timeout();
                let send = |message: ServerMessage| {
                    let (control, session) = (control.clone(), session.clone());
                    async move {
                        match tokio::time::timeout(stall, control.send(message)).await {
                            Ok(sent) => sent.is_ok(),
                            Err(_) => {
                                info!("fetch answer stalled; closing the session");
                                session.cut_off(
                                    Cutoff::Stalled,
                                    b"lagging: a fetch answer made no progress; resume later",
                                );
                                false
                            }
                        }
                    }
                };
                let answer = if keys.len() > MAX_FETCH_KEYS {
                    ServerMessage::FetchFailed {
                        request,
                        message: format!(
                            "{} keys asked; at most {MAX_FETCH_KEYS} per fetch",
                            keys.len()
                        ),
                    }
                } else {
                    match shared.schema.table(&table).cloned() {
                        None => ServerMessage::FetchFailed {
                            request,
                            message: format!("unknown table `{table}`"),
                        },
                        Some(t) => {
                            let store = shared.store.clone();
                            let name = t.name.clone();
                            match tokio::task::spawn_blocking(move || store.fetch(&name, &keys))
                                .await
                            {
                                Ok(Ok((sync_id, rows))) => match policy.fetched(&t, rows) {
                                    Ok((rows, columns)) => {
                                        let (parts, rows) = split_answer(rows);
                                        for rows in parts {
                                            let part = ServerMessage::FetchedPart { request, rows };
                                            if !send(part).await {
                                                return;
                                            }
                                        }
                                        ServerMessage::Fetched {
                                            request,
                                            sync_id,
                                            rows,
                                            columns,
                                        }
                                    }
                                    Err(denied) => ServerMessage::FetchFailed {
                                        request,
                                        message: denied.to_string(),
                                    },
                                },
                                Ok(Err(e)) => ServerMessage::FetchFailed {
                                    request,
                                    message: e.to_string(),
                                },
                                Err(e) => ServerMessage::FetchFailed {
                                    request,
                                    message: e.to_string(),
                                },
                            }
                        }
                    }
                };
                send(answer).await;
            }
            .in_current_span(),
        );
    }
}

/// Splits a fetch answer into leading parts and a last part, each about
/// [`FETCH_FRAME_BYTES`] of row data at most (a single larger row goes alone).
fn split_answer(
    rows: Vec<Vec<crate::value::Value>>,
) -> (
    Vec<Vec<Vec<crate::value::Value>>>,
    Vec<Vec<crate::value::Value>>,
) {
    let mut parts = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let size = row_bytes(&row);
        if !current.is_empty() && bytes + size > FETCH_FRAME_BYTES {
            parts.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(row);
    }
    (parts, current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    #[test]
    fn large_fetch_answers_are_split_into_bounded_parts() {
        let row = |i: i64| vec![Value::Integer(i), Value::Text("x".repeat(1000))];
        let rows: Vec<_> = (0..1000).map(row).collect();
        let (parts, last) = split_answer(rows.clone());
        assert!(parts.len() >= 3, "{} parts", parts.len());
        for part in parts.iter().chain([&last]) {
            let bytes: usize = part.iter().map(|r| row_bytes(r)).sum();
            assert!(bytes <= FETCH_FRAME_BYTES);
        }
        let joined: Vec<_> = parts.into_iter().flatten().chain(last).collect();
        assert_eq!(joined, rows, "every row once, in order");
        let (parts, last) = split_answer(vec![row(1)]);
        assert!(parts.is_empty() && last.len() == 1);
    }
}
