//! `agora node`: the main job. Runs the coordinator and the local HTTP API until SIGINT/SIGTERM, then stops
//! accepting requests, flushes queued events and tells peers it left.
//!
//! Start-up is a sequence of named steps, each failing with a typed error: what can be checked locally (the
//! configuration, the certificate, the port) is checked before anything joins the cluster.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use agora::config::Config;
use agora::{Coordinator, NodeId, StartOptions, Subscriptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app;
use crate::bus_runtime::BusRuntime;
use crate::error::{CliError, ConfigError, StartError};
use crate::http::{self, AppState, NodeInfo};

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
    let bus = BusRuntime::start().map_err(StartError::BusRuntime)?;
    let (coordinator, subscription) = start_coordinator(&bus, &config, &http_addr).await?;
    warn_about_exposure(&config, &coordinator);
    let shutdown = CancellationToken::new();
    let node = app::start_services(&config, &coordinator, subscription, shutdown.clone()).await?;
    let info = NodeInfo::new(&config, http_addr.clone(), started);
    let state = app::app_state(&config, &coordinator, &node, info, shutdown.clone());
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
    drop(bus);
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

/// Joins the cluster, subscribed from the start (the services, and the journal in stream order): in durable mode
/// the events this node missed arrive right away.
/// It starts on the bus runtime ([`BusRuntime`]), where all its tasks then run.
async fn start_coordinator(
    bus: &BusRuntime,
    config: &Config,
    http_addr: &str,
) -> Result<(Coordinator, Subscriptions), StartError> {
    let options = StartOptions {
        http: Some(http_addr.to_string()),
        ..StartOptions::default()
    };
    let config = config.clone();
    bus.run(async move { Coordinator::start_with_subscriptions(&config, options).await })
        .await
        .map_err(StartError::BusTask)?
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
