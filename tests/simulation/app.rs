//! What the app and the world around it do: subscribe, unsubscribe, write, load and
//! unpin rows; the backend writes, tokens change, the log is compacted, the database is
//! replaced.

use rand::Rng;
use sluice::query::Params;
use sluice::store::Mutation;
use sluice::value::Value;

use super::server::{Claims, Row, ALL_GROUPS, GROUPS, KEYS, SUBS};
use super::{Fate, Sim, CLIENTS};

impl Sim {
    pub(super) fn subscribe(&mut self, c: usize) {
        let sql = SUBS[self.rng.gen_range(0..SUBS.len())];
        let sub = self.clients[c].store.add_sub(sql, &Params::new()).unwrap();
        self.trace.push(format!("c{c} subscribes {sub:?}: {sql}"));
        if let Some(core) = self.core(c) {
            if !core.is_active(sub) {
                let actions = core.start(sub, sql, Params::new(), None, false);
                self.act(c, actions);
            }
        }
    }

    pub(super) fn unsubscribe(&mut self, c: usize) {
        let subs = self.clients[c].store.subs().unwrap();
        if subs.is_empty() {
            return;
        }
        let sub = subs[self.rng.gen_range(0..subs.len())].id;
        self.trace.push(format!("c{c} unsubscribes {sub:?}"));
        self.clients[c].frozen.remove(&sub);
        self.clients[c].store.remove_sub(sub).unwrap();
        self.check(c);
        if let Some(core) = self.core(c) {
            let actions = core.unsubscribe(sub);
            self.act(c, actions);
        }
    }

    fn random_row(&mut self) -> Row {
        (
            GROUPS[self.rng.gen_range(0..GROUPS.len())].to_string(),
            self.rng.gen_range(0..10),
        )
    }

    fn random_mutation(&mut self) -> Mutation {
        let key = self.rng.gen_range(1..=KEYS);
        match self.rng.gen_range(0..3) {
            0 => {
                let row = self.random_row();
                Mutation::Insert {
                    table: "items".into(),
                    values: vec![
                        ("id".into(), Value::Integer(key)),
                        ("g".into(), Value::Text(row.0)),
                        ("v".into(), Value::Integer(row.1)),
                    ],
                }
            }
            1 => {
                let set = if self.rng.gen_bool(0.5) {
                    ("g".to_string(), Value::Text(self.random_row().0))
                } else {
                    ("v".to_string(), Value::Integer(self.rng.gen_range(0..10)))
                };
                Mutation::Update {
                    table: "items".into(),
                    key: Value::Integer(key),
                    set: vec![set],
                }
            }
            _ => Mutation::Delete {
                table: "items".into(),
                key: Value::Integer(key),
            },
        }
    }

    pub(super) fn app_write(&mut self, c: usize) {
        let n = self.rng.gen_range(1..=3);
        let mutations: Vec<Mutation> = (0..n).map(|_| self.random_mutation()).collect();
        let (seq, _) = self.clients[c]
            .store
            .enqueue(mutations.clone(), vec![])
            .unwrap();
        self.trace.push(format!("c{c} writes {seq}: {mutations:?}"));
        self.clients[c]
            .writes
            .insert(seq, (mutations.clone(), Fate::Waiting));
        self.check(c);
        if self.clients[c].core.is_some() {
            let write = sluice::wire::ClientMessage::Write {
                seq,
                mutations,
                preconditions: vec![],
            };
            self.send(c, write);
        }
    }

    /// A write made on the server by someone else (the backend, another app).
    pub(super) fn backend_write(&mut self) {
        let n = self.rng.gen_range(1..=4);
        let mut state = self.server.now().clone();
        let mut changes = Vec::new();
        for _ in 0..n {
            let key = self.rng.gen_range(1..=KEYS);
            let new = if self.rng.gen_range(0..4) == 0 {
                None
            } else {
                Some(self.random_row())
            };
            let old = state.get(&key).cloned();
            if old.is_none() && new.is_none() {
                continue;
            }
            match &new {
                Some(r) => state.insert(key, r.clone()),
                None => state.remove(&key),
            };
            changes.push((key, old, new));
        }
        if changes.is_empty() {
            return;
        }
        self.trace.push(format!("backend writes {changes:?}"));
        self.server.commit(changes, None);
    }

    /// The app loads a few rows by key; those the local store does not hold (covered or
    /// written locally) are pinned and fetched.
    pub(super) fn load(&mut self, c: usize) {
        let n = self.rng.gen_range(1..=3);
        let keys: Vec<i64> = (0..n).map(|_| self.rng.gen_range(1..=KEYS)).collect();
        let client = &mut self.clients[c];
        let misses: Vec<i64> = keys
            .into_iter()
            .filter(|k| {
                let key = Value::Integer(*k);
                !client.store.is_covered("items", &key).unwrap()
                    && client.store.row("items", &key).unwrap().is_none()
            })
            .collect();
        self.trace.push(format!("c{c} loads {misses:?}"));
        for message in client.loader.load(misses) {
            self.send(c, message);
        }
    }

    /// The app releases one pinned row.
    pub(super) fn unpin(&mut self, c: usize) {
        let client = &mut self.clients[c];
        let pinned: Vec<i64> = client
            .loader
            .entries
            .iter()
            .filter(|(_, e)| e.pinned)
            .map(|(k, _)| *k)
            .collect();
        if pinned.is_empty() {
            return;
        }
        let key = pinned[self.rng.gen_range(0..pinned.len())];
        self.trace.push(format!("c{c} unpins {key}"));
        client.loader.unpin(key);
        client.tracks.remove(&key);
        let keys = vec![Value::Integer(key)];
        client.store.unpin_keys("items", &keys).unwrap();
        self.check(c);
        if client_online(self, c) {
            let unpin = sluice::wire::ClientMessage::Unpin {
                table: "items".into(),
                keys,
            };
            self.send(c, unpin);
        }
    }

    /// The client's token changes (another team, a revoked group): its next connection
    /// carries the new claims, and it reconnects now if it is online.
    pub(super) fn change_claims(&mut self, c: usize) {
        let claims: Claims = self.rng.gen_range(1..=ALL_GROUPS);
        self.trace.push(format!("c{c} claims become {claims:03b}"));
        self.server.claims[c] = claims;
        if client_online(self, c) {
            self.disconnect(c);
        }
    }

    /// Another database takes over: every session ends.
    pub(super) fn replace_server(&mut self) {
        for c in 0..CLIENTS {
            if client_online(self, c) {
                self.disconnect(c);
            }
        }
        self.server.replace();
        self.trace
            .push(format!("the server is replaced by {}", self.server.id()));
    }
}

fn client_online(sim: &Sim, c: usize) -> bool {
    sim.clients[c].core.is_some()
}
