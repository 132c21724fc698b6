//! The coordinator's side of a Stalwart cluster's bus (`[stalwart]`): reading it, and forwarding this node's events
//! to it.
//!
//! - **Reading.** Every agora node subscribes to the Stalwart subject itself and hands each Stalwart event to its
//!   local subscribers once, as the agora event it maps to, with [`Origin::Stalwart`]; nothing read there is ever
//!   re-sent, on either bus. Decoding is the sans-IO codec of [`crate::stalwart`]: bounded, and a bad event costs the
//!   rest of its batch only (what came before it is delivered, the rest is counted and skipped, as in Stalwart). A
//!   message there is input, never a reason to resync: the bus has no MAC and carries none of agora's state.
//! - **Forwarding.** The origin agora node of an event whose type `forward` lists also publishes it on the Stalwart
//!   bus, encoded as the configured release's own serializer would, at most 100 events a message. What that release
//!   cannot decode is refused at `publish` (counted, logged rate-limited, and the caller is told why), so nothing is
//!   ever sent that a Stalwart node would misread.
//! - **Once per node.** The other agora nodes already have a forwarded event through agora's own bus, so they skip its
//!   copy on the Stalwart subject: its node id is a live member's `[stalwart] node-id` (heartbeats announce it). A
//!   tool (`agora publish`) is not a member; its forwarded copies are recognised by content instead, as are this
//!   node's own copies when the server echoes them (no-echo off). Anything else carrying this node's Stalwart id is a
//!   node-id clash, reported like agora's own.
//!
//! The receiver reads the Stalwart subscription in the same task as agora's and, before each Stalwart message, takes
//! every agora message already received: NATS delivers one connection's messages in order, so a sender's heartbeat
//! and its agora copy of an event are always handled before the Stalwart copy they explain.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Delivery, Origin};
use crate::config::StalwartConfig;
use crate::error::Report;
use crate::event::stalwart_mapping as mapping;
use crate::event::Event;
use crate::log_limit;
use crate::stalwart::{StalwartEvent, StalwartVersion, MAX_BATCH_EVENTS};
use crate::stats::Stats;
use crate::transport::nats::NatsTransport;

/// How long a forwarded event is remembered to recognise its copy on the Stalwart subject.
const RECENT_FOR: Duration = Duration::from_secs(10);

/// At most this many remembered forwarded events (tools publish rarely; this bounds a flood).
const RECENT_MAX: usize = 4096;

/// Stalwart senders tracked for metrics and `/v1/node`: the whole u16 space is only 65,536 small entries.
const SENDERS_MAX: usize = 1 << 16;

/// Counters of the Stalwart bus, exported by the node as metrics.
#[derive(Debug)]
pub struct StalwartStats {
    /// Messages received on the Stalwart subject.
    pub batches_received: AtomicU64,
    /// Their bytes.
    pub bytes_received: AtomicU64,
    /// Events delivered from the Stalwart bus, per kind (the order of [`StalwartEvent::KINDS`]).
    pub events_received: [AtomicU64; StalwartEvent::KINDS.len()],
    /// Messages that were not valid Stalwart batches, in whole or in part (the events before the error were
    /// delivered).
    pub invalid_batches: AtomicU64,
    /// Copies of agora events on the Stalwart subject, skipped because agora's own bus delivered them.
    pub forwarded_copies_skipped: AtomicU64,
    /// Events this node published on the Stalwart bus.
    pub events_forwarded: AtomicU64,
    /// Messages this node published on the Stalwart bus.
    pub batches_forwarded: AtomicU64,
    /// Events refused at `publish` because the configured Stalwart release cannot decode them.
    pub events_refused: AtomicU64,
    /// Forwarded events the NATS client did not take.
    pub forward_failures: AtomicU64,
    /// Batches carrying this node's `[stalwart] node-id` that it did not send.
    pub node_id_clashes: AtomicU64,
    /// When the last of them arrived (Unix ms, 0 = never): the clash warning lasts while they do.
    pub last_clash_ms: AtomicU64,
    senders: Mutex<BTreeMap<u16, StalwartSender>>,
}

impl Default for StalwartStats {
    fn default() -> Self {
        StalwartStats {
            batches_received: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            events_received: std::array::from_fn(|_| AtomicU64::new(0)),
            invalid_batches: AtomicU64::new(0),
            forwarded_copies_skipped: AtomicU64::new(0),
            events_forwarded: AtomicU64::new(0),
            batches_forwarded: AtomicU64::new(0),
            events_refused: AtomicU64::new(0),
            forward_failures: AtomicU64::new(0),
            node_id_clashes: AtomicU64::new(0),
            last_clash_ms: AtomicU64::new(0),
            senders: Mutex::new(BTreeMap::new()),
        }
    }
}

/// What this node heard from one sender of the Stalwart bus.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StalwartSender {
    /// Its node id on the Stalwart bus.
    pub node_id: u16,
    /// Batches received from it.
    pub batches: u64,
    /// Events delivered from it.
    pub events: u64,
    /// When the last one arrived (Unix ms).
    pub last_seen_ms: u64,
}

impl StalwartStats {
    /// Every sender heard since start, by node id.
    pub fn senders(&self) -> Vec<StalwartSender> {
        let senders = self.senders.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        senders.values().cloned().collect()
    }

    fn saw(&self, node_id: u16, events: u64, now_ms: u64) {
        let mut senders = self.senders.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if senders.len() >= SENDERS_MAX && !senders.contains_key(&node_id) {
            return;
        }
        let sender = senders.entry(node_id).or_insert(StalwartSender {
            node_id,
            batches: 0,
            events: 0,
            last_seen_ms: now_ms,
        });
        sender.batches += 1;
        sender.events += events;
        sender.last_seen_ms = now_ms;
    }
}

/// The forwarding rules of `[stalwart]`, shared by `publish` (which refuses what cannot be sent) and the publisher.
#[derive(Clone, Debug)]
pub(super) struct StalwartPolicy {
    pub(super) version: StalwartVersion,
    pub(super) subject: String,
    /// `None`: read only.
    node_id: Option<u16>,
    forward: Vec<&'static str>,
}

impl StalwartPolicy {
    pub(super) fn new(config: &StalwartConfig) -> Self {
        StalwartPolicy {
            version: config.version,
            subject: config.subject.clone(),
            node_id: config.node_id,
            forward: if config.node_id.is_some() {
                config.forward.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// The Stalwart form of `event` when this node forwards it; an error naming why when it should be forwarded but
    /// the configured release cannot decode it.
    pub(super) fn forwarded(&self, event: &Event) -> Result<Option<StalwartEvent>, String> {
        if !self.forward.contains(&event.type_name()) {
            return Ok(None);
        }
        let Some(stalwart) = mapping::from_agora(event) else {
            return Ok(None);
        };
        match stalwart.check_supported(self.version) {
            Ok(()) => Ok(Some(stalwart)),
            Err(why) => Err(format!(
                "not published: [stalwart] forward lists {:?}, but {why}",
                event.type_name()
            )),
        }
    }
}

/// Fingerprints of events recently forwarded by anyone this node heard on agora's bus (tools, this node), to
/// recognise their copies on the Stalwart subject.
#[derive(Debug, Default)]
pub(super) struct RecentForwards {
    entries: VecDeque<(u64, Instant)>,
}

/// Shared by the publisher (this node's forwards) and the receiver (tools' events, and the check).
pub(super) type SharedRecent = Arc<Mutex<RecentForwards>>;

impl RecentForwards {
    fn fingerprint(event: &StalwartEvent) -> u64 {
        let mut bytes = Vec::new();
        crate::stalwart::encode_canonical(event, &mut bytes);
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        hasher.finish()
    }

    pub(super) fn remember(&mut self, event: &StalwartEvent, now: Instant) {
        self.expire(now);
        if self.entries.len() >= RECENT_MAX {
            self.entries.pop_front();
        }
        self.entries.push_back((Self::fingerprint(event), now));
    }

    /// True (and forgotten) if every event of the batch was remembered: the batch is a copy.
    fn take_copy(&mut self, events: &[StalwartEvent], now: Instant) -> bool {
        self.expire(now);
        let wanted: Vec<u64> = events.iter().map(Self::fingerprint).collect();
        let known: HashSet<u64> = self.entries.iter().map(|(f, _)| *f).collect();
        if wanted.is_empty() || !wanted.iter().all(|f| known.contains(f)) {
            return false;
        }
        for f in wanted {
            if let Some(i) = self.entries.iter().position(|(g, _)| *g == f) {
                self.entries.remove(i);
            }
        }
        true
    }

    fn expire(&mut self, now: Instant) {
        while self
            .entries
            .front()
            .is_some_and(|(_, at)| now.duration_since(*at) > RECENT_FOR)
        {
            self.entries.pop_front();
        }
    }
}

fn lock(recent: &SharedRecent) -> std::sync::MutexGuard<'_, RecentForwards> {
    recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The publisher's side: sends this node's forwarded events on the Stalwart bus.
pub(super) struct StalwartForwarder {
    transport: NatsTransport,
    policy: StalwartPolicy,
    node_id: u16,
    stats: Arc<StalwartStats>,
    recent: SharedRecent,
}

impl StalwartForwarder {
    /// A forwarder, or `None` when `[stalwart]` forwards nothing.
    pub(super) fn new(
        transport: NatsTransport,
        policy: &StalwartPolicy,
        stats: Arc<StalwartStats>,
        recent: SharedRecent,
    ) -> Option<Self> {
        let node_id = policy.node_id?;
        (!policy.forward.is_empty()).then(|| StalwartForwarder {
            transport,
            policy: policy.clone(),
            node_id,
            stats,
            recent,
        })
    }

    /// Publishes the forwarded ones of `events` (this node's, in order), at most [`MAX_BATCH_EVENTS`] a message.
    pub(super) async fn forward(&self, events: &[Delivery]) {
        let forwarded: Vec<StalwartEvent> = events
            .iter()
            .filter_map(|d| self.policy.forwarded(&d.event).ok().flatten())
            .collect();
        if forwarded.is_empty() {
            return;
        }
        let now = Instant::now();
        {
            let mut recent = lock(&self.recent);
            for event in &forwarded {
                recent.remember(event, now);
            }
        }
        for chunk in forwarded.chunks(MAX_BATCH_EVENTS) {
            let count = chunk.len() as u64;
            let sent = match crate::stalwart::encode_batch(self.policy.version, self.node_id, chunk) {
                Ok(batch) => self
                    .transport
                    .publish_to(self.policy.subject.clone(), batch.into())
                    .await
                    .map_err(|e| Report(&e).to_string()),
                Err(e) => Err(Report(&e).to_string()),
            };
            match sent {
                Ok(()) => {
                    Stats::add(&self.stats.batches_forwarded, 1);
                    Stats::add(&self.stats.events_forwarded, count);
                }
                Err(why) => {
                    let (total, log) = log_limit::count(&self.stats.forward_failures, count);
                    if log {
                        tracing::error!(total, "cannot forward {count} event(s) to the Stalwart bus: {why}");
                    }
                }
            }
        }
    }
}

/// What the receiver makes of one message on the Stalwart subject.
pub(super) struct StalwartInbound {
    /// Events to dispatch locally.
    pub(super) deliveries: Vec<Delivery>,
}

/// The receiver's side: decodes the Stalwart subject's messages and decides what to deliver.
pub(super) struct StalwartReader {
    pub(super) subscriber: async_nats::Subscriber,
    policy: StalwartPolicy,
    stats: Arc<StalwartStats>,
    recent: SharedRecent,
    clash_tx: tokio::sync::watch::Sender<Option<u16>>,
}

impl StalwartReader {
    pub(super) fn new(
        subscriber: async_nats::Subscriber,
        policy: StalwartPolicy,
        stats: Arc<StalwartStats>,
        recent: SharedRecent,
        clash_tx: tokio::sync::watch::Sender<Option<u16>>,
    ) -> Self {
        StalwartReader {
            subscriber,
            policy,
            stats,
            recent,
            clash_tx,
        }
    }

    /// Remembers an agora event from a sender that is not a member (a tool): if it is forwarded, its copy on the
    /// Stalwart subject must not be delivered a second time.
    pub(super) fn note_tool_event(&self, event: &Event) {
        if let Some(stalwart) = mapping::from_agora(event) {
            lock(&self.recent).remember(&stalwart, Instant::now());
        }
    }

    /// Handles one message; `member_ids` are the live members' `[stalwart] node-id`s.
    pub(super) fn on_message(&self, payload: &[u8], member_ids: &[u16]) -> StalwartInbound {
        let mut inbound = StalwartInbound { deliveries: Vec::new() };
        Stats::add(&self.stats.batches_received, 1);
        Stats::add(&self.stats.bytes_received, payload.len() as u64);
        let batch = match crate::stalwart::decode_batch(self.policy.version, payload) {
            Ok(batch) => batch,
            Err(e) => {
                let (total, log) = log_limit::count(&self.stats.invalid_batches, 1);
                if log {
                    tracing::warn!(
                        bytes = payload.len(),
                        total,
                        "skipped a message that is not a Stalwart batch: {e}"
                    );
                }
                return inbound;
            }
        };
        let sender = batch.node_id;
        let own = self.policy.node_id == Some(sender);
        if own || member_ids.contains(&sender) {
            if lock(&self.recent).take_copy(&batch.events, Instant::now()) || !own {
                Stats::add(&self.stats.forwarded_copies_skipped, batch.events.len() as u64);
                return inbound;
            }
            let (total, log) = log_limit::count(&self.stats.node_id_clashes, 1);
            if log {
                tracing::error!(
                    stalwart_node_id = sender,
                    total,
                    "STALWART NODE ID CLASH: a batch on {} carries this node's [stalwart] node-id {sender}, which it did \
                     not send; give agora a [stalwart] node-id no Stalwart node and no other agora node uses",
                    self.policy.subject
                );
            }
            self.stats
                .last_clash_ms
                .store(crate::clock::now_ms(), std::sync::atomic::Ordering::Relaxed);
            self.clash_tx.send_replace(Some(sender));
            return inbound;
        }
        let now_us = crate::clock::now_us();
        self.stats.saw(sender, batch.events.len() as u64, now_us / 1000);
        for event in batch.events {
            if let Some(i) = StalwartEvent::KINDS.iter().position(|k| *k == event.kind()) {
                Stats::add(&self.stats.events_received[i], 1);
            }
            inbound.deliveries.push(Delivery {
                origin: Origin::Stalwart(sender),
                time_us: now_us,
                event: mapping::to_agora(event),
            });
        }
        if let Some(error) = batch.error {
            let (total, log) = log_limit::count(&self.stats.invalid_batches, 1);
            if log {
                tracing::warn!(
                    stalwart_node_id = sender,
                    total,
                    delivered = inbound.deliveries.len(),
                    "skipped the rest of a Stalwart batch, which does not decode: {error}"
                );
            }
            // Malformed input, not a loss of agora's events: Stalwart's bus has no MAC and carries none of agora's
            // replicated state, so anything on it is counted and skipped, never a reason for subscribers to resync.
        }
        inbound
    }
}
