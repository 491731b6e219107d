//! Quotas by name: which of the server's per-user, per-session or total limits refused a
//! request, as a code a client can branch on and a person can read.
//!
//! Pure data with serde: the server decides, the wire carries the refusal, the client
//! surfaces it. The limits' values and defaults live with the server's configuration.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A limit that refuses requests past it (the configuration field of the same name holds
/// its value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Quota {
    /// Connections the server serves at once.
    Connections,
    /// Connections one user holds at once.
    ConnectionsPerUser,
    /// Subscriptions one session holds at once.
    SubscriptionsPerSession,
    /// Subscriptions one user holds at once, over all of their sessions.
    SubscriptionsPerUser,
    /// Subscriptions of one user on shapes no index serves (each is evaluated on every
    /// change of its table).
    ResidualShapesPerUser,
    /// Distinct shapes no index serves, over the whole server.
    ResidualShapes,
    /// Rows one session keeps pinned (the batch loader's key sets).
    PinsPerSession,
}

impl Quota {
    /// Every quota, in declaration order.
    pub const ALL: [Quota; 7] = [
        Quota::Connections,
        Quota::ConnectionsPerUser,
        Quota::SubscriptionsPerSession,
        Quota::SubscriptionsPerUser,
        Quota::ResidualShapesPerUser,
        Quota::ResidualShapes,
        Quota::PinsPerSession,
    ];

    /// The snake_case name: the configuration field and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Quota::Connections => "connections",
            Quota::ConnectionsPerUser => "connections_per_user",
            Quota::SubscriptionsPerSession => "subscriptions_per_session",
            Quota::SubscriptionsPerUser => "subscriptions_per_user",
            Quota::ResidualShapesPerUser => "residual_shapes_per_user",
            Quota::ResidualShapes => "residual_shapes",
            Quota::PinsPerSession => "pins_per_session",
        }
    }

    /// The inverse of [`Quota::as_str`].
    pub fn parse(name: &str) -> Option<Quota> {
        Quota::ALL.into_iter().find(|q| q.as_str() == name)
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request refused by a quota: which one, and its value. Displays as
/// `quota_exceeded: subscriptions_per_user (limit 1000)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("quota_exceeded: {quota} (limit {limit})")]
pub struct QuotaExceeded {
    /// The quota that refused the request.
    pub quota: Quota,
    /// Its configured value.
    pub limit: u64,
}

impl QuotaExceeded {
    /// A refusal by `quota`, whose value is `limit`.
    pub fn new(quota: Quota, limit: usize) -> QuotaExceeded {
        QuotaExceeded {
            quota,
            limit: limit as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_the_refusal_names_its_quota() {
        for quota in Quota::ALL {
            assert_eq!(Quota::parse(quota.as_str()), Some(quota));
        }
        let refusal = QuotaExceeded::new(Quota::SubscriptionsPerUser, 5);
        assert_eq!(
            refusal.to_string(),
            "quota_exceeded: subscriptions_per_user (limit 5)"
        );
    }
}
