//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of the whole API (the dashboard's page and assets aside).
//!
//! Every route is registered from the same `#[utoipa::path]` that documents it (`utoipa_axum::routes!`), and every
//! request and response body is a Rust type whose schema is derived from its serde form, so the document follows
//! the code: a route cannot be served undocumented, nor documented unserved, and a field cannot change unnoticed.
//! What the edge adds to every operation (the token's 401, the body limits, the error shape of everything else)
//! is added here, once; `all_of` then writes serde's flattened and internally tagged shapes as plain objects.

mod all_of;
mod bounds;

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::stream_schema::{JmapStateChange, Ping, StreamItem, FRAME_DATA};
use super::AppState;

/// The name of the bearer-token security scheme.
const TOKEN_SCHEME: &str = "token";

/// The document's frame: what is not a route.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "agora node API",
        description = "The local HTTP API of an agora node: events, streams, the replicated blocked-IP list and push \
            subscriptions, health and metrics. Every error is `{\"error\": \"<message>\"}`. With `[http] token` set, \
            every request but `GET /healthz` needs `Authorization: Bearer <token>`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&TokenAuth),
    security(("token" = [])),
    components(schemas(StreamItem, JmapStateChange, Ping)),
)]
struct Frame;

/// Declares the bearer token (`[http] token`).
struct TokenAuth;

impl Modify for TokenAuth {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            TOKEN_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`[http] token`: `Authorization: Bearer <token>`"))
                    .build(),
            ),
        );
    }
}

/// The serialised document, as served.
#[derive(Clone)]
pub struct Served(Arc<Bytes>);

/// An empty router that carries the document's frame; the areas' routers are merged into it.
pub fn frame() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(Frame::openapi()).routes(routes!(openapi_json))
}

/// The finished document as served: the edge's answers added to every operation, the shapes made plain.
pub fn finish(document: Document) -> Served {
    let mut value = serde_json::to_value(&document).unwrap_or_else(|_| json!({}));
    add_edge_answers(&mut value);
    add_frame_data(&mut value);
    all_of::flatten(&mut value);
    bounds::add(&mut value);
    Served(Arc::new(Bytes::from(value.to_string())))
}

/// The schema of the JSON in each stream frame's `data` (JSON Schema's `contentSchema`).
fn add_frame_data(document: &mut Value) {
    for (frame, data) in FRAME_DATA {
        if let Some(field) = document.pointer_mut(&format!("/components/schemas/{frame}/properties/data")) {
            field["contentSchema"] = json!({"$ref": format!("#/components/schemas/{data}")});
        }
    }
}

/// `{"$ref": ...}` to the error schema, as a response.
fn error_answer(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    })
}

/// What the edge (`http::edge`, `http::body`, `http::server`) answers on any operation: 401 without the token
/// (where one is needed), 414 and 431 for an oversized request, 503 past the connection limit, and 408, 413 and 415
/// for a body. Every status an operation can answer is listed (no `default`), so that an undocumented one is found.
fn add_edge_answers(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|p| p.values_mut())
    {
        let open = operation["security"] == json!([{}]);
        let has_body = operation.get("requestBody").is_some();
        let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else {
            continue;
        };
        if !open {
            let mut unauthorized = error_answer("No valid token (`[http] token`)");
            unauthorized["headers"] = json!({"WWW-Authenticate": {"schema": {"type": "string"}}});
            responses.entry("401").or_insert(unauthorized);
        }
        let mut edge = vec![
            ("414", "The request target is longer than 8 KiB"),
            ("431", "The request headers are larger than 32 KiB"),
            (
                "503",
                "Too many connections ([http] max-connections); retry after Retry-After",
            ),
        ];
        if has_body {
            edge.extend([
                ("408", "The body did not arrive within [http] body-timeout"),
                ("413", "The body is larger than 2 MiB"),
                ("415", "The body is not JSON (Content-Type)"),
            ]);
        }
        for (status, description) in edge {
            responses.entry(status).or_insert_with(|| error_answer(description));
        }
    }
}

/// `GET /v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "status",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object))
)]
async fn openapi_json(Extension(served): Extension<Served>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], Bytes::clone(&served.0)).into_response()
}
