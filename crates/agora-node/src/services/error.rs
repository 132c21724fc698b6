//! What the services' errors have in common: a kind a caller acts on. The HTTP API maps each kind to one status
//! (`http::error`); the services never know about HTTP.

use agora::PublishError;

use super::local_writes::WriteError;

/// What kind of failure a service reports, from the caller's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or names something invalid: fix the request.
    Invalid,
    /// The request is valid but conflicts with the state (a limit reached, a concurrent write that wins).
    Conflict,
    /// The caller proved nothing it claimed (a wrong verification code): no retry with the same input helps.
    Forbidden,
    /// What the request names does not exist.
    NotFound,
    /// The request is larger than what may be sent.
    TooLarge,
    /// This node cannot do it now (overloaded, shutting down): retry later.
    Unavailable,
    /// A bounded store is full (e.g. `[http.clients] max-revocations`): retrying helps only once entries expire.
    Full,
}

/// An error a service returns: its kind, and its message (`Display`) for the caller.
pub trait ServiceError: std::error::Error {
    /// What kind of failure this is.
    fn kind(&self) -> ErrorKind;
}

impl ServiceError for PublishError {
    fn kind(&self) -> ErrorKind {
        match self {
            PublishError::TooLarge { .. } => ErrorKind::TooLarge,
            PublishError::QueueFull { .. } | PublishError::ShutDown => ErrorKind::Unavailable,
            // The event cannot be sent as configured (e.g. the Stalwart release cannot decode it).
            _ => ErrorKind::Invalid,
        }
    }
}

impl ServiceError for WriteError {
    fn kind(&self) -> ErrorKind {
        match self {
            WriteError::Publish(e) => e.kind(),
            WriteError::NotApplied => ErrorKind::Unavailable,
        }
    }
}
