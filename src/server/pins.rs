//! A session's pinned rows: the keys the client's batch loader holds, kept live.
//!
//! Per table, the pinned keys form one key-set shape, `pk IN (keys)` ANDed with the
//! caller's read rule exactly like a subscription (so a pin never reveals a row the caller
//! may not read), registered in the matcher under the reserved subscription id
//! [`PIN_SUB`]. Whenever the set changes the shape is re-registered, old and new swapped
//! under one registry lock so no change falls in between. Re-registering costs a compile
//! of the key-set shape, linear in the table's pinned keys, on every pin or unpin.
//!
//! Server-internal: depends on auth, query, schema and the matcher registry; the client
//! must not depend on it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::Shared;
use crate::auth::Policy;
use crate::query::{Params, ShapeId};
use crate::schema::quote_ident;
use crate::store::KeyOrd;
use crate::value::Value;
use crate::vocab::SessionId;
use crate::wire::PIN_SUB;

/// Name of the list parameter the key-set shape is compiled with.
const KEYS_PARAM: &str = "pinned_keys";

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
    shape: Option<ShapeId>,
}

/// Every pinned key set of one session.
#[derive(Default)]
pub struct Pins {
    tables: HashMap<String, PinSet>,
    total: usize,
}

impl Pins {
    /// Adds (`pin`) or removes keys of `table`, then re-registers its key-set shape. A pin
    /// past [`super::Quotas::pins_per_session`] pins none of its keys.
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
        let mut keys_after = set.keys.clone();
        for key in keys {
            let key = KeyOrd(affinity.apply_for_comparison(key));
            if pin {
                keys_after.insert(key);
            } else {
                keys_after.remove(&key);
            }
        }
        let total_after = self.total - set.keys.len() + keys_after.len();
        let limit = shared.quotas.pins_per_session;
        if pin && total_after > limit {
            let quota = crate::vocab::Quota::PinsPerSession;
            return Err(PinError::Quota(crate::vocab::QuotaExceeded::new(
                quota, limit,
            )));
        }
        let columns: Vec<String>;
        let registered = if keys_after.is_empty() {
            columns = Vec::new();
            None
        } else {
            let sql = format!(
                "SELECT * FROM {} WHERE {} IN :{KEYS_PARAM}",
                quote_ident(&t.name),
                quote_ident(&t.pk_column().name)
            );
            let values = keys_after.iter().map(|k| k.0.clone()).collect();
            let params = Params::new().list(KEYS_PARAM, values);
            let effective = policy
                .pinned(&shared.schema, &sql, &params)
                .map_err(|e| PinError::Refused(e.to_string()))?;
            columns = effective
                .shape
                .column_names()
                .iter()
                .map(|c| c.to_string())
                .collect();
            Some(effective)
        };
        {
            let mut registry = shared.registry.lock().expect("registry lock");
            if let Some(old) = set.shape.take() {
                registry.unsubscribe(old, session, PIN_SUB);
            }
            if let Some(effective) = registered {
                set.shape = Some(registry.subscribe(
                    Arc::new(effective.shape),
                    effective.base,
                    session,
                    PIN_SUB,
                ));
            }
        }
        set.keys = keys_after;
        self.total = total_after;
        let pinned = set.keys.len() as u64;
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

    /// Unregisters every key-set shape (the session ends).
    pub fn clear(&mut self, shared: &Shared, session: SessionId) {
        let mut registry = shared.registry.lock().expect("registry lock");
        for (_, set) in self.tables.drain() {
            if let Some(shape) = set.shape {
                registry.unsubscribe(shape, session, PIN_SUB);
            }
        }
        self.total = 0;
    }
}
