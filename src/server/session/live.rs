//! A session's live stream: the transactions the committer queued for it, gathered into
//! as few stream writes as a burst allows, each sent only to the subscriptions whose
//! bootstraps it follows (the seams), its origin named only to its author.
//!
//! The events arrive encoded, shared with every other session of the same shapes; what
//! a session writes per transaction is its own frame around those bytes. A transaction
//! too large for one frame is split into parts the client reassembles before applying
//! anything of it ([`crate::wire::encode_txn`]).
//!
//! Two writers take turns on the stream, under one lock: the session's live writer task,
//! which drains the queue, and the committer, which writes a batch straight to the stream
//! when nothing is queued ahead of it and the stream takes it at once ([`LiveQueue::
//! deliver`]): then the batch costs no queue item and no task wake. Anything else (a full
//! stream, a queue not yet drained) goes through the queue, in order.
//!
//! Writes only to its own stream; it must not touch the store or the registry.

use futures_util::FutureExt;
use tokio::sync::Mutex;

use super::*;
use crate::server::metrics::Sent;
use crate::wire::{encode, encode_txn, FrameError, LiveFrame, TxnFrame};

/// Items of a session's live queue.
pub enum LiveItem {
    /// The committed transactions of one commit batch that concern this session, in
    /// sync-id order (their events' encoded bytes shared with the other sessions of each
    /// shape), and when the batch was committed. Never empty.
    Txns(Vec<TxnFrame>, Instant),
    /// The subscription's bootstrap covered everything up to `through`.
    Seam {
        /// The subscription.
        sub: SubId,
        /// The sync id its bootstrap covers.
        through: SyncId,
    },
    /// The subscription ended: forget its seam.
    Forget {
        /// The subscription.
        sub: SubId,
    },
    /// The window subscription was resized at `sync_id`: the rows that moved in or out.
    Resized {
        /// The subscription.
        sub: SubId,
        /// The state the delta was read at.
        sync_id: SyncId,
        /// `(table, event)` per row.
        events: Vec<(String, crate::vocab::RowEvent)>,
    },
    /// Frames the committer encoded that the stream did not take at once: the writer
    /// writes them.
    Flush,
}

/// A session's live queue is full: [`SESSION_QUEUE_CAPACITY`] transactions, or
/// [`SESSION_QUEUE_ITEMS`] items.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Full;

/// Why a batch did not reach a session's live stream or queue.
#[derive(Debug)]
pub(super) enum Undelivered {
    /// The queue is full: the session lags.
    Full,
    /// A transaction could not be encoded for it.
    Unsendable(FrameError),
}

/// The sending side of a session's live queue. Items count from before they are queued
/// until the writer task has written them, so the committer knows when nothing is ahead
/// of a batch it could write itself.
#[derive(Clone)]
pub(crate) struct LiveQueue {
    tx: mpsc::Sender<LiveItem>,
    /// Items queued or being written.
    items: Arc<AtomicUsize>,
    /// Transactions queued and not yet taken by the writer task (at most
    /// [`SESSION_QUEUE_CAPACITY`]).
    txns: Arc<AtomicUsize>,
}

/// The live stream and what its writers need to know, behind the lock they share.
pub(super) struct LiveStream {
    writer: FrameWriter,
    /// Per subscription, the last sync id its bootstrap already covered.
    seams: HashMap<SubId, SyncId>,
    /// The server's name for the client (to recognize its own transactions) and the id
    /// it chose: a transaction's origin goes only to its author, under the author's own
    /// id; nobody else learns who wrote what.
    ids: (ClientId, ClientId),
    /// Frames encoded and not yet written.
    out: Batch,
}

/// A session's live queue: its sending side, the shared stream, and the receiving side
/// for [`write_live`].
pub(super) fn live_queue(
    stream: quinn::SendStream,
    ids: (ClientId, ClientId),
    metrics: &Metrics,
) -> (LiveQueue, Arc<Mutex<LiveStream>>, mpsc::Receiver<LiveItem>) {
    let (tx, rx) = mpsc::channel(SESSION_QUEUE_ITEMS);
    let queue = LiveQueue {
        tx,
        items: Arc::new(AtomicUsize::new(0)),
        txns: Arc::new(AtomicUsize::new(0)),
    };
    let stream = LiveStream {
        writer: FrameWriter::new(stream),
        seams: HashMap::new(),
        ids,
        out: Batch {
            buf: Vec::new(),
            committed: Vec::new(),
            sent: metrics.sent(),
        },
    };
    (queue, Arc::new(Mutex::new(stream)), rx)
}

impl LiveQueue {
    /// Transactions queued and not yet taken by the writer task.
    pub(super) fn queued(&self) -> usize {
        self.txns.load(Ordering::Relaxed)
    }

    /// Queues `item` without waiting.
    pub(super) fn try_send(
        &self,
        item: LiveItem,
    ) -> Result<(), mpsc::error::TrySendError<LiveItem>> {
        self.items.fetch_add(1, Ordering::SeqCst);
        self.tx.try_send(item).inspect_err(|_| {
            self.items.fetch_sub(1, Ordering::SeqCst);
        })
    }

    /// Queues `item`, waiting for room; fails once the writer task is gone.
    pub(crate) async fn send(
        &self,
        item: LiveItem,
    ) -> Result<(), mpsc::error::SendError<LiveItem>> {
        self.items.fetch_add(1, Ordering::SeqCst);
        self.tx.send(item).await.inspect_err(|_| {
            self.items.fetch_sub(1, Ordering::SeqCst);
        })
    }

    /// Hands a commit batch's `txns` (in sync-id order, committed at `committed`) to the
    /// session: written to the stream straight away when the writer task is idle, nothing
    /// is queued and the stream takes them at once; otherwise queued as one item (what
    /// the stream did not take is left to the writer task).
    pub(super) fn deliver(
        &self,
        stream: &Mutex<LiveStream>,
        txns: Vec<TxnFrame>,
        committed: Instant,
    ) -> Result<(), Undelivered> {
        // Taken only when nothing is queued or being written ahead of the batch.
        let idle = stream
            .try_lock()
            .ok()
            .filter(|_| self.items.load(Ordering::SeqCst) == 0);
        let Some(mut guard) = idle else {
            return self
                .queue_txns(txns, committed)
                .map_err(|Full| Undelivered::Full);
        };
        let live = &mut *guard;
        for txn in txns {
            live.encode_txn(txn, committed)
                .map_err(Undelivered::Unsendable)?;
        }
        if live.out.write_now(&mut live.writer) {
            return Ok(());
        }
        // The rest waits in the stream's buffer, under the lock: the writer task writes
        // it before anything queued after it.
        self.try_send(LiveItem::Flush)
            .map_err(|_| Undelivered::Full)
    }

    /// Queues a commit batch's `txns` as one item, counting them (the live writer uncounts
    /// them as it takes the item, [`taken`]). Nothing is queued when that would pass
    /// [`SESSION_QUEUE_CAPACITY`] transactions or the queue is full; nothing either, and
    /// no error, when the session's writer is gone.
    pub(super) fn queue_txns(&self, txns: Vec<TxnFrame>, committed: Instant) -> Result<(), Full> {
        let n = txns.len();
        if n == 0 {
            return Ok(());
        }
        let before = self.txns.fetch_add(n, Ordering::SeqCst);
        if before + n > SESSION_QUEUE_CAPACITY {
            self.txns.fetch_sub(n, Ordering::SeqCst);
            return Err(Full);
        }
        match self.try_send(LiveItem::Txns(txns, committed)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.txns.fetch_sub(n, Ordering::SeqCst);
                match e {
                    mpsc::error::TrySendError::Full(_) => Err(Full),
                    mpsc::error::TrySendError::Closed(_) => Ok(()),
                }
            }
        }
    }
}

/// The live writer took `item` from the queue: its transactions no longer count.
fn taken(item: &LiveItem, queued: &AtomicUsize) {
    if let LiveItem::Txns(txns, _) = item {
        queued.fetch_sub(txns.len(), Ordering::SeqCst);
    }
}

/// Writes what the session's live queue holds to its stream, taking the stream's lock
/// for each run of items; an item stops counting once written.
pub(super) async fn write_live(
    stream: Arc<Mutex<LiveStream>>,
    mut queue: mpsc::Receiver<LiveItem>,
    counts: LiveQueue,
) {
    while let Some(first) = queue.recv().await {
        let mut guard = stream.lock().await;
        let live = &mut *guard;
        // Whatever else is already queued goes out in the same stream write: a burst of
        // commits costs one write per session, not one per transaction.
        let mut next = Some(first);
        let mut batched = 0;
        while let Some(item) = next.take() {
            taken(&item, &counts.txns);
            let written = match item {
                LiveItem::Seam { sub, through } => {
                    live.seams.insert(sub, through);
                    let joined = Live::Joined {
                        sub,
                        sync_id: through,
                    };
                    encode(&LiveFrame::V1(joined), &mut live.out.buf)
                }
                LiveItem::Forget { sub } => {
                    live.seams.remove(&sub);
                    Ok(())
                }
                LiveItem::Resized {
                    sub,
                    sync_id,
                    events,
                } => {
                    let resized = Live::Resized {
                        sub,
                        sync_id,
                        events,
                    };
                    encode(&LiveFrame::V1(resized), &mut live.out.buf)
                }
                LiveItem::Txns(txns, at) => {
                    let mut written = Ok(());
                    for txn in txns {
                        written = live.encode_txn(txn, at);
                        if written.is_err() {
                            break;
                        }
                        // A batch of large transactions goes out in several writes.
                        if live.out.buf.len() >= LIVE_BATCH_BYTES
                            && !live.out.write(&mut live.writer).await
                        {
                            return;
                        }
                    }
                    written
                }
                LiveItem::Flush => Ok(()),
            };
            if let Err(e) = written {
                warn!(error = %e, "live frame not encodable; closing the live stream");
                return;
            }
            batched += 1;
            if batched < LIVE_BATCH_FRAMES && live.out.buf.len() < LIVE_BATCH_BYTES {
                next = queue.try_recv().ok();
            }
        }
        if !live.out.write(&mut live.writer).await {
            return;
        }
        // Written: the committer may write straight to the stream again once nothing is
        // queued. (A writer that ended above keeps its items counted: the stream is gone.)
        counts.items.fetch_sub(batched, Ordering::SeqCst);
    }
}

impl LiveStream {
    /// Encodes what of `txn` this session sends (see [`for_session`]), committed at `at`,
    /// behind the frames not yet written; nothing when nothing of it is for this session.
    fn encode_txn(&mut self, txn: TxnFrame, at: Instant) -> Result<(), FrameError> {
        let (client_id, chosen_id) = &self.ids;
        let Some(txn) = for_session(txn, &self.seams, (client_id, chosen_id)) else {
            return Ok(());
        };
        encode_txn(txn, &mut self.out.buf)?;
        self.out.committed.push(at);
        Ok(())
    }
}

/// Live frames encoded and not yet written, and when the transactions among them were
/// committed.
struct Batch {
    buf: Vec<u8>,
    committed: Vec<Instant>,
    /// The commit-to-send latencies, added to the metrics once per write.
    sent: Sent,
}

impl Batch {
    /// Writes what is encoded in one stream write (nothing when it is empty); `false`
    /// once the stream is gone.
    async fn write(&mut self, writer: &mut FrameWriter) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        if writer.stream().write_all(&self.buf).await.is_err() {
            return false;
        }
        self.written();
        true
    }

    /// Writes what the stream takes without waiting; `true` when that is everything
    /// (or the stream is gone: nothing will be written again), `false` when some is
    /// left for [`Batch::write`].
    fn write_now(&mut self, writer: &mut FrameWriter) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        match writer.stream().write(&self.buf).now_or_never() {
            Some(Ok(n)) if n == self.buf.len() => {
                self.written();
                true
            }
            Some(Ok(n)) => {
                self.buf.drain(..n);
                false
            }
            Some(Err(_)) => {
                self.buf.clear();
                self.committed.clear();
                true
            }
            None => false,
        }
    }

    /// Everything encoded is written: its latencies count, its buffer is kept for the next.
    fn written(&mut self) {
        // Written together: one clock reading for all of them.
        let now = Instant::now();
        for at in self.committed.drain(..) {
            self.sent.observe(now.saturating_duration_since(at));
        }
        self.sent.flush();
        self.buf.clear();
        self.buf.shrink_to(LIVE_BATCH_BYTES);
    }
}

/// What of `txn` this session sends: the groups of subscriptions whose bootstraps the
/// transaction follows, its origin only to its author (under the id the author chose).
/// `None` when nothing is left to send: no event, and not the session's own transaction.
fn for_session(
    mut txn: TxnFrame,
    seams: &HashMap<SubId, SyncId>,
    (client_id, chosen_id): (&ClientId, &ClientId),
) -> Option<TxnFrame> {
    let sync_id = txn.sync_id;
    for group in &mut txn.groups {
        group
            .subs
            .retain(|sub| seams.get(sub).is_none_or(|&w| sync_id > w));
    }
    txn.groups.retain(|group| !group.subs.is_empty());
    // An empty transaction still goes to its author, to confirm it in order.
    let authored = txn.origin.as_ref().is_some_and(|(c, _)| c == client_id);
    txn.origin = match txn.origin.take() {
        Some((_, seq)) if authored => Some((chosen_id.clone(), seq)),
        _ => None,
    };
    (!txn.groups.is_empty() || authored).then_some(txn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use crate::wire::{EncodedEvents, EventGroup, RowEvent};

    fn group(subs: &[u64]) -> EventGroup {
        let key = Value::Integer(1);
        let events = vec![(
            "t".to_string(),
            RowEvent::Insert {
                key: key.clone(),
                row: vec![key],
            },
        )];
        EventGroup {
            subs: subs.iter().map(|&s| SubId(s)).collect(),
            events: EncodedEvents::encode(&events).unwrap(),
        }
    }

    fn txn(sync_id: u64, origin: Option<&str>, groups: Vec<EventGroup>) -> TxnFrame {
        TxnFrame {
            sync_id: SyncId(sync_id),
            origin: origin.map(|c| (ClientId(c.into()), 3)),
            groups,
        }
    }

    const ME: (&str, &str) = ("server-name", "chosen");

    fn ids() -> (ClientId, ClientId) {
        (ClientId(ME.0.into()), ClientId(ME.1.into()))
    }

    #[test]
    fn a_subscription_hears_only_what_follows_its_bootstrap() {
        let seams = HashMap::from([(SubId(1), SyncId(10)), (SubId(2), SyncId(4))]);
        let (me, chosen) = ids();
        let sent = for_session(
            txn(10, None, vec![group(&[1, 2]), group(&[1])]),
            &seams,
            (&me, &chosen),
        )
        .unwrap();
        // Subscription 1's bootstrap covers sync id 10: only 2 hears of it.
        assert_eq!(sent.groups.len(), 1);
        assert_eq!(sent.groups[0].subs, vec![SubId(2)]);
        assert!(
            for_session(txn(10, None, vec![group(&[1])]), &seams, (&me, &chosen)).is_none(),
            "a transaction with nothing left for anyone is not sent"
        );
    }

    #[test]
    fn the_origin_goes_to_its_author_alone_under_the_id_it_chose() {
        let seams = HashMap::new();
        let (me, chosen) = ids();
        let mine = for_session(txn(5, Some(ME.0), vec![]), &seams, (&me, &chosen)).unwrap();
        assert_eq!(mine.origin, Some((ClientId(ME.1.into()), 3)));
        let theirs = for_session(
            txn(5, Some("someone-else"), vec![group(&[1])]),
            &seams,
            (&me, &chosen),
        )
        .unwrap();
        assert_eq!(theirs.origin, None, "nobody learns who wrote what");
        assert!(
            for_session(txn(6, Some("someone-else"), vec![]), &seams, (&me, &chosen)).is_none()
        );
    }

    #[test]
    fn filtering_keeps_the_shared_bytes() {
        let shared = group(&[1, 2]);
        let (me, chosen) = ids();
        let sent = for_session(
            txn(3, None, vec![shared.clone()]),
            &HashMap::new(),
            (&me, &chosen),
        )
        .unwrap();
        assert!(sent.groups[0].events.shares_bytes_with(&shared.events));
    }

    fn batch(len: usize) -> Vec<TxnFrame> {
        (0..len as u64).map(|i| txn(i + 1, None, vec![])).collect()
    }

    /// A live queue of `capacity` items without a stream, and its receiving side.
    fn queue(capacity: usize) -> (LiveQueue, mpsc::Receiver<LiveItem>) {
        let (tx, rx) = mpsc::channel(capacity);
        let queue = LiveQueue {
            tx,
            items: Arc::new(AtomicUsize::new(0)),
            txns: Arc::new(AtomicUsize::new(0)),
        };
        (queue, rx)
    }

    #[test]
    fn a_batch_is_one_queue_item_and_counts_each_transaction() {
        let (live, mut items) = queue(SESSION_QUEUE_ITEMS);
        let at = Instant::now();
        live.queue_txns(batch(SESSION_QUEUE_CAPACITY - 1), at)
            .unwrap();
        assert_eq!(live.queued(), SESSION_QUEUE_CAPACITY - 1);
        // Two items, far below the item bound, but one transaction too many: refused
        // whole, nothing of it queued.
        assert_eq!(live.queue_txns(batch(2), at), Err(Full));
        assert_eq!(live.queued(), SESSION_QUEUE_CAPACITY - 1);
        live.queue_txns(batch(1), at).unwrap();
        let first = items.try_recv().unwrap();
        assert!(matches!(&first, LiveItem::Txns(t, _) if t.len() == SESSION_QUEUE_CAPACITY - 1));
        // Taken by the writer: its transactions no longer count (the item does, until
        // it is written).
        taken(&first, &live.txns);
        assert_eq!(live.queued(), 1);
        assert_eq!(live.items.load(Ordering::SeqCst), 2);
        live.queue_txns(batch(2), at).unwrap();
        assert!(live.queue_txns(Vec::new(), at).is_ok(), "nothing to queue");
        assert_eq!(live.queued(), 3);
        assert_eq!(live.items.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_full_queue_of_items_refuses_a_batch_too() {
        let (live, _items) = queue(2);
        let at = Instant::now();
        live.try_send(LiveItem::Forget { sub: SubId(1) }).unwrap();
        live.queue_txns(batch(1), at).unwrap();
        assert_eq!(live.queue_txns(batch(1), at), Err(Full));
        assert_eq!(live.queued(), 1, "the refused one is not counted");
        assert_eq!(live.items.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_gone_writer_is_no_lag() {
        let (live, items) = queue(2);
        drop(items);
        assert!(live.queue_txns(batch(1), Instant::now()).is_ok());
        assert_eq!(live.queued(), 0);
        assert_eq!(live.items.load(Ordering::SeqCst), 0, "nothing counted");
    }

    /// A session's live stream to a QUIC client on loopback whose stream receive window
    /// is `window` bytes.
    struct Loopback {
        live: LiveQueue,
        stream: Arc<Mutex<LiveStream>>,
        items: Option<mpsc::Receiver<LiveItem>>,
        client: quinn::Connection,
        _ends: (quinn::Endpoint, quinn::Endpoint, quinn::Connection),
        _dir: tempfile::TempDir,
    }

    async fn loopback(window: u32) -> Loopback {
        use crate::transport::{self, TransportLimits};
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let any = "127.0.0.1:0".parse().unwrap();
        let limits = TransportLimits::default();
        let server = transport::server_endpoint(any, None, Some(&cert), &limits).unwrap();
        let client_limits = TransportLimits {
            stream_receive_window: window,
            ..TransportLimits::default()
        };
        let endpoint = transport::client_endpoint_with(&cert, any, &client_limits).unwrap();
        let addr = server.local_addr().unwrap();
        let (client, to_client) =
            tokio::join!(transport::connect(&endpoint, addr, "localhost"), async {
                server.accept().await.unwrap().await.unwrap()
            });
        let client = client.unwrap();
        let send = to_client.open_uni().await.unwrap();
        let (live, stream, items) = live_queue(send, ids(), &Metrics::new());
        Loopback {
            live,
            stream,
            items: Some(items),
            client,
            _ends: (server, endpoint, to_client),
            _dir: dir,
        }
    }

    impl Loopback {
        /// Runs the session's live writer task.
        fn start_writer(&mut self) {
            let items = self.items.take().expect("one writer");
            tokio::spawn(write_live(self.stream.clone(), items, self.live.clone()));
        }

        /// The client's reader of the live stream (once the first bytes arrived).
        async fn reader(&self) -> crate::transport::FrameReader {
            crate::transport::FrameReader::new(self.client.accept_uni().await.unwrap())
        }
    }

    /// Reads frames until `n` transactions arrived: what each frame was, in order
    /// (`Txn` as its sync id, `Joined` as `-sub`).
    async fn read(reader: &mut crate::transport::FrameReader, n: usize) -> Vec<i64> {
        let (mut seen, mut txns) = (Vec::new(), 0);
        while txns < n {
            match reader.recv::<LiveFrame>().await.unwrap().unwrap() {
                LiveFrame::V1(Live::Txn(t)) => {
                    txns += 1;
                    seen.push(t.sync_id.0 as i64);
                }
                LiveFrame::V1(Live::Joined { sub, .. }) => seen.push(-(sub.0 as i64)),
                other => panic!("unexpected frame {other:?}"),
            }
        }
        seen
    }

    fn txns(from: u64, to: u64) -> Vec<TxnFrame> {
        (from..=to)
            .map(|i| txn(i, None, vec![group(&[1])]))
            .collect()
    }

    #[tokio::test]
    async fn with_nothing_queued_a_batch_is_written_straight_to_the_stream() {
        let lb = loopback(1024 * 1024).await;
        lb.live
            .deliver(&lb.stream, txns(1, 3), Instant::now())
            .unwrap();
        // No writer task runs: only the committer's direct write can have sent them.
        assert_eq!(lb.live.items.load(Ordering::SeqCst), 0, "nothing queued");
        let mut reader = lb.reader().await;
        assert_eq!(read(&mut reader, 3).await, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_batch_never_overtakes_what_is_queued_ahead_of_it() {
        let mut lb = loopback(1024 * 1024).await;
        let seam = LiveItem::Seam {
            sub: SubId(7),
            through: SyncId(0),
        };
        lb.live.try_send(seam).unwrap();
        lb.live
            .deliver(&lb.stream, txns(1, 2), Instant::now())
            .unwrap();
        assert_eq!(
            lb.live.items.load(Ordering::SeqCst),
            2,
            "queued behind the seam"
        );
        lb.start_writer();
        let mut reader = lb.reader().await;
        assert_eq!(read(&mut reader, 2).await, vec![-7, 1, 2]);
        // Written and uncounted, the next batch goes straight to the stream again.
        while lb.live.items.load(Ordering::SeqCst) != 0 {
            tokio::task::yield_now().await;
        }
        lb.live
            .deliver(&lb.stream, txns(3, 3), Instant::now())
            .unwrap();
        assert_eq!(lb.live.items.load(Ordering::SeqCst), 0);
        assert_eq!(read(&mut reader, 1).await, vec![3]);
    }

    #[tokio::test]
    async fn what_a_full_stream_does_not_take_at_once_the_writer_task_writes_in_order() {
        // A 2 KB window: the client's flow control stops the direct write part-way.
        let mut lb = loopback(2048).await;
        lb.live
            .deliver(&lb.stream, txns(1, 200), Instant::now())
            .unwrap();
        assert_eq!(
            lb.live.items.load(Ordering::SeqCst),
            1,
            "the rest waits: a flush"
        );
        // The next batch must not overtake the rest: it queues behind the flush.
        lb.live
            .deliver(&lb.stream, txns(201, 210), Instant::now())
            .unwrap();
        assert_eq!(lb.live.items.load(Ordering::SeqCst), 2);
        lb.start_writer();
        let mut reader = lb.reader().await;
        let expected: Vec<i64> = (1..=210).collect();
        assert_eq!(read(&mut reader, 210).await, expected);
    }
}
