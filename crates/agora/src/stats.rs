//! Counters the coordinator keeps about itself, exported by the node as Prometheus metrics.
//!
//! Plain relaxed atomics: they are bumped on the hot path (every event) and read rarely (a scrape), so they must cost a
//! single uncontended add. The node renders them; the library stays free of any metrics framework.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::event::Event;

/// Number of event types, for per-type counters (the order of [`Event::TYPE_NAMES`]).
pub const EVENT_TYPES: usize = Event::TYPE_NAMES.len();

/// Everything the coordinator counts. Every counter only goes up.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events accepted by `publish`, per type.
    pub published: [AtomicU64; EVENT_TYPES],
    /// Events received from other nodes and dispatched locally, per type.
    pub received: [AtomicU64; EVENT_TYPES],
    /// Batches (NATS messages) sent.
    pub batches_sent: AtomicU64,
    /// Records (events and control) sent in those batches.
    pub records_sent: AtomicU64,
    /// Bytes sent.
    pub bytes_sent: AtomicU64,
    /// Messages received on the cluster subject: every one, including echoes, invalid and unauthenticated ones.
    pub batches_received: AtomicU64,
    /// Bytes of those messages.
    pub bytes_received: AtomicU64,
    /// Messages that were not agora batches at all (bad header, unknown version): skipped.
    pub invalid_batches: AtomicU64,
    /// Records skipped inside otherwise valid batches (unknown tag, corrupt body, truncated).
    pub invalid_records: AtomicU64,
    /// Records (events, heartbeats, leaves) that could not be handed to NATS (connection closed for good, or the
    /// durable stream refused them); logged rate-limited.
    pub dropped_events: AtomicU64,
    /// Own messages echoed back by the server (no-echo off) and filtered by sender id.
    pub echoes_filtered: AtomicU64,
    /// Losses detected: sequence gaps (one or more missed records from one sender) and truncated batches.
    pub gaps: AtomicU64,
    /// Records known to be missed because of those gaps and truncations.
    pub missed_records: AtomicU64,
    /// Times a sender was seen restarting without a clean leave.
    pub sender_restarts: AtomicU64,
    /// Messages the NATS client dropped because the subscription channel was full (slow consumer).
    pub slow_consumer_events: AtomicU64,
    /// Events local subscribers missed because they fell behind (1 when only notices were lost).
    pub subscriber_lagged: AtomicU64,
    /// Connection losses.
    pub disconnects: AtomicU64,
    /// Successful reconnections.
    pub reconnects: AtomicU64,
    /// Node-id clashes detected: each newly seen pair of processes sharing one node id (ours or another's).
    pub node_id_clashes: AtomicU64,
    /// When a batch last showed a node-id clash (Unix ms, 0 = never): a clash warning lasts while evidence does.
    pub last_clash_ms: AtomicU64,
    /// Forward jumps in a sender's sequence that later batches proved were not its own (forged or replayed), and that
    /// were undone.
    pub sequence_jumps_undone: AtomicU64,
    /// Batches dropped because a cluster key is configured but they carry no MAC (a node without the key, or a
    /// forgery): none of their records, heartbeats included, is read.
    pub unauthenticated_batches: AtomicU64,
    /// Batches dropped because their MAC matches none of the configured keys (wrong key, forgery, corruption).
    pub bad_mac_batches: AtomicU64,
    /// Requests this node was asked to serve whose MAC was missing or wrong: dropped unanswered.
    pub rejected_requests: AtomicU64,
    /// Replies to this node's requests whose MAC was missing or wrong: skipped, the request waits for a genuine one
    /// (and fails at `timeout.request` if none comes).
    pub rejected_replies: AtomicU64,
}

impl Stats {
    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    #[inline]
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Sum of a per-type counter.
    pub fn total(per_type: &[AtomicU64; EVENT_TYPES]) -> u64 {
        per_type.iter().map(Self::get).sum()
    }
}
