//! The batch loader's decisions, as the client's loader (`client::loader`) makes them:
//! which keys are loaded, which live events of pinned rows are newer than what a key
//! holds, what a fetch answer pins and releases, what a lost connection forgets. The real
//! loader is bound to the async client, so the simulation drives this copy of its rules
//! against the real local store; the view check does not trust it (it derives what
//! pinned rows must show from the model server).

use std::collections::BTreeMap;

use sluice::store::PinChange;
use sluice::value::Value;
use sluice::vocab::{RowEvent, SyncId};
use sluice::wire::ClientMessage;

use super::server::int;

/// Keys a live transaction's pinned events moved: whether each row now exists.
pub type Moved = Vec<(i64, bool)>;

/// A key being loaded or pinned.
pub struct Entry {
    /// Loaded and pinned (false while its first fetch is in flight).
    pub pinned: bool,
    /// Whether the row exists in its newest known state.
    present: bool,
    /// Sync id of the newest state applied (fetch answer or live event).
    version: SyncId,
}

/// What a fetch answer does to the local store, in two local transactions.
pub struct Answer {
    /// Rows pinned, as of the answer's sync id.
    pub to_pin: Vec<Vec<Value>>,
    /// Rows whose pin is released.
    pub to_unpin: Vec<Value>,
    /// Keys the loader forgot: the server stops keeping them live.
    pub release: Vec<i64>,
    /// Keys the loader keeps pinned.
    pub kept: Vec<i64>,
}

/// One client's batch loader; it outlives connections, as the real one does.
#[derive(Default)]
pub struct Loader {
    pub entries: BTreeMap<i64, Entry>,
    /// Fetches sent on this connection, by request id.
    fetches: BTreeMap<u64, Vec<i64>>,
    next_request: u64,
}

fn pin_and_fetch(request: u64, keys: &[i64]) -> [ClientMessage; 2] {
    let keys: Vec<Value> = keys.iter().map(|k| Value::Integer(*k)).collect();
    [
        ClientMessage::Pin {
            table: "items".into(),
            keys: keys.clone(),
        },
        ClientMessage::Fetch {
            request,
            table: "items".into(),
            keys,
        },
    ]
}

impl Loader {
    fn fetch(&mut self, keys: Vec<i64>) -> [ClientMessage; 2] {
        self.next_request += 1;
        let messages = pin_and_fetch(self.next_request, &keys);
        self.fetches.insert(self.next_request, keys);
        messages
    }

    /// Loads keys the local store does not hold (the caller checked) and the loader does
    /// not know yet: pinned first, then fetched.
    pub fn load(&mut self, keys: Vec<i64>) -> Vec<ClientMessage> {
        let keys: Vec<i64> = keys
            .into_iter()
            .filter(|k| !self.entries.contains_key(k))
            .collect();
        if keys.is_empty() {
            return Vec::new();
        }
        for key in &keys {
            let entry = Entry {
                pinned: false,
                present: false,
                version: SyncId::ZERO,
            };
            self.entries.insert(*key, entry);
        }
        self.fetch(keys).to_vec()
    }

    /// A new connection: every pinned key is pinned and fetched again.
    pub fn refetch(&mut self) -> Vec<ClientMessage> {
        let keys: Vec<i64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.pinned)
            .map(|(k, _)| *k)
            .collect();
        if keys.is_empty() {
            return Vec::new();
        }
        self.fetch(keys).to_vec()
    }

    /// The connection was lost: fetches in flight fail, and keys not pinned before are
    /// forgotten. Returns those whose rows a live event had already written.
    pub fn lost(&mut self) -> Vec<i64> {
        self.fetches.clear();
        let gone: Vec<i64> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.pinned)
            .map(|(k, _)| *k)
            .collect();
        let mut written = Vec::new();
        for key in gone {
            if self.entries.remove(&key).is_some_and(|e| e.present) {
                written.push(key);
            }
        }
        written
    }

    /// The app released a pinned key; `false` when it was not pinned.
    pub fn unpin(&mut self, key: i64) -> bool {
        if self.entries.get(&key).is_some_and(|e| e.pinned) {
            self.entries.remove(&key);
            return true;
        }
        false
    }

    /// The store's server state started over (another database): versions of the old
    /// one mean nothing against the new one's sync ids.
    pub fn server_changed(&mut self) {
        for entry in self.entries.values_mut() {
            entry.version = SyncId::ZERO;
        }
    }

    /// The pinned rows' events of a live transaction newer than what each key holds, as
    /// store changes, and what they make of each key (present or not).
    pub fn live(
        &self,
        sync_id: SyncId,
        events: &[(String, RowEvent)],
    ) -> (Vec<(String, PinChange)>, Moved) {
        let mut pins = Vec::new();
        let mut moved: Moved = Vec::new();
        // A row changed twice in the transaction takes its last event.
        for (table, event) in events.iter().rev() {
            let key = int(event.key());
            let Some(entry) = self.entries.get(&key) else {
                continue;
            };
            if sync_id <= entry.version || moved.iter().any(|(k, _)| *k == key) {
                continue;
            }
            match event {
                RowEvent::Insert { row, .. } | RowEvent::Update { row, .. } => {
                    pins.push((table.clone(), PinChange::Row(row.clone())));
                    moved.push((key, true));
                }
                RowEvent::Delete { key: k, .. } => {
                    pins.push((table.clone(), PinChange::Gone(k.clone())));
                    moved.push((key, false));
                }
            }
        }
        (pins, moved)
    }

    /// The live transaction's pinned rows were written.
    pub fn applied_live(&mut self, sync_id: SyncId, moved: Moved) {
        for (key, present) in moved {
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.present = present;
                entry.version = sync_id;
            }
        }
    }

    /// A fetch answer: found rows are pinned, missing ones released (only what is newer
    /// than each key's state counts). `None` for a fetch of an earlier connection.
    pub fn answer(
        &mut self,
        request: u64,
        sync_id: SyncId,
        rows: Vec<Vec<Value>>,
    ) -> Option<Answer> {
        let keys = self.fetches.remove(&request)?;
        let mut found: BTreeMap<i64, Vec<Value>> =
            rows.into_iter().map(|r| (int(&r[0]), r)).collect();
        let mut answer = Answer {
            to_pin: Vec::new(),
            to_unpin: Vec::new(),
            release: Vec::new(),
            kept: Vec::new(),
        };
        for key in keys {
            let Some(entry) = self.entries.get_mut(&key) else {
                // Released while the fetch was out.
                continue;
            };
            let mut present = entry.present;
            if sync_id >= entry.version {
                match found.remove(&key) {
                    Some(row) => {
                        answer.to_pin.push(row);
                        present = true;
                    }
                    None => {
                        if present || entry.pinned {
                            answer.to_unpin.push(Value::Integer(key));
                        }
                        present = false;
                    }
                }
            }
            if present {
                entry.pinned = true;
                entry.present = true;
                entry.version = entry.version.max(sync_id);
                answer.kept.push(key);
            } else {
                self.entries.remove(&key);
                answer.release.push(key);
            }
        }
        Some(answer)
    }
}
