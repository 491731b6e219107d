//! The client's sync protocol as a deterministic state machine, in the spirit of
//! `quinn-proto`: no sockets, no clock, no SQLite. It takes what happens on one
//! connection (bootstrap frames, live transactions, seam markers, refusals, app
//! subscribes and unsubscribes) and returns [`Action`]s: local-store operations to run in
//! order, frames to send, subscription statuses to publish. The async client drives it
//! over QUIC; the simulation test drives it against a model server, checking the local
//! view after every local transaction.
//!
//! What it decides: which changes are staged (for a subscription that has not joined the
//! consistent cut yet) and which apply at once; when staged subscriptions join, and at
//! which cut; when the cut is held (while the subscriptions resumed together after a
//! reconnect stage, nothing moves the cut past changes they have not applied).
//!
//! Depends on the wire's frames and the local store's vocabulary; the store operations
//! themselves run through [`StoreOp::run`].

use std::collections::{HashMap, HashSet};

use super::SubStatus;
use crate::query::{Params, ShapeId};
use crate::store::{
    Applied, JoinKind, LocalStore, Pending, PinChange, ServerTxn, StoreError, SubRecord,
};
use crate::vocab::{RowEvent, SubId, SyncId};
use crate::wire::{BootstrapFrame, ClientMessage, LiveTxn, PROGRESS_EVERY};

/// Snapshot rows buffered before they are written to the staging table in one local
/// transaction (a few hundred bytes each: about a MiB buffered, another being written).
pub const STAGE_BATCH: usize = 4096;

/// Whether a bootstrap frame is a snapshot row or a progress note: neither needs the rows
/// buffered before it staged first (nothing else reaches the store in between).
pub fn is_row_or_progress(frame: &BootstrapFrame) -> bool {
    matches!(
        frame,
        BootstrapFrame::Row { .. } | BootstrapFrame::Progress { .. }
    )
}

/// One staged change or snapshot row: (subscription, sync id or `None` for a snapshot
/// row, table, event).
pub type StagedItem = (SubId, Option<SyncId>, String, RowEvent);

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run this local-store operation (one local SQLite transaction), then notify
    /// observers of what it changed.
    Store(StoreOp),
    /// Send this frame to the server.
    Send(ClientMessage),
    /// Publish this subscription status.
    Status(SubId, SubStatus),
}

/// A local-store operation decided by the core.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// A subscription's bootstrap starts over: what it had staged is discarded.
    StageClear(SubId),
    /// A bootstrap stream said what its rows carry.
    Describe {
        /// The subscription.
        sub: SubId,
        /// Its table.
        table: String,
        /// The columns its rows carry, in order.
        columns: Vec<String>,
        /// The effective shape it is read under.
        access: ShapeId,
    },
    /// Snapshot rows or replayed changes, staged.
    Stage(Vec<StagedItem>),
    /// One server transaction: staged changes for subscriptions not joined yet, events
    /// of joined ones (`None` while the cut is held), and the pinned rows' events (which
    /// the driver filters through its batch loader).
    Txn {
        /// The transaction's sync id.
        sync_id: SyncId,
        /// Changes staged for subscriptions that have not joined.
        stage: Vec<StagedItem>,
        /// Events applied at once, or `None` while the cut is held.
        live: Option<Vec<(SubId, String, RowEvent)>>,
        /// Events of batch-loader pins, as (table, event).
        pinned: Vec<(String, RowEvent)>,
    },
    /// Staged subscriptions join the local view at the cut: the store's cut, raised to
    /// at least `floor`.
    Join {
        /// The joining subscriptions, how, and each one's seam.
        subs: Vec<(SubId, JoinKind, SyncId)>,
        /// The lowest cut the join may leave.
        floor: SyncId,
    },
    /// The server refused a subscription: its rows leave.
    RemoveSub(SubId),
}

impl StoreOp {
    /// Runs the operation on the local store, with no pinned rows.
    pub fn run(&self, local: &mut LocalStore) -> Result<Applied, StoreError> {
        self.run_with_pins(local, &[])
    }

    /// Runs the operation; `pins` are this transaction's pinned rows (already filtered
    /// by the batch loader), written in the same local transaction.
    pub fn run_with_pins(
        &self,
        local: &mut LocalStore,
        pins: &[(String, PinChange)],
    ) -> Result<Applied, StoreError> {
        match self {
            StoreOp::StageClear(sub) => {
                local.stage_clear(*sub)?;
                Ok(Applied::default())
            }
            StoreOp::Describe {
                sub,
                table,
                columns,
                access,
            } => {
                local.describe_sub(*sub, table, columns)?;
                local.set_sub_access(*sub, *access)?;
                Ok(Applied::default())
            }
            StoreOp::Stage(items) => {
                local.stage_many(items)?;
                Ok(Applied::default())
            }
            StoreOp::Txn {
                sync_id,
                stage,
                live,
                ..
            } => local.apply_server_txn(ServerTxn {
                sync_id: *sync_id,
                stage,
                live: live.as_deref(),
                pins,
            }),
            StoreOp::Join { subs, floor } => {
                let cut = local.cut()?.max(*floor);
                local.join(subs, cut)
            }
            StoreOp::RemoveSub(sub) => local.remove_sub(*sub),
        }
    }
}

/// Where a staged subscription is.
#[derive(Debug, Clone)]
struct Staged {
    kind: JoinKind,
    /// Part of the group of subscriptions resumed together after a reconnect.
    in_group: bool,
    end: Option<SyncId>,
    joined_at: Option<SyncId>,
    table: Option<String>,
    received: u64,
    estimate: u64,
}

/// The protocol state of one connection (a new connection starts a new core).
#[derive(Debug, Default)]
pub struct SyncCore {
    staged: HashMap<SubId, Staged>,
    /// Subscriptions sent on this connection.
    active: HashSet<SubId>,
    /// Window resizes asked while the subscription was bootstrapping: sent when it joins.
    resizes: HashMap<SubId, u64>,
    /// Highest live sync id held back while the resume group is staged.
    held_cut: SyncId,
    /// Snapshot rows not yet written to the staging table (at most [`STAGE_BATCH`]).
    rows: Vec<StagedItem>,
}

impl SyncCore {
    /// A core for a new connection.
    pub fn new() -> SyncCore {
        SyncCore::default()
    }

    /// Whether nothing is staging: every subscription sent on this connection joined.
    pub fn is_settled(&self) -> bool {
        self.staged.is_empty()
    }

    /// Whether `sub` was sent on this connection (and not dropped since).
    pub fn is_active(&self, sub: SubId) -> bool {
        self.active.contains(&sub)
    }

    /// The server's estimate of `sub`'s snapshot rows (for progress).
    pub fn subscribed(&mut self, sub: SubId, estimate: u64) {
        if let Some(s) = self.staged.get_mut(&sub) {
            s.estimate = estimate;
        }
    }

    /// Whether `sub` is staging as part of the resume group.
    pub fn in_group(&self, sub: SubId) -> bool {
        self.staged.get(&sub).is_some_and(|s| s.in_group)
    }

    /// Buffered snapshot rows go to the staging table before anything else happens.
    fn flush(&mut self, out: &mut Vec<Action>) {
        if !self.rows.is_empty() {
            out.push(Action::Store(StoreOp::Stage(std::mem::take(
                &mut self.rows,
            ))));
        }
    }

    /// The actions that write buffered snapshot rows (none when nothing is buffered).
    pub fn flush_rows(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.flush(&mut out);
        out
    }

    /// A connection opened: every stored subscription is sent again (those that joined
    /// before resume together from the local cut, as one group; the others bootstrap),
    /// then every write the server has not answered, in order.
    pub fn connected(
        &mut self,
        subs: &[SubRecord],
        cut: SyncId,
        pending: &[Pending],
    ) -> Vec<Action> {
        let mut out = Vec::new();
        for sub in subs {
            // A joined subscription resumes from the cut, even from 0 (it joined an
            // empty server): bootstrapping it alone would leave its rows at the old cut
            // while the others' move on. A server that cannot resume it says so, and it
            // bootstraps again within the group.
            let resume = sub.joined;
            out.extend(self.start(
                sub.id,
                &sub.sql,
                sub.params.clone(),
                resume.then_some((cut, sub.access)),
                resume,
            ));
        }
        for p in pending.iter().filter(|p| p.committed.is_none()) {
            out.push(Action::Send(ClientMessage::Write {
                seq: p.seq,
                mutations: p.mutations.clone(),
                preconditions: p.preconditions.clone(),
            }));
        }
        out
    }

    /// Sends subscription `sub`: a resume after `resume`'s cut under its recorded shape,
    /// or a bootstrap. `in_group`: resumed with the others after a reconnect (the cut
    /// is held until they all join).
    pub fn start(
        &mut self,
        sub: SubId,
        sql: &str,
        params: Params,
        resume: Option<(SyncId, Option<ShapeId>)>,
        in_group: bool,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        self.flush(&mut out);
        out.push(Action::Store(StoreOp::StageClear(sub)));
        self.active.insert(sub);
        self.staged.insert(
            sub,
            Staged {
                kind: if resume.is_some() {
                    JoinKind::Resume
                } else {
                    JoinKind::Bootstrap
                },
                in_group,
                end: None,
                joined_at: None,
                table: None,
                received: 0,
                estimate: 0,
            },
        );
        out.push(Action::Status(sub, SubStatus::Pending));
        out.push(Action::Send(ClientMessage::Subscribe {
            sub,
            sql: sql.to_string(),
            params,
            resume_after: resume.map(|(after, _)| after),
            resume_shape: resume.and_then(|(_, shape)| shape),
        }));
        out
    }

    /// The app resized window `sub`: sent now, or once the subscription joins.
    pub fn resize(&mut self, sub: SubId, limit: u64) -> Vec<Action> {
        if self.staged.contains_key(&sub) {
            self.resizes.insert(sub, limit);
            Vec::new()
        } else if self.active.contains(&sub) {
            vec![Action::Send(ClientMessage::Resize { sub, limit })]
        } else {
            Vec::new()
        }
    }

    /// The app dropped `sub` (its rows already left the local view).
    pub fn unsubscribe(&mut self, sub: SubId) -> Vec<Action> {
        let mut out = Vec::new();
        self.rows.retain(|r| r.0 != sub);
        self.flush(&mut out);
        self.staged.remove(&sub);
        self.resizes.remove(&sub);
        self.active.remove(&sub);
        out.push(Action::Send(ClientMessage::Unsubscribe { sub }));
        self.try_join(&mut out);
        out
    }

    /// The server refused `sub`: its rows leave and `status` says why.
    pub fn failed(&mut self, sub: SubId, status: SubStatus) -> Vec<Action> {
        let mut out = Vec::new();
        self.flush(&mut out);
        self.staged.remove(&sub);
        out.push(Action::Store(StoreOp::RemoveSub(sub)));
        out.push(Action::Status(sub, status));
        self.try_join(&mut out);
        out
    }

    /// One frame of `sub`'s bootstrap stream.
    pub fn bootstrap(&mut self, sub: SubId, frame: BootstrapFrame) -> Vec<Action> {
        let mut out = Vec::new();
        if !is_row_or_progress(&frame) {
            self.flush(&mut out);
        }
        let Some(state) = self.staged.get_mut(&sub) else {
            return out;
        };
        match frame {
            BootstrapFrame::Begin {
                table,
                columns,
                estimate,
                access,
                ..
            } => {
                out.push(Action::Store(StoreOp::Describe {
                    sub,
                    table: table.clone(),
                    columns,
                    access,
                }));
                state.table = Some(table);
                state.estimate = estimate.max(state.estimate);
            }
            BootstrapFrame::Row { key, row } => {
                let table = state.table.clone().unwrap_or_default();
                self.rows
                    .push((sub, None, table, RowEvent::Insert { key, row }));
                state.received += 1;
                if state.received.is_multiple_of(PROGRESS_EVERY) {
                    let status = SubStatus::Bootstrapping {
                        received: state.received,
                        estimate: state.estimate,
                    };
                    out.push(Action::Status(sub, status));
                }
                if self.rows.len() >= STAGE_BATCH {
                    self.flush(&mut out);
                }
            }
            BootstrapFrame::Replay { sync_id, event } => {
                let table = state.table.clone().unwrap_or_default();
                state.received += 1;
                out.push(Action::Store(StoreOp::Stage(vec![(
                    sub,
                    Some(sync_id),
                    table,
                    event,
                )])));
            }
            BootstrapFrame::Progress { .. } => {}
            BootstrapFrame::End { sync_id } => {
                state.end = Some(sync_id);
                // The seam marker may have arrived first, on the live stream.
                self.try_join(&mut out);
            }
        }
        out
    }

    /// The seam marker of `sub`: live changes after `sync_id` follow on the live stream.
    pub fn joined(&mut self, sub: SubId, sync_id: SyncId) -> Vec<Action> {
        let mut out = Vec::new();
        self.flush(&mut out);
        if let Some(s) = self.staged.get_mut(&sub) {
            s.joined_at = Some(sync_id);
        }
        self.try_join(&mut out);
        out
    }

    /// One live server transaction; `pinned` are its batch-loader pins' events, taken out
    /// of it by the driver.
    pub fn live(&mut self, txn: LiveTxn, pinned: Vec<(String, RowEvent)>) -> Vec<Action> {
        let mut out = Vec::new();
        self.flush(&mut out);
        let sync_id = txn.sync_id;
        let group_staged = self.staged.values().any(|s| s.in_group);
        let mut now: Vec<(SubId, String, RowEvent)> = Vec::new();
        let mut stage = Vec::new();
        for (sub, table, event) in txn.events {
            if group_staged && !self.staged.contains_key(&sub) && !self.active.contains(&sub) {
                // A subscription dropped since: nothing will ever join it.
                continue;
            }
            if self.staged.contains_key(&sub) || group_staged {
                stage.push((sub, Some(sync_id), table, event));
            } else {
                now.push((sub, table, event));
            }
        }
        if group_staged {
            self.held_cut = self.held_cut.max(sync_id);
        }
        out.push(Action::Store(StoreOp::Txn {
            sync_id,
            stage,
            live: (!group_staged).then_some(now),
            pinned,
        }));
        out
    }

    /// Joins every staged subscription whose snapshot ended and whose seam marker
    /// arrived; the resume group joins only all together.
    fn try_join(&mut self, out: &mut Vec<Action>) {
        let ready = |s: &Staged| s.end.is_some() && s.joined_at.is_some();
        let group: Vec<SubId> = self
            .staged
            .iter()
            .filter(|(_, s)| s.in_group)
            .map(|(id, _)| *id)
            .collect();
        let mut joining: Vec<SubId> = Vec::new();
        if !group.is_empty() {
            if !group.iter().all(|id| ready(&self.staged[id])) {
                // While the resume group stages, the cut cannot move (live transactions
                // are held for it), so nothing joins before it: a subscription joining
                // alone would move the cut past changes the group has not applied.
                return;
            }
            joining.extend(group);
        }
        joining.extend(
            self.staged
                .iter()
                .filter(|(_, s)| !s.in_group && ready(s))
                .map(|(id, _)| *id),
        );
        if joining.is_empty() {
            return;
        }
        // Deterministic order, whatever the map's.
        joining.sort();
        let mut floor = self.held_cut;
        let mut subs = Vec::new();
        for id in &joining {
            let s = self
                .staged
                .remove(id)
                .expect("joining a staged subscription");
            let w = s.joined_at.expect("ready");
            floor = floor.max(w);
            subs.push((*id, s.kind, w));
        }
        for id in &joining {
            // A resize asked while it was bootstrapping (the server resizes ready ones).
            if let Some(limit) = self.resizes.remove(id) {
                out.push(Action::Send(ClientMessage::Resize { sub: *id, limit }));
            }
        }
        self.held_cut = SyncId::ZERO;
        out.push(Action::Store(StoreOp::Join {
            subs: subs.clone(),
            floor,
        }));
        for (id, _, w) in subs {
            out.push(Action::Status(id, SubStatus::Ready { sync_id: w }));
        }
    }
}
