//! Jittered exponential back-off, the one retry schedule of every loop that retries (reconnects, durable stores,
//! consumer re-opens, push deliveries).
//!
//! Jitter matters at fleet scale: without it every node retries a recovering server in lock-step.

use std::time::Duration;

/// Delays that start at `first`, double on each attempt up to `max`, and are each scaled by a random factor in
/// `0.5..=1.0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry (before jitter).
    pub first: Duration,
    /// The longest delay (before jitter): a recovered peer is retried at least this often.
    pub max: Duration,
}

impl Backoff {
    /// A schedule from `first` doubling to `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max }
    }

    /// The delay before retry number `attempt` (1 for the first retry), jittered.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.ceiling(attempt).mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }

    /// The un-jittered delay before retry number `attempt`: `first * 2^(attempt-1)`, at most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // 2^20 times any realistic `first` is beyond any realistic `max`; the cap keeps the multiplication finite.
        let exp = attempt.saturating_sub(1).min(20);
        self.first.saturating_mul(1 << exp).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_are_capped_and_jittered() {
        let b = Backoff::new(Duration::from_millis(50), Duration::from_secs(4));
        assert_eq!(b.ceiling(0), Duration::from_millis(50));
        assert_eq!(b.ceiling(1), Duration::from_millis(50));
        assert_eq!(b.ceiling(2), Duration::from_millis(100));
        assert_eq!(b.ceiling(4), Duration::from_millis(400));
        assert_eq!(b.ceiling(8), Duration::from_secs(4));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(4));
        for attempt in [1, 3, 9, u32::MAX] {
            for _ in 0..100 {
                let d = b.delay(attempt);
                let ceiling = b.ceiling(attempt);
                assert!(d >= ceiling / 2 && d <= ceiling, "{attempt}: {d:?}");
            }
        }
        let samples: std::collections::HashSet<Duration> = (0..50).map(|_| b.delay(6)).collect();
        assert!(samples.len() > 10, "delays are not jittered: {samples:?}");
    }
}
