//! The single writer: takes client and backend transactions from a bounded queue,
//! commits them in batches (one SQLite commit, one savepoint each), then fans every
//! committed transaction out to the sessions whose shapes it touches, in sync-id order.
//! Window shapes are kept exact on the writer thread, inside the commit
//! ([`super::windows`]); their events join the fan-out of their transaction.
//!
//! Server-internal: the only task that writes to the store. It must not wait on a session
//! (delivery never blocks: a full session queue cuts that session off).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info_span, warn, Instrument};

use super::registry::{Deliveries, Pair, NO_GROUP};
use super::windows::{WindowEvents, WindowObserver, Windows};
use super::{Shared, WriteContext};
use crate::ids::{ClientId, SessionId, SyncId};
use crate::store::{GuardedTxn, WriteGuard};
use crate::vocab::SubId;
use crate::vocab::{RejectCode, TxnOutcome, WriteTxn};
use crate::wire::{EncodedEvents, EventGroup, FrameError, TxnFrame};

mod fair;
pub use fair::FairQueue;

/// Transactions waiting for the writer, across all sessions. When it is full, a session
/// with a write to queue stops reading requests until there is room.
pub const WRITE_QUEUE_CAPACITY: usize = 4096;
/// Most transactions committed by one SQLite commit: they share its fsync, and a larger
/// batch holds the writer longer before anyone hears of an outcome.
pub const MAX_WRITE_BATCH: usize = 256;
/// Most commit batches handed to the sessions together. When more writes are already
/// waiting as a batch commits (a burst), its frames wait for the next batch's commit, and
/// each session gets both in one queue item and one stream write: half the wakes and
/// packets, for at most one commit more of latency, and only under a burst.
pub const MAX_HELD_BATCHES: usize = 2;

/// One transaction waiting to be committed, with where to send its outcome.
pub struct WriteRequest {
    /// Who is writing, for the write hook.
    pub context: WriteContext,
    /// The transaction.
    pub txn: WriteTxn,
    /// The session's permission check, run by the store on every row written.
    pub guard: Option<Arc<dyn WriteGuard>>,
    /// Where the outcome goes (dropped unanswered only if the store task panics or the
    /// committer is stopped at shutdown).
    pub reply: oneshot::Sender<TxnOutcome>,
}

/// What the writer thread answers for a batch: one outcome per transaction, and the
/// window events of the committed ones, per sync id.
pub type Applied = (Vec<TxnOutcome>, Vec<(SyncId, WindowEvents)>);

/// A batch for the writer thread, and where its outcomes go.
pub type ApplyJob = (
    Vec<GuardedTxn>,
    oneshot::Sender<Result<Applied, crate::store::StoreError>>,
);

/// Starts the thread that applies batches to the store: commits run on a thread of their
/// own, never behind snapshot readers or fetches in the blocking pool. The thread ends
/// when the returned sender is dropped.
pub fn start_writer(
    store: Arc<dyn crate::store::Store>,
    windows: Arc<Mutex<Windows>>,
) -> std::sync::mpsc::SyncSender<ApplyJob> {
    // One batch at a time: the committer waits for each outcome before the next.
    let (jobs, queue) = std::sync::mpsc::sync_channel::<ApplyJob>(1);
    let spawned = std::thread::Builder::new()
        .name("sluice-writer".into())
        .spawn(move || {
            while let Ok((txns, done)) = queue.recv() {
                let mut observer = WindowObserver::new(&windows);
                let applied = store.apply_observed(txns, &mut observer);
                let _ = done.send(applied.map(|outcomes| (outcomes, observer.events)));
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "could not start the writer thread");
    }
    jobs
}

/// Runs until every sender is dropped, or until the server shuts down: then the queue
/// is closed to new requests and what it already holds is committed (and answered)
/// before the committer returns.
///
/// What is queued is taken into a [`FairQueue`] by client (the backend's own writes are
/// one more lane; at most [`WRITE_QUEUE_CAPACITY`] wait there besides the channel), and
/// each batch takes one transaction per client in turn. Window resizes run between
/// batches.
pub async fn run(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<WriteRequest>,
    mut resizes: mpsc::Receiver<super::resize::ResizeRequest>,
) {
    let mut waiting: FairQueue<Option<ClientId>, WriteRequest> = FairQueue::default();
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        // Between batches: every committed transaction is fanned out, none is coming.
        while let Ok(resize) = resizes.try_recv() {
            super::resize::run(&shared, resize).await;
        }
        if waiting.is_empty() {
            let first = tokio::select! {
                biased;
                Some(resize) = resizes.recv() => {
                    super::resize::run(&shared, resize).await;
                    continue;
                }
                request = queue.recv() => request,
                _ = async { shutdown.wait_for(|stopping| *stopping).await.map(|_| ()) } => {
                    queue.close();
                    queue.recv().await
                }
            };
            let Some(first) = first else { break };
            waiting.push(first.context.client_id.clone(), first);
        }
        take_waiting(&mut queue, &mut waiting);
        let mut held = Held::default();
        loop {
            let batch = waiting.take(MAX_WRITE_BATCH);
            let span = info_span!("commit_batch", txns = batch.len());
            let applied = commit_batch(&shared, batch).instrument(span).await;
            // Writes already waiting: this batch's fan-out waits for theirs (bounded).
            take_waiting(&mut queue, &mut waiting);
            held.batches += 1;
            let last = waiting.is_empty() || held.batches >= MAX_HELD_BATCHES;
            if let Some(applied) = applied {
                held.fan_out(&shared, applied, last);
            }
            if last {
                break;
            }
        }
        held.hand_over(&shared);
    }
}

/// Moves what is queued into `waiting`, up to [`WRITE_QUEUE_CAPACITY`] transactions.
fn take_waiting(
    queue: &mut mpsc::Receiver<WriteRequest>,
    waiting: &mut FairQueue<Option<ClientId>, WriteRequest>,
) {
    while waiting.len() < WRITE_QUEUE_CAPACITY {
        match queue.try_recv() {
            Ok(next) => waiting.push(next.context.client_id.clone(), next),
            Err(_) => break,
        }
    }
}

/// A committed batch: each transaction's outcome and where it goes, the window events
/// of the committed ones, and when the commit ended.
struct Committed {
    outcomes: Vec<TxnOutcome>,
    replies: Vec<oneshot::Sender<TxnOutcome>>,
    window_events: Vec<(SyncId, WindowEvents)>,
    at: std::time::Instant,
}

/// Commits `batch` (after the backend's hook); `None` when nothing of it is left to fan
/// out here: every transaction refused, the store failed (each answered), or PostgreSQL
/// mode (committed there one by one, fanned out by its replication stream).
async fn commit_batch(shared: &Arc<Shared>, batch: Vec<WriteRequest>) -> Option<Committed> {
    // The backend's hook may refuse a transaction before it reaches the store.
    let mut accepted = Vec::with_capacity(batch.len());
    for request in batch {
        let refusal = shared
            .write_hook
            .as_ref()
            .and_then(|hook| hook(&request.context, &request.txn).err());
        match refusal {
            Some(message) => {
                debug!(%message, "write refused by hook");
                let _ = request.reply.send(TxnOutcome::Rejected {
                    code: RejectCode::Invalid,
                    message,
                });
            }
            None => accepted.push(request),
        }
    }
    if accepted.is_empty() {
        return None;
    }
    if let Some(upstream) = &shared.upstream {
        // PostgreSQL mode: committed there one by one, fanned out by the stream. Each is
        // answered once the stream brings it back; the next is written meanwhile.
        for request in accepted {
            // The semaphore is never closed: a place always comes.
            let place = upstream.replicating.clone().acquire_owned().await.ok();
            let pending = upstream.write(request.txn, request.guard).await;
            let upstream = upstream.clone();
            let answering = async move {
                let outcome = upstream.answer(pending).await;
                let _ = request.reply.send(outcome);
                drop(place);
            };
            tokio::spawn(answering.in_current_span());
        }
        return None;
    }
    let (txns, replies): (Vec<GuardedTxn>, Vec<_>) = accepted
        .into_iter()
        .map(|r| ((r.txn, r.guard), r.reply))
        .unzip();
    let (done, result) = oneshot::channel();
    let result = match shared.writer.send((txns, done)) {
        Ok(()) => result
            .await
            .map_err(|_| "the writer thread is gone".to_string()),
        Err(_) => Err("the writer thread is gone".to_string()),
    };
    match result {
        Ok(Ok((outcomes, window_events))) => Some(Committed {
            outcomes,
            replies,
            window_events,
            at: std::time::Instant::now(),
        }),
        Ok(Err(e)) => {
            warn!(error = %e, "store failed to apply a batch");
            unavailable(replies, &format!("server storage error: {e}"));
            None
        }
        Err(e) => {
            warn!(error = %e, "store writer unavailable");
            unavailable(replies, &e);
            None
        }
    }
}

/// Committed batches not yet handed to their sessions (at most [`MAX_HELD_BATCHES`]),
/// and their outcomes, answered once they are.
#[derive(Default)]
struct Held {
    /// Every held transaction's frames, per session.
    outbox: Outbox,
    /// Outcomes to answer, in commit order.
    replies: Vec<(oneshot::Sender<TxnOutcome>, TxnOutcome)>,
    /// The newest committed sync id (a replayed resend's is older than the others').
    last: Option<SyncId>,
    /// When the first held batch committed: the latency of what is held counts from then.
    committed: Option<std::time::Instant>,
    /// Batches committed (or failed) since the last hand-over.
    batches: usize,
}

impl Held {
    /// Gathers a committed batch's frames per session. With `last` (no batch is held after
    /// it), the last transaction to fan out hands each of its sessions everything held as
    /// it goes, so they start writing while the others are still being prepared.
    fn fan_out(&mut self, shared: &Shared, batch: Committed, last: bool) {
        let committed = *self.committed.get_or_insert(batch.at);
        let last_fanned = batch.outcomes.iter().rposition(
            |o| matches!(o, TxnOutcome::Committed { changes, .. } if !changes.is_empty()),
        );
        let mut window_events = batch.window_events.into_iter().peekable();
        for (i, outcome) in batch.outcomes.iter().enumerate() {
            if let TxnOutcome::Committed { sync_id, changes } = outcome {
                shared.metrics.committed(changes.len());
                let windows = window_events
                    .next_if(|(s, _)| s == sync_id)
                    .map(|(_, events)| events)
                    .unwrap_or_default();
                if !changes.is_empty() {
                    let origin = changes.first().and_then(|c| c.origin.clone());
                    let now = (last && Some(i) == last_fanned).then_some(committed);
                    let txn = (*sync_id, origin, changes.as_slice());
                    fan_out(shared, &mut self.outbox, txn, &windows, now);
                }
                // A resend the store already committed answers with its first sync id,
                // older than the batch's new commits: the newest one counts.
                self.last = self.last.max(Some(*sync_id));
            }
        }
        self.replies
            .extend(batch.replies.into_iter().zip(batch.outcomes));
    }

    /// Hands every session its held frames as one queue item, then answers the outcomes.
    fn hand_over(self, shared: &Shared) {
        if let Some(committed) = self.committed {
            self.outbox.hand_over(shared, committed);
        }
        // Only now is every held transaction in its sessions' queues: a bootstrap waiting
        // for one of them may queue its seam behind it.
        if let Some(last) = self.last {
            advance_delivered(shared, last);
        }
        for (reply, outcome) in self.replies {
            let _ = reply.send(outcome);
        }
    }
}

/// Raises `shared.delivered` to `sync_id`: every transaction up to it is in the queue of
/// each session it concerns.
pub(super) fn advance_delivered(shared: &Shared, sync_id: SyncId) {
    shared.delivered.send_if_modified(|d| {
        let newer = sync_id > *d;
        if newer {
            *d = sync_id;
        }
        newer
    });
}

/// Answers a batch that could not be stored: nothing of it was written or recorded, so
/// each transaction may be sent again (clients keep it queued and do).
fn unavailable(replies: Vec<oneshot::Sender<TxnOutcome>>, message: &str) {
    for reply in replies {
        let _ = reply.send(TxnOutcome::Rejected {
            code: RejectCode::Unavailable,
            message: message.to_string(),
        });
    }
}

/// The frames of a batch's committed transactions, per session, until they are handed
/// over together ([`Outbox::hand_over`]); `None` for a session already cut off in this
/// batch (it gets nothing more).
#[derive(Default)]
pub(super) struct Outbox {
    sessions: HashMap<SessionId, Option<Vec<TxnFrame>>, BuildHasherDefault<SessionHasher>>,
    /// Each transaction's deliveries, its memory reused by the next one.
    deliveries: Deliveries,
}

impl Outbox {
    /// Adds `session`'s frame of the next transaction, or the error that keeps the
    /// session from getting it: then it gets nothing more of the batch, and the error is
    /// returned (once) for the caller to cut the session off.
    fn push(
        &mut self,
        session: SessionId,
        frame: Result<TxnFrame, FrameError>,
    ) -> Result<(), FrameError> {
        let frames = self
            .sessions
            .entry(session)
            .or_insert_with(|| Some(Vec::new()));
        let Some(queued) = frames else {
            return Ok(());
        };
        match frame {
            Ok(frame) => queued.push(frame),
            Err(e) => {
                *frames = None;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Each session's frames, in the order they were added; none for a session that
    /// was refused one.
    fn into_batches(self) -> impl Iterator<Item = (SessionId, Vec<TxnFrame>)> {
        self.sessions
            .into_iter()
            .filter_map(|(session, frames)| Some((session, frames?)))
    }

    /// Takes `session`'s frames out (to hand them over before the others).
    fn take(&mut self, session: SessionId) -> Option<Vec<TxnFrame>> {
        self.sessions.remove(&session).flatten()
    }

    /// Queues each session's frames, in sync-id order, as one item of its live queue.
    pub(super) fn hand_over(self, shared: &Shared, committed: std::time::Instant) {
        for (session, frames) in self.into_batches() {
            deliver(shared, session, frames, committed);
        }
    }
}

/// Hashes a [`SessionId`] (a counter the server assigns, not chosen by a client) with one
/// multiplication: the outbox is looked up once per session per transaction.
#[derive(Default)]
pub(super) struct SessionHasher(u64);

impl Hasher for SessionHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

fn deliver(
    shared: &Shared,
    session: SessionId,
    frames: Vec<TxnFrame>,
    committed: std::time::Instant,
) {
    if let Some(handle) = shared.sessions.get(&session) {
        handle.deliver(frames, committed);
    }
}

/// Adds one committed transaction's frames to `outbox`, for every session whose shapes it
/// touches (and its author's). With `hand_over` (the batch's last transaction, committed
/// then), each of those sessions is handed its frames of the batch at once instead.
pub(super) fn fan_out(
    shared: &Shared,
    outbox: &mut Outbox,
    (sync_id, origin, changes): (SyncId, Option<(ClientId, u64)>, &[crate::store::Change]),
    windows: &WindowEvents,
    hand_over: Option<std::time::Instant>,
) {
    let mut deliveries = std::mem::take(&mut outbox.deliveries);
    {
        let registry = shared.registry.lock().expect("registry lock");
        registry.deliveries(changes, &mut deliveries);
        registry.window_deliveries(windows, &mut deliveries);
    }
    // The author hears of its transaction even when no subscription of its matched.
    if let Some((client, _)) = &origin {
        if let Some(session) = shared.authors.get(client) {
            deliveries.include(*session);
        }
    }
    // Each group is encoded once; every session it goes to sends the same bytes.
    let encoded: Vec<Result<Vec<EncodedEvents>, FrameError>> = deliveries
        .groups
        .iter()
        .map(|events| EncodedEvents::encode_chunks(events))
        .collect();
    let mut sessions = 0;
    for (session, pairs) in deliveries.sessions() {
        sessions += 1;
        let frame = session_groups(pairs, &encoded).map(|groups| TxnFrame {
            sync_id,
            origin: origin.clone(),
            groups,
        });
        if let Err(e) = outbox.push(session, frame) {
            warn!(error = %e, sync_id = sync_id.0, "a change too large to send");
            if let Some(handle) = shared.sessions.get(&session) {
                handle.unsendable();
            }
        } else if let Some(committed) = hand_over {
            if let Some(frames) = outbox.take(session) {
                deliver(shared, session, frames, committed);
            }
        }
    }
    shared.metrics.delivered(sessions);
    outbox.deliveries = deliveries;
}

/// One session's groups of a transaction: each group under the session's subscriptions
/// to it, its encoded bytes shared (one group per encoded chunk).
fn session_groups(
    pairs: &[Pair],
    encoded: &[Result<Vec<EncodedEvents>, FrameError>],
) -> Result<Vec<EventGroup>, FrameError> {
    let chunks = |group: usize| encoded[group].as_ref().map_or(0, Vec::len);
    let count = pairs
        .chunk_by(|a, b| a.1 == b.1)
        .filter(|same| same[0].1 != NO_GROUP)
        .map(|same| chunks(same[0].1))
        .sum();
    let mut groups = Vec::with_capacity(count);
    for same in pairs.chunk_by(|a, b| a.1 == b.1) {
        let group = same[0].1;
        if group == NO_GROUP {
            continue;
        }
        let chunks = encoded[group].as_ref().map_err(Clone::clone)?;
        let Some((last, others)) = chunks.split_last() else {
            continue;
        };
        let subs: Vec<SubId> = same.iter().map(|&(_, _, sub)| sub).collect();
        for events in others {
            groups.push(EventGroup {
                subs: subs.clone(),
                events: events.clone(),
            });
        }
        groups.push(EventGroup {
            subs,
            events: last.clone(),
        });
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use crate::vocab::RowEvent;

    #[test]
    fn sessions_of_one_shape_send_the_same_encoded_bytes() {
        let events = vec![(
            "t".to_string(),
            RowEvent::Insert {
                key: Value::Integer(1),
                row: vec![Value::Integer(1)],
            },
        )];
        let encoded = vec![EncodedEvents::encode_chunks(&events), Ok(Vec::new())];
        let s = SessionId(1);
        let a = session_groups(&[(s, 0, SubId(1))], &encoded).unwrap();
        let b = session_groups(
            &[(s, 0, SubId(7)), (s, 0, SubId(8)), (s, 1, SubId(9))],
            &encoded,
        )
        .unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(b.len(), 1, "a group with no chunk sends nothing");
        assert_eq!(
            b[0].subs,
            [SubId(7), SubId(8)],
            "one group for both subscriptions"
        );
        assert!(a[0].events.shares_bytes_with(&b[0].events));
        let author = session_groups(&[(s, 0, SubId(1)), (s, NO_GROUP, SubId(0))], &encoded);
        assert_eq!(
            author.unwrap().len(),
            1,
            "an author's own mark adds no group"
        );
        let only = session_groups(&[(s, NO_GROUP, SubId(0))], &encoded).unwrap();
        assert!(
            only.is_empty(),
            "an author with no event of its own transaction"
        );
    }

    #[test]
    fn sequential_session_ids_hash_apart_in_low_and_high_bits() {
        use std::hash::Hash;
        let hash = |id| {
            let mut hasher = SessionHasher::default();
            SessionId(id).hash(&mut hasher);
            hasher.finish()
        };
        let all: std::collections::HashSet<u64> = (0..10_000).map(hash).collect();
        assert_eq!(all.len(), 10_000);
        // The table's buckets come from the low bits, its tags from the top seven.
        let low: std::collections::HashSet<u64> = (0..1024).map(|i| hash(i) % 1024).collect();
        let tags: std::collections::HashSet<u64> = (0..1024).map(|i| hash(i) >> 57).collect();
        assert!(
            low.len() > 512 && tags.len() > 64,
            "{} {}",
            low.len(),
            tags.len()
        );
    }

    #[test]
    fn a_group_too_large_to_encode_fails_the_sessions_that_get_it() {
        let encoded = vec![Err(FrameError::TooLarge { len: 2, max: 1 })];
        assert!(session_groups(&[(SessionId(1), 0, SubId(1))], &encoded).is_err());
        assert!(session_groups(&[], &encoded).unwrap().is_empty());
    }

    fn frame(sync_id: u64) -> Result<TxnFrame, FrameError> {
        Ok(TxnFrame {
            sync_id: SyncId(sync_id),
            origin: None,
            groups: Vec::new(),
        })
    }

    #[test]
    fn a_batch_reaches_each_session_as_one_list_in_sync_id_order() {
        let mut outbox = Outbox::default();
        for sync_id in 1..=3 {
            outbox.push(SessionId(1), frame(sync_id)).unwrap();
            if sync_id != 2 {
                outbox.push(SessionId(2), frame(sync_id)).unwrap();
            }
        }
        let mut batches: Vec<_> = outbox.into_batches().collect();
        batches.sort_by_key(|(session, _)| session.0);
        let ids = |frames: &[TxnFrame]| frames.iter().map(|f| f.sync_id.0).collect::<Vec<_>>();
        assert_eq!(batches.len(), 2, "one list per session");
        assert_eq!(ids(&batches[0].1), [1, 2, 3]);
        assert_eq!(ids(&batches[1].1), [1, 3]);
    }

    #[test]
    fn a_session_refused_a_frame_gets_nothing_more_of_the_batch() {
        let mut outbox = Outbox::default();
        outbox.push(SessionId(1), frame(1)).unwrap();
        outbox.push(SessionId(2), frame(1)).unwrap();
        let too_large = Err(FrameError::TooLarge { len: 2, max: 1 });
        assert!(outbox.push(SessionId(1), too_large.clone()).is_err());
        // Later transactions neither reach it nor report the error again.
        outbox.push(SessionId(1), frame(3)).unwrap();
        assert!(outbox.push(SessionId(1), too_large).is_ok());
        outbox.push(SessionId(2), frame(3)).unwrap();
        let batches: Vec<_> = outbox.into_batches().collect();
        assert_eq!(batches.len(), 1, "{batches:?}");
        assert_eq!(batches[0].0, SessionId(2));
        assert_eq!(batches[0].1.len(), 2);
    }

    #[test]
    fn a_session_taken_out_early_is_not_handed_over_again() {
        let mut outbox = Outbox::default();
        outbox.push(SessionId(1), frame(1)).unwrap();
        outbox.push(SessionId(2), frame(1)).unwrap();
        outbox.push(SessionId(1), frame(2)).unwrap();
        let taken = outbox.take(SessionId(1)).unwrap();
        assert_eq!(
            taken.iter().map(|f| f.sync_id.0).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(outbox.take(SessionId(1)).is_none());
        let rest: Vec<_> = outbox.into_batches().map(|(session, _)| session).collect();
        assert_eq!(rest, [SessionId(2)]);
    }
}
