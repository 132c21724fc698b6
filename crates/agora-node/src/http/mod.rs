//! The node's local HTTP API (contract section 3): one state, one error type, one router per area.

mod error;
mod events;
pub mod json;
mod status;

use std::sync::Arc;
use std::time::Instant;

use agora::Coordinator;
use axum::Router;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The coordinator.
    pub coordinator: Coordinator,
    /// Facts about this node.
    pub info: Arc<NodeInfo>,
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
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(status::router())
        .merge(events::router())
        .with_state(state)
}
