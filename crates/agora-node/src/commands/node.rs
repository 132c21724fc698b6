//! `agora node`: the main job. Runs the coordinator and the local HTTP API until SIGINT/SIGTERM, then stops
//! accepting requests, flushes queued events and tells peers it left.
//!
//! Start-up is a sequence of named steps, each failing with a typed error: what can be checked locally (the
//! configuration, the certificate, the port) is checked before anything joins the cluster.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use agora::config::{Backend, Config};
use agora::{Coordinator, NodeId, StartOptions, Subscription};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{CliError, ConfigError, StartError};
use crate::http::{self, AppState, NodeInfo};
use crate::services::block_list::BlockList;
use crate::services::intake::EventIntake;
use crate::services::journal::{self, Journal};
use crate::services::metrics;
use crate::services::push_delivery::PushPolicy;
use crate::services::push_subscriptions::PushSubscriptions;
use crate::services::sync;

/// How long open HTTP requests may take to finish after the shutdown signal.
const HTTP_DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the node until SIGINT/SIGTERM.
pub async fn run(config: Option<&Path>, http: Option<SocketAddr>, node_id: Option<u16>) -> Result<(), CliError> {
    let started = Instant::now();
    let config = effective_config(config, http, node_id)?;
    let tls = load_api_tls(&config)?;
    let listener = bind_api(&config).await?;
    let http_addr = listener.local_addr().map_err(StartError::LocalAddr)?.to_string();
    // Logged before joining: whoever started the node with port 0 (tests, scripts) learns the port from this line.
    tracing::info!(http = %http_addr, "HTTP API bound");
    let (coordinator, subscription) = start_coordinator(&config, &http_addr).await?;
    warn_about_exposure(&config, &coordinator);
    let shutdown = CancellationToken::new();
    let node = start_services(&config, &coordinator, subscription, shutdown.clone()).await?;
    let info = NodeInfo::new(&config, http_addr.clone(), started);
    let state = app_state(&config, &coordinator, &node, info, shutdown.clone());
    tracing::info!(http = %http_addr, node_id = coordinator.node_id().get(), "agora node ready");
    stop_on_signal(shutdown.clone());
    if let (Some(acceptor), Some(files)) = (&tls, &config.http.tls) {
        acceptor.clone().watch(files.clone(), &coordinator, shutdown.clone());
    }
    let served = serve_api(&config, listener, state, tls, shutdown.clone()).await;
    // Whether the API served or failed to start, the node leaves the cluster cleanly.
    shutdown.cancel();
    node.stopped().await;
    coordinator.shutdown().await;
    served
}

/// The configuration file with the command line's overrides applied, checked as a whole.
fn effective_config(path: Option<&Path>, http: Option<SocketAddr>, node_id: Option<u16>) -> Result<Config, CliError> {
    let mut config = super::load_config(path)?;
    if let Some(addr) = http {
        config.http.listen = addr;
    }
    if let Some(id) = node_id {
        config.cluster.node_id = NodeId::new(id);
    }
    // `--http` may move the API off loopback: the same rule as for the file.
    config.http.check_exposure().map_err(ConfigError::Inconsistent)?;
    if config.http.tokens.is_empty() {
        tracing::info!("the HTTP API requires no token ([http] token unset): reachable from this host only");
    }
    Ok(config)
}

/// Loads the API's certificate, so that a bad one is reported before anything joins the cluster.
fn load_api_tls(config: &Config) -> Result<Option<http::tls::Acceptor>, ConfigError> {
    config
        .http
        .tls
        .as_ref()
        .map(|files| http::tls::Acceptor::load(files).map_err(ConfigError::Tls))
        .transpose()
}

/// Binds the API's port first: a taken port is reported before anything joins the cluster.
async fn bind_api(config: &Config) -> Result<TcpListener, StartError> {
    TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.http.listen,
            source,
        })
}

/// Joins the cluster, subscribed from the start: in durable mode the events this node missed arrive right away.
async fn start_coordinator(config: &Config, http_addr: &str) -> Result<(Coordinator, Subscription), StartError> {
    let options = StartOptions {
        http: Some(http_addr.to_string()),
        ..StartOptions::default()
    };
    Coordinator::start_subscribed(config, options)
        .await
        .map_err(StartError::Coordinator)
}

/// Warns about settings that leave the cluster open to anyone who can publish on it.
fn warn_about_exposure(config: &Config, coordinator: &Coordinator) {
    for warning in config.security_warnings() {
        tracing::warn!("{warning}");
    }
    if let (true, Some(client)) = (config.cluster.keys.is_empty(), coordinator.nats_client()) {
        let peers = client.server_info().connect_urls;
        if !peers.is_empty() {
            tracing::warn!(
                servers = peers.len(),
                "[cluster] key is not set and the NATS server is part of a NATS cluster that other hosts reach: \
                 anything that can publish on the cluster subject there can inject events and appear as a node; set \
                 [cluster] key"
            );
        }
    }
    if config.cluster.node_id.is_none() {
        tracing::warn!(
            node_id = coordinator.node_id().get(),
            "[cluster] node-id is not set: using a random id; set one so logs and metrics stay stable"
        );
    }
}

/// The node's background work: the journal's feeder and the services that keep the replicated state.
pub(crate) struct RunningServices {
    /// What the services share with the API.
    shared: sync::Shared,
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
    async fn stopped(self) {
        let _ = self.services.await;
        let _ = self.feeder.await;
    }
}

/// Starts the journal and the services. The journal subscribes before the services run, so it holds what
/// applications are shown from the start.
pub(crate) async fn start_services(
    config: &Config,
    coordinator: &Coordinator,
    subscription: Subscription,
    shutdown: CancellationToken,
) -> Result<RunningServices, StartError> {
    let shared = sync::Shared {
        push: Arc::new(PushPolicy::new(&config.push)),
        ..sync::Shared::default()
    };
    let journal = Journal::new(config.http.journal_events, config.http.journal_bytes);
    let feeder = tokio::spawn(journal::feed(
        journal.clone(),
        coordinator.subscribe(),
        shutdown.clone(),
    ));
    let metrics = metrics::registry(
        coordinator.clone(),
        &shared.metrics,
        shared.state.clone(),
        journal.clone(),
    );
    let services = sync::start(
        coordinator.clone(),
        subscription,
        shared.clone(),
        config.cluster.heartbeat_interval,
        shutdown,
    )
    .await
    .map_err(StartError::Services)?;
    Ok(RunningServices {
        shared,
        journal,
        metrics: Arc::new(metrics),
        feeder,
        services,
    })
}

impl NodeInfo {
    /// The facts `/v1/node` and `/v1/cluster/nodes` show about this node.
    fn new(config: &Config, http: String, started: Instant) -> Self {
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
pub(crate) fn app_state(
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
    }
}

/// On SIGINT/SIGTERM, cancels `shutdown`: that ends the long-lived SSE streams first, so that the HTTP server's
/// graceful drain can finish (it is bounded all the same).
fn stop_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        super::shutdown_signal().await;
        tracing::info!("shutting down: closing streams, flushing queued events, leaving the cluster");
        shutdown.cancel();
    });
}

/// Serves the API until `shutdown`; an API that cannot start is an error (the node exits 1 with the cause).
async fn serve_api(
    config: &Config,
    listener: TcpListener,
    state: AppState,
    tls: Option<http::tls::Acceptor>,
    shutdown: CancellationToken,
) -> Result<(), CliError> {
    let (max_connections, overflow_connections) = http::server::fit_to_fd_limit(config.http.max_connections);
    let limits = http::server::Limits {
        max_connections,
        overflow_connections,
        header_timeout: config.http.header_timeout,
        drain: HTTP_DRAIN_DEADLINE,
        ..http::server::Limits::default()
    };
    let node_metrics = state.node_metrics.clone();
    http::server::serve(listener, http::router(state), limits, tls, node_metrics, shutdown).await?;
    Ok(())
}
