//! `GET /v1/openapi.json`: an OpenAPI 3.1 document of exactly the routes the node serves.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};

use super::fixture::{request, TestApp};

/// Every route of the API, as `(method, path template)`; the dashboard (`/`, `/assets/*`) is a page, not the API,
/// and is left out of the document on purpose.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/v1/node"),
    ("get", "/v1/cluster/nodes"),
    ("get", "/v1/openapi.json"),
    ("post", "/v1/events"),
    ("get", "/v1/events"),
    ("get", "/v1/events/poll"),
    ("get", "/v1/eventsource"),
    ("post", "/v1/blocked-ips"),
    ("get", "/v1/blocked-ips"),
    ("get", "/v1/blocked-ips/{target}"),
    ("delete", "/v1/blocked-ips/{target}"),
    ("post", "/v1/push-subscriptions"),
    ("get", "/v1/push-subscriptions"),
    ("patch", "/v1/push-subscriptions/{id}"),
    ("delete", "/v1/push-subscriptions/{id}"),
    ("get", "/v1/push/vapid"),
];

/// The document, fetched with the token.
async fn document(app: &TestApp) -> serde_json::Value {
    let answer = app.get("/v1/openapi.json").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.headers["content-type"], "application/json");
    answer.json()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_exactly_the_routes_served() {
    let app = TestApp::with_token().await;
    let doc = document(&app).await;
    std::fs::write("/tmp/agora-openapi.json", serde_json::to_string_pretty(&doc).unwrap()).ok();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let listed: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, listed, "the document and the route list differ");
    // Every listed route is served: the router answers it, not with its 404 or 405.
    for (method, path) in ROUTES {
        let path = path.replace("{target}", "203.0.113.9").replace("{id}", "no-such-id");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        if path == "/v1/events" && method == Method::GET || path == "/v1/eventsource" {
            // Streams do not end: a bad parameter shows the route is there.
            let answer = app.call(method, &format!("{path}?types=nope"), None).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}: {}", answer.text);
            continue;
        }
        let answer = app.call(method.clone(), &path, None).await;
        let unrouted = answer.status == StatusCode::METHOD_NOT_ALLOWED
            || answer.status == StatusCode::NOT_FOUND && answer.text.contains("no such endpoint");
        assert!(
            !unrouted,
            "{method} {path} is documented but not served: {}",
            answer.text
        );
    }
    // A route the document does not list is not served.
    let answer = app.send(request(Method::PUT, "/v1/node", None)).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn the_document_needs_the_token_like_every_v1_path() {
    let app = TestApp::with_token().await;
    let answer = app.send_as(None, request(Method::GET, "/v1/openapi.json", None)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let doc = document(&app).await;
    assert_eq!(doc["security"], serde_json::json!([{"token": []}]));
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], serde_json::json!([{}]));
    assert!(doc["paths"]["/v1/node"]["get"]["responses"]["401"].is_object());
}
