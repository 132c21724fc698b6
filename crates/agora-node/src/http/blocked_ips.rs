//! The replicated blocked-IP list: block and unblock on every node, and the lookup a mail server makes on every
//! accepted connection (answered from memory).

use std::net::IpAddr;
use std::time::Duration;

use agora::event::parse_network;
use agora::Event;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{ApiJson, RequestBody};
use super::error::ApiError;
use super::AppState;
use crate::services::blocked_ips::{canonical, BlockRule};

/// Longest accepted TTL: anything longer is a permanent block in practice; say so with no TTL.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/blocked-ips", post(block).get(list))
        .route("/v1/blocked-ips/{target}", get(lookup).delete(unblock))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockRequest {
    network: String,
    ttl: Option<String>,
    reason: Option<String>,
    /// Needed to block a network broader than `[http] min-block-prefix-v4/-v6`.
    #[serde(default)]
    force: bool,
}

/// Shortest TTL accepted: a rule that expires before it reaches the other nodes would never be in force.
const MIN_TTL: Duration = Duration::from_secs(1);

impl RequestBody for BlockRequest {}

fn rule_json(rule: &BlockRule) -> Value {
    json!({
        "network": rule.network.to_string(),
        "expires_at_ms": rule.expires_at_ms,
        "reason": rule.reason,
        "origin_node": rule.origin_node,
    })
}

/// Refuses a block broader than `[http] min-block-prefix-v4/-v6` (`as_given` is how the request wrote it), unless the
/// request says `"force": true` (the caller checks that).
pub(super) fn check_breadth(state: &AppState, network: IpNet, as_given: &str) -> Result<(), ApiError> {
    let (min_v4, min_v6) = state.info.min_block_prefix;
    let min = if network.addr().is_ipv4() { min_v4 } else { min_v6 };
    if network.prefix_len() < min {
        return Err(ApiError::bad_request(format!(
            "refusing to block {network} (stored form of {as_given:?}): it is broader than /{min}, which would block \
             a large part of the internet on every node; send \"force\": true to POST /v1/blocked-ips if that is \
             really meant"
        )));
    }
    Ok(())
}

/// Publishes the block and answers once this node applied it, with the rule as stored (canonical network, origin,
/// expiry), so that a lookup right after the answer sees it.
async fn block(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<BlockRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // Checked as it will be stored: `::ffff:0:0/96` is the IPv4 network 0.0.0.0/0.
    let network = canonical(parse_network(&request.network).map_err(ApiError::bad_request)?);
    if !request.force {
        check_breadth(&state, network, &request.network)?;
    }
    let expires_at_ms = match request.ttl.as_deref() {
        None => None,
        Some(text) => {
            let ttl = humantime::parse_duration(text)
                .map_err(|e| ApiError::bad_request(format!("invalid ttl {text:?}: {e}; use e.g. \"30m\" or \"1h\"")))?;
            if ttl < MIN_TTL || ttl > MAX_TTL {
                return Err(ApiError::bad_request(format!(
                    "ttl {text:?} out of range: at least 1s and at most 10 years (omit ttl for a permanent block)"
                )));
            }
            Some(agora::clock::now_ms() + u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        }
    };
    let event = Event::BlockedIp {
        network,
        expires_at_ms,
        reason: request.reason,
    };
    state.local_writes.publish(&state.coordinator, event).await?;
    // What is stored now: this write, or a greater one for the same network that won meanwhile.
    let stored = state.state.blocked().get(&network).map(rule_json);
    let body = stored.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("{network} was unblocked at the same time as this block, and the unblock wins"),
        )
    })?;
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list(State(state): State<AppState>) -> Json<Value> {
    let rules = state.state.blocked().list(agora::clock::now_ms());
    Json(Value::Array(rules.iter().map(rule_json).collect()))
}

async fn lookup(
    State(state): State<AppState>,
    Path(target): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ip: IpAddr = target
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid IP address {target:?}")))?;
    let registry = state.state.blocked();
    Ok(match registry.lookup(ip, agora::clock::now_ms()) {
        Some(rule) => {
            let mut body = rule_json(rule);
            body["blocked"] = json!(true);
            (StatusCode::OK, Json(body))
        }
        None => (StatusCode::NOT_FOUND, Json(json!({ "blocked": false }))),
    })
}

async fn unblock(State(state): State<AppState>, Path(target): Path<String>) -> Result<StatusCode, ApiError> {
    let network = parse_network(&target).map_err(ApiError::bad_request)?;
    // Always broadcast, even if this node has no such rule: it may have missed the block that others hold, and the
    // unblock's tombstone makes repeating it harmless. Deleting is idempotent: 204 either way.
    state
        .local_writes
        .publish(&state.coordinator, Event::UnblockedIp { network })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
