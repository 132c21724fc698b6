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
}

impl ApiError {
    /// 400: the request is malformed or names something invalid.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// Any other status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
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
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}
