//! The coordinator: the handle applications use to publish cluster events and receive them.
//!
//! Layout (after async-nats): background tasks own the side effects, the public [`Coordinator`] is a cheap `Clone`
//! handle. The publisher task owns the outgoing queue, the batch encoder and the sequence counter; the receiver task
//! owns the subscription and the peer table. State that readers need (link state, members, clash) is published
//! through `watch` channels, so no reader ever takes a lock the hot path holds.

mod authenticator;
mod bus;
mod dispatch;
mod durable;
mod history;
mod message;
mod origin;
mod publisher;
mod queue;
mod receiver;
mod stalwart;
mod start;

pub use dispatch::{EventRef, Subscription};
pub use origin::Origin;
pub use stalwart::{StalwartSender, StalwartStats};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::clock;
use crate::codec;
use crate::error::{PublishError, RequestError, RequestErrorKind, StartError};
use crate::event::{Event, NodeId};
use crate::peers::{Member, NodeIdClash};
use crate::stats::Stats;
use crate::transport::jetstream::DurableStats;
use crate::transport::nats::NatsTransport;
use crate::transport::LinkState;
use authenticator::Authenticator;

/// Default capacity of the outgoing queue. Large enough to absorb a burst while NATS is slow, small enough that a
/// stuck connection makes publishers wait (or `try_publish` fail) within milliseconds instead of growing memory.
pub const DEFAULT_QUEUE_CAPACITY: usize = 16_384;

/// Default capacity of the local subscriber channel: how far a subscriber may fall behind before it is told it
/// missed events.
pub const DEFAULT_SUBSCRIBER_CAPACITY: usize = 65_536;

/// How long shutdown waits for queued events to be flushed before giving up.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// How long a clash warning lasts after the last batch that showed it, in heartbeat intervals. A real clash shows
/// in every heartbeat of the two processes, so its warning stays; the warning of a replayed batch clears.
pub const CLASH_MEMORY_HEARTBEATS: u32 = 10;

/// An event as delivered to subscribers: the event and where and when it came from.
#[derive(Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The node that published it: an agora node, or a Stalwart node for events read from the Stalwart bus.
    pub origin: Origin,
    /// When the origin published it (Unix microseconds, the origin's clock; for Stalwart events, whose batches
    /// carry no time, when this node received it).
    pub time_us: u64,
    /// The event.
    pub event: Event,
}

/// Where an event sits in the durable stream (durable mode): the same on every node that reads the stream, so a
/// reader can resume on any node from the last position it saw (`agora-node`'s cluster-wide stream ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    /// The stream's incarnation (its creation time, Unix ns): a re-created stream numbers its messages from 1 again.
    pub incarnation: u64,
    /// The stream sequence number of the message: one batch of one node.
    pub seq: u64,
    /// The event's record index in that batch.
    pub index: u32,
}

/// The two subscriptions [`Coordinator::start_with_subscriptions`] makes before anything is dispatched.
pub struct Subscriptions {
    /// What [`Coordinator::subscribe`] gives: this node's own events at once.
    pub events: Subscription,
    /// What [`Coordinator::subscribe_in_stream_order`] gives.
    pub stream_ordered: Subscription,
}

/// What a [`Subscription`] yields.
#[derive(Clone, Debug)]
pub enum Notification {
    /// An event, from this node or another.
    Event(EventRef),
    /// Events from `node` were lost on the way (a disconnection, a slow consumer, a sender restart): state derived
    /// from that node's events should be reloaded.
    Resync {
        /// The node whose events were missed.
        node: Origin,
        /// How many records were missed (0 if unknown, e.g. after a restart).
        missed: u64,
        /// Why.
        reason: ResyncReason,
    },
    /// This subscriber fell behind and missed `missed` events (0 when only resync notices were lost): state
    /// derived from events should be reloaded.
    Lagged {
        /// How many events.
        missed: u64,
    },
}

/// Why a [`Notification::Resync`] was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResyncReason {
    /// A gap in the sender's sequence numbers.
    Gap,
    /// The sender restarted without leaving cleanly; what it sent last may be lost.
    SenderRestarted,
}

/// What kind of participant this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A cluster node: announces itself with heartbeats and appears in membership.
    Node,
    /// A tool (`watch`, `publish`): receives and publishes, but is not a member. A tool never takes its node id
    /// from the configuration: the file it is given is usually a running node's, and sending with that node's id
    /// would make the node drop the tool's events as its own and report a clash. It draws a fresh random id
    /// instead (or uses [`StartOptions::node_id`], which tests and benchmarks set to tell senders apart).
    Tool,
}

/// Options for [`Coordinator::start`] beyond the configuration file.
#[derive(Clone, Debug)]
pub struct StartOptions {
    /// Node or tool.
    pub role: Role,
    /// The node id to use. `None`: a node takes the configuration's, else a random one; a tool always a random one.
    pub node_id: Option<NodeId>,
    /// The local HTTP API address announced in heartbeats.
    pub http: Option<String>,
    /// Outgoing queue capacity.
    pub queue_capacity: usize,
    /// Local subscriber channel capacity.
    pub subscriber_capacity: usize,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            role: Role::Node,
            node_id: None,
            http: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            subscriber_capacity: DEFAULT_SUBSCRIBER_CAPACITY,
        }
    }
}

/// The coordinator handle. Cloning is cheap; the background tasks stop when the last clone is dropped or on
/// [`Coordinator::shutdown`].
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    instance_id: u64,
    started_at_ms: u64,
    /// `[cluster] heartbeat-interval`.
    heartbeat_interval: Duration,
    /// `None` in single-node mode.
    transport: Option<NatsTransport>,
    queue: Option<Arc<queue::OutgoingQueue>>,
    dispatcher: Arc<dispatch::Dispatcher>,
    /// A durable node's stream-ordered audience (see [`Coordinator::subscribe_in_stream_order`]).
    ordered: Option<Arc<dispatch::Dispatcher>>,
    link_rx: watch::Receiver<LinkState>,
    members_rx: watch::Receiver<Arc<Vec<Member>>>,
    clash_rx: watch::Receiver<Option<NodeIdClash>>,
    stats: Arc<Stats>,
    /// Signs and checks request/reply payloads (`[cluster] key`).
    auth: Authenticator,
    /// Durable mode only.
    durable_stats: Option<Arc<DurableStats>>,
    /// Where a durable node's consumer started reading the stream.
    stream_start: Option<StreamPosition>,
    /// A durable node's stream, for [`Coordinator::stream_history`].
    jetstream: Option<Arc<crate::transport::jetstream::JetStream>>,
    /// `[stalwart]` only: what `publish` forwards, and the bus's counters.
    stalwart: Option<(stalwart::StalwartPolicy, Arc<StalwartStats>)>,
    stalwart_clash_rx: watch::Receiver<Option<u16>>,
    /// Set by the publisher task when shutdown confirmed every batch reached the server.
    flushed: Arc<std::sync::atomic::AtomicBool>,
    /// The largest single event accepted, from the server's max_payload.
    max_event_size: AtomicUsize,
    shutdown: CancellationToken,
    /// Set by `shutdown`: checked on every publish, where `CancellationToken::is_cancelled` (a mutex) is too slow.
    closing: std::sync::atomic::AtomicBool,
    tasks: TaskTracker,
    _stop_on_drop: DropGuard,
}

impl Coordinator {
    /// Publishes an event to every node, this one included. Waits while the outgoing queue is full (backpressure);
    /// never waits on the network otherwise.
    pub async fn publish(&self, event: Event) -> Result<(), PublishError> {
        let event = self.accept(event)?;
        match &self.inner.queue {
            // The publisher task dispatches it locally, in order with the rest of its batch.
            Some(queue) => queue.push(event).await.map_err(|_| PublishError::ShutDown),
            None => {
                self.inner.dispatcher.send_one(event);
                Ok(())
            }
        }
    }

    /// Like [`Coordinator::publish`], but fails with [`PublishError::QueueFull`] instead of waiting. The event is
    /// then not published anywhere, not even locally.
    pub fn try_publish(&self, event: Event) -> Result<(), PublishError> {
        let event = self.accept(event)?;
        match &self.inner.queue {
            Some(queue) => queue.try_push(event).map_err(|e| match e {
                queue::PushError::Full => PublishError::QueueFull {
                    capacity: queue.capacity(),
                },
                queue::PushError::Closed => PublishError::ShutDown,
            }),
            None => {
                self.inner.dispatcher.send_one(event);
                Ok(())
            }
        }
    }

    /// Checks the event, counts it and stamps it with this node and the time.
    fn accept(&self, event: Event) -> Result<Delivery, PublishError> {
        if self.inner.closing.load(Ordering::Relaxed) {
            return Err(PublishError::ShutDown);
        }
        let max = self.inner.max_event_size.load(Ordering::Relaxed);
        let size = codec::encoded_len(&event);
        if size > max {
            return Err(PublishError::TooLarge { size, max });
        }
        if let Some((policy, stats)) = &self.inner.stalwart {
            if let Err(reason) = policy.forwarded(&event) {
                let (total, log) = crate::log_limit::count(&stats.events_refused, 1);
                if log {
                    tracing::warn!(total, "{reason}");
                }
                return Err(PublishError::StalwartCannotDecode { reason });
            }
        }
        Stats::add(&self.inner.stats.published[event.type_index()], 1);
        Ok(Delivery {
            origin: Origin::Agora(self.inner.node_id),
            time_us: clock::now_us(),
            event,
        })
    }

    /// A new stream of every event (local and remote) from now on.
    pub fn subscribe(&self) -> Subscription {
        self.inner.dispatcher.subscribe(self.inner.stats.clone())
    }

    /// A new stream of every event in the order of the durable stream, each with its
    /// [`EventRef::stream_position`]: this node's own events arrive once stored (not at once, as on
    /// [`Coordinator::subscribe`]), so every node's stream-ordered subscribers see the stream's events in the same
    /// order with the same positions. Stalwart-bus events (not stored in the stream) and notices come in between as
    /// this node receives them, without a position. Outside the durable mode (and for tools), the same as
    /// [`Coordinator::subscribe`].
    pub fn subscribe_in_stream_order(&self) -> Subscription {
        self.inner
            .ordered
            .as_ref()
            .unwrap_or(&self.inner.dispatcher)
            .subscribe(self.inner.stats.clone())
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// This process's instance id (random per start).
    pub fn instance_id(&self) -> u64 {
        self.inner.instance_id
    }

    /// When this coordinator started (Unix ms).
    pub fn started_at_ms(&self) -> u64 {
        self.inner.started_at_ms
    }

    /// The live peers (other nodes), from their heartbeats.
    pub fn members(&self) -> Arc<Vec<Member>> {
        self.inner.members_rx.borrow().clone()
    }

    /// A receiver that changes whenever membership does.
    pub fn watch_members(&self) -> watch::Receiver<Arc<Vec<Member>>> {
        self.inner.members_rx.clone()
    }

    /// The state of the link to the cluster.
    pub fn link_state(&self) -> LinkState {
        self.inner.link_rx.borrow().clone()
    }

    /// A receiver that changes whenever the link state does.
    pub fn watch_link(&self) -> watch::Receiver<LinkState> {
        self.inner.link_rx.clone()
    }

    /// A node-id clash, while batches keep showing it: the warning clears [`CLASH_MEMORY_HEARTBEATS`] heartbeat
    /// intervals after the last evidence, so a single replayed batch does not leave it for good.
    pub fn node_id_clash(&self) -> Option<NodeIdClash> {
        let last = self.inner.stats.last_clash_ms.load(Ordering::Relaxed);
        self.recent_evidence(last)
            .then(|| self.inner.clash_rx.borrow().clone())
            .flatten()
    }

    /// Whether evidence seen at `last_ms` (Unix ms, 0 = never) is recent enough to still warn about.
    fn recent_evidence(&self, last_ms: u64) -> bool {
        let memory = self.inner.heartbeat_interval * CLASH_MEMORY_HEARTBEATS;
        let memory_ms = u64::try_from(memory.as_millis()).unwrap_or(u64::MAX);
        last_ms != 0 && crate::clock::now_ms().saturating_sub(last_ms) <= memory_ms
    }

    /// The NATS server in use (`host:port` as it announces itself), or `None` in single-node mode.
    pub fn server(&self) -> Option<String> {
        self.inner.transport.as_ref().map(NatsTransport::server)
    }

    /// True in single-node mode.
    pub fn is_single_node(&self) -> bool {
        self.inner.transport.is_none()
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Where this durable node started reading the stream (its consumer's position when it started; index
    /// `u32::MAX`: that whole message and everything before it): its stream-ordered subscribers see every event
    /// stored after it. `None` outside the durable mode and for tools.
    pub fn stream_start(&self) -> Option<StreamPosition> {
        self.inner.stream_start
    }

    /// Hands `each` the events the durable stream holds in its last `max_messages` messages up to
    /// [`Coordinator::stream_start`], oldest first, with their stream positions: what a stream-ordered subscriber
    /// would have seen had it been there (a node prefills its journal with them, so that clients resume on it with
    /// ids from before it started). Returns how many events; 0 outside the durable mode.
    pub async fn stream_history(
        &self,
        max_messages: u64,
        each: impl FnMut(EventRef),
    ) -> Result<u64, crate::error::HistoryError> {
        let (Some(js), Some(start)) = (&self.inner.jetstream, self.inner.stream_start) else {
            return Ok(0);
        };
        history::read(js, &self.inner.auth, start.seq, max_messages, each)
            .await
            .map_err(|e| crate::error::HistoryError(e.into()))
    }

    /// The durable mode's counters, `None` unless `jetstream.enable = true`.
    pub fn durable_stats(&self) -> Option<&DurableStats> {
        self.inner.durable_stats.as_deref()
    }

    /// The Stalwart bus's counters and senders, `None` without `[stalwart]`.
    pub fn stalwart_stats(&self) -> Option<&StalwartStats> {
        self.inner.stalwart.as_ref().map(|(_, stats)| stats.as_ref())
    }

    /// A batch on the Stalwart subject carried this node's `[stalwart] node-id` without being its own: the id.
    pub fn stalwart_node_id_clash(&self) -> Option<u16> {
        let last = self
            .inner
            .stalwart
            .as_ref()
            .map_or(0, |(_, stats)| stats.last_clash_ms.load(Ordering::Relaxed));
        self.recent_evidence(last)
            .then(|| *self.inner.stalwart_clash_rx.borrow())
            .flatten()
    }

    /// The NATS client (for request/reply services built on the coordinator), `None` in single-node mode.
    pub fn nats_client(&self) -> Option<&async_nats::Client> {
        self.inner.transport.as_ref().map(NatsTransport::client)
    }

    /// `timeout.request` of the NATS store (10s in single-node mode, where nothing is requested).
    pub fn request_timeout(&self) -> Duration {
        self.inner
            .transport
            .as_ref()
            .map_or(Duration::from_secs(10), NatsTransport::request_timeout)
    }

    /// After [`Coordinator::shutdown`]: true if the server confirmed it processed everything this node published
    /// (always true in single-node mode). False means some events may not have left this process.
    pub fn flushed_cleanly(&self) -> bool {
        self.inner.flushed.load(Ordering::SeqCst)
    }

    /// Sends a request to the other nodes' handler `name` and returns the first reply, within `timeout.request`.
    /// Fails at once with [`RequestErrorKind::NoResponders`] when no node serves `name`.
    pub async fn request(&self, name: &str, payload: bytes::Bytes) -> Result<bytes::Bytes, RequestError> {
        self.request_each(name, payload, Some).await
    }

    /// Like [`Coordinator::request`], but every authenticated reply goes through `accept`, and the first one it maps
    /// to `Some` is the answer; replies it declines are skipped (a peer that is starting, say), and if nothing else
    /// arrives the request fails with [`RequestErrorKind::Declined`] at the timeout.
    ///
    /// With `[cluster] key` set and peers heard through (authenticated) heartbeats, a "no responders" status is not
    /// believed: the server's 503 carries no MAC, so anyone who sees the request could forge it. The wait goes on
    /// for an authenticated reply instead.
    pub async fn request_each<T>(
        &self,
        name: &str,
        payload: bytes::Bytes,
        mut accept: impl FnMut(bytes::Bytes) -> Option<T>,
    ) -> Result<T, RequestError> {
        let Some(t) = &self.inner.transport else {
            return Err(RequestError::new(
                RequestErrorKind::SingleNode,
                name,
                "single-node mode",
            ));
        };
        let trust_no_responders = !self.inner.auth.is_keyed() || self.members().is_empty();
        let (payload, pending) = self.inner.auth.seal_request(name, payload);
        t.request(name, payload, trust_no_responders, |reply| {
            let opened = self.inner.auth.open_reply(name, &pending, reply)?;
            accept(opened).ok_or_else(|| RequestError::new(RequestErrorKind::Declined, name, "the reply was declined"))
        })
        .await
    }

    /// The largest reply payload a [`Coordinator::serve`] handler may return on the current server: its
    /// `max_payload` less the authentication envelope. `usize::MAX` in single-node mode.
    pub fn max_reply_size(&self) -> usize {
        self.inner.transport.as_ref().map_or(usize::MAX, |t| {
            t.max_payload().saturating_sub(self.inner.auth.overhead())
        })
    }

    /// Whether `[cluster] key` is set: messages between nodes are then authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.inner.auth.is_keyed()
    }

    /// Starts answering requests for handler `name`: `handler` maps each request payload to a reply, or to `None`
    /// to stay silent (e.g. for this node's own requests when no-echo is off). Runs until shutdown; in single-node
    /// mode it does nothing.
    pub async fn serve<F>(&self, name: &str, handler: F) -> Result<(), StartError>
    where
        F: Fn(bytes::Bytes) -> Option<bytes::Bytes> + Send + Sync + 'static,
    {
        let Some(transport) = self.inner.transport.clone() else {
            return Ok(());
        };
        let mut requests = transport.serve(name).await?;
        let shutdown = self.inner.shutdown.clone();
        let name = name.to_string();
        let auth = self.inner.auth.clone();
        self.inner.tasks.reopen();
        self.inner.tasks.spawn(async move {
            use futures::StreamExt;
            loop {
                let request = tokio::select! {
                    () = shutdown.cancelled() => break,
                    r = requests.next() => match r { Some(r) => r, None => break },
                };
                let Some(reply_to) = request.reply else { continue };
                let Some((payload, pending)) = auth.open_request(&name, request.payload) else {
                    continue;
                };
                let Some(reply) = handler(payload) else {
                    continue;
                };
                if let Err(e) = transport.reply(reply_to, auth.seal_reply(&name, pending, reply)).await {
                    tracing::warn!("cannot answer a {name} request: {}", crate::error::Report(&e));
                }
            }
        });
        self.inner.tasks.close();
        Ok(())
    }

    /// Stops cleanly: no new events are accepted, queued ones are sent and flushed, peers are told this node left.
    /// Waits at most a few seconds.
    pub async fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::Relaxed);
        self.inner.shutdown.cancel();
        if tokio::time::timeout(SHUTDOWN_DEADLINE, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: background tasks did not finish within {SHUTDOWN_DEADLINE:?}");
        }
    }
}

/// What every background task of one coordinator shares: its identity, local dispatch, counters, the cluster key and
/// the shutdown signal. Built once in `start` and handed to each task's constructor.
struct Shared {
    node_id: NodeId,
    instance_id: u64,
    started_at_ms: u64,
    dispatcher: Arc<dispatch::Dispatcher>,
    /// A durable node's second audience: every event in stream order (see
    /// [`Coordinator::subscribe_in_stream_order`]).
    ordered: Option<Arc<dispatch::Dispatcher>>,
    stats: Arc<Stats>,
    auth: Authenticator,
    shutdown: CancellationToken,
}
