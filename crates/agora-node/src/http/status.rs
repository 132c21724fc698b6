//! Health, this node, and cluster membership.

use agora::peers::NodeIdClash;
use agora::{LinkState, StalwartSender};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::services::metrics::catalogue;
use crate::services::state::Readiness;

/// The status routes, with their documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(node))
        .routes(routes!(cluster_nodes))
}

/// How long a node that lost events may wait for a new state transfer while still reporting `ok` (with a warning):
/// a transfer normally takes well under a second; one that does not end means the state stays incomplete.
const RESYNC_GRACE_MS: u64 = 30_000;

/// The health check's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` (200), or why not (503): `disconnected`, `starting`, `resyncing`.
    #[schema(pattern = "^(ok|disconnected|starting|resyncing)$")]
    status: &'static str,
    /// The link to the cluster: `single_node`, `connected`, `reconnecting`, `closed`.
    link: &'static str,
    /// This node's id.
    node_id: u16,
    /// The replicated state: `starting`, `current`, `resyncing`.
    state: &'static str,
    /// Why the link is closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// What a node that is not current waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_for: Option<String>,
    /// Two processes use this node's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id_clash: Option<NodeIdClash>,
    /// Another sender on the Stalwart bus uses this node's `[stalwart] node-id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    stalwart_node_id_clash: Option<u16>,
    /// What an operator should know, in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// 200 while connected (or single-node) and holding the replicated state, 503 otherwise, with the reason.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "status",
    security(()),
    responses(
        (status = 200, description = "Connected (or single-node) and holding the replicated state", body = Health),
        (status = 503, description = "Not ready: disconnected, starting or resyncing", body = Health),
    )
)]
async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let coordinator = &state.coordinator;
    let link = coordinator.link_state();
    let readiness = state.state.readiness();
    let resyncing_for_ms = match readiness {
        Readiness::Resyncing { since_ms } => Some(agora::clock::now_ms().saturating_sub(since_ms)),
        _ => None,
    };
    let (status, code) = if !link.is_healthy() {
        ("disconnected", StatusCode::SERVICE_UNAVAILABLE)
    } else if readiness == Readiness::Starting {
        // Joined, but the blocked-IP list and push registry are not transferred from a peer yet.
        ("starting", StatusCode::SERVICE_UNAVAILABLE)
    } else if resyncing_for_ms.is_some_and(|ms| ms > RESYNC_GRACE_MS) {
        // Events were lost and no peer has sent the state since: the node is missing state it cannot get.
        ("resyncing", StatusCode::SERVICE_UNAVAILABLE)
    } else {
        ("ok", StatusCode::OK)
    };
    let mut body = Health {
        status,
        link: link.label(),
        node_id: coordinator.node_id().get(),
        state: match readiness {
            Readiness::Starting => "starting",
            Readiness::Current => "current",
            Readiness::Resyncing { .. } => "resyncing",
        },
        reason: None,
        waiting_for: None,
        node_id_clash: None,
        stalwart_node_id_clash: None,
        warnings: Vec::new(),
    };
    if let LinkState::Closed { reason } = &link {
        body.reason = Some(reason.clone());
    }
    if readiness != Readiness::Current {
        body.waiting_for = state.state.waiting_for();
    }
    if let Some(ms) = resyncing_for_ms {
        body.warnings.push(format!(
            "events were lost {:.1}s ago and the replicated state is being transferred again from a peer",
            ms as f64 / 1000.0
        ));
    }
    if let Some(clash) = coordinator.node_id_clash() {
        body.warnings.push(format!(
            "node id {} is used by two running processes; give every node a unique [cluster] node-id",
            clash.node_id
        ));
        body.node_id_clash = Some(clash);
    }
    if let Some(id) = coordinator.stalwart_node_id_clash() {
        body.stalwart_node_id_clash = Some(id);
        body.warnings.push(format!(
            "another sender on the Stalwart bus uses this node's [stalwart] node-id {id}; give agora an id no \
             Stalwart node and no other agora node uses"
        ));
    }
    (code, Json(body))
}

/// The `stalwart` part of `/v1/node`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StalwartView {
    /// The Stalwart release whose bus format this node speaks.
    version: String,
    /// The Stalwart subject.
    subject: String,
    /// The node id agora's batches carry on the Stalwart bus.
    node_id: Option<u16>,
    /// The agora event types forwarded to the Stalwart bus.
    forward: Vec<&'static str>,
    /// Another sender uses `node_id`.
    node_id_clash: Option<u16>,
    /// The Stalwart nodes heard in the last five minutes.
    nodes: Vec<StalwartSender>,
    /// The Stalwart bus's counters, by name.
    #[schema(value_type = std::collections::HashMap<String, u64>)]
    counters: Map<String, Value>,
}

/// A problem tile of the dashboard: which counter, under which label.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// The counter's name in `counters`.
    counter: &'static str,
    /// What the dashboard calls it.
    label: &'static str,
}

/// This node, as `/v1/node` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeView {
    /// The Stalwart bus, when `[stalwart]` is configured; null otherwise.
    stalwart: Option<StalwartView>,
    /// This node's id.
    node_id: u16,
    /// This process's instance id (hex; changes on restart).
    instance_id: String,
    /// The store id the coordinator uses, or `single-node`.
    coordinator: String,
    /// Whether events flow (or need not: single-node).
    connected: bool,
    /// The link to the cluster.
    link: LinkState,
    /// The NATS server in use; null in single-node mode.
    server: Option<String>,
    /// The HTTP address this node serves on.
    http: String,
    /// The node's version.
    version: &'static str,
    /// Milliseconds since the process started.
    uptime_ms: u64,
    /// Live peers.
    members: usize,
    /// Whether the replicated state is held (as for `/healthz`).
    ready: bool,
    /// Blocked-IP rules held.
    blocked_ip_rules: usize,
    /// Push subscriptions held.
    push_subscriptions: usize,
    /// Two processes use this node's id.
    node_id_clash: Option<NodeIdClash>,
    /// The node's counters, by name.
    #[schema(value_type = std::collections::HashMap<String, u64>)]
    counters: Map<String, Value>,
    /// The dashboard's problem tiles.
    problems: Vec<Problem>,
}

/// How long a Stalwart sender counts as "heard recently" in `/v1/node`.
const STALWART_RECENT_MS: u64 = 5 * 60 * 1000;

/// The `stalwart` part of `/v1/node`: the configuration, the Stalwart nodes heard recently, the counters.
fn stalwart_view(state: &AppState, counters: Map<String, Value>) -> Option<StalwartView> {
    let (Some(config), Some(stats)) = (&state.info.stalwart, state.coordinator.stalwart_stats()) else {
        return None;
    };
    let since = agora::clock::now_ms().saturating_sub(STALWART_RECENT_MS);
    let nodes: Vec<_> = stats
        .senders()
        .into_iter()
        .filter(|s| s.last_seen_ms >= since)
        .collect();
    Some(StalwartView {
        version: config.version.to_string(),
        subject: config.subject.clone(),
        node_id: config.node_id,
        forward: config.forward.clone(),
        node_id_clash: state.coordinator.stalwart_node_id_clash(),
        nodes,
        counters,
    })
}

/// `GET /v1/node`: this node, its link, its state and its counters.
#[utoipa::path(
    get,
    path = "/v1/node",
    tag = "status",
    responses((status = 200, description = "This node", body = NodeView))
)]
async fn node(State(state): State<AppState>) -> Json<NodeView> {
    let c = &state.coordinator;
    let link = c.link_state();
    let (counters, stalwart_counters) = catalogue::node_counters(c, &state.node_metrics);
    Json(NodeView {
        stalwart: stalwart_view(&state, stalwart_counters),
        node_id: c.node_id().get(),
        instance_id: format!("{:016x}", c.instance_id()),
        coordinator: state.info.coordinator.clone(),
        connected: link.is_healthy(),
        link,
        server: c.server(),
        http: state.info.http.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_ms: u64::try_from(state.info.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        members: c.members().len(),
        ready: state.state.is_ready(),
        blocked_ip_rules: state.state.blocked_rule_count(),
        push_subscriptions: state.state.push_subscription_count(),
        node_id_clash: c.node_id_clash(),
        counters,
        // The dashboard's problem tiles: which counters, with which label (declared with the counters).
        problems: catalogue::dashboard_problems()
            .map(|(counter, label)| Problem { counter, label })
            .collect(),
    })
}

/// A live node of the cluster.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClusterNode {
    /// Its node id.
    node_id: u16,
    /// When it was last heard from (Unix ms; now for this node).
    last_seen_ms: u64,
    /// Its HTTP API, from its heartbeat.
    http: Option<String>,
    /// When its process started (Unix ms); absent for this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at_ms: Option<u64>,
    /// Whether it is the node that answers.
    #[serde(rename = "self")]
    is_self: bool,
}

/// Live nodes: this one first, then peers from their heartbeats.
#[utoipa::path(
    get,
    path = "/v1/cluster/nodes",
    tag = "status",
    responses((status = 200, description = "This node first, then its live peers", body = Vec<ClusterNode>))
)]
async fn cluster_nodes(State(state): State<AppState>) -> Json<Vec<ClusterNode>> {
    let c = &state.coordinator;
    let mut nodes = vec![ClusterNode {
        node_id: c.node_id().get(),
        last_seen_ms: agora::clock::now_ms(),
        http: Some(state.info.http.clone()),
        started_at_ms: None,
        is_self: true,
    }];
    nodes.extend(c.members().iter().map(|m| ClusterNode {
        node_id: m.node_id.get(),
        last_seen_ms: m.last_seen_ms,
        http: m.http.clone(),
        started_at_ms: Some(m.started_at_ms),
        is_self: false,
    }));
    Json(nodes)
}
