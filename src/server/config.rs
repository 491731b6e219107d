//! The server's operator configuration as one serde document: what `sluice serve
//! --config FILE` reads (JSON), with every section and field optional (defaults apply).
//!
//! Server-internal apart from the types; reads the file and nothing else.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Quotas;

/// How long the outcome of a client transaction (its idempotency record) is kept. A
/// client that sends a transaction again, e.g. after a lost answer, gets its first
/// outcome back for as long as the record is kept: at least `max_age_secs` after the
/// first answer, unless `max_records` newer outcomes were recorded since. Past that, a
/// resend is rejected `expired` (it may have been applied; it is not applied again).
/// Records are pruned when the change log is compacted ([`super::Retention::interval`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Idempotency {
    /// Seconds an outcome is kept at least. Default 604,800 (7 days).
    pub max_age_secs: u64,
    /// Outcomes kept at most, the oldest forgotten first; each costs about 100 bytes of
    /// database. Default 1,000,000.
    pub max_records: u64,
}

impl Default for Idempotency {
    fn default() -> Idempotency {
        Idempotency {
            max_age_secs: 7 * 24 * 3600,
            max_records: 1_000_000,
        }
    }
}

impl Idempotency {
    /// [`Idempotency::max_age_secs`] as a duration.
    pub fn max_age(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.max_age_secs)
    }
}

/// Everything an operator tunes without code, e.g.
/// `{"quotas": {"subscriptions_per_user": 500}, "idempotency": {"max_age_secs": 86400}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Admission limits and quotas ([`Quotas`]).
    pub quotas: Quotas,
    /// How long idempotency records are kept ([`Idempotency`]).
    pub idempotency: Idempotency,
}

impl ServerConfig {
    /// Reads a JSON configuration file. Fails with a message naming the file, and the
    /// line and column of the error (an unknown field is an error, so a typo is never
    /// silently ignored).
    pub fn load(path: &Path) -> Result<ServerConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_sets_what_it_names_and_refuses_typos() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.json");
        std::fs::write(&file, r#"{"quotas": {"pins_per_session": 10}}"#).unwrap();
        let config = ServerConfig::load(&file).unwrap();
        assert_eq!(config.quotas.pins_per_session, 10);
        assert_eq!(config.quotas.connections, Quotas::default().connections);
        std::fs::write(&file, "{\"quotas\": {\n\"pins\": 10}}").unwrap();
        let err = ServerConfig::load(&file).unwrap_err();
        assert!(
            err.contains("unknown field `pins`") && err.contains("line 2"),
            "{err}"
        );
    }
}
