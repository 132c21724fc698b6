//! Errors, one type per operation, each with a kind a caller can act on and the underlying error as its `source()`.
//!
//! Messages are operator sentences: they say what failed and where, never include secrets, and do not repeat their
//! source: print an error with [`Report`] to show the whole chain (`what failed: why: root cause`).

use std::fmt;

/// The underlying cause of an error, kept whole (not flattened to text) so callers can inspect it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Displays an error followed by each of its sources: `cannot connect to NATS at ...: TLS handshake failed: <rustls>`.
/// A source whose text spans several lines (a configuration's list of problems) starts on a line of its own, so each
/// of its lines stays whole.
///
/// Use it wherever an error reaches an operator (logs, the command line); `Display` of agora's errors alone says what
/// failed without repeating the cause, as the Rust API guidelines ask.
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            let separator = if text.contains('\n') { ":\n" } else { ": " };
            write!(f, "{separator}{text}")?;
            source = cause.source();
        }
        Ok(())
    }
}

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

impl ConnectErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ConnectErrorKind::Authentication => "authentication failed (check user/password or credentials)",
            ConnectErrorKind::Credentials => "the credentials are not a usable NATS .creds file",
            ConnectErrorKind::Tls => "TLS handshake failed",
            ConnectErrorKind::TimedOut => "timed out (timeout.connection)",
            ConnectErrorKind::Address => "bad or unresolvable address",
            ConnectErrorKind::Io => "connection failed",
        }
    }
}

/// The NATS connection could not be established.
#[derive(Debug)]
pub struct ConnectError {
    kind: ConnectErrorKind,
    servers: String,
    /// What the operator can do about it, where agora knows (e.g. which `tls.*` key to check).
    hint: Option<&'static str>,
    source: Option<BoxError>,
}

impl ConnectError {
    pub(crate) fn new(kind: ConnectErrorKind, servers: &str, source: impl Into<BoxError>) -> Self {
        ConnectError {
            kind,
            servers: servers.to_string(),
            hint: None,
            source: Some(source.into()),
        }
    }

    pub(crate) fn from_nats(servers: &str, err: async_nats::ConnectError) -> Self {
        use async_nats::ConnectErrorKind as K;
        // async-nats reports a failed TLS handshake as an I/O error (tokio-rustls wraps the rustls error in an
        // io::Error), so look for the rustls error in the chain.
        if let Some(tls) = rustls_error(&err) {
            let hint = match tls {
                async_nats::rustls::Error::InvalidMessage(_) => {
                    Some("the server does not speak TLS: a server without TLS cannot be used with tls.enable = true")
                }
                async_nats::rustls::Error::InvalidCertificate(_) => {
                    Some("the server's certificate was rejected: check tls.ca-file")
                }
                async_nats::rustls::Error::AlertReceived(_) => Some(
                    "the server rejected the handshake: a server that verifies clients needs tls.cert-file and \
                     tls.key-file signed by a CA it trusts",
                ),
                _ => None,
            };
            return ConnectError {
                hint,
                ..Self::new(ConnectErrorKind::Tls, servers, err)
            };
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
        write!(
            f,
            "cannot connect to NATS at {}: {}",
            self.servers,
            self.kind.describe()
        )?;
        if let Some(hint) = self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

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
    /// Every reply that arrived failed authentication (`[cluster] key`).
    Unauthenticated,
    /// Replies arrived, but the caller declined each of them (see [`crate::Coordinator::request_each`]).
    Declined,
    /// The NATS connection is closed for good, or closed while waiting.
    Closed,
    /// The client could not send the request.
    Other,
}

/// A request/reply exchange failed.
#[derive(Debug)]
pub struct RequestError {
    kind: RequestErrorKind,
    subject: String,
    /// What happened, as a sentence of agora's own (the cause, if any, is the source).
    what: String,
    source: Option<BoxError>,
}

impl RequestError {
    pub(crate) fn new(kind: RequestErrorKind, subject: &str, what: impl fmt::Display) -> Self {
        RequestError {
            kind,
            subject: subject.to_string(),
            what: what.to_string(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: RequestErrorKind,
        subject: &str,
        what: impl fmt::Display,
        source: impl Into<BoxError>,
    ) -> Self {
        RequestError {
            source: Some(source.into()),
            ..Self::new(kind, subject, what)
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> RequestErrorKind {
        self.kind
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request on {} failed: {}", self.subject, self.what)
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// Why a coordinator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The NATS connection failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A subscription (the cluster subject, or a request handler's subject) failed.
    #[error("cannot subscribe to {subject}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// What async-nats reported.
        #[source]
        source: async_nats::SubscribeError,
    },
    /// The durable mode (`jetstream.enable = true`) could not be set up: the server has no JetStream, or the stream
    /// exists with settings that conflict with the configuration. Fails the start rather than running without the
    /// durability the configuration asked for.
    #[error("durable mode: {key}: {detail}")]
    JetStream {
        /// The configuration key to look at, e.g. `store."nats".jetstream.enable`.
        key: String,
        /// What is wrong and what to do about it.
        detail: String,
        /// The JetStream API error behind it, if any.
        #[source]
        source: Option<BoxError>,
    },
}

/// Reading the durable stream's history failed (the server did not answer, or the reader could not be created).
#[derive(Debug, thiserror::Error)]
#[error("cannot read the durable stream's history")]
pub struct HistoryError(#[source] pub(crate) BoxError);

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
    /// `[stalwart] forward` lists the event's type, but the configured Stalwart release cannot decode it: it is
    /// published nowhere, so that agora never sends a Stalwart node what it would misread.
    #[error("{reason}")]
    StalwartCannotDecode {
        /// Which event, and what the release lacks.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_shows_the_chain_once_and_display_does_not_repeat_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused by peer");
        let err = ConnectError::new(ConnectErrorKind::Io, "127.0.0.1:4222", io);
        assert_eq!(
            err.to_string(),
            "cannot connect to NATS at 127.0.0.1:4222: connection failed"
        );
        assert!(std::error::Error::source(&err).is_some(), "the cause is kept");
        assert_eq!(
            Report(&err).to_string(),
            "cannot connect to NATS at 127.0.0.1:4222: connection failed: refused by peer"
        );
    }

    #[test]
    fn request_errors_keep_their_cause() {
        let io = std::io::Error::other("broken pipe");
        let err = RequestError::with_source(RequestErrorKind::Other, "agora.events.snapshot", "cannot send", io);
        assert_eq!(err.kind(), RequestErrorKind::Other);
        assert_eq!(
            Report(&err).to_string(),
            "request on agora.events.snapshot failed: cannot send: broken pipe"
        );
    }
}
