//! The API's edge, in front of every handler: bearer-token authentication (the node token everywhere, end clients'
//! scoped tokens on `GET /v1/eventsource` only), CORS for the configured browser origins, bounds on the request line
//! and headers, and the API's error shape on every error response, whatever produced it (a handler, an extractor,
//! the router's 404/405, a body limit).

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::client_tokens::{ClientTokenError, ClientTokens};
use super::error::ApiError;
use super::AppState;
use crate::services::revocations::TokenScope;

/// Longest request target accepted (the blocked-IP and filter URLs are short; nginx's default is 8 KiB too).
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Most header bytes accepted in one request (names and values).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Paths that need no token: the health check (load balancers, `scripts/dev`) and the dashboard's static page,
/// which then asks for the token itself.
fn is_public(method: &Method, path: &str) -> bool {
    // HEAD is GET without the body: a load balancer's `HEAD /healthz` is as open as its `GET`.
    (method == Method::GET || method == Method::HEAD)
        && (path == "/healthz" || path == "/" || path.starts_with("/assets/"))
}

/// The one path client tokens open.
pub const EVENTSOURCE_PATH: &str = "/v1/eventsource";

/// The cookie a browser's `EventSource` (`withCredentials`) carries a client token in.
pub const TOKEN_COOKIE: &str = "agora_token";

/// The query parameter a client token may travel in (an `EventSource` cannot set headers). Never logged.
pub const TOKEN_PARAM: &str = "access_token";

/// Who may call the API, from `[http] token`, `[http.clients]` and `cors-origins`.
#[derive(Debug, Default)]
pub struct AccessPolicy {
    /// SHA-256 of every accepted token. Comparing digests makes the comparison's timing independent of the token:
    /// a wrong guess learns nothing about how much of it was right.
    token_digests: Vec<[u8; 32]>,
    /// Allowed `Origin` values, exactly as configured.
    cors_origins: Vec<HeaderValue>,
    /// `[http.clients]`: the verifier of end clients' scoped tokens, if configured.
    clients: Option<ClientTokens>,
}

/// A verified client token, as the guard hands it to the EventSource handler.
#[derive(Clone, Debug)]
pub struct ClientGrant(pub std::sync::Arc<TokenScope>);

/// What a request's credentials are worth.
enum Access {
    /// The node token: everything.
    Node,
    /// A valid client token: its accounts' EventSource stream, nothing else.
    Client(TokenScope),
    /// A client token that is not valid.
    Refused(ClientTokenError),
    /// No credential this node accepts.
    Missing,
}

impl AccessPolicy {
    /// The policy of `[http]`.
    pub fn new(config: &agora::config::HttpConfig) -> Self {
        AccessPolicy {
            token_digests: config.tokens.iter().map(|t| digest(t.expose().as_bytes())).collect(),
            cors_origins: config
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
            clients: config.clients.as_ref().map(ClientTokens::new),
        }
    }

    /// The verifier of client tokens, if `[http.clients]` is configured.
    pub fn clients(&self) -> Option<&ClientTokens> {
        self.clients.as_ref()
    }

    /// What the request's credentials are worth: the node token in `Authorization: Bearer`, else (with
    /// `[http.clients]`) a client token from that header, the `access_token` parameter or the `agora_token` cookie.
    fn access(&self, request: &Request) -> Access {
        let headers = request.headers();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(presented) = bearer {
            let presented = digest(presented.as_bytes());
            // Every configured token is compared, match or not.
            if self.token_digests.iter().fold(false, |ok, d| ok | (*d == presented)) {
                return Access::Node;
            }
        }
        let Some(clients) = &self.clients else {
            return Access::Missing;
        };
        // A bearer that is not even shaped like a JWT is a wrong node token: answered as one (the usual 401).
        if bearer.is_some_and(|b| b.bytes().filter(|c| *c == b'.').count() != 2) {
            return Access::Missing;
        }
        let query = request.uri().query().and_then(|q| query_param(q, TOKEN_PARAM));
        // The cookie is an ambient credential: it counts on the stream it is for only, so that a browser holding it
        // still gets the usual 401 (and the dashboard's token form) elsewhere on the node's origin.
        let on_stream = request.uri().path() == EVENTSOURCE_PATH;
        let Some(token) = bearer
            .map(str::to_owned)
            .or(query)
            .or_else(|| on_stream.then(|| cookie(headers, TOKEN_COOKIE)).flatten())
        else {
            return Access::Missing;
        };
        match clients.verify(&token, agora::clock::now_ms() / 1000) {
            Ok(scope) => Access::Client(scope),
            Err(e) => Access::Refused(e),
        }
    }

    /// Whether requests need a token.
    pub fn requires_token(&self) -> bool {
        !self.token_digests.is_empty()
    }

    /// The allowed origin of this request, if it names one.
    fn cors_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        self.cors_origins.iter().find(|o| *o == origin).cloned()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Bounds, CORS and authentication, in that order: an oversized request is refused before anything else is read,
/// a browser's preflight is answered without a token (browsers never send one there), and everything else but the
/// public paths needs a token when one is configured. A client token opens `GET /v1/eventsource` only (403
/// elsewhere; 401 when it is not valid or revoked); the handler gets its scope as a [`ClientGrant`].
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if let Some(refused) = oversized(&request) {
        return refused;
    }
    let policy = &state.access;
    let origin = policy.cors_origin(request.headers());
    // Browsers send the `agora_token` cookie cross-origin only when the answer allows credentials.
    let credentials = policy.clients.is_some() && request.uri().path() == EVENTSOURCE_PATH;
    if request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return preflight(origin, request.uri().path(), credentials);
    }
    let public = is_public(request.method(), request.uri().path());
    let mut response = if public {
        next.run(request).await
    } else {
        match policy.access(&request) {
            Access::Node => next.run(request).await,
            Access::Missing if !policy.requires_token() => next.run(request).await,
            Access::Missing => unauthorized(),
            Access::Refused(why) => refuse_client(&state, &request, StatusCode::UNAUTHORIZED, &why.to_string()),
            Access::Client(_) if !(request.method() == Method::GET && request.uri().path() == EVENTSOURCE_PATH) => {
                refuse_client(
                    &state,
                    &request,
                    StatusCode::FORBIDDEN,
                    "a client token opens GET /v1/eventsource only; everything else needs the node token ([http] token)",
                )
            }
            Access::Client(scope) if state.state.revocations().covers(&scope) => refuse_client(
                &state,
                &request,
                StatusCode::UNAUTHORIZED,
                &ClientTokenError::Revoked.to_string(),
            ),
            Access::Client(scope) => {
                request.extensions_mut().insert(ClientGrant(std::sync::Arc::new(scope)));
                next.run(request).await
            }
        }
    };
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        if credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
    response
}

/// A refused client token: counted, logged at debug with the request target redacted (a token in the query string
/// never reaches a log), answered with the API's error shape (401 with `WWW-Authenticate`, or 403).
fn refuse_client(state: &AppState, request: &Request, status: StatusCode, message: &str) -> Response {
    state.node_metrics.client_tokens_refused.inc();
    tracing::debug!(
        target: "agora::http",
        uri = %redacted_target(request.uri()),
        status = status.as_u16(),
        "client token refused: {message}"
    );
    let mut response = ApiError::new(status, message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"agora\", error=\"invalid_token\""),
        );
    }
    response
}

/// The value of query parameter `name` (percent-decoded), if present.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

/// `%XX` and `+` decoding of a query value (a JWT has neither, but a client may encode it anyway).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cookie `name` of the request, if any (`Cookie: a=1; agora_token=...`).
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key.trim() == name).then(|| value.trim().trim_matches('"').to_string())
        })
}

/// The request target for a log line: the `access_token` parameter's value replaced by `<redacted>`.
pub fn redacted_target(uri: &axum::http::Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_string();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key == TOKEN_PARAM => format!("{key}=<redacted>"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", redacted.join("&"))
}

fn oversized(request: &Request) -> Option<Response> {
    let uri_len = request.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return Some(
            ApiError::new(
                StatusCode::URI_TOO_LONG,
                format!("the request target is {uri_len} bytes; at most {MAX_URI_BYTES} are accepted"),
            )
            .into_response(),
        );
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    (header_bytes > MAX_HEADER_BYTES).then(|| {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request headers are {header_bytes} bytes; at most {MAX_HEADER_BYTES} are accepted"),
        )
        .into_response()
    })
}

fn unauthorized() -> Response {
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "a valid token is required: send Authorization: Bearer <token> ([http] token)",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"agora\""),
    );
    response
}

/// The methods each path of the API answers, for CORS preflights; `None` for a path the API does not have.
fn methods_of(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Some(match segments.as_slice() {
        ["healthz"] => "GET, HEAD",
        ["metrics"] | ["v1", "node"] | ["v1", "cluster", "nodes"] | ["v1", "events", "poll"] => "GET",
        ["v1", "eventsource"] | ["v1", "push", "vapid"] | ["v1", "openapi.json"] => "GET",
        ["v1", "events"] | ["v1", "blocked-ips"] | ["v1", "push-subscriptions"] => "GET, POST",
        ["v1", "revocations"] => "POST",
        ["v1", "blocked-ips", target] if !target.is_empty() => "GET, DELETE",
        ["v1", "push-subscriptions", id] if !id.is_empty() => "PATCH, DELETE",
        _ => return None,
    })
}

/// The answer to a CORS preflight (which never carries a token): an allowed origin gets the methods of that path
/// and the headers the API reads; another origin, or a path the API does not have, gets a plain 204 without CORS
/// headers, which the browser treats as a refusal. So a preflight tells no more than the API's documentation.
fn preflight(origin: Option<HeaderValue>, path: &str, credentials: bool) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let (Some(origin), Some(methods)) = (origin, methods_of(path)) {
        let headers = response.headers_mut();
        if credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(methods));
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, last-event-id"),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// Largest request body accepted (events, blocks and subscriptions are small JSON documents).
pub const MAX_BODY_BYTES: usize = 2 << 20;

/// Reads the request body within `[http] body-timeout` (408 otherwise) and at most [`MAX_BODY_BYTES`] (413), so
/// that a client that never finishes its body cannot hold a handler; handlers then get the body in full.
pub async fn body_deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(state.body_timeout, to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes, or could not be read"),
        )
        .into_response(),
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {:?} ([http] body-timeout)",
                state.body_timeout
            ),
        )
        .into_response(),
    }
}

/// Largest error body read to carry its text into the JSON error.
const MAX_ERROR_TEXT: usize = 4096;

/// Gives every error response the API's shape, `{"error": "..."}`: the router's 404 and 405, axum's extractor and
/// body-limit rejections (plain text) and anything else that is not JSON already.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = to_bytes(body, MAX_ERROR_TEXT)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| default_message(status));
    let mut shaped = ApiError::new(status, text).into_response();
    for (name, value) in parts.headers.iter() {
        if keep_header(name) {
            shaped.headers_mut().append(name.clone(), value.clone());
        }
    }
    shaped
}

fn keep_header(name: &HeaderName) -> bool {
    *name == header::ALLOW || *name == header::WWW_AUTHENTICATE || *name == header::RETRY_AFTER
}

fn default_message(status: StatusCode) -> String {
    match status {
        StatusCode::NOT_FOUND => "no such endpoint; see the API table in README.md".into(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this endpoint (see the Allow header)".into(),
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large".into(),
        other => other.canonical_reason().unwrap_or("error").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_in_the_query_string_is_redacted_from_logged_targets() {
        let uri: axum::http::Uri = "/v1/eventsource?accounts=1&access_token=eyJ.secret.sig&ping=5"
            .parse()
            .expect("uri");
        let logged = redacted_target(&uri);
        assert_eq!(logged, "/v1/eventsource?accounts=1&access_token=<redacted>&ping=5");
        assert!(!logged.contains("secret"));
        assert_eq!(
            query_param(uri.query().expect("query"), TOKEN_PARAM).as_deref(),
            Some("eyJ.secret.sig")
        );
        assert_eq!(query_param("access_token=a%2Eb", TOKEN_PARAM).as_deref(), Some("a.b"));
        assert_eq!(query_param("x=1&access_token=%", TOKEN_PARAM).as_deref(), Some("%"));
    }

    #[test]
    fn the_token_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; agora_token=eyJ.x.y; b=2"),
        );
        assert_eq!(cookie(&headers, TOKEN_COOKIE).as_deref(), Some("eyJ.x.y"));
        headers.clear();
        headers.append(header::COOKIE, HeaderValue::from_static("xagora_token=1"));
        assert_eq!(cookie(&headers, TOKEN_COOKIE), None);
    }

    #[test]
    fn the_health_check_is_open_to_head_as_to_get_and_nothing_else_is() {
        assert!(is_public(&Method::GET, "/healthz"));
        assert!(is_public(&Method::HEAD, "/healthz"));
        assert!(!is_public(&Method::POST, "/healthz"));
        assert!(!is_public(&Method::HEAD, "/v1/node"));
        assert!(!is_public(&Method::GET, "/v1/blocked-ips"));
    }
}
