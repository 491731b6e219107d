//! Reconnection delays of the sync task.

use std::time::Duration;

/// Reconnection delays: exponential from `initial` up to `max`, each randomized by
/// ±`jitter` (a fraction) so that many clients do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The delay before the first retry.
    pub initial: Duration,
    /// The longest delay, before jitter.
    pub max: Duration,
    /// The fraction (0 to 1) by which each delay is randomly shortened or lengthened.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 100 ms doubling to 10 s, ±20 %.
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (0-based), with `random` in [0, 1).
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let base = self.initial.as_secs_f64() * 2f64.powi(attempt.min(30) as i32);
        let base = base.min(self.max.as_secs_f64());
        let factor = 1.0 + self.jitter * (2.0 * random - 1.0);
        Duration::from_secs_f64((base * factor).max(0.0))
    }
}

/// A small xorshift generator for jitter (no need for cryptographic randomness).
pub(super) struct Jitter(u64);

impl Jitter {
    pub(super) fn new() -> Jitter {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9)
            | 1;
        Jitter(seed)
    }

    pub(super) fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}
