//! The batch loader: rows no subscription covers, loaded by key on demand and kept live
//! while pinned; and hydration, subscriptions with a time to live.
//!
//! [`Client::load`] answers at once from the local store when the row is covered (by a
//! subscription or a pin) or written locally. Misses are queued per table; the queue is
//! sent when the batch window has passed since its first key or when it holds a full
//! batch, as one fetch per table and [`MAX_KEYS_PER_FETCH`] keys. A key already queued or
//! in flight is not asked again: later loads of it wait for the same answer.
//!
//! A loaded row is pinned: stored in the local store under the pin holder, so it counts
//! as covered, and kept live by the server, which holds the session's pinned keys as one
//! key-set shape per table (`Pin` is sent before the `Fetch` of the same keys, so no
//! change in between is lost). Live events of pinned rows arrive under
//! [`PIN_SUB`]; each pinned key remembers the sync id of the newest state applied, so a
//! fetch answer and a live event that cross on the way apply in sync-id order. Pins are
//! bounded ([`LoaderConfig::max_pins`], least recently used evicted first) and may expire
//! ([`LoaderConfig::pin_ttl`]); a released row leaves the local view unless a
//! subscription covers it. Pins persist in the local store and are re-sent (and their
//! rows fetched again) on every connection.
//!
//! Talks to the server only through the sync task's command queue; it must not depend on
//! the transport or the server.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::debug;

mod api;
mod task;

pub(crate) use task::{fetch, run};
use task::{send_unpins, unsubscribe};

use super::command::{Command, FetchAnswer};
use super::{ClientError, ClientShared, Source};
use crate::ids::SyncId;
use crate::schema::Table;
use crate::store::{Applied, KeyOrd, LocalStore, PinChange, StoreError};
use crate::value::Value;
use crate::wire::{ClientMessage, RowEvent, SubId, PIN_SUB};

/// Default time a miss waits for others to share its fetch: added to the latency of
/// every miss, in exchange for fewer requests.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(2);
/// Default bound on loads waiting for an answer at once (each holds a reply channel).
pub const DEFAULT_MAX_PENDING_LOADS: usize = 100_000;
/// Default bound on pinned rows (each costs a row in the local store and a key in the
/// server's key-set shape).
pub const DEFAULT_MAX_PINS: usize = 10_000;
/// Keys per fetch request (the server's bound); larger batches are split.
pub const MAX_KEYS_PER_FETCH: usize = crate::wire::MAX_FETCH_KEYS;
/// Longest the loader's housekeeping sleeps between checks.
const MAX_IDLE: Duration = Duration::from_secs(1);

/// How the batch loader batches, bounds and expires.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// How long the first miss of a batch waits for more. Default 2 ms.
    pub batch_window: Duration,
    /// Keys per fetch; a queue this long is sent at once. Clamped to
    /// [`MAX_FETCH_KEYS`](crate::wire::MAX_FETCH_KEYS), the default.
    pub max_batch: usize,
    /// Loads waiting at once; more fail with [`ClientError::TooManyLoads`]. Default
    /// [`DEFAULT_MAX_PENDING_LOADS`].
    pub max_pending: usize,
    /// Pinned rows kept; past this the least recently used are released. Default
    /// [`DEFAULT_MAX_PINS`].
    pub max_pins: usize,
    /// Pins unused for this long are released. Default: never.
    pub pin_ttl: Option<Duration>,
}

impl Default for LoaderConfig {
    fn default() -> LoaderConfig {
        LoaderConfig {
            batch_window: DEFAULT_BATCH_WINDOW,
            max_batch: MAX_KEYS_PER_FETCH,
            max_pending: DEFAULT_MAX_PENDING_LOADS,
            max_pins: DEFAULT_MAX_PINS,
            pin_ttl: None,
        }
    }
}

/// What the batch loader has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Fetch requests sent to the server (loads, pin refreshes and
    /// [`Client::fetch`](crate::client::Client::fetch)).
    pub requests: u64,
    /// Keys asked for over all fetch requests.
    pub keys: u64,
    /// Loads answered from the local store.
    pub local_hits: u64,
    /// Loads that joined a key already queued or in flight.
    pub coalesced: u64,
    /// Pins released because of the bound.
    pub evicted: u64,
    /// Pins released because of the TTL.
    pub expired: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    keys: AtomicU64,
    local_hits: AtomicU64,
    coalesced: AtomicU64,
    evicted: AtomicU64,
    expired: AtomicU64,
}

type PinKey = (String, KeyOrd);
type Row = Vec<Value>;
type RowResult = Result<Option<Row>, String>;

/// A key being loaded or pinned.
struct Entry {
    /// Loaded and pinned (false while its first fetch is in flight).
    pinned: bool,
    /// Whether the row exists in its newest known state.
    present: bool,
    /// Sync id of the newest state applied (fetch answer or live event).
    version: SyncId,
    tick: u64,
    used: Instant,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<PinKey, Entry>,
    /// Pinned keys by last use.
    lru: BTreeMap<u64, PinKey>,
    next_tick: u64,
    /// Loads waiting, per key queued or in flight.
    waiting: BTreeMap<PinKey, Vec<oneshot::Sender<RowResult>>>,
    waiters: usize,
    /// Keys not sent yet, per table.
    queued: BTreeMap<String, Vec<Value>>,
    queued_keys: usize,
    first_queued: Option<Instant>,
    /// Columns the server sends for pinned rows of each table (hidden ones left out).
    columns: HashMap<String, Vec<String>>,
    /// Hydrated subscriptions and when they expire.
    hydrations: HashMap<SubId, Instant>,
}

impl State {
    /// Marks a key pinned (and present) and most recently used.
    fn pin(&mut self, pk: &PinKey, version: SyncId) {
        let tick = self.next_tick;
        self.next_tick += 1;
        let now = Instant::now();
        let entry = self.entries.entry(pk.clone()).or_insert(Entry {
            pinned: false,
            present: true,
            version,
            tick,
            used: now,
        });
        if entry.pinned {
            self.lru.remove(&entry.tick);
        }
        entry.pinned = true;
        entry.present = true;
        entry.version = entry.version.max(version);
        entry.tick = tick;
        entry.used = now;
        self.lru.insert(tick, pk.clone());
    }

    fn touch(&mut self, pk: &PinKey) {
        if self.entries.get(pk).is_some_and(|e| e.pinned) {
            let version = self.entries[pk].version;
            self.pin(pk, version);
        }
    }

    fn remove(&mut self, pk: &PinKey) -> Option<Entry> {
        let entry = self.entries.remove(pk)?;
        if entry.pinned {
            self.lru.remove(&entry.tick);
        }
        Some(entry)
    }

    fn take_waiters(&mut self, pk: &PinKey) -> Vec<oneshot::Sender<RowResult>> {
        let list = self.waiting.remove(pk).unwrap_or_default();
        self.waiters -= list.len();
        list
    }
}

/// The loader's state, shared by the app-facing handle, the sync task and the loader task.
pub(crate) struct LoaderShared {
    config: LoaderConfig,
    state: Mutex<State>,
    wake: Notify,
    connections: watch::Sender<u64>,
    counters: Counters,
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl LoaderShared {
    /// Restores the pins and hydrations the local store kept.
    pub(crate) fn new(config: LoaderConfig, local: &LocalStore) -> Result<Self, StoreError> {
        let mut state = State::default();
        for (table, key) in local.pinned()? {
            state.pin(&(table, KeyOrd(key)), SyncId::ZERO);
        }
        let (now, now_ms) = (Instant::now(), unix_millis());
        for (sub, at) in local.sub_expiries()? {
            let left = Duration::from_millis(at.saturating_sub(now_ms));
            state.hydrations.insert(sub, now + left);
        }
        Ok(LoaderShared {
            config,
            state: Mutex::new(state),
            wake: Notify::new(),
            connections: watch::channel(0).0,
            counters: Counters::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn max_batch(&self) -> usize {
        self.config.max_batch.clamp(1, MAX_KEYS_PER_FETCH)
    }

    /// A new connection is up: pins are re-sent and their rows fetched again.
    pub(crate) fn connected(&self) {
        self.connections.send_modify(|n| *n += 1);
    }

    /// The local store adopted another server database: the versions the keys hold are
    /// the old one's sync ids and mean nothing against the new one's.
    pub(crate) fn server_changed(&self) {
        for entry in self.state().entries.values_mut() {
            entry.version = SyncId::ZERO;
        }
    }

    /// The server said which columns the pinned rows of `table` carry.
    pub(crate) fn learn_columns(&self, table: &str, columns: Vec<String>) {
        if !columns.is_empty() {
            self.state().columns.insert(table.to_string(), columns);
        }
    }

    /// Applies one server transaction that touches pinned rows: picks its pinned rows'
    /// events newer than what each key holds (a row's last event, when it has several),
    /// and hands them to `apply` (with the store locked), which writes them with the rest
    /// of the transaction in one local transaction. The loader's versions move only once that transaction committed.
    pub(crate) fn apply_live(
        &self,
        shared: &ClientShared,
        sync_id: SyncId,
        events: Vec<(String, RowEvent)>,
        apply: impl FnOnce(&mut LocalStore, &[(String, PinChange)]) -> Result<Applied, StoreError>,
    ) -> Result<Applied, StoreError> {
        let mut state = self.state();
        let mut local = shared.local();
        let mut pins: Vec<(String, PinChange)> = Vec::new();
        let mut moved: Vec<(PinKey, bool)> = Vec::new();
        // A transaction that changed a row twice carries its final state in its last
        // event: each row takes that one, so events are read from the last.
        for (table, event) in events.into_iter().rev() {
            let Some(t) = local.schema().table(&table).cloned() else {
                continue;
            };
            let pk = (t.name.clone(), KeyOrd(event.key().clone()));
            let Some(entry) = state.entries.get(&pk) else {
                continue;
            };
            if sync_id <= entry.version || moved.iter().any(|(k, _)| *k == pk) {
                continue;
            }
            match event {
                RowEvent::Insert { row, .. } | RowEvent::Update { row, .. } => {
                    let Some(row) = full_row(&t, state.columns.get(&t.name).map(|c| &c[..]), row)
                    else {
                        debug!(table = %t.name, "pinned row event with unknown columns");
                        continue;
                    };
                    pins.push((t.name.clone(), PinChange::Row(row)));
                    moved.push((pk, true));
                }
                RowEvent::Delete { key, .. } => {
                    pins.push((t.name.clone(), PinChange::Gone(key)));
                    moved.push((pk, false));
                }
            }
        }
        let applied = apply(&mut local, &pins)?;
        for (pk, present) in moved {
            if let Some(entry) = state.entries.get_mut(&pk) {
                entry.present = present;
                entry.version = sync_id;
            }
        }
        Ok(applied)
    }

    fn stats(&self) -> FetchStats {
        let c = &self.counters;
        FetchStats {
            requests: c.requests.load(Ordering::Relaxed),
            keys: c.keys.load(Ordering::Relaxed),
            local_hits: c.local_hits.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
        }
    }

    /// When the queue must be sent and when housekeeping is next due.
    fn deadline(&self) -> Instant {
        let state = self.state();
        let now = Instant::now();
        let mut due = now + MAX_IDLE;
        if state.queued_keys >= self.max_batch() {
            return now;
        }
        if let Some(first) = state.first_queued {
            due = due.min(first + self.config.batch_window);
        }
        if let (Some(ttl), Some((_, pk))) = (self.config.pin_ttl, state.lru.first_key_value()) {
            if let Some(e) = state.entries.get(pk) {
                due = due.min(e.used + ttl);
            }
        }
        if let Some(at) = state.hydrations.values().min() {
            due = due.min(*at);
        }
        due
    }

    /// Takes the queue when it is due, split into fetch-sized batches per table.
    fn take_due(&self) -> Vec<(String, Vec<Value>)> {
        let mut state = self.state();
        let full = state.queued_keys >= self.max_batch();
        let due = state
            .first_queued
            .is_some_and(|f| f + self.config.batch_window <= Instant::now());
        if !(full || due) {
            return Vec::new();
        }
        state.queued_keys = 0;
        state.first_queued = None;
        let mut batches = Vec::new();
        for (table, keys) in std::mem::take(&mut state.queued) {
            for chunk in keys.chunks(self.max_batch()) {
                batches.push((table.clone(), chunk.to_vec()));
            }
        }
        batches
    }

    /// Pinned keys per table, in fetch-sized batches (to re-send after a reconnect).
    fn pinned_batches(&self) -> Vec<(String, Vec<Value>)> {
        let state = self.state();
        let mut by_table: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for pk in state.lru.values() {
            by_table.entry(&pk.0).or_default().push(pk.1 .0.clone());
        }
        let mut batches = Vec::new();
        for (table, keys) in by_table {
            for chunk in keys.chunks(self.max_batch()) {
                batches.push((table.to_string(), chunk.to_vec()));
            }
        }
        batches
    }

    /// Applies a fetch answer for `keys`: found rows are pinned, missing ones released,
    /// waiting loads answered, and pins over the bound evicted. Returns the keys the
    /// server should stop keeping live.
    fn apply_answer(
        &self,
        shared: &ClientShared,
        t: &Table,
        keys: &[Value],
        answer: FetchAnswer,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        let mut answers: Vec<(Vec<oneshot::Sender<RowResult>>, Option<Row>)> = Vec::new();
        let mut release = Vec::new();
        let mut applied = Applied::default();
        {
            let mut state = self.state();
            let mut local = shared.local();
            if !answer.columns.is_empty() {
                state.columns.insert(t.name.clone(), answer.columns.clone());
            }
            let mut found: BTreeMap<KeyOrd, Row> = BTreeMap::new();
            for row in answer.rows {
                if let Some(row) = full_row(t, Some(&answer.columns), row) {
                    found.insert(KeyOrd(row[t.pk].clone()), row);
                }
            }
            // Decide per key, then write the whole answer in one local transaction each
            // for pinned and released rows.
            let (mut to_pin, mut to_unpin) = (Vec::new(), Vec::new());
            let mut outcome = Vec::with_capacity(keys.len());
            for key in keys {
                let pk = (t.name.clone(), KeyOrd(key.clone()));
                let Some(entry) = state.entries.get(&pk) else {
                    // Released while the fetch was out: answer from the local view.
                    outcome.push((pk, None));
                    continue;
                };
                let (mut present, version) = (entry.present, entry.version);
                // An answer as new as what the key holds decides too: read at the same
                // state, it may come from a session with other claims (a refetch after a
                // reconnect), and only it says whether the row is still readable.
                if answer.sync_id >= version {
                    match found.remove(&pk.1) {
                        Some(row) => {
                            to_pin.push(row);
                            present = true;
                        }
                        None => {
                            if present || entry.pinned {
                                to_unpin.push(key.clone());
                            }
                            present = false;
                        }
                    }
                }
                if present {
                    state.pin(&pk, answer.sync_id.max(version));
                } else {
                    state.remove(&pk);
                    release.push((t.name.clone(), key.clone()));
                }
                outcome.push((pk, Some(present)));
            }
            applied.merge(local.pin_rows(&t.name, &to_pin, answer.sync_id)?);
            applied.merge(local.unpin_keys(&t.name, &to_unpin)?);
            for (pk, present) in outcome {
                let waiters = state.take_waiters(&pk);
                let row = match present {
                    Some(false) => None,
                    _ => local.row(&t.name, &pk.1 .0)?,
                };
                answers.push((waiters, row));
            }
            let mut evicted: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            while state.lru.len() > self.config.max_pins {
                let Some((_, pk)) = state.lru.pop_first() else {
                    break;
                };
                state.entries.remove(&pk);
                self.counters.evicted.fetch_add(1, Ordering::Relaxed);
                evicted.entry(pk.0).or_default().push(pk.1 .0);
            }
            for (table, keys) in evicted {
                applied.merge(local.unpin_keys(&table, &keys)?);
                release.extend(keys.into_iter().map(|k| (table.clone(), k)));
            }
        }
        for (waiters, row) in answers {
            for w in waiters {
                let _ = w.send(Ok(row.clone()));
            }
        }
        shared.notify(Source::Pins, applied);
        Ok(release)
    }

    /// A fetch failed: loads of `keys` fail, keys not pinned before are forgotten.
    fn fail(&self, shared: &ClientShared, table: &str, keys: &[Value], message: &str) {
        let mut waiters = Vec::new();
        let mut applied = Applied::default();
        {
            let mut state = self.state();
            let mut local = shared.local();
            for key in keys {
                let pk = (table.to_string(), KeyOrd(key.clone()));
                if let Some(entry) = state.entries.get(&pk) {
                    if !entry.pinned {
                        let present = entry.present;
                        state.remove(&pk);
                        if present {
                            if let Ok(a) = local.unpin(table, key) {
                                applied.merge(a);
                            }
                        }
                    }
                }
                waiters.extend(state.take_waiters(&pk));
            }
        }
        for w in waiters {
            let _ = w.send(Err(message.to_string()));
        }
        shared.notify(Source::Pins, applied);
    }

    /// Releases pins past their TTL and unsubscribes expired hydrations.
    async fn housekeeping(&self, shared: &ClientShared, commands: &mpsc::Sender<Command>) {
        let now = Instant::now();
        let mut release = Vec::new();
        let mut expired_subs = Vec::new();
        let mut applied = Applied::default();
        {
            let mut state = self.state();
            if let Some(ttl) = self.config.pin_ttl {
                let mut expired: BTreeMap<String, Vec<Value>> = BTreeMap::new();
                while let Some((_, pk)) = state.lru.first_key_value() {
                    if state.entries.get(pk).is_some_and(|e| e.used + ttl > now) {
                        break;
                    }
                    let pk = pk.clone();
                    state.remove(&pk);
                    self.counters.expired.fetch_add(1, Ordering::Relaxed);
                    expired.entry(pk.0).or_default().push(pk.1 .0);
                }
                let mut local = shared.local();
                for (table, keys) in expired {
                    match local.unpin_keys(&table, &keys) {
                        Ok(a) => applied.merge(a),
                        Err(e) => debug!(error = %e, "releasing expired pins"),
                    }
                    release.extend(keys.into_iter().map(|k| (table.clone(), k)));
                }
            }
            state.hydrations.retain(|sub, at| {
                let keep = *at > now;
                if !keep {
                    expired_subs.push(*sub);
                }
                keep
            });
        }
        shared.notify(Source::Pins, applied);
        send_unpins(commands, release).await;
        for sub in expired_subs {
            if let Err(e) = unsubscribe(shared, commands, sub).await {
                debug!(error = %e, sub = sub.0, "unsubscribing an expired hydration");
            }
        }
    }
}

/// Moves the live events of pinned rows out of a transaction's events.
pub(crate) fn take_pin_events(
    events: &mut Vec<(SubId, String, RowEvent)>,
) -> Vec<(String, RowEvent)> {
    if !events.iter().any(|(sub, _, _)| *sub == PIN_SUB) {
        return Vec::new();
    }
    let (pinned, rest): (Vec<_>, Vec<_>) = std::mem::take(events)
        .into_iter()
        .partition(|(sub, _, _)| *sub == PIN_SUB);
    *events = rest;
    pinned.into_iter().map(|(_, t, e)| (t, e)).collect()
}

/// A row as the server sent it (readable columns only) as a full row of `table`; hidden
/// columns are NULL. `None` when its width matches neither.
fn full_row(table: &Table, columns: Option<&[String]>, row: Row) -> Option<Row> {
    match columns {
        Some(cols) if cols.len() == row.len() && cols.len() != table.columns.len() => {
            let mut full = vec![Value::Null; table.columns.len()];
            for (name, value) in cols.iter().zip(row) {
                full[table.column_index(name)?] = value;
            }
            Some(full)
        }
        _ if row.len() == table.columns.len() => Some(row),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;

    fn users() -> Arc<Table> {
        let schema = Schema::parse(
            "t",
            "CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT, secret TEXT, n INTEGER)",
        )
        .unwrap();
        schema.table("users").unwrap().clone()
    }

    #[test]
    fn rows_without_hidden_columns_are_widened_by_name() {
        let t = users();
        let cols: Vec<String> = ["id", "name", "n"].iter().map(|s| s.to_string()).collect();
        let row = vec![
            Value::Text("u".into()),
            Value::Text("U".into()),
            Value::Integer(3),
        ];
        let full = full_row(&t, Some(&cols), row).unwrap();
        assert_eq!(
            full,
            vec![
                Value::Text("u".into()),
                Value::Text("U".into()),
                Value::Null,
                Value::Integer(3)
            ]
        );
        let whole = vec![Value::Null; 4];
        assert_eq!(full_row(&t, None, whole.clone()), Some(whole));
        assert_eq!(full_row(&t, None, vec![Value::Null; 2]), None);
    }

    #[test]
    fn pin_events_are_taken_out_of_a_transaction() {
        let key = |k: i64| RowEvent::Delete {
            key: Value::Integer(k),
            reason: crate::wire::MoveOut::Deleted,
        };
        let mut events = vec![
            (SubId(1), "a".to_string(), key(1)),
            (PIN_SUB, "b".to_string(), key(2)),
            (SubId(2), "a".to_string(), key(3)),
        ];
        let pinned = take_pin_events(&mut events);
        assert_eq!(pinned, vec![("b".to_string(), key(2))]);
        assert_eq!(events.len(), 2);
        assert_eq!(crate::store::PIN_HOLDER, PIN_SUB);
    }

    #[test]
    fn the_lru_order_follows_use() {
        let mut state = State::default();
        let pk = |k: i64| ("t".to_string(), KeyOrd(Value::Integer(k)));
        for k in 0..3 {
            state.pin(&pk(k), SyncId(1));
        }
        state.touch(&pk(0));
        let order: Vec<_> = state.lru.values().cloned().collect();
        assert_eq!(order, vec![pk(1), pk(2), pk(0)]);
        state.remove(&pk(2));
        assert_eq!(state.lru.len(), 2);
        assert_eq!(state.entries.len(), 2);
    }
}
