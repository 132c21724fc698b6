//! Push subscriptions over HTTP, registered on any node and replicated to all, and the VAPID public key a JMAP
//! server hands its clients. The rules live in [`PushSubscriptions`].

use agora::event::PushSubscription;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::body::{ApiJson, RequestBody};
use super::error::ApiError;
use super::AppState;
use crate::services::push_subscriptions::{format_expiry, NewSubscription, PushSubscriptions, SubscriptionPatch};

/// The push-subscription routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/push-subscriptions", post(create).get(list))
        .route(
            "/v1/push-subscriptions/{id}",
            axum::routing::delete(remove).patch(update),
        )
        .route("/v1/push/vapid", get(vapid))
}

impl RequestBody for NewSubscription {}
impl RequestBody for SubscriptionPatch {}

/// A subscription as the API shows it: never its verification code (only the push URL received it), nor its keys
/// (the client has them).
fn subscription_json(sub: &PushSubscription) -> Value {
    let mut json = json!({
        "id": sub.id,
        "account_id": sub.account_id,
        "url": sub.url,
        "types": sub.types,
        "verified": sub.verified,
        "expires": sub.expires_at_ms.map(format_expiry),
    });
    if let (Some(device), Some(object)) = (&sub.device_client_id, json.as_object_mut()) {
        object.insert("device_client_id".into(), json!(device));
    }
    json
}

/// `POST /v1/push-subscriptions`: 201 with the subscription, once this node applied it.
async fn create(
    State(subscriptions): State<PushSubscriptions>,
    ApiJson(new): ApiJson<NewSubscription>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let subscription = subscriptions.create(new).await?;
    Ok((StatusCode::CREATED, Json(subscription_json(&subscription))))
}

/// `PATCH /v1/push-subscriptions/{id}`: verification (`verification_code`; 403 when wrong), `types`, `expires`.
async fn update(
    State(subscriptions): State<PushSubscriptions>,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<SubscriptionPatch>,
) -> Result<Json<Value>, ApiError> {
    let subscription = subscriptions.update(&id, patch).await?;
    Ok(Json(subscription_json(&subscription)))
}

/// `GET /v1/push-subscriptions`: every subscription, in id order, streamed a page at a time.
async fn list(State(subscriptions): State<PushSubscriptions>) -> Response {
    super::paged::json_array(move |after| {
        let (page, next) = subscriptions.page(after, super::paged::PAGE_ITEMS);
        (page.iter().map(subscription_json).collect(), next)
    })
}

/// `DELETE /v1/push-subscriptions/{id}`: 204, or 404 when this node did not know it (removed everywhere all the
/// same).
async fn remove(
    State(subscriptions): State<PushSubscriptions>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    subscriptions.remove(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/push/vapid`: `{"applicationServerKey": "<base64url>"}` for the JMAP session (RFC 9749); 404 without
/// `[push] vapid-key-file`.
async fn vapid(State(subscriptions): State<PushSubscriptions>) -> Result<Json<Value>, ApiError> {
    match &subscriptions.policy().vapid {
        Some(signer) => Ok(Json(json!({ "applicationServerKey": signer.application_server_key() }))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no VAPID key: set [push] vapid-key-file and vapid-subject",
        )),
    }
}
