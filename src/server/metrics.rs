//! The server's metrics, in Prometheus text format: counters and a latency histogram
//! updated where things happen (commits, fan-out, bootstraps, cut-offs, quota refusals),
//! and gauges read from the server's state when scraped (sessions, subscriptions, shapes
//! by kind, pins, log head and horizon, queue depths). Every name starts with `sluice_`.
//!
//! Server-internal: updating a metric is a few atomic operations and never blocks; only
//! [`render`] takes the registry lock (briefly) and walks the sessions.

use std::time::Duration;

use prometheus::{
    local::LocalHistogram, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::Shared;
use crate::vocab::Quota;

/// Why a session was cut off, as the `reason` label of `sluice_session_cutoffs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoff {
    /// Its live queue overflowed.
    Lagging,
    /// A bootstrap stream or fetch answer made no progress for the stall timeout.
    Stalled,
    /// A change it should hear of is too large for a live frame.
    Unsendable,
    /// A replicated transaction on a table it follows was too large to hold in memory:
    /// it resumes from the log.
    Oversized,
}

/// Why a resume was refused (the subscription bootstraps again), as the `reason` label
/// of `sluice_resume_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeRefusal {
    /// The cut is below the log's horizon, or inside a resynchronisation's gap.
    Compacted,
    /// The rows were read under another shape (claims or rules changed).
    Shape,
    /// A window is always sent afresh.
    Window,
    /// The cut is past what this server has delivered (its replica lags, or a database
    /// restored from a backup).
    Ahead,
    /// The replay would be larger than a fresh snapshot.
    TooMany,
}

impl ResumeRefusal {
    /// Every reason, in label order.
    pub const ALL: [ResumeRefusal; 5] = [
        ResumeRefusal::Compacted,
        ResumeRefusal::Shape,
        ResumeRefusal::Window,
        ResumeRefusal::Ahead,
        ResumeRefusal::TooMany,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResumeRefusal::Compacted => "compacted",
            ResumeRefusal::Shape => "shape",
            ResumeRefusal::Window => "window",
            ResumeRefusal::Ahead => "ahead",
            ResumeRefusal::TooMany => "too_many",
        }
    }
}

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    commits: IntCounter,
    rows_changed: IntCounter,
    deliveries: IntCounter,
    commit_to_send: Histogram,
    cutoffs: IntCounterVec,
    resume_refusals: IntCounterVec,
    bootstrap_rows: IntCounter,
    snapshot_reads: IntCounter,
    snapshot_cache_hits: IntCounter,
    refusals: IntCounterVec,
    sessions: IntGauge,
    subscriptions: IntGauge,
    shapes: IntGaugeVec,
    pins: IntGauge,
    log_head: IntGauge,
    log_horizon: IntGauge,
    queue_depth: IntGauge,
    queue_depth_max: IntGauge,
    bootstraps_running: IntGauge,
    fetches_running: IntGauge,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::with_opts(Opts::new(name, help)).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::with_opts(Opts::new(name, help)).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let commit_to_send = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_commit_to_send_seconds",
                "Time from a transaction's commit to its live frame written to a session",
            )
            .buckets(prometheus::exponential_buckets(0.000_1, 2.0, 16).expect("valid buckets")),
        )
        .expect("valid metric");
        r.register(Box::new(commit_to_send.clone()))
            .expect("unique metric");
        let cutoffs = IntCounterVec::new(
            Opts::new(
                "sluice_session_cutoffs_total",
                "Sessions closed because they fell behind (lagging) or stalled a stream",
            ),
            &["reason"],
        )
        .expect("valid metric");
        r.register(Box::new(cutoffs.clone()))
            .expect("unique metric");
        let refusals = IntCounterVec::new(
            Opts::new(
                "sluice_quota_refusals_total",
                "Requests refused by a quota, by quota",
            ),
            &["quota"],
        )
        .expect("valid metric");
        r.register(Box::new(refusals.clone()))
            .expect("unique metric");
        let shapes = IntGaugeVec::new(
            Opts::new(
                "sluice_shapes",
                "Distinct registered shapes, by kind (indexed, residual, window)",
            ),
            &["kind"],
        )
        .expect("valid metric");
        r.register(Box::new(shapes.clone())).expect("unique metric");
        let resume_refusals = IntCounterVec::new(
            Opts::new(
                "sluice_resume_refusals_total",
                "Resumes refused (the subscription bootstraps again), by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        r.register(Box::new(resume_refusals.clone()))
            .expect("unique metric");
        for why in ResumeRefusal::ALL {
            resume_refusals.with_label_values(&[why.as_str()]);
        }
        for reason in ["lagging", "stalled"] {
            cutoffs.with_label_values(&[reason]);
        }
        for quota in Quota::ALL {
            refusals.with_label_values(&[quota.as_str()]);
        }
        Metrics {
            commits: counter(&r, "sluice_commits_total", "Committed transactions"),
            rows_changed: counter(
                &r,
                "sluice_rows_changed_total",
                "Rows changed by committed transactions",
            ),
            deliveries: counter(
                &r,
                "sluice_fanout_deliveries_total",
                "Committed transactions queued to a session (one per session per transaction)",
            ),
            bootstrap_rows: counter(
                &r,
                "sluice_bootstrap_rows_total",
                "Rows and replayed changes sent by bootstraps",
            ),
            snapshot_reads: counter(
                &r,
                "sluice_snapshot_reads_total",
                "Snapshots read from the store (one per shape and head when cached)",
            ),
            snapshot_cache_hits: counter(
                &r,
                "sluice_snapshot_cache_hits_total",
                "Bootstraps served a snapshot another bootstrap read",
            ),
            sessions: gauge(&r, "sluice_sessions", "Connected sessions"),
            subscriptions: gauge(&r, "sluice_subscriptions", "Subscriptions of all sessions"),
            pins: gauge(&r, "sluice_pins", "Rows pinned by all sessions"),
            log_head: gauge(&r, "sluice_log_head", "Sync id of the last commit"),
            log_horizon: gauge(
                &r,
                "sluice_log_horizon",
                "Oldest sync id a client can resume from",
            ),
            queue_depth: gauge(
                &r,
                "sluice_session_queue_depth",
                "Live transactions queued for all sessions, not yet written",
            ),
            queue_depth_max: gauge(
                &r,
                "sluice_session_queue_depth_max",
                "The longest live queue of one session",
            ),
            bootstraps_running: gauge(&r, "sluice_bootstraps_running", "Bootstraps running"),
            fetches_running: gauge(&r, "sluice_fetches_running", "Fetches running"),
            registry: r,
            commit_to_send,
            cutoffs,
            resume_refusals,
            refusals,
            shapes,
        }
    }

    /// One transaction committed, changing `rows` rows.
    pub fn committed(&self, rows: usize) {
        self.commits.inc();
        self.rows_changed.inc_by(rows as u64);
    }

    /// A committed transaction queued to `sessions` sessions.
    pub fn delivered(&self, sessions: usize) {
        self.deliveries.inc_by(sessions as u64);
    }

    /// A tally of live frames written, for one session's writer: kept without atomics
    /// and added to `sluice_commit_to_send_seconds` at each [`Sent::flush`].
    pub fn sent(&self) -> Sent {
        Sent(self.commit_to_send.local())
    }

    /// A session was cut off.
    pub fn cut_off(&self, why: Cutoff) {
        let reason = match why {
            Cutoff::Lagging => "lagging",
            Cutoff::Stalled => "stalled",
            Cutoff::Unsendable => "unsendable",
            Cutoff::Oversized => "oversized",
        };
        self.cutoffs.with_label_values(&[reason]).inc();
    }

    /// A resume was refused.
    pub fn resume_refused(&self, why: ResumeRefusal) {
        self.resume_refusals
            .with_label_values(&[why.as_str()])
            .inc();
    }

    /// `rows` more rows went out on bootstrap streams.
    pub fn bootstrap_rows(&self, rows: u64) {
        self.bootstrap_rows.inc_by(rows);
    }

    /// A snapshot is being read from the store.
    pub fn snapshot_read(&self) {
        self.snapshot_reads.inc();
    }

    /// A bootstrap was served a snapshot another one read.
    pub fn snapshot_cache_hit(&self) {
        self.snapshot_cache_hits.inc();
    }

    /// A request was refused by `quota`.
    pub fn refused(&self, quota: Quota) {
        self.refusals.with_label_values(&[quota.as_str()]).inc();
    }
}

/// Commit-to-send latencies of one session's writer not yet in the shared histogram
/// ([`Metrics::sent`]).
pub struct Sent(LocalHistogram);

impl Sent {
    /// A live frame was written `latency` after its transaction committed.
    pub fn observe(&self, latency: Duration) {
        self.0.observe(latency.as_secs_f64());
    }

    /// Adds what was observed since the last flush to the shared histogram.
    pub fn flush(&self) {
        self.0.flush();
    }
}

/// The running totals the inspector turns into rates.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Totals {
    /// Committed transactions.
    pub commits: u64,
    /// Rows they changed.
    pub rows_changed: u64,
    /// Transactions queued to sessions.
    pub deliveries: u64,
    /// Rows sent by bootstraps.
    pub bootstrap_rows: u64,
    /// Sessions cut off (lagging or stalled).
    pub cutoffs: u64,
    /// Requests refused by a quota.
    pub refusals: u64,
    /// Live frames timed from commit to send.
    pub sends: u64,
    /// Their mean latency, in milliseconds (0 before the first).
    pub send_mean_ms: f64,
}

impl Metrics {
    /// The running totals now.
    pub fn totals(&self) -> Totals {
        let sum = |vec: &IntCounterVec, labels: &[&str]| -> u64 {
            labels
                .iter()
                .map(|l| vec.with_label_values(&[l]).get())
                .sum()
        };
        let quotas: Vec<&str> = Quota::ALL.iter().map(|q| q.as_str()).collect();
        let sends = self.commit_to_send.get_sample_count();
        Totals {
            commits: self.commits.get(),
            rows_changed: self.rows_changed.get(),
            deliveries: self.deliveries.get(),
            bootstrap_rows: self.bootstrap_rows.get(),
            cutoffs: sum(&self.cutoffs, &["lagging", "stalled"]),
            refusals: sum(&self.refusals, &quotas),
            sends,
            send_mean_ms: if sends == 0 {
                0.0
            } else {
                self.commit_to_send.get_sample_sum() * 1000.0 / sends as f64
            },
        }
    }
}

/// The server's metrics in Prometheus text format, gauges read now.
pub fn render(shared: &Shared) -> String {
    let m = &shared.metrics;
    let (mut subscriptions, mut pins, mut depth, mut depth_max) = (0, 0, 0, 0);
    for session in shared.sessions.iter() {
        let info = session.value().info();
        subscriptions += info.subscriptions;
        pins += info.pins;
        depth += info.queued;
        depth_max = depth_max.max(info.queued);
    }
    m.sessions.set(shared.sessions.len() as i64);
    m.subscriptions.set(subscriptions as i64);
    m.pins.set(pins as i64);
    m.queue_depth.set(depth as i64);
    m.queue_depth_max.set(depth_max as i64);
    let (total, residual, windows) = {
        let registry = shared.registry.lock().expect("registry lock");
        (
            registry.shape_count(),
            registry.residual_count(),
            registry.window_count(),
        )
    };
    m.shapes
        .with_label_values(&["indexed"])
        .set(total.saturating_sub(residual) as i64);
    m.shapes
        .with_label_values(&["residual"])
        .set(residual as i64);
    m.shapes.with_label_values(&["window"]).set(windows as i64);
    m.log_head.set(shared.store.head().0 as i64);
    m.log_horizon.set(shared.store.horizon().0 as i64);
    let q = &shared.quotas;
    m.bootstraps_running
        .set((q.bootstraps - shared.bootstraps.available_permits()) as i64);
    m.fetches_running
        .set((q.fetches - shared.fetches.available_permits()) as i64);
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut out) {
        return format!("# metrics could not be encoded: {e}\n");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_s_latencies_count_once_flushed() {
        let metrics = Metrics::new();
        let sent = metrics.sent();
        sent.observe(Duration::from_millis(2));
        sent.observe(Duration::from_millis(4));
        assert_eq!(metrics.totals().sends, 0, "not yet flushed");
        sent.flush();
        let totals = metrics.totals();
        assert_eq!(totals.sends, 2);
        assert!((totals.send_mean_ms - 3.0).abs() < 1e-9, "{totals:?}");
        sent.flush();
        assert_eq!(metrics.totals().sends, 2, "each latency counted once");
    }
}
