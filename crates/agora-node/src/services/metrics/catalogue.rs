//! Every counter of the node, declared once: its name, its help, where its value is read, and the dashboard's
//! label if the dashboard shows it as a problem. `/metrics` (as `agora_<name>_total`), `/v1/node` (`counters`, and
//! `stalwart.counters` without the `stalwart_` prefix) and the dashboard (its problem tiles) all read this list, so
//! a counter cannot exist in one view and not the others, nor under two names.

use std::sync::atomic::AtomicU64;

use agora::stats::{Stats, EVENT_TYPES};
use agora::transport::jetstream::DurableStats;
use agora::{Coordinator, StalwartStats};
use prometheus_client::metrics::counter::Counter;

use super::node::NodeMetrics;

/// Where a counter's value is read.
#[derive(Clone, Copy)]
pub enum Source {
    /// A coordinator counter.
    Coordinator(fn(&Stats) -> &AtomicU64),
    /// A coordinator counter per event type: a family with a `type` label; its total in `/v1/node`.
    PerType(fn(&Stats) -> &[AtomicU64; EVENT_TYPES]),
    /// A counter of the durable mode (present only when it is on).
    Durable(fn(&DurableStats) -> &AtomicU64),
    /// A counter of the Stalwart bus (present only with `[stalwart]`).
    Stalwart(fn(&StalwartStats) -> &AtomicU64),
    /// A counter the node keeps itself.
    Node(fn(&NodeMetrics) -> &Counter),
}

/// One counter.
#[derive(Clone, Copy)]
pub struct CounterSpec {
    /// The name: `agora_<name>_total` in Prometheus, `<name>` in `/v1/node`.
    pub name: &'static str,
    /// What it counts (the Prometheus help text).
    pub help: &'static str,
    /// Where its value is read.
    pub source: Source,
    /// The dashboard's label for it, if the dashboard shows it as a problem tile (red above 0).
    pub dashboard: Option<&'static str>,
}

/// A counter's value at one moment.
pub enum Reading<'a> {
    /// One value.
    One(u64),
    /// One value per event type.
    PerType(&'a [AtomicU64; EVENT_TYPES]),
}

impl Reading<'_> {
    /// The value, summed over event types.
    pub fn total(&self) -> u64 {
        match self {
            Reading::One(n) => *n,
            Reading::PerType(values) => Stats::total(values),
        }
    }
}

impl CounterSpec {
    /// Reads the value; `None` when its source is absent (no durable mode, no `[stalwart]`).
    pub fn read<'a>(&self, coordinator: &'a Coordinator, node: &'a NodeMetrics) -> Option<Reading<'a>> {
        Some(match self.source {
            Source::Coordinator(field) => Reading::One(Stats::get(field(coordinator.stats()))),
            Source::PerType(field) => Reading::PerType(field(coordinator.stats())),
            Source::Durable(field) => Reading::One(Stats::get(field(coordinator.durable_stats()?))),
            Source::Stalwart(field) => Reading::One(Stats::get(field(coordinator.stalwart_stats()?))),
            Source::Node(field) => Reading::One(field(node).get()),
        })
    }

    /// Whether it belongs to the Stalwart bus (shown under `stalwart` in `/v1/node`).
    pub fn is_stalwart(&self) -> bool {
        matches!(self.source, Source::Stalwart(_))
    }
}

/// Shorthand for the list below.
const fn spec(name: &'static str, help: &'static str, source: Source) -> CounterSpec {
    CounterSpec {
        name,
        help,
        source,
        dashboard: None,
    }
}

/// Shorthand for a counter the dashboard shows as a problem tile.
const fn problem(name: &'static str, help: &'static str, source: Source, label: &'static str) -> CounterSpec {
    CounterSpec {
        name,
        help,
        source,
        dashboard: Some(label),
    }
}

use Source::{Coordinator as C, Durable as D, Node as N, PerType as T, Stalwart as S};

/// Every counter, in the order `/metrics` shows them.
pub const COUNTERS: &[CounterSpec] = &[
    spec("events_published", "Events published by this node", T(|s| &s.published)),
    spec(
        "events_received",
        "Events received from other nodes",
        T(|s| &s.received),
    ),
    spec("batches_sent", "NATS messages (batches) sent", C(|s| &s.batches_sent)),
    spec(
        "records_sent",
        "Records (events and heartbeats) sent in batches",
        C(|s| &s.records_sent),
    ),
    spec("bytes_sent", "Bytes sent", C(|s| &s.bytes_sent)),
    spec("batches_received", "Batches received", C(|s| &s.batches_received)),
    spec("bytes_received", "Bytes received", C(|s| &s.bytes_received)),
    problem(
        "invalid_batches",
        "Messages that were not agora batches (skipped)",
        C(|s| &s.invalid_batches),
        "invalid batches",
    ),
    problem(
        "invalid_records",
        "Undecodable records skipped inside batches",
        C(|s| &s.invalid_records),
        "invalid records",
    ),
    problem(
        "events_dropped",
        "Events that could not be handed to NATS",
        C(|s| &s.dropped_events),
        "dropped events",
    ),
    spec(
        "echoes_filtered",
        "Own messages echoed back and filtered",
        C(|s| &s.echoes_filtered),
    ),
    problem("gaps", "Sequence gaps detected (lost messages)", C(|s| &s.gaps), "gaps"),
    problem(
        "missed_records",
        "Records known lost through gaps",
        C(|s| &s.missed_records),
        "missed events",
    ),
    spec(
        "sender_restarts",
        "Peers seen restarting without leaving",
        C(|s| &s.sender_restarts),
    ),
    problem(
        "slow_consumer_drops",
        "Times the NATS client dropped messages (capacity.subscription full)",
        C(|s| &s.slow_consumer_events),
        "slow consumer",
    ),
    problem(
        "subscriber_lagged",
        "Notifications local subscribers missed by falling behind",
        C(|s| &s.subscriber_lagged),
        "subscriber lag",
    ),
    problem(
        "disconnects",
        "NATS connection losses",
        C(|s| &s.disconnects),
        "disconnects",
    ),
    problem("reconnects", "NATS reconnections", C(|s| &s.reconnects), "reconnects"),
    problem(
        "node_id_clashes",
        "Messages revealing a node-id clash",
        C(|s| &s.node_id_clashes),
        "node-id clashes",
    ),
    spec(
        "sequence_jumps_undone",
        "Forward jumps in a sender's sequence that later batches proved forged or replayed",
        C(|s| &s.sequence_jumps_undone),
    ),
    problem(
        "unauthenticated_batches",
        "Batches dropped for carrying no MAC while [cluster] key is set",
        C(|s| &s.unauthenticated_batches),
        "unauthenticated",
    ),
    problem(
        "bad_mac_batches",
        "Batches dropped because their MAC matches no cluster key",
        C(|s| &s.bad_mac_batches),
        "bad MAC",
    ),
    spec(
        "rejected_requests",
        "Requests left unanswered because they failed authentication",
        C(|s| &s.rejected_requests),
    ),
    spec(
        "rejected_replies",
        "Replies to this node's requests that failed authentication",
        C(|s| &s.rejected_replies),
    ),
    spec(
        "durable_batches_stored",
        "Batches stored in the JetStream stream",
        D(|d| &d.batches_stored),
    ),
    spec(
        "durable_publish_retries",
        "JetStream store attempts retried",
        D(|d| &d.publish_retries),
    ),
    spec(
        "durable_redeliveries_skipped",
        "JetStream redeliveries skipped (already dispatched)",
        D(|d| &d.redeliveries_skipped),
    ),
    spec(
        "durable_holes_filled",
        "Messages fetched from the stream to fill a hole in delivery",
        D(|d| &d.holes_filled),
    ),
    spec(
        "durable_expired",
        "Stored messages gone (max-age) before this node read them",
        D(|d| &d.expired),
    ),
    spec(
        "durable_own_replays_skipped",
        "This node's own messages from an earlier run, replayed by the stream and skipped",
        D(|d| &d.own_replays_skipped),
    ),
    spec(
        "stalwart_batches_received",
        "Messages received on the Stalwart subject",
        S(|s| &s.batches_received),
    ),
    spec(
        "stalwart_bytes_received",
        "Bytes received on the Stalwart subject",
        S(|s| &s.bytes_received),
    ),
    spec(
        "stalwart_invalid_batches",
        "Stalwart messages that failed to decode, in whole or after some events",
        S(|s| &s.invalid_batches),
    ),
    spec(
        "stalwart_forwarded_copies_skipped",
        "Copies of agora events on the Stalwart subject, skipped (agora's bus delivered them)",
        S(|s| &s.forwarded_copies_skipped),
    ),
    spec(
        "stalwart_events_forwarded",
        "Events this node published on the Stalwart bus",
        S(|s| &s.events_forwarded),
    ),
    spec(
        "stalwart_batches_forwarded",
        "Messages this node published on the Stalwart bus",
        S(|s| &s.batches_forwarded),
    ),
    spec(
        "stalwart_events_refused",
        "Events refused because the configured Stalwart release cannot decode them",
        S(|s| &s.events_refused),
    ),
    spec(
        "stalwart_forward_failures",
        "Forwarded events the NATS client did not take",
        S(|s| &s.forward_failures),
    ),
    spec(
        "stalwart_node_id_clashes",
        "Batches carrying this node's [stalwart] node-id that it did not send",
        S(|s| &s.node_id_clashes),
    ),
    spec(
        "snapshots_fetched",
        "Replicated-state transfers completed (every page merged)",
        N(|n| &n.snapshots_fetched),
    ),
    spec(
        "snapshot_failures",
        "State-transfer attempts that got no page though peers are heard",
        N(|n| &n.snapshot_failures),
    ),
    spec(
        "snapshot_pages",
        "State-transfer pages received from peers",
        N(|n| &n.snapshot_pages),
    ),
    spec(
        "stream_clients_lagged",
        "SSE streams ended because their client fell behind the journal (told with a lagged event)",
        N(|n| &n.streams_lagged),
    ),
    spec(
        "http_connections_refused",
        "Connections past [http] max-connections (only /healthz answered)",
        N(|n| &n.connections_refused),
    ),
    spec(
        "http_streams_refused",
        "SSE streams refused past [http] max-streams",
        N(|n| &n.streams_refused),
    ),
    spec(
        "stream_catch_ups",
        "EventSource streams whose client could not take an event at once, caught up from the journal",
        N(|n| &n.streams_caught_up),
    ),
    spec(
        "tombstones_evicted",
        "Deletions forgotten because a replicated registry held 100,000 tombstones (the oldest go first)",
        N(|n| &n.tombstones_evicted),
    ),
    spec(
        "revocations_refused",
        "Client-token revocations refused (507) or dropped because [http.clients] max-revocations are held",
        N(|n| &n.revocations_refused),
    ),
    spec(
        "client_tokens_refused",
        "Client tokens refused (401 or 403): missing, malformed, expired, badly signed, revoked or out of scope",
        N(|n| &n.client_tokens_refused),
    ),
    spec(
        "push_coalesced",
        "State changes merged into a subscription's pending push instead of a POST of their own",
        N(|n| &n.push.coalesced),
    ),
    spec(
        "push_breaker_opened",
        "Times a push endpoint's circuit breaker opened",
        N(|n| &n.push.breaker_opened),
    ),
];

/// The values `/v1/node` shows: `(counters, stalwart counters)`, each `name -> value` (per-type counters summed,
/// the Stalwart ones without their `stalwart_` prefix); counters whose source is absent are left out.
pub fn node_counters(
    coordinator: &Coordinator,
    node: &NodeMetrics,
) -> (
    serde_json::Map<String, serde_json::Value>,
    serde_json::Map<String, serde_json::Value>,
) {
    let mut counters = serde_json::Map::new();
    let mut stalwart = serde_json::Map::new();
    for spec in COUNTERS {
        let Some(value) = spec.read(coordinator, node).map(|r| r.total()) else {
            continue;
        };
        match spec.name.strip_prefix("stalwart_").filter(|_| spec.is_stalwart()) {
            Some(name) => stalwart.insert(name.to_string(), value.into()),
            None => counters.insert(spec.name.to_string(), value.into()),
        };
    }
    (counters, stalwart)
}

/// The dashboard's problem tiles, `(counter name, label)`, in order.
pub fn dashboard_problems() -> impl Iterator<Item = (&'static str, &'static str)> {
    COUNTERS.iter().filter_map(|spec| Some((spec.name, spec.dashboard?)))
}
