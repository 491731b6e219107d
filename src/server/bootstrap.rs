//! Bootstrap of one subscription on its own QUIC stream: a snapshot at a consistent sync
//! id W (or, on resume, the matching changes replayed from the log up to W), then
//! `End(W)`. Rows flow from a blocking SQLite reader through a bounded channel, so memory
//! stays flat in the size of the snapshot.
//!
//! Server-internal: reads only through the [`Store`] trait, never SQLite directly.

use std::ops::ControlFlow;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, info};

use super::registry::replay_event;
use super::session::LiveItem;
use super::Shared;
use crate::ids::SyncId;
use crate::query::{Pred, Shape};
use crate::store::{LogRead, Store};
use crate::transport::FrameWriter;
use crate::wire::{BootstrapFrame, ServerMessage, SubId, PROGRESS_EVERY};

/// Rows read from SQLite but not yet written to the stream: the memory one bootstrap
/// holds; when the client reads slowly the reader waits.
pub const BOOTSTRAP_CHANNEL_CAPACITY: usize = 256;

/// One subscription's bootstrap to run.
pub struct Job {
    /// The server's shared state (store, registry).
    pub shared: Arc<Shared>,
    /// The connection to open the bootstrap stream on.
    pub connection: quinn::Connection,
    /// The session's control-stream queue (`Subscribed`, refusals).
    pub control: mpsc::Sender<ServerMessage>,
    /// The session's live queue, where the seam is announced.
    pub live: mpsc::Sender<LiveItem>,
    /// The subscription.
    pub sub: SubId,
    /// The compiled shape, permission rule included.
    pub shape: Arc<Shape>,
    /// The subscription's predicate without its permission rule (see `registry::refine`).
    pub base: Option<Arc<Pred>>,
    /// Replay the log after this sync id instead of sending a snapshot.
    pub resume_after: Option<SyncId>,
}

enum Produced {
    Frame(BootstrapFrame),
    Done(SyncId),
    /// The subscription cannot be served; this answer says why.
    Refused(ServerMessage),
}

/// Serves one bootstrap: answers `Subscribed`, opens the stream, sends `Begin`, the rows
/// (or replayed changes) with a `Progress` every [`PROGRESS_EVERY`], and `End(W)`; then,
/// once every transaction up to W is in the session's live queue, queues the seam there.
/// Ends quietly when the client goes away or the subscription is refused.
pub async fn run(job: Job) {
    let estimate = {
        let store = job.shared.store.clone();
        let shape = job.shape.clone();
        match job.resume_after {
            Some(_) => 0,
            None => tokio::task::spawn_blocking(move || store.count_estimate(&shape))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0),
        }
    };
    // The client sees its own subscription normalized, never the read rule bound with
    // its claims that the server ANDs into it.
    let shown = match &job.base {
        Some(base) => {
            let own = Shape::new(
                job.shape.table().clone(),
                job.shape.projection().map(<[usize]>::to_vec),
                (**base).clone(),
            );
            own.text().to_string()
        }
        None => job.shape.text().to_string(),
    };
    let columns: Vec<String> = job
        .shape
        .column_names()
        .iter()
        .map(|c| c.to_string())
        .collect();
    let subscribed = ServerMessage::Subscribed {
        sub: job.sub,
        shape: shown,
        columns: columns.clone(),
        estimate,
    };
    if job.control.send(subscribed).await.is_err() {
        return;
    }
    let stream = match job.connection.open_uni().await {
        Ok(s) => s,
        Err(e) => {
            debug!(error = %e, "could not open a bootstrap stream");
            return;
        }
    };
    let mut writer = FrameWriter::new(stream);
    let begin = BootstrapFrame::Begin {
        sub: job.sub,
        table: job.shape.table().name.clone(),
        columns,
        estimate,
    };
    if writer.send(&begin).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::channel(BOOTSTRAP_CHANNEL_CAPACITY);
    let store = job.shared.store.clone();
    let shape = job.shape.clone();
    let resume_after = job.resume_after;
    let base = job.base.clone();
    let sub = job.sub;
    let producer = tokio::task::spawn_blocking(move || {
        produce(store, &shape, base.as_deref(), sub, resume_after, tx)
    });
    let mut sent: u64 = 0;
    let mut end = None;
    while let Some(item) = rx.recv().await {
        match item {
            Produced::Frame(frame) => {
                if writer.send(&frame).await.is_err() {
                    break;
                }
                sent += 1;
                if sent.is_multiple_of(PROGRESS_EVERY)
                    && writer
                        .send(&BootstrapFrame::Progress { sent })
                        .await
                        .is_err()
                {
                    break;
                }
            }
            Produced::Done(w) => end = Some(w),
            Produced::Refused(answer) => {
                let _ = job.control.send(answer).await;
                let _ = writer.finish();
                return;
            }
        }
    }
    drop(rx);
    let _ = producer.await;
    let Some(w) = end else { return };
    if writer
        .send(&BootstrapFrame::End { sync_id: w })
        .await
        .is_ok()
    {
        let _ = writer.finish();
        info!(rows = sent, sync_id = %w, "bootstrap complete");
    }
    // Once every transaction up to W sits in the session's live queue, the seam marker
    // follows them: the client joins the subscription there, and the live writer skips
    // its changes up to W from then on.
    let mut delivered = job.shared.delivered.subscribe();
    if delivered.wait_for(|d| *d >= w).await.is_ok() {
        let _ = job
            .live
            .send(LiveItem::Seam {
                sub: job.sub,
                through: w,
            })
            .await;
    }
}

/// Runs on a blocking thread: streams the snapshot (or replay) into `tx`.
fn produce(
    store: Arc<dyn Store>,
    shape: &Shape,
    base: Option<&Pred>,
    sub: SubId,
    resume_after: Option<SyncId>,
    tx: mpsc::Sender<Produced>,
) {
    let failed =
        |message: String| Produced::Refused(ServerMessage::SubscribeFailed { sub, message });
    let send = |item: Produced| -> ControlFlow<()> {
        match tx.blocking_send(item) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    };
    let pk = shape.table().pk;
    match resume_after {
        None => {
            let mut on_row = |row: Vec<crate::value::Value>| {
                let key = row[pk].clone();
                send(Produced::Frame(BootstrapFrame::Row {
                    key,
                    row: shape.project(&row),
                }))
            };
            match store.snapshot(shape, &mut on_row) {
                Ok(w) => {
                    let _ = send(Produced::Done(w));
                }
                Err(e) => {
                    let _ = send(failed(format!("snapshot failed: {e}")));
                }
            }
        }
        Some(after) => {
            // Everything up to the head read now is replayed; later changes arrive live
            // (the shape was registered before this point).
            let w = store.head();
            let mut on_change = |change: crate::store::Change| {
                if change.sync_id > w {
                    return ControlFlow::Break(());
                }
                match replay_event(shape, base, &change) {
                    Some(event) => send(Produced::Frame(BootstrapFrame::Replay {
                        sync_id: change.sync_id,
                        event,
                    })),
                    None => ControlFlow::Continue(()),
                }
            };
            match store.read_log(after, &mut on_change) {
                Ok(LogRead::Compacted { horizon }) => {
                    let _ = send(Produced::Refused(ServerMessage::ResumeRefused {
                        sub,
                        horizon,
                    }));
                }
                Ok(_) => {
                    let _ = send(Produced::Done(w));
                }
                Err(e) => {
                    let _ = send(failed(format!("replay failed: {e}")));
                }
            }
        }
    }
}
