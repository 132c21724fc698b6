//! Rate limits for log lines that remote input or a failing peer can trigger: the 1st, 2nd, 4th, 8th...
//! occurrence is logged, so a flood cannot flood the log, while the counters behind them keep the exact numbers.

use std::sync::atomic::{AtomicU64, Ordering};

/// Adds `n` occurrences to `counter` and says whether to log them: true when the total crosses a power of two
/// (always for the first). Returns the new total too, for the log line.
pub fn count(counter: &AtomicU64, n: u64) -> (u64, bool) {
    let before = counter.fetch_add(n, Ordering::Relaxed);
    let after = before.saturating_add(n);
    let log = n > 0 && (before == 0 || after.ilog2() != before.ilog2());
    (after, log)
}

/// A log throttle with its own counter, for problems that have no metric of their own (or whose metric counts
/// something else), such as the attempts of one retry loop.
#[derive(Debug, Default)]
pub struct LogLimiter {
    seen: AtomicU64,
}

impl LogLimiter {
    /// A limiter that has seen nothing.
    pub const fn new() -> Self {
        LogLimiter {
            seen: AtomicU64::new(0),
        }
    }

    /// Counts one occurrence; true if this one should be logged.
    pub fn should_log(&self) -> bool {
        count(&self.seen, 1).1
    }

    /// Counts one occurrence; returns how many there were so far and whether to log this one.
    pub fn record(&self) -> (u64, bool) {
        count(&self.seen, 1)
    }

    /// Starts over (e.g. after the retried operation succeeded), so the next failure is logged at once.
    pub fn reset(&self) {
        self.seen.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_at_powers_of_two_only() {
        let limiter = LogLimiter::new();
        let logged: Vec<u64> = (1..=100).filter(|_| limiter.should_log()).collect();
        assert_eq!(logged.len(), 7, "1, 2, 4, 8, 16, 32, 64");
        limiter.reset();
        assert!(limiter.should_log(), "the first after a reset is logged");
    }

    #[test]
    fn batches_of_occurrences_log_when_they_cross_a_power_of_two() {
        let counter = AtomicU64::new(0);
        assert_eq!(count(&counter, 3), (3, true), "the first is always logged");
        assert_eq!(count(&counter, 1), (4, true));
        assert_eq!(count(&counter, 3), (7, false));
        assert_eq!(count(&counter, 100), (107, true));
        assert_eq!(count(&counter, 0), (107, false));
    }
}
