//! Where the coordinator's batches go out and come in: core NATS, or in the durable mode a JetStream stream.
//!
//! The publisher task sends through an [`Outbox`] and the receiver task reads from an [`Inbox`]; each is an enum of
//! the two modes, chosen once at start, so the tasks never branch on configuration.

use async_nats::jetstream;
use async_nats::Subscriber;
use bytes::Bytes;
use futures::StreamExt;

use super::durable::{DurableInbox, DurablePublisher};
use crate::error::Report;
use crate::transport::jetstream::StoreError;
use crate::transport::nats::{NatsTransport, SyncError};

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

/// Where the publisher's batches go.
#[derive(Debug)]
pub(super) enum Outbox {
    /// A core NATS publish: at most once, as fast as the socket.
    Core(NatsTransport),
    /// A JetStream store that waits for the ack and retries (durable mode).
    Durable(NatsTransport, DurablePublisher),
}

impl Outbox {
    /// Hands one batch over: queued for the socket (core), or stored and acknowledged (durable).
    pub(super) async fn send(&self, batch: Bytes) -> Result<(), SendError> {
        match self {
            Outbox::Core(transport) => transport.publish(batch).await.map_err(SendError::Publish),
            Outbox::Durable(transport, durable) => durable.store(batch, transport.max_payload()).await,
        }
    }

    /// The largest batch the current server accepts.
    pub(super) fn max_payload(&self) -> usize {
        self.transport().max_payload()
    }

    /// Waits until the server has processed everything sent so far.
    pub(super) async fn sync_with_server(&self) -> Result<(), SyncError> {
        self.transport().sync_with_server().await
    }

    fn transport(&self) -> &NatsTransport {
        match self {
            Outbox::Core(transport) | Outbox::Durable(transport, _) => transport,
        }
    }
}

/// Where the receiver's messages come from.
pub(super) enum Inbox {
    /// Core NATS (the default mode, and tools in the durable mode: the stream captures the subject, so core
    /// subscribers still see every batch).
    Core(Subscriber),
    /// A node's durable consumer.
    Durable(Box<DurableInbox>),
}

/// One message for the receiver. Call [`Inbound::done`] after dispatching it.
pub(super) struct Inbound {
    pub(super) payload: Bytes,
    /// The JetStream message to ack, in the durable mode.
    pub(super) ack: Option<jetstream::Message>,
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

impl Inbox {
    /// A message already received, if there is one, without waiting (core NATS only: a durable inbox's reads involve
    /// requests, which must not be abandoned half-way).
    pub(super) fn next_if_ready(&mut self) -> Option<Inbound> {
        use futures::FutureExt;
        match self {
            Inbox::Core(subscriber) => subscriber.next().now_or_never().flatten().map(|m| Inbound {
                payload: m.payload,
                ack: None,
            }),
            Inbox::Durable(_) => None,
        }
    }

    /// The next message, or `None` when no more will come (subscription ended, or shutdown).
    pub(super) async fn next(&mut self) -> Option<Inbound> {
        match self {
            Inbox::Core(subscriber) => subscriber.next().await.map(|m| Inbound {
                payload: m.payload,
                ack: None,
            }),
            Inbox::Durable(inbox) => inbox.next().await,
        }
    }
}
