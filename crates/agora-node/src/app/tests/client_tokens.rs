//! End clients' scoped tokens through the router: where they open, what they refuse, CORS with credentials,
//! revocation and its bound, and a stream's end at `exp` or revocation (the response-body transport; the fan-out's
//! is tested over sockets in `tests/it/client_tokens.rs`).

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use futures::StreamExt;
use serde_json::{json, Value};

use super::fixture::{request, TestApp, TOKEN};

const KEY: &str = "in-process-client-key-0123456789abcdef";
const ORIGIN: &str = "http://webmail.example";

async fn app(extra: &str) -> TestApp {
    TestApp::with_config(&format!(
        "[http]\ntoken = \"{TOKEN}\"\ncors-origins = [\"{ORIGIN}\"]\n[http.clients]\nhmac-keys = [\"{KEY}\"]\n{extra}"
    ))
    .await
}

fn now() -> u64 {
    agora::clock::now_ms() / 1000
}

fn mint(claims: &Value) -> String {
    let message = format!(
        "{}.{}",
        B64.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string()),
        B64.encode(claims.to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEY.as_bytes());
    format!(
        "{message}.{}",
        B64.encode(ring::hmac::sign(&key, message.as_bytes()).as_ref())
    )
}

fn token(accounts: &[u32], lifetime: u64) -> String {
    mint(&json!({"exp": now() + lifetime, "iat": now() - 2, "accounts": accounts}))
}

/// `GET /v1/eventsource` with the client token as a bearer, and the answer's status, headers and (for errors) body.
async fn eventsource(app: &TestApp, query: &str, jwt: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = app
        .open(
            Some(jwt),
            request(Method::GET, &format!("/v1/eventsource{query}"), None),
        )
        .await;
    let (status, headers) = (response.status(), response.headers().clone());
    let text = if status.is_success() {
        String::new()
    } else {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (status, headers, text)
}

fn error(text: &str) -> String {
    let body: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    body["error"].as_str().expect("error shape").to_string()
}

#[tokio::test]
async fn a_client_token_opens_its_accounts_stream_and_nothing_else() {
    let app = app("").await;
    let jwt = token(&[42, 43], 600);
    let (status, _, _) = eventsource(&app, "?accounts=42", &jwt).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = eventsource(&app, "", &jwt).await;
    assert_eq!(status, StatusCode::OK, "no accounts=: all of the token's");
    let (status, _, text) = eventsource(&app, "?accounts=42,7,9", &jwt).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error(&text), "accounts outside the client token: 7, 9");
    for (method, path) in [
        (Method::GET, "/v1/node"),
        (Method::GET, "/v1/events"),
        (Method::POST, "/v1/revocations"),
        (Method::GET, "/v1/blocked-ips"),
    ] {
        let answer = app.send_as(Some(&jwt), request(method.clone(), path, Some("{}"))).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}: {}", answer.text);
        assert!(answer.error().contains("GET /v1/eventsource only"), "{}", answer.text);
    }
    // The node token keeps full access.
    let (status, _, _) = eventsource(&app, "?accounts=1,2,3", TOKEN).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn missing_expired_and_forged_tokens_are_401_in_the_api_error_shape() {
    let app = app("").await;
    let expired = mint(&json!({"exp": now() - 1, "accounts": [1]}));
    let early = mint(&json!({"exp": now() + 60, "nbf": now() + 30, "accounts": [1]}));
    let mut forged = token(&[1], 60);
    forged.push('A');
    for (jwt, why) in [
        (expired.as_str(), "expired"),
        (early.as_str(), "not valid yet"),
        (forged.as_str(), "signature"),
        ("garbage.in.here", "not a JWT"),
    ] {
        let (status, headers, text) = eventsource(&app, "", jwt).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}");
        assert!(error(&text).contains(why), "{why}: {text}");
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    }
    let answer = app.send_as(None, request(Method::GET, "/v1/eventsource", None)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    // A wrong node token is told it is one, not that it is a bad JWT.
    let answer = app
        .send_as(Some("not-the-node-token"), request(Method::GET, "/v1/node", None))
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.error().contains("[http] token"), "{}", answer.text);
    assert_eq!(
        app.get("/metrics").await.status,
        StatusCode::UNAUTHORIZED,
        "no token at all"
    );
}

#[tokio::test]
async fn the_token_may_travel_in_the_query_or_the_cookie_and_cors_allows_credentials() {
    let app = app("").await;
    let jwt = token(&[5], 600);
    let by_query = app
        .open(
            None,
            request(
                Method::GET,
                &format!("/v1/eventsource?accounts=5&access_token={jwt}"),
                None,
            ),
        )
        .await;
    assert_eq!(by_query.status(), StatusCode::OK);
    let by_cookie = Request::builder()
        .uri("/v1/eventsource")
        .header(header::COOKIE, format!("theme=dark; agora_token={jwt}"))
        .header(header::ORIGIN, ORIGIN)
        .body(Body::empty())
        .expect("request");
    let response = app.open(None, by_cookie).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        ORIGIN,
        "the origin, never *"
    );
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    // Elsewhere the cookie is no credential: the usual 401, not a 403.
    let elsewhere = Request::builder()
        .uri("/v1/node")
        .header(header::COOKIE, format!("agora_token={jwt}"))
        .body(Body::empty())
        .expect("request");
    assert_eq!(app.open(None, elsewhere).await.status(), StatusCode::UNAUTHORIZED);
    // Another origin gets no CORS headers at all.
    let other = Request::builder()
        .uri("/v1/eventsource")
        .header(header::COOKIE, format!("agora_token={jwt}"))
        .header(header::ORIGIN, "http://evil.example")
        .body(Body::empty())
        .expect("request");
    let response = app.open(None, other).await;
    assert!(!response.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    assert!(!response
        .headers()
        .contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    // The preflight of a reconnect (Last-Event-ID) allows credentials too.
    let preflight = Request::builder()
        .method(Method::OPTIONS)
        .uri("/v1/eventsource")
        .header(header::ORIGIN, ORIGIN)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .body(Body::empty())
        .expect("request");
    let response = app.open(None, preflight).await;
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
}

/// Waits for the stream's body to end (or fails after `within`), skipping the frames it sends meanwhile.
async fn ended_within(body: Body, within: Duration) -> Duration {
    let started = Instant::now();
    let mut frames = body.into_data_stream();
    let ended = tokio::time::timeout(within, async {
        while let Some(frame) = frames.next().await {
            if frame.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream did not end within {within:?}");
    started.elapsed()
}

#[tokio::test]
async fn a_stream_ends_at_its_tokens_exp() {
    let app = app("").await;
    let jwt = mint(&json!({"exp": now() + 2, "accounts": [1]}));
    let response = app
        .open(Some(&jwt), request(Method::GET, "/v1/eventsource?ping=1", None))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let took = ended_within(response.into_body(), Duration::from_secs(6)).await;
    assert!(took >= Duration::from_millis(900), "ended after {took:?}, before exp");
}

#[tokio::test]
async fn a_revocation_closes_the_stream_and_refuses_the_token_from_then_on() {
    let app = app("").await;
    let (by_account, by_jti) = (
        token(&[42], 600),
        mint(&json!({"exp": now() + 600, "jti": "t-1", "accounts": [7]})),
    );
    let first = app
        .open(Some(&by_account), request(Method::GET, "/v1/eventsource", None))
        .await;
    let second = app
        .open(Some(&by_jti), request(Method::GET, "/v1/eventsource", None))
        .await;
    assert_eq!((first.status(), second.status()), (StatusCode::OK, StatusCode::OK));
    let revoked = app.post("/v1/revocations", r#"{"accounts":[42]}"#).await;
    assert_eq!(
        revoked.status,
        StatusCode::UNAUTHORIZED,
        "the fixture sends no node token: {}",
        revoked.text
    );
    let revoked = app
        .send_as(
            Some(TOKEN),
            request(Method::POST, "/v1/revocations", Some(r#"{"accounts":[42]}"#)),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::CREATED, "{}", revoked.text);
    assert!(revoked.json()["keep_until_ms"].as_u64() > revoked.json()["revoked_at_ms"].as_u64());
    ended_within(first.into_body(), Duration::from_secs(1)).await;
    let (status, _, text) = eventsource(&app, "", &by_account).await;
    assert_eq!(
        (status, error(&text)),
        (StatusCode::UNAUTHORIZED, "the client token was revoked".to_string())
    );
    // The jti revocation: only that token.
    let answer = app
        .send_as(
            Some(TOKEN),
            request(Method::POST, "/v1/revocations", Some(r#"{"jti":"t-1"}"#)),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    ended_within(second.into_body(), Duration::from_secs(1)).await;
    let (status, _, _) = eventsource(
        &app,
        "",
        &mint(&json!({"exp": now() + 600, "jti": "t-2", "accounts": [7]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn revocations_are_bounded_and_checked() {
    let app = app("max-revocations = 3\n").await;
    let post = |body: &'static str| {
        let app = &app;
        async move {
            app.send_as(Some(TOKEN), request(Method::POST, "/v1/revocations", Some(body)))
                .await
        }
    };
    for bad in [
        r#"{}"#,
        r#"{"accounts":[]}"#,
        r#"{"accounts":[1],"jti":"x"}"#,
        r#"{"jti":""}"#,
        r#"{"accounts":[-1]}"#,
    ] {
        assert_eq!(post(bad).await.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(post(r#"{"accounts":[1,2]}"#).await.status, StatusCode::CREATED);
    assert_eq!(
        post(r#"{"accounts":[1,2]}"#).await.status,
        StatusCode::CREATED,
        "held keys need no room"
    );
    let full = post(r#"{"accounts":[3,4]}"#).await;
    assert_eq!(full.status, StatusCode::INSUFFICIENT_STORAGE);
    assert!(full.error().contains("max-revocations"), "{}", full.text);
    assert_eq!(post(r#"{"jti":"one-more"}"#).await.status, StatusCode::CREATED);
    let metrics = app
        .send_as(Some(TOKEN), request(Method::GET, "/metrics", None))
        .await
        .text;
    assert!(metrics.contains("agora_revocations_refused_total 1"), "{metrics}");
    assert!(metrics.contains("agora_revocations 3"), "{metrics}");
}

#[tokio::test]
async fn without_http_clients_a_jwt_is_no_credential_and_revocations_are_refused() {
    let app = TestApp::with_token().await;
    let (status, _, _) = eventsource(&app, "", &token(&[1], 60)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let answer = app.post("/v1/revocations", r#"{"accounts":[1]}"#).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("[http.clients]"), "{}", answer.text);
}

#[tokio::test]
async fn no_key_reaches_the_node_view_metrics_or_openapi() {
    let app = app("").await;
    for path in ["/v1/node", "/metrics", "/v1/openapi.json", "/v1/cluster/nodes"] {
        let answer = app.send_as(Some(TOKEN), request(Method::GET, path, None)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert!(!answer.text.contains(KEY), "{path} shows the HS256 key");
    }
}
