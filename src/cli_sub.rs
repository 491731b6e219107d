//! `sluice sub`: the client's protocol core ([`sluice::client::core`]) over one
//! connection, the same state machine the client library drives, with its local-store
//! operations carried out as JSON lines on stdout instead of local SQLite transactions.
//!
//! Snapshot rows print as the core stages them; live changes the core stages while the
//! snapshot streams wait (at most [`Printer::MAX_STAGED`]) and print at the join, past the
//! seam, after `snapshot_end`; once joined, live events print as they come.

use std::collections::VecDeque;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Result};
use sluice::client::core::{Action, StoreOp, SyncCore};
use sluice::client::{Connection, Event, SubStatus};
use sluice::ids::{SubId, SyncId};
use sluice::query::Params;
use sluice::value::Value;
use sluice::wire::{BootstrapFrame, RowEvent, ServerMessage};

/// The command's one subscription.
const SUB: SubId = SubId(1);

/// Whether the command goes on after a store operation.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Keep reading the connection.
    Continue,
    /// The snapshot ended and `--follow` was not given.
    Done,
}

/// Carries out the core's store operations as JSON lines on `out`.
pub struct Printer<W: Write> {
    out: W,
    follow: bool,
    table: String,
    columns: Vec<String>,
    /// Live changes staged before the join, in arrival (sync id) order.
    staged: VecDeque<(SyncId, String, RowEvent)>,
}

impl<W: Write> Printer<W> {
    /// Live changes held while the snapshot streams; past it the command fails (the
    /// snapshot is read slower than the database changes) rather than grow.
    pub const MAX_STAGED: usize = 1_000_000;

    pub fn new(out: W, follow: bool) -> Printer<W> {
        Printer {
            out,
            follow,
            table: String::new(),
            columns: Vec::new(),
            staged: VecDeque::new(),
        }
    }

    /// Carries out one store operation of the core.
    pub fn store(&mut self, op: StoreOp) -> Result<Step> {
        match op {
            StoreOp::StageClear(_) => self.staged.clear(),
            StoreOp::Describe { table, columns, .. } => {
                self.table = table;
                self.columns = columns;
            }
            StoreOp::Stage(items) => {
                for (_, sync_id, table, event) in items {
                    match sync_id {
                        None => self.snapshot_row(&event)?,
                        Some(s) => self.stage(s, table, event)?,
                    }
                }
            }
            StoreOp::Txn {
                sync_id,
                stage,
                live,
                ..
            } => {
                for (_, _, table, event) in stage {
                    self.stage(sync_id, table, event)?;
                }
                for (_, table, event) in live.unwrap_or_default() {
                    self.live(sync_id, &table, &event)?;
                }
            }
            StoreOp::Join { subs, floor } => {
                let w = subs.iter().map(|s| s.2).max().unwrap_or(floor);
                let end = serde_json::json!({ "op": "snapshot_end", "sync_id": w.0 });
                writeln!(self.out, "{end}")?;
                if !self.follow {
                    self.out.flush()?;
                    return Ok(Step::Done);
                }
                // Changes the snapshot already holds are skipped.
                while let Some((s, table, event)) = self.staged.pop_front() {
                    if s > w {
                        self.live(s, &table, &event)?;
                    }
                }
            }
            StoreOp::RemoveSub(_) => {}
        }
        self.out.flush()?;
        Ok(Step::Continue)
    }

    fn stage(&mut self, sync_id: SyncId, table: String, event: RowEvent) -> Result<()> {
        if self.staged.len() >= Self::MAX_STAGED {
            bail!(
                "more than {} live changes arrived while the snapshot was read: \
                 subscribe to fewer rows or retry",
                Self::MAX_STAGED
            );
        }
        self.staged.push_back((sync_id, table, event));
        Ok(())
    }

    fn snapshot_row(&mut self, event: &RowEvent) -> Result<()> {
        let RowEvent::Insert { key, row } = event else {
            return Ok(());
        };
        let line = serde_json::json!({
            "op": "insert", "table": self.table, "key": key.to_json(),
            "row": row_json(&self.columns, row),
        });
        writeln!(self.out, "{line}")?;
        Ok(())
    }

    fn live(&mut self, sync_id: SyncId, table: &str, event: &RowEvent) -> Result<()> {
        let table = if table.is_empty() { &self.table } else { table };
        let line = event_json(table, &self.columns, event, sync_id);
        writeln!(self.out, "{line}")?;
        Ok(())
    }
}

/// A row as a JSON object keyed by column name.
pub fn row_json(columns: &[String], row: &[Value]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = columns
        .iter()
        .cloned()
        .zip(row.iter().map(Value::to_json))
        .collect();
    serde_json::Value::Object(map)
}

/// One live row event as a JSON line.
fn event_json(table: &str, columns: &[String], event: &RowEvent, sync_id: SyncId) -> String {
    let value = match event {
        RowEvent::Insert { key, row } | RowEvent::Update { key, row } => {
            let op = if matches!(event, RowEvent::Insert { .. }) {
                "insert"
            } else {
                "update"
            };
            serde_json::json!({
                "op": op, "table": table, "key": key.to_json(),
                "row": row_json(columns, row), "sync_id": sync_id.0,
            })
        }
        RowEvent::Delete { key, reason } => serde_json::json!({
            "op": "delete", "table": table, "key": key.to_json(),
            "reason": reason.as_str(), "sync_id": sync_id.0,
        }),
    };
    value.to_string()
}

/// Runs `sluice sub` on an open connection: exit code 2 when the subscription is refused.
pub async fn run(mut conn: Connection, sql: &str, follow: bool) -> Result<ExitCode> {
    let mut core = SyncCore::new();
    let mut printer = Printer::new(std::io::stdout(), follow);
    let progress = indicatif::ProgressBar::with_draw_target(
        None,
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    let mut actions = core.start(SUB, sql, Params::new(), None, false);
    loop {
        for action in actions {
            match action {
                Action::Send(msg) => conn.send(msg).await?,
                Action::Status(_, SubStatus::Bootstrapping { received, .. }) => {
                    progress.set_position(received)
                }
                Action::Status(_, SubStatus::Failed(message)) => {
                    progress.finish_and_clear();
                    eprintln!("error: {message}");
                    return Ok(ExitCode::from(2));
                }
                Action::Status(_, SubStatus::QuotaExceeded(exceeded)) => {
                    progress.finish_and_clear();
                    eprintln!("error: {exceeded}");
                    return Ok(ExitCode::from(2));
                }
                Action::Status(_, SubStatus::Ready { .. }) => progress.finish_and_clear(),
                Action::Status(..) => {}
                Action::Store(op) => {
                    if matches!(op, StoreOp::Join { .. }) {
                        progress.finish_and_clear();
                    }
                    if printer.store(op)? == Step::Done {
                        conn.close().await;
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
        }
        let Some(event) = conn.next_event().await else {
            bail!("connection closed");
        };
        actions = match event {
            Event::Control(ServerMessage::Subscribed { sub, estimate, .. }) => {
                progress.set_length(estimate);
                core.subscribed(sub, estimate);
                Vec::new()
            }
            Event::Control(ServerMessage::SubscribeFailed { sub, message }) => {
                core.failed(sub, SubStatus::Failed(message))
            }
            Event::Control(ServerMessage::QuotaExceeded { exceeded, .. }) => {
                core.failed(SUB, SubStatus::QuotaExceeded(exceeded))
            }
            Event::Control(ServerMessage::ResumeRefused { .. }) => bail!("resume refused"),
            Event::Control(_) => Vec::new(),
            Event::Bootstrap(sub, frame) => {
                if let BootstrapFrame::Progress { sent } = frame {
                    progress.set_position(sent);
                }
                core.bootstrap(sub, frame)
            }
            Event::Live(txn) => core.live(txn, Vec::new()),
            Event::Joined { sub, sync_id } => core.joined(sub, sync_id),
            Event::Resized { .. } => Vec::new(),
            Event::Closed(reason) => bail!("connection closed: {reason}"),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice::wire::{LiveTxn, MoveOut};

    fn txn(sync_id: u64, key: i64) -> LiveTxn {
        let event = RowEvent::Update {
            key: Value::Integer(key),
            row: vec![Value::Integer(key), Value::Text(format!("v{sync_id}"))],
        };
        LiveTxn {
            sync_id: SyncId(sync_id),
            origin: None,
            events: vec![(SUB, "items".to_string(), event)],
        }
    }

    /// One event fed to the core.
    type Feed = Box<dyn Fn(&mut SyncCore) -> Vec<Action>>;

    /// Drives a core and a printer through `steps`, as `run` does, and returns the lines.
    fn drive(follow: bool, steps: Vec<Feed>) -> Vec<String> {
        let mut core = SyncCore::new();
        let mut out = Vec::new();
        let mut printer = Printer::new(&mut out, follow);
        let mut actions = core.start(SUB, "SELECT * FROM items", Params::new(), None, false);
        'steps: for step in steps.iter().map(Some).chain([None]) {
            for action in actions {
                if let Action::Store(op) = action {
                    if printer.store(op).unwrap() == Step::Done {
                        break 'steps;
                    }
                }
            }
            let Some(step) = step else { break };
            actions = step(&mut core);
        }
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn begin() -> BootstrapFrame {
        BootstrapFrame::Begin {
            sub: SUB,
            table: "items".into(),
            columns: vec!["id".into(), "name".into()],
            estimate: 1,
            access: sluice::query::ShapeId(7),
        }
    }

    fn row(key: i64) -> BootstrapFrame {
        BootstrapFrame::Row {
            key: Value::Integer(key),
            row: vec![Value::Integer(key), Value::Text("snap".into())],
        }
    }

    #[test]
    fn live_changes_before_the_seam_print_after_snapshot_end_past_the_snapshot_only() {
        let lines = drive(
            true,
            vec![
                Box::new(|c| c.live(txn(4, 1), Vec::new())),
                Box::new(|c| c.bootstrap(SUB, begin())),
                Box::new(|c| c.bootstrap(SUB, row(1))),
                Box::new(|c| c.live(txn(6, 1), Vec::new())),
                // The seam marker may come before the snapshot's end.
                Box::new(|c| c.joined(SUB, SyncId(5))),
                Box::new(|c| c.bootstrap(SUB, BootstrapFrame::End { sync_id: SyncId(5) })),
                Box::new(|c| c.live(txn(7, 2), Vec::new())),
                Box::new(|c| {
                    let mut t = txn(8, 1);
                    let key = Value::Integer(1);
                    let reason = MoveOut::Deleted;
                    t.events[0].2 = RowEvent::Delete { key, reason };
                    c.live(t, Vec::new())
                }),
            ],
        );
        assert_eq!(
            lines,
            [
                r#"{"key":1,"op":"insert","row":{"id":1,"name":"snap"},"table":"items"}"#,
                r#"{"op":"snapshot_end","sync_id":5}"#,
                r#"{"key":1,"op":"update","row":{"id":1,"name":"v6"},"sync_id":6,"table":"items"}"#,
                r#"{"key":2,"op":"update","row":{"id":2,"name":"v7"},"sync_id":7,"table":"items"}"#,
                r#"{"key":1,"op":"delete","reason":"deleted","sync_id":8,"table":"items"}"#,
            ]
        );
    }

    #[test]
    fn without_follow_it_stops_at_snapshot_end() {
        let lines = drive(
            false,
            vec![
                Box::new(|c| c.bootstrap(SUB, begin())),
                Box::new(|c| c.bootstrap(SUB, row(3))),
                Box::new(|c| c.live(txn(9, 3), Vec::new())),
                Box::new(|c| c.bootstrap(SUB, BootstrapFrame::End { sync_id: SyncId(8) })),
                Box::new(|c| c.joined(SUB, SyncId(8))),
                Box::new(|c| c.live(txn(10, 3), Vec::new())),
            ],
        );
        assert_eq!(
            lines,
            [
                r#"{"key":3,"op":"insert","row":{"id":3,"name":"snap"},"table":"items"}"#,
                r#"{"op":"snapshot_end","sync_id":8}"#,
            ]
        );
    }

    #[test]
    fn staged_live_changes_are_bounded() {
        let mut out = Vec::new();
        let mut printer = Printer::new(&mut out, true);
        for i in 0..Printer::<Vec<u8>>::MAX_STAGED {
            let event = RowEvent::Delete {
                key: Value::Integer(i as i64),
                reason: MoveOut::Deleted,
            };
            printer.stage(SyncId(1), "items".into(), event).unwrap();
        }
        let event = RowEvent::Delete {
            key: Value::Integer(-1),
            reason: MoveOut::Deleted,
        };
        let err = printer.stage(SyncId(2), "items".into(), event).unwrap_err();
        assert!(
            err.to_string().contains("while the snapshot was read"),
            "{err}"
        );
        assert_eq!(printer.staged.len(), Printer::<Vec<u8>>::MAX_STAGED);
    }
}
