//! The JSON the inspector page polls: the server's numbers now (counters for the page to
//! turn into rates), the sessions, the costliest shapes; and `sluice check` on a string.
//!
//! Reads only; the registry lock is held while the shapes are listed.

use serde_json::{json, Value as Json};

use super::super::Shared;
use crate::matcher::Matcher;

/// Sessions listed at most (those with the longest queues first).
pub const MAX_LISTED_SESSIONS: usize = 500;
/// Shapes listed at most, costliest first.
pub const MAX_LISTED_SHAPES: usize = 20;
/// Characters of a shape's text shown.
const SHAPE_TEXT_CHARS: usize = 300;

/// The state the inspector shows.
pub fn state(shared: &Shared) -> Json {
    let mut sessions: Vec<_> = shared.sessions.iter().map(|s| s.value().info()).collect();
    let (subscriptions, pins) = sessions
        .iter()
        .fold((0, 0), |(s, p), i| (s + i.subscriptions, p + i.pins));
    let queued: usize = sessions.iter().map(|s| s.queued).sum();
    let session_count = sessions.len();
    sessions.sort_by(|a, b| {
        b.queued
            .cmp(&a.queued)
            .then(b.bytes_sent.cmp(&a.bytes_sent))
    });
    sessions.truncate(MAX_LISTED_SESSIONS);
    // Cost: a residual shape is evaluated on every change of its table; every shape
    // costs a delivery per subscriber for each change it matches.
    let (mut shapes, total, residual, windows) = {
        let registry = shared.registry.lock().expect("registry lock");
        let shapes: Vec<(bool, usize, String, String)> = registry
            .shapes()
            .map(|(shape, subscribers)| {
                (
                    Matcher::is_residual(shape),
                    subscribers,
                    shape.table().name.clone(),
                    crate::query::truncate(shape.text(), SHAPE_TEXT_CHARS).into_owned(),
                )
            })
            .collect();
        (
            shapes,
            registry.shape_count(),
            registry.residual_count(),
            registry.window_count(),
        )
    };
    shapes.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.3.cmp(&b.3)));
    shapes.truncate(MAX_LISTED_SHAPES);
    let top: Vec<Json> = shapes
        .into_iter()
        .map(|(residual, subscribers, table, text)| {
            json!({
                "kind": if residual { "residual" } else { "indexed" },
                "subscribers": subscribers,
                "table": table,
                "text": text,
            })
        })
        .collect();
    let q = &shared.quotas;
    json!({
        "head": shared.store.head().0,
        "horizon": shared.store.horizon().0,
        "session_count": session_count,
        "subscriptions": subscriptions,
        "pins": pins,
        "queued": queued,
        "shapes": {
            "indexed": total.saturating_sub(residual),
            "residual": residual,
            "window": windows,
        },
        "bootstraps_running": q.bootstraps - shared.bootstraps.available_permits(),
        "fetches_running": q.fetches - shared.fetches.available_permits(),
        "totals": shared.metrics.totals(),
        "sessions": sessions,
        "top_shapes": top,
    })
}

/// `sluice check` on `sql`: `{"ok":true,"normalized":...}` or
/// `{"ok":false,"error":...,"line":L,"column":C}`.
pub fn check(shared: &Shared, sql: &str) -> Json {
    match crate::query::check(&shared.schema, sql) {
        Ok(normalized) => json!({"ok": true, "normalized": normalized}),
        Err(e) => json!({
            "ok": false,
            "error": e.to_string(),
            "message": e.message,
            "line": e.pos.line,
            "column": e.pos.column,
        }),
    }
}
