//! The replicated blocked-IP list over HTTP: block and unblock on every node, and the lookup a mail server makes
//! on every accepted connection (answered from memory). The rules live in [`BlockList`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::body::{ApiJson, RequestBody};
use super::error::ApiError;
use super::AppState;
use crate::services::block_list::{BlockList, BlockRequest};
use crate::services::blocked_ips::BlockRule;

/// The blocked-IP routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/blocked-ips", post(block).get(list))
        .route("/v1/blocked-ips/{target}", get(lookup).delete(unblock))
}

impl RequestBody for BlockRequest {}

/// A rule as the API shows it.
fn rule_json(rule: &BlockRule) -> Value {
    json!({
        "network": rule.network.to_string(),
        "expires_at_ms": rule.expires_at_ms,
        "reason": rule.reason,
        "origin_node": rule.origin_node,
    })
}

/// `POST /v1/blocked-ips`: 201 with the rule as stored, once this node applied it.
async fn block(
    State(blocked_ips): State<BlockList>,
    ApiJson(request): ApiJson<BlockRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let rule = blocked_ips.block(request).await?;
    Ok((StatusCode::CREATED, Json(rule_json(&rule))))
}

/// `GET /v1/blocked-ips`: every rule in force, in network order, streamed a page at a time.
async fn list(State(blocked_ips): State<BlockList>) -> Response {
    super::paged::json_array(move |after| {
        let (rules, next) = blocked_ips.page(after, super::paged::PAGE_ITEMS);
        (rules.iter().map(rule_json).collect(), next)
    })
}

/// `GET /v1/blocked-ips/{ip}`: 200 with the rule in force, 404 `{"blocked": false}` without one.
async fn lookup(
    State(blocked_ips): State<BlockList>,
    Path(target): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    Ok(match blocked_ips.lookup(&target)? {
        Some(rule) => {
            let mut body = rule_json(&rule);
            body["blocked"] = json!(true);
            (StatusCode::OK, Json(body))
        }
        None => (StatusCode::NOT_FOUND, Json(json!({ "blocked": false }))),
    })
}

/// `DELETE /v1/blocked-ips/{network}`: 204, whether or not this node knew the rule.
async fn unblock(State(blocked_ips): State<BlockList>, Path(target): Path<String>) -> Result<StatusCode, ApiError> {
    blocked_ips.unblock(&target).await?;
    Ok(StatusCode::NO_CONTENT)
}
