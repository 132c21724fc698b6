//! Prometheus metrics: the node's own (push deliveries, latency, replicated state) plus the coordinator's counters,
//! read at scrape time so the hot path only ever bumps an atomic.

use std::sync::Arc;

use agora::stats::Stats;
use agora::{Coordinator, Event, LinkState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// What the metrics read from the replicated state at scrape time. A trait, so that the metrics need nothing else
/// of the state and the state nothing of the metrics.
pub trait StateGauges: Send + Sync {
    /// Blocked-IP rules in force.
    fn blocked_ip_rules(&self) -> usize;
    /// Push subscriptions held.
    fn push_subscriptions(&self) -> usize;
    /// Whether the node holds the replicated state: the initial transfer is done and no loss awaits a new one.
    fn holds_state(&self) -> bool;
}

/// The outcome of a push delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushResult {
    /// Delivered (2xx).
    Ok,
    /// Gave up (the last attempt failed; refusals are counted in `agora_push_refused_total`).
    Failed,
    /// Failed, will be retried.
    Retried,
}

impl PushResult {
    /// Every outcome, so that each label is exported from the start.
    const ALL: [PushResult; 3] = [PushResult::Ok, PushResult::Failed, PushResult::Retried];

    fn label(self) -> PushOutcome {
        let result = match self {
            PushResult::Ok => "ok",
            PushResult::Failed => "failed",
            PushResult::Retried => "retried",
        };
        PushOutcome { result }
    }
}

/// Outcome label of a push delivery attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushOutcome {
    /// `ok`, `failed` (gave up) or `retried`.
    pub result: &'static str,
}

/// Metrics the node records itself: one handle (in an `Arc`) given to whoever records, read by the registry.
#[derive(Debug)]
pub struct NodeMetrics {
    /// Push deliveries by outcome.
    push_deliveries: Family<PushOutcome, Counter>,
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
    /// The push delivery's queues, breakers and refusals (shared with the endpoints' gates).
    pub push: Arc<super::push_delivery::stats::PushStats>,
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
            push: Arc::default(),
        }
    }
}

impl NodeMetrics {
    /// Counts one push delivery attempt.
    pub fn count_push(&self, result: PushResult) {
        self.push_deliveries.get_or_create(&result.label()).inc();
    }
}

/// Builds the registry served at `/metrics`.
pub fn registry(
    coordinator: Coordinator,
    metrics: &NodeMetrics,
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
    for (name, help, counter) in [
        (
            "snapshots_fetched",
            "Replicated-state transfers completed (every page merged)",
            &m.snapshots_fetched,
        ),
        (
            "snapshot_failures",
            "State-transfer attempts that got no page though peers are heard",
            &m.snapshot_failures,
        ),
        (
            "snapshot_pages",
            "State-transfer pages received from peers",
            &m.snapshot_pages,
        ),
        (
            "stream_clients_lagged",
            "SSE streams ended because their client fell behind the journal (told with a lagged event)",
            &m.streams_lagged,
        ),
        (
            "http_connections_refused",
            "Connections past [http] max-connections (only /healthz answered)",
            &m.connections_refused,
        ),
        (
            "http_streams_refused",
            "SSE streams refused past [http] max-streams",
            &m.streams_refused,
        ),
        (
            "stream_catch_ups",
            "EventSource streams whose client could not take an event at once, caught up from the journal",
            &m.streams_caught_up,
        ),
    ] {
        registry.register(name, help, counter.clone());
    }
    registry.register_collector(Box::new(CoordinatorCollector {
        coordinator,
        state,
        journal,
    }));
    registry
}

/// Reads the coordinator's counters and the node's state at scrape time.
struct CoordinatorCollector {
    coordinator: Coordinator,
    state: Arc<dyn StateGauges>,
    journal: Arc<super::journal::Journal>,
}

impl std::fmt::Debug for CoordinatorCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoordinatorCollector")
    }
}

pub(super) fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

pub(super) fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

fn per_type(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[std::sync::atomic::AtomicU64],
) -> Result<(), std::fmt::Error> {
    labelled(
        encoder,
        name,
        help,
        "type",
        values.iter().map(Stats::get).zip(Event::TYPE_NAMES.iter().copied()),
    )
}

/// A counter family with one label, one series per `(value, label value)`.
pub(super) fn labelled<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    series: impl IntoIterator<Item = (u64, &'a str)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, label_value) in series {
        let labels = [(label, label_value)];
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for CoordinatorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.coordinator.stats();
        let e = &mut encoder;
        per_type(e, "events_published", "Events published by this node", &s.published)?;
        per_type(e, "events_received", "Events received from other nodes", &s.received)?;
        counter(
            e,
            "batches_sent",
            "NATS messages (batches) sent",
            Stats::get(&s.batches_sent),
        )?;
        counter(
            e,
            "records_sent",
            "Records (events and heartbeats) sent in batches",
            Stats::get(&s.records_sent),
        )?;
        counter(e, "bytes_sent", "Bytes sent", Stats::get(&s.bytes_sent))?;
        counter(
            e,
            "batches_received",
            "Batches received",
            Stats::get(&s.batches_received),
        )?;
        counter(e, "bytes_received", "Bytes received", Stats::get(&s.bytes_received))?;
        counter(
            e,
            "invalid_batches",
            "Messages that were not agora batches (skipped)",
            Stats::get(&s.invalid_batches),
        )?;
        counter(
            e,
            "invalid_records",
            "Undecodable records skipped inside batches",
            Stats::get(&s.invalid_records),
        )?;
        counter(
            e,
            "events_dropped",
            "Events that could not be handed to NATS",
            Stats::get(&s.dropped_events),
        )?;
        counter(
            e,
            "echoes_filtered",
            "Own messages echoed back and filtered",
            Stats::get(&s.echoes_filtered),
        )?;
        counter(e, "gaps", "Sequence gaps detected (lost messages)", Stats::get(&s.gaps))?;
        counter(
            e,
            "missed_records",
            "Records known lost through gaps",
            Stats::get(&s.missed_records),
        )?;
        counter(
            e,
            "sender_restarts",
            "Peers seen restarting without leaving",
            Stats::get(&s.sender_restarts),
        )?;
        counter(
            e,
            "slow_consumer_drops",
            "Times the NATS client dropped messages (capacity.subscription full)",
            Stats::get(&s.slow_consumer_events),
        )?;
        counter(
            e,
            "subscriber_lagged",
            "Notifications local subscribers missed by falling behind",
            Stats::get(&s.subscriber_lagged),
        )?;
        counter(e, "disconnects", "NATS connection losses", Stats::get(&s.disconnects))?;
        counter(e, "reconnects", "NATS reconnections", Stats::get(&s.reconnects))?;
        counter(
            e,
            "node_id_clashes",
            "Messages revealing a node-id clash",
            Stats::get(&s.node_id_clashes),
        )?;
        counter(
            e,
            "sequence_jumps_undone",
            "Forward jumps in a sender's sequence that later batches proved forged or replayed",
            Stats::get(&s.sequence_jumps_undone),
        )?;
        counter(
            e,
            "unauthenticated_batches",
            "Batches dropped for carrying no MAC while [cluster] key is set",
            Stats::get(&s.unauthenticated_batches),
        )?;
        counter(
            e,
            "bad_mac_batches",
            "Batches dropped because their MAC matches no cluster key",
            Stats::get(&s.bad_mac_batches),
        )?;
        counter(
            e,
            "rejected_requests",
            "Requests left unanswered because they failed authentication",
            Stats::get(&s.rejected_requests),
        )?;
        counter(
            e,
            "rejected_replies",
            "Replies to this node's requests that failed authentication",
            Stats::get(&s.rejected_replies),
        )?;
        if let Some(d) = self.coordinator.durable_stats() {
            counter(
                e,
                "durable_batches_stored",
                "Batches stored in the JetStream stream",
                Stats::get(&d.batches_stored),
            )?;
            counter(
                e,
                "durable_publish_retries",
                "JetStream store attempts retried",
                Stats::get(&d.publish_retries),
            )?;
            counter(
                e,
                "durable_redeliveries_skipped",
                "JetStream redeliveries skipped (already dispatched)",
                Stats::get(&d.redeliveries_skipped),
            )?;
            counter(
                e,
                "durable_holes_filled",
                "Messages fetched from the stream to fill a hole in delivery",
                Stats::get(&d.holes_filled),
            )?;
            counter(
                e,
                "durable_expired",
                "Stored messages gone (max-age) before this node read them",
                Stats::get(&d.expired),
            )?;
            counter(
                e,
                "durable_own_replays_skipped",
                "This node's own messages from an earlier run, replayed by the stream and skipped",
                Stats::get(&d.own_replays_skipped),
            )?;
        }
        if let Some(stalwart) = self.coordinator.stalwart_stats() {
            super::stalwart_metrics::encode(e, stalwart, self.coordinator.stalwart_node_id_clash().is_some())?;
        }
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
            "ready",
            "1 while the node holds the replicated state (0 while starting, or resyncing after lost events)",
            i64::from(self.state.holds_state()),
        )?;
        Ok(())
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
