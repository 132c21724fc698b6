//! The node's service task: applies cluster events to the replicated state, asks for a state transfer
//! (`super::transfer`) on join and after any detected loss, and hands push notifications to the one node that owns each account.
//!
//! Push ownership is rendezvous hashing over the live membership. Views of membership differ for a moment when a node
//! dies, so every node also remembers, for a few heartbeat intervals, the state changes it left to another owner; if
//! that owner then leaves the membership, the new owner delivers them. A delivery may thus be repeated while
//! membership changes, but it is never skipped.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora::log_limit::LogLimiter;
use agora::peers::MISSED_HEARTBEATS;
use agora::{Coordinator, DataTypes, Event, LinkState, Notification, Origin, ResyncReason, StartError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::local_writes::LocalWrites;
use super::metrics::{NodeMetrics, StateGauges};
use super::push::push_owner;
use super::push_delivery::{PushDelivery, PushPolicy};
use super::state::NodeState;
use super::transfer::Transfers;

/// State changes remembered for takeover, at most; beyond that the oldest are forgotten (and logged).
const MAX_REMEMBERED: usize = 100_000;

/// How long deletions are remembered so a stale copy cannot resurrect what they deleted.
const TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 3600);

/// How often expired rules are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(1);

/// Resync notices come from peers: logged rate-limited (1st, 2nd, 4th, ...), with the running total.
static RESYNC_LOG: LogLimiter = LogLimiter::new();

/// Tombstone evictions come from deletions anyone on the bus can send: logged rate-limited.
static TOMBSTONE_LOG: LogLimiter = LogLimiter::new();

/// Throttles the line about revocations dropped past the cap, which anyone who can publish on the bus can provoke.
static REVOCATIONS_DROPPED_LOG: LogLimiter = LogLimiter::new();

/// A state change this node left to another owner, kept in case that owner dies.
struct Remembered {
    at: Instant,
    owner: u16,
    account_id: u32,
    change_id: u64,
    types: DataTypes,
}

/// What the service task shares with the HTTP API: the state it writes, the metrics it records, and the local
/// writes it confirms.
#[derive(Clone, Debug, Default)]
pub struct Shared {
    /// The replicated state (the service task is its only writer).
    pub state: Arc<NodeState>,
    /// The node's own metrics.
    pub metrics: Arc<NodeMetrics>,
    /// Handlers waiting for their events to be applied.
    pub local_writes: Arc<LocalWrites>,
    /// `[push]`: what the delivery may reach and how many subscriptions of an account it serves.
    pub push: Arc<PushPolicy>,
}

/// How often expired push subscriptions are looked for (each scan reads every subscription).
const EXPIRY_SCAN_INTERVAL: Duration = Duration::from_secs(5);

/// Starts the service task; returns once it serves snapshots and is subscribed, before the initial state transfer.
pub async fn start(
    coordinator: Coordinator,
    subscription: agora::Subscription,
    shared: Shared,
    delivery: PushDelivery,
    heartbeat_interval: Duration,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, StartError> {
    let Shared {
        state,
        metrics,
        local_writes,
        push: _,
    } = shared;
    super::transfer::serve(&coordinator, state.clone()).await?;
    let transfers = Transfers::start(
        coordinator.clone(),
        state.clone(),
        metrics.clone(),
        heartbeat_interval,
        shutdown.clone(),
    );
    let task = ServiceTask {
        members: member_ids(&coordinator),
        coordinator,
        state,
        metrics,
        local_writes,
        delivery,
        remembered: VecDeque::new(),
        grace: heartbeat_interval * (MISSED_HEARTBEATS + 2),
        transfers,
        last_expiry_scan: Instant::now(),
        revocations_dropped: 0,
    };
    Ok(tokio::spawn(task.run(subscription, shutdown)))
}

struct ServiceTask {
    coordinator: Coordinator,
    state: Arc<NodeState>,
    metrics: Arc<NodeMetrics>,
    local_writes: Arc<LocalWrites>,
    delivery: PushDelivery,
    members: HashSet<u16>,
    remembered: VecDeque<Remembered>,
    grace: Duration,
    transfers: Transfers,
    last_expiry_scan: Instant,
    /// Revocations from the bus dropped by the full registry, as last counted in the metric.
    revocations_dropped: u64,
}

fn member_ids(coordinator: &Coordinator) -> HashSet<u16> {
    coordinator.members().iter().map(|m| m.node_id.get()).collect()
}

impl ServiceTask {
    async fn run(mut self, mut subscription: agora::Subscription, shutdown: CancellationToken) {
        let mut members_rx = self.coordinator.watch_members();
        let mut link_rx = self.coordinator.watch_link();
        let mut was_connected = link_rx.borrow().is_healthy();
        let mut purge = tokio::time::interval(PURGE_INTERVAL);
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                notification = subscription.recv() => match notification {
                    Some(n) => self.on_notification(n),
                    None => break,
                },
                Ok(()) = members_rx.changed() => {
                    members_rx.mark_unchanged();
                    self.on_members_changed();
                }
                Ok(()) = link_rx.changed() => {
                    let connected = matches!(*link_rx.borrow_and_update(), LinkState::Connected);
                    if connected && !was_connected {
                        // Whatever happened while we were away is unknown: ask a peer.
                        self.fetch_snapshot("reconnect");
                    }
                    was_connected = connected;
                }
                _ = purge.tick() => self.purge(),
            }
        }
    }

    fn on_notification(&mut self, notification: Notification) {
        match notification {
            Notification::Event(delivery) => {
                let local = delivery.origin == self.coordinator.node_id();
                if !local {
                    let now = agora::clock::now_us();
                    let latency = now.saturating_sub(delivery.time_us) as f64 / 1e6;
                    self.metrics.delivery_latency.observe(latency);
                }
                self.state.apply(&delivery);
                if local {
                    self.local_writes.applied(&delivery);
                }
                if let Event::StateChange {
                    account_id,
                    change_id,
                    types,
                } = delivery.event
                {
                    self.on_state_change(account_id, change_id, types);
                }
            }
            // Stalwart's bus carries none of agora's replicated state, and anyone on NATS can publish there (it has
            // no MAC): what arrives there is input, never a reason to re-fetch the state.
            Notification::Resync {
                node: Origin::Stalwart(_),
                ..
            } => {}
            Notification::Resync { node, missed, reason } => {
                let (total, log) = RESYNC_LOG.record();
                if log {
                    tracing::info!(
                        node_id = node.get(),
                        missed,
                        total,
                        "events were lost: re-fetching replicated state"
                    );
                }
                if reason == ResyncReason::SenderRestarted {
                    // The new process never saw what its predecessor was to deliver: hand it to the next owner.
                    let gone = HashSet::from([node.get()]);
                    let nodes: Vec<u16> = self.live_nodes().into_iter().filter(|n| *n != node.get()).collect();
                    self.take_over(&gone, &nodes);
                }
                self.fetch_snapshot("resync");
            }
            Notification::Lagged { missed } => {
                tracing::warn!(
                    missed,
                    "the node's service task fell behind: re-fetching replicated state"
                );
                self.fetch_snapshot("lagged");
            }
        }
    }

    fn live_nodes(&self) -> Vec<u16> {
        let mut nodes: Vec<u16> = self.members.iter().copied().collect();
        nodes.push(self.coordinator.node_id().get());
        nodes
    }

    fn on_state_change(&mut self, account_id: u32, change_id: u64, types: DataTypes) {
        if self.state.push().matching(account_id, types).is_empty() {
            return;
        }
        let me = self.coordinator.node_id().get();
        match push_owner(account_id, &self.live_nodes()) {
            Some(owner) if owner == me => self.deliver(account_id, change_id, types),
            Some(owner) => {
                if self.remembered.len() >= MAX_REMEMBERED {
                    self.remembered.pop_front();
                    tracing::warn!("too many state changes remembered for push takeover; forgetting the oldest");
                }
                self.remembered.push_back(Remembered {
                    at: Instant::now(),
                    owner,
                    account_id,
                    change_id,
                    types,
                });
            }
            None => {}
        }
    }

    fn deliver(&self, account_id: u32, change_id: u64, types: DataTypes) {
        let subscriptions = self.state.push().matching(account_id, types);
        self.delivery.deliver(account_id, change_id, types, subscriptions);
    }

    fn on_members_changed(&mut self) {
        let now = member_ids(&self.coordinator);
        let gone: HashSet<u16> = self.members.difference(&now).copied().collect();
        self.members = now;
        if gone.is_empty() {
            return;
        }
        let nodes = self.live_nodes();
        self.take_over(&gone, &nodes);
    }

    /// Delivers the remembered state changes whose owner is in `gone` if this node now owns them among `nodes`.
    fn take_over(&mut self, gone: &HashSet<u16>, nodes: &[u16]) {
        let me = self.coordinator.node_id().get();
        let mut taken_over = 0usize;
        let remembered = std::mem::take(&mut self.remembered);
        for r in remembered {
            if !gone.contains(&r.owner) {
                self.remembered.push_back(r);
                continue;
            }
            match push_owner(r.account_id, nodes) {
                Some(owner) if owner == me => {
                    taken_over += 1;
                    self.deliver(r.account_id, r.change_id, r.types);
                }
                Some(owner) => self.remembered.push_back(Remembered { owner, ..r }),
                None => {}
            }
        }
        if taken_over > 0 {
            tracing::info!(
                gone = ?gone,
                taken_over,
                "took over push deliveries of nodes that left (some may be repeated)"
            );
        }
    }

    fn purge(&mut self) {
        let ttl_us = u64::try_from(TOMBSTONE_TTL.as_micros()).unwrap_or(u64::MAX);
        let now_us = agora::clock::now_us();
        self.state.purge(now_us, ttl_us);
        // The registries count evictions themselves; the counter follows them.
        let evicted = self.state.tombstones_evicted();
        let counted = self.metrics.tombstones_evicted.get();
        if evicted > counted {
            self.metrics.tombstones_evicted.inc_by(evicted - counted);
            if TOMBSTONE_LOG.should_log() {
                tracing::warn!(
                    evicted,
                    "deletions forgotten: a replicated registry holds 100,000 tombstones (deletions of ids that \
                     never existed?); a write older than a forgotten deletion could reappear"
                );
            }
        }
        let dropped = self.state.revocations().refused();
        if dropped > self.revocations_dropped {
            self.metrics
                .revocations_refused
                .inc_by(dropped - self.revocations_dropped);
            self.revocations_dropped = dropped;
            if REVOCATIONS_DROPPED_LOG.should_log() {
                tracing::error!(
                    dropped,
                    "client-token revocations from the bus dropped: [http.clients] max-revocations are held; the \
                     tokens they cover are still accepted"
                );
            }
        }
        if self.last_expiry_scan.elapsed() >= EXPIRY_SCAN_INTERVAL {
            // Every node removes the same expired subscriptions itself: no message, the same result everywhere.
            self.last_expiry_scan = Instant::now();
            let removed = self.state.remove_expired_subscriptions(now_us);
            for _ in 0..removed {
                self.metrics.count_push(super::metrics::PushResult::Expired);
            }
            if removed > 0 {
                tracing::info!(removed, "expired push subscriptions removed");
            }
        }
        let grace = self.grace;
        while self.remembered.front().is_some_and(|r| r.at.elapsed() > grace) {
            self.remembered.pop_front();
        }
    }

    /// Events may have been lost: re-fetch the state (the node reports `resyncing` until that is done).
    fn fetch_snapshot(&mut self, why: &'static str) {
        self.state.set_resyncing();
        self.transfers.want(why);
    }
}

/// The gauges `/metrics` reads from the state: the one place that joins the two, so that neither imports the other.
impl StateGauges for NodeState {
    fn blocked_ip_rules(&self) -> usize {
        self.blocked_rule_count()
    }

    fn push_subscriptions(&self) -> usize {
        self.push_subscription_count()
    }

    fn tombstones(&self) -> (usize, usize) {
        self.tombstone_counts()
    }

    fn holds_state(&self) -> bool {
        self.readiness() == super::state::Readiness::Current
    }

    fn revocations(&self) -> usize {
        self.revocations().len()
    }
}
