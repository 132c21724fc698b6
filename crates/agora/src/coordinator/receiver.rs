//! The receiver task: decodes batches from other nodes and dispatches their events to local subscribers.
//!
//! Nothing a peer sends can stop it: a message that is not a batch is counted and skipped, a bad record is counted
//! and skipped while the rest of its batch is delivered, and every loss it can see (sequence gaps, restarts) is
//! counted, logged and announced to subscribers as a resync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::dispatch::Dispatcher;
use super::{Delivery, Notification, ResyncReason};

/// Smallest encoded record (tag, time delta, length, one byte of body), to bound what a batch header may make us
/// reserve.
const MIN_RECORD_BYTES: usize = 4;
use crate::clock;
use crate::codec::{self, Control, Record, RecordErrorKind};
use crate::peers::{Member, MembershipChange, NodeIdClash, PeerTable};
use crate::stats::Stats;

pub(super) struct Receiver {
    pub(super) subscriber: super::durable::Inbox,
    pub(super) peers: PeerTable,
    pub(super) expiry_interval: Duration,
    pub(super) dispatcher: Arc<Dispatcher>,
    pub(super) members_tx: watch::Sender<Arc<Vec<Member>>>,
    pub(super) clash_tx: watch::Sender<Option<NodeIdClash>>,
    pub(super) stats: Arc<Stats>,
    pub(super) shutdown: CancellationToken,
    pub(super) log_limiter: LogLimiter,
    /// With `[cluster] key`: batches without a valid MAC are dropped before any record is read.
    pub(super) auth: crate::auth::Authenticator,
}

/// Logs the 1st, 2nd, 4th, 8th... occurrence of a kind of problem, so a flood of garbage cannot flood the log
/// while the counters keep the exact numbers.
#[derive(Debug, Default)]
pub(super) struct LogLimiter {
    seen: AtomicU64,
}

impl LogLimiter {
    fn should_log(&self) -> bool {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        n.is_power_of_two()
    }
}

impl Receiver {
    pub(super) async fn run(mut self) {
        let mut expiry = tokio::time::interval(self.expiry_interval);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                message = self.subscriber.next() => match message {
                    Some(message) => {
                        self.on_message(&message.payload);
                        message.done().await; // durable mode: ack after dispatch
                    }
                    None => {
                        tracing::warn!("the NATS subscription ended; no more events will be received");
                        break;
                    }
                },
                _ = expiry.tick() => self.expire(),
            }
        }
    }

    fn expire(&mut self) {
        let changes = self.peers.expire(Instant::now());
        if !changes.is_empty() {
            for change in changes {
                if let MembershipChange::TimedOut(node) = change {
                    tracing::warn!(
                        node_id = node.get(),
                        "node stopped sending heartbeats; removed from membership"
                    );
                }
            }
            self.publish_members();
        }
    }

    fn publish_members(&self) {
        self.members_tx.send_replace(Arc::new(self.peers.members()));
    }

    fn on_message(&mut self, payload: &[u8]) {
        Stats::add(&self.stats.batches_received, 1);
        Stats::add(&self.stats.bytes_received, payload.len() as u64);
        let reader = match codec::decode_batch(payload) {
            Ok(reader) => reader,
            Err(e) => {
                Stats::add(&self.stats.invalid_batches, 1);
                if self.log_limiter.should_log() {
                    tracing::warn!(
                        bytes = payload.len(),
                        total = Stats::get(&self.stats.invalid_batches),
                        "skipped a message that is not an agora batch: {e}"
                    );
                }
                return;
            }
        };
        if !self.auth.admit_batch(&reader) {
            return;
        }
        let header = *reader.header();
        let verdict = self.peers.observe_batch(&header, Instant::now(), clock::now_ms());
        if let Some(clash) = verdict.clash {
            Stats::add(&self.stats.node_id_clashes, 1);
            tracing::error!(
                node_id = clash.node_id.get(),
                instances = ?clash.instances.map(|i| format!("{i:016x}")),
                involves_this_node = clash.involves_us,
                "NODE ID CLASH: two running processes use node id {}; give every node a unique [cluster] node-id",
                clash.node_id
            );
            self.clash_tx.send_replace(Some(clash));
        }
        if verdict.own {
            if verdict.echo {
                Stats::add(&self.stats.echoes_filtered, 1);
            }
            return;
        }
        let origin = header.node_id;
        if verdict.missed > 0 {
            Stats::add(&self.stats.gaps, 1);
            Stats::add(&self.stats.missed_records, verdict.missed);
            tracing::warn!(
                node_id = origin.get(),
                missed = verdict.missed,
                "missed events from node {origin}; subscribers are told to resync"
            );
            self.dispatcher.send_notice(Notification::Resync {
                node: origin,
                missed: verdict.missed,
                reason: ResyncReason::Gap,
            });
        }
        if verdict.restarted {
            Stats::add(&self.stats.sender_restarts, 1);
            tracing::info!(
                node_id = origin.get(),
                "node restarted without leaving; subscribers are told to resync"
            );
            self.dispatcher.send_notice(Notification::Resync {
                node: origin,
                missed: 0,
                reason: ResyncReason::SenderRestarted,
            });
        }
        let mut membership_changed = false;
        // Counted per batch, then added once per type: one atomic add per batch instead of per event.
        let mut received = [0u64; crate::stats::EVENT_TYPES];
        // Reserve for the whole batch at once (no regrowth), but never more than the payload could hold: the count
        // comes from the wire, and a record takes at least 4 bytes.
        let room = (header.count as usize).min(payload.len() / MIN_RECORD_BYTES);
        let mut deliveries = Vec::with_capacity(room);
        for item in reader.skip(usize::try_from(verdict.skip).unwrap_or(usize::MAX)) {
            match item {
                Ok(decoded) => match decoded.record {
                    Record::Event(event) => {
                        received[event.type_index()] += 1;
                        deliveries.push(Delivery {
                            origin,
                            time_us: decoded.time_us,
                            event,
                        });
                    }
                    Record::Control(Control::Heartbeat(hb)) => {
                        if self.peers.on_heartbeat(origin, header.instance_id, &hb) {
                            tracing::info!(node_id = origin.get(), http = ?hb.http, "node joined");
                        }
                        membership_changed = true;
                    }
                    Record::Control(Control::Leave) => {
                        if self.peers.on_leave(origin, header.instance_id).is_some() {
                            tracing::info!(node_id = origin.get(), "node left");
                            membership_changed = true;
                        }
                    }
                },
                Err(e) => {
                    // One count per bad record; a truncated batch counts once (the record count in its header
                    // comes from the wire and may be absurd), and the log says how many records it claimed.
                    Stats::add(&self.stats.invalid_records, 1);
                    if self.log_limiter.should_log() {
                        let missing = if matches!(e.kind, RecordErrorKind::Truncated) {
                            u64::from(header.count).saturating_sub(e.seq.saturating_sub(header.first_seq))
                        } else {
                            1
                        };
                        tracing::warn!(
                            node_id = origin.get(),
                            seq = e.seq,
                            tag = e.tag,
                            total = Stats::get(&self.stats.invalid_records),
                            "skipped {missing} record(s) from node {origin}: {e}"
                        );
                    }
                }
            }
        }
        for (counter, n) in self.stats.received.iter().zip(received) {
            if n > 0 {
                Stats::add(counter, n);
            }
        }
        self.dispatcher.send_batch(deliveries);
        if membership_changed {
            self.publish_members();
        }
    }
}
