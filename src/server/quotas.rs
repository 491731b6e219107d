//! Admission and quotas: every limit that protects one client (or user) from the others,
//! as one documented struct an operator sets from a config file or the command line, and
//! the per-user ledger that enforces the per-user ones.
//!
//! A quota either refuses (the request is answered `quota_exceeded` naming the quota;
//! the session and everything else go on) or queues (concurrency limits: the request
//! waits for a place, holding back only the client that sent it).
//!
//! Server-internal apart from the configuration types; synchronous, no IO.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::vocab::{Quota, QuotaExceeded};

/// Every admission limit and quota of a server. Field names are the names a config file
/// and `sluice serve --quota NAME=VALUE` use. Per-user quotas apply to sessions with a
/// verified user (`sub`); sessions without one (`--no-auth`) have only the per-session
/// and total limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// Connections served at once; past it a connection is refused at the handshake
    /// (`quota_exceeded: connections`). Each session costs its queues (up to
    /// [`super::SESSION_QUEUE_CAPACITY`] live transactions) and a few tasks, about 64 KB
    /// idle. Default 10,000.
    pub connections: usize,
    /// Connections one user holds at once; one more is refused at the handshake. Default
    /// 64.
    pub connections_per_user: usize,
    /// Subscriptions one session holds at once. Each costs a shape in the matcher
    /// (shared with identical ones, ~0.5 KB) and a bootstrap while it starts. Default
    /// 1,000.
    pub subscriptions_per_session: usize,
    /// Subscriptions one user holds at once over all of their sessions. Default 10,000.
    pub subscriptions_per_user: usize,
    /// Subscriptions one user holds on residual shapes (no index serves them: every
    /// change of their table evaluates each). Default 100.
    pub residual_shapes_per_user: usize,
    /// Distinct residual shapes over the whole server; each adds a predicate evaluation
    /// to every change of its table. Default 1,000.
    pub residual_shapes: usize,
    /// Rows one session keeps pinned (batch loader). Each pinned key costs its value in
    /// the session's key set and in its key-set shape. Default 100,000.
    pub pins_per_session: usize,
    /// Fetches one session runs at once; more wait (holding back only that client).
    /// Each holds at most [`crate::store::MAX_FETCH_BYTES`] of rows. Default 8.
    pub fetches_per_session: usize,
    /// Fetches running at once over the whole server; each holds a blocking thread
    /// while it reads. Default 64.
    pub fetches: usize,
    /// Bootstraps (snapshots and resumes) one session runs at once; its further
    /// subscriptions wait their turn. Default 4.
    pub bootstraps_per_session: usize,
    /// Bootstraps running at once over the whole server: each holds a blocking thread
    /// and a SQLite read transaction (which keeps the WAL from being checkpointed past
    /// it), so the rest queue instead of starving commits and fetches. Default 64.
    pub bootstraps: usize,
    /// Writes one session has waiting for the committer, its share of the shared write
    /// queue; more wait before the session reads its next request. Default 256.
    pub writes_per_session: usize,
    /// Milliseconds a bootstrap or fetch answer may make no progress (the client reads
    /// none of it) before it is ended, its read transaction released, and the session
    /// closed as lagging (the client resumes later). Default 30,000.
    pub stall_timeout_ms: u64,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            connections: 10_000,
            connections_per_user: 64,
            subscriptions_per_session: 1_000,
            subscriptions_per_user: 10_000,
            residual_shapes_per_user: 100,
            residual_shapes: 1_000,
            pins_per_session: 100_000,
            fetches_per_session: 8,
            fetches: 64,
            bootstraps_per_session: 4,
            bootstraps: 64,
            writes_per_session: 256,
            stall_timeout_ms: 30_000,
        }
    }
}

impl Quotas {
    /// [`Quotas::stall_timeout_ms`] as a duration.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms)
    }

    /// The value of a refusing quota.
    pub fn limit(&self, quota: Quota) -> usize {
        match quota {
            Quota::Connections => self.connections,
            Quota::ConnectionsPerUser => self.connections_per_user,
            Quota::SubscriptionsPerSession => self.subscriptions_per_session,
            Quota::SubscriptionsPerUser => self.subscriptions_per_user,
            Quota::ResidualShapesPerUser => self.residual_shapes_per_user,
            Quota::ResidualShapes => self.residual_shapes,
            Quota::PinsPerSession => self.pins_per_session,
        }
    }

    /// Sets one field by its name from text (`subscriptions_per_user`, `"500"`), as
    /// `sluice serve --quota NAME=VALUE` does. Fails with a message naming the field when
    /// there is no such field or the value is not a whole number.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let number: u64 = value
            .trim()
            .parse()
            .map_err(|_| format!("quota `{name}`: `{value}` is not a whole number"))?;
        let mut fields = serde_json::to_value(&*self).map_err(|e| e.to_string())?;
        let map = fields.as_object_mut().ok_or("quotas are not a map")?;
        if !map.contains_key(name) {
            let known: Vec<&str> = map.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown quota `{name}` (known: {})",
                known.join(", ")
            ));
        }
        map.insert(name.to_string(), number.into());
        *self = serde_json::from_value(fields).map_err(|e| format!("quota `{name}`: {e}"))?;
        Ok(())
    }

    /// The refusal of `quota` when `held` already reaches it.
    fn check(&self, quota: Quota, held: usize) -> Result<(), QuotaExceeded> {
        let limit = self.limit(quota);
        if held >= limit {
            Err(QuotaExceeded::new(quota, limit))
        } else {
            Ok(())
        }
    }
}

/// What one user holds at once, over all of their sessions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UserUsage {
    /// Sessions.
    pub connections: usize,
    /// Subscriptions.
    pub subscriptions: usize,
    /// Of those, subscriptions on residual shapes.
    pub residual: usize,
}

/// The per-user counts the per-user quotas are checked against. Taking and releasing
/// are atomic (one lock), so two sessions of a user racing cannot both pass a limit.
#[derive(Debug, Default)]
pub struct Ledger {
    /// std Mutex: held for a map lookup and a few additions, never across an await.
    users: Mutex<HashMap<String, UserUsage>>,
}

impl Ledger {
    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserUsage>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a connection place for `user`, or says which quota refuses it.
    pub fn take_connection(&self, quotas: &Quotas, user: &str) -> Result<(), QuotaExceeded> {
        let mut users = self.users();
        let usage = users.entry(user.to_string()).or_default();
        quotas.check(Quota::ConnectionsPerUser, usage.connections)?;
        usage.connections += 1;
        Ok(())
    }

    /// Gives back a place [`Ledger::take_connection`] took.
    pub fn release_connection(&self, user: &str) {
        self.change(user, |u| u.connections = u.connections.saturating_sub(1));
    }

    /// Takes a subscription place for `user` (a residual one when `residual`), or says
    /// which quota refuses it.
    pub fn take_subscription(
        &self,
        quotas: &Quotas,
        user: &str,
        residual: bool,
    ) -> Result<(), QuotaExceeded> {
        let mut users = self.users();
        let usage = users.entry(user.to_string()).or_default();
        quotas.check(Quota::SubscriptionsPerUser, usage.subscriptions)?;
        if residual {
            quotas.check(Quota::ResidualShapesPerUser, usage.residual)?;
            usage.residual += 1;
        }
        usage.subscriptions += 1;
        Ok(())
    }

    /// Gives back a place [`Ledger::take_subscription`] took.
    pub fn release_subscription(&self, user: &str, residual: bool) {
        self.change(user, |u| {
            u.subscriptions = u.subscriptions.saturating_sub(1);
            if residual {
                u.residual = u.residual.saturating_sub(1);
            }
        });
    }

    /// What `user` holds now.
    pub fn usage(&self, user: &str) -> UserUsage {
        self.users().get(user).copied().unwrap_or_default()
    }

    /// Applies `change` to `user`'s counts, and forgets a user who holds nothing.
    fn change(&self, user: &str, change: impl FnOnce(&mut UserUsage)) {
        let mut users = self.users();
        if let Some(usage) = users.get_mut(user) {
            change(usage);
            if *usage == UserUsage::default() {
                users.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_is_set_by_name_and_unknown_names_are_refused() {
        let mut quotas = Quotas::default();
        quotas.set("subscriptions_per_user", "5").unwrap();
        assert_eq!(quotas.subscriptions_per_user, 5);
        assert_eq!(quotas.limit(Quota::SubscriptionsPerUser), 5);
        let err = quotas.set("subscriptions", "5").unwrap_err();
        assert!(err.contains("unknown quota `subscriptions`"), "{err}");
        let err = quotas.set("pins_per_session", "many").unwrap_err();
        assert!(err.contains("not a whole number"), "{err}");
        for quota in Quota::ALL {
            quotas.set(quota.as_str(), "7").unwrap();
            assert_eq!(quotas.limit(quota), 7);
        }
    }

    #[test]
    fn a_config_names_only_what_it_changes() {
        let quotas: Quotas = serde_json::from_str(r#"{"residual_shapes": 3}"#).unwrap();
        assert_eq!(quotas.residual_shapes, 3);
        assert_eq!(quotas.connections, Quotas::default().connections);
        assert!(serde_json::from_str::<Quotas>(r#"{"nope": 1}"#).is_err());
    }

    #[test]
    fn the_ledger_refuses_past_a_users_limit_and_frees_on_release() {
        let quotas = Quotas {
            subscriptions_per_user: 2,
            residual_shapes_per_user: 1,
            ..Quotas::default()
        };
        let ledger = Ledger::default();
        ledger.take_subscription(&quotas, "a", true).unwrap();
        let refused = ledger.take_subscription(&quotas, "a", true).unwrap_err();
        assert_eq!(refused.quota, Quota::ResidualShapesPerUser);
        ledger.take_subscription(&quotas, "a", false).unwrap();
        let refused = ledger.take_subscription(&quotas, "a", false).unwrap_err();
        assert_eq!(refused.quota, Quota::SubscriptionsPerUser);
        ledger.take_subscription(&quotas, "b", true).unwrap();
        ledger.release_subscription("a", true);
        ledger.release_subscription("a", false);
        assert_eq!(ledger.usage("a"), UserUsage::default());
        assert_eq!(ledger.usage("b").residual, 1);
    }
}
