//! Deterministic simulation of the client's protocol core (`sluice::client::core`)
//! against a model server: several clients, each with its core and a real local store,
//! under random interleavings of bootstrap streams, live streams, seam markers, write
//! answers, app writes, subscribes, unsubscribes, backend writes, rejections and
//! disconnects. Seeded and replayable: a failure prints its seed and the schedule's
//! trace.
//!
//! After every local transaction (each store operation the core decides, each app write,
//! each write answer) it checks the visible view of that client: exactly the server's
//! rows at the client's cut that its joined subscriptions cover, with its outbox applied
//! on top; no write the server has not rejected ever leaves the outbox before the cut
//! holds it; a rejected one never stays.
//!
//! `SLUICE_SIM_SCHEDULES=N` runs more schedules (default 2,000), `SLUICE_SIM_SEED=a,b`
//! replays given seeds.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::client::core::{Action, SyncCore};
use sluice::query::Params;
use sluice::store::{LocalStore, Mutation};
use sluice::value::Value;
use sluice::vocab::{MoveOut, RejectCode, RowEvent, SubId, SyncId, WriteOutcome};
use sluice::wire::{BootstrapFrame, ClientMessage, LiveTxn};
use sluice::{Schema, ShapeId};

const SCHEMA: &str = "CREATE TABLE items (id INTEGER PRIMARY KEY, g TEXT, v INTEGER)";
const KEYS: i64 = 12;
const CLIENTS: usize = 3;
const GROUPS: [&str; 3] = ["a", "b", "c"];

/// A row of `items` as the model keeps it: (g, v).
type Row = (String, i64);
type State = BTreeMap<i64, Row>;

/// The subscriptions the app may take, with their meaning in the model.
const SUBS: [&str; 4] = [
    "SELECT * FROM items WHERE g = 'a'",
    "SELECT * FROM items WHERE g = 'b'",
    "SELECT * FROM items WHERE v > 5",
    "SELECT * FROM items",
];

fn matches(sql: &str, row: &Row) -> bool {
    match sql {
        s if s.ends_with("g = 'a'") => row.0 == "a",
        s if s.ends_with("g = 'b'") => row.0 == "b",
        s if s.ends_with("v > 5") => row.1 > 5,
        _ => true,
    }
}

fn values(key: i64, row: &Row) -> Vec<Value> {
    vec![
        Value::Integer(key),
        Value::Text(row.0.clone()),
        Value::Integer(row.1),
    ]
}

/// What one change means for a subscription: its event, if any.
fn event_for(sql: &str, key: i64, old: Option<&Row>, new: Option<&Row>) -> Option<RowEvent> {
    let was = old.is_some_and(|r| matches(sql, r));
    let is = new.is_some_and(|r| matches(sql, r));
    let k = Value::Integer(key);
    match (was, is) {
        (false, true) => Some(RowEvent::Insert {
            key: k,
            row: values(key, new.unwrap()),
        }),
        (true, true) => Some(RowEvent::Update {
            key: k,
            row: values(key, new.unwrap()),
        }),
        (true, false) => Some(RowEvent::Delete {
            key: k,
            reason: if new.is_none() {
                MoveOut::Deleted
            } else {
                MoveOut::MovedOut
            },
        }),
        (false, false) => None,
    }
}

/// One change of a committed transaction: (key, old, new).
type Change = (i64, Option<Row>, Option<Row>);

/// What the server sends on a connection's streams.
enum LiveItem {
    Txn(LiveTxn),
    Joined(SubId, SyncId),
}

/// The server side of one client's connection.
#[derive(Default)]
struct Session {
    /// Active subscriptions and their SQL.
    subs: BTreeMap<SubId, String>,
    control: VecDeque<(u64, WriteOutcome)>,
    live: VecDeque<LiveItem>,
    /// One bootstrap stream per subscription request, each in order.
    boot: VecDeque<(SubId, VecDeque<BootstrapFrame>)>,
}

/// The model server: its state at every sync id, its log, idempotency records.
struct Server {
    /// `states[s]`: the rows after transaction `s` (`states[0]` is empty).
    states: Vec<State>,
    log: Vec<Vec<Change>>,
    applied: HashMap<(usize, u64), SyncId>,
    sessions: Vec<Option<Session>>,
}

impl Server {
    fn head(&self) -> SyncId {
        SyncId(self.states.len() as u64 - 1)
    }

    fn commit(&mut self, changes: Vec<Change>, origin: Option<(usize, u64)>) -> SyncId {
        let mut state = self.states.last().unwrap().clone();
        for (key, _, new) in &changes {
            match new {
                Some(r) => state.insert(*key, r.clone()),
                None => state.remove(key),
            };
        }
        self.states.push(state);
        self.log.push(changes.clone());
        let sync_id = self.head();
        for (client, session) in self.sessions.iter_mut().enumerate() {
            let Some(session) = session else { continue };
            let mut events = Vec::new();
            for (key, old, new) in &changes {
                for (sub, sql) in &session.subs {
                    if let Some(e) = event_for(sql, *key, old.as_ref(), new.as_ref()) {
                        events.push((*sub, "items".to_string(), e));
                    }
                }
            }
            let mine = origin.is_some_and(|(c, _)| c == client);
            if !events.is_empty() || mine {
                session.live.push_back(LiveItem::Txn(LiveTxn {
                    sync_id,
                    origin: None,
                    events,
                }));
            }
        }
        sync_id
    }

    fn receive(&mut self, rng: &mut StdRng, client: usize, message: ClientMessage) {
        match message {
            ClientMessage::Subscribe {
                sub,
                sql,
                resume_after,
                ..
            } => {
                let w = self.head();
                let mut frames = VecDeque::new();
                frames.push_back(BootstrapFrame::Begin {
                    sub,
                    table: "items".into(),
                    columns: vec!["id".into(), "g".into(), "v".into()],
                    estimate: 0,
                    access: ShapeId(1),
                });
                match resume_after {
                    Some(after) => {
                        for s in after.0 + 1..=w.0 {
                            for (key, old, new) in &self.log[s as usize - 1] {
                                if let Some(event) =
                                    event_for(&sql, *key, old.as_ref(), new.as_ref())
                                {
                                    frames.push_back(BootstrapFrame::Replay {
                                        sync_id: SyncId(s),
                                        event,
                                    });
                                }
                            }
                        }
                    }
                    None => {
                        for (key, row) in &self.states[w.0 as usize] {
                            if matches(&sql, row) {
                                frames.push_back(BootstrapFrame::Row {
                                    key: Value::Integer(*key),
                                    row: values(*key, row),
                                });
                            }
                        }
                    }
                }
                frames.push_back(BootstrapFrame::End { sync_id: w });
                let session = self.sessions[client].as_mut().unwrap();
                session.boot.push_back((sub, frames));
                session.live.push_back(LiveItem::Joined(sub, w));
                session.subs.insert(sub, sql);
            }
            ClientMessage::Unsubscribe { sub } => {
                self.sessions[client].as_mut().unwrap().subs.remove(&sub);
            }
            ClientMessage::Write { seq, mutations, .. } => {
                if let Some(&sync_id) = self.applied.get(&(client, seq)) {
                    let session = self.sessions[client].as_mut().unwrap();
                    session
                        .control
                        .push_back((seq, WriteOutcome::Committed { sync_id }));
                    return;
                }
                let outcome = match self.changes_of(&mutations) {
                    Some(changes) if rng.gen_range(0..10) > 0 => {
                        let sync_id = self.commit(changes, Some((client, seq)));
                        self.applied.insert((client, seq), sync_id);
                        WriteOutcome::Committed { sync_id }
                    }
                    _ => WriteOutcome::Rejected {
                        code: RejectCode::Constraint,
                        message: "refused by the model".into(),
                    },
                };
                let session = self.sessions[client].as_mut().unwrap();
                session.control.push_back((seq, outcome));
            }
            _ => {}
        }
    }

    /// A client transaction's changes on today's state, or `None` when the model
    /// refuses it (an insert of a present key, an update or delete of an absent one).
    fn changes_of(&self, mutations: &[Mutation]) -> Option<Vec<Change>> {
        let mut state = self.states.last().unwrap().clone();
        let mut changes = Vec::new();
        for m in mutations {
            let (key, new) = match m {
                Mutation::Insert { values, .. } => {
                    let key = int(&values[0].1);
                    if state.contains_key(&key) {
                        return None;
                    }
                    (key, Some((text(&values[1].1), int(&values[2].1))))
                }
                Mutation::Update { key, set, .. } => {
                    let key = int(key);
                    let mut row = state.get(&key)?.clone();
                    for (c, v) in set {
                        match c.as_str() {
                            "g" => row.0 = text(v),
                            _ => row.1 = int(v),
                        }
                    }
                    (key, Some(row))
                }
                Mutation::Delete { key, .. } => {
                    let key = int(key);
                    state.get(&key)?;
                    (key, None)
                }
                _ => return None,
            };
            let old = state.get(&key).cloned();
            match &new {
                Some(r) => state.insert(key, r.clone()),
                None => state.remove(&key),
            };
            changes.push((key, old, new));
        }
        Some(changes)
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        other => panic!("not text: {other:?}"),
    }
}

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
            })
            .collect();
        Sim {
            rng: StdRng::seed_from_u64(seed),
            server: Server {
                states: vec![State::new()],
                log: Vec::new(),
                applied: HashMap::new(),
                sessions: (0..CLIENTS).map(|_| None).collect(),
            },
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

    /// Carries out a core's actions for client `c`, checking after each local transaction.
    fn act(&mut self, c: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(message) => {
                    if self.server.sessions[c].is_some() {
                        self.server.receive(&mut self.rng, c, message);
                    }
                }
                Action::Status(..) => {}
                Action::Store(op) => {
                    self.trace.push(format!("c{c} store {op:?}"));
                    if let Err(e) = op.run(&mut self.clients[c].store) {
                        self.fail(format!("client {c}: store operation failed: {e}"));
                    }
                    self.check(c);
                }
            }
        }
    }

    /// The client's view must be the server's rows at its cut that its joined
    /// subscriptions cover, with its outbox on top.
    fn check(&mut self, c: usize) {
        let cut = self.clients[c].store.cut().unwrap();
        self.check_at(c, cut);
    }

    /// The check against the server's rows at `state` (the cut, or once settled the
    /// head: a client hears only of transactions that touch its subscriptions, so its
    /// cut may stay behind while its rows are the head's).
    fn check_at(&mut self, c: usize, state: SyncId) {
        self.check_view(c, state);
        // Writes the outbox let go of, legitimately (the check passed), are done.
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

    fn check_view(&self, c: usize, state: SyncId) {
        let client = &self.clients[c];
        // While a subscription stages, the server state holding a committed write may be
        // staged with it: the write stays in the outbox (and the view) until it joins.
        let staging = client.store.is_staging();
        let cut = client.store.cut().unwrap();
        if cut > self.server.head() {
            self.fail(format!("client {c}: cut {cut:?} beyond the server's head"));
        }
        let at = &self.server.states[state.0 as usize];
        let subs = client.store.subs().unwrap();
        let mut expected: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
        for (key, row) in at {
            if subs.iter().any(|s| s.joined && matches(&s.sql, row)) {
                expected.insert(*key, values(*key, row));
            }
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

    fn connect(&mut self, c: usize) {
        self.trace.push(format!("c{c} connects"));
        self.server.sessions[c] = Some(Session::default());
        let mut core = SyncCore::new();
        let store = &self.clients[c].store;
        let actions = core.connected(
            &store.subs().unwrap(),
            store.cut().unwrap(),
            store.pending(),
        );
        self.clients[c].core = Some(core);
        self.act(c, actions);
    }

    fn disconnect(&mut self, c: usize) {
        self.trace.push(format!("c{c} disconnects"));
        self.server.sessions[c] = None;
        self.clients[c].core = None;
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
                let (seq, outcome) = session.control.pop_front().unwrap();
                self.trace.push(format!("c{c} answer {seq}: {outcome:?}"));
                let flush = self.core(c).unwrap().flush_rows();
                self.act(c, flush);
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
            1 => {
                let item = session.live.pop_front().unwrap();
                let actions = match item {
                    LiveItem::Txn(txn) => {
                        self.trace
                            .push(format!("c{c} live #{} {:?}", txn.sync_id.0, txn.events));
                        self.core(c).unwrap().live(txn, Vec::new())
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

    fn subscribe(&mut self, c: usize) {
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

    fn unsubscribe(&mut self, c: usize) {
        let subs = self.clients[c].store.subs().unwrap();
        if subs.is_empty() {
            return;
        }
        let sub = subs[self.rng.gen_range(0..subs.len())].id;
        self.trace.push(format!("c{c} unsubscribes {sub:?}"));
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

    fn app_write(&mut self, c: usize) {
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
        if self.clients[c].core.is_some() && self.server.sessions[c].is_some() {
            self.server.receive(
                &mut self.rng,
                c,
                ClientMessage::Write {
                    seq,
                    mutations,
                    preconditions: vec![],
                },
            );
        }
    }

    /// A write made on the server by someone else (the backend, another app).
    fn backend_write(&mut self) {
        let n = self.rng.gen_range(1..=4);
        let mut state = self.server.states.last().unwrap().clone();
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

    fn step(&mut self) {
        let c = self.rng.gen_range(0..CLIENTS);
        let online = self.clients[c].core.is_some();
        match self.rng.gen_range(0..100) {
            0..=54 => {
                // Nothing queued for an offline client: it connects instead.
                let delivered = self.deliver(c);
                if !delivered && !online {
                    self.connect(c);
                }
            }
            55..=62 => self.subscribe(c),
            63..=67 => self.unsubscribe(c),
            68..=79 => self.app_write(c),
            80..=89 => self.backend_write(),
            90..=95 if online => self.disconnect(c),
            _ if !online => self.connect(c),
            _ => {}
        }
    }

    /// Everyone connects and every queued frame is delivered: every client must end with
    /// the server's head, every write answered.
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
            self.check_at(c, self.server.head());
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
