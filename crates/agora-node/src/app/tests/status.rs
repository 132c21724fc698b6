//! Health, node facts, metrics and the token at the edge.

use axum::http::{header, Method, StatusCode};

use super::fixture::{request, TestApp, TOKEN};

/// `GET /healthz` once the single node holds its (empty) state.
async fn healthy(app: &TestApp) -> super::fixture::Answer {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let answer = app.get("/healthz").await;
        if answer.status == StatusCode::OK || tokio::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_single_node_is_healthy_and_says_so() {
    let app = TestApp::new().await;
    let answer = healthy(&app).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let body = answer.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["state"], "current");
    assert!(body["node_id"].as_u64().is_some(), "{body}");
}

#[tokio::test]
async fn v1_node_shows_the_contracts_fields_and_every_counter() {
    let app = TestApp::new().await;
    let body = app.get("/v1/node").await.json();
    for field in ["node_id", "coordinator", "connected", "server", "version", "counters"] {
        assert!(body.get(field).is_some(), "{field} missing: {body}");
    }
    assert_eq!(body["coordinator"], "single-node");
    assert_eq!(body["connected"], true);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let counters = body["counters"].as_object().expect("counters");
    for name in [
        "events_published",
        "events_dropped",
        "gaps",
        "reconnects",
        "snapshots_fetched",
    ] {
        assert!(counters.contains_key(name), "{name}: {body}");
    }
    // The dashboard's problem tiles come from here.
    let problems = body["problems"].as_array().expect("problems");
    assert!(problems
        .iter()
        .all(|p| counters.contains_key(p["counter"].as_str().unwrap_or_default())));
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_catalogues_counters() {
    let app = TestApp::new().await;
    let answer = app.get("/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    let content_type = answer.headers[header::CONTENT_TYPE].to_str().expect("ascii");
    assert!(content_type.starts_with("text/plain") || content_type.starts_with("application/openmetrics-text"));
    for line in [
        "# TYPE agora_events_dropped counter",
        "agora_connected 1",
        "# TYPE agora_gaps counter",
    ] {
        assert!(answer.text.contains(line), "{line} missing");
    }
}

#[tokio::test]
async fn published_events_show_in_the_counters() {
    let app = TestApp::new().await;
    let event = r#"{"type":"state_change","account_id":1,"change_id":1,"types":["Email"]}"#;
    assert_eq!(app.post("/v1/events", event).await.status, StatusCode::ACCEPTED);
    let body = app.get("/v1/node").await.json();
    assert_eq!(body["counters"]["events_published"], 1, "{body}");
}

#[tokio::test]
async fn with_a_token_everything_but_the_health_check_needs_it() {
    let app = TestApp::with_token().await;
    let refused = app.send_as(None, request(Method::GET, "/v1/node", None)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.error().contains("token"));
    assert!(refused.headers[header::WWW_AUTHENTICATE]
        .to_str()
        .expect("ascii")
        .starts_with("Bearer"));
    let wrong = app
        .send_as(Some("not-the-token"), request(Method::GET, "/v1/node", None))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let allowed = app.send_as(Some(TOKEN), request(Method::GET, "/v1/node", None)).await;
    assert_eq!(allowed.status, StatusCode::OK);
    let write = app
        .send_as(
            None,
            request(Method::POST, "/v1/blocked-ips", Some(r#"{"network":"192.0.2.1"}"#)),
        )
        .await;
    assert_eq!(write.status, StatusCode::UNAUTHORIZED, "writes too");
}

#[tokio::test]
async fn the_health_check_is_open_to_get_and_head_without_a_token() {
    let app = TestApp::with_token().await;
    let _ = healthy(&app).await;
    let get = app.send_as(None, request(Method::GET, "/healthz", None)).await;
    assert_eq!(get.status, StatusCode::OK, "{}", get.text);
    let head = app.send_as(None, request(Method::HEAD, "/healthz", None)).await;
    assert_eq!(head.status, StatusCode::OK);
}

#[tokio::test]
async fn cors_preflights_answer_listed_origins_only() {
    let app = TestApp::with_config("[http]\ncors-origins = [\"https://webmail.example.com\"]\n").await;
    let preflight = |origin: &'static str| {
        axum::http::Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/blocked-ips")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let listed = app.send(preflight("https://webmail.example.com")).await;
    assert_eq!(listed.status, StatusCode::NO_CONTENT);
    assert_eq!(
        listed.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://webmail.example.com"
    );
    assert!(listed.headers[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .expect("ascii")
        .contains("POST"));
    let other = app.send(preflight("https://evil.example")).await;
    assert!(other.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}

/// A preflight (which carries no token) tells a listed origin the methods of that path only, and nothing about a
/// path the API does not have; with a token configured, no other request learns anything without it.
#[tokio::test]
async fn preflights_name_the_methods_of_their_path_only() {
    let app = TestApp::with_config(&format!(
        "[http]\ntoken = \"{}\"\ncors-origins = [\"https://webmail.example.com\"]\n",
        super::fixture::TOKEN
    ))
    .await;
    let preflight = |path: &str, method: &str| {
        axum::http::Request::builder()
            .method(Method::OPTIONS)
            .uri(path)
            .header(header::ORIGIN, "https://webmail.example.com")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, method)
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let methods = |answer: &super::fixture::Answer| {
        answer
            .headers
            .get(header::ACCESS_CONTROL_ALLOW_METHODS)
            .map(|v| v.to_str().expect("ascii").to_string())
    };
    for (path, expected) in [
        ("/v1/push-subscriptions/abc", Some("PATCH, DELETE")),
        ("/v1/push-subscriptions", Some("GET, POST")),
        ("/v1/blocked-ips/10.0.0.1", Some("GET, DELETE")),
        ("/v1/node", Some("GET")),
        ("/v1/secret-admin", None),
        ("/v1/push-subscriptions/a/b", None),
    ] {
        let answer = app.send_as(None, preflight(path, "GET")).await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{path}");
        assert_eq!(methods(&answer).as_deref(), expected, "{path}");
    }
    // Not a preflight (no Access-Control-Request-Method): an OPTIONS without the token is refused like any request,
    // so no Allow header lists the methods.
    let plain = axum::http::Request::builder()
        .method(Method::OPTIONS)
        .uri("/v1/blocked-ips")
        .body(axum::body::Body::empty())
        .expect("request");
    let answer = app.send_as(None, plain).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.headers.get(header::ALLOW).is_none());
}

/// The value of a series in a `/metrics` text (0 when absent).
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// 150,000 deletions of push subscriptions that never existed (what anyone on the bus can send): the node keeps at
/// most 100,000 tombstones, says how many it holds, and counts the ones it forgot.
#[tokio::test]
async fn deletions_of_unknown_ids_are_capped_and_counted() {
    let app = TestApp::new().await;
    let origin = agora::Origin::Agora(agora::NodeId::new(7).expect("id"));
    let now_us = agora::clock::now_us();
    for i in 0..150_000u64 {
        app.state().apply(&agora::Delivery {
            origin,
            time_us: now_us + i,
            event: agora::Event::PushSubscriptionRemoved {
                id: format!("never-existed-{i}"),
            },
        });
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let text = app.get("/metrics").await.text;
        if series(&text, "agora_tombstones_evicted_total") > 0.0 || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let held = series(&text, "agora_push_subscription_tombstones");
    let evicted = series(&text, "agora_tombstones_evicted_total");
    assert!(held <= 100_000.0 && held > 0.0, "{held} tombstones held");
    assert_eq!(
        held + evicted,
        150_000.0,
        "every deletion is held or counted as forgotten"
    );
    assert_eq!(series(&text, "agora_blocked_ip_tombstones"), 0.0);
    let node = app.get("/v1/node").await.json();
    assert_eq!(
        node["counters"]["tombstones_evicted"], evicted as u64,
        "{}",
        node["counters"]
    );
}
