//! The node assembled: its services (journal, replicated state, push delivery, metrics) and the state the HTTP
//! API serves from. `agora node` runs it behind its listener; the in-process tests (`app/tests`) run the same
//! assembly against a single-node coordinator and call the router directly.

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use agora::config::{Backend, Config};
use agora::{Coordinator, Subscriptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::StartError;
use crate::http::{self, AppState, NodeInfo};
use crate::services::block_list::BlockList;
use crate::services::intake::EventIntake;
use crate::services::journal::{self, Journal};
use crate::services::metrics;
use crate::services::push_delivery::{PushDelivery, PushPolicy};
use crate::services::push_subscriptions::PushSubscriptions;
use crate::services::revocation_list::Revocations;
use crate::services::sync;

/// The node's background work: the journal's feeder and the services that keep the replicated state.
pub struct RunningServices {
    /// What the services share with the API.
    shared: sync::Shared,
    /// The push delivery (the services push state changes; the API sends verifications).
    delivery: PushDelivery,
    /// Every notification, numbered, for the streams and the long poll.
    journal: Arc<Journal>,
    /// The registry `/metrics` serves.
    metrics: Arc<prometheus_client::registry::Registry>,
    /// The task that feeds the journal.
    feeder: JoinHandle<()>,
    /// The services' task.
    services: JoinHandle<()>,
}

impl RunningServices {
    /// Waits for the background tasks to end (after `shutdown` was cancelled).
    pub async fn stopped(self) {
        let _ = self.services.await;
        let _ = self.feeder.await;
    }
}

/// Starts the journal and the services, on the subscriptions made when the coordinator started, so that both hold
/// everything from the start. In the durable mode the journal reads in stream order and its ids are cluster-wide.
pub async fn start_services(
    config: &Config,
    coordinator: &Coordinator,
    subscriptions: Subscriptions,
    shutdown: CancellationToken,
) -> Result<RunningServices, StartError> {
    let Subscriptions {
        events: subscription,
        stream_ordered,
    } = subscriptions;
    let shared = sync::Shared {
        push: Arc::new(PushPolicy::new(&config.push)),
        ..sync::Shared::default()
    };
    let journal = match coordinator.stream_start() {
        Some(start) => Journal::cluster_wide(config.http.journal_events, config.http.journal_bytes, start),
        None => Journal::new(config.http.journal_events, config.http.journal_bytes),
    };
    prefill_journal(config, coordinator, &journal).await;
    let feeder = tokio::spawn(journal::feed(journal.clone(), stream_ordered, shutdown.clone()));
    let metrics = metrics::registry(
        coordinator.clone(),
        &shared.metrics,
        shared.state.clone(),
        journal.clone(),
    );
    let delivery = PushDelivery::new(
        shared.metrics.clone(),
        &shared.push,
        coordinator.clone(),
        shutdown.clone(),
    );
    let services = sync::start(
        coordinator.clone(),
        subscription,
        shared.clone(),
        delivery.clone(),
        config.cluster.heartbeat_interval,
        shutdown,
    )
    .await
    .map_err(StartError::Services)?;
    Ok(RunningServices {
        shared,
        delivery,
        journal,
        metrics: Arc::new(metrics),
        feeder,
        services,
    })
}

/// Most stream messages a durable node reads back into its journal when it starts.
const HISTORY_MESSAGES: u64 = 50_000;

/// In the durable mode, fills the journal with what the stream holds before this node's start (at most
/// [`HISTORY_MESSAGES`] messages and the journal's own bounds), so that a client whose last id is older than this
/// node's start resumes here exactly: a restarted node serves the ids other nodes issued while it was away.
async fn prefill_journal(config: &Config, coordinator: &Coordinator, journal: &Journal) {
    if coordinator.stream_start().is_none() {
        return;
    }
    let started = std::time::Instant::now();
    let max = u64::try_from(config.http.journal_events)
        .unwrap_or(u64::MAX)
        .min(HISTORY_MESSAGES);
    match coordinator.stream_history(max, |event| journal.prefill(event)).await {
        Ok(events) => tracing::info!(
            events,
            ms = started.elapsed().as_millis() as u64,
            "journal prefilled from the durable stream: clients resume here with ids from before this node started"
        ),
        Err(e) => tracing::warn!(
            "cannot read the durable stream's history; clients whose last id is older than this node's start are told \
             to resync: {}",
            agora::Report(&e)
        ),
    }
}

impl NodeInfo {
    /// The facts `/v1/node` and `/v1/cluster/nodes` show about this node.
    pub fn new(config: &Config, http: String, started: Instant) -> Self {
        let coordinator = match &config.backend {
            Backend::SingleNode => "single-node".to_string(),
            Backend::Nats { store_id, .. } => store_id.clone(),
        };
        NodeInfo {
            coordinator,
            http,
            started,
            stalwart: config.stalwart.clone(),
        }
    }
}

/// What every handler reaches: the coordinator, the services' state, the API's policies and limits.
pub fn app_state(
    config: &Config,
    coordinator: &Coordinator,
    node: &RunningServices,
    info: NodeInfo,
    shutdown: CancellationToken,
) -> AppState {
    let shared = &node.shared;
    let blocked_ips = BlockList::new(
        coordinator.clone(),
        shared.state.clone(),
        shared.local_writes.clone(),
        config.http.min_block_prefix,
    );
    let push_subscriptions = PushSubscriptions::new(
        coordinator.clone(),
        shared.state.clone(),
        shared.local_writes.clone(),
        shared.push.clone(),
        node.delivery.clone(),
        shared.metrics.clone(),
    );
    let clients = config.http.clients.as_ref();
    if let Some(clients) = clients {
        shared
            .state
            .configure_revocations(clients.max_revocations, clients.max_token_lifetime);
    }
    let revocations = Revocations::new(
        coordinator.clone(),
        shared.state.clone(),
        shared.local_writes.clone(),
        clients.map(|c| c.max_token_lifetime),
        shared.metrics.clone(),
    );
    AppState {
        coordinator: coordinator.clone(),
        info: Arc::new(info),
        metrics: node.metrics.clone(),
        state: shared.state.clone(),
        local_writes: shared.local_writes.clone(),
        shutdown: shutdown.clone(),
        access: Arc::new(http::edge::AccessPolicy::new(&config.http)),
        journal: node.journal.clone(),
        node_metrics: shared.metrics.clone(),
        streams: Arc::new(tokio::sync::Semaphore::new(config.http.max_streams)),
        body_timeout: config.http.body_timeout,
        push: shared.push.clone(),
        fanout: http::fanout::FanoutHub::start(node.journal.clone(), shared.metrics.clone(), shutdown),
        intake: EventIntake::new(coordinator.clone(), blocked_ips.clone(), push_subscriptions.clone()),
        blocked_ips,
        push_subscriptions,
        revocations,
    }
}
