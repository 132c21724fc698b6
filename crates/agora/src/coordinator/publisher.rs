//! The publisher task: drains the outgoing queue into batches and hands them to NATS.
//!
//! Batching is opportunistic: when the queue is idle an event goes out alone and at once (no linger timer, so no
//! added latency); while NATS is busy, events pile up in the queue and the next batch takes all of them, up to the
//! server's `max_payload`. Heartbeats ride the same sequence numbers, so receivers notice a gap even on a quiet bus.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::dispatch::Dispatcher;
use super::queue::OutgoingQueue;
use super::Delivery;
use crate::clock;
use crate::codec::{BatchEncoder, Control, Heartbeat};
use crate::stats::Stats;
use crate::transport::nats::NatsTransport;
use crate::transport::LinkState;

/// How long shutdown waits for NATS to confirm the last writes.
const FLUSH_DEADLINE: Duration = Duration::from_secs(2);

pub(super) struct Publisher {
    pub(super) transport: NatsTransport,
    /// Durable mode: batches are stored in JetStream (acked, retried) instead of published on core NATS.
    pub(super) durable: Option<super::durable::DurablePublisher>,
    pub(super) encoder: BatchEncoder,
    /// Sequence number of the next record.
    pub(super) next_seq: u64,
    pub(super) queue: Arc<OutgoingQueue>,
    /// What was taken from the queue and is being encoded (kept to reuse its allocation).
    pub(super) pending: Vec<Delivery>,
    /// Local subscribers get the queued events from here, a batch at a time.
    pub(super) dispatcher: Arc<Dispatcher>,
    /// `None` for tools, which are not members.
    pub(super) heartbeat: Option<Heartbeat>,
    pub(super) heartbeat_interval: Duration,
    pub(super) link_rx: watch::Receiver<LinkState>,
    pub(super) stats: Arc<Stats>,
    pub(super) shutdown: CancellationToken,
    /// Set once shutdown confirmed that the server processed everything sent.
    pub(super) flushed: Arc<std::sync::atomic::AtomicBool>,
}

impl Publisher {
    pub(super) async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.heartbeat_interval);
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
        self.finish().await;
    }

    /// Dispatches everything taken from the queue to local subscribers, then sends it in as few batches as
    /// `max_payload` allows.
    async fn send_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        match self.dispatcher.send_batch_shared(pending) {
            Ok(shared) => self.encode_and_send(shared.as_slice()).await,
            Err(mut unshared) => {
                self.encode_and_send(&unshared).await;
                unshared.clear();
                self.pending = unshared;
            }
        }
    }

    async fn encode_and_send(&mut self, events: &[Delivery]) {
        let max_payload = self.transport.max_payload();
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
        self.next_seq += count;
        let batch = self.encoder.finish();
        let len = batch.len() as u64;
        let closed = matches!(*self.link_rx.borrow(), LinkState::Closed { .. });
        let result = if closed {
            Err("the NATS connection is closed for good".to_string())
        } else {
            let mut link_rx = self.link_rx.clone();
            tokio::select! {
                r = super::durable::send(&self.transport, self.durable.as_ref(), batch) => r,
                // While disconnected, async-nats buffers in its client channel; if that is full and the link is
                // then closed for good, stop waiting.
                _ = link_rx.wait_for(|s| matches!(s, LinkState::Closed { .. })) => {
                    Err("the NATS connection closed while sending".to_string())
                }
            }
        };
        match result {
            Ok(()) => {
                Stats::add(&self.stats.batches_sent, 1);
                Stats::add(&self.stats.records_sent, count);
                Stats::add(&self.stats.bytes_sent, len);
            }
            Err(reason) => {
                let before = self
                    .stats
                    .dropped_events
                    .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                if before == 0 || (before + count).ilog2() != before.ilog2() {
                    tracing::error!(
                        dropped = count,
                        total_dropped = before + count,
                        "events not sent: {reason}"
                    );
                }
            }
        }
    }

    /// Sends what is still queued, says goodbye, and flushes.
    async fn finish(&mut self) {
        self.queue.close();
        self.queue.take_now(&mut self.pending);
        self.send_pending().await;
        if self.heartbeat.is_some() {
            self.send_control(&Control::Leave).await;
        }
        if matches!(*self.link_rx.borrow(), LinkState::Closed { .. }) {
            return;
        }
        // A round trip, not just a socket flush: the server has processed every batch once it answers.
        match tokio::time::timeout(FLUSH_DEADLINE, self.transport.sync_with_server()).await {
            Ok(Ok(())) if Stats::get(&self.stats.dropped_events) == 0 => {
                self.flushed.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("shutdown: NATS did not confirm the last batches: {e}"),
            Err(_) => tracing::warn!("shutdown: NATS did not confirm the last batches within {FLUSH_DEADLINE:?}"),
        }
    }
}
