//! The one JSON body extractor of the API: every handler that takes a body reads it through [`ApiJson`], so that every
//! malformed body gets the API's error shape (`{"error": "..."}`) with a message naming what is wrong.

use agora::Event;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// A request body the API accepts: how it is named in error messages, and checks beyond what serde does.
pub trait RequestBody: DeserializeOwned {
    /// What the body is, for error messages: "invalid {WHAT}: ...".
    const WHAT: &'static str = "request";

    /// Rejects what deserialised but is still wrong; `raw` is the body as sent.
    fn check(&self, _raw: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

impl RequestBody for Event {
    const WHAT: &'static str = "event";

    /// serde ignores extra fields next to the tag of a unit variant (`queue_paused`, `cache_invalidate_all`...)
    /// despite `deny_unknown_fields`: reject them here like every other event's unknown fields.
    fn check(&self, raw: &[u8]) -> Result<(), String> {
        let Ok(Value::Object(sent)) = serde_json::from_slice::<Value>(raw) else {
            return Ok(());
        };
        let canonical = serde_json::to_value(self).map_err(|e| e.to_string())?;
        let takes_no_fields = canonical.as_object().is_some_and(|fields| fields.len() == 1);
        match sent.keys().find(|key| *key != "type") {
            Some(extra) if takes_no_fields => Err(format!(
                "unknown field `{extra}`: `{}` events take no fields",
                self.type_name()
            )),
            _ => Ok(()),
        }
    }
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
        value.check(&raw).map_err(invalid::<T>)?;
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

    fn parse_event(body: &str) -> Result<Event, String> {
        let event: Event = serde_json::from_str(body).map_err(|e| e.to_string())?;
        event.check(body.as_bytes())?;
        Ok(event)
    }

    #[test]
    fn unit_events_reject_unknown_fields_like_the_others() {
        assert!(parse_event(r#"{"type":"queue_paused"}"#).is_ok());
        let error = parse_event(r#"{"type":"queue_paused","bogus":1}"#).expect_err("extra field");
        assert!(error.contains("bogus"), "{error}");
        for name in ["queue_resumed", "queue_refresh", "cache_invalidate_all"] {
            assert!(
                parse_event(&format!(r#"{{"type":"{name}","x":true}}"#)).is_err(),
                "{name}"
            );
        }
        assert!(
            parse_event(r#"{"type":"blocked_ip","network":"10.0.0.1","reason":null}"#).is_ok(),
            "optional fields given as null stay accepted"
        );
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
