//! Resizing a window subscription in place: the session asks, the committer answers
//! between two batches (so every transaction up to the head is already in the session's
//! live queue and no later one is), reading at the head under the store's writer lock
//! only the rows between the old and the new edge.
//!
//! Server-internal: called by the committer task; reads through the store trait.

use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::debug;

use super::session::LiveItem;
use super::Shared;
use crate::query::{Pred, Shape};
use crate::vocab::{RowEvent, SessionId, SubId, SyncId};

/// Resizes waiting for the committer, across all sessions (a session waits for its
/// answer before it reads its next request, so each has at most one here).
pub const RESIZE_QUEUE_CAPACITY: usize = 256;

/// One window subscription to resize.
pub struct ResizeRequest {
    /// The subscriber.
    pub session: SessionId,
    /// Its subscription.
    pub sub: SubId,
    /// The window it holds now.
    pub from: Arc<Shape>,
    /// The same window with the new limit.
    pub to: Arc<Shape>,
    /// The subscription's own predicate, when a read rule was ANDed in.
    pub base: Option<Arc<Pred>>,
    /// `Err` says why the resize could not be done (the window is unchanged).
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// Runs one resize on the committer task: starts `to` and reads the delta at the head,
/// moves the subscriber from `from` to `to`, and queues the delta on its live stream.
pub async fn run(shared: &Arc<Shared>, request: ResizeRequest) {
    let ResizeRequest {
        session,
        sub,
        from,
        to,
        base,
        reply,
    } = request;
    let read = {
        let (store, windows) = (shared.store.clone(), shared.windows.clone());
        let (from, to) = (from.clone(), to.clone());
        tokio::task::spawn_blocking(move || {
            let mut out: Option<(SyncId, Vec<RowEvent>)> = None;
            store.at_head(&mut |view, head| {
                let mut windows = windows.lock().unwrap_or_else(|e| e.into_inner());
                out = Some((head, windows.resize(&from, &to, base.clone(), view)?));
                Ok(())
            })?;
            out.ok_or_else(|| crate::store::StoreError::Corrupt("no resize read".into()))
        })
        .await
    };
    let (head, events) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => {
            debug!(error = %e, "resize failed");
            let _ = reply.send(Err(format!("the window could not be resized: {e}")));
            return;
        }
        Err(e) => {
            let _ = reply.send(Err(format!("the window could not be resized: {e}")));
            return;
        }
    };
    {
        let mut registry = shared.registry.lock().expect("registry lock");
        registry.unsubscribe(from.id(), session, sub);
        registry.subscribe_window(&to, session, sub);
    }
    if let Some(handle) = shared.sessions.get(&session) {
        let table = to.table().name.clone();
        handle.deliver_item(LiveItem::Resized {
            sub,
            sync_id: head,
            events: events.into_iter().map(|e| (table.clone(), e)).collect(),
        });
    }
    let _ = reply.send(Ok(()));
}
