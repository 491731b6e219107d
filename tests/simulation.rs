//! Deterministic simulation of the client's protocol core (`sluice::client::core`)
//! against a model server: several clients, each with its core, a real local store and
//! the batch loader's rules, under random interleavings of bootstrap streams, live
//! streams, seam markers, write answers, app writes, subscribes, unsubscribes, backend
//! writes, rejections, disconnects, loads and unpins of rows no subscription covers,
//! claims that change between sessions, log compaction and the replacement of the
//! server's database. Seeded and replayable: a failure prints its seed and the
//! schedule's trace.
//!
//! After every local transaction (each store operation the core decides, each app write,
//! each write answer, each fetch answer's pin and release) it checks the visible view of
//! that client: exactly the rows its joined subscriptions cover at the client's cut (read
//! under the claims of their shape) and its pinned rows at the server state each one
//! heard of, with its outbox applied on top (see `simulation/view.rs`); a live
//! transaction, its pinned rows included, shows whole or not at all (invariant 10); which
//! rows the store covers matches; no write the server has not rejected ever leaves the
//! outbox before the cut holds it, and a rejected one never stays. Claims that shrink make
//! resumes refused and rows no longer readable leave with the new snapshot; a compacted
//! log makes resumes refused too; another database makes every subscription bootstrap
//! again, the old rows staying until their new snapshot joins, and the outbox survives.
//! Once settled, every subscription is read under the client's current claims.
//!
//! `SLUICE_SIM_SCHEDULES=N` runs more schedules (default 2,000), `SLUICE_SIM_SEED=a,b`
//! replays given seeds.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::client::core::{Action, StoreOp, SyncCore};
use sluice::store::{JoinKind, LocalStore, Mutation};
use sluice::value::Value;
use sluice::vocab::{SyncId, WriteOutcome};
use sluice::wire::{ClientMessage, ServerMessage, PIN_SUB};
use sluice::Schema;

#[path = "simulation/app.rs"]
mod app;
#[path = "simulation/loader.rs"]
mod loader;
#[path = "simulation/server.rs"]
mod server;
#[path = "simulation/view.rs"]
mod view;

use loader::Loader;
use server::{claims_of, int, LiveItem, Server};
use view::{Track, Version};

const SCHEMA: &str = "CREATE TABLE items (id INTEGER PRIMARY KEY, g TEXT, v INTEGER)";
const CLIENTS: usize = 3;

/// What the simulation knows of one write, independently of the store.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    Waiting,
    Committed(SyncId),
    /// Committed, and left the outbox once the view held it.
    Confirmed,
    Rejected,
}

struct Client {
    store: LocalStore,
    core: Option<SyncCore>,
    writes: BTreeMap<u64, (Vec<Mutation>, Fate)>,
    loader: Loader,
    /// Pinned keys whose rows the store holds, and which server state each reflects.
    tracks: BTreeMap<i64, Track>,
    /// The database the store's server state comes from (once connected).
    epoch: Option<usize>,
    /// The highest live transaction applied on this connection.
    heard: SyncId,
    /// After the server was replaced: subscriptions whose rows from the old database
    /// stay until their new snapshot joins, with those rows' state and keys.
    frozen: BTreeMap<sluice::vocab::SubId, (Version, std::collections::BTreeSet<i64>)>,
    /// Per covered key, the newest server state that covered it since it was last
    /// uncovered (the store never takes a row back in time).
    high: BTreeMap<i64, Version>,
}

struct Sim {
    rng: StdRng,
    server: Server,
    clients: Vec<Client>,
    trace: Vec<String>,
    seed: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let schema = Schema::parse("sim.sql", SCHEMA).unwrap();
        let clients = (0..CLIENTS)
            .map(|_| Client {
                store: LocalStore::open(std::path::Path::new(":memory:"), Some(schema.clone()))
                    .unwrap(),
                core: None,
                writes: BTreeMap::new(),
                loader: Loader::default(),
                tracks: BTreeMap::new(),
                epoch: None,
                heard: SyncId::ZERO,
                frozen: BTreeMap::new(),
                high: BTreeMap::new(),
            })
            .collect();
        Sim {
            rng: StdRng::seed_from_u64(seed),
            server: Server::new(CLIENTS),
            clients,
            trace: Vec::new(),
            seed,
        }
    }

    fn fail(&self, what: String) -> ! {
        let keep = std::env::var("SLUICE_SIM_TRACE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(40);
        let tail: Vec<&String> = self.trace.iter().rev().take(keep).collect();
        let tail: Vec<&&String> = tail.iter().rev().collect();
        panic!(
            "seed {}: {what}\nlast steps:\n{}",
            self.seed,
            tail.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    fn send(&mut self, c: usize, message: ClientMessage) {
        if self.server.sessions[c].is_some() {
            self.server.receive(&mut self.rng, c, message);
        }
    }

    /// Carries out a core's actions for client `c`, checking after each local transaction.
    fn act(&mut self, c: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(message) => self.send(c, message),
                Action::Status(..) => {}
                Action::Store(op) => {
                    self.trace.push(format!("c{c} store {op:?}"));
                    let result = match &op {
                        StoreOp::Txn {
                            sync_id, pinned, ..
                        } => self.apply_txn(c, *sync_id, pinned, &op),
                        other => {
                            let client = &mut self.clients[c];
                            match other {
                                StoreOp::Join { subs, .. } => {
                                    for (sub, kind, _) in subs {
                                        if *kind == JoinKind::Bootstrap {
                                            client.frozen.remove(sub);
                                        }
                                    }
                                }
                                StoreOp::RemoveSub(sub) => {
                                    client.frozen.remove(sub);
                                }
                                _ => {}
                            }
                            other.run(&mut client.store).map(|_| ())
                        }
                    };
                    if let Err(e) = result {
                        self.fail(format!("client {c}: store operation failed: {e}"));
                    }
                    self.check(c);
                }
            }
        }
    }

    /// One server transaction: its pinned rows' events filtered by the loader, written
    /// with the rest in one local transaction (as the client's sync task does).
    fn apply_txn(
        &mut self,
        c: usize,
        sync_id: SyncId,
        pinned: &[(String, sluice::vocab::RowEvent)],
        op: &StoreOp,
    ) -> Result<(), sluice::store::StoreError> {
        let claims = self.session_claims(c);
        let client = &mut self.clients[c];
        let epoch = client.epoch.expect("connected");
        let (pins, moved) = client.loader.live(sync_id, pinned);
        client.heard = client.heard.max(sync_id);
        // What the server says of a pinned key now holds from this transaction on.
        for (_, event) in pinned {
            let key = int(event.key());
            if client.loader.entries.contains_key(&key) {
                let at = Version {
                    epoch,
                    sync: sync_id,
                };
                let track = Track {
                    at,
                    live: true,
                    claims,
                };
                client.tracks.insert(key, track);
            }
        }
        op.run_with_pins(&mut client.store, &pins)?;
        client.loader.applied_live(sync_id, moved);
        Ok(())
    }

    fn session_claims(&self, c: usize) -> server::Claims {
        self.server.sessions[c].as_ref().expect("connected").claims
    }

    fn check(&mut self, c: usize) {
        self.check_view(c, false);
        self.confirm(c);
    }

    /// Writes the outbox let go of, legitimately (the check passed), are done.
    fn confirm(&mut self, c: usize) {
        let held: Vec<u64> = self.clients[c]
            .store
            .pending()
            .iter()
            .map(|p| p.seq)
            .collect();
        for (seq, (_, fate)) in self.clients[c].writes.iter_mut() {
            if matches!(fate, Fate::Committed(_)) && !held.contains(seq) {
                *fate = Fate::Confirmed;
            }
        }
    }

    fn connect(&mut self, c: usize) {
        self.trace
            .push(format!("c{c} connects to {}", self.server.id()));
        let epoch = self.server.epoch();
        let known = *self.clients[c].epoch.get_or_insert(epoch);
        // The rows each subscription holds from the old database, if it is another one.
        let frozen = (known != epoch).then(|| self.covered_by_sub(c));
        let head = self.server.head();
        let client = &mut self.clients[c];
        let old = Version {
            epoch: known,
            sync: client.store.cut().unwrap(),
        };
        let reset = client.store.adopt_server(&self.server.id(), head).unwrap();
        if reset != frozen.is_some() {
            self.fail(format!(
                "client {c}: started over: {reset}, another database: {}",
                !reset
            ));
        }
        if let Some(frozen) = frozen {
            let client = &mut self.clients[c];
            for (sub, keys) in frozen {
                client.frozen.insert(sub, (old, keys));
            }
            client.epoch = Some(epoch);
            client.loader.server_changed();
            // Acknowledgements of the old database say nothing: sent again.
            for (_, fate) in client.writes.values_mut() {
                if matches!(fate, Fate::Committed(_)) {
                    *fate = Fate::Waiting;
                }
            }
            self.check(c);
        }
        self.server.open(c);
        let mut core = SyncCore::new();
        let store = &self.clients[c].store;
        let actions = core.connected(
            &store.subs().unwrap(),
            store.cut().unwrap(),
            store.pending(),
        );
        self.clients[c].core = Some(core);
        self.act(c, actions);
        for message in self.clients[c].loader.refetch() {
            self.send(c, message);
        }
    }

    fn disconnect(&mut self, c: usize) {
        self.trace.push(format!("c{c} disconnects"));
        self.server.sessions[c] = None;
        let client = &mut self.clients[c];
        client.core = None;
        // Pinned rows keep the state they heard of until fetched again.
        for t in client.tracks.values_mut() {
            if t.live {
                t.at.sync = t.at.sync.max(client.heard);
                t.live = false;
            }
        }
        client.heard = SyncId::ZERO;
        let written = client.loader.lost();
        for key in &written {
            client.tracks.remove(key);
        }
        let keys: Vec<Value> = written.into_iter().map(Value::Integer).collect();
        client.store.unpin_keys("items", &keys).unwrap();
        self.check(c);
    }

    fn core(&mut self, c: usize) -> Option<&mut SyncCore> {
        self.clients[c].core.as_mut()
    }

    /// Delivers one queued frame to client `c`, from a stream picked at random.
    fn deliver(&mut self, c: usize) -> bool {
        let Some(session) = self.server.sessions[c].as_mut() else {
            return false;
        };
        let mut streams = Vec::new();
        if !session.control.is_empty() {
            streams.push(0);
        }
        if !session.live.is_empty() {
            streams.push(1);
        }
        for i in 0..session.boot.len() {
            streams.push(2 + i);
        }
        if streams.is_empty() {
            return false;
        }
        let pick = streams[self.rng.gen_range(0..streams.len())];
        match pick {
            0 => {
                let message = session.control.pop_front().unwrap();
                self.trace.push(format!("c{c} control {message:?}"));
                let flush = self.core(c).unwrap().flush_rows();
                self.act(c, flush);
                self.control(c, message);
            }
            1 => {
                let item = session.live.pop_front().unwrap();
                let actions = match item {
                    LiveItem::Txn(mut txn) => {
                        self.trace
                            .push(format!("c{c} live #{} {:?}", txn.sync_id.0, txn.events));
                        let (pinned, rest) = std::mem::take(&mut txn.events)
                            .into_iter()
                            .partition::<Vec<_>, _>(|(sub, _, _)| *sub == PIN_SUB);
                        txn.events = rest;
                        let pinned = pinned.into_iter().map(|(_, t, e)| (t, e)).collect();
                        self.core(c).unwrap().live(txn, pinned)
                    }
                    LiveItem::Joined(sub, w) => {
                        self.trace.push(format!("c{c} seam {sub:?} at #{}", w.0));
                        self.core(c).unwrap().joined(sub, w)
                    }
                };
                self.act(c, actions);
            }
            i => {
                let (sub, stream) = &mut session.boot[i - 2];
                let sub = *sub;
                let frame = stream.pop_front().unwrap();
                if stream.is_empty() {
                    session.boot.remove(i - 2);
                }
                self.trace.push(format!("c{c} boot {sub:?} {frame:?}"));
                let actions = self.core(c).unwrap().bootstrap(sub, frame);
                self.act(c, actions);
            }
        }
        true
    }

    /// An answer on the control stream, handled as the client's sync task does.
    fn control(&mut self, c: usize, message: ServerMessage) {
        match message {
            ServerMessage::WriteResult { seq, outcome } => {
                let client = &mut self.clients[c];
                if let Some((_, fate)) = client.writes.get_mut(&seq) {
                    if *fate == Fate::Waiting {
                        *fate = match &outcome {
                            WriteOutcome::Committed { sync_id } => Fate::Committed(*sync_id),
                            _ => Fate::Rejected,
                        };
                    }
                }
                client.store.resolve(seq, &outcome).unwrap();
                self.check(c);
            }
            ServerMessage::ResumeRefused { sub, .. } => {
                // The log no longer reaches the cut, or the claims changed: this
                // subscription bootstraps, within the resume group.
                let record = self.clients[c]
                    .store
                    .subs()
                    .unwrap()
                    .into_iter()
                    .find(|s| s.id == sub);
                if let Some(record) = record {
                    let core = self.core(c).unwrap();
                    let in_group = core.in_group(sub);
                    let actions = core.start(sub, &record.sql, record.params, None, in_group);
                    self.act(c, actions);
                }
            }
            ServerMessage::Fetched {
                request,
                sync_id,
                rows,
                ..
            } => self.fetched(c, request, sync_id, rows),
            _ => {}
        }
    }

    /// A fetch answer: its rows pinned in one local transaction, its released keys
    /// unpinned in another, as the batch loader does.
    fn fetched(&mut self, c: usize, request: u64, sync_id: SyncId, rows: Vec<Vec<Value>>) {
        let claims = self.session_claims(c);
        let client = &mut self.clients[c];
        let Some(answer) = client.loader.answer(request, sync_id, rows) else {
            return;
        };
        let at = Version {
            epoch: client.epoch.expect("connected"),
            sync: sync_id,
        };
        for key in &answer.kept {
            let newer = client.tracks.get(key).is_none_or(|t| t.at <= at);
            if newer {
                let track = Track {
                    at,
                    live: true,
                    claims,
                };
                client.tracks.insert(*key, track);
            }
        }
        client
            .store
            .pin_rows("items", &answer.to_pin, sync_id)
            .unwrap();
        self.check(c);
        let client = &mut self.clients[c];
        for key in &answer.release {
            client.tracks.remove(key);
        }
        client.store.unpin_keys("items", &answer.to_unpin).unwrap();
        self.check(c);
        if !answer.release.is_empty() {
            let keys = answer.release.into_iter().map(Value::Integer).collect();
            let unpin = ClientMessage::Unpin {
                table: "items".into(),
                keys,
            };
            self.send(c, unpin);
        }
    }

    fn step(&mut self) {
        let c = self.rng.gen_range(0..CLIENTS);
        let online = self.clients[c].core.is_some();
        match self.rng.gen_range(0..100) {
            0..=49 => {
                // Nothing queued for an offline client: it connects instead.
                let delivered = self.deliver(c);
                if !delivered && !online {
                    self.connect(c);
                }
            }
            50..=56 => self.subscribe(c),
            57..=60 => self.unsubscribe(c),
            61..=71 => self.app_write(c),
            72..=80 => self.backend_write(),
            81..=84 if online => self.load(c),
            85..=86 => self.unpin(c),
            87 => {
                let horizon = self.server.compact(&mut self.rng);
                self.trace.push(format!("log compacted to #{}", horizon.0));
            }
            88 => self.change_claims(c),
            89 if self.rng.gen_bool(0.3) => self.replace_server(),
            90..=95 if online => self.disconnect(c),
            _ if !online => self.connect(c),
            _ => {}
        }
    }

    /// Everyone connects and every queued frame is delivered: every client must end with
    /// the server's head, every write answered, every subscription read under its
    /// current claims.
    fn settle(&mut self) {
        for c in 0..CLIENTS {
            if self.clients[c].core.is_none() {
                self.connect(c);
            }
        }
        while (0..CLIENTS).any(|c| self.deliver(c)) {}
        for c in 0..CLIENTS {
            if !self.clients[c].core.as_ref().unwrap().is_settled() {
                self.fail(format!("client {c} still stages after settling"));
            }
            if let Some((seq, _)) = self.clients[c]
                .writes
                .iter()
                .find(|(_, (_, f))| *f == Fate::Waiting)
            {
                self.fail(format!("client {c}: write {seq} never answered"));
            }
            self.check_view(c, true);
            self.confirm(c);
            let claims = self.server.claims[c];
            for sub in self.clients[c].store.subs().unwrap() {
                if sub.access.map(claims_of) != Some(claims) {
                    self.fail(format!(
                        "client {c}: {:?} read under {:?}, claims now {claims}",
                        sub.id, sub.access
                    ));
                }
            }
            // Every write is answered; one the cut holds has left the outbox. (One
            // committed after the cut may stay: a client hears of a transaction only
            // when it touches its subscriptions or is its own, and the answer to a write
            // resent after a reconnect comes without it.)
            let cut = self.clients[c].store.cut().unwrap();
            for p in self.clients[c].store.pending() {
                if p.committed.is_none_or(|s| s <= cut) {
                    let seq = p.seq;
                    self.fail(format!(
                        "client {c}: write {seq} stays in the outbox at {cut:?}"
                    ));
                }
            }
        }
    }
}

fn run(seed: u64, steps: usize) {
    let mut sim = Sim::new(seed);
    for _ in 0..steps {
        sim.step();
    }
    sim.settle();
}

#[test]
fn the_protocol_core_keeps_every_view_consistent_under_random_schedules() {
    let seeds: Vec<u64> = match std::env::var("SLUICE_SIM_SEED") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => {
            let n: u64 = std::env::var("SLUICE_SIM_SCHEDULES")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(2000);
            (0..n).collect()
        }
    };
    let steps: usize = std::env::var("SLUICE_SIM_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    for seed in seeds {
        run(seed, steps);
    }
}
