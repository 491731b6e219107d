//! The batch loader's app-facing API on [`Client`]: `load`, `load_many`, `unpin`,
//! statistics, and `hydrate`.
//!
//! Synchronous bookkeeping under the loader's lock, then waiting on channels; no IO of its
//! own.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{send_unpins, unix_millis, Entry, FetchStats, Row, RowResult};
use crate::client::{Client, ClientError, ClientShared, ConnectionState, Source, Subscription};
use crate::ids::SyncId;
use crate::query::Params;
use crate::store::KeyOrd;
use crate::value::Value;
use crate::wire::SubId;

/// How a load starts.
enum Started {
    Ready(Result<Option<Row>, ClientError>),
    Waiting(oneshot::Receiver<RowResult>),
    /// The schema is not known yet (first connection pending).
    NeedSchema,
}

fn start_load(shared: &ClientShared, table: &str, key: Value) -> Started {
    let loader = &shared.loader;
    // Lock order: loader state, then the local store.
    let mut state = loader.state();
    let local = shared.local();
    let Some(t) = local.schema().table(table).cloned() else {
        if local.schema().tables().next().is_none() && shared.config.server.is_some() {
            return Started::NeedSchema;
        }
        return Started::Ready(Err(ClientError::UnknownTable(table.to_string())));
    };
    let key = t.pk_column().affinity.apply_for_comparison(key);
    let pk = (t.name.clone(), KeyOrd(key.clone()));
    if !state.waiting.contains_key(&pk) {
        let hit = match local.is_covered(&t.name, &key) {
            Ok(true) => local.row(&t.name, &key).map(Some),
            // Not covered but visible: written locally, not confirmed yet.
            Ok(false) => local.row(&t.name, &key).map(|row| row.map(Some)),
            Err(e) => Err(e),
        };
        match hit {
            Ok(None) => {}
            Ok(Some(row)) => {
                state.touch(&pk);
                loader.counters.local_hits.fetch_add(1, Ordering::Relaxed);
                return Started::Ready(Ok(row));
            }
            Err(e) => return Started::Ready(Err(e.into())),
        }
    }
    drop(local);
    if state.waiters >= loader.config.max_pending {
        return Started::Ready(Err(ClientError::TooManyLoads {
            limit: loader.config.max_pending,
        }));
    }
    let (tx, rx) = oneshot::channel();
    state.waiters += 1;
    if let Some(list) = state.waiting.get_mut(&pk) {
        list.push(tx);
        loader.counters.coalesced.fetch_add(1, Ordering::Relaxed);
        return Started::Waiting(rx);
    }
    state.waiting.insert(pk.clone(), vec![tx]);
    state.entries.entry(pk).or_insert(Entry {
        pinned: false,
        present: false,
        version: SyncId::ZERO,
        tick: 0,
        used: Instant::now(),
    });
    state.queued.entry(t.name.clone()).or_default().push(key);
    state.queued_keys += 1;
    state.first_queued.get_or_insert_with(Instant::now);
    let first_or_full = state.queued_keys == 1 || state.queued_keys >= loader.max_batch();
    drop(state);
    if first_or_full {
        loader.wake.notify_one();
    }
    Started::Waiting(rx)
}

/// Waits until the first connection has brought the server's schema.
async fn schema_known(shared: &ClientShared) -> Result<(), ClientError> {
    let mut state = shared.state.subscribe();
    loop {
        if shared.local().schema().tables().next().is_some() {
            return Ok(());
        }
        if matches!(
            *state.borrow_and_update(),
            ConnectionState::Syncing | ConnectionState::Online
        ) {
            return Ok(());
        }
        state.changed().await.map_err(|_| ClientError::Closed)?;
    }
}

impl Client {
    /// One row by primary key: from the local store when covered there, else fetched
    /// (batched with other loads) and pinned. `Ok(None)`: no such row, or one the caller
    /// may not read. The request is queued when this is called, not when awaited.
    ///
    /// Fails with [`ClientError::UnknownTable`] when the schema (learnt on the first
    /// connection if need be) has no such table, [`ClientError::TooManyLoads`] past
    /// [`LoaderConfig::max_pending`](crate::client::LoaderConfig::max_pending),
    /// [`ClientError::Fetch`] when the fetch fails, [`ClientError::Store`] when the local
    /// database does, and [`ClientError::Closed`] when the client stops first.
    pub fn load(
        &self,
        table: &str,
        key: Value,
    ) -> impl Future<Output = Result<Option<Vec<Value>>, ClientError>> + Send + 'static {
        let started = start_load(&self.shared, table, key.clone());
        let shared = self.shared.clone();
        let table = table.to_string();
        async move {
            let started = match started {
                Started::NeedSchema => {
                    schema_known(&shared).await?;
                    start_load(&shared, &table, key)
                }
                other => other,
            };
            match started {
                Started::Ready(result) => result,
                Started::Waiting(rx) => rx
                    .await
                    .map_err(|_| ClientError::Closed)?
                    .map_err(ClientError::Fetch),
                Started::NeedSchema => Err(ClientError::UnknownTable(table)),
            }
        }
    }

    /// Several rows of one table by primary key, in the order of `keys`; every load is
    /// queued at once, so they share fetches. Fails as [`Client::load`] does, on the first
    /// failing key.
    pub fn load_many(
        &self,
        table: &str,
        keys: Vec<Value>,
    ) -> impl Future<Output = Result<Vec<Option<Vec<Value>>>, ClientError>> + Send + 'static {
        let loads: Vec<_> = keys.into_iter().map(|k| self.load(table, k)).collect();
        async move {
            let mut rows = Vec::with_capacity(loads.len());
            for load in loads {
                rows.push(load.await?);
            }
            Ok(rows)
        }
    }

    /// Releases the pin of one loaded row; it leaves the local view unless a
    /// subscription covers it. Errors as for [`Client::unpin_many`].
    pub async fn unpin(&self, table: &str, key: Value) -> Result<(), ClientError> {
        self.unpin_many(table, vec![key]).await
    }

    /// Releases the pins of several loaded rows of one table (one local transaction); keys
    /// not pinned are ignored. Fails with [`ClientError::UnknownTable`] and
    /// [`ClientError::Store`].
    pub async fn unpin_many(&self, table: &str, keys: Vec<Value>) -> Result<(), ClientError> {
        let (name, released, applied) = {
            let mut state = self.shared.loader.state();
            let mut local = self.shared.local();
            let t = local
                .schema()
                .table(table)
                .cloned()
                .ok_or_else(|| ClientError::UnknownTable(table.to_string()))?;
            let mut released = Vec::new();
            for key in keys {
                let key = t.pk_column().affinity.apply_for_comparison(key);
                let pk = (t.name.clone(), KeyOrd(key));
                if state.entries.get(&pk).is_some_and(|e| e.pinned) {
                    state.remove(&pk);
                    released.push(pk.1 .0);
                }
            }
            let applied = local.unpin_keys(&t.name, &released)?;
            (t.name.clone(), released, applied)
        };
        self.shared.notify(Source::Pins, applied);
        let release = released.into_iter().map(|k| (name.clone(), k)).collect();
        send_unpins(&self.commands, release).await;
        Ok(())
    }

    /// Rows pinned by the batch loader.
    pub fn pinned_count(&self) -> usize {
        self.shared.loader.state().lru.len()
    }

    /// What the batch loader has done so far.
    pub fn fetch_stats(&self) -> FetchStats {
        self.shared.loader.stats()
    }

    /// A subscription with a time to live, resolved when its snapshot is in the local
    /// view: for collections opened on navigation (start it before it is needed). The
    /// same query hydrated again while alive reuses the subscription and extends its
    /// life to `ttl` from now; once expired it is unsubscribed. Expiries persist.
    /// Fails as [`Client::subscribe`] and [`Subscription::ready`] do.
    pub async fn hydrate(
        &self,
        sql: &str,
        params: Params,
        ttl: Duration,
    ) -> Result<Subscription, ClientError> {
        let alive: Vec<SubId> = self
            .shared
            .loader
            .state()
            .hydrations
            .keys()
            .copied()
            .collect();
        let existing = self
            .shared
            .local()
            .subs()?
            .into_iter()
            .find(|s| alive.contains(&s.id) && s.sql == sql && s.params == params)
            .map(|s| s.id);
        let sub = match existing.and_then(|id| self.subscription(id)) {
            Some(sub) => sub,
            None => self.subscribe(sql, params)?,
        };
        let expires = unix_millis().saturating_add(ttl.as_millis() as u64);
        self.shared.local().set_sub_expiry(sub.id, Some(expires))?;
        self.shared
            .loader
            .state()
            .hydrations
            .insert(sub.id, Instant::now() + ttl);
        self.shared.loader.wake.notify_one();
        sub.ready().await?;
        Ok(sub)
    }

    /// Hydrated subscriptions still alive.
    pub fn hydrated_count(&self) -> usize {
        self.shared.loader.state().hydrations.len()
    }
}
