//! A subscription's bootstrap stream staged in the local store, and the join of staged
//! subscriptions to the consistent cut.

use super::*;

impl Online<'_> {
    pub(super) fn bootstrap(&mut self, sub: SubId, frame: BootstrapFrame) -> Result<(), SyncError> {
        let Some(state) = self.staged.get_mut(&sub) else {
            return Ok(());
        };
        match frame {
            BootstrapFrame::Begin {
                table,
                columns,
                estimate,
                access,
                ..
            } => {
                let mut local = self.shared.local();
                local.describe_sub(sub, &table, &columns)?;
                local.set_sub_access(sub, access)?;
                drop(local);
                state.table = Some(table);
                state.estimate = estimate.max(state.estimate);
            }
            BootstrapFrame::Row { key, row } => {
                let table = state.table.clone().unwrap_or_default();
                self.rows
                    .push((sub, None, table, RowEvent::Insert { key, row }));
                state.received += 1;
                if state.received % crate::wire::PROGRESS_EVERY == 0 {
                    let status = SubStatus::Bootstrapping {
                        received: state.received,
                        estimate: state.estimate,
                    };
                    self.shared.set_sub_status(sub, status);
                }
            }
            BootstrapFrame::Replay { sync_id, event } => {
                let table = state.table.clone().unwrap_or_default();
                self.shared
                    .local()
                    .stage(sub, Some(sync_id), &table, &event)?;
                state.received += 1;
            }
            BootstrapFrame::Progress { .. } => {}
            BootstrapFrame::End { sync_id } => state.end = Some(sync_id),
        }
        if self.rows.len() >= STAGE_BATCH {
            self.flush_rows()?;
        }
        Ok(())
    }

    /// Joins every staged subscription whose snapshot ended and whose seam marker
    /// arrived; the resume group joins only all together.
    pub(super) async fn try_join(&mut self) -> Result<(), SyncError> {
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
                self.update_state();
                return Ok(());
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
            self.update_state();
            return Ok(());
        }
        let mut batch = Vec::new();
        let mut cut = {
            let local = self.shared.local();
            local.cut()?
        };
        cut = cut.max(self.held_cut);
        for id in &joining {
            let s = self
                .staged
                .remove(id)
                .expect("joining a staged subscription");
            let w = s.joined_at.expect("ready");
            cut = cut.max(w);
            batch.push((*id, s.kind, w));
        }
        for id in &joining {
            // A resize asked while it was bootstrapping (the server resizes ready ones).
            if let Some(limit) = self.resizes.remove(id) {
                self.conn
                    .send(ClientMessage::Resize { sub: *id, limit })
                    .await?;
            }
        }
        let started = std::time::Instant::now();
        let applied = self.shared.local().join(&batch, cut)?;
        debug!(
            subs = batch.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "joined"
        );
        self.held_cut = SyncId::ZERO;
        let subs: BTreeSet<SubId> = joining.iter().copied().collect();
        self.shared.notify(
            Source::Joined {
                subs: subs.iter().copied().collect(),
            },
            applied,
        );
        for (id, _, w) in batch {
            self.shared
                .set_sub_status(id, SubStatus::Ready { sync_id: w });
        }
        self.update_state();
        Ok(())
    }
}
