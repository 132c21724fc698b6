//! One node, assembled as `agora node` assembles it, behind its router.

use std::time::Instant;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::app::{app_state, start_services, RunningServices};
use crate::http::{router, NodeInfo};

/// The token of [`TestApp::with_token`].
pub const TOKEN: &str = "in-process-test-token-0123456789";

/// A single-node agora with its API, stopped on drop.
pub struct TestApp {
    router: Router,
    /// The node's replicated state, for tests that look behind the API (a verification code).
    state: std::sync::Arc<crate::services::state::NodeState>,
    /// Sent as `Authorization: Bearer` with every request, when set.
    token: Option<&'static str>,
    shutdown: CancellationToken,
    _services: RunningServices,
}

/// An answer: status, headers, and the body as text and (when it parses) JSON.
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: axum::http::HeaderMap,
    /// The body.
    pub text: String,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The `error` message of an error answer, after checking the API's error shape.
    pub fn error(&self) -> String {
        let body = self.json();
        assert!(
            body.as_object().is_some_and(|o| o.len() == 1),
            "an error is {{\"error\": ...}} only: {body}"
        );
        body["error"].as_str().expect("error is a string").to_string()
    }
}

impl TestApp {
    /// A node with the defaults (no token).
    pub async fn new() -> Self {
        Self::with_config("").await
    }

    /// A node whose `[http] token` is [`TOKEN`] (requests send it unless [`TestApp::without_token`]).
    pub async fn with_token() -> Self {
        let mut app = Self::with_config(&format!("[http]\ntoken = \"{TOKEN}\"\n")).await;
        app.token = Some(TOKEN);
        app
    }

    /// A node configured by `toml` (single-node: no `[cluster] coordinator`).
    pub async fn with_config(toml: &str) -> Self {
        let config = agora::config::parse(toml).unwrap_or_else(|e| panic!("test config: {e}"));
        let (coordinator, subscriptions) =
            agora::Coordinator::start_with_subscriptions(&config, agora::StartOptions::default())
                .await
                .expect("single-node coordinator");
        let shutdown = CancellationToken::new();
        let services = start_services(&config, &coordinator, subscriptions, shutdown.clone())
            .await
            .expect("services");
        let info = NodeInfo::new(&config, "127.0.0.1:0".into(), Instant::now());
        let state = app_state(&config, &coordinator, &services, info, shutdown.clone());
        TestApp {
            state: state.state.clone(),
            router: router(state),
            token: None,
            shutdown,
            _services: services,
        }
    }

    /// The node's replicated state.
    pub fn state(&self) -> &crate::services::state::NodeState {
        &self.state
    }

    /// Sends one request (with the node's token, if it has one).
    pub async fn send(&self, request: Request<Body>) -> Answer {
        self.send_as(self.token, request).await
    }

    /// Sends one request with `token` (or none).
    pub async fn send_as(&self, token: Option<&str>, request: Request<Body>) -> Answer {
        let mut request = request;
        if let Some(token) = token {
            request.headers_mut().insert(
                header::AUTHORIZATION,
                format!("Bearer {token}").parse().expect("header"),
            );
        }
        let response = self.router.clone().oneshot(request).await.expect("the router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .expect("body");
        Answer {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// Sends one request with `token` (or none) and returns the response unread (for streams).
    pub async fn open(&self, token: Option<&str>, request: Request<Body>) -> axum::response::Response {
        let mut request = request;
        if let Some(token) = token {
            request.headers_mut().insert(
                header::AUTHORIZATION,
                format!("Bearer {token}").parse().expect("header"),
            );
        }
        self.router.clone().oneshot(request).await.expect("the router answers")
    }

    /// `method path` with an optional JSON body.
    pub async fn call(&self, method: Method, path: &str, body: Option<&str>) -> Answer {
        self.send(request(method, path, body)).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &str) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }
}

/// A request: `method path`, with a JSON body when given.
pub fn request(method: Method, path: &str, body: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if body.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    builder
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("request")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
