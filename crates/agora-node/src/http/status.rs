//! Health, this node, and cluster membership.

use crate::services::metrics::catalogue;
use agora::LinkState;

use crate::services::state::Readiness;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/node", get(node))
        .route("/v1/cluster/nodes", get(cluster_nodes))
}

/// How long a node that lost events may wait for a new state transfer while still reporting `ok` (with a warning):
/// a transfer normally takes well under a second; one that does not end means the state stays incomplete.
const RESYNC_GRACE_MS: u64 = 30_000;

/// 200 while connected (or single-node) and holding the replicated state, 503 otherwise, with the reason.
async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
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
    let mut body = json!({
        "status": status,
        "link": link.label(),
        "node_id": coordinator.node_id().get(),
        "state": match readiness {
            Readiness::Starting => "starting",
            Readiness::Current => "current",
            Readiness::Resyncing { .. } => "resyncing",
        },
    });
    if let LinkState::Closed { reason } = &link {
        body["reason"] = json!(reason);
    }
    let mut warnings = Vec::new();
    if readiness != Readiness::Current {
        if let Some(why) = state.state.waiting_for() {
            body["waiting_for"] = json!(why);
        }
    }
    if let Some(ms) = resyncing_for_ms {
        warnings.push(format!(
            "events were lost {:.1}s ago and the replicated state is being transferred again from a peer",
            ms as f64 / 1000.0
        ));
    }
    if let Some(clash) = coordinator.node_id_clash() {
        body["node_id_clash"] = json!(clash);
        warnings.push(format!(
            "node id {} is used by two running processes; give every node a unique [cluster] node-id",
            clash.node_id
        ));
    }
    if let Some(id) = coordinator.stalwart_node_id_clash() {
        body["stalwart_node_id_clash"] = json!(id);
        warnings.push(format!(
            "another sender on the Stalwart bus uses this node's [stalwart] node-id {id}; give agora an id no \
             Stalwart node and no other agora node uses"
        ));
    }
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    (code, Json(body))
}

/// How long a Stalwart sender counts as "heard recently" in `/v1/node`.
const STALWART_RECENT_MS: u64 = 5 * 60 * 1000;

/// The `stalwart` part of `/v1/node`: the configuration, the Stalwart nodes heard recently, the counters.
fn stalwart_json(state: &AppState, counters: serde_json::Map<String, Value>) -> Value {
    let (Some(config), Some(stats)) = (&state.info.stalwart, state.coordinator.stalwart_stats()) else {
        return Value::Null;
    };
    let since = agora::clock::now_ms().saturating_sub(STALWART_RECENT_MS);
    let nodes: Vec<_> = stats
        .senders()
        .into_iter()
        .filter(|s| s.last_seen_ms >= since)
        .collect();
    json!({
        "version": config.version.to_string(),
        "subject": config.subject,
        "node_id": config.node_id,
        "forward": config.forward,
        "node_id_clash": state.coordinator.stalwart_node_id_clash(),
        "nodes": nodes,
        "counters": counters,
    })
}

async fn node(State(state): State<AppState>) -> Json<Value> {
    let c = &state.coordinator;
    let link = c.link_state();
    let (counters, stalwart_counters) = catalogue::node_counters(c, &state.node_metrics);
    Json(json!({
        "stalwart": stalwart_json(&state, stalwart_counters),
        "node_id": c.node_id().get(),
        "instance_id": format!("{:016x}", c.instance_id()),
        "coordinator": state.info.coordinator,
        "connected": link.is_healthy(),
        "link": link,
        "server": c.server(),
        "http": state.info.http,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": u64::try_from(state.info.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "members": c.members().len(),
        "ready": state.state.is_ready(),
        "blocked_ip_rules": state.state.blocked_rule_count(),
        "push_subscriptions": state.state.push_subscription_count(),
        "node_id_clash": c.node_id_clash(),
        "counters": counters,
        // The dashboard's problem tiles: which counters, with which label (declared with the counters).
        "problems": catalogue::dashboard_problems()
            .map(|(counter, label)| json!({ "counter": counter, "label": label }))
            .collect::<Vec<_>>(),
    }))
}

/// Live nodes: this one first, then peers from their heartbeats.
async fn cluster_nodes(State(state): State<AppState>) -> Json<Value> {
    let c = &state.coordinator;
    let mut nodes = vec![json!({
        "node_id": c.node_id().get(),
        "last_seen_ms": agora::clock::now_ms(),
        "http": state.info.http,
        "self": true,
    })];
    nodes.extend(c.members().iter().map(|m| {
        json!({
            "node_id": m.node_id.get(),
            "last_seen_ms": m.last_seen_ms,
            "http": m.http,
            "started_at_ms": m.started_at_ms,
            "self": false,
        })
    }));
    Json(Value::Array(nodes))
}
