//! Errors, one type per operation, each with a kind a caller can act on.
//!
//! Messages are operator sentences: they say what failed and where, never include secrets, and do not repeat their
//! source (which is available through `source()`).

use std::fmt;

/// Why the NATS connection could not be established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectErrorKind {
    /// The server rejected the user/password or credentials.
    Authentication,
    /// The `.creds` content could not be used.
    Credentials,
    /// TLS failed (no TLS on the server, unknown CA, bad client certificate).
    Tls,
    /// No server answered within `timeout.connection`.
    TimedOut,
    /// An address could not be parsed or resolved.
    Address,
    /// Connection refused, reset, or another I/O failure.
    Io,
}

/// The NATS connection could not be established.
#[derive(Debug)]
pub struct ConnectError {
    kind: ConnectErrorKind,
    servers: String,
    detail: String,
}

impl ConnectError {
    pub(crate) fn new(kind: ConnectErrorKind, servers: &str, detail: impl fmt::Display) -> Self {
        ConnectError {
            kind,
            servers: servers.to_string(),
            detail: detail.to_string(),
        }
    }

    pub(crate) fn from_nats(servers: &str, err: &async_nats::ConnectError) -> Self {
        use async_nats::ConnectErrorKind as K;
        // async-nats reports a failed TLS handshake as an I/O error (tokio-rustls wraps the rustls error in an
        // io::Error), so look for the rustls error in the chain.
        if let Some(tls) = rustls_error(err) {
            let detail = match tls {
                async_nats::rustls::Error::InvalidMessage(_) => format!(
                    "{tls} (the server does not speak TLS: a server without TLS cannot be used with tls.enable = true)"
                ),
                async_nats::rustls::Error::InvalidCertificate(_) => {
                    format!("the server's certificate was rejected: {tls} (check tls.ca-file)")
                }
                async_nats::rustls::Error::AlertReceived(_) => format!(
                    "the server rejected the handshake: {tls} (a server that verifies clients needs tls.cert-file \
                     and tls.key-file signed by a CA it trusts)"
                ),
                other => other.to_string(),
            };
            return Self::new(ConnectErrorKind::Tls, servers, detail);
        }
        let kind = match err.kind() {
            K::Authentication | K::AuthorizationViolation => ConnectErrorKind::Authentication,
            K::TimedOut => ConnectErrorKind::TimedOut,
            K::Tls => ConnectErrorKind::Tls,
            K::ServerParse | K::Dns => ConnectErrorKind::Address,
            _ => ConnectErrorKind::Io,
        };
        Self::new(kind, servers, err)
    }

    /// What went wrong.
    pub fn kind(&self) -> ConnectErrorKind {
        self.kind
    }
}

/// The rustls error behind a connection failure, if there is one.
fn rustls_error(err: &async_nats::ConnectError) -> Option<&async_nats::rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<async_nats::rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<async_nats::rustls::Error>())
        {
            return Some(tls);
        }
        source = e.source();
    }
    None
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ConnectErrorKind::Authentication => "authentication failed (check user/password or credentials)",
            ConnectErrorKind::Credentials => "the credentials are not a usable NATS .creds file",
            ConnectErrorKind::Tls => "TLS handshake failed",
            ConnectErrorKind::TimedOut => "timed out (timeout.connection)",
            ConnectErrorKind::Address => "bad or unresolvable address",
            ConnectErrorKind::Io => "connection failed",
        };
        write!(f, "cannot connect to NATS at {}: {what}: {}", self.servers, self.detail)
    }
}

impl std::error::Error for ConnectError {}

/// Why a request/reply exchange failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestErrorKind {
    /// Nobody subscribes to the subject: fails at once, without waiting for the timeout.
    NoResponders,
    /// No reply within `timeout.request`.
    TimedOut,
    /// Single-node mode: there is nobody to ask.
    SingleNode,
    /// The connection failed.
    Other,
}

/// A request/reply exchange failed.
#[derive(Debug)]
pub struct RequestError {
    kind: RequestErrorKind,
    subject: String,
    detail: String,
}

impl RequestError {
    pub(crate) fn new(kind: RequestErrorKind, subject: &str, detail: impl fmt::Display) -> Self {
        RequestError {
            kind,
            subject: subject.to_string(),
            detail: detail.to_string(),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> RequestErrorKind {
        self.kind
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request on {} failed: {}", self.subject, self.detail)
    }
}

impl std::error::Error for RequestError {}

/// Why a coordinator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The NATS connection failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The subscription to the cluster subject failed.
    #[error("cannot subscribe to the cluster subject: {0}")]
    Subscribe(String),
    /// The durable mode (`jetstream.enable = true`) could not be set up: the server has no JetStream, or the stream
    /// exists with settings that conflict with the configuration. Fails the start rather than running without the
    /// durability the configuration asked for.
    #[error("durable mode: {key}: {detail}")]
    JetStream {
        /// The configuration key to look at, e.g. `store."nats".jetstream.enable`.
        key: String,
        /// What is wrong and what to do about it.
        detail: String,
    },
}

/// Why an event was not published.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The encoded event is larger than the server accepts in one message.
    #[error("event of {size} bytes exceeds the server's max_payload of {max} bytes")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The largest event the server accepts (max_payload less the batch header).
        max: usize,
    },
    /// The outgoing queue is full (only from `try_publish`; `publish` waits instead).
    #[error("the outgoing queue is full ({capacity} events); the NATS connection is not keeping up")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The coordinator was shut down.
    #[error("the coordinator is shut down")]
    ShutDown,
    /// The event is one that only the coordinator itself may send.
    #[error("{0}")]
    Invalid(String),
}
