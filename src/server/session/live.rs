//! A session's live stream: the transactions the committer queued for it, gathered into
//! as few stream writes as a burst allows, each sent only to the subscriptions whose
//! bootstraps it follows (the seams), its origin named only to its author.
//!
//! The events arrive encoded, shared with every other session of the same shapes; what
//! a session writes per transaction is its own frame around those bytes. A transaction
//! too large for one frame is split into parts the client reassembles before applying
//! anything of it ([`crate::wire::encode_txn`]).
//!
//! Writes only to its own stream; it must not touch the store or the registry.

use super::*;
use crate::server::metrics::Sent;
use crate::wire::{encode, encode_txn, LiveFrame, TxnFrame};

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
}

/// A session's live queue is full: [`SESSION_QUEUE_CAPACITY`] transactions, or
/// [`SESSION_QUEUE_ITEMS`] items.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Full;

/// Queues a commit batch's `txns` for one session as one item, counting them in `queued`
/// (the live writer uncounts them as it takes the item, [`taken`]). Nothing is queued
/// when that would pass [`SESSION_QUEUE_CAPACITY`] transactions or the queue is full;
/// nothing either, and no error, when the session's writer is gone.
pub(super) fn queue_txns(
    live: &mpsc::Sender<LiveItem>,
    queued: &AtomicUsize,
    txns: Vec<TxnFrame>,
    committed: Instant,
) -> Result<(), Full> {
    let n = txns.len();
    if n == 0 {
        return Ok(());
    }
    let before = queued.fetch_add(n, Ordering::SeqCst);
    if before + n > SESSION_QUEUE_CAPACITY {
        queued.fetch_sub(n, Ordering::SeqCst);
        return Err(Full);
    }
    match live.try_send(LiveItem::Txns(txns, committed)) {
        Ok(()) => Ok(()),
        Err(e) => {
            queued.fetch_sub(n, Ordering::SeqCst);
            match e {
                mpsc::error::TrySendError::Full(_) => Err(Full),
                mpsc::error::TrySendError::Closed(_) => Ok(()),
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

/// Writes the session's live stream. `client_id` is the server's name for the client
/// (to recognize its own transactions), `chosen_id` the id it chose: a transaction's
/// origin goes only to its author, under the author's own id; nobody else learns who
/// wrote what. `queued` counts the transactions in `queue`; they stop counting once taken.
pub(super) async fn write_live(
    mut writer: FrameWriter,
    (mut queue, queued): (mpsc::Receiver<LiveItem>, Arc<AtomicUsize>),
    (client_id, chosen_id): (ClientId, ClientId),
    metrics: Arc<Metrics>,
) {
    let mut out = Batch {
        buf: Vec::new(),
        committed: Vec::new(),
        sent: metrics.sent(),
    };
    // Per subscription, the last sync id its bootstrap already covered.
    let mut seams: HashMap<SubId, SyncId> = HashMap::new();
    while let Some(first) = queue.recv().await {
        // Whatever else is already queued goes out in the same stream write: a burst of
        // commits costs one write per session, not one per transaction.
        let mut next = Some(first);
        let mut batched = 0;
        while let Some(item) = next.take() {
            taken(&item, &queued);
            let written = match item {
                LiveItem::Seam { sub, through } => {
                    seams.insert(sub, through);
                    let joined = Live::Joined {
                        sub,
                        sync_id: through,
                    };
                    encode(&LiveFrame::V1(joined), &mut out.buf)
                }
                LiveItem::Forget { sub } => {
                    seams.remove(&sub);
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
                    encode(&LiveFrame::V1(resized), &mut out.buf)
                }
                LiveItem::Txns(txns, at) => {
                    let mut written = Ok(());
                    for txn in txns {
                        let Some(txn) = for_session(txn, &seams, (&client_id, &chosen_id)) else {
                            continue;
                        };
                        written = encode_txn(txn, &mut out.buf);
                        if written.is_err() {
                            break;
                        }
                        out.committed.push(at);
                        // A batch of large transactions goes out in several writes.
                        if out.buf.len() >= LIVE_BATCH_BYTES && !out.write(&mut writer).await {
                            return;
                        }
                    }
                    written
                }
            };
            if let Err(e) = written {
                warn!(error = %e, "live frame not encodable; closing the live stream");
                return;
            }
            batched += 1;
            if batched < LIVE_BATCH_FRAMES && out.buf.len() < LIVE_BATCH_BYTES {
                next = queue.try_recv().ok();
            }
        }
        if !out.write(&mut writer).await {
            return;
        }
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
        // Written together: one clock reading for all of them.
        let now = Instant::now();
        for at in self.committed.drain(..) {
            self.sent.observe(now.saturating_duration_since(at));
        }
        self.sent.flush();
        self.buf.clear();
        self.buf.shrink_to(LIVE_BATCH_BYTES);
        true
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

    #[test]
    fn a_batch_is_one_queue_item_and_counts_each_transaction() {
        let (live, mut items) = mpsc::channel(SESSION_QUEUE_ITEMS);
        let queued = AtomicUsize::new(0);
        let at = Instant::now();
        queue_txns(&live, &queued, batch(SESSION_QUEUE_CAPACITY - 1), at).unwrap();
        assert_eq!(queued.load(Ordering::SeqCst), SESSION_QUEUE_CAPACITY - 1);
        // Two items, far below the item bound, but one transaction too many: refused
        // whole, nothing of it queued.
        assert_eq!(queue_txns(&live, &queued, batch(2), at), Err(Full));
        assert_eq!(queued.load(Ordering::SeqCst), SESSION_QUEUE_CAPACITY - 1);
        queue_txns(&live, &queued, batch(1), at).unwrap();
        let first = items.try_recv().unwrap();
        assert!(matches!(&first, LiveItem::Txns(t, _) if t.len() == SESSION_QUEUE_CAPACITY - 1));
        // Taken by the writer: its transactions no longer count.
        taken(&first, &queued);
        assert_eq!(queued.load(Ordering::SeqCst), 1);
        queue_txns(&live, &queued, batch(2), at).unwrap();
        assert!(
            queue_txns(&live, &queued, Vec::new(), at).is_ok(),
            "nothing to queue"
        );
        assert_eq!(queued.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_full_queue_of_items_refuses_a_batch_too() {
        let (live, _items) = mpsc::channel(2);
        let queued = AtomicUsize::new(0);
        let at = Instant::now();
        live.try_send(LiveItem::Forget { sub: SubId(1) }).unwrap();
        queue_txns(&live, &queued, batch(1), at).unwrap();
        assert_eq!(queue_txns(&live, &queued, batch(1), at), Err(Full));
        assert_eq!(
            queued.load(Ordering::SeqCst),
            1,
            "the refused one is not counted"
        );
    }

    #[test]
    fn a_gone_writer_is_no_lag() {
        let (live, items) = mpsc::channel(2);
        drop(items);
        let queued = AtomicUsize::new(0);
        assert!(queue_txns(&live, &queued, batch(1), Instant::now()).is_ok());
        assert_eq!(queued.load(Ordering::SeqCst), 0);
    }
}
