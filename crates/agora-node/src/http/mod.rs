//! The node's local HTTP API: one state, one error type, one router per area.

mod blocked_ips;
mod body;
mod dashboard;
mod error;
mod events;
mod eventsource;
pub mod json;
mod metrics;
mod push;
mod sse;
mod status;

use std::sync::Arc;
use std::time::Instant;

use agora::Coordinator;
use axum::Router;
use prometheus_client::registry::Registry;

use crate::services::local_writes::LocalWrites;
use crate::services::state::NodeState;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The coordinator.
    pub coordinator: Coordinator,
    /// Facts about this node.
    pub info: Arc<NodeInfo>,
    /// The replicated state, read-only here: handlers change it only by publishing events.
    pub state: Arc<NodeState>,
    /// Where handlers wait for their published events to be applied (read-your-writes).
    pub local_writes: Arc<LocalWrites>,
    /// What `/metrics` serves.
    pub metrics: Arc<Registry>,
    /// Cancelled when the node shuts down: ends the long-lived SSE streams.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Static facts about this node, for `/v1/node` and `/v1/cluster/nodes`.
#[derive(Debug)]
pub struct NodeInfo {
    /// The store id the coordinator uses, or `single-node`.
    pub coordinator: String,
    /// The HTTP address this node serves on.
    pub http: String,
    /// When the process started.
    pub started: Instant,
    /// `[stalwart]`, for `/v1/node`.
    pub stalwart: Option<agora::config::StalwartConfig>,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(dashboard::router())
        .merge(status::router())
        .merge(events::router())
        .merge(eventsource::router())
        .merge(blocked_ips::router())
        .merge(push::router())
        .merge(metrics::router())
        .with_state(state)
}
