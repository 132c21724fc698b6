//! What the bus's two ends share with the durable mode: one inbound message (and its ack), and why a batch was not
//! sent. Kept apart from [`super::bus`], which chooses between core NATS and the durable stream, so that the durable
//! module can use these without depending on the module that depends on it.

use async_nats::jetstream;
use bytes::Bytes;

use crate::error::Report;
use crate::transport::jetstream::StoreError;

/// Why a batch was not sent; its events are counted as dropped.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    /// The NATS client did not take the batch.
    #[error("NATS did not take the batch")]
    Publish(#[source] async_nats::PublishError),
    /// The durable stream refused it for good (e.g. larger than the server accepts).
    #[error("the durable stream refused the batch")]
    Refused(#[source] StoreError),
    /// Shutdown came while storing it was still being retried.
    #[error("not stored in the durable stream before shutdown")]
    NotStoredBeforeShutdown(#[source] StoreError),
    /// The connection was closed for good before or while sending.
    #[error("the NATS connection is closed for good")]
    Closed,
}

/// One message for the receiver. Call [`Inbound::done`] after dispatching it.
pub(super) struct Inbound {
    /// The batch's bytes.
    pub(super) payload: Bytes,
    /// The JetStream message to ack, in the durable mode.
    pub(super) ack: Option<jetstream::Message>,
    /// Where the stream stored it (durable mode): gives its events their cluster-wide positions.
    pub(super) stored: Option<StoredAt>,
    /// One of this node's own batches from an earlier run, replayed to its consumer: not news for this process's
    /// subscribers, but part of the stream every node's stream-ordered subscribers see.
    pub(super) own_replay: bool,
}

/// A message's place in the durable stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StoredAt {
    /// The stream's incarnation (its creation time).
    pub(super) incarnation: u64,
    /// The message's stream sequence number.
    pub(super) seq: u64,
}

impl Inbound {
    /// A core NATS message: nothing to ack, no place in a stream.
    pub(super) fn core(payload: Bytes) -> Self {
        Inbound {
            payload,
            ack: None,
            stored: None,
            own_replay: false,
        }
    }
}

impl Inbound {
    /// Acknowledges the message (durable mode): with ack-all this covers everything handed out before it. A lost
    /// ack only means a redelivery, which the inbox skips.
    pub(super) async fn done(self) {
        if let Some(message) = self.ack {
            ack(&message).await;
        }
    }
}

/// Acknowledges one durable message; a failure only means a redelivery, which the inbox skips.
pub(super) async fn ack(message: &jetstream::Message) {
    if let Err(e) = message.ack().await {
        tracing::debug!("cannot ack a durable message: {}", Report(e.as_ref()));
    }
}
