//! What a client's view must show, derived from the model server alone, and the checks
//! made after every local transaction.
//!
//! A row is covered by each joined subscription whose rows (read under the claims of its
//! shape) hold it at the cut, by each pinned key the server state it reflects holds, and,
//! after the server was replaced, by the old database's rows of subscriptions that have
//! not joined the new one yet. A row's content never goes back in time while it stays
//! covered (the store keeps the newest version any holder wrote), so the expected
//! content is the server's row at the newest version that covered it since it was last
//! uncovered. The outbox is replayed on top.

use std::collections::BTreeMap;

use sluice::store::Mutation;
use sluice::value::Value;
use sluice::vocab::SyncId;

use super::server::{claims_of, int, matches, readable, values, Claims, KEYS};
use super::{Fate, Sim};

/// A server state: which database, which sync id. Ordered: a newer database's state is
/// newer than anything of an older one (the store forgets its row versions when it
/// adopts another database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub epoch: usize,
    pub sync: SyncId,
}

/// Which server state a pinned key reflects.
#[derive(Debug, Clone, Copy)]
pub struct Track {
    /// The state it was last read at (fetch answer or live event).
    pub at: Version,
    /// Whether this connection's live stream brings every change after `at` (set by a
    /// fetch answer or live event of this connection): it then follows the live stream.
    pub live: bool,
    /// The claims it was read under.
    pub claims: Claims,
}

impl Sim {
    /// The newest server state covering each key, as the model says: at the cut (or at
    /// the head once settled) for subscriptions, at what each pin heard for pins.
    fn sources(&self, c: usize, settled: bool) -> BTreeMap<i64, Version> {
        let client = &self.clients[c];
        let epoch = client.epoch.unwrap_or(self.server.epoch());
        let cut = client.store.cut().unwrap();
        let sub_at = if settled { self.server.head() } else { cut };
        let mut best: BTreeMap<i64, Version> = BTreeMap::new();
        let mut cover = |key: i64, v: Version| {
            let b = best.entry(key).or_insert(v);
            *b = (*b).max(v);
        };
        for sub in client.store.subs().unwrap() {
            if let Some((v, keys)) = client.frozen.get(&sub.id) {
                for key in keys {
                    cover(*key, *v);
                }
                continue;
            }
            if !sub.joined {
                continue;
            }
            let claims = claims_of(sub.access.expect("a joined subscription has a shape"));
            let v = Version {
                epoch,
                sync: sub_at,
            };
            for (key, row) in &self.server.epochs[epoch][sub_at.0 as usize] {
                if matches(&sub.sql, row) && readable(claims, row) {
                    cover(*key, v);
                }
            }
        }
        for (key, t) in &client.tracks {
            let v = if t.live {
                let mut sync = t.at.sync.max(client.heard);
                if settled {
                    sync = sync.max(self.server.head());
                }
                Version { epoch, sync }
            } else {
                t.at
            };
            let row = self.server.epochs[v.epoch][v.sync.0 as usize].get(key);
            if row.is_some_and(|r| readable(t.claims, r)) {
                cover(*key, v);
            }
        }
        best
    }

    /// The server part of the expected view (no outbox), remembering each covered key's
    /// newest version for the next check.
    fn expected_server_rows(&mut self, c: usize, settled: bool) -> BTreeMap<i64, Vec<Value>> {
        let sources = self.sources(c, settled);
        let client = &mut self.clients[c];
        let mut high = BTreeMap::new();
        for (key, v) in sources {
            let v = client.high.get(&key).map_or(v, |h| (*h).max(v));
            high.insert(key, v);
        }
        client.high = high;
        let client = &self.clients[c];
        for key in 1..=KEYS {
            let covered = client
                .store
                .is_covered("items", &Value::Integer(key))
                .unwrap();
            if covered != client.high.contains_key(&key) {
                self.fail(format!(
                    "client {c}: row {key} covered: {covered}, expected {}",
                    !covered
                ));
            }
        }
        client
            .high
            .iter()
            .map(|(key, v)| {
                let row = &self.server.epochs[v.epoch][v.sync.0 as usize][key];
                (*key, values(*key, row))
            })
            .collect()
    }

    /// The check after a local transaction: against the cut, or once settled against
    /// the head (a client hears only of transactions that touch its subscriptions, pins
    /// or writes, so its cut may stay behind while its rows are the head's).
    pub(super) fn check_view(&mut self, c: usize, settled: bool) {
        let mut expected = self.expected_server_rows(c, settled);
        let client = &self.clients[c];
        // While a subscription stages, the server state holding a committed write may be
        // staged with it: the write stays in the outbox (and the view) until it joins.
        let staging = client.store.is_staging();
        let cut = client.store.cut().unwrap();
        let epoch = client.epoch.unwrap_or(self.server.epoch());
        let epoch_head = SyncId(self.server.epochs[epoch].len() as u64 - 1);
        if cut > epoch_head {
            self.fail(format!("client {c}: cut {cut:?} beyond the server's head"));
        }
        // The outbox as the simulation knows it: every write not rejected and not yet
        // reached by the cut must still be there; one the cut reached may be (while a
        // subscription stages, confirmed writes wait for it).
        let held: Vec<u64> = client.store.pending().iter().map(|p| p.seq).collect();
        for (seq, (_, fate)) in &client.writes {
            let must = match fate {
                Fate::Waiting => true,
                Fate::Committed(s) => *s > cut || staging,
                Fate::Confirmed | Fate::Rejected => false,
            };
            if must && !held.contains(seq) {
                self.fail(format!(
                    "client {c}: write {seq} ({fate:?}) left the outbox at cut {cut:?}"
                ));
            }
            if matches!(fate, Fate::Rejected | Fate::Confirmed) && held.contains(seq) {
                self.fail(format!("client {c}: rejected write {seq} still applied"));
            }
        }
        for seq in &held {
            let (mutations, _) = &client.writes[seq];
            for m in mutations {
                match m {
                    Mutation::Insert { values: vals, .. } => {
                        let key = int(&vals[0].1);
                        let row = expected.entry(key).or_insert_with(|| vec![Value::Null; 3]);
                        for (i, (_, v)) in vals.iter().enumerate() {
                            row[i] = v.clone();
                        }
                    }
                    Mutation::Update { key, set, .. } => {
                        if let Some(row) = expected.get_mut(&int(key)) {
                            for (col, v) in set {
                                row[if col == "g" { 1 } else { 2 }] = v.clone();
                            }
                        }
                    }
                    Mutation::Delete { key, .. } => {
                        expected.remove(&int(key));
                    }
                    _ => {}
                }
            }
        }
        let visible: BTreeMap<i64, Vec<Value>> = client
            .store
            .query("SELECT id, g, v FROM items ORDER BY id", &[])
            .unwrap()
            .1
            .into_iter()
            .map(|r| (int(&r[0]), r))
            .collect();
        if visible != expected {
            self.fail(format!(
                "client {c} at cut {cut:?} shows\n  {visible:?}\nexpected\n  {expected:?}"
            ));
        }
    }

    /// The keys each joined subscription covers now, by the model (to keep as the old
    /// database's rows when the server is replaced); those already kept from an earlier
    /// database stay as they are.
    pub(super) fn covered_by_sub(
        &self,
        c: usize,
    ) -> BTreeMap<sluice::vocab::SubId, std::collections::BTreeSet<i64>> {
        let client = &self.clients[c];
        let cut = client.store.cut().unwrap();
        let mut out = BTreeMap::new();
        for sub in client.store.subs().unwrap() {
            if !sub.joined || client.frozen.contains_key(&sub.id) {
                continue;
            }
            let claims = claims_of(sub.access.expect("a joined subscription has a shape"));
            let epoch = client.epoch.expect("connected before");
            let keys = self.server.epochs[epoch][cut.0 as usize]
                .iter()
                .filter(|(_, row)| matches(&sub.sql, row) && readable(claims, row))
                .map(|(key, _)| *key)
                .collect();
            out.insert(sub.id, keys);
        }
        out
    }
}
