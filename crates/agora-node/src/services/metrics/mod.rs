//! Prometheus metrics: the node's own (push deliveries, latency, replicated state) plus the coordinator's counters,
//! read at scrape time so the hot path only ever bumps an atomic.
//!
//! Every counter is declared once, in [`catalogue::COUNTERS`]; `/metrics`, `/v1/node` and the dashboard read it.
//! Labelled families (push outcomes and refusals, Stalwart events by kind and by sender), histograms and gauges are
//! declared where they are recorded.

pub mod catalogue;
mod encode;
mod node;
pub mod push;
mod stalwart;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use agora::{Coordinator, LinkState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

pub use node::{NodeMetrics, PushOutcome, PushResult};

use catalogue::{Reading, COUNTERS};
use encode::{counter, gauge, per_type};

/// What the metrics read from the replicated state at scrape time. A trait, so that the metrics need nothing else
/// of the state and the state nothing of the metrics.
pub trait StateGauges: Send + Sync {
    /// Blocked-IP rules in force.
    fn blocked_ip_rules(&self) -> usize;
    /// Push subscriptions held.
    fn push_subscriptions(&self) -> usize;
    /// Deletions remembered: `(blocked IPs, push subscriptions)`.
    fn tombstones(&self) -> (usize, usize);
    /// Whether the node holds the replicated state: the initial transfer is done and no loss awaits a new one.
    fn holds_state(&self) -> bool;
    /// Client-token revocations held (accounts and token ids).
    fn revocations(&self) -> usize;
}

/// Builds the registry served at `/metrics`.
pub fn registry(
    coordinator: Coordinator,
    metrics: &Arc<NodeMetrics>,
    state: Arc<dyn StateGauges>,
    journal: Arc<super::journal::Journal>,
) -> Registry {
    let mut registry = Registry::with_prefix("agora");
    let m = metrics;
    registry.register(
        "push_deliveries",
        "Push notification deliveries by result",
        m.push_deliveries.clone(),
    );
    m.push.register(&mut registry);
    registry.register(
        "delivery_latency_seconds",
        "Origin timestamp to local dispatch of remote events",
        m.delivery_latency.clone(),
    );
    registry.register(
        "stream_fanout_delay_seconds",
        "Journal append to the fan-out's writes of an event to its EventSource streams",
        m.fanout_delay.clone(),
    );
    registry.register_collector(Box::new(ScrapeCollector {
        coordinator,
        node: metrics.clone(),
        state,
        journal,
    }));
    registry
}

/// Reads the catalogue's counters, the Stalwart families and the node's gauges at scrape time.
struct ScrapeCollector {
    coordinator: Coordinator,
    node: Arc<NodeMetrics>,
    state: Arc<dyn StateGauges>,
    journal: Arc<super::journal::Journal>,
}

impl std::fmt::Debug for ScrapeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeCollector")
    }
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        for spec in COUNTERS {
            match spec.read(&self.coordinator, &self.node) {
                Some(Reading::One(value)) => counter(e, spec.name, spec.help, value)?,
                Some(Reading::PerType(values)) => per_type(e, spec.name, spec.help, values)?,
                None => {}
            }
        }
        if let Some(stalwart) = self.coordinator.stalwart_stats() {
            stalwart::encode(e, stalwart, self.coordinator.stalwart_node_id_clash().is_some())?;
        }
        self.encode_gauges(e)
    }
}

impl ScrapeCollector {
    /// The link, membership, replicated state and journal gauges.
    fn encode_gauges(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let link = self.coordinator.link_state();
        gauge(
            e,
            "connected",
            "1 while events flow (connected or single-node)",
            i64::from(link.is_healthy()),
        )?;
        gauge(
            e,
            "disconnected_for_good",
            "1 once the connection is closed and will not be retried",
            i64::from(matches!(link, LinkState::Closed { .. })),
        )?;
        gauge(
            e,
            "members",
            "Live peers seen through heartbeats",
            to_i64(self.coordinator.members().len()),
        )?;
        gauge(
            e,
            "blocked_ip_rules",
            "Blocked-IP rules held",
            to_i64(self.state.blocked_ip_rules()),
        )?;
        gauge(
            e,
            "push_subscriptions",
            "Push subscriptions held",
            to_i64(self.state.push_subscriptions()),
        )?;
        let (blocked_tombstones, push_tombstones) = self.state.tombstones();
        gauge(
            e,
            "blocked_ip_tombstones",
            "Blocked-IP deletions remembered (at most 100,000; kept 24 h)",
            to_i64(blocked_tombstones),
        )?;
        gauge(
            e,
            "push_subscription_tombstones",
            "Push-subscription deletions remembered (at most 100,000; kept 24 h)",
            to_i64(push_tombstones),
        )?;
        gauge(
            e,
            "revocations",
            "Client-token revocations held (accounts and token ids; at most [http.clients] max-revocations)",
            to_i64(self.state.revocations()),
        )?;
        let (entries, bytes) = self.journal.size();
        gauge(
            e,
            "journal_events",
            "Notifications held for resuming streams",
            to_i64(entries),
        )?;
        gauge(e, "journal_bytes", "Bytes held for resuming streams", to_i64(bytes))?;
        gauge(
            e,
            "journal_watched_accounts",
            "Accounts some open EventSource stream watches (each holds a wake-up until its last stream ends)",
            to_i64(self.journal.watched_accounts()),
        )?;
        gauge(
            e,
            "ready",
            "1 while the node holds the replicated state (0 while starting, or resyncing after lost events)",
            i64::from(self.state.holds_state()),
        )
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
