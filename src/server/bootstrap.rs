//! Bootstrap of one subscription on its own QUIC stream: a snapshot at a consistent sync
//! id W (or, on resume, the matching changes replayed from the log up to W), then
//! `End(W)`. The blocking SQLite reader encodes each row once, as its frame, into chunks
//! of many frames that the stream writes whole; chunks flow through a bounded channel, so
//! memory stays flat in the size of the snapshot.
//!
//! Server-internal: reads only through the [`Store`] trait, never SQLite directly.

use std::ops::ControlFlow;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, info};

use super::metrics::{Metrics, ResumeRefusal};
use super::registry::replay_event;
use super::session::LiveItem;
use super::snapshots::{self, Filled, CHUNK_BYTES};
use super::{Shared, CATCH_UP_WAIT};
use crate::ids::SyncId;
use crate::query::{Pred, Shape};
use crate::store::{LogRead, Store};
use crate::transport::FrameWriter;
use crate::wire::{encode, BootstrapFrame, ServerMessage, SubId, PROGRESS_EVERY};

/// Encoded chunks (of about [`CHUNK_BYTES`]) read from SQLite but not yet written to the
/// stream: the memory one bootstrap holds; when the client reads slowly the reader waits.
pub const BOOTSTRAP_CHANNEL_CAPACITY: usize = 4;

/// Distinct rows one resume may replay; past it the subscription is told to bootstrap
/// again (a snapshot is cheaper than that many changed rows, and the replay holds the
/// net change of each row in memory until the log is read).
pub const MAX_RESUME_ROWS: usize = 50_000;

/// The net change of each row over a stretch of the log: its image before the first
/// change (the state the resuming client had) and after the last, at the last change's
/// sync id. Bounded by [`MAX_RESUME_ROWS`].
#[derive(Default)]
struct NetLog {
    rows: std::collections::BTreeMap<crate::store::KeyOrd, crate::store::Change>,
}

impl NetLog {
    /// Folds one change in; false when the bound is reached.
    fn add(&mut self, change: crate::store::Change) -> bool {
        use std::collections::btree_map::Entry;
        let full = self.rows.len() >= MAX_RESUME_ROWS;
        match self.rows.entry(crate::store::KeyOrd(change.key.clone())) {
            Entry::Occupied(mut entry) => {
                let net = entry.get_mut();
                net.sync_id = change.sync_id;
                net.new = change.new;
                net.kind = change.kind;
                true
            }
            Entry::Vacant(_) if full => false,
            Entry::Vacant(entry) => {
                entry.insert(change);
                true
            }
        }
    }

    /// One change per row, first image to last, in the order of their last sync ids.
    fn into_changes(self) -> Vec<crate::store::Change> {
        let mut changes: Vec<_> = self.rows.into_values().collect();
        changes.sort_by_key(|c| c.sync_id);
        changes
    }
}

/// One subscription's bootstrap to run.
pub struct Job {
    /// The server's shared state (store, registry).
    pub shared: Arc<Shared>,
    /// The session, to cut it off when the stream stalls.
    pub session: Arc<super::session::SessionHandle>,
    /// The connection to open the bootstrap stream on.
    pub connection: quinn::Connection,
    /// The session's control-stream queue (`Subscribed`, refusals).
    pub control: mpsc::Sender<ServerMessage>,
    /// The session's live queue, where the seam is announced.
    pub live: super::session::LiveQueue,
    /// Where the session hears that this subscription ended without joining (refused
    /// after it was registered): it unregisters it before the refusal goes out, so the
    /// client may subscribe again under the same id.
    pub ended: mpsc::Sender<SubId>,
    /// The session's places for bootstraps ([`super::Quotas::bootstraps_per_session`]).
    pub places: Arc<tokio::sync::Semaphore>,
    /// The subscription.
    pub sub: SubId,
    /// The compiled shape, permission rule included.
    pub shape: Arc<Shape>,
    /// The subscription's predicate without its permission rule (see `registry::refine`).
    pub base: Option<Arc<Pred>>,
    /// Replay the log after this sync id instead of sending a snapshot.
    pub resume_after: Option<SyncId>,
    /// Set when the seam is queued: from then on the client may join, and a window may
    /// be resized.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
}

enum Produced {
    /// Encoded frames: `frames` rows or replayed changes, with their `Progress` frames.
    Chunk {
        bytes: bytes::Bytes,
        frames: u64,
    },
    Done(SyncId),
    /// The subscription cannot be served; this answer says why.
    Refused(ServerMessage),
}

/// Serves one bootstrap: answers `Subscribed`, opens the stream, sends `Begin`, the rows
/// (or replayed changes) with a `Progress` every [`PROGRESS_EVERY`], and `End(W)`; then,
/// once every transaction up to W is in the session's live queue, queues the seam there.
/// Ends quietly when the client goes away or the subscription is refused.
pub async fn run(job: Job) {
    if let Some(after) = job.resume_after {
        if !reached(&job.shared, after).await {
            let horizon = job.shared.store.head();
            debug!(%after, %horizon, "the caller's cut is past this server's head: no resume");
            job.shared.metrics.resume_refused(ResumeRefusal::Ahead);
            let _ = job.ended.send(job.sub).await;
            let refused = ServerMessage::ResumeRefused {
                sub: job.sub,
                horizon,
            };
            let _ = job.control.send(refused).await;
            return;
        }
    }
    // A place in the session's share, then in the server's: the blocking reader starts
    // only with both.
    let Ok(_session_place) = job.places.clone().acquire_owned().await else {
        return;
    };
    let Ok(_place) = job.shared.bootstraps.clone().acquire_owned().await else {
        return;
    };
    // A fresh snapshot is read once per shape and head, however many sessions ask.
    let cached = match job.resume_after {
        None => cached_snapshot(&job).await,
        Some(_) => Err(Some(0)),
    };
    let estimate = match &cached {
        Ok(filled) => filled.estimate,
        Err(Some(estimate)) => *estimate,
        Err(None) => {
            let store = job.shared.store.clone();
            let shape = job.shape.clone();
            tokio::task::spawn_blocking(move || store.count_estimate(&shape))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0)
        }
    };
    // The client sees its own subscription normalized, never the read rule bound with
    // its claims that the server ANDs into it.
    let shown = match &job.base {
        Some(base) => {
            let own = Shape::windowed(
                job.shape.table().clone(),
                job.shape.projection().map(<[usize]>::to_vec),
                (**base).clone(),
                job.shape.window().cloned(),
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
        access: job.shape.id(),
    };
    if writer.send(&begin).await.is_err() {
        return;
    }
    let streamed = match cached {
        Ok(filled) => send_cached(&job, &mut writer, &filled).await,
        Err(_) => match stream_rows(&job, &mut writer).await {
            Some(streamed) => streamed,
            None => return,
        },
    };
    let Streamed { end, sent, stalled } = streamed;
    if stalled {
        info!(rows = sent, "bootstrap stalled; closing the session");
        job.session.cut_off(
            super::metrics::Cutoff::Stalled,
            b"lagging: the bootstrap stream made no progress; resume later",
        );
        return;
    }
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
    debug!(through = %w, delivered = %*delivered.borrow(), "seam waits for delivery");
    if delivered.wait_for(|d| *d >= w).await.is_ok() {
        job.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        let queued = job
            .live
            .send(LiveItem::Seam {
                sub: job.sub,
                through: w,
            })
            .await;
        debug!(through = %w, queued = queued.is_ok(), "seam");
    }
}

/// Whether this server has delivered every transaction up to `after`, the cut a
/// resuming caller holds. Another server on the same PostgreSQL database may have shown
/// the caller a later cut than this replica has applied (it lags, or it is
/// resynchronising): it then waits at most [`CATCH_UP_WAIT`] for its replica to get
/// there (its head, or the WAL position it has applied everything up to, for a cut that
/// is another server's copy or resynchronisation point rather than a commit). A resume
/// served from behind the cut would hand the caller changes relative to an older state,
/// and a resynchronisation's diff among them would miss rows that came and went after
/// that state (the log's gap refuses such a cut once the replica is past it). An
/// embedded store has no later state anywhere: a cut past its head (a database restored
/// from a backup, or a forged cut) is refused at once.
async fn reached(shared: &Shared, after: SyncId) -> bool {
    let mut delivered = shared.delivered.subscribe();
    let mut applied = shared.upstream.as_ref().map(|u| u.applied());
    if applied.is_none() && after > shared.store.head() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
    loop {
        let past = applied
            .as_mut()
            .is_some_and(|a| SyncId(a.borrow_and_update().0) >= after);
        if past || *delivered.borrow_and_update() >= after {
            return true;
        }
        let applied_changed = async {
            match applied.as_mut() {
                Some(a) => a.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return false,
            changed = delivered.changed() => if changed.is_err() { return false },
            changed = applied_changed => if changed.is_err() { return false },
        }
    }
}

/// How a bootstrap's rows went out.
struct Streamed {
    /// The sync id of the snapshot or replay, once it was read to the end.
    end: Option<SyncId>,
    /// Frames (rows or replayed changes) written.
    sent: u64,
    /// The stream made no progress for the stall timeout.
    stalled: bool,
}

/// The shared snapshot of the job's shape at the store's head, read now by this job or
/// already by another; `Err` when this job must read on its own (too large to cache, or
/// the read failed), with the shape's row count when it is known.
async fn cached_snapshot(job: &Job) -> Result<Arc<Filled>, Option<u64>> {
    let shared = &job.shared;
    // Read after the shape was registered: every change after `head` reaches this
    // session live, so a snapshot at `head` or later joins without a gap.
    let head = shared.store.head();
    let id = job.shape.id();
    let (entry, fill_it) = shared.snapshots.join(id, head);
    if fill_it {
        let (store, shape, shared) = (shared.store.clone(), job.shape.clone(), shared.clone());
        let entry = entry.clone();
        tokio::task::spawn_blocking(move || {
            let fill = snapshots::fill(store.as_ref(), &shape, || shared.metrics.snapshot_read());
            shared.snapshots.finish(id, head, &entry, fill);
        });
    }
    let filled = entry.ready().await;
    if filled.is_ok() && !fill_it {
        shared.metrics.snapshot_cache_hit();
    }
    filled
}

/// Writes a shared snapshot's frames (no copy: the chunks are reference-counted).
async fn send_cached(job: &Job, writer: &mut FrameWriter, filled: &Filled) -> Streamed {
    let stall = job.shared.quotas.stall_timeout();
    let mut streamed = Streamed {
        end: None,
        sent: 0,
        stalled: false,
    };
    for chunk in &filled.chunks {
        let written = tokio::time::timeout(stall, writer.stream().write_chunk(chunk.clone()));
        match written.await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return streamed,
            Err(_) => {
                streamed.stalled = true;
                return streamed;
            }
        }
    }
    job.shared.metrics.bootstrap_rows(filled.rows);
    streamed.sent = filled.rows;
    streamed.end = Some(filled.sync_id);
    streamed
}

/// Streams this job's own snapshot (or replay) from a blocking reader; `None` when the
/// subscription was refused (the refusal is sent).
async fn stream_rows(job: &Job, writer: &mut FrameWriter) -> Option<Streamed> {
    let (tx, mut rx) = mpsc::channel(BOOTSTRAP_CHANNEL_CAPACITY);
    let store = job.shared.store.clone();
    let shape = job.shape.clone();
    let resume_after = job.resume_after;
    let base = job.base.clone();
    let sub = job.sub;
    let metrics = job.shared.metrics.clone();
    if resume_after.is_none() {
        job.shared.metrics.snapshot_read();
    }
    let producer = tokio::task::spawn_blocking(move || {
        produce(
            store,
            &shape,
            base.as_deref(),
            (sub, resume_after),
            &metrics,
            tx,
        )
    });
    let mut sent: u64 = 0;
    let mut end = None;
    let stall = job.shared.quotas.stall_timeout();
    let mut stalled = false;
    while let Some(item) = rx.recv().await {
        match item {
            Produced::Chunk { bytes, frames } => {
                let written = tokio::time::timeout(stall, writer.stream().write_chunk(bytes));
                match written.await {
                    Ok(Ok(())) => {
                        sent += frames;
                        job.shared.metrics.bootstrap_rows(frames);
                    }
                    Ok(Err(_)) => break,
                    Err(_) => {
                        stalled = true;
                        break;
                    }
                }
            }
            Produced::Done(w) => end = Some(w),
            Produced::Refused(answer) => {
                let _ = job.ended.send(job.sub).await;
                let _ = job.control.send(answer).await;
                let _ = writer.finish();
                return None;
            }
        }
    }
    // Dropping the receiver ends the blocking reader and its read transaction.
    drop(rx);
    let _ = producer.await;
    Some(Streamed { end, sent, stalled })
}

/// Runs on a blocking thread: streams the snapshot (or replay) into `tx`.
fn produce(
    store: Arc<dyn Store>,
    shape: &Shape,
    base: Option<&Pred>,
    (sub, resume_after): (SubId, Option<SyncId>),
    metrics: &Metrics,
    tx: mpsc::Sender<Produced>,
) {
    let failed = |message: String| {
        let message = super::session::brief(&message);
        Produced::Refused(ServerMessage::SubscribeFailed { sub, message })
    };
    let send = |item: Produced| -> ControlFlow<()> {
        match tx.blocking_send(item) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    };
    let mut chunks = Chunker::default();
    let pk = shape.table().pk;
    match resume_after {
        None => {
            let mut on_row = |row: Vec<crate::value::Value>| {
                let key = row[pk].clone();
                // A row read whole is sent as read, not copied.
                let row = match shape.projection() {
                    None => row,
                    Some(_) => shape.project(&row),
                };
                let frame = BootstrapFrame::Row { key, row };
                chunks.push(&frame, &send)
            };
            match store.snapshot(shape, &mut on_row) {
                Ok(w) => {
                    if chunks.flush(&send).is_continue() {
                        let _ = send(Produced::Done(w));
                    }
                }
                Err(e) => {
                    let _ = send(failed(format!("snapshot failed: {e}")));
                }
            }
        }
        Some(after) => {
            // Everything up to the head read now is replayed; later changes arrive live
            // (the shape was registered before this point). The replay is net: per row,
            // its state at `after` against its state at W, never the history between
            // (rows that came and went, contents since overwritten or deleted).
            let w = store.head();
            let mut net = NetLog::default();
            let mut too_many = false;
            let mut on_change = |change: crate::store::Change| {
                if change.sync_id > w {
                    return ControlFlow::Break(());
                }
                if !change.table.eq_ignore_ascii_case(&shape.table().name) {
                    return ControlFlow::Continue(());
                }
                if net.add(change) {
                    ControlFlow::Continue(())
                } else {
                    too_many = true;
                    ControlFlow::Break(())
                }
            };
            let read = store.read_log(after, &mut on_change);
            match read {
                Ok(LogRead::Compacted { horizon }) => {
                    metrics.resume_refused(ResumeRefusal::Compacted);
                    let _ = send(Produced::Refused(ServerMessage::ResumeRefused {
                        sub,
                        horizon,
                    }));
                }
                // A fresh snapshot costs less than this many changed rows.
                Ok(_) if too_many => {
                    metrics.resume_refused(ResumeRefusal::TooMany);
                    let _ = send(Produced::Refused(ServerMessage::ResumeRefused {
                        sub,
                        horizon: w,
                    }));
                }
                Ok(_) => {
                    for change in net.into_changes() {
                        if let Some(event) = replay_event(shape, base, &change) {
                            let frame = BootstrapFrame::Replay {
                                sync_id: change.sync_id,
                                event,
                            };
                            if chunks.push(&frame, &send).is_break() {
                                return;
                            }
                        }
                    }
                    if chunks.flush(&send).is_continue() {
                        let _ = send(Produced::Done(w));
                    }
                }
                Err(e) => {
                    let _ = send(failed(format!("replay failed: {e}")));
                }
            }
        }
    }
}

/// Frames encoded on the blocking reader, gathered into chunks of about [`CHUNK_BYTES`]
/// with a `Progress` frame after every [`PROGRESS_EVERY`] rows: each row is encoded once,
/// and the stream writes a chunk at a time rather than a frame at a time.
#[derive(Default)]
struct Chunker {
    buf: Vec<u8>,
    /// Frames in `buf`.
    frames: u64,
    /// Frames encoded so far, `buf`'s included.
    total: u64,
}

impl Chunker {
    /// Encodes one row or replayed change; sends the chunk when it is full. Breaks when
    /// the stream is gone or the frame cannot be encoded (too large): the stream then
    /// ends without `End`, and the client bootstraps again on its next connection.
    fn push(
        &mut self,
        frame: &BootstrapFrame,
        send: &impl Fn(Produced) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        if encode(frame, &mut self.buf).is_err() {
            return ControlFlow::Break(());
        }
        self.frames += 1;
        self.total += 1;
        if self.total.is_multiple_of(PROGRESS_EVERY) {
            let progress = BootstrapFrame::Progress { sent: self.total };
            if encode(&progress, &mut self.buf).is_err() {
                return ControlFlow::Break(());
            }
        }
        if self.buf.len() >= CHUNK_BYTES {
            return self.flush(send);
        }
        ControlFlow::Continue(())
    }

    /// Sends what is encoded and not sent yet.
    fn flush(&mut self, send: &impl Fn(Produced) -> ControlFlow<()>) -> ControlFlow<()> {
        if self.buf.is_empty() {
            return ControlFlow::Continue(());
        }
        let bytes = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        let frames = std::mem::take(&mut self.frames);
        send(Produced::Chunk {
            bytes: bytes.into(),
            frames,
        })
    }
}
