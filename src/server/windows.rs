//! Live windows: keeps every registered window shape (`... ORDER BY ... LIMIT n`) exact
//! at each sync id, and says which rows moved in and out.
//!
//! A window's state is small: how many rows it holds and, when it is full, the sort key
//! of its last row (its edge). Membership of any row follows: it is in when it matches
//! the WHERE clause and sorts at or before the edge. For each committed transaction the
//! writer calls [`WindowObserver`] inside its SQLite transaction; the windows whose WHERE
//! clause one of the changed rows matches (found by a [`Matcher`] of window shapes, the
//! same index plain shapes use) compute their delta: rows in, rows out, and reads from
//! the store at that same state where needed (the rows past the old edge that move in
//! when rows left, the rows that fall past the edge when rows came in). Plain shapes never
//! come here.
//!
//! Server-internal and synchronous: called on the writer thread and, to start a window,
//! under the store's writer lock. No async, no IO but the store's reads.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::matcher::{Matcher, ShapeMatch};
use crate::query::{Pred, Shape, ShapeId};
use crate::store::{CommitObserver, KeyOrd, StoreError, TxnView, WindowFrom, WindowRead};
use crate::value::Value;
use crate::vocab::{Change, MoveOut, RowEvent, SyncId};

/// One window shape's state at the last transaction applied.
#[derive(Clone)]
struct State {
    /// Rows in the window (at most its limit).
    count: u64,
    /// The sort key of its last row when it holds `limit` rows; `None` when it holds
    /// fewer (every matching row is in).
    edge: Option<Vec<Value>>,
}

struct Entry {
    shape: Arc<Shape>,
    /// The subscription's own predicate when a read rule was ANDed in (for `forbidden`).
    base: Option<Arc<Pred>>,
    /// Subscriptions using it.
    refs: usize,
    state: State,
}

/// Every registered window shape and its state.
#[derive(Default)]
pub struct Windows {
    matcher: Matcher,
    entries: HashMap<ShapeId, Entry>,
}

/// The window events of one transaction: per window shape, its table and row events.
pub type WindowEvents = Vec<(ShapeId, String, RowEvent)>;

impl Windows {
    /// No windows.
    pub fn new() -> Windows {
        Windows::default()
    }

    /// Whether no window is registered (commits then skip window work).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds one subscription to the window `shape`. The first one reads the window at
    /// the head through `view` (called under the writer lock, so maintenance picks up at
    /// the next transaction). Fails when the read does.
    pub fn register(
        &mut self,
        shape: &Arc<Shape>,
        base: Option<Arc<Pred>>,
        view: &dyn TxnView,
    ) -> Result<(), StoreError> {
        if let Some(entry) = self.entries.get_mut(&shape.id()) {
            entry.refs += 1;
            return Ok(());
        }
        let Some(window) = shape.window() else {
            return Err(StoreError::Corrupt(
                "a window without ORDER BY/LIMIT".into(),
            ));
        };
        let rows = view.window_rows(&WindowRead {
            shape,
            reverse: false,
            from: WindowFrom::Start,
            limit: window.limit(),
        })?;
        let count = rows.len() as u64;
        let edge = (count == window.limit())
            .then(|| rows.last().map(|r| window.key(r)))
            .flatten();
        self.matcher.register(shape.clone());
        self.entries.insert(
            shape.id(),
            Entry {
                shape: shape.clone(),
                base,
                refs: 1,
                state: State { count, edge },
            },
        );
        Ok(())
    }

    /// Moves one subscription from window `from` to `to` (the same window with another
    /// limit) at the head, which `view` reads under the writer lock, and returns the rows
    /// between the two edges: inserts when it grew, deletes with reason `window` when it
    /// shrank. One read of at most the difference of the limits. Fails when it does.
    pub fn resize(
        &mut self,
        from: &Arc<Shape>,
        to: &Arc<Shape>,
        base: Option<Arc<Pred>>,
        view: &dyn TxnView,
    ) -> Result<Vec<RowEvent>, StoreError> {
        self.register(to, base, view)?;
        let (Some(old), Some(new)) = (self.entries.get(&from.id()), self.entries.get(&to.id()))
        else {
            return Err(StoreError::Corrupt("resize of an unknown window".into()));
        };
        let (Some(old_window), Some(new_window)) = (from.window(), to.window()) else {
            return Err(StoreError::Corrupt(
                "resize of a shape without a window".into(),
            ));
        };
        let (old_limit, new_limit) = (old_window.limit(), new_window.limit());
        let pk = to.table().pk;
        let events = if new_limit > old_limit {
            match &old.state.edge {
                None => Vec::new(),
                Some(edge) => view
                    .window_rows(&WindowRead {
                        shape: to,
                        reverse: false,
                        from: WindowFrom::After(edge),
                        limit: new_limit - old_limit,
                    })?
                    .into_iter()
                    .map(|row| RowEvent::Insert {
                        key: row[pk].clone(),
                        row: to.project(&row),
                    })
                    .collect(),
            }
        } else {
            match &new.state.edge {
                None => Vec::new(),
                Some(edge) => view
                    .window_rows(&WindowRead {
                        shape: from,
                        reverse: false,
                        from: WindowFrom::After(edge),
                        limit: old_limit - new_limit,
                    })?
                    .into_iter()
                    .map(|row| RowEvent::Delete {
                        key: row[pk].clone(),
                        reason: MoveOut::Window,
                    })
                    .collect(),
            }
        };
        self.release(from.id());
        Ok(events)
    }

    /// Drops one subscription of window `id`; the last one removes the window.
    pub fn release(&mut self, id: ShapeId) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.refs -= 1;
            if entry.refs == 0 {
                self.entries.remove(&id);
                self.matcher.unregister(id);
            }
        }
    }

    /// Applies one committed transaction's changes to every window they touch and
    /// returns the events; `undo` keeps each touched window's state from before the batch.
    fn apply(
        &mut self,
        view: &dyn TxnView,
        changes: &[Change],
        undo: &mut HashMap<ShapeId, State>,
    ) -> Result<WindowEvents, StoreError> {
        // Per window touched: the net change of each row (first old image, last new one).
        let mut touched: HashMap<ShapeId, Vec<Net>> = HashMap::new();
        let mut matches: Vec<ShapeMatch> = Vec::new();
        for change in changes {
            self.matcher.match_change(
                &change.table,
                change.old.as_deref(),
                change.new.as_deref(),
                &mut matches,
            );
            for m in &matches {
                let nets = touched.entry(m.shape).or_default();
                match nets.iter_mut().find(|n| n.key == change.key) {
                    Some(net) => net.new = change.new.clone(),
                    None => nets.push(Net {
                        table: change.table.clone(),
                        key: change.key.clone(),
                        old: change.old.clone(),
                        new: change.new.clone(),
                    }),
                }
            }
        }
        let mut events = Vec::new();
        let mut ids: Vec<ShapeId> = touched.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            undo.entry(id).or_insert_with(|| entry.state.clone());
            let nets = &touched[&id];
            let table = nets[0].table.clone();
            for event in step(entry, view, nets)? {
                events.push((id, table.clone(), event));
            }
        }
        Ok(events)
    }
}

/// A row's net change within one transaction.
struct Net {
    table: String,
    key: Value,
    old: Option<Vec<Value>>,
    new: Option<Vec<Value>>,
}

/// One window's delta for one transaction; updates its state.
fn step(entry: &mut Entry, view: &dyn TxnView, nets: &[Net]) -> Result<Vec<RowEvent>, StoreError> {
    let shape = entry.shape.clone();
    let window = shape.window().expect("window shapes only");
    let limit = window.limit();
    let pk = shape.table().pk;
    let edge = entry.state.edge.clone();
    let within = |row: &[Value]| {
        shape.matches(row)
            && edge
                .as_ref()
                .is_none_or(|e| window.cmp_keys(&window.key(row), e).is_le())
    };
    // Rows of the window that changed (`was`), and changed rows now at or before the
    // edge (`candidates`): after the transaction the rows at or before the old edge are
    // the window's unchanged rows, minus `was`, plus `candidates`.
    let was: Vec<bool> = nets
        .iter()
        .map(|n| n.old.as_deref().is_some_and(within))
        .collect();
    let candidate: Vec<bool> = nets
        .iter()
        .map(|n| n.new.as_deref().is_some_and(within))
        .collect();
    let left = was.iter().filter(|w| **w).count() as u64;
    let entered = candidate.iter().filter(|c| **c).count() as u64;
    let count = entry.state.count + entered - left;
    let changed: BTreeSet<KeyOrd> = nets.iter().map(|n| KeyOrd(n.key.clone())).collect();
    // Rows that fall past the edge (`dropped`) or come in from past it (`topped`).
    let mut dropped: Vec<Vec<Value>> = Vec::new();
    let mut topped: Vec<Vec<Value>> = Vec::new();
    let at_or_before_edge = match &edge {
        Some(e) => WindowFrom::AtOrAfter(e),
        None => WindowFrom::Start,
    };
    let new_state = if count > limit {
        let surplus = count - limit;
        let mut rows = view.window_rows(&WindowRead {
            shape: &shape,
            reverse: true,
            from: at_or_before_edge,
            limit: surplus + 1,
        })?;
        let last = rows.pop().filter(|_| rows.len() as u64 == surplus);
        let Some(last) = last else {
            return Err(StoreError::Corrupt(format!(
                "window {} lost track of its rows",
                shape.id()
            )));
        };
        dropped = rows;
        State {
            count: limit,
            edge: Some(window.key(&last)),
        }
    } else if count == limit {
        let edge_row_changed = edge
            .as_ref()
            .is_some_and(|e| changed.contains(&KeyOrd(e[e.len() - 1].clone())));
        let kept = match &edge {
            Some(e) if !edge_row_changed => Some(e.clone()),
            _ => None,
        };
        let edge = match kept {
            Some(e) => e,
            None => {
                let rows = view.window_rows(&WindowRead {
                    shape: &shape,
                    reverse: true,
                    from: at_or_before_edge,
                    limit: 1,
                })?;
                let Some(last) = rows.first() else {
                    return Err(StoreError::Corrupt(format!(
                        "window {} lost track of its rows",
                        shape.id()
                    )));
                };
                window.key(last)
            }
        };
        State {
            count,
            edge: Some(edge),
        }
    } else {
        match &edge {
            None => State { count, edge: None },
            Some(e) => {
                topped = view.window_rows(&WindowRead {
                    shape: &shape,
                    reverse: false,
                    from: WindowFrom::After(e),
                    limit: limit - count,
                })?;
                let count = count + topped.len() as u64;
                State {
                    count,
                    edge: (count == limit)
                        .then(|| topped.last().map(|r| window.key(r)))
                        .flatten(),
                }
            }
        }
    };
    entry.state = new_state;
    let dropped_keys: BTreeSet<KeyOrd> = dropped.iter().map(|r| KeyOrd(r[pk].clone())).collect();
    let topped_keys: BTreeSet<KeyOrd> = topped.iter().map(|r| KeyOrd(r[pk].clone())).collect();
    let mut events = Vec::new();
    for (i, net) in nets.iter().enumerate() {
        let key = KeyOrd(net.key.clone());
        let now = (candidate[i] && !dropped_keys.contains(&key)) || topped_keys.contains(&key);
        let new = net.new.as_deref();
        match (was[i], now) {
            (true, true) => events.push(RowEvent::Update {
                key: net.key.clone(),
                row: shape.project(new.unwrap_or_default()),
            }),
            (false, true) => events.push(RowEvent::Insert {
                key: net.key.clone(),
                row: shape.project(new.unwrap_or_default()),
            }),
            (true, false) => events.push(RowEvent::Delete {
                key: net.key.clone(),
                reason: reason(&shape, entry.base.as_deref(), new),
            }),
            (false, false) => {}
        }
    }
    for row in &dropped {
        if !changed.contains(&KeyOrd(row[pk].clone())) {
            events.push(RowEvent::Delete {
                key: row[pk].clone(),
                reason: MoveOut::Window,
            });
        }
    }
    for row in &topped {
        if !changed.contains(&KeyOrd(row[pk].clone())) {
            events.push(RowEvent::Insert {
                key: row[pk].clone(),
                row: shape.project(row),
            });
        }
    }
    Ok(events)
}

/// Why a row that was in the window is not any more, given its new image.
fn reason(shape: &Shape, base: Option<&Pred>, new: Option<&[Value]>) -> MoveOut {
    match new {
        None => MoveOut::Deleted,
        Some(row) if shape.matches(row) => MoveOut::Window,
        Some(row) if base.is_some_and(|b| b.matches(row)) => MoveOut::Forbidden,
        Some(_) => MoveOut::MovedOut,
    }
}

/// The writer's observer for one batch: window events per committed transaction, and
/// the states to restore if the batch rolls back.
pub struct WindowObserver<'w> {
    windows: &'w Mutex<Windows>,
    undo: HashMap<ShapeId, State>,
    /// Window events per sync id, in commit order (transactions that touched none are
    /// absent).
    pub events: Vec<(SyncId, WindowEvents)>,
    /// The window shapes a spilled transaction's parts had events for (their events are
    /// not kept, see [`CommitObserver::spilled`]).
    pub spilled: HashSet<ShapeId>,
}

impl<'w> WindowObserver<'w> {
    /// An observer for one batch.
    pub fn new(windows: &'w Mutex<Windows>) -> WindowObserver<'w> {
        WindowObserver {
            windows,
            undo: HashMap::new(),
            events: Vec::new(),
            spilled: HashSet::new(),
        }
    }
}

impl CommitObserver for WindowObserver<'_> {
    fn committed(
        &mut self,
        view: &dyn TxnView,
        sync_id: SyncId,
        changes: &[Change],
    ) -> Result<(), StoreError> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.is_empty() {
            return Ok(());
        }
        let events = windows.apply(view, changes, &mut self.undo)?;
        if !events.is_empty() {
            self.events.push((sync_id, events));
        }
        Ok(())
    }

    fn spilled(&mut self) {
        for (_, events) in self.events.drain(..) {
            self.spilled
                .extend(events.into_iter().map(|(shape, _, _)| shape));
        }
    }

    fn finished(&mut self, committed: bool) {
        if committed {
            return;
        }
        self.events.clear();
        self.spilled.clear();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        for (id, state) in self.undo.drain() {
            if let Some(entry) = windows.entries.get_mut(&id) {
                entry.state = state;
            }
        }
    }
}
