//! The replicated blocked-IP list over HTTP: block and unblock on every node, and the lookup a mail server makes
//! on every accepted connection (answered from memory). The rules live in [`BlockList`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::body::{ApiJson, RequestBody};
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::services::block_list::{BlockList, BlockRequest};
use crate::services::blocked_ips::BlockRule;

/// The blocked-IP routes, with their documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(block, list))
        .routes(routes!(lookup, unblock))
}

impl RequestBody for BlockRequest {}

/// A rule as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuleView {
    /// The blocked network, canonical (a single address is a /32 or /128).
    #[schema(examples("203.0.113.0/24"))]
    network: String,
    /// When the block ends (Unix milliseconds); null: until unblocked.
    expires_at_ms: Option<u64>,
    /// Why it was blocked.
    reason: Option<String>,
    /// The node that made the block.
    origin_node: u16,
}

impl From<&BlockRule> for RuleView {
    fn from(rule: &BlockRule) -> Self {
        RuleView {
            network: rule.network.to_string(),
            expires_at_ms: rule.expires_at_ms,
            reason: rule.reason.clone(),
            origin_node: rule.origin_node,
        }
    }
}

/// The answer of a lookup that found a rule: the rule, and `"blocked": true`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Blocked {
    /// Always true.
    blocked: bool,
    /// The rule in force.
    #[serde(flatten)]
    rule: RuleView,
}

/// The answer of a lookup that found no rule.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotBlocked {
    /// Always false.
    blocked: bool,
}

/// `POST /v1/blocked-ips`: 201 with the rule as stored, once this node applied it.
#[utoipa::path(
    post,
    path = "/v1/blocked-ips",
    tag = "blocked-ips",
    request_body = BlockRequest,
    responses(
        (status = 201, description = "Blocked on every node; the rule as stored", body = RuleView),
        (status = 400, description = "Not an address or network, too broad without `force`, or a bad ttl", body = ErrorBody),
        (status = 409, description = "An unblock of the same network at the same time won", body = ErrorBody),
        (status = 503, description = "The block could not be published or applied in time", body = ErrorBody),
    )
)]
async fn block(
    State(blocked_ips): State<BlockList>,
    ApiJson(request): ApiJson<BlockRequest>,
) -> Result<(StatusCode, Json<RuleView>), ApiError> {
    let rule = blocked_ips.block(request).await?;
    Ok((StatusCode::CREATED, Json(RuleView::from(&rule))))
}

/// `GET /v1/blocked-ips`: every rule in force, in network order, streamed a page at a time.
#[utoipa::path(
    get,
    path = "/v1/blocked-ips",
    tag = "blocked-ips",
    responses((status = 200, description = "Every rule in force, in network order", body = Vec<RuleView>))
)]
async fn list(State(blocked_ips): State<BlockList>) -> Response {
    super::paged::json_array(move |after| {
        let (rules, next) = blocked_ips.page(after, super::paged::PAGE_ITEMS);
        (rules.iter().map(RuleView::from).collect(), next)
    })
}

/// `GET /v1/blocked-ips/{ip}`: 200 with the rule in force, 404 `{"blocked": false}` without one.
#[utoipa::path(
    get,
    path = "/v1/blocked-ips/{target}",
    tag = "blocked-ips",
    params(("target" = String, Path, description = "An IP address", example = "203.0.113.7")),
    responses(
        (status = 200, description = "A rule covers the address", body = Blocked),
        (status = 404, description = "No rule covers the address", body = NotBlocked),
        (status = 400, description = "Not an IP address", body = ErrorBody),
    )
)]
async fn lookup(State(blocked_ips): State<BlockList>, Path(target): Path<String>) -> Result<Response, ApiError> {
    Ok(match blocked_ips.lookup(&target)? {
        Some(rule) => Json(Blocked {
            blocked: true,
            rule: RuleView::from(&rule),
        })
        .into_response(),
        None => (StatusCode::NOT_FOUND, Json(NotBlocked { blocked: false })).into_response(),
    })
}

/// `DELETE /v1/blocked-ips/{network}`: 204, whether or not this node knew the rule.
#[utoipa::path(
    delete,
    path = "/v1/blocked-ips/{target}",
    tag = "blocked-ips",
    params((
        "target" = String,
        Path,
        description = "The network or address to unblock (`%2F` for the `/` of a CIDR network)",
        example = "203.0.113.0%2F24"
    )),
    responses(
        (status = 204, description = "Unblocked on every node, whether or not a rule existed"),
        (status = 400, description = "Not an address or network", body = ErrorBody),
        (status = 503, description = "The unblock could not be published or applied in time", body = ErrorBody),
    )
)]
async fn unblock(State(blocked_ips): State<BlockList>, Path(target): Path<String>) -> Result<StatusCode, ApiError> {
    blocked_ips.unblock(&target).await?;
    Ok(StatusCode::NO_CONTENT)
}
