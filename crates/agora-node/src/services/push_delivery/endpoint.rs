//! One push endpoint (an origin, `scheme://host:port`): its concurrency limit and its circuit breaker.
//!
//! Many subscriptions may share an endpoint (a push gateway). The gate lets at most [`CONCURRENCY`] of their POSTs
//! run at once while the endpoint answers, and one at a time as soon as it fails, so a hanging endpoint holds at
//! most one of the node's delivery slots once it has been seen failing. After [`FAILURES_TO_OPEN`] consecutive
//! failures the breaker opens: nothing is sent for a cool-down (1 s, doubling to 30 s while probes keep failing,
//! jittered); then one probe goes out (half-open), and the first success closes the breaker. A push service that
//! answers 429 with `Retry-After` throttles the sender, not one subscription (RFC 8030 section 8.4): nothing goes to
//! the endpoint before that time ([`Endpoint::hold_until`]). Deliveries waiting for an open or held endpoint just
//! wait (their changes keep coalescing); nothing spins.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use agora::backoff::Backoff;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::services::metrics::push::PushStats;

/// POSTs in flight to one healthy endpoint at most: enough for a push gateway, and no endpoint can take more than
/// this share of the node's slots.
pub const CONCURRENCY: usize = 16;

/// Consecutive failures that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 5;

/// How long an open breaker waits before its probe: 1 s after the first opening, doubling to 30 s.
const COOL_DOWN: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// What an attempt said about the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It answered (2xx, or a 3xx/4xx that concerns one subscription, not the endpoint).
    Healthy,
    /// It failed (no connection, timeout, 5xx, 408, 429).
    Failing,
    /// Nothing was learnt (the request was not sent, e.g. refused by the address guard).
    Unknown,
}

/// The breaker and counts, under one lock: every critical section is a few field updates.
#[derive(Debug, Default)]
struct Gate {
    in_flight: usize,
    /// Consecutive failures; any failure makes the limit 1 until a success.
    failures: u32,
    /// While open: when the probe may go.
    open_until: Option<Instant>,
    /// Counted in `breakers_open` (from opening until a success).
    open: bool,
    /// Openings since the last success, for the cool-down's growth.
    openings: u32,
    /// The push service asked for no request before this time (429 with `Retry-After`).
    held_until: Option<Instant>,
}

/// One endpoint's gate, shared by the workers of its subscriptions.
#[derive(Debug)]
pub struct Endpoint {
    gate: Mutex<Gate>,
    /// Woken (one waiter per freed place) when a slot frees up or the breaker closes.
    freed: Notify,
    stats: Arc<PushStats>,
}

/// Permission to send one POST to the endpoint; give the verdict with [`Admission::finish`].
#[derive(Debug)]
pub struct Admission {
    endpoint: Arc<Endpoint>,
}

impl Endpoint {
    /// A closed breaker, nothing in flight.
    pub fn new(stats: Arc<PushStats>) -> Arc<Self> {
        Arc::new(Endpoint {
            gate: Mutex::default(),
            freed: Notify::new(),
            stats,
        })
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        // The gate's fields are consistent after every statement: a panic elsewhere cannot leave it half-updated.
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True while the endpoint has failed since its last success: worth remembering after its last subscription
    /// is delivered, so that the next change does not start with a fresh breaker.
    pub fn is_suspect(&self) -> bool {
        self.gate().failures > 0
    }

    /// Nothing is sent to the endpoint before `until` (a later hold extends an earlier one, never shortens it).
    pub fn hold_until(&self, until: Instant) {
        let mut gate = self.gate();
        gate.held_until = Some(gate.held_until.map_or(until, |held| held.max(until)));
    }

    /// Waits until a POST may go to this endpoint: a free place under the limit, the breaker not open, and no hold.
    pub async fn admit(self: &Arc<Self>) -> Admission {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a slot freed between the check and the wait is not missed.
            freed.as_mut().enable();
            let open_until = {
                let mut gate = self.gate();
                let now = Instant::now();
                let closed_until = match (gate.open_until, gate.held_until) {
                    (Some(open), Some(held)) => Some(open.max(held)),
                    (open, held) => open.or(held),
                };
                match closed_until {
                    Some(until) if now < until => Some(until),
                    _ => {
                        let limit = if gate.failures > 0 { 1 } else { CONCURRENCY };
                        if gate.in_flight < limit {
                            gate.in_flight += 1;
                            return Admission { endpoint: self.clone() };
                        }
                        None
                    }
                }
            };
            match open_until {
                Some(until) => tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    () = &mut freed => {}
                },
                None => freed.await,
            }
        }
    }
}

impl Admission {
    /// Records what the attempt said and frees the place.
    pub fn finish(self, verdict: Verdict) {
        let endpoint = &self.endpoint;
        let mut wake = 0;
        {
            let mut gate = endpoint.gate();
            match verdict {
                Verdict::Healthy => {
                    if gate.open {
                        endpoint.stats.breakers_open.dec();
                    }
                    let was_limited = gate.failures > 0;
                    *gate = Gate {
                        in_flight: gate.in_flight,
                        held_until: gate.held_until,
                        ..Gate::default()
                    };
                    if was_limited {
                        // From one place to CONCURRENCY: wake that many waiters, not one.
                        wake = CONCURRENCY;
                    }
                }
                Verdict::Failing => {
                    gate.failures = gate.failures.saturating_add(1);
                    let now = Instant::now();
                    // Opens from closed, or reopens when the half-open probe failed; a POST that was already in
                    // flight when the breaker opened does not extend it.
                    let reopen = gate.open_until.is_none_or(|until| now >= until);
                    if gate.failures >= FAILURES_TO_OPEN && reopen {
                        gate.openings = gate.openings.saturating_add(1);
                        gate.open_until = Some(now + COOL_DOWN.delay(gate.openings));
                        endpoint.stats.breaker_opened.inc();
                        if !gate.open {
                            gate.open = true;
                            endpoint.stats.breakers_open.inc();
                        }
                    }
                }
                Verdict::Unknown => {}
            }
        }
        // The place itself is freed by Drop, which wakes one waiter.
        for _ in 0..wake {
            endpoint.freed.notify_one();
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        {
            let mut gate = self.endpoint.gate();
            gate.in_flight = gate.in_flight.saturating_sub(1);
        }
        self.endpoint.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failures_narrow_then_open_the_breaker_and_a_success_closes_it() {
        let stats = Arc::new(PushStats::default());
        let endpoint = Endpoint::new(stats.clone());
        // Healthy: CONCURRENCY at once.
        let many: Vec<Admission> = futures::future::join_all((0..CONCURRENCY).map(|_| endpoint.admit())).await;
        let extra = tokio::time::timeout(Duration::from_millis(10), endpoint.admit()).await;
        assert!(extra.is_err(), "no more than CONCURRENCY in flight");
        drop(many);

        // One failure: one at a time.
        endpoint.admit().await.finish(Verdict::Failing);
        let first = endpoint.admit().await;
        assert!(tokio::time::timeout(Duration::from_millis(10), endpoint.admit())
            .await
            .is_err());
        first.finish(Verdict::Failing);
        for _ in 2..FAILURES_TO_OPEN {
            endpoint.admit().await.finish(Verdict::Failing);
        }
        assert_eq!(stats.breakers_open.get(), 1);
        assert_eq!(stats.breaker_opened.get(), 1);

        // Open: nothing for the cool-down (at least half of 1 s), then a probe.
        let started = Instant::now();
        let probe = endpoint.admit().await;
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        probe.finish(Verdict::Failing);
        assert_eq!(stats.breaker_opened.get(), 2, "a failed probe reopens");
        assert_eq!(stats.breakers_open.get(), 1, "still one endpoint open");

        let probe = endpoint.admit().await;
        probe.finish(Verdict::Healthy);
        assert_eq!(stats.breakers_open.get(), 0);
        assert!(!endpoint.is_suspect());
        let again: Vec<Admission> = futures::future::join_all((0..CONCURRENCY).map(|_| endpoint.admit())).await;
        assert_eq!(again.len(), CONCURRENCY, "closed again: full concurrency");
    }

    /// A 429's `Retry-After` holds every subscription of the endpoint, not just the one that got it.
    #[tokio::test(start_paused = true)]
    async fn a_hold_keeps_every_post_back_until_it_ends() {
        let endpoint = Endpoint::new(Arc::default());
        let started = Instant::now();
        endpoint.hold_until(started + Duration::from_secs(2));
        endpoint.hold_until(started + Duration::from_secs(1)); // an earlier one does not shorten it
        let admitted = endpoint.admit().await;
        assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
        admitted.finish(Verdict::Healthy);
        let again = Instant::now();
        drop(endpoint.admit().await);
        assert!(again.elapsed() < Duration::from_millis(10), "no hold after it ended");
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_woken_when_places_free_up() {
        let endpoint = Endpoint::new(Arc::default());
        let held: Vec<Admission> = futures::future::join_all((0..CONCURRENCY).map(|_| endpoint.admit())).await;
        let waiting: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let endpoint = endpoint.clone();
                tokio::spawn(async move { endpoint.admit().await.finish(Verdict::Healthy) })
            })
            .collect();
        tokio::task::yield_now().await;
        drop(held);
        for w in waiting {
            tokio::time::timeout(Duration::from_secs(1), w)
                .await
                .expect("woken")
                .expect("task");
        }
    }
}
