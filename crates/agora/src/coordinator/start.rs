//! Starting a coordinator, as a sequence of named steps: choose the identity, connect, open the bus, wire the
//! Stalwart bridge, spawn the publisher and receiver tasks, and hand back the handle.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::authenticator::Authenticator;
use super::stalwart::{SharedRecent, StalwartForwarder, StalwartPolicy, StalwartReader};
use super::{
    bus, dispatch, publisher, queue, receiver, Coordinator, Inner, Role, Shared, StalwartStats, StartOptions,
    Subscription, Subscriptions,
};
use crate::clock;
use crate::codec::{self, HEADER_LEN};
use crate::config::{Backend, Config, NatsConfig};
use crate::error::StartError;
use crate::event::NodeId;
use crate::peers::{Member, NodeIdClash, PeerTable};
use crate::stats::Stats;
use crate::transport::jetstream::DurableStats;
use crate::transport::nats::NatsTransport;
use crate::transport::LinkState;

/// `[stalwart]`'s forwarding policy and the bus's counters, when the bridge runs.
type StalwartSide = (StalwartPolicy, Arc<StalwartStats>);

/// Where the background tasks are spawned and what they report through: built before the tasks, read by the handle.
struct Spawn {
    /// The publisher and receiver tasks, which shutdown waits for.
    tasks: TaskTracker,
    /// Set by the publisher when shutdown confirmed every batch reached the server.
    flushed: Arc<AtomicBool>,
    /// Membership, published by the receiver.
    members_tx: watch::Sender<Arc<Vec<Member>>>,
    /// A node-id clash on the agora bus, published by the receiver.
    clash_tx: watch::Sender<Option<NodeIdClash>>,
    /// A `[stalwart] node-id` clash on the Stalwart bus, published by the Stalwart reader.
    stalwart_clash_tx: watch::Sender<Option<u16>>,
}

/// What the NATS backend adds to the handle; single-node mode has none of it.
struct ClusterSide {
    /// The NATS connection, for requests and the handle's accessors.
    transport: NatsTransport,
    /// Where `publish` puts events for the publisher task.
    queue: Arc<queue::OutgoingQueue>,
    /// The link state the transport publishes.
    link_rx: watch::Receiver<LinkState>,
    /// The durable mode's counters, in that mode only.
    durable_stats: Option<Arc<DurableStats>>,
    /// Where a durable node's consumer started reading the stream.
    stream_start: Option<super::StreamPosition>,
    /// A durable node's stream.
    jetstream: Option<Arc<crate::transport::jetstream::JetStream>>,
}

impl Coordinator {
    /// Starts a coordinator as the configuration says: connects to NATS and starts the background tasks, or runs a
    /// single node in-process when no coordinator is configured.
    pub async fn start(config: &Config, options: StartOptions) -> Result<Coordinator, StartError> {
        Self::start_inner(config, options, false).await.map(|(c, _)| c)
    }

    /// Like [`Coordinator::start`], and also returns a subscription made before any event could be dispatched:
    /// nothing received from the start on is missed. Use it where the first events matter, e.g. in durable mode,
    /// where a restarted node's missed events arrive right after it starts.
    pub async fn start_subscribed(
        config: &Config,
        options: StartOptions,
    ) -> Result<(Coordinator, Subscription), StartError> {
        let (coordinator, subscriptions) = Self::start_inner(config, options, true).await?;
        match subscriptions {
            Some(subscriptions) => Ok((coordinator, subscriptions.events)),
            None => {
                let subscription = coordinator.subscribe();
                Ok((coordinator, subscription))
            }
        }
    }

    /// Like [`Coordinator::start_subscribed`], and also returns a [`Coordinator::subscribe_in_stream_order`]
    /// subscription made before anything could be dispatched (a node's journal of cluster-wide stream ids).
    pub async fn start_with_subscriptions(
        config: &Config,
        options: StartOptions,
    ) -> Result<(Coordinator, Subscriptions), StartError> {
        let (coordinator, first) = Self::start_inner(config, options, true).await?;
        let subscriptions = match first {
            Some(subscriptions) => subscriptions,
            None => Subscriptions {
                events: coordinator.subscribe(),
                stream_ordered: coordinator.subscribe_in_stream_order(),
            },
        };
        Ok((coordinator, subscriptions))
    }

    /// The start sequence shared by [`Coordinator::start`] and [`Coordinator::start_subscribed`]; `subscribe` makes
    /// the first subscriptions before any task can dispatch.
    async fn start_inner(
        config: &Config,
        options: StartOptions,
        subscribe: bool,
    ) -> Result<(Coordinator, Option<Subscriptions>), StartError> {
        let chosen_id = chosen_node_id(config, &options);
        let shared = shared_state(config, &options, chosen_id);
        let first_subscription = subscribe.then(|| Subscriptions {
            events: shared.dispatcher.subscribe(shared.stats.clone()),
            stream_ordered: shared
                .ordered
                .as_ref()
                .unwrap_or(&shared.dispatcher)
                .subscribe(shared.stats.clone()),
        });
        let (members_tx, members_rx) = watch::channel(Arc::new(Vec::new()));
        let (clash_tx, clash_rx) = watch::channel(None);
        let (stalwart_clash_tx, stalwart_clash_rx) = watch::channel(None);
        let spawn = Spawn {
            tasks: TaskTracker::new(),
            // Single-node mode has nothing to flush.
            flushed: Arc::new(AtomicBool::new(matches!(config.backend, Backend::SingleNode))),
            members_tx,
            clash_tx,
            stalwart_clash_tx,
        };
        let stalwart = stalwart_side(config);
        let cluster = match &config.backend {
            Backend::SingleNode => None,
            Backend::Nats { config: nats, store_id } => {
                Some(start_cluster(config, &options, nats, store_id, &shared, stalwart.as_ref(), &spawn).await?)
            }
        };
        spawn.tasks.close();
        log_started(&shared, cluster.as_ref());
        let (transport, queue, link_rx, durable_stats, stream_start, jetstream) = match cluster {
            Some(c) => (
                Some(c.transport),
                Some(c.queue),
                c.link_rx,
                c.durable_stats,
                c.stream_start,
                c.jetstream,
            ),
            None => {
                let (_link_tx, link_rx) = watch::channel(LinkState::SingleNode);
                (None, None, link_rx, None, None, None)
            }
        };
        let max_payload = transport.as_ref().map_or(usize::MAX, NatsTransport::max_payload);
        let coordinator = Coordinator {
            inner: Arc::new(Inner {
                node_id: shared.node_id,
                instance_id: shared.instance_id,
                started_at_ms: shared.started_at_ms,
                heartbeat_interval: config.cluster.heartbeat_interval,
                transport,
                queue,
                link_rx,
                members_rx,
                clash_rx,
                max_event_size: AtomicUsize::new(max_payload.saturating_sub(HEADER_LEN + shared.auth.overhead())),
                durable_stats,
                stream_start,
                jetstream,
                stalwart,
                stalwart_clash_rx,
                flushed: spawn.flushed,
                _stop_on_drop: shared.shutdown.clone().drop_guard(),
                closing: AtomicBool::new(false),
                dispatcher: shared.dispatcher,
                ordered: shared.ordered,
                stats: shared.stats,
                auth: shared.auth,
                shutdown: shared.shutdown,
                tasks: spawn.tasks,
            }),
        };
        Ok((coordinator, first_subscription))
    }
}

/// The node id asked for, if any: a node takes [`StartOptions::node_id`] or the configuration's; a tool never takes
/// the configuration's (it is usually a running node's, whose events would then be dropped as its own).
fn chosen_node_id(config: &Config, options: &StartOptions) -> Option<NodeId> {
    match options.role {
        Role::Node => options.node_id.or(config.cluster.node_id),
        Role::Tool => options.node_id,
    }
}

/// The identity (a random node id when none was chosen, a fresh instance id every start), local dispatch, counters,
/// the cluster key and the shutdown signal: built once, so that every task sees the same ones.
fn shared_state(config: &Config, options: &StartOptions, chosen_id: Option<NodeId>) -> Shared {
    let stats = Arc::new(Stats::default());
    // Only a durable node reads the stream in its order (tools read core NATS even in the durable mode).
    let durable_node = matches!(&config.backend, Backend::Nats { config: nats, .. } if nats.jetstream.enable)
        && options.role == Role::Node;
    Shared {
        node_id: chosen_id.unwrap_or_else(NodeId::random),
        instance_id: rand::random::<u64>(),
        started_at_ms: clock::now_ms(),
        dispatcher: Arc::new(dispatch::Dispatcher::new(options.subscriber_capacity)),
        ordered: durable_node.then(|| Arc::new(dispatch::Dispatcher::new(options.subscriber_capacity))),
        auth: Authenticator::new(&config.cluster.keys, stats.clone()),
        stats,
        shutdown: CancellationToken::new(),
    }
}

/// `[stalwart]`'s policy and counters when the bridge can run; in single-node mode it cannot (there is no NATS
/// connection to reach the Stalwart bus), which is said once rather than failing the start.
fn stalwart_side(config: &Config) -> Option<StalwartSide> {
    match (&config.stalwart, &config.backend) {
        (Some(c), Backend::Nats { .. }) => Some((StalwartPolicy::new(c), Arc::new(StalwartStats::default()))),
        (Some(_), Backend::SingleNode) => {
            tracing::warn!("[stalwart] ignored: single-node mode has no NATS connection to reach the Stalwart bus");
            None
        }
        (None, _) => None,
    }
}

/// The NATS backend's part of the start: connect, open the bus for the configured mode, then spawn the publisher
/// (which owns the outbox) and the receiver (which owns the inbox and the peer table). A connection or bus error
/// fails the start before any task runs.
async fn start_cluster(
    config: &Config,
    options: &StartOptions,
    nats: &NatsConfig,
    store_id: &str,
    shared: &Shared,
    stalwart: Option<&StalwartSide>,
    spawn: &Spawn,
) -> Result<ClusterSide, StartError> {
    // A durable consumer is named after the node id: a random one cannot be resumed after a restart (bus::open warns).
    let id_chosen = chosen_node_id(config, options).is_some();
    let (transport, link_rx) = connect(nats, shared).await?;
    let (inbox, outbox, durable_stats) = bus::open(&transport, store_id, nats, shared, options.role, id_chosen).await?;
    let (stream_start, jetstream) = match &inbox {
        bus::Inbox::Durable(inbox) => (Some(inbox.start_position()), Some(inbox.jetstream())),
        bus::Inbox::Core(_) => (None, None),
    };
    let queue = Arc::new(queue::OutgoingQueue::new(options.queue_capacity));
    let (forwarder, reader) = stalwart_bridge(&transport, stalwart, spawn.stalwart_clash_tx.clone()).await?;
    let publisher = publisher::Publisher::new(
        shared,
        outbox,
        queue.clone(),
        heartbeat(config, options, shared),
        forwarder,
        link_rx.clone(),
    );
    spawn.tasks.spawn(publisher.run(spawn.flushed.clone()));
    let receiver = receiver::Receiver::new(
        shared,
        inbox,
        peer_table(config, shared),
        spawn.members_tx.clone(),
        spawn.clash_tx.clone(),
        reader,
    );
    spawn.tasks.spawn(receiver.run(config.cluster.heartbeat_interval));
    Ok(ClusterSide {
        transport,
        queue,
        link_rx,
        durable_stats,
        stream_start,
        jetstream,
    })
}

/// Connects to NATS, named after this node and instance so that the server's connection list tells processes
/// apart, and marks the link connected (unless it already closed meanwhile).
async fn connect(
    nats: &NatsConfig,
    shared: &Shared,
) -> Result<(NatsTransport, watch::Receiver<LinkState>), StartError> {
    let (link_tx, link_rx) = watch::channel(LinkState::Reconnecting);
    let name = format!("agora node {} ({:016x})", shared.node_id, shared.instance_id);
    let transport = NatsTransport::connect(nats, name, shared.stats.clone(), link_tx.clone()).await?;
    LinkState::set_unless_closed(&link_tx, LinkState::Connected);
    Ok((transport, link_rx))
}

/// The heartbeat a node announces itself with (a tool sends none: it is not a member). It carries the
/// `[stalwart] node-id` so that other nodes recognise this node's forwarded copies on the Stalwart bus.
fn heartbeat(config: &Config, options: &StartOptions, shared: &Shared) -> Option<codec::Heartbeat> {
    match options.role {
        Role::Node => Some(codec::Heartbeat {
            interval_ms: u32::try_from(config.cluster.heartbeat_interval.as_millis()).unwrap_or(u32::MAX),
            started_at_ms: shared.started_at_ms,
            http: options.http.clone(),
            stalwart_node_id: config.stalwart.as_ref().and_then(|s| s.node_id),
        }),
        Role::Tool => None,
    }
}

/// The Stalwart bridge's two halves: the forwarder the publisher uses and the reader the receiver polls. They share
/// the record of recent forwards, so the reader skips this node's own copies coming back.
async fn stalwart_bridge(
    transport: &NatsTransport,
    stalwart: Option<&StalwartSide>,
    clash_tx: watch::Sender<Option<u16>>,
) -> Result<(Option<StalwartForwarder>, Option<StalwartReader>), StartError> {
    let Some((policy, stats)) = stalwart else {
        return Ok((None, None));
    };
    let recent = SharedRecent::default();
    let subscriber = transport
        .subscribe_to(policy.subject.clone(), "the Stalwart subscription")
        .await?;
    let forwarder = StalwartForwarder::new(transport.clone(), policy, stats.clone(), recent.clone());
    let reader = StalwartReader::new(subscriber, policy.clone(), stats.clone(), recent, clash_tx);
    Ok((forwarder, Some(reader)))
}

/// The receiver's peer table. With a cluster key, a forward jump in a sender's sequence is a loss and never undone:
/// only key holders can send, so a jump cannot be a forgery to recover from.
fn peer_table(config: &Config, shared: &Shared) -> PeerTable {
    let peers = PeerTable::new(shared.node_id, shared.instance_id, config.cluster.heartbeat_interval);
    if shared.auth.is_keyed() {
        peers.without_jump_recovery()
    } else {
        peers
    }
}

/// One line saying which node this is and in which mode it runs, the first thing an operator looks for.
fn log_started(shared: &Shared, cluster: Option<&ClusterSide>) {
    tracing::info!(
        node_id = shared.node_id.get(),
        instance_id = format_args!("{:016x}", shared.instance_id),
        mode = match cluster {
            None => "single-node",
            Some(ClusterSide {
                durable_stats: None, ..
            }) => "nats",
            Some(ClusterSide {
                durable_stats: Some(_), ..
            }) => "nats, durable (JetStream)",
        },
        "coordinator started"
    );
}
