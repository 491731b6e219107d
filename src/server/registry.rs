//! Which sessions listen to which shapes: the matcher plus, per shape, its subscribers.
//!
//! Matching happens once per distinct shape; fan-out once per session.
//!
//! Server-internal and synchronous (held under a mutex for short sections): no IO, no
//! store, no async.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::windows::WindowEvents;
use crate::matcher::{classify, Effect, Matcher, MoveOutReason, ShapeMatch};
use crate::query::{Pred, Shape, ShapeId};
use crate::store::KeyOrd;
use crate::vocab::{Change, MoveOut, RowEvent, SessionId, SubId};
use crate::wire::PIN_SUB;

/// The matcher and the subscribers of every registered shape.
#[derive(Default)]
pub struct Registry {
    matcher: Matcher,
    subscribers: HashMap<ShapeId, Vec<(SessionId, SubId)>>,
    /// For shapes that include a permission rule: the subscription's own predicate, to
    /// tell "no longer permitted" from "stopped matching" when a row leaves.
    bases: HashMap<ShapeId, Arc<Pred>>,
    /// Window shapes: subscribers only (see [`Registry::subscribe_window`]).
    windows: HashSet<ShapeId>,
    /// Rows kept live by batch-loader pins, per table (lower-cased name).
    pins: HashMap<String, PinnedTable>,
}

/// The pinned rows of one table: an index from key to the sessions pinning it, so a pin
/// or unpin costs its own keys (not a recompile of the session's whole key set) and a
/// change costs one lookup.
#[derive(Default)]
struct PinnedTable {
    keys: BTreeMap<KeyOrd, Vec<SessionId>>,
    /// Per pinning session: the table under its read rule, projected to the columns it
    /// may read. A pinned row is delivered while it matches this shape.
    shapes: HashMap<SessionId, Arc<Shape>>,
}

/// One transaction's events, grouped for the fan-out: a group per shape (or window shape)
/// the transaction touched, shared by every subscription of the shape, and one per session
/// for its pinned rows; per session, the groups it gets and under which subscriptions.
///
/// Kept between transactions ([`Registry::deliveries`] clears it) so that its buffers are
/// reused: the per-session pairs are one flat list, sorted by session when read.
#[derive(Debug, Default)]
pub struct Deliveries {
    /// Each group's `(table, event)`s, in change order.
    pub groups: Vec<Vec<(String, RowEvent)>>,
    /// `(session, group, subscription)`, in the order met; [`NO_GROUP`] marks a session
    /// that hears of the transaction without events.
    pairs: Vec<Pair>,
    /// The group of each shape met so far.
    by_shape: HashMap<ShapeId, usize>,
    /// The group of each session's pinned rows met so far.
    by_pins: HashMap<SessionId, usize>,
}

/// A session, one of its groups, and the subscription it gets the group under.
pub type Pair = (SessionId, usize, SubId);

/// The group of a [`Pair`] that only names its session (see [`Deliveries::include`]).
pub const NO_GROUP: usize = usize::MAX;

impl Deliveries {
    /// Empties every list, keeping their memory.
    fn clear(&mut self) {
        self.groups.clear();
        self.pairs.clear();
        self.by_shape.clear();
        self.by_pins.clear();
    }

    /// The group of `shape`, new (and named to every subscriber) on its first event.
    fn shape_group(&mut self, shape: ShapeId, subscribers: &[(SessionId, SubId)]) -> usize {
        if let Some(&group) = self.by_shape.get(&shape) {
            return group;
        }
        let group = self.groups.len();
        self.groups.push(Vec::new());
        self.by_shape.insert(shape, group);
        self.pairs.extend(
            subscribers
                .iter()
                .map(|&(session, sub)| (session, group, sub)),
        );
        group
    }

    /// The group of `session`'s pinned rows, new on its first event.
    fn pins_group(&mut self, session: SessionId) -> usize {
        if let Some(&group) = self.by_pins.get(&session) {
            return group;
        }
        let group = self.groups.len();
        self.groups.push(Vec::new());
        self.by_pins.insert(session, group);
        self.pairs.push((session, group, PIN_SUB));
        group
    }

    /// Makes sure `session` hears of the transaction, with or without events.
    pub fn include(&mut self, session: SessionId) {
        self.pairs.push((session, NO_GROUP, PIN_SUB));
    }

    /// Each session once (in session order) with its pairs, in the order they were met:
    /// the pairs of one group are adjacent. A session included without events has only
    /// [`NO_GROUP`] pairs.
    pub fn sessions(&mut self) -> impl Iterator<Item = (SessionId, &[Pair])> + '_ {
        // Stable: a session's pairs keep their order.
        self.pairs.sort_by_key(|&(session, _, _)| session);
        self.pairs
            .chunk_by(|a, b| a.0 == b.0)
            .map(|pairs| (pairs[0].0, pairs))
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers `sub` of `session` on `shape` (shared with identical shapes already
    /// registered) and returns the shape's id; `base` is the subscription's predicate
    /// without its permission rule, when one was ANDed in.
    pub fn subscribe(
        &mut self,
        shape: Arc<Shape>,
        base: Option<Arc<Pred>>,
        session: SessionId,
        sub: SubId,
    ) -> ShapeId {
        let id = self.matcher.register(shape);
        if let Some(base) = base {
            self.bases.entry(id).or_insert(base);
        }
        self.subscribers.entry(id).or_default().push((session, sub));
        id
    }

    /// Removes `sub` of `session` from `shape`; the shape leaves the matcher with its last
    /// subscriber. Does nothing when the pair is not registered.
    pub fn unsubscribe(&mut self, shape: ShapeId, session: SessionId, sub: SubId) {
        if let Some(list) = self.subscribers.get_mut(&shape) {
            if let Some(i) = list.iter().position(|&(s, b)| s == session && b == sub) {
                list.swap_remove(i);
                if !self.windows.contains(&shape) {
                    self.matcher.unregister(shape);
                }
            }
            if list.is_empty() {
                self.subscribers.remove(&shape);
                self.bases.remove(&shape);
                self.windows.remove(&shape);
            }
        }
    }

    /// Registers `sub` of `session` on the window shape `shape` for fan-out only: window
    /// shapes are matched and kept by [`super::windows::Windows`], whose events
    /// [`Registry::window_deliveries`] routes.
    pub fn subscribe_window(&mut self, shape: &Shape, session: SessionId, sub: SubId) -> ShapeId {
        let id = shape.id();
        self.windows.insert(id);
        self.subscribers.entry(id).or_default().push((session, sub));
        id
    }

    /// Adds one transaction's window events to its groups, a group per window shape.
    pub fn window_deliveries(&self, events: &WindowEvents, out: &mut Deliveries) {
        for (shape, table, event) in events {
            let Some(subscribers) = self.subscribers.get(shape) else {
                continue;
            };
            let group = out.shape_group(*shape, subscribers);
            out.groups[group].push((table.clone(), event.clone()));
        }
    }

    /// Adds `keys` of `table` to the rows `session` keeps live under `shape` (the
    /// table's read rule for the session, see [`PinnedTable`]). Already pinned keys stay.
    pub fn pin(&mut self, session: SessionId, table: &str, shape: Arc<Shape>, keys: &[KeyOrd]) {
        let pinned = self.pins.entry(table.to_ascii_lowercase()).or_default();
        pinned.shapes.insert(session, shape);
        for key in keys {
            let sessions = pinned.keys.entry(key.clone()).or_default();
            if !sessions.contains(&session) {
                sessions.push(session);
            }
        }
    }

    /// Removes `keys` of `table` from the rows `session` keeps live; with `last`, the
    /// session keeps no row of the table any more and its shape goes too.
    pub fn unpin(&mut self, session: SessionId, table: &str, keys: &[KeyOrd], last: bool) {
        let name = table.to_ascii_lowercase();
        let Some(pinned) = self.pins.get_mut(&name) else {
            return;
        };
        for key in keys {
            if let Some(sessions) = pinned.keys.get_mut(key) {
                sessions.retain(|&s| s != session);
                if sessions.is_empty() {
                    pinned.keys.remove(key);
                }
            }
        }
        if last {
            pinned.shapes.remove(&session);
        }
        if pinned.shapes.is_empty() {
            self.pins.remove(&name);
        }
    }

    /// Rows pinned by any session (each key counted once per table).
    pub fn pinned_rows(&self) -> usize {
        self.pins.values().map(|p| p.keys.len()).sum()
    }

    /// Distinct shapes registered.
    pub fn shape_count(&self) -> usize {
        self.matcher.len()
    }

    /// Whether a shape with this id is registered.
    pub fn contains(&self, shape: ShapeId) -> bool {
        self.matcher.contains(shape)
    }

    /// Distinct registered window shapes (`ORDER BY ... LIMIT n`).
    pub fn window_count(&self) -> usize {
        self.windows.len()
    }

    /// Distinct registered shapes no index serves.
    pub fn residual_count(&self) -> usize {
        self.matcher.residual_len()
    }

    /// Every session that follows a row of `tables` (case-insensitive names): through a
    /// subscription to a shape of one of them, a pin on one of them, or one of
    /// `windows`, the window shapes that had events.
    pub fn sessions_on(&self, tables: &[String], windows: &HashSet<ShapeId>) -> HashSet<SessionId> {
        let mut sessions = HashSet::new();
        // The windows by id (no scan when no table is asked for, as for a spilled
        // transaction whose rows were matched one by one).
        for id in windows {
            if let Some(subscribers) = self.subscribers.get(id) {
                sessions.extend(subscribers.iter().map(|&(session, _)| session));
            }
        }
        if tables.is_empty() {
            return sessions;
        }
        let on = |table: &str| tables.iter().any(|t| t.eq_ignore_ascii_case(table));
        for (id, subscribers) in &self.subscribers {
            if self
                .matcher
                .shape(*id)
                .is_some_and(|shape| on(&shape.table().name))
            {
                sessions.extend(subscribers.iter().map(|&(session, _)| session));
            }
        }
        for (table, pinned) in &self.pins {
            if on(table) {
                sessions.extend(pinned.shapes.keys().copied());
            }
        }
        sessions
    }

    /// Every registered shape with its subscriber count, for the inspector.
    pub fn shapes(&self) -> impl Iterator<Item = (&Arc<Shape>, usize)> + '_ {
        self.subscribers
            .iter()
            .filter_map(|(id, subs)| self.matcher.shape(*id).map(|shape| (shape, subs.len())))
    }

    /// Matches every change of one committed transaction and groups the resulting row
    /// events by shape, in change order: each shape's events are built once, whatever
    /// its number of subscribers.
    /// `out` is cleared first.
    pub fn deliveries(&self, changes: &[Change], out: &mut Deliveries) {
        out.clear();
        let mut matches: Vec<ShapeMatch> = Vec::new();
        for change in changes {
            self.matcher.match_change(
                &change.table,
                change.old.as_deref(),
                change.new.as_deref(),
                &mut matches,
            );
            for m in &matches {
                let Some(shape) = self.matcher.shape(m.shape) else {
                    continue;
                };
                let base = self.bases.get(&m.shape).map(|b| b.as_ref());
                let Some(subscribers) = self.subscribers.get(&m.shape) else {
                    continue;
                };
                let event = refine(row_event(shape, change, &m.effect), base, change);
                let group = out.shape_group(m.shape, subscribers);
                out.groups[group].push((change.table.clone(), event));
            }
            if !self.pins.is_empty() {
                self.pinned_deliveries(change, out);
            }
        }
    }

    /// The events of one change for the sessions that pin its row.
    fn pinned_deliveries(&self, change: &Change, out: &mut Deliveries) {
        let Some(pinned) = self.pins.get(&change.table.to_ascii_lowercase()) else {
            return;
        };
        let Some(sessions) = pinned.keys.get(&KeyOrd(change.key.clone())) else {
            return;
        };
        for session in sessions {
            let Some(shape) = pinned.shapes.get(session) else {
                continue;
            };
            let Some(event) = replay_event(shape, None, change) else {
                continue;
            };
            let event = match event {
                // The key is still pinned and the row still exists: it left because the
                // read rule no longer allows it.
                RowEvent::Delete {
                    key,
                    reason: MoveOut::MovedOut,
                } => RowEvent::Delete {
                    key,
                    reason: MoveOut::Forbidden,
                },
                other => other,
            };
            let group = out.pins_group(*session);
            out.groups[group].push((change.table.clone(), event));
        }
    }
}

/// The event a change means for one shape.
pub fn row_event(shape: &Shape, change: &Change, effect: &Effect) -> RowEvent {
    let key = change.key.clone();
    match effect {
        Effect::Insert => RowEvent::Insert {
            key,
            row: shape.project(change.new.as_deref().unwrap_or_default()),
        },
        Effect::Update => RowEvent::Update {
            key,
            row: shape.project(change.new.as_deref().unwrap_or_default()),
        },
        Effect::Delete(reason) => RowEvent::Delete {
            key,
            reason: match reason {
                MoveOutReason::Deleted => MoveOut::Deleted,
                _ => MoveOut::MovedOut,
            },
        },
    }
}

/// A move-out of a row that still matches the subscription itself (`base`) but not the
/// shape with its permission rule: the row left because it is no longer permitted.
pub fn refine(event: RowEvent, base: Option<&Pred>, change: &Change) -> RowEvent {
    match event {
        RowEvent::Delete {
            key,
            reason: MoveOut::MovedOut,
        } if base.is_some_and(|b| change.new.as_deref().is_some_and(|r| b.matches(r))) => {
            RowEvent::Delete {
                key,
                reason: MoveOut::Forbidden,
            }
        }
        other => other,
    }
}

/// Evaluates one change against one shape directly (used when replaying the log for a
/// single resuming subscription). `None` when the change does not concern the shape.
pub fn replay_event(shape: &Shape, base: Option<&Pred>, change: &Change) -> Option<RowEvent> {
    if !change.table.eq_ignore_ascii_case(&shape.table().name) {
        return None;
    }
    let was = change.old.as_deref().is_some_and(|r| shape.matches(r));
    let is = change.new.as_deref().is_some_and(|r| shape.matches(r));
    // The same rule as the live path: the row is gone when the change has no new image.
    let effect = classify(was, is, change.new.is_none())?;
    Some(refine(row_event(shape, change, &effect), base, change))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{compile, Params};
    use crate::schema::Schema;
    use crate::value::Value;
    use crate::vocab::{ChangeKind, SyncId};

    /// One table `t (id, team)`, what every test here subscribes to.
    fn team_schema() -> Schema {
        Schema::parse(
            "test",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, team TEXT);",
        )
        .unwrap()
    }

    fn shape(schema: &Schema, sql: &str) -> Arc<Shape> {
        Arc::new(compile(schema, sql, &Params::new()).unwrap())
    }

    fn insert(id: i64, team: &str) -> Change {
        Change {
            sync_id: SyncId(1),
            table: "t".into(),
            key: Value::Integer(id),
            kind: ChangeKind::Insert,
            old: None,
            new: Some(vec![Value::Integer(id), Value::Text(team.into())]),
            origin: None,
        }
    }

    /// Each session's `(group, subscription)` pairs, in order.
    fn pairs_by_session(out: &mut Deliveries) -> HashMap<SessionId, Vec<(usize, SubId)>> {
        let mut sessions = HashMap::new();
        for (session, pairs) in out.sessions() {
            let pairs = pairs.iter().map(|&(_, group, sub)| (group, sub)).collect();
            assert!(
                sessions.insert(session, pairs).is_none(),
                "each session once"
            );
        }
        sessions
    }

    #[test]
    fn a_shape_s_events_are_built_once_for_all_its_subscribers() {
        let schema = team_schema();
        let mut registry = Registry::new();
        let t1 = "SELECT * FROM t WHERE team = 'T1'";
        registry.subscribe(shape(&schema, t1), None, SessionId(1), SubId(10));
        registry.subscribe(shape(&schema, t1), None, SessionId(2), SubId(20));
        registry.subscribe(shape(&schema, t1), None, SessionId(2), SubId(21));
        let t2 = "SELECT id FROM t WHERE team = 'T2'";
        registry.subscribe(shape(&schema, t2), None, SessionId(2), SubId(22));
        let both = "SELECT * FROM t WHERE id > 0";
        registry.subscribe(shape(&schema, both), None, SessionId(3), SubId(30));
        let mut out = Deliveries::default();
        registry.deliveries(
            &[insert(1, "T1"), insert(2, "T2"), insert(3, "T1")],
            &mut out,
        );
        let sessions = pairs_by_session(&mut out);
        // Three shapes touched: three groups, each with its own events in change order.
        assert_eq!(out.groups.len(), 3, "{out:?}");
        let keys = |g: usize| -> Vec<Value> {
            out.groups[g].iter().map(|(_, e)| e.key().clone()).collect()
        };
        let group_of = |session: u64, sub: u64| -> usize {
            sessions[&SessionId(session)]
                .iter()
                .find(|&&(_, s)| s == SubId(sub))
                .unwrap()
                .0
        };
        let (g1, g2, g3) = (group_of(1, 10), group_of(2, 22), group_of(3, 30));
        assert_eq!(
            group_of(2, 20),
            g1,
            "the same shape's subscribers share its group"
        );
        assert_eq!(group_of(2, 21), g1);
        assert_eq!(keys(g1), [Value::Integer(1), Value::Integer(3)]);
        assert_eq!(keys(g2), [Value::Integer(2)]);
        assert_eq!(keys(g3), [1, 2, 3].map(Value::Integer));
        // Projection is the shape's: `SELECT id` rows carry one column.
        assert!(matches!(&out.groups[g2][0].1, RowEvent::Insert { row, .. } if row.len() == 1));
        // A session's pairs of one group are adjacent.
        let pairs = &sessions[&SessionId(2)];
        assert_eq!(pairs.len(), 3);
        assert_eq!((pairs[0].0, pairs[1].0), (g1, g1));
    }

    #[test]
    fn pinned_rows_get_a_group_per_session_under_the_pin_subscription() {
        let schema = team_schema();
        let mut registry = Registry::new();
        let all = shape(&schema, "SELECT * FROM t");
        let key = [KeyOrd(Value::Integer(5))];
        registry.pin(SessionId(1), "t", all.clone(), &key);
        registry.pin(SessionId(2), "t", all, &key);
        let mut out = Deliveries::default();
        registry.deliveries(&[insert(5, "T9"), insert(6, "T9")], &mut out);
        assert_eq!(out.groups.len(), 2, "{out:?}");
        let sessions = pairs_by_session(&mut out);
        for session in [1, 2] {
            let pairs = &sessions[&SessionId(session)];
            assert_eq!(pairs.len(), 1);
            assert_eq!(pairs[0].1, PIN_SUB);
            assert_eq!(out.groups[pairs[0].0].len(), 1, "only the pinned row");
        }
    }

    #[test]
    fn an_included_session_is_named_once_and_a_reused_list_starts_empty() {
        let schema = team_schema();
        let mut registry = Registry::new();
        let t1 = "SELECT * FROM t WHERE team = 'T1'";
        registry.subscribe(shape(&schema, t1), None, SessionId(2), SubId(20));
        registry.subscribe(shape(&schema, t1), None, SessionId(1), SubId(10));
        let mut out = Deliveries::default();
        registry.deliveries(&[insert(1, "T1")], &mut out);
        out.include(SessionId(2));
        out.include(SessionId(3));
        let sessions = pairs_by_session(&mut out);
        assert_eq!(sessions.len(), 3, "{sessions:?}");
        assert_eq!(
            sessions[&SessionId(2)],
            [(0, SubId(20)), (NO_GROUP, PIN_SUB)]
        );
        assert_eq!(sessions[&SessionId(3)], [(NO_GROUP, PIN_SUB)]);
        // The next transaction starts from nothing.
        registry.deliveries(&[insert(2, "T2")], &mut out);
        assert!(out.groups.is_empty());
        assert_eq!(out.sessions().count(), 0);
    }
}
