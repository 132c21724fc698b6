//! `POST /v1/revocations`: revoke end clients' scoped tokens on every node (node token only; the rules live in
//! [`Revocations`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::body::{ApiJson, RequestBody};
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::services::revocation_list::{RevocationBody, RevocationRequest, Revocations, Revoked};

/// The revocation route, with its documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(revoke))
}

impl RequestBody for RevocationRequest {
    const WHAT: &'static str = "revocation";
}

impl axum::extract::FromRef<AppState> for Revocations {
    fn from_ref(state: &AppState) -> Self {
        state.revocations.clone()
    }
}

/// `POST /v1/revocations`: 201 once this node applied it; every node closes the matching client streams within a
/// second and refuses those tokens until they would have expired.
#[utoipa::path(
    post,
    path = "/v1/revocations",
    tag = "client-tokens",
    request_body = RevocationBody,
    responses(
        (status = 201, description = "Revoked on every node: `{\"accounts\":[..]}` covers those accounts' tokens \
            issued at or before `revoked_at_ms` (and those without `iat`); `{\"jti\":\"..\"}` the one token",
            body = Revoked),
        (status = 400, description = "Neither or both of `accounts` and `jti`, a bad list or id, or no \
            [http.clients] on this node", body = ErrorBody),
        (status = 503, description = "The revocation could not be published or applied in time", body = ErrorBody),
        (status = 507, description = "[http.clients] max-revocations are held (counted in \
            agora_revocations_refused_total)", body = ErrorBody),
    )
)]
async fn revoke(
    State(revocations): State<Revocations>,
    ApiJson(request): ApiJson<RevocationRequest>,
) -> Result<(StatusCode, Json<Revoked>), ApiError> {
    let revoked = revocations.revoke(request).await?;
    Ok((StatusCode::CREATED, Json(revoked)))
}
