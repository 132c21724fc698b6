//! `agora node`: the main job. Runs the coordinator and the local HTTP API until SIGINT/SIGTERM, then stops
//! accepting requests, flushes queued events and tells peers it left.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use agora::config::Backend;
use agora::{Coordinator, NodeId, StartOptions};

use tokio_util::sync::CancellationToken;

use crate::http::{self, AppState, NodeInfo};
use crate::services::journal::{self, Journal};
use crate::services::metrics;
use crate::services::push_delivery::PushPolicy;
use crate::services::sync;
use crate::Failure;

/// How long open HTTP requests may take to finish after the shutdown signal.
const HTTP_DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the node until SIGINT/SIGTERM.
pub async fn run(config: Option<&Path>, http: Option<SocketAddr>, node_id: Option<u16>) -> Result<(), Failure> {
    let started = Instant::now();
    let mut config = super::load_config(config)?;
    if let Some(addr) = http {
        config.http.listen = addr;
    }
    if let Some(id) = node_id {
        config.cluster.node_id = NodeId::new(id);
    }
    // `--http` may move the API off loopback: the same rule as for the file.
    config.http.check_exposure().map_err(Failure::Usage)?;
    if config.http.tokens.is_empty() {
        tracing::info!("the HTTP API requires no token ([http] token unset): reachable from this host only");
    }
    // A bad certificate is reported before anything joins the cluster.
    let tls = match &config.http.tls {
        Some(files) => Some(http::tls::Acceptor::load(files).map_err(Failure::Usage)?),
        None => None,
    };
    // Bind first: a taken port is reported before anything joins the cluster.
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|e| Failure::Runtime(format!("cannot listen on {} (http.listen): {e}", config.http.listen)))?;
    let http_addr = listener
        .local_addr()
        .map_err(|e| Failure::Runtime(format!("cannot read the listening address: {e}")))?
        .to_string();
    // Logged before joining: whoever started the node with port 0 (tests, scripts) learns the port from this line.
    tracing::info!(http = %http_addr, "HTTP API bound");
    let options = StartOptions {
        http: Some(http_addr.clone()),
        ..StartOptions::default()
    };
    // Subscribed from the start: in durable mode the events this node missed arrive right away.
    let (coordinator, subscription) = Coordinator::start_subscribed(&config, options)
        .await
        .map_err(|e| Failure::Runtime(e.to_string()))?;
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
    let store = match &config.backend {
        Backend::SingleNode => "single-node".to_string(),
        Backend::Nats { store_id, .. } => store_id.clone(),
    };
    let shutdown = CancellationToken::new();
    let shared = sync::Shared {
        push: Arc::new(PushPolicy::new(&config.push)),
        ..sync::Shared::default()
    };
    // The journal subscribes before the service task runs, so it holds what applications are shown from the start.
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
        shutdown.clone(),
    )
    .await
    .map_err(|e| Failure::Runtime(e.to_string()))?;
    let state = AppState {
        coordinator: coordinator.clone(),
        info: Arc::new(NodeInfo {
            coordinator: store,
            http: http_addr.clone(),
            started,
            stalwart: config.stalwart.clone(),
            min_block_prefix: config.http.min_block_prefix,
        }),
        metrics: Arc::new(metrics),
        state: shared.state,
        local_writes: shared.local_writes,
        shutdown: shutdown.clone(),
        access: Arc::new(http::edge::AccessPolicy::new(&config.http)),
        journal: journal.clone(),
        node_metrics: shared.metrics.clone(),
        streams: Arc::new(tokio::sync::Semaphore::new(config.http.max_streams)),
        body_timeout: config.http.body_timeout,
        push: shared.push.clone(),
        fanout: http::fanout::FanoutHub::start(journal.clone(), shared.metrics.clone(), shutdown.clone()),
    };
    let (max_connections, overflow_connections) = http::server::fit_to_fd_limit(config.http.max_connections);
    let limits = http::server::Limits {
        max_connections,
        overflow_connections,
        header_timeout: config.http.header_timeout,
        drain: HTTP_DRAIN_DEADLINE,
    };
    tracing::info!(http = %http_addr, node_id = coordinator.node_id().get(), "agora node ready");
    // On the signal, cancel `shutdown` first: that ends the long-lived SSE streams, so the graceful drain of the
    // HTTP server can finish. The drain is bounded all the same.
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            super::shutdown_signal().await;
            tracing::info!("shutting down: closing streams, flushing queued events, leaving the cluster");
            shutdown.cancel();
        });
    }
    let node_metrics = state.node_metrics.clone();
    if let (Some(acceptor), Some(files)) = (&tls, &config.http.tls) {
        acceptor.clone().watch(files.clone(), &coordinator, shutdown.clone());
    }
    http::server::serve(
        listener,
        http::router(state),
        limits,
        tls,
        node_metrics,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    let _ = services.await;
    let _ = feeder.await;
    coordinator.shutdown().await;
    Ok(())
}
