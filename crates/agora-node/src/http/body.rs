//! The one JSON body extractor of the API: every handler that takes a body reads it through [`ApiJson`], so that every
//! malformed body gets the API's error shape (`{"error": "..."}`) with a message naming what is wrong.

use agora::Event;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A request body the API accepts, and how it is named in error messages.
pub trait RequestBody: DeserializeOwned {
    /// What the body is, for error messages: "invalid {WHAT}: ...".
    const WHAT: &'static str = "request";
}

impl RequestBody for Event {
    const WHAT: &'static str = "event";
}

/// A JSON body of type `T`; rejected with 400 naming the problem, or 415 if the body says it is not JSON. A body
/// without a `Content-Type` is read as JSON, as simple clients send it.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: RequestBody> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
            if !is_json(content_type.to_str().unwrap_or_default()) {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("unsupported Content-Type {content_type:?}: send application/json"),
                ));
            }
        }
        let raw = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        let value: T = serde_json::from_slice(&raw).map_err(|e| invalid::<T>(e.to_string()))?;
        Ok(ApiJson(value))
    }
}

fn invalid<T: RequestBody>(reason: String) -> ApiError {
    ApiError::bad_request(format!("invalid {}: {reason}", T::WHAT))
}

/// `application/json`, or any `+json` type, parameters (`; charset=utf-8`) aside.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
