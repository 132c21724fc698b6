//! Every error has the API's shape, whatever produced it.

use axum::http::{header, Method, StatusCode};

use super::fixture::TestApp;

#[tokio::test]
async fn an_unknown_path_is_a_json_404() {
    let app = TestApp::new().await;
    let answer = app.get("/v1/nothing-here").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.error().contains("no such endpoint"));
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405_with_allow() {
    let app = TestApp::new().await;
    let answer = app.call(Method::PUT, "/v1/blocked-ips", Some("{}")).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    let allow = answer.headers[header::ALLOW].to_str().expect("ascii").to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert!(!answer.error().is_empty());
}

#[tokio::test]
async fn a_body_that_is_not_json_is_named() {
    let app = TestApp::new().await;
    let answer = app.post("/v1/events", "{not json").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().starts_with("invalid event:"), "{}", answer.text);
    let typed = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/v1/events")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(axum::body::Body::from("{}"))
        .expect("request");
    let answer = app.send(typed).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(answer.error().contains("application/json"));
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = TestApp::new().await;
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(3 << 20));
    let answer = app.post("/v1/events", &huge).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer.error().contains("larger than"));
}

#[tokio::test]
async fn an_overlong_request_target_is_414() {
    let app = TestApp::new().await;
    let answer = app.get(&format!("/v1/blocked-ips/{}", "1".repeat(9000))).await;
    assert_eq!(answer.status, StatusCode::URI_TOO_LONG);
    assert!(answer.error().contains("request target"));
}
