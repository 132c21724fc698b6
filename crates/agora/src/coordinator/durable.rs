//! The durable mode's side of the coordinator: storing batches without dropping any, and reading a node's durable
//! consumer strictly in stream order.
//!
//! Publishing: each batch is stored with a JetStream publish and the publisher waits for the ack before the next one
//! (one batch in flight keeps the stream in the sender's order; batches grow while an ack is awaited, so throughput
//! does not suffer). A failed store is retried with jittered back-off, the same batch, so the order holds and nothing
//! is dropped; events keep queueing meanwhile and `publish` callers feel backpressure. Only a batch that can never
//! be stored (too large), a link closed for good, or a shutdown that cannot flush within its deadline gives up, and
//! those are counted in `dropped_events` and logged.
//!
//! Receiving: every node reads the stream through its own durable pull consumer (`agora-node-<id>`, ack-all). The
//! inbox hands messages to the receiver in stream order, each exactly once per process:
//! - a message whose stream sequence was already handed out (a redelivery after a lost ack or a reconnect) is acked
//!   and skipped;
//! - a message that arrives ahead of a hole (messages lost in flight when a connection dropped are only redelivered
//!   after the ack wait) is held while the missing ones are fetched directly from the stream, in order;
//! - this node's own batches from an earlier run (replayed to its consumer) are marked, so they are not mistaken
//!   for a node-id clash (they go to stream-ordered subscribers only).
//!
//! Behind that, the receiver's [`PeerTable`](crate::peers::PeerTable) still deduplicates by sender and sequence
//! number (e.g. a batch stored twice because an ack was lost after the stream's duplicate window), and still flags
//! a sender restart. The receiver acks a message after dispatching it; with ack-all, that also covers the holes
//! filled before it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, consumer::pull};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::message::{ack, Inbound, SendError, StoredAt};
use crate::backoff::Backoff;
use crate::codec;
use crate::error::Report;
use crate::event::NodeId;
use crate::log_limit::LogLimiter;
use crate::stats::Stats;
use crate::transport::jetstream::{ApiError, DurableStats, JetStream, MSG_ID_ROOM};

/// How long a shutting-down publisher keeps retrying to store what is left before counting it as dropped.
const SHUTDOWN_RETRY: Duration = Duration::from_secs(3);

/// Pauses between store attempts: 20 ms doubling to 500 ms, so a recovered server is used within half a second.
const STORE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));

/// Pauses before re-opening the consumer's message stream after an error: 50 ms doubling to 2 s.
const REOPEN_BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));

/// Pull requests: messages per request, how long one stays open, and the server's idle heartbeat (a missed one
/// means the connection or the consumer is gone, and the stream is re-opened).
const PULL_BATCH: usize = 512;
const PULL_EXPIRES: Duration = Duration::from_secs(5);
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);

/// Stores batches in the stream, retrying until they are stored.
#[derive(Debug)]
pub(super) struct DurablePublisher {
    js: Arc<JetStream>,
    stats: Arc<DurableStats>,
    /// Once cancelled, retries stop after [`SHUTDOWN_RETRY`].
    shutdown: CancellationToken,
}

impl DurablePublisher {
    /// A publisher storing in `js`'s stream.
    pub(super) fn new(js: Arc<JetStream>, stats: Arc<DurableStats>, shutdown: CancellationToken) -> Self {
        DurablePublisher { js, stats, shutdown }
    }

    /// Stores one batch, waiting for the ack; retries with back-off while the failure is transient. An error means
    /// the batch is not stored and will not be: the caller counts its events as dropped.
    pub(super) async fn store(&self, batch: Bytes, max_payload: usize) -> Result<(), SendError> {
        // The stream drops a retry of a batch it already stored (lost ack) within its duplicate window.
        let msg_id = (batch.len() + MSG_ID_ROOM <= max_payload)
            .then(|| codec::decode_batch(&batch).ok().map(|r| *r.header()))
            .flatten()
            .map(|h| format!("{}-{:016x}-{}", h.node_id, h.instance_id, h.first_seq));
        let failures = LogLimiter::new();
        let mut give_up_at = None;
        loop {
            match self.js.store(batch.clone(), msg_id.as_deref()).await {
                Ok(_) => {
                    Stats::add(&self.stats.batches_stored, 1);
                    let (attempts, _) = failures.record();
                    if attempts > 1 {
                        tracing::info!(attempts, "batch stored in the durable stream after retrying");
                    }
                    return Ok(());
                }
                Err(e) if e.is_permanent() => return Err(SendError::Refused(e)),
                Err(e) => {
                    let (attempts, log) = failures.record();
                    Stats::add(&self.stats.publish_retries, 1);
                    if log {
                        tracing::warn!(
                            attempts,
                            stream = self.js.stream_name(),
                            "cannot store a batch in the durable stream yet, retrying: {}",
                            Report(&e)
                        );
                    }
                    if e.is_stream_missing() {
                        self.js.recreate_stream().await;
                    }
                    let delay = STORE_BACKOFF.delay(u32::try_from(attempts).unwrap_or(u32::MAX));
                    if self.shutdown.is_cancelled() {
                        let deadline = *give_up_at.get_or_insert_with(|| tokio::time::Instant::now() + SHUTDOWN_RETRY);
                        if tokio::time::Instant::now() >= deadline {
                            return Err(SendError::NotStoredBeforeShutdown(e));
                        }
                        tokio::time::sleep(delay).await;
                    } else {
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = self.shutdown.cancelled() => {}
                        }
                    }
                }
            }
        }
    }
}

/// A node's durable consumer, read in stream order (see the module documentation).
pub(super) struct DurableInbox {
    js: Arc<JetStream>,
    consumer: PullConsumer,
    messages: Option<pull::Stream>,
    /// Stream sequence of the last message handed out or skipped; `None` until known.
    last: Option<u64>,
    /// A delivered message that arrived ahead of a hole, handed out once the hole is filled.
    held: Option<jetstream::Message>,
    /// Stream sequences still to fetch directly before `held`.
    fill: std::ops::Range<u64>,
    node_id: NodeId,
    instance_id: u64,
    /// Own batches older than this (Unix µs) come from an earlier run of this node.
    started_at_us: u64,
    /// Failed attempts to read the consumer since the last success: paces re-opening and its log lines.
    reopen_failures: LogLimiter,
    stats: Arc<DurableStats>,
    shutdown: CancellationToken,
}

impl DurableInbox {
    /// Opens (or creates) the consumer `agora-node-<id>`.
    pub(super) async fn open(
        js: Arc<JetStream>,
        node_id: NodeId,
        instance_id: u64,
        started_at_ms: u64,
        stats: Arc<DurableStats>,
        shutdown: CancellationToken,
    ) -> Result<Self, ApiError> {
        let name = consumer_name(node_id);
        let (consumer, last, created) = js.node_consumer(&name).await?;
        tracing::info!(
            consumer = %name,
            stream = js.stream_name(),
            from_stream_seq = last + 1,
            "durable mode: {} consumer",
            if created { "created a new" } else { "resuming the" }
        );
        Ok(DurableInbox {
            js,
            consumer,
            messages: None,
            last: Some(last),
            held: None,
            fill: 0..0,
            node_id,
            instance_id,
            started_at_us: started_at_ms.saturating_mul(1000),
            reopen_failures: LogLimiter::new(),
            stats,
            shutdown,
        })
    }

    pub(super) async fn next(&mut self) -> Option<Inbound> {
        loop {
            if self.held.is_some() {
                if let Some(inbound) = self.fill_next().await {
                    return Some(inbound);
                }
                if self.fill.is_empty() {
                    let message = self.held.take()?;
                    if let Some(inbound) = self.accept(message) {
                        return Some(inbound);
                    }
                }
                if self.shutdown.is_cancelled() {
                    return None;
                }
                continue;
            }
            let message = self.receive().await?;
            let Ok(seq) = message.info().map(|i| i.stream_sequence) else {
                continue; // not a JetStream delivery: nothing to ack, nothing to order
            };
            match self.last {
                Some(last) if seq <= last => {
                    Stats::add(&self.stats.redeliveries_skipped, 1);
                    ack(&message).await;
                }
                Some(last) if seq > last + 1 => {
                    // Messages last+1..seq were lost in flight: fetch them first, from the oldest still stored.
                    let start = match self.js.stream_bounds().await {
                        Ok((_, stream_last)) if stream_last < last => {
                            tracing::warn!(
                                stream = self.js.stream_name(),
                                "the durable stream restarted from scratch (memory storage?); reading it anew"
                            );
                            self.last = None;
                            seq
                        }
                        Ok((first, _)) if first > last + 1 => {
                            let expired = first.min(seq) - (last + 1);
                            Stats::add(&self.stats.expired, expired);
                            tracing::warn!(
                                missed = expired,
                                "durable mode: {expired} message(s) expired (jetstream.max-age) before this node read them"
                            );
                            first.min(seq)
                        }
                        _ => last + 1,
                    };
                    self.fill = start..seq;
                    self.held = Some(message);
                }
                _ => {
                    if let Some(inbound) = self.accept(message) {
                        return Some(inbound);
                    }
                }
            }
        }
    }

    /// Fetches the next missing message of the current hole, if there is one to hand out.
    async fn fill_next(&mut self) -> Option<Inbound> {
        while let Some(seq) = self.fill.clone().next() {
            match self.js.get(seq).await {
                Ok(Some(payload)) => {
                    self.fill.start = seq + 1;
                    self.last = Some(seq);
                    Stats::add(&self.stats.holes_filled, 1);
                    let own_replay = self.is_own_replay(&payload);
                    return Some(Inbound {
                        payload,
                        ack: None,
                        stored: Some(self.stored_at(seq)),
                        own_replay,
                    });
                }
                Ok(None) => {
                    // Gone (expired): the receiver sees the sender's sequence gap and reports the loss.
                    Stats::add(&self.stats.expired, 1);
                    self.fill.start = seq + 1;
                    self.last = Some(seq);
                }
                Err(e) => {
                    tracing::debug!(seq, "cannot fetch a missed durable message yet: {}", Report(&e));
                    tokio::select! {
                        () = tokio::time::sleep(STORE_BACKOFF.delay(4)) => {}
                        () = self.shutdown.cancelled() => return None,
                    }
                }
            }
        }
        None
    }

    /// Hands out a delivered message in order, this node's own replayed batches marked as such.
    fn accept(&mut self, message: jetstream::Message) -> Option<Inbound> {
        let seq = message.info().ok()?.stream_sequence;
        self.last = Some(seq);
        Some(Inbound {
            payload: message.payload.clone(),
            own_replay: self.is_own_replay(&message.payload),
            stored: Some(self.stored_at(seq)),
            ack: Some(message),
        })
    }

    /// The stream this consumer reads.
    pub(super) fn jetstream(&self) -> Arc<JetStream> {
        self.js.clone()
    }

    /// Where this consumer started reading: everything stored after this, and nothing before, reaches this process.
    pub(super) fn start_position(&self) -> crate::coordinator::StreamPosition {
        crate::coordinator::StreamPosition {
            incarnation: self.js.incarnation(),
            seq: self.last.unwrap_or(0),
            index: u32::MAX,
        }
    }

    /// The place of the message at `seq` in the current incarnation of the stream.
    fn stored_at(&self, seq: u64) -> StoredAt {
        StoredAt {
            incarnation: self.js.incarnation(),
            seq,
        }
    }

    /// A batch this node sent in an earlier run, before this process started.
    fn is_own_replay(&self, payload: &[u8]) -> bool {
        let Ok(reader) = codec::decode_batch(payload) else {
            return false;
        };
        let header = reader.header();
        let replay = header.node_id == self.node_id
            && header.instance_id != self.instance_id
            && header.base_time_us < self.started_at_us;
        if replay {
            Stats::add(&self.stats.own_replays_skipped, 1);
        }
        replay
    }

    /// The next delivered message, re-opening the pull stream after errors; `None` on shutdown.
    async fn receive(&mut self) -> Option<jetstream::Message> {
        loop {
            if self.shutdown.is_cancelled() {
                return None;
            }
            let messages = match &mut self.messages {
                Some(messages) => messages,
                None => {
                    let opened = self
                        .consumer
                        .stream()
                        .max_messages_per_batch(PULL_BATCH)
                        .expires(PULL_EXPIRES)
                        .heartbeat(PULL_HEARTBEAT)
                        .messages()
                        .await;
                    match opened {
                        Ok(messages) => self.messages.insert(messages),
                        Err(e) => {
                            self.pause_after_error("cannot read the durable consumer", &e).await;
                            continue;
                        }
                    }
                }
            };
            let next = tokio::select! {
                () = self.shutdown.cancelled() => return None,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    self.reopen_failures.reset();
                    return Some(message);
                }
                Some(Err(e)) => {
                    // Missed heartbeats (server gone), failed pull requests, a deleted consumer: start over with a
                    // fresh pull stream (and consumer); order is kept by stream sequence across the switch.
                    self.messages = None;
                    let deleted = e.kind() == pull::MessagesErrorKind::ConsumerDeleted;
                    self.pause_after_error("reading the durable consumer failed", &e).await;
                    if deleted {
                        self.reopen_consumer().await;
                    }
                }
                None => {
                    self.messages = None;
                    self.pause_after_error("the durable consumer's message stream ended", &StreamEnded)
                        .await;
                }
            }
        }
    }

    /// Re-creates the consumer after it was deleted (e.g. a memory stream lost in a server restart).
    async fn reopen_consumer(&mut self) {
        self.js.recreate_stream().await;
        match self.js.node_consumer(&consumer_name(self.node_id)).await {
            Ok((consumer, _, _)) => self.consumer = consumer,
            Err(e) => tracing::warn!("cannot re-create the durable consumer: {}", Report(&e)),
        }
    }

    async fn pause_after_error(&mut self, what: &str, error: &(dyn std::error::Error + Send + Sync + 'static)) {
        let (attempts, log) = self.reopen_failures.record();
        if log {
            tracing::warn!(attempts, key = self.js.key(), "{what}; retrying: {}", Report(error));
        }
        let delay = REOPEN_BACKOFF.delay(u32::try_from(attempts).unwrap_or(u32::MAX));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = self.shutdown.cancelled() => {}
        }
    }
}

/// The consumer's pull stream ended without an error.
#[derive(Debug, thiserror::Error)]
#[error("no more messages")]
struct StreamEnded;

/// The durable consumer's name: one per node id, so a restarted node resumes where it stopped.
pub(super) fn consumer_name(node_id: NodeId) -> String {
    format!("agora-node-{node_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_follow_the_node_id() {
        assert_eq!(consumer_name(NodeId::new(7).expect("non-zero")), "agora-node-7");
    }
}
