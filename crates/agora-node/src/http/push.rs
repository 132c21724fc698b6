//! Push subscriptions, registered on any node and replicated to all.

use agora::event::PushSubscription;
use agora::{DataTypes, Event};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{ApiJson, RequestBody};
use super::error::ApiError;
use super::AppState;
use crate::services::push_delivery::guard::UrlRefused;
use crate::services::state::{MAX_PUSH_ID, MAX_PUSH_URL};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/push-subscriptions", post(create).get(list))
        .route("/v1/push-subscriptions/{id}", delete(remove))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    account_id: u32,
    url: String,
    #[serde(default)]
    types: DataTypes,
}

impl RequestBody for CreateRequest {}

fn subscription_json(sub: &PushSubscription) -> Value {
    json!({
        "id": sub.id,
        "account_id": sub.account_id,
        "url": sub.url,
        "types": sub.types,
    })
}

/// The registration checks: an absolute http(s) URL whose host is not an internal address (unless allowed), and room
/// in the account under `[push] max-subscriptions-per-account` (a subscription replacing `replacing` does not count
/// itself).
pub(super) fn check_subscription(
    state: &AppState,
    account_id: u32,
    url: &str,
    replacing: Option<&str>,
) -> Result<(), ApiError> {
    if url.len() > MAX_PUSH_URL {
        return Err(ApiError::bad_request(format!(
            "url too long: {} bytes, at most {MAX_PUSH_URL}",
            url.len()
        )));
    }
    if let Some(id) = replacing.filter(|id| id.is_empty() || id.len() > MAX_PUSH_ID) {
        return Err(ApiError::bad_request(format!(
            "push subscription id of {} bytes: 1 to {MAX_PUSH_ID} are allowed",
            id.len()
        )));
    }
    let url = reqwest::Url::parse(url).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid url: {e}; an absolute http:// or https:// URL is required"
        ))
    })?;
    match state.push.guard.check_url(&url) {
        Ok(()) => {}
        Err(UrlRefused::Scheme | UrlRefused::NoHost) => {
            return Err(ApiError::bad_request(
                "invalid url: an absolute http:// or https:// URL is required",
            ))
        }
        Err(refused) => return Err(ApiError::bad_request(format!("push URL refused: {refused}"))),
    }
    let max = state.push.max_per_account;
    let registry = state.state.push();
    let existing = registry.account_count(account_id)
        - usize::from(replacing.is_some_and(|id| {
            registry
                .get(id)
                .is_some_and(|s| s.subscription.account_id == account_id)
        }));
    if existing >= max {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "account {account_id} already has {max} push subscriptions, the most [push] \
                 max-subscriptions-per-account allows; remove one first (DELETE /v1/push-subscriptions/{{id}})"
            ),
        ));
    }
    Ok(())
}

/// Publishes a new subscription and answers once this node applied it, so that a list right after includes it.
///
/// Refused up front: URLs that are not absolute http(s) URLs, hosts that are internal addresses (IP literals after
/// WHATWG parsing, `localhost`) unless `[push] allow-networks` allows them, and accounts already at
/// `[push] max-subscriptions-per-account`. The delivery checks the address again, when it connects (DNS can change).
async fn create(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_subscription(&state, request.account_id, &request.url, None)?;
    let subscription = PushSubscription {
        id: format!("{:016x}", rand::random::<u64>()),
        account_id: request.account_id,
        url: request.url,
        types: request.types,
    };
    state
        .local_writes
        .publish(&state.coordinator, Event::PushSubscriptionSet(subscription.clone()))
        .await?;
    Ok((StatusCode::CREATED, Json(subscription_json(&subscription))))
}

async fn list(State(state): State<AppState>) -> Json<Value> {
    let all = state.state.push().list();
    Json(Value::Array(
        all.iter().map(|s| subscription_json(&s.subscription)).collect(),
    ))
}

async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let known = state.state.push().get(&id).is_some();
    // Broadcast even when unknown here: this node may have missed the subscription that others hold.
    state
        .local_writes
        .publish(&state.coordinator, Event::PushSubscriptionRemoved { id: id.clone() })
        .await?;
    if !known {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no push subscription {id:?}"),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}
