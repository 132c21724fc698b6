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
    /// The keys that tag internally tagged enums in the body. serde reads such a tag from a variant's name, and also
    /// from its index (`"type": 0`), which no client means and the API document does not allow: those keys must
    /// hold strings, wherever they are in the body.
    const TAGS: &'static [&'static str] = &[];
}

impl RequestBody for Event {
    const WHAT: &'static str = "event";
    // `type` tags the event; `kind` tags a Stalwart event and each of its cache items.
    const TAGS: &'static [&'static str] = &["type", "kind"];
}

/// A JSON object of type `T`; rejected with 400 naming the problem, or 415 if the body says it is not JSON. A body
/// without a `Content-Type` is read as JSON, as simple clients send it. Every body of the API is an object: serde
/// would also read a struct from an array of its fields in order (`[null, null]`), which no client means, so any
/// other JSON value is refused.
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
        if raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(invalid::<T>("expected a JSON object, not an array".into()));
        }
        let value: T = serde_json::from_slice(&raw).map_err(|e| invalid::<T>(e.to_string()))?;
        if !T::TAGS.is_empty() {
            // Read again, as a tree, only for bodies that have tags (small events): an index as a tag is refused.
            let tree: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| invalid::<T>(e.to_string()))?;
            if let Some((tag, found)) = numeric_tag(&tree, T::TAGS) {
                return Err(invalid::<T>(format!("`{tag}` must be a name, not {found}")));
            }
        }
        Ok(ApiJson(value))
    }
}

/// The first of `tags` that holds anything but a string, anywhere in `value`, and what it holds.
fn numeric_tag<'a>(
    value: &'a serde_json::Value,
    tags: &[&'static str],
) -> Option<(&'static str, &'a serde_json::Value)> {
    match value {
        serde_json::Value::Object(map) => tags
            .iter()
            .find_map(|tag| map.get(*tag).filter(|v| !v.is_string()).map(|v| (*tag, v)))
            .or_else(|| map.values().find_map(|v| numeric_tag(v, tags))),
        serde_json::Value::Array(items) => items.iter().find_map(|v| numeric_tag(v, tags)),
        _ => None,
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
    fn tags_must_be_names_at_any_depth() {
        let tags = <Event as RequestBody>::TAGS;
        let ok =
            serde_json::json!({"type": "stalwart", "kind": "CacheInvalidate", "items": [{"kind": "Account", "id": 1}]});
        assert!(numeric_tag(&ok, tags).is_none());
        let nested =
            serde_json::json!({"type": "stalwart", "kind": "CacheInvalidate", "items": [{"kind": 0, "id": 1}]});
        assert_eq!(
            numeric_tag(&nested, tags).map(|(t, v)| (t, v.clone())),
            Some(("kind", serde_json::json!(0)))
        );
        // serde itself takes the index (`AccessToken`): the check above is what refuses it.
        assert!(serde_json::from_value::<Event>(nested).is_ok());
        let top = serde_json::json!({"type": 0, "account_id": 1, "change_id": 1, "types": []});
        assert_eq!(numeric_tag(&top, tags).map(|(t, _)| t), Some("type"));
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
