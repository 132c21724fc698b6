//! The push delivery metrics: every bound has a gauge or a counter, so an operator sees which one a bad endpoint
//! (or a flood of changes) is pressing against. Every series exists from the start, at 0.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a push was not even attempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The node already holds the most subscriptions with undelivered changes it keeps.
    NodeBacklog,
    /// The subscription's endpoint already holds its share of that backlog.
    EndpointBacklog,
    /// The URL's address is not public and not in `[push] allow-networks` (SSRF guard).
    BlockedAddress,
    /// The URL cannot be parsed or is not http/https (only possible for subscriptions from the bus).
    InvalidUrl,
    /// The account has more subscriptions than `[push] max-subscriptions-per-account`: the excess gets nothing.
    AccountCap,
    /// The subscription's keys are not usable RFC 8291 keys (only possible for subscriptions from the bus).
    InvalidKeys,
}

impl Refusal {
    /// Every reason, so that each label is exported from the start.
    pub const ALL: [Refusal; 6] = [
        Refusal::NodeBacklog,
        Refusal::EndpointBacklog,
        Refusal::BlockedAddress,
        Refusal::InvalidUrl,
        Refusal::AccountCap,
        Refusal::InvalidKeys,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NodeBacklog => "node_backlog",
            Refusal::EndpointBacklog => "endpoint_backlog",
            Refusal::BlockedAddress => "blocked_address",
            Refusal::InvalidUrl => "invalid_url",
            Refusal::AccountCap => "account_cap",
            Refusal::InvalidKeys => "invalid_keys",
        }
    }
}

/// Label of `agora_push_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    /// See [`Refusal`].
    pub reason: &'static str,
}

/// The push delivery's own metrics (the outcomes of attempts stay in `agora_push_deliveries_total`).
#[derive(Debug)]
pub struct PushStats {
    /// Subscriptions with undelivered changes (each holds at most one coalesced state change).
    pub pending: Gauge,
    /// POSTs in flight.
    pub in_flight: Gauge,
    /// Changes merged into a subscription's pending state change instead of becoming a POST of their own.
    pub coalesced: Counter,
    /// Endpoints whose breaker is open or half-open (from opening until a delivery succeeds).
    pub breakers_open: Gauge,
    /// Times a breaker opened (closed to open, or a failed half-open probe reopening it).
    pub breaker_opened: Counter,
    /// Pushes not attempted, by reason.
    refused: Family<RefusalLabel, Counter>,
}

impl Default for PushStats {
    fn default() -> Self {
        let refused = Family::default();
        for reason in Refusal::ALL {
            let _created = refused.get_or_create(&RefusalLabel { reason: reason.label() });
        }
        PushStats {
            pending: Gauge::default(),
            in_flight: Gauge::default(),
            coalesced: Counter::default(),
            breakers_open: Gauge::default(),
            breaker_opened: Counter::default(),
            refused,
        }
    }
}

impl PushStats {
    /// Counts `n` pushes refused for `reason`.
    pub fn refuse(&self, reason: Refusal, n: u64) {
        self.refused
            .get_or_create(&RefusalLabel { reason: reason.label() })
            .inc_by(n);
    }

    /// How many pushes were refused for `reason` so far.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused
            .get_or_create(&RefusalLabel { reason: reason.label() })
            .get()
    }

    /// Adds the series to `/metrics`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "push_pending_subscriptions",
            "Push subscriptions with undelivered changes (one coalesced state change each)",
            self.pending.clone(),
        );
        registry.register("push_in_flight", "Push POSTs in flight", self.in_flight.clone());
        registry.register(
            "push_breakers_open",
            "Push endpoints whose circuit breaker is open or half-open",
            self.breakers_open.clone(),
        );
        registry.register(
            "push_refused",
            "Pushes not attempted, by reason (backlog bounds, SSRF guard, bad URL, per-account cap)",
            self.refused.clone(),
        );
    }
}
