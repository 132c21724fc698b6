//! Push subscriptions over HTTP, registered on any node and replicated to all. The rules live in
//! [`PushSubscriptions`].

use agora::event::PushSubscription;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::body::{ApiJson, RequestBody};
use super::error::ApiError;
use super::AppState;
use crate::services::push_subscriptions::{NewSubscription, PushSubscriptions};

/// The push-subscription routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/push-subscriptions", post(create).get(list))
        .route("/v1/push-subscriptions/{id}", delete(remove))
}

impl RequestBody for NewSubscription {}

/// A subscription as the API shows it.
fn subscription_json(sub: &PushSubscription) -> Value {
    json!({
        "id": sub.id,
        "account_id": sub.account_id,
        "url": sub.url,
        "types": sub.types,
    })
}

/// `POST /v1/push-subscriptions`: 201 with the subscription, once this node applied it.
async fn create(
    State(subscriptions): State<PushSubscriptions>,
    ApiJson(new): ApiJson<NewSubscription>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let subscription = subscriptions.create(new).await?;
    Ok((StatusCode::CREATED, Json(subscription_json(&subscription))))
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
