//! A session's subscriptions: compiling and admitting one (quotas, resume checks),
//! starting its bootstrap task, refusing it, and unregistering it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tracing::{debug, info_span, Instrument};

use super::{brief, LiveItem, Session, Subscription};
use crate::query::{self, ShapeId};
use crate::server::bootstrap;
use crate::server::metrics::ResumeRefusal;
use crate::server::registry::Registry;
use crate::vocab::{QuotaExceeded, SyncId};
use crate::wire::{QuotaRequest, ServerMessage, SubId, PIN_SUB};

impl Session {
    pub(super) async fn subscribe(
        &mut self,
        sub: SubId,
        sql: String,
        params: query::Params,
        resume: Option<(SyncId, Option<ShapeId>)>,
    ) {
        let span = info_span!("subscription", sub = sub.0, sql = %brief(&sql));
        self.subscribe_in(span.clone(), sub, sql, params, resume)
            .instrument(span)
            .await
    }

    /// [`Session::subscribe`] inside its span (`span` goes on with the bootstrap task).
    pub(super) async fn subscribe_in(
        &mut self,
        span: tracing::Span,
        sub: SubId,
        sql: String,
        params: query::Params,
        resume: Option<(SyncId, Option<ShapeId>)>,
    ) {
        if sub == PIN_SUB {
            let message = format!("subscription id {sub} is reserved for pinned rows");
            return self
                .reply(ServerMessage::SubscribeFailed { sub, message })
                .await;
        }
        if self.subscriptions.contains_key(&sub) {
            let message = format!("subscription {sub} already exists");
            return self
                .reply(ServerMessage::SubscribeFailed { sub, message })
                .await;
        }
        let quotas = &self.shared.quotas;
        if self.subscriptions.len() >= quotas.subscriptions_per_session {
            let exceeded = QuotaExceeded::new(
                crate::vocab::Quota::SubscriptionsPerSession,
                quotas.subscriptions_per_session,
            );
            return self.refuse_subscription(sub, exceeded).await;
        }
        // Compiled on a blocking thread: a large subscription never holds an async worker.
        let compiled = {
            let (policy, schema) = (self.policy.clone(), self.shared.schema.clone());
            tokio::task::spawn_blocking(move || {
                policy
                    .subscription(&schema, &sql, &params)
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(format!("the subscription could not be compiled: {e}")))
        };
        let (shape, base) = match compiled {
            Ok(effective) => (Arc::new(effective.shape), effective.base),
            Err(e) => {
                let message = brief(&e);
                debug!(error = %message, "subscription refused");
                return self
                    .reply(ServerMessage::SubscribeFailed { sub, message })
                    .await;
            }
        };
        if let Some((after, held)) = resume {
            let horizon = self.shared.store.horizon();
            // Rows read under another shape (other claims, other rules) may include some
            // the caller may no longer read and that no change since will remove.
            let other_shape = held.is_some_and(|held| held != shape.id());
            if other_shape {
                debug!("the caller's shape changed since its rows were read: no resume");
            }
            if after < horizon || other_shape {
                let why = match other_shape {
                    true => ResumeRefusal::Shape,
                    false => ResumeRefusal::Compacted,
                };
                self.shared.metrics.resume_refused(why);
                return self
                    .reply(ServerMessage::ResumeRefused { sub, horizon })
                    .await;
            }
        }
        let resume_after = resume.map(|(after, _)| after);
        let window = shape.window().is_some();
        if window && resume_after.is_some() {
            // A window is at most MAX_WINDOW_LIMIT rows: a fresh snapshot replaces it.
            let horizon = self.shared.store.head();
            self.shared.metrics.resume_refused(ResumeRefusal::Window);
            return self
                .reply(ServerMessage::ResumeRefused { sub, horizon })
                .await;
        }
        // Registered before the snapshot opens, so no later change can be missed. The
        // quotas are checked under the same lock: two sessions cannot both take the last
        // place.
        let residual = crate::matcher::Matcher::is_residual(&shape);
        let registered = {
            let mut registry = self.shared.registry.lock().expect("registry lock");
            self.admit(&registry, &shape, residual).map(|()| {
                if window {
                    registry.subscribe_window(&shape, self.id, sub)
                } else {
                    registry.subscribe(shape.clone(), base.clone(), self.id, sub)
                }
            })
        };
        let shape_id = match registered {
            Ok(id) => id,
            Err(exceeded) => return self.refuse_subscription(sub, exceeded).await,
        };
        if window {
            if let Err(message) = self.start_window(&shape, base.clone()).await {
                self.shared
                    .registry
                    .lock()
                    .expect("registry lock")
                    .unsubscribe(shape_id, self.id, sub);
                let message = brief(&message);
                return self
                    .reply(ServerMessage::SubscribeFailed { sub, message })
                    .await;
            }
        }
        let _ = shape_id;
        let ready = Arc::new(AtomicBool::new(false));
        let job = bootstrap::Job {
            shared: self.shared.clone(),
            session: self.handle.clone(),
            connection: self.connection.clone(),
            control: self.control.clone(),
            live: self.live.clone(),
            places: self.bootstraps.clone(),
            ended: self.ended.clone(),
            sub,
            shape: shape.clone(),
            base: base.clone(),
            resume_after,
            ready: ready.clone(),
        };
        let task = tokio::spawn(bootstrap::run(job).instrument(span));
        self.subscriptions.insert(
            sub,
            Subscription {
                shape,
                base,
                window,
                ready,
                residual,
                bootstrap: task,
            },
        );
        self.handle
            .subscriptions
            .store(self.subscriptions.len(), Ordering::Relaxed);
    }

    /// Checks the residual and per-user quotas for a new subscription on `shape`, and
    /// takes the user's place when they allow it.
    pub(super) fn admit(
        &self,
        registry: &Registry,
        shape: &query::Shape,
        residual: bool,
    ) -> Result<(), QuotaExceeded> {
        let quotas = &self.shared.quotas;
        if residual
            && !registry.contains(shape.id())
            && registry.residual_count() >= quotas.residual_shapes
        {
            let quota = crate::vocab::Quota::ResidualShapes;
            return Err(QuotaExceeded::new(quota, quotas.residual_shapes));
        }
        match &self.claims.sub {
            Some(user) => self.shared.ledger.take_subscription(quotas, user, residual),
            None => Ok(()),
        }
    }

    pub(super) async fn refuse_subscription(&self, sub: SubId, exceeded: QuotaExceeded) {
        debug!(%exceeded, "subscription refused");
        self.shared.metrics.refused(exceeded.quota);
        let request = QuotaRequest::Subscribe { sub };
        self.reply(ServerMessage::QuotaExceeded { request, exceeded })
            .await
    }

    /// Unregisters a subscription whose bootstrap ended without joining (its task is
    /// finishing by itself and still has the refusal to send).
    pub(super) fn forget(&mut self, sub: SubId) {
        self.drop_subscription(sub, false);
    }

    pub(super) fn unsubscribe(&mut self, sub: SubId) {
        self.drop_subscription(sub, true);
    }

    /// Unregisters `sub` and tells the live writer to forget its seam; `abort` also stops
    /// its bootstrap task (not when the task is ending by itself with a refusal to send).
    pub(super) fn drop_subscription(&mut self, sub: SubId, abort: bool) {
        if let Some(s) = self.subscriptions.remove(&sub) {
            if abort {
                s.bootstrap.abort();
            }
            if let Some(user) = &self.claims.sub {
                self.shared.ledger.release_subscription(user, s.residual);
            }
            self.shared
                .registry
                .lock()
                .expect("registry lock")
                .unsubscribe(s.shape.id(), self.id, sub);
            if s.window {
                self.shared
                    .windows
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .release(s.shape.id());
            }
            let _ = self.live.try_send(LiveItem::Forget { sub });
            self.handle
                .subscriptions
                .store(self.subscriptions.len(), Ordering::Relaxed);
        }
    }
}
