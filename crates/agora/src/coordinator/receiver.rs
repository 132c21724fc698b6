//! The receiver task: decodes batches from other nodes and dispatches their events to local subscribers.
//!
//! Nothing a peer sends can stop it: a message that is not a batch is counted and skipped, a bad record is counted
//! and skipped while the rest of its batch is delivered, and every loss it can see (sequence gaps, restarts) is
//! counted, logged and announced to subscribers as a resync.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::bus::{Inbound, Inbox};
use super::dispatch::{Batch, Dispatcher};
use super::message::StoredAt;
use super::stalwart::StalwartReader;
use super::{Delivery, Notification, Origin, ResyncReason, Shared};
use crate::clock;
use crate::codec::{self, Control, Record};
use crate::log_limit::{self, LogLimiter};
use crate::peers::{Member, MembershipChange, NodeIdClash, PeerTable};
use crate::stats::Stats;

/// Smallest encoded record (tag, time delta and length, one byte each, and an empty body), to bound what a batch
/// header may make us reserve.
const MIN_RECORD_BYTES: usize = 3;

/// The receiver task's state.
pub(super) struct Receiver {
    inbox: Inbox,
    peers: PeerTable,
    dispatcher: Arc<Dispatcher>,
    /// A durable node's stream-ordered audience: every stored event, this node's own included, with its position.
    ordered: Option<Arc<Dispatcher>>,
    members_tx: watch::Sender<Arc<Vec<Member>>>,
    clash_tx: watch::Sender<Option<NodeIdClash>>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    /// Throttles the log lines about gaps and restarts, which a remote sender can provoke at will.
    loss_log: LogLimiter,
    /// Members removed for silence, logged rate-limited: forged heartbeats can make thousands time out at once.
    timeout_log: LogLimiter,
    /// Throttles the join and leave lines, which forged heartbeats and leaves could provoke at will.
    membership_log: LogLimiter,
    /// With `[cluster] key`: batches without a valid MAC are dropped before any record is read.
    auth: super::authenticator::Authenticator,
    /// `[stalwart]`: the Stalwart subject, read in this same task (see `coordinator::stalwart`).
    stalwart: Option<StalwartReader>,
}

impl Receiver {
    /// A receiver for the coordinator described by `shared`, reading `inbox`.
    pub(super) fn new(
        shared: &Shared,
        inbox: Inbox,
        peers: PeerTable,
        members_tx: watch::Sender<Arc<Vec<Member>>>,
        clash_tx: watch::Sender<Option<NodeIdClash>>,
        stalwart: Option<StalwartReader>,
    ) -> Self {
        Receiver {
            inbox,
            peers,
            dispatcher: shared.dispatcher.clone(),
            ordered: shared.ordered.clone(),
            members_tx,
            clash_tx,
            stats: shared.stats.clone(),
            shutdown: shared.shutdown.clone(),
            loss_log: LogLimiter::new(),
            timeout_log: LogLimiter::new(),
            membership_log: LogLimiter::new(),
            auth: shared.auth.clone(),
            stalwart,
        }
    }

    /// Runs until shutdown or the end of the subscription; expires silent members every `expiry_interval`.
    pub(super) async fn run(mut self, expiry_interval: Duration) {
        let mut expiry = tokio::time::interval(expiry_interval);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                message = self.inbox.next() => match message {
                    Some(message) => {
                        self.on_message(&message);
                        message.done().await; // durable mode: ack after dispatch
                    }
                    None => {
                        tracing::warn!("the NATS subscription ended; no more events will be received");
                        break;
                    }
                },
                Some(message) = next_stalwart(&mut self.stalwart) => self.on_stalwart_message(&message.payload).await,
                _ = expiry.tick() => self.expire(),
            }
        }
    }

    fn expire(&mut self) {
        let changes = self.peers.expire(Instant::now());
        if !changes.is_empty() {
            for change in changes {
                if let MembershipChange::TimedOut(node) = change {
                    // Forged heartbeats (thousands of fake members) time out together: rate-limited, with a total.
                    let (total, log) = self.timeout_log.record();
                    if log {
                        tracing::warn!(
                            node_id = node.get(),
                            total,
                            "node stopped sending heartbeats; removed from membership"
                        );
                    }
                }
            }
            self.publish_members();
        }
    }

    fn publish_members(&self) {
        self.members_tx.send_replace(Arc::new(self.peers.members()));
    }

    fn on_message(&mut self, inbound: &Inbound) {
        let payload = &inbound.payload[..];
        Stats::add(&self.stats.batches_received, 1);
        Stats::add(&self.stats.bytes_received, payload.len() as u64);
        let reader = match codec::decode_batch(payload) {
            Ok(reader) => reader,
            Err(e) => {
                let (total, log) = log_limit::count(&self.stats.invalid_batches, 1);
                if log {
                    tracing::warn!(
                        bytes = payload.len(),
                        total,
                        "skipped a message that is not an agora batch: {e}"
                    );
                }
                return;
            }
        };
        if !self.auth.admit_batch(&reader) {
            return;
        }
        if inbound.own_replay {
            // Sent by this node's earlier run, which dispatched it then; stream-ordered subscribers see it now.
            if let Some(at) = inbound.stored {
                self.dispatch_own_stored(reader, at);
            }
            return;
        }
        let header = *reader.header();
        let verdict = self.peers.observe_batch(&header, Instant::now(), clock::now_ms());
        if verdict.clash_evidence {
            self.stats.last_clash_ms.store(clock::now_ms(), Ordering::Relaxed);
        }
        if verdict.jump_undone {
            let (total, log) = log_limit::count(&self.stats.sequence_jumps_undone, 1);
            if log {
                tracing::warn!(
                    node_id = header.node_id.get(),
                    total,
                    "a batch with node {}'s ids and a sequence number far ahead of its own was not its own (forged or \
                     replayed): its sequence is followed again; set [cluster] key so that nobody can send as a node",
                    header.node_id
                );
            }
        }
        if let Some(clash) = verdict.clash {
            // Rate-limited: forged batches with ever new instance ids would otherwise flood the log.
            let (total, log) = log_limit::count(&self.stats.node_id_clashes, 1);
            if log {
                tracing::error!(
                    node_id = clash.node_id.get(),
                    instances = ?clash.instances.map(|i| format!("{i:016x}")),
                    involves_this_node = clash.involves_us,
                    total,
                    "NODE ID CLASH: two running processes use node id {}; give every node a unique [cluster] node-id",
                    clash.node_id
                );
            }
            self.clash_tx.send_replace(Some(clash));
        }
        if verdict.own {
            if verdict.echo {
                Stats::add(&self.stats.echoes_filtered, 1);
            }
            // Dispatched locally when published; stream-ordered subscribers see it now that it is stored.
            if let Some(at) = inbound.stored {
                self.dispatch_own_stored(reader, at);
            }
            return;
        }
        let origin = header.node_id;
        if verdict.missed > 0 {
            self.report_loss(origin, verdict.missed, "missed events (a sequence gap)");
        }
        if verdict.restarted {
            Stats::add(&self.stats.sender_restarts, 1);
            if self.loss_log.should_log() {
                tracing::info!(
                    node_id = origin.get(),
                    "node restarted without leaving; subscribers are told to resync"
                );
            }
            self.send_notice(Notification::Resync {
                node: Origin::Agora(origin),
                missed: 0,
                reason: ResyncReason::SenderRestarted,
            });
        }
        let mut membership_changed = false;
        let sender_is_member = self.peers.is_member(origin);
        // Counted per batch, then added once per type: one atomic add per batch instead of per event.
        let mut received = [0u64; crate::stats::EVENT_TYPES];
        // Reserve for the whole batch at once (no regrowth), but never more than the payload could hold: the count
        // comes from the wire, and a record takes at least 3 bytes.
        let room = (header.count as usize).min(payload.len() / MIN_RECORD_BYTES);
        let mut deliveries = Vec::with_capacity(room);
        // Each event's record index in the batch, for its stream position (durable mode only).
        let mut indices = Vec::new();
        if inbound.stored.is_some() && self.ordered.is_some() {
            indices.reserve_exact(room);
        }
        // Records of this batch that the reader yields: fewer than announced when reading had to stop early.
        let expected = u64::from(header.count).saturating_sub(verdict.skip);
        let mut read = 0u64;
        for item in reader.skip(usize::try_from(verdict.skip).unwrap_or(usize::MAX)) {
            read += 1;
            match item {
                Ok(decoded) => match decoded.record {
                    Record::Event(event) => {
                        received[event.type_index()] += 1;
                        if let Some(stalwart) = self.stalwart.as_ref().filter(|_| !sender_is_member) {
                            stalwart.note_tool_event(&event);
                        }
                        deliveries.push(Delivery {
                            origin: Origin::Agora(origin),
                            time_us: decoded.time_us,
                            event,
                        });
                        if indices.capacity() > 0 {
                            indices.push(record_index(verdict.skip + read - 1));
                        }
                    }
                    Record::Control(Control::Heartbeat(hb)) => {
                        if self.peers.on_heartbeat(origin, header.instance_id, &hb) && self.membership_log.should_log()
                        {
                            tracing::info!(node_id = origin.get(), http = ?hb.http, "node joined");
                        }
                        membership_changed = true;
                    }
                    Record::Control(Control::Leave) => {
                        if self.peers.on_leave(origin, header.instance_id).is_some() {
                            if self.membership_log.should_log() {
                                tracing::info!(node_id = origin.get(), "node left");
                            }
                            membership_changed = true;
                        }
                    }
                },
                Err(e) => {
                    // One count per bad record; if it ended the reading (truncated, or framing lost), the records
                    // after it are counted below.
                    let (total, log) = log_limit::count(&self.stats.invalid_records, 1);
                    if log {
                        tracing::warn!(
                            node_id = origin.get(),
                            seq = e.seq,
                            tag = e.tag,
                            total,
                            "skipped a record from node {origin}: {e}"
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
        match (inbound.stored, &self.ordered) {
            (Some(at), Some(ordered)) => {
                let batch = Arc::new(Batch::Stored {
                    deliveries,
                    at,
                    indices,
                });
                self.dispatcher.send_shared(&batch);
                ordered.send_shared(&batch);
            }
            _ => {
                self.dispatcher.send_batch(deliveries);
            }
        }
        // The records after the point where reading stopped never arrived, yet their sequence numbers are taken: a
        // loss that no later gap will reveal, so it is reported now.
        let cut_off = expected.saturating_sub(read);
        if cut_off > 0 {
            self.report_loss(origin, cut_off, "lost the end of a truncated batch");
        }
        if membership_changed {
            self.publish_members();
        }
    }

    /// Handles a message of the Stalwart subject, after every agora message already received (see
    /// `coordinator::stalwart` for why).
    async fn on_stalwart_message(&mut self, payload: &[u8]) {
        while let Some(message) = self.inbox.next_if_ready() {
            self.on_message(&message);
            message.done().await;
        }
        let Some(stalwart) = &self.stalwart else { return };
        let member_ids: Vec<u16> = self.peers.members().iter().filter_map(|m| m.stalwart_node_id).collect();
        let inbound = stalwart.on_message(payload, &member_ids);
        if inbound.deliveries.is_empty() {
            return;
        }
        match &self.ordered {
            Some(ordered) => {
                let batch = Arc::new(Batch::Many(inbound.deliveries));
                self.dispatcher.send_shared(&batch);
                ordered.send_shared(&batch);
            }
            None => {
                self.dispatcher.send_batch(inbound.deliveries);
            }
        }
    }

    /// Dispatches the events of one of this node's own stored batches to the stream-ordered subscribers only (the
    /// others got them when they were published).
    fn dispatch_own_stored(&self, reader: codec::BatchReader<'_>, at: StoredAt) {
        if let Some(ordered) = &self.ordered {
            ordered.send_shared(&Arc::new(Batch::stored(reader, at)));
        }
    }

    /// Dispatches a notice to every audience.
    fn send_notice(&self, notice: Notification) {
        if let Some(ordered) = &self.ordered {
            ordered.send_notice(notice.clone());
        }
        self.dispatcher.send_notice(notice);
    }

    /// Counts `missed` records of `origin` as lost, logs it (rate-limited: a remote sender can provoke it at will)
    /// and tells subscribers to resync.
    fn report_loss(&self, origin: crate::event::NodeId, missed: u64, what: &'static str) {
        Stats::add(&self.stats.gaps, 1);
        Stats::add(&self.stats.missed_records, missed);
        if self.loss_log.should_log() {
            tracing::warn!(
                node_id = origin.get(),
                missed,
                total_missed = Stats::get(&self.stats.missed_records),
                "{what} from node {origin}; subscribers are told to resync"
            );
        }
        self.send_notice(Notification::Resync {
            node: Origin::Agora(origin),
            missed,
            reason: ResyncReason::Gap,
        });
    }
}

/// A record's index in its batch as a stream position carries it (a batch holds far fewer than 2^32 records).
fn record_index(index: u64) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// The next message of the Stalwart subscription; never resolves without one.
async fn next_stalwart(stalwart: &mut Option<StalwartReader>) -> Option<Inbound> {
    use futures::StreamExt;
    match stalwart {
        Some(reader) => reader.subscriber.next().await.map(|m| Inbound::core(m.payload)),
        None => std::future::pending().await,
    }
}
