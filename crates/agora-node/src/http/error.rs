//! The API's one error type: every failure is `{"error": "<message>"}` with a 4xx/5xx status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::services::local_writes::{WriteError, APPLY_TIMEOUT};

/// An API error: the status and a message that tells the caller what to fix.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds for a `Retry-After` header (a limit was reached).
    retry_after: Option<u32>,
}

impl ApiError {
    /// 400: the request is malformed or names something invalid.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 503 with `Retry-After`: a limit of this node is reached; the client should come back after `seconds`.
    pub fn busy(message: impl Into<String>, seconds: u32) -> Self {
        ApiError {
            retry_after: Some(seconds),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// Any other status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<agora::PublishError> for ApiError {
    fn from(e: agora::PublishError) -> Self {
        use agora::PublishError as E;
        let status = match e {
            E::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            E::QueueFull { .. } | E::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Publish(e) => e.into(),
            WriteError::NotApplied => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "published, but not applied on this node within {:?} (the node is overloaded); it applies when \
                     delivered",
                    APPLY_TIMEOUT
                ),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
