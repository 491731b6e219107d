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

/// The events one change produces, per session.
pub type Deliveries = HashMap<SessionId, Vec<(SubId, String, RowEvent)>>;

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

    /// Groups one transaction's window events by session, after the plain shapes' ones.
    pub fn window_deliveries(&self, events: &WindowEvents, out: &mut Deliveries) {
        for (shape, table, event) in events {
            for &(session, sub) in self.subscribers.get(shape).into_iter().flatten() {
                out.entry(session)
                    .or_default()
                    .push((sub, table.clone(), event.clone()));
            }
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

    /// Every registered shape with its subscriber count, for the inspector.
    pub fn shapes(&self) -> impl Iterator<Item = (&Arc<Shape>, usize)> + '_ {
        self.subscribers
            .iter()
            .filter_map(|(id, subs)| self.matcher.shape(*id).map(|shape| (shape, subs.len())))
    }

    /// Matches every change of one committed transaction and groups the resulting row
    /// events by session, in change order.
    pub fn deliveries(&self, changes: &[Change]) -> Deliveries {
        let mut out: Deliveries = HashMap::new();
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
                let event = refine(row_event(shape, change, &m.effect), base, change);
                for &(session, sub) in self.subscribers.get(&m.shape).into_iter().flatten() {
                    out.entry(session).or_default().push((
                        sub,
                        change.table.clone(),
                        event.clone(),
                    ));
                }
            }
            if !self.pins.is_empty() {
                self.pinned_deliveries(change, &mut out);
            }
        }
        out
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
            out.entry(*session)
                .or_default()
                .push((PIN_SUB, change.table.clone(), event));
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
