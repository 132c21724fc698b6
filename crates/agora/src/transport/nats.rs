//! The NATS transport: maps every setting of a `[store.<id>]` section onto async-nats, exactly as Stalwart's NATS
//! documentation describes them, and turns the client's connection events into a [`LinkState`].
//!
//! Where async-nats and the documentation disagree the documentation wins. `max-reconnects` counts reconnection
//! attempts *after a loss*: `0` means never reconnect (async-nats reads 0 as unlimited) and `N` means N attempts per
//! loss. async-nats also counts the attempts of the initial connect against its limit (so `max-reconnects = 1` with
//! two addresses, the first one down, would fail to start), so the limit is enforced here instead: async-nats is told
//! to retry forever and, once the budget of a loss is spent, the reconnect loop is parked and the link reported
//! closed for good.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

use super::LinkState;
use crate::backoff::Backoff;
use crate::config::{NatsAuth, NatsConfig, Reconnects};
use crate::error::{ConnectError, ConnectErrorKind, Report, RequestError, RequestErrorKind, StartError};
use crate::log_limit;
use crate::stats::Stats;

/// Client errors reported by async-nats, for rate-limiting their log lines.
static CLIENT_ERRORS: crate::log_limit::LogLimiter = crate::log_limit::LogLimiter::new();

/// Errors the server sent (`-ERR`), for rate-limiting their log lines.
static SERVER_ERRORS: crate::log_limit::LogLimiter = crate::log_limit::LogLimiter::new();

/// How long the reconnect loop is parked when reconnecting is disabled: effectively forever.
const PARKED: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Longest pause between reconnect attempts: a recovering server is retried at least this often.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(4);

/// A connected NATS client and the subject the cluster uses.
#[derive(Clone, Debug)]
pub(crate) struct NatsTransport {
    client: Client,
    subject: String,
    request_timeout: Duration,
    connection_timeout: Duration,
    link_rx: watch::Receiver<LinkState>,
}

impl NatsTransport {
    /// Connects to the configured servers (trying each once, each bounded by `timeout.connection`).
    pub(crate) async fn connect(
        config: &NatsConfig,
        client_name: String,
        stats: Arc<Stats>,
        link_tx: watch::Sender<LinkState>,
    ) -> Result<Self, ConnectError> {
        let servers = config.addresses.join(", ");
        let initial_done = Arc::new(AtomicBool::new(false));
        let link_rx = link_tx.subscribe();
        let options = connect_options(config, client_name, stats, link_tx, initial_done.clone())
            .map_err(|e| ConnectError::new(ConnectErrorKind::Credentials, &servers, e))?;
        let addresses: Vec<async_nats::ServerAddr> = config
            .addresses
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| ConnectError::new(ConnectErrorKind::Address, &servers, e))?;
        let client = options
            .connect(addresses)
            .await
            .map_err(|e| ConnectError::from_nats(&servers, e))?;
        // From now on attempts count against max-reconnects.
        initial_done.store(true, Ordering::SeqCst);
        Ok(NatsTransport {
            client,
            subject: config.subject.clone(),
            request_timeout: config.request_timeout,
            connection_timeout: config.connection_timeout,
            link_rx,
        })
    }

    /// Subscribes to the cluster subject; async-nats re-subscribes after every reconnect.
    pub(crate) async fn subscribe(&self) -> Result<Subscriber, StartError> {
        self.subscribe_to(self.subject.clone(), "the events subscription").await
    }

    /// Subscribes to `subject` and waits until the server confirms the subscription is active.
    pub(crate) async fn subscribe_to(&self, subject: String, what: &str) -> Result<Subscriber, StartError> {
        let subscriber = self
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|source| StartError::Subscribe { subject, source })?;
        self.confirm(what).await;
        Ok(subscriber)
    }

    /// Waits (at most `timeout.connection`) until the server has processed everything this client sent so far, so
    /// that a subscription is active on the server when the caller goes on: events and requests another node sends
    /// right after this one started or began serving are not missed.
    ///
    /// `Client::flush` is not enough: in async-nats 0.51 it only writes the socket buffer, with no PING/PONG round
    /// trip. A request to a subject nobody serves is one: the server answers it with a no-responders status after
    /// processing every earlier operation of this connection. Best effort: a failure is logged.
    async fn confirm(&self, what: &str) {
        if let Err(e) = self.sync_with_server().await {
            tracing::warn!("NATS did not confirm {what}: {}", Report(&e));
        }
    }

    /// Waits (at most `timeout.connection`) until the server has processed everything this client sent so far.
    pub(crate) async fn sync_with_server(&self) -> Result<(), SyncError> {
        let round_trip = async {
            let inbox = self.client.new_inbox();
            let mut replies = self
                .client
                .subscribe(inbox.clone())
                .await
                .map_err(SyncError::Subscribe)?;
            self.client
                .publish_with_reply(format!("{inbox}.confirm"), inbox, Bytes::new())
                .await
                .map_err(SyncError::Publish)?;
            match replies.next().await {
                Some(_) => Ok(()),
                None => Err(SyncError::Closed),
            }
        };
        tokio::time::timeout(self.connection_timeout, round_trip)
            .await
            .unwrap_or(Err(SyncError::TimedOut(self.connection_timeout)))
    }

    /// Hands one batch to the client. Returns once it is queued for the socket, not when it is written.
    pub(crate) async fn publish(&self, batch: Bytes) -> Result<(), async_nats::PublishError> {
        self.client.publish(self.subject.clone(), batch).await
    }

    /// Hands one message for another subject (the Stalwart bus) to the client.
    pub(crate) async fn publish_to(&self, subject: String, payload: Bytes) -> Result<(), async_nats::PublishError> {
        self.client.publish(subject, payload).await
    }

    /// Sends a request to `{subject}.{name}` and waits for one reply, at most `timeout.request`.
    ///
    /// Uses a fresh inbox subscription that is dropped (unsubscribed) when the call ends, whatever the outcome, so an
    /// unanswered request leaves nothing behind in the client (unlike async-nats' shared request multiplexer, which
    /// keeps such entries until the client drains: nats.rs issue #1617).
    /// Each reply goes through `accept`; one it rejects (e.g. failed authentication) is skipped and the next awaited,
    /// so a node without the cluster key that answers first cannot make the request fail. If only rejected replies
    /// arrive, the last rejection is returned at the timeout.
    ///
    /// A "no responders" status (503) comes from the server, unauthenticated: anyone who sees the request can send
    /// one to its inbox. With `trust_no_responders` false it is only noted and the wait goes on for a reply that
    /// `accept` takes; it is returned at the timeout if nothing else arrived.
    pub(crate) async fn request<T>(
        &self,
        name: &str,
        payload: Bytes,
        trust_no_responders: bool,
        mut accept: impl FnMut(Bytes) -> Result<T, RequestError>,
    ) -> Result<T, RequestError> {
        let subject = format!("{}.{name}", self.subject);
        if let LinkState::Closed { reason } = &*self.link_rx.borrow() {
            return Err(RequestError::new(
                RequestErrorKind::Closed,
                &subject,
                format_args!("the NATS connection is closed for good ({reason})"),
            ));
        }
        // The whole exchange is bounded: while disconnected, even queueing the subscription can wait (the client
        // channel, capacity.client, may be full).
        let mut rejected = None;
        let exchange = async {
            let inbox = self.client.new_inbox();
            let mut replies = self.client.subscribe(inbox.clone()).await.map_err(|e| {
                RequestError::with_source(
                    RequestErrorKind::Other,
                    &subject,
                    "cannot subscribe to the reply inbox",
                    e,
                )
            })?;
            self.client
                .publish_with_reply(subject.clone(), inbox, payload)
                .await
                .map_err(|e| {
                    RequestError::with_source(RequestErrorKind::Other, &subject, "cannot send the request", e)
                })?;
            loop {
                match replies.next().await {
                    Some(reply) if reply.status == Some(async_nats::StatusCode::NO_RESPONDERS) => {
                        let e = RequestError::new(RequestErrorKind::NoResponders, &subject, "no node is answering");
                        if trust_no_responders {
                            return Err(e);
                        }
                        rejected.get_or_insert(e);
                    }
                    Some(reply) => match accept(reply.payload) {
                        Ok(value) => return Ok(value),
                        Err(e) => rejected = Some(e),
                    },
                    None => {
                        return Err(RequestError::new(
                            RequestErrorKind::Closed,
                            &subject,
                            "the connection closed while waiting",
                        ))
                    }
                }
            }
        };
        let result = tokio::time::timeout(self.request_timeout, exchange).await;
        match result {
            Ok(result) => result,
            Err(_) => Err(rejected.unwrap_or_else(|| {
                RequestError::new(
                    RequestErrorKind::TimedOut,
                    &subject,
                    format_args!("no reply within {:?} (timeout.request)", self.request_timeout),
                )
            })),
        }
    }

    /// Subscribes to requests sent to `{subject}.{name}`; answer each on its reply subject with [`Self::reply`].
    pub(crate) async fn serve(&self, name: &str) -> Result<Subscriber, StartError> {
        self.subscribe_to(format!("{}.{name}", self.subject), "the request subscription")
            .await
    }

    /// Sends a reply.
    pub(crate) async fn reply(
        &self,
        reply_to: async_nats::Subject,
        payload: Bytes,
    ) -> Result<(), async_nats::PublishError> {
        self.client.publish(reply_to, payload).await
    }

    /// The largest message the current server accepts.
    pub(crate) fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// `host:port` of the server in use, as it announces itself.
    pub(crate) fn server(&self) -> String {
        let info = self.client.server_info();
        format!("{}:{}", info.host, info.port)
    }

    /// The client, for request/reply users.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// `timeout.request`.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
}

/// Builds the async-nats options from a validated store section.
///
/// `initial_done` is set once the first connection is established: only attempts after that count against
/// `max-reconnects`.
fn connect_options(
    config: &NatsConfig,
    client_name: String,
    stats: Arc<Stats>,
    link_tx: watch::Sender<LinkState>,
    initial_done: Arc<AtomicBool>,
) -> std::io::Result<ConnectOptions> {
    let mut options = ConnectOptions::new()
        .name(client_name.clone())
        .connection_timeout(config.connection_timeout)
        .request_timeout(Some(config.request_timeout))
        .ping_interval(config.ping_interval)
        .client_capacity(config.client_capacity)
        .subscription_capacity(config.subscription_capacity)
        .read_buffer_capacity(config.read_buffer_capacity);
    if config.no_echo {
        options = options.no_echo();
    }
    options = match &config.auth {
        NatsAuth::None => options,
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.expose().to_string())
        }
        NatsAuth::Credentials(creds) => options.credentials(creds.expose())?,
        NatsAuth::Token(token) => options.token(token.expose().to_string()),
    };
    if config.tls.enable {
        options = options.require_tls(true);
    }
    // Also for `tls://` addresses and servers that require TLS without tls.enable: whenever TLS is used, it uses
    // the configured CA and client certificate.
    if let Some(ca) = &config.tls.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let policy = config.max_reconnects;
    let limit = reconnect_limit(policy);
    let give_up_tx = link_tx.clone();
    let give_up_name = client_name.clone();
    options = options
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| match limit {
            Some(limit) if attempts > limit && initial_done.load(Ordering::SeqCst) => {
                let reason = match policy {
                    Reconnects::AtMost(n) => format!("gave up after max-reconnects = {n} attempts"),
                    _ => "connection lost and max-reconnects = 0 (never reconnect)".to_string(),
                };
                let previous = give_up_tx.send_replace(LinkState::Closed { reason: reason.clone() });
                if !matches!(previous, LinkState::Closed { .. }) {
                    tracing::error!(client = %give_up_name, "NATS connection closed for good: {reason}");
                }
                PARKED
            }
            _ => reconnect_delay(attempts),
        });
    let connected_once = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    Ok(options.event_callback(move |event| {
        let context = EventContext {
            policy,
            stats: stats.clone(),
            link_tx: link_tx.clone(),
            connected_once: connected_once.clone(),
            failures: failures.clone(),
            client: client_name.clone(),
        };
        async move { on_client_event(event, &context) }
    }))
}

/// How many reconnection attempts one loss may use: `None` = unlimited.
fn reconnect_limit(policy: Reconnects) -> Option<usize> {
    match policy {
        Reconnects::Unlimited => None,
        Reconnects::Never => Some(0),
        Reconnects::AtMost(n) => Some(usize::try_from(n.get()).unwrap_or(usize::MAX)),
    }
}

/// The reconnect schedule: 50 ms, 100 ms, 200 ms ... up to [`MAX_RECONNECT_DELAY`], jittered so a fleet does not
/// reconnect in lock-step to a recovering server (async-nats' own back-off has no jitter).
const RECONNECT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), MAX_RECONNECT_DELAY);

fn reconnect_delay(attempts: usize) -> Duration {
    RECONNECT_BACKOFF.delay(u32::try_from(attempts).unwrap_or(u32::MAX))
}

/// What the event callback needs.
struct EventContext {
    policy: Reconnects,
    stats: Arc<Stats>,
    link_tx: watch::Sender<LinkState>,
    connected_once: Arc<AtomicBool>,
    /// Failed reconnection attempts since the last success (to log the 1st, 2nd, 4th, 8th... only).
    failures: Arc<AtomicU64>,
    /// The client name, so that logs of several coordinators in one process can be told apart.
    client: String,
}

/// Turns an async-nats connection event into link state, counters and one log line.
fn on_client_event(event: async_nats::Event, cx: &EventContext) {
    use async_nats::Event as E;
    let (stats, link_tx, client) = (&cx.stats, &cx.link_tx, cx.client.as_str());
    match event {
        E::Connected => {
            cx.failures.store(0, Ordering::Relaxed);
            if cx.connected_once.swap(true, Ordering::SeqCst) {
                Stats::add(&stats.reconnects, 1);
                tracing::info!(client, "reconnected to NATS");
            }
            LinkState::set_unless_closed(link_tx, LinkState::Connected);
        }
        E::Disconnected => {
            Stats::add(&stats.disconnects, 1);
            if cx.policy == Reconnects::Never {
                tracing::error!(
                    client,
                    "lost the NATS connection; max-reconnects = 0, so this node stays disconnected"
                );
                link_tx.send_replace(LinkState::Closed {
                    reason: "connection lost and max-reconnects = 0 (never reconnect)".into(),
                });
            } else {
                tracing::warn!(client, "lost the NATS connection; reconnecting");
                LinkState::set_unless_closed(link_tx, LinkState::Reconnecting);
            }
        }
        E::ClientError(async_nats::ClientError::MaxReconnects) => {
            let reason = match cx.policy {
                Reconnects::AtMost(n) => format!("gave up after max-reconnects = {n} attempts"),
                _ => "gave up reconnecting".to_string(),
            };
            tracing::error!(client, "NATS connection closed for good: {reason}");
            link_tx.send_replace(LinkState::Closed { reason });
        }
        E::ClientError(async_nats::ClientError::Other(err)) => {
            // A failed reconnection attempt; async-nats passes only the kind of the failure.
            let (n, log) = log_limit::count(&cx.failures, 1);
            if log {
                if reconnect_failure_kind(&err).is_some_and(is_auth_failure) {
                    tracing::error!(
                        client,
                        failed_attempts = n,
                        "cannot reconnect to NATS: authentication failed (the server rejected the user/password \
                         or credentials); the node stays disconnected until they match"
                    );
                } else {
                    tracing::warn!(client, failed_attempts = n, "cannot reconnect to NATS yet: {err}");
                }
            }
        }
        // A server or peer can repeat these without end (a slow-consumer -ERR per flush, a permission error per
        // publish): logged at the 1st, 2nd, 4th... occurrence, with the running total.
        E::ClientError(err) => {
            let (total, log) = CLIENT_ERRORS.record();
            if log {
                tracing::warn!(client, total, "NATS client error: {err}");
            }
        }
        E::ServerError(async_nats::ServerError::AuthorizationViolation) => {
            let (total, log) = SERVER_ERRORS.record();
            if log {
                tracing::error!(
                    client,
                    total,
                    "NATS server error: authorization violation (the user/password or credentials lack a permission)"
                );
            }
        }
        E::ServerError(err) => {
            let (total, log) = SERVER_ERRORS.record();
            if log {
                tracing::warn!(client, total, "NATS server error: {err}");
            }
        }
        E::SlowConsumer(_) => {
            // Counted here; the receiver sees the resulting sequence gap and reports the loss itself.
            let (total, log) = log_limit::count(&stats.slow_consumer_events, 1);
            if log {
                tracing::warn!(
                    client,
                    total,
                    "NATS dropped messages: the subscription channel (capacity.subscription) was full"
                );
            }
        }
        E::LameDuckMode => tracing::warn!(
            client,
            "the NATS server is entering lame duck mode; will move to another server"
        ),
        E::Draining => tracing::info!(client, "NATS connection draining"),
        E::Closed => {
            LinkState::set_unless_closed(
                link_tx,
                LinkState::Closed {
                    reason: "connection closed".into(),
                },
            );
        }
    }
}

/// The kind of a failed reconnection attempt. async-nats reports it only as the `Display` text of its
/// `ConnectErrorKind` (`ClientError::Other(kind.to_string())`), so the kind is recovered by comparing with each
/// kind's own text: exact, and it follows async-nats if the wording ever changes.
fn reconnect_failure_kind(text: &str) -> Option<async_nats::ConnectErrorKind> {
    use async_nats::ConnectErrorKind as K;
    [
        K::ServerParse,
        K::Dns,
        K::Authentication,
        K::AuthorizationViolation,
        K::TimedOut,
        K::Tls,
        K::Io,
        K::MaxReconnects,
    ]
    .into_iter()
    .find(|kind| kind.to_string() == text)
}

/// Whether a connection failure is the server refusing this client's user/password or credentials.
fn is_auth_failure(kind: async_nats::ConnectErrorKind) -> bool {
    use async_nats::ConnectErrorKind as K;
    matches!(kind, K::Authentication | K::AuthorizationViolation)
}

/// Why the server did not confirm a round trip ([`NatsTransport::sync_with_server`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    /// The reply inbox could not be subscribed.
    #[error("cannot subscribe to the confirmation inbox")]
    Subscribe(#[source] async_nats::SubscribeError),
    /// The confirmation request could not be sent.
    #[error("cannot send the confirmation request")]
    Publish(#[source] async_nats::PublishError),
    /// The connection closed before the answer came.
    #[error("the connection closed")]
    Closed,
    /// No answer in time.
    #[error("no answer within {0:?} (timeout.connection)")]
    TimedOut(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_grows_with_jitter_and_is_capped() {
        for _ in 0..200 {
            let first = reconnect_delay(1);
            assert!(
                first >= Duration::from_millis(25) && first <= Duration::from_millis(50),
                "{first:?}"
            );
            let second = reconnect_delay(2);
            assert!(
                second >= Duration::from_millis(50) && second <= Duration::from_millis(100),
                "{second:?}"
            );
            let fourth = reconnect_delay(4);
            assert!(
                fourth >= Duration::from_millis(200) && fourth <= Duration::from_millis(400),
                "{fourth:?}"
            );
            for attempts in [8, 50, usize::MAX] {
                let d = reconnect_delay(attempts);
                assert!(
                    d >= MAX_RECONNECT_DELAY / 2 && d <= MAX_RECONNECT_DELAY,
                    "{attempts}: {d:?}"
                );
            }
        }
        // Jitter: a fleet does not retry in lock-step.
        let samples: std::collections::HashSet<Duration> = (0..50).map(|_| reconnect_delay(6)).collect();
        assert!(samples.len() > 10, "delays are not jittered: {samples:?}");
    }

    #[test]
    fn max_reconnects_counts_attempts_after_a_loss() {
        assert_eq!(reconnect_limit(Reconnects::Unlimited), None);
        assert_eq!(reconnect_limit(Reconnects::Never), Some(0));
        let three = Reconnects::AtMost(std::num::NonZeroU32::new(3).expect("non-zero"));
        assert_eq!(reconnect_limit(three), Some(3));
    }

    #[test]
    fn every_setting_reaches_async_nats() {
        let mut config = NatsConfig::with_addresses(vec!["nats://127.0.0.1:4222".into()]);
        config.connection_timeout = Duration::from_millis(1234);
        config.ping_interval = Duration::from_millis(4321);
        config.client_capacity = 17;
        config.read_buffer_capacity = 512;
        config.no_echo = true;
        let (link_tx, _link_rx) = watch::channel(LinkState::Reconnecting);
        let options = connect_options(
            &config,
            "agora test".into(),
            Arc::new(Stats::default()),
            link_tx,
            Arc::new(AtomicBool::new(false)),
        )
        .expect("options");
        // async-nats exposes its options only through Debug.
        let shown = format!("{options:?}");
        for expected in [
            "\"no_echo\": true",
            "\"max_reconnects\": None",
            "\"connection_timeout\": 1.234s",
            "\"ping_interval\": 4.321s",
            "\"sender_capacity\": 17",
            "\"read_buffer_capacity\": 512",
            "\"name\": Some(\"agora test\")",
        ] {
            assert!(shown.contains(expected), "{expected} not in {shown}");
        }
    }

    #[test]
    fn reconnect_failures_map_back_to_their_kind() {
        use async_nats::ConnectErrorKind as K;
        for kind in [K::Authentication, K::AuthorizationViolation, K::TimedOut, K::Io, K::Tls] {
            assert_eq!(reconnect_failure_kind(&kind.to_string()), Some(kind));
        }
        assert_eq!(reconnect_failure_kind("something else"), None);
        assert!(is_auth_failure(K::AuthorizationViolation) && is_auth_failure(K::Authentication));
        assert!(!is_auth_failure(K::TimedOut));
    }
}
