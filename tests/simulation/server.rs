//! The model server: one table, subscriptions filtered by a read rule bound with each
//! session's claims, pinned keys kept live, a change log that compaction shortens, and a
//! database that may be replaced by another one (a new server id, sync ids starting
//! over).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::Rng;
use sluice::store::Mutation;
use sluice::value::Value;
use sluice::vocab::{MoveOut, RejectCode, RowEvent, SubId, SyncId, WriteOutcome};
use sluice::wire::{BootstrapFrame, ClientMessage, LiveTxn, ServerMessage, PIN_SUB};
use sluice::ShapeId;

pub const KEYS: i64 = 12;
pub const GROUPS: [&str; 3] = ["a", "b", "c"];

/// A row of `items` as the model keeps it: (g, v).
pub type Row = (String, i64);
pub type State = BTreeMap<i64, Row>;
/// One change of a committed transaction: (key, old, new).
pub type Change = (i64, Option<Row>, Option<Row>);

/// What a session's token grants: one bit per entry of [`GROUPS`], the groups whose rows
/// it may read (the read rule is `g IN :auth.groups`).
pub type Claims = u8;
pub const ALL_GROUPS: Claims = 0b111;

/// The subscriptions the app may take, with their meaning in the model.
pub const SUBS: [&str; 4] = [
    "SELECT * FROM items WHERE g = 'a'",
    "SELECT * FROM items WHERE g = 'b'",
    "SELECT * FROM items WHERE v > 5",
    "SELECT * FROM items",
];

/// The subscription a table's pinned rows are read under (like the real server's).
const PIN_SQL: &str = "SELECT * FROM items";

pub fn matches(sql: &str, row: &Row) -> bool {
    match sql {
        s if s.ends_with("g = 'a'") => row.0 == "a",
        s if s.ends_with("g = 'b'") => row.0 == "b",
        s if s.ends_with("v > 5") => row.1 > 5,
        _ => true,
    }
}

pub fn readable(claims: Claims, row: &Row) -> bool {
    let group = GROUPS
        .iter()
        .position(|g| *g == row.0)
        .expect("a known group");
    claims & (1 << group) != 0
}

/// The shape a subscription's rows are read under: its text and the claims bound into
/// the read rule, so that another token means another shape.
pub fn shape_of(sql: &str, claims: Claims) -> ShapeId {
    let index = SUBS
        .iter()
        .position(|s| *s == sql)
        .expect("a known subscription");
    ShapeId(1 + index as u64 * 8 + claims as u64)
}

/// The claims a shape was read under.
pub fn claims_of(shape: ShapeId) -> Claims {
    ((shape.0 - 1) % 8) as Claims
}

pub fn values(key: i64, row: &Row) -> Vec<Value> {
    vec![
        Value::Integer(key),
        Value::Text(row.0.clone()),
        Value::Integer(row.1),
    ]
}

/// What one change means for a subscription read under `claims`: its event, if any. A
/// row that still matches the subscription but no longer the read rule leaves as
/// `forbidden`, as on the real server.
fn event_for(
    sql: &str,
    claims: Claims,
    key: i64,
    old: Option<&Row>,
    new: Option<&Row>,
) -> Option<RowEvent> {
    let sees = |r: &Row| matches(sql, r) && readable(claims, r);
    let was = old.is_some_and(sees);
    let is = new.is_some_and(sees);
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
            reason: match new {
                None => MoveOut::Deleted,
                Some(r) if matches(sql, r) => MoveOut::Forbidden,
                Some(_) => MoveOut::MovedOut,
            },
        }),
        (false, false) => None,
    }
}

/// What the server sends on a connection's live stream.
pub enum LiveItem {
    Txn(LiveTxn),
    Joined(SubId, SyncId),
}

/// The server side of one client's connection.
#[derive(Default)]
pub struct Session {
    /// The claims of the token the client connected with.
    pub claims: Claims,
    /// Active subscriptions and their SQL.
    subs: BTreeMap<SubId, String>,
    /// Keys the client's batch loader pinned.
    pins: BTreeSet<i64>,
    pub control: VecDeque<ServerMessage>,
    pub live: VecDeque<LiveItem>,
    /// One bootstrap stream per subscription request, each in order.
    pub boot: VecDeque<(SubId, VecDeque<BootstrapFrame>)>,
}

/// The model server: its state at every sync id (of every database it has been), its
/// log, idempotency records, and each client's claims.
pub struct Server {
    /// `epochs[e][s]`: the rows of database `e` after its transaction `s`; the last one
    /// is the database serving now.
    pub epochs: Vec<Vec<State>>,
    log: Vec<Vec<Change>>,
    /// Resuming from before this sync id is refused: the log no longer reaches back.
    pub horizon: SyncId,
    applied: HashMap<(usize, u64), SyncId>,
    pub sessions: Vec<Option<Session>>,
    /// The claims each client's token carries on its next connection.
    pub claims: Vec<Claims>,
}

impl Server {
    pub fn new(clients: usize) -> Server {
        Server {
            epochs: vec![vec![State::new()]],
            log: Vec::new(),
            horizon: SyncId::ZERO,
            applied: HashMap::new(),
            sessions: (0..clients).map(|_| None).collect(),
            claims: vec![ALL_GROUPS; clients],
        }
    }

    /// The database serving now.
    pub fn epoch(&self) -> usize {
        self.epochs.len() - 1
    }

    pub fn id(&self) -> String {
        format!("db{}", self.epoch())
    }

    fn states(&self) -> &Vec<State> {
        self.epochs.last().unwrap()
    }

    pub fn head(&self) -> SyncId {
        SyncId(self.states().len() as u64 - 1)
    }

    pub fn now(&self) -> &State {
        self.states().last().unwrap()
    }

    /// A session opens with the client's current claims.
    pub fn open(&mut self, client: usize) {
        self.sessions[client] = Some(Session {
            claims: self.claims[client],
            ..Session::default()
        });
    }

    pub fn commit(&mut self, changes: Vec<Change>, origin: Option<(usize, u64)>) -> SyncId {
        let mut state = self.now().clone();
        for (key, _, new) in &changes {
            match new {
                Some(r) => state.insert(*key, r.clone()),
                None => state.remove(key),
            };
        }
        self.epochs.last_mut().unwrap().push(state);
        self.log.push(changes.clone());
        let sync_id = self.head();
        for (client, session) in self.sessions.iter_mut().enumerate() {
            let Some(session) = session else { continue };
            let mut events = Vec::new();
            for (key, old, new) in &changes {
                for (sub, sql) in &session.subs {
                    let event = event_for(sql, session.claims, *key, old.as_ref(), new.as_ref());
                    if let Some(e) = event {
                        events.push((*sub, "items".to_string(), e));
                    }
                }
                if session.pins.contains(key) {
                    let event =
                        event_for(PIN_SQL, session.claims, *key, old.as_ref(), new.as_ref());
                    if let Some(e) = event {
                        events.push((PIN_SUB, "items".to_string(), e));
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

    /// The log is compacted up to a random sync id: older resumes are refused.
    pub fn compact(&mut self, rng: &mut StdRng) -> SyncId {
        if self.horizon < self.head() {
            self.horizon = SyncId(rng.gen_range(self.horizon.0 + 1..=self.head().0));
        }
        self.horizon
    }

    /// Another database takes over (a new server id): the same rows, as its first
    /// transaction, and no log, idempotency record or session of the old one.
    pub fn replace(&mut self) {
        let rows = self.now().clone();
        self.epochs.push(vec![State::new(), rows]);
        self.log = vec![Vec::new()];
        self.horizon = SyncId::ZERO;
        self.applied.clear();
        for session in &mut self.sessions {
            *session = None;
        }
    }

    fn session(&mut self, client: usize) -> &mut Session {
        self.sessions[client].as_mut().unwrap()
    }

    pub fn receive(&mut self, rng: &mut StdRng, client: usize, message: ClientMessage) {
        let head = self.head();
        match message {
            ClientMessage::Subscribe {
                sub,
                sql,
                resume_after,
                resume_shape,
                ..
            } => {
                let claims = self.session(client).claims;
                let shape = shape_of(&sql, claims);
                if let Some(after) = resume_after {
                    // Rows read under other claims may include some no longer readable.
                    if after < self.horizon || resume_shape.is_some_and(|s| s != shape) {
                        let horizon = self.horizon;
                        let refused = ServerMessage::ResumeRefused { sub, horizon };
                        self.session(client).control.push_back(refused);
                        return;
                    }
                }
                let mut frames = VecDeque::new();
                frames.push_back(BootstrapFrame::Begin {
                    sub,
                    table: "items".into(),
                    columns: vec!["id".into(), "g".into(), "v".into()],
                    estimate: 0,
                    access: shape,
                });
                match resume_after {
                    Some(after) => {
                        for s in after.0 + 1..=head.0 {
                            for (key, old, new) in &self.log[s as usize - 1] {
                                let event =
                                    event_for(&sql, claims, *key, old.as_ref(), new.as_ref());
                                if let Some(event) = event {
                                    frames.push_back(BootstrapFrame::Replay {
                                        sync_id: SyncId(s),
                                        event,
                                    });
                                }
                            }
                        }
                    }
                    None => {
                        for (key, row) in self.now() {
                            if matches(&sql, row) && readable(claims, row) {
                                frames.push_back(BootstrapFrame::Row {
                                    key: Value::Integer(*key),
                                    row: values(*key, row),
                                });
                            }
                        }
                    }
                }
                frames.push_back(BootstrapFrame::End { sync_id: head });
                let session = self.session(client);
                session.boot.push_back((sub, frames));
                session.live.push_back(LiveItem::Joined(sub, head));
                session.subs.insert(sub, sql);
            }
            ClientMessage::Unsubscribe { sub } => {
                self.session(client).subs.remove(&sub);
            }
            ClientMessage::Write { seq, mutations, .. } => {
                if let Some(&sync_id) = self.applied.get(&(client, seq)) {
                    let outcome = WriteOutcome::Committed { sync_id };
                    let answer = ServerMessage::WriteResult { seq, outcome };
                    self.session(client).control.push_back(answer);
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
                let answer = ServerMessage::WriteResult { seq, outcome };
                self.session(client).control.push_back(answer);
            }
            ClientMessage::Pin { table, keys } => self.pin(client, table, &keys, true),
            ClientMessage::Unpin { table, keys } => self.pin(client, table, &keys, false),
            ClientMessage::Fetch {
                request,
                table: _,
                keys,
            } => {
                let claims = self.session(client).claims;
                let rows = keys
                    .iter()
                    .map(int)
                    .filter_map(|k| self.now().get(&k).map(|r| (k, r)))
                    .filter(|(_, r)| readable(claims, r))
                    .map(|(k, r)| values(k, r))
                    .collect();
                let answer = ServerMessage::Fetched {
                    request,
                    sync_id: head,
                    rows,
                    columns: vec!["id".into(), "g".into(), "v".into()],
                };
                self.session(client).control.push_back(answer);
            }
            _ => {}
        }
    }

    /// Adds (`pin`) or removes keys of the session's pinned set; answered by `Pinned`.
    fn pin(&mut self, client: usize, table: String, keys: &[Value], pin: bool) {
        let session = self.session(client);
        for key in keys.iter().map(int) {
            if pin {
                session.pins.insert(key);
            } else {
                session.pins.remove(&key);
            }
        }
        let answer = ServerMessage::Pinned {
            table,
            columns: vec!["id".into(), "g".into(), "v".into()],
            pinned: session.pins.len() as u64,
        };
        session.control.push_back(answer);
    }

    /// A client transaction's changes on today's state, or `None` when the model
    /// refuses it (an insert of a present key, an update or delete of an absent one).
    fn changes_of(&self, mutations: &[Mutation]) -> Option<Vec<Change>> {
        let mut state = self.now().clone();
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

pub fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

pub fn text(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        other => panic!("not text: {other:?}"),
    }
}
