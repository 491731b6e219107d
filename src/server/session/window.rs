//! Window subscriptions of a session: starting a window's maintenance at the head when
//! it is subscribed, and resizing it in place (the committer reads the delta between two
//! batches).
//!
//! Reads only through the [`crate::store::Store`] trait, on a blocking thread.

use super::*;

impl Session {
    /// Resizes window subscription `sub` to `limit` rows, through the committer (see
    /// [`super::resize`]); answers `Resized` or `Error`.
    pub(super) async fn resize(&mut self, sub: SubId, limit: u64) {
        let refused = |message: String| ServerMessage::Error { message };
        let Some(s) = self.subscriptions.get(&sub) else {
            return self
                .reply(refused(format!("no subscription {sub} to resize")))
                .await;
        };
        if !s.window {
            return self
                .reply(refused(format!(
                    "subscription {sub} is not a window (ORDER BY ... LIMIT n)"
                )))
                .await;
        }
        if !s.ready.load(Ordering::SeqCst) {
            return self
                .reply(refused(format!(
                    "subscription {sub} is still bootstrapping; resize it once it is ready"
                )))
                .await;
        }
        if limit == 0 || limit > query::MAX_WINDOW_LIMIT {
            return self
                .reply(refused(format!(
                    "a window holds 1 to {} rows, not {limit}",
                    query::MAX_WINDOW_LIMIT
                )))
                .await;
        }
        let Some(to) = s.shape.with_limit(limit).map(Arc::new) else {
            return;
        };
        let (reply, answer) = oneshot::channel();
        let request = crate::server::resize::ResizeRequest {
            session: self.id,
            sub,
            from: s.shape.clone(),
            to: to.clone(),
            base: s.base.clone(),
            reply,
        };
        if self.shared.resizes.send(request).await.is_err() {
            return self
                .reply(refused("the server is shutting down".into()))
                .await;
        }
        match answer.await {
            Ok(Ok(())) => {
                let shown = match &s_base(&self.subscriptions, sub) {
                    Some(base) => query::Shape::windowed(
                        to.table().clone(),
                        to.projection().map(<[usize]>::to_vec),
                        (**base).clone(),
                        to.window().cloned(),
                    )
                    .text()
                    .to_string(),
                    None => to.text().to_string(),
                };
                if let Some(s) = self.subscriptions.get_mut(&sub) {
                    s.shape = to;
                }
                self.reply(ServerMessage::Resized {
                    sub,
                    limit,
                    shape: shown,
                })
                .await
            }
            Ok(Err(message)) => self.reply(refused(message)).await,
            Err(_) => {
                self.reply(refused("the server is shutting down".into()))
                    .await
            }
        }
    }

    /// Starts maintaining the window `shape` (or adds a user to it) at the head, under the
    /// store's writer lock: every later transaction keeps it exact, and the snapshot reads
    /// a state at or after that head.
    pub(super) async fn start_window(
        &self,
        shape: &Arc<query::Shape>,
        base: Option<Arc<query::Pred>>,
    ) -> Result<(), String> {
        let (store, windows, shape) = (
            self.shared.store.clone(),
            self.shared.windows.clone(),
            shape.clone(),
        );
        tokio::task::spawn_blocking(move || {
            store.at_head(&mut |view, _head| {
                let mut windows = windows.lock().unwrap_or_else(|e| e.into_inner());
                windows.register(&shape, base.clone(), view)
            })
        })
        .await
        .map_err(|e| format!("the window could not be started: {e}"))?
        .map_err(|e| format!("the window could not be started: {e}"))
    }
}

/// The subscription's own predicate (without its read rule), if it has one.
fn s_base(subs: &HashMap<SubId, Subscription>, sub: SubId) -> Option<Arc<query::Pred>> {
    subs.get(&sub).and_then(|s| s.base.clone())
}
