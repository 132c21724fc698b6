//! The publisher task: drains the outgoing queue into batches and hands them to NATS.
//!
//! Batching is opportunistic: when the queue is idle an event goes out alone and at once (no linger timer, so no
//! added latency); while NATS is busy, events pile up in the queue and the next batch takes all of them, up to the
//! server's `max_payload`. Heartbeats ride the same sequence numbers, so receivers notice a gap even on a quiet bus.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::bus::{Outbox, SendError};
use super::dispatch::Dispatcher;
use super::queue::OutgoingQueue;
use super::stalwart::StalwartForwarder;
use super::{Delivery, Shared};
use crate::clock;
use crate::codec::{BatchEncoder, Control, Heartbeat};
use crate::error::Report;
use crate::log_limit;
use crate::stats::Stats;
use crate::transport::LinkState;

/// How long shutdown waits for NATS to confirm the last writes.
const FLUSH_DEADLINE: Duration = Duration::from_secs(2);

/// Sequence number of a sender's first record. Receivers do not rely on it: a sender they have not heard from is
/// taken up wherever its sequence stands (see `peers`), and sequence numbers wrap modulo 2^64.
const FIRST_SEQ: u64 = 0;

/// How often a tool's (idle) ticker fires: tools send no heartbeats, so this only keeps `select!` simple.
const NO_HEARTBEAT: Duration = Duration::from_secs(3600);

/// The publisher task's state.
pub(super) struct Publisher {
    /// Core NATS, or the durable stream (acked, retried).
    outbox: Outbox,
    encoder: BatchEncoder,
    /// Sequence number of the next record (wrapping).
    next_seq: u64,
    queue: Arc<OutgoingQueue>,
    /// What was taken from the queue and is being encoded (kept to reuse its allocation).
    pending: Vec<Delivery>,
    /// Local subscribers get the queued events from here, a batch at a time.
    dispatcher: Arc<Dispatcher>,
    /// `None` for tools, which are not members.
    heartbeat: Option<Heartbeat>,
    /// `[stalwart] forward`: this node's events of those types also go to the Stalwart bus.
    stalwart: Option<StalwartForwarder>,
    link_rx: watch::Receiver<LinkState>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
}

impl Publisher {
    /// A publisher for the coordinator described by `shared`, sending through `outbox`.
    pub(super) fn new(
        shared: &Shared,
        outbox: Outbox,
        queue: Arc<OutgoingQueue>,
        heartbeat: Option<Heartbeat>,
        stalwart: Option<StalwartForwarder>,
        link_rx: watch::Receiver<LinkState>,
    ) -> Self {
        Publisher {
            outbox,
            encoder: BatchEncoder::new(shared.node_id, shared.instance_id).with_keyring(shared.auth.keyring()),
            next_seq: FIRST_SEQ,
            queue,
            pending: Vec::new(),
            dispatcher: shared.dispatcher.clone(),
            heartbeat,
            stalwart,
            link_rx,
            stats: shared.stats.clone(),
            shutdown: shared.shutdown.clone(),
        }
    }

    /// Runs until shutdown, then flushes; sets `flushed` once the server confirmed it processed everything sent.
    pub(super) async fn run(mut self, flushed: Arc<std::sync::atomic::AtomicBool>) {
        let interval = self.heartbeat.as_ref().map_or(NO_HEARTBEAT, |hb| {
            Duration::from_millis(u64::from(hb.interval_ms.max(1)))
        });
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                more = self.queue.pop_all(&mut self.pending) => {
                    if !more {
                        break;
                    }
                    self.send_pending().await;
                }
                _ = ticker.tick(), if self.heartbeat.is_some() => {
                    if let Some(hb) = self.heartbeat.clone() {
                        self.send_control(&Control::Heartbeat(hb)).await;
                    }
                }
            }
        }
        if self.finish().await {
            flushed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Dispatches everything taken from the queue to local subscribers, then sends it in as few batches as
    /// `max_payload` allows.
    async fn send_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        // Agora's bus first, then the Stalwart copies: receivers rely on that order to recognise the copies.
        match self.dispatcher.send_batch_shared(pending) {
            Ok(shared) => {
                self.encode_and_send(shared.as_slice()).await;
                if let Some(stalwart) = &self.stalwart {
                    stalwart.forward(shared.as_slice()).await;
                }
            }
            Err(mut unshared) => {
                self.encode_and_send(&unshared).await;
                if let Some(stalwart) = &self.stalwart {
                    stalwart.forward(&unshared).await;
                }
                unshared.clear();
                self.pending = unshared;
            }
        }
    }

    async fn encode_and_send(&mut self, events: &[Delivery]) {
        let max_payload = self.outbox.max_payload();
        for next in events {
            if self.encoder.is_empty() {
                self.begin(next.time_us);
            }
            if !self.encoder.push_event_within(&next.event, next.time_us, max_payload) {
                self.send_batch().await;
                self.begin(next.time_us);
                self.encoder.push_event(&next.event, next.time_us);
            }
        }
        self.send_batch().await;
    }

    async fn send_control(&mut self, control: &Control) {
        let now = clock::now_us();
        self.begin(now);
        self.encoder.push_control(control, now);
        self.send_batch().await;
    }

    fn begin(&mut self, base_time_us: u64) {
        self.encoder.begin(self.next_seq, base_time_us);
    }

    /// Hands the current batch to NATS. A batch that cannot be handed over (the connection is closed for good) is
    /// counted and logged: receivers will also see the gap in the sequence.
    async fn send_batch(&mut self) {
        let count = u64::from(self.encoder.count());
        if count == 0 {
            return;
        }
        self.next_seq = self.next_seq.wrapping_add(count);
        let batch = self.encoder.finish();
        let len = batch.len() as u64;
        let closed = matches!(*self.link_rx.borrow(), LinkState::Closed { .. });
        let result = if closed {
            Err(SendError::Closed)
        } else {
            let mut link_rx = self.link_rx.clone();
            tokio::select! {
                r = self.outbox.send(batch) => r,
                // While disconnected, async-nats buffers in its client channel; if that is full and the link is
                // then closed for good, stop waiting.
                _ = link_rx.wait_for(|s| matches!(s, LinkState::Closed { .. })) => Err(SendError::Closed),
            }
        };
        match result {
            Ok(()) => {
                Stats::add(&self.stats.batches_sent, 1);
                Stats::add(&self.stats.records_sent, count);
                Stats::add(&self.stats.bytes_sent, len);
            }
            Err(reason) => {
                let (total_dropped, log) = log_limit::count(&self.stats.dropped_events, count);
                if log {
                    tracing::error!(dropped = count, total_dropped, "events not sent: {}", Report(&reason));
                }
            }
        }
    }

    /// Sends what is still queued, says goodbye, and flushes. True if the server confirmed everything was sent.
    async fn finish(&mut self) -> bool {
        self.queue.close();
        self.queue.take_now(&mut self.pending);
        self.send_pending().await;
        if self.heartbeat.is_some() {
            self.send_control(&Control::Leave).await;
        }
        if matches!(*self.link_rx.borrow(), LinkState::Closed { .. }) {
            return false;
        }
        // A round trip, not just a socket flush: the server has processed every batch once it answers.
        match tokio::time::timeout(FLUSH_DEADLINE, self.outbox.sync_with_server()).await {
            Ok(Ok(())) => Stats::get(&self.stats.dropped_events) == 0,
            Ok(Err(e)) => {
                tracing::warn!("shutdown: NATS did not confirm the last batches: {}", Report(&e));
                false
            }
            Err(_) => {
                tracing::warn!("shutdown: NATS did not confirm the last batches within {FLUSH_DEADLINE:?}");
                false
            }
        }
    }
}
