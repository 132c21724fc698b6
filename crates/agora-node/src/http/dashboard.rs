//! The dashboard: `GET /` and its assets, a single page for an on-call engineer, live through the node's own API.
//!
//! Everything here is static and public (embedded in the binary; no state, no secrets), so that the page can load
//! and ask for the API token when the API answers 401. The page is a client like any other: it uses only the
//! documented endpoints, sends the token as an `Authorization: Bearer` header (never in a URL) and reads the event
//! stream with `fetch()`. Whatever authenticates the API must therefore leave `GET /` and `GET /assets/*` open.
//!
//! Every response carries a Content-Security-Policy that allows only this origin (no inline script or style, no
//! framing), `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Only this origin: scripts, styles and API requests; nothing inline, no plugins, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The assets under `/assets/`: name, content type, contents.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/dashboard.css"),
    ),
    ("dashboard.js", JS, include_str!("dashboard/dashboard.js")),
    ("api.js", JS, include_str!("dashboard/api.js")),
    ("charts.js", JS, include_str!("dashboard/charts.js")),
    ("tail.js", JS, include_str!("dashboard/tail.js")),
    ("admin.js", JS, include_str!("dashboard/admin.js")),
    ("status.js", JS, include_str!("dashboard/status.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

const INDEX: &str = include_str!("dashboard/index.html");

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new().route("/", get(|| async { page("text/html; charset=utf-8", INDEX) }));
    for &(name, content_type, body) in ASSETS {
        router = router.route(
            &format!("/assets/{name}"),
            get(move || async move { page(content_type, body) }),
        );
    }
    router
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (
            HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY"),
        ),
        // Assets change with the binary; a restart with a new version must not be shadowed by a cached copy.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str) -> Response {
        let app: Router = router::<()>().with_state(());
        app.oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    fn header<'a>(response: &'a Response, name: &str) -> &'a str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn the_page_is_html_with_a_self_only_policy() {
        let response = get("/").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(header(&response, "content-type").starts_with("text/html"));
        let csp = header(&response, "content-security-policy");
        assert_eq!(csp, CONTENT_SECURITY_POLICY);
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert_eq!(header(&response, "referrer-policy"), "no-referrer");
        let html = body(response).await;
        assert!(
            html.contains(r#"<script type="module" src="/assets/dashboard.js">"#),
            "{html}"
        );
        // No inline script: every <script> has a src.
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script type=\"module\" src=").count()
        );
    }

    #[tokio::test]
    async fn every_asset_is_served_with_its_type_and_the_same_headers() {
        let response = get("/assets/dashboard.js").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "content-type"), "text/javascript; charset=utf-8");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert!(body(response).await.contains("import"));
        for (name, content_type, contents) in ASSETS {
            let response = get(&format!("/assets/{name}")).await;
            assert_eq!(response.status(), StatusCode::OK, "{name}");
            assert_eq!(header(&response, "content-type"), *content_type, "{name}");
            assert_eq!(header(&response, "content-security-policy"), CONTENT_SECURITY_POLICY);
            assert_eq!(body(response).await, *contents);
        }
        assert_eq!(get("/assets/nope.js").await.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_page_shows_api_data_as_text_only() {
        // Event data comes from the network: nothing is ever parsed as HTML.
        for (name, _, contents) in ASSETS {
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!contents.contains(sink), "{name} uses {sink}");
            }
            assert!(
                !contents.contains("EventSource("),
                "{name}: the stream needs the Authorization header"
            );
        }
    }

    #[test]
    fn the_tail_offers_every_event_type() {
        let tail = include_str!("dashboard/tail.js");
        let start = tail.find("EVENT_TYPES = [").expect("EVENT_TYPES in tail.js");
        let list = &tail[start..start + tail[start..].find("];").expect("end of EVENT_TYPES")];
        let names: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
        assert_eq!(
            names,
            agora::Event::TYPE_NAMES,
            "tail.js EVENT_TYPES follows the catalogue"
        );
    }
}
