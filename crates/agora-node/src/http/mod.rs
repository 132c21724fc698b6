//! The node's local HTTP API: one state, one error type, one router per area.

mod blocked_ips;
mod body;
pub mod client_tokens;
mod dashboard;
mod direct;
pub mod edge;
mod error;
mod events;
mod eventsource;
pub mod fanout;
mod metrics;
mod openapi;
mod paged;
mod push;
mod revocations;
pub mod server;
mod sse;
mod status;
mod stream_filter;
mod stream_schema;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use agora::Coordinator;
use axum::extract::FromRef;
use axum::Router;
use prometheus_client::registry::Registry;

use crate::services::block_list::BlockList;
use crate::services::intake::EventIntake;
use crate::services::local_writes::LocalWrites;
use crate::services::push_subscriptions::PushSubscriptions;
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
    /// Who may call the API (`[http] token`, `cors-origins`).
    pub access: Arc<edge::AccessPolicy>,
    /// What the streams and the long poll read: every notification, numbered.
    pub journal: Arc<crate::services::journal::Journal>,
    /// The node's own metrics, for handlers that count (lagged streams).
    pub node_metrics: Arc<crate::services::metrics::NodeMetrics>,
    /// One permit per open SSE stream (`[http] max-streams`).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// `[http] body-timeout`.
    pub body_timeout: std::time::Duration,
    /// `[push]`: registrations are checked against the same rules the delivery applies.
    pub push: Arc<crate::services::push_delivery::PushPolicy>,
    /// Where plain-HTTP EventSource streams are written from.
    pub fanout: Arc<fanout::FanoutHub>,
    /// The blocked-IP list's write path and reads.
    pub blocked_ips: BlockList,
    /// The push subscriptions' write path and reads.
    pub push_subscriptions: PushSubscriptions,
    /// Where directly published events enter.
    pub intake: EventIntake,
    /// The client-token revocations' write path.
    pub revocations: crate::services::revocation_list::Revocations,
}

impl FromRef<AppState> for BlockList {
    fn from_ref(state: &AppState) -> Self {
        state.blocked_ips.clone()
    }
}

impl FromRef<AppState> for PushSubscriptions {
    fn from_ref(state: &AppState) -> Self {
        state.push_subscriptions.clone()
    }
}

impl FromRef<AppState> for EventIntake {
    fn from_ref(state: &AppState) -> Self {
        state.intake.clone()
    }
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

/// The API's routes, each registered with its documentation, and the document they make.
fn documented() -> (Router<AppState>, openapi::Served) {
    let (routes, document) = openapi::frame()
        .merge(status::router())
        .merge(events::router())
        .merge(eventsource::router())
        .merge(blocked_ips::router())
        .merge(push::router())
        .merge(revocations::router())
        .merge(metrics::router())
        .split_for_parts();
    (routes, openapi::finish(document))
}

/// The whole API: the documented routes (`GET /v1/openapi.json` serves their document) and the dashboard.
///
/// The guard (bounds, CORS, token) wraps the routed API as one service, in front of the method routing: a
/// request it refuses never reaches a route, so no `Allow` header (which axum's method routing adds to whatever
/// answers a method a path lacks) tells a caller without a token which methods a path has.
pub fn router(state: AppState) -> Router {
    let (api, document) = documented();
    let routes = Router::new()
        .merge(dashboard::router())
        .merge(api)
        .layer(axum::Extension(document))
        .layer(axum::middleware::from_fn_with_state(state.clone(), edge::body_deadline))
        .layer(axum::middleware::from_fn(edge::json_errors))
        .with_state(state.clone());
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn_with_state(state.clone(), edge::guard))
        .with_state(state)
}
