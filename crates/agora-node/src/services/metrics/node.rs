//! The metrics the node records itself: push delivery outcomes, latencies, state transfers, stream and connection
//! refusals. One handle, shared by whoever records; read by the catalogue and the registry.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// The outcome of a push delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushResult {
    /// Delivered (2xx).
    Ok,
    /// Gave up (the last attempt failed; refusals are counted in `agora_push_refused_total`).
    Failed,
    /// Failed, will be retried.
    Retried,
    /// The push service answered 404 or 410: the subscription is gone and was removed on every node.
    Gone,
    /// The push service answered 429 (retried, not before its `Retry-After`).
    Throttled,
    /// The push service refused the push for good (413), or it was too large to encrypt: not retried.
    Rejected,
    /// Not sent because the subscription expired (it is then removed on every node).
    Expired,
    /// A `PushVerification` was queued for a new JMAP subscription (by the node that created it).
    VerificationSent,
    /// A subscription was verified with the right code (by the node that took the `PATCH`).
    Verified,
}

impl PushResult {
    /// Every outcome, so that each label is exported from the start.
    pub(super) const ALL: [PushResult; 9] = [
        PushResult::Ok,
        PushResult::Failed,
        PushResult::Retried,
        PushResult::Gone,
        PushResult::Throttled,
        PushResult::Rejected,
        PushResult::Expired,
        PushResult::VerificationSent,
        PushResult::Verified,
    ];

    pub(super) fn label(self) -> PushOutcome {
        let result = match self {
            PushResult::Ok => "ok",
            PushResult::Failed => "failed",
            PushResult::Retried => "retried",
            PushResult::Gone => "gone",
            PushResult::Throttled => "throttled",
            PushResult::Rejected => "rejected",
            PushResult::Expired => "expired",
            PushResult::VerificationSent => "verification_sent",
            PushResult::Verified => "verified",
        };
        PushOutcome { result }
    }
}

/// Outcome label of a push delivery attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushOutcome {
    /// See [`PushResult`]: `ok`, `failed` (gave up), `retried`, `gone`, `throttled`, `rejected`, `expired`,
    /// `verification_sent`, `verified`.
    pub result: &'static str,
}

/// Metrics the node records itself: one handle (in an `Arc`) given to whoever records, read by the registry.
#[derive(Debug)]
pub struct NodeMetrics {
    /// Push deliveries by outcome.
    pub(super) push_deliveries: Family<PushOutcome, Counter>,
    /// Seconds from an event's origin timestamp to its dispatch on this node (remote events only).
    pub delivery_latency: Histogram,
    /// Seconds from an entry's append to the journal to a fan-out shard's writes of it to its in-sync EventSource
    /// streams (one observation per shard that had streams for it): how late the node itself delivers.
    pub fanout_delay: Histogram,
    /// Snapshots fetched from peers (join and resync).
    pub snapshots_fetched: Counter,
    /// State-transfer attempts that got no page though peers are heard (or whose peer stopped answering).
    pub snapshot_failures: Counter,
    /// State-transfer pages received.
    pub snapshot_pages: Counter,
    /// Streams ended because their client fell behind the journal (each was sent `lagged` first).
    pub streams_lagged: Counter,
    /// Connections past `[http] max-connections` (answered only for `/healthz`, else 503).
    pub connections_refused: Counter,
    /// Streams refused past `[http] max-streams` (503).
    pub streams_refused: Counter,
    /// EventSource streams whose client could not take an event at once and that were caught up from the journal
    /// (slow clients: a steady rise means clients that cannot keep up).
    pub streams_caught_up: Counter,
    /// Deletions forgotten because a replicated registry held its most tombstones (oldest first).
    pub tombstones_evicted: Counter,
    /// Token revocations refused or dropped because `[http.clients] max-revocations` entries are held (507 to a
    /// `POST /v1/revocations`, or a revocation from the bus not held).
    pub revocations_refused: Counter,
    /// Client tokens refused at connect (missing, malformed, expired, badly signed, revoked, outside their scope).
    pub client_tokens_refused: Counter,
    /// The push delivery's queues, breakers and refusals (shared with the endpoints' gates).
    pub push: Arc<super::push::PushStats>,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        let push_deliveries = Family::default();
        for result in PushResult::ALL {
            // Created at 0, so that a dashboard or alert sees every series before the first push.
            let _created = push_deliveries.get_or_create(&result.label());
        }
        NodeMetrics {
            push_deliveries,
            // 50 µs .. ~3.3 s, doubling: covers loopback through cross-region.
            delivery_latency: Histogram::new((0..17).map(|i| 50e-6 * 2f64.powi(i))),
            fanout_delay: Histogram::new((0..17).map(|i| 50e-6 * 2f64.powi(i))),
            snapshots_fetched: Counter::default(),
            snapshot_failures: Counter::default(),
            snapshot_pages: Counter::default(),
            streams_lagged: Counter::default(),
            connections_refused: Counter::default(),
            streams_refused: Counter::default(),
            streams_caught_up: Counter::default(),
            tombstones_evicted: Counter::default(),
            revocations_refused: Counter::default(),
            client_tokens_refused: Counter::default(),
            push: Arc::default(),
        }
    }
}

impl NodeMetrics {
    /// Counts one push delivery attempt.
    pub fn count_push(&self, result: PushResult) {
        self.push_deliveries.get_or_create(&result.label()).inc();
    }

    /// How many pushes had `result` so far.
    pub fn push_count(&self, result: PushResult) -> u64 {
        self.push_deliveries.get_or_create(&result.label()).get()
    }
}
