//! Push subscriptions over HTTP, registered on any node and replicated to all, and the VAPID public key a JMAP
//! server hands its clients. The rules live in [`PushSubscriptions`].

use agora::event::PushSubscription;
use agora::DataTypes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::body::{ApiJson, RequestBody};
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::services::push_subscriptions::{format_expiry, NewSubscription, PushSubscriptions, SubscriptionPatch};

/// The push-subscription routes, with their documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(remove, update))
        .routes(routes!(vapid))
}

impl RequestBody for NewSubscription {}
impl RequestBody for SubscriptionPatch {}

/// A subscription as the API shows it: never its verification code (only the push URL received it), nor its keys
/// (the client has them).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubscriptionView {
    /// The subscription's id, chosen by the node that created it.
    id: String,
    /// The account whose changes are pushed.
    account_id: u32,
    /// Where they are pushed.
    url: String,
    /// The data types pushed; empty: all.
    types: DataTypes,
    /// Whether the client sent the verification code back (a webhook never does; it is pushed regardless).
    verified: bool,
    /// When it expires (RFC 3339, UTC); null: never.
    expires: Option<String>,
    /// The JMAP `deviceClientId`, for a JMAP PushSubscription; absent for a webhook.
    #[serde(skip_serializing_if = "Option::is_none")]
    device_client_id: Option<String>,
}

impl From<&PushSubscription> for SubscriptionView {
    fn from(sub: &PushSubscription) -> Self {
        SubscriptionView {
            id: sub.id.clone(),
            account_id: sub.account_id,
            url: sub.url.clone(),
            types: sub.types,
            verified: sub.verified,
            expires: sub.expires_at_ms.map(format_expiry),
            device_client_id: sub.device_client_id.clone(),
        }
    }
}

/// The VAPID public key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VapidKey {
    /// The uncompressed P-256 public key, base64url (RFC 9749's `applicationServerKey`).
    #[serde(rename = "applicationServerKey")]
    application_server_key: String,
}

/// `POST /v1/push-subscriptions`: 201 with the subscription, once this node applied it.
#[utoipa::path(
    post,
    path = "/v1/push-subscriptions",
    tag = "push",
    request_body = NewSubscription,
    responses(
        (status = 201, description = "Registered on every node", body = SubscriptionView),
        (status = 400, description = "A bad url, keys, types or expires (the message names the field)", body = ErrorBody),
        (status = 409, description = "The account has as many subscriptions as it may", body = ErrorBody),
        (status = 413, description = "The subscription is larger than the bus carries", body = ErrorBody),
        (status = 503, description = "The registration could not be published or applied in time", body = ErrorBody),
    )
)]
async fn create(
    State(subscriptions): State<PushSubscriptions>,
    ApiJson(new): ApiJson<NewSubscription>,
) -> Result<(StatusCode, Json<SubscriptionView>), ApiError> {
    let subscription = subscriptions.create(new).await?;
    Ok((StatusCode::CREATED, Json(SubscriptionView::from(&subscription))))
}

/// `PATCH /v1/push-subscriptions/{id}`: verification (`verification_code`; 403 when wrong), `types`, `expires`.
#[utoipa::path(
    patch,
    path = "/v1/push-subscriptions/{id}",
    tag = "push",
    params(("id" = String, Path, description = "The subscription's id")),
    request_body = SubscriptionPatch,
    responses(
        (status = 200, description = "The subscription as changed", body = SubscriptionView),
        (status = 400, description = "Bad types or expires", body = ErrorBody),
        (status = 403, description = "The verification code is wrong", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
        (status = 413, description = "The subscription is larger than the bus carries", body = ErrorBody),
        (status = 503, description = "The change could not be published or applied in time", body = ErrorBody),
    )
)]
async fn update(
    State(subscriptions): State<PushSubscriptions>,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<SubscriptionPatch>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let subscription = subscriptions.update(&id, patch).await?;
    Ok(Json(SubscriptionView::from(&subscription)))
}

/// `GET /v1/push-subscriptions`: every subscription, in id order, streamed a page at a time.
#[utoipa::path(
    get,
    path = "/v1/push-subscriptions",
    tag = "push",
    responses((status = 200, description = "Every subscription, in id order", body = Vec<SubscriptionView>))
)]
async fn list(State(subscriptions): State<PushSubscriptions>) -> Response {
    super::paged::json_array(move |after| {
        let (page, next) = subscriptions.page(after, super::paged::PAGE_ITEMS);
        (page.iter().map(SubscriptionView::from).collect(), next)
    })
}

/// `DELETE /v1/push-subscriptions/{id}`: 204, or 404 when this node did not know it (removed everywhere all the
/// same).
#[utoipa::path(
    delete,
    path = "/v1/push-subscriptions/{id}",
    tag = "push",
    params(("id" = String, Path, description = "The subscription's id")),
    responses(
        (status = 204, description = "Removed on every node"),
        (status = 400, description = "Not a valid subscription id", body = ErrorBody),
        (status = 404, description = "This node did not know it (removed everywhere all the same)", body = ErrorBody),
        (status = 503, description = "The removal could not be published or applied in time", body = ErrorBody),
    )
)]
async fn remove(
    State(subscriptions): State<PushSubscriptions>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    subscriptions.remove(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/push/vapid`: `{"applicationServerKey": "<base64url>"}` for the JMAP session (RFC 9749); 404 without
/// `[push] vapid-key-file`.
#[utoipa::path(
    get,
    path = "/v1/push/vapid",
    tag = "push",
    responses(
        (status = 200, description = "The node's VAPID public key", body = VapidKey),
        (status = 404, description = "No VAPID key is configured", body = ErrorBody),
    )
)]
async fn vapid(State(subscriptions): State<PushSubscriptions>) -> Result<Json<VapidKey>, ApiError> {
    match &subscriptions.policy().vapid {
        Some(signer) => Ok(Json(VapidKey {
            application_server_key: signer.application_server_key().to_string(),
        })),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no VAPID key: set [push] vapid-key-file and vapid-subject",
        )),
    }
}
