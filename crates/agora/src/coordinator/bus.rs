//! Where the coordinator's batches go out and come in: core NATS, or in the durable mode a JetStream stream.
//!
//! The publisher task sends through an [`Outbox`] and the receiver task reads from an [`Inbox`]; each is an enum of
//! the two modes, chosen once at start, so the tasks never branch on configuration.

use std::sync::Arc;

use async_nats::Subscriber;
use bytes::Bytes;
use futures::StreamExt;

use super::durable::{consumer_name, DurableInbox, DurablePublisher};
pub(super) use super::message::{Inbound, SendError};
use super::{Role, Shared};
use crate::config::NatsConfig;
use crate::error::StartError;
use crate::transport::jetstream::{DurableStats, JetStream};
use crate::transport::nats::{NatsTransport, SyncError};

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

impl Inbox {
    /// A message already received, if there is one, without waiting (core NATS only: a durable inbox's reads involve
    /// requests, which must not be abandoned half-way).
    pub(super) fn next_if_ready(&mut self) -> Option<Inbound> {
        use futures::FutureExt;
        match self {
            Inbox::Core(subscriber) => subscriber
                .next()
                .now_or_never()
                .flatten()
                .map(|m| Inbound::core(m.payload)),
            Inbox::Durable(_) => None,
        }
    }

    /// The next message, or `None` when no more will come (subscription ended, or shutdown).
    pub(super) async fn next(&mut self) -> Option<Inbound> {
        match self {
            Inbox::Core(subscriber) => subscriber.next().await.map(|m| Inbound::core(m.payload)),
            Inbox::Durable(inbox) => inbox.next().await,
        }
    }
}

/// Opens where batches go and come from, as `[nats] jetstream.enable` says: a core subscription and plain publishes,
/// or a JetStream stream (see [`open_durable`]). Chosen once here so that the tasks never branch on the mode. The
/// durable counters are returned in the durable mode only.
pub(super) async fn open(
    transport: &NatsTransport,
    store_id: &str,
    nats: &NatsConfig,
    shared: &Shared,
    role: Role,
    id_chosen: bool,
) -> Result<(Inbox, Outbox, Option<Arc<DurableStats>>), StartError> {
    if nats.jetstream.enable {
        let (inbox, outbox, stats) = open_durable(transport, store_id, nats, shared, role, id_chosen).await?;
        Ok((inbox, outbox, Some(stats)))
    } else {
        Ok((
            Inbox::Core(transport.subscribe().await?),
            Outbox::Core(transport.clone()),
            None,
        ))
    }
}

/// Sets up the durable mode: the stream, then (for a node) its durable consumer; tools receive through a core
/// subscription, which sees every batch too because the stream captures the subject without consuming it.
async fn open_durable(
    transport: &NatsTransport,
    store_id: &str,
    nats: &NatsConfig,
    shared: &Shared,
    role: Role,
    id_chosen: bool,
) -> Result<(Inbox, Outbox, Arc<DurableStats>), StartError> {
    let store_key = crate::config::keys::store_key(store_id);
    let js = Arc::new(JetStream::open(transport, &store_key, &nats.jetstream, &nats.subject).await?);
    let stats = Arc::new(DurableStats::default());
    let inbox = match role {
        Role::Node => {
            if !id_chosen {
                tracing::warn!(
                    node_id = shared.node_id.get(),
                    "durable mode with a random node id: a restarted node gets a new durable consumer and cannot \
                     resume where it stopped; set [cluster] node-id"
                );
            }
            let inbox = DurableInbox::open(
                js.clone(),
                shared.node_id,
                shared.instance_id,
                shared.started_at_ms,
                stats.clone(),
                shared.shutdown.clone(),
            )
            .await
            .map_err(|e| StartError::JetStream {
                key: format!("{store_key}.jetstream"),
                detail: format!(
                    "cannot open the durable consumer {:?} on stream {:?}",
                    consumer_name(shared.node_id),
                    nats.jetstream.stream
                ),
                source: Some(e.into()),
            })?;
            Inbox::Durable(Box::new(inbox))
        }
        Role::Tool => Inbox::Core(transport.subscribe().await?),
    };
    let publisher = DurablePublisher::new(js, stats.clone(), shared.shutdown.clone());
    Ok((inbox, Outbox::Durable(transport.clone(), publisher), stats))
}
