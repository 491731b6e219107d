//! A session's pinned rows: the keys the client's batch loader holds, kept live.
//!
//! Per table, the session's pinned keys are entered one by one in the registry's pin
//! index ([`super::registry::Registry::pin`]), beside one shape: the table under the
//! caller's read rule, compiled like a subscription `SELECT * FROM table` (so a pin never
//! reveals a row the caller may not read). Their events go out under the reserved
//! subscription id [`crate::wire::PIN_SUB`]. A pin or unpin costs its own keys, under one registry
//! lock, so no change falls in between; the shape is compiled once per table.
//!
//! Server-internal: depends on auth, query, schema and the matcher registry; the client
//! must not depend on it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::Shared;
use crate::auth::Policy;
use crate::query::{Params, Shape};
use crate::schema::quote_ident;
use crate::store::KeyOrd;
use crate::value::Value;
use crate::vocab::SessionId;

/// Why a pin request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// The schema has no such table.
    #[error("unknown table `{0}`")]
    UnknownTable(String),
    /// The pin would take the session past [`super::Quotas::pins_per_session`].
    #[error(transparent)]
    Quota(crate::vocab::QuotaExceeded),
    /// The key-set subscription was refused: the caller's read rule does not allow the
    /// table (or the generated subscription did not compile).
    #[error("{0}")]
    Refused(String),
}

/// What a table's pin set became.
#[derive(Debug, Clone, PartialEq)]
pub struct PinChange {
    /// The table, as the schema names it.
    pub table: String,
    /// Columns of the rows live events carry (the readable ones).
    pub columns: Vec<String>,
    /// Keys of the table now pinned.
    pub pinned: u64,
}

#[derive(Default)]
struct PinSet {
    keys: BTreeSet<KeyOrd>,
    /// The table under the caller's read rule, once a key is pinned.
    shape: Option<Arc<Shape>>,
}

/// Every pinned key set of one session.
#[derive(Default)]
pub struct Pins {
    tables: HashMap<String, PinSet>,
    total: usize,
}

impl Pins {
    /// Adds (`pin`) or removes keys of `table` from the rows the session keeps live. A
    /// pin past [`super::Quotas::pins_per_session`] pins none of its keys.
    pub fn change(
        &mut self,
        shared: &Shared,
        policy: &Policy,
        session: SessionId,
        table: &str,
        keys: Vec<Value>,
        pin: bool,
    ) -> Result<PinChange, PinError> {
        let t = shared
            .schema
            .table(table)
            .cloned()
            .ok_or_else(|| PinError::UnknownTable(table.to_string()))?;
        let affinity = t.pk_column().affinity;
        let set = self.tables.entry(t.name.clone()).or_default();
        // The keys that change the set, each once.
        let mut changed = BTreeSet::new();
        for key in keys {
            let key = KeyOrd(affinity.apply_for_comparison(key));
            if set.keys.contains(&key) != pin {
                changed.insert(key);
            }
        }
        let total_after = if pin {
            self.total + changed.len()
        } else {
            self.total - changed.len()
        };
        let limit = shared.quotas.pins_per_session;
        if pin && total_after > limit {
            let quota = crate::vocab::Quota::PinsPerSession;
            return Err(PinError::Quota(crate::vocab::QuotaExceeded::new(
                quota, limit,
            )));
        }
        if pin && set.shape.is_none() && !changed.is_empty() {
            let sql = format!("SELECT * FROM {}", quote_ident(&t.name));
            match policy.pinned(&shared.schema, &sql, &Params::new()) {
                Ok(effective) => set.shape = Some(Arc::new(effective.shape)),
                Err(e) => {
                    self.tables.remove(&t.name);
                    return Err(PinError::Refused(e.to_string()));
                }
            }
        }
        let changed: Vec<KeyOrd> = changed.into_iter().collect();
        {
            let mut registry = shared.registry.lock().expect("registry lock");
            match (&set.shape, pin) {
                (Some(shape), true) => registry.pin(session, &t.name, shape.clone(), &changed),
                (Some(_), false) => {
                    let last = set.keys.len() == changed.len();
                    registry.unpin(session, &t.name, &changed, last);
                }
                (None, _) => {}
            }
        }
        for key in changed {
            if pin {
                set.keys.insert(key);
            } else {
                set.keys.remove(&key);
            }
        }
        self.total = total_after;
        let pinned = set.keys.len() as u64;
        let columns: Vec<String> = match (&set.shape, pinned) {
            (Some(shape), 1..) => shape.column_names().iter().map(|c| c.to_string()).collect(),
            _ => Vec::new(),
        };
        if set.keys.is_empty() {
            self.tables.remove(&t.name);
        }
        Ok(PinChange {
            table: t.name.clone(),
            columns,
            pinned,
        })
    }

    /// Keys pinned now, over all tables.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Drops every pinned key (the session ends).
    pub fn clear(&mut self, shared: &Shared, session: SessionId) {
        let mut registry = shared.registry.lock().expect("registry lock");
        for (table, set) in self.tables.drain() {
            let keys: Vec<KeyOrd> = set.keys.into_iter().collect();
            registry.unpin(session, &table, &keys, true);
        }
        self.total = 0;
    }
}
