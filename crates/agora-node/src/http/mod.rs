//! The node's local HTTP API (contract section 3): one state, one error type, one router per area.

mod error;
mod events;
pub(crate) mod json;
mod status;

use std::sync::Arc;
use std::time::Instant;

use agora::Coordinator;
use axum::Router;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) coordinator: Coordinator,
    pub(crate) info: Arc<NodeInfo>,
}

/// Static facts about this node, for `/v1/node` and `/v1/cluster/nodes`.
#[derive(Debug)]
pub(crate) struct NodeInfo {
    /// The store id the coordinator uses, or `single-node`.
    pub(crate) coordinator: String,
    /// The HTTP address this node serves on.
    pub(crate) http: String,
    /// When the process started.
    pub(crate) started: Instant,
}

/// The whole API.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .merge(status::router())
        .merge(events::router())
        .with_state(state)
}
