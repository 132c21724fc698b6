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
    ("post", "/v1/revocations"),
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

/// Found by `scripts/fuzz-api`: serde reads a struct from an array of its fields (`[null, null]` was a valid PATCH,
/// which changed `types`), and an internally tagged variant from its index (`{"kind": 0}` was a cache item); the
/// document allows neither, and neither is accepted now.
#[tokio::test]
async fn bodies_are_objects_and_tags_are_names() {
    let app = TestApp::new().await;
    let created = app
        .post(
            "/v1/push-subscriptions",
            r#"{"account_id":1,"url":"https://push.example.com/a","types":["Email"]}"#,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json()["id"].as_str().expect("id").to_string();
    let path = format!("/v1/push-subscriptions/{id}");
    let patched = app.call(Method::PATCH, &path, Some("[null, null]")).await;
    assert_eq!(patched.status, StatusCode::BAD_REQUEST, "{}", patched.text);
    assert!(patched.error().contains("JSON object"), "{}", patched.text);
    for body in [r#"[1, "https://push.example.com/b", null]"#, r#" [{"account_id":1}]"#] {
        let answer = app.post("/v1/push-subscriptions", body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}: {}", answer.text);
    }
    let listed = app.get("/v1/push-subscriptions").await.json();
    assert_eq!(listed[0]["types"], serde_json::json!(["Email"]), "unchanged: {listed}");
    let indexed = app
        .post(
            "/v1/events",
            r#"{"type":"stalwart","kind":"CacheInvalidate","items":[{"kind":0,"id":1}]}"#,
        )
        .await;
    assert_eq!(indexed.status, StatusCode::BAD_REQUEST, "{}", indexed.text);
    assert!(indexed.error().contains("`kind` must be a name"), "{}", indexed.text);
    let named = app
        .post(
            "/v1/events",
            r#"{"type":"stalwart","kind":"CacheInvalidate","items":[{"kind":"AccessToken","id":1}]}"#,
        )
        .await;
    assert_eq!(named.status, StatusCode::ACCEPTED, "{}", named.text);
}
