//! The NATS transport: maps every setting of a `[store.<id>]` section onto async-nats, exactly as the seed documents
//! them, and turns the client's connection events into a [`LinkState`].
//!
//! Where async-nats and the documentation disagree the documentation wins: `max-reconnects = 0` means *never
//! reconnect* (async-nats reads 0 as unlimited), so that case is enforced here by parking the reconnect loop and
//! reporting the link closed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

use super::LinkState;
use crate::config::{NatsAuth, NatsConfig, Reconnects};
use crate::error::{ConnectError, ConnectErrorKind, RequestError, RequestErrorKind};
use crate::stats::Stats;

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
        let connected_once = Arc::new(AtomicBool::new(false));
        let options = connect_options(config, client_name, stats, link_tx, connected_once.clone())
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
            .map_err(|e| ConnectError::from_nats(&servers, &e))?;
        Ok(NatsTransport {
            client,
            subject: config.subject.clone(),
            request_timeout: config.request_timeout,
        })
    }

    /// Subscribes to the cluster subject; async-nats re-subscribes after every reconnect.
    pub(crate) async fn subscribe(&self) -> Result<Subscriber, async_nats::SubscribeError> {
        self.client.subscribe(self.subject.clone()).await
    }

    /// Hands one batch to the client. Returns once it is queued for the socket, not when it is written.
    pub(crate) async fn publish(&self, batch: Bytes) -> Result<(), async_nats::PublishError> {
        self.client.publish(self.subject.clone(), batch).await
    }

    /// Waits until everything handed to the client was written to the server.
    pub(crate) async fn flush(&self) -> Result<(), async_nats::client::FlushError> {
        self.client.flush().await
    }

    /// Sends a request to `{subject}.{name}` and waits for one reply, at most `timeout.request`.
    ///
    /// Uses a fresh inbox subscription that is dropped (unsubscribed) when the call ends, whatever the outcome, so an
    /// unanswered request leaves nothing behind in the client (unlike async-nats' shared request multiplexer, which
    /// keeps such entries until the client drains: nats.rs issue #1617).
    pub(crate) async fn request(&self, name: &str, payload: Bytes) -> Result<Bytes, RequestError> {
        let subject = format!("{}.{name}", self.subject);
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| RequestError::new(RequestErrorKind::Other, &subject, e))?;
        self.client
            .publish_with_reply(subject.clone(), inbox, payload)
            .await
            .map_err(|e| RequestError::new(RequestErrorKind::Other, &subject, e))?;
        match tokio::time::timeout(self.request_timeout, replies.next()).await {
            Ok(Some(reply)) if reply.status == Some(async_nats::StatusCode::NO_RESPONDERS) => Err(RequestError::new(
                RequestErrorKind::NoResponders,
                &subject,
                "no node is answering",
            )),
            Ok(Some(reply)) => Ok(reply.payload),
            Ok(None) => Err(RequestError::new(
                RequestErrorKind::Other,
                &subject,
                "the connection closed while waiting",
            )),
            Err(_) => Err(RequestError::new(
                RequestErrorKind::TimedOut,
                &subject,
                format_args!("no reply within {:?} (timeout.request)", self.request_timeout),
            )),
        }
    }

    /// Subscribes to requests sent to `{subject}.{name}`; answer each on its reply subject with [`Self::reply`].
    pub(crate) async fn serve(&self, name: &str) -> Result<Subscriber, async_nats::SubscribeError> {
        self.client.subscribe(format!("{}.{name}", self.subject)).await
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
fn connect_options(
    config: &NatsConfig,
    client_name: String,
    stats: Arc<Stats>,
    link_tx: watch::Sender<LinkState>,
    connected_once: Arc<AtomicBool>,
) -> std::io::Result<ConnectOptions> {
    let mut options = ConnectOptions::new()
        .name(client_name)
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
    };
    if config.tls.enable {
        options = options.require_tls(true);
        if let Some(ca) = &config.tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    let never = config.max_reconnects == Reconnects::Never;
    options = match config.max_reconnects {
        Reconnects::Unlimited | Reconnects::Never => options.max_reconnects(None),
        Reconnects::AtMost(n) => options.max_reconnects(Some(n.get() as usize)),
    };
    let parked = connected_once.clone();
    options = options.reconnect_delay_callback(move |attempts| {
        if never && parked.load(Ordering::SeqCst) {
            PARKED
        } else {
            reconnect_delay(attempts)
        }
    });
    let policy = config.max_reconnects;
    Ok(options.event_callback(move |event| {
        let stats = stats.clone();
        let link_tx = link_tx.clone();
        let connected_once = connected_once.clone();
        async move { on_client_event(event, policy, &stats, &link_tx, &connected_once) }
    }))
}

/// Exponential back-off with jitter, so a fleet does not reconnect in lock-step to a recovering server.
fn reconnect_delay(attempts: usize) -> Duration {
    let jitter = 0.5 + rand::random::<f64>() * 0.5;
    let base = if attempts <= 1 {
        Duration::from_millis(50)
    } else {
        let exp = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(10);
        (Duration::from_millis(100) * 2u32.pow(exp)).min(MAX_RECONNECT_DELAY)
    };
    base.mul_f64(jitter)
}

/// Turns an async-nats connection event into link state, counters and one log line.
fn on_client_event(
    event: async_nats::Event,
    policy: Reconnects,
    stats: &Stats,
    link_tx: &watch::Sender<LinkState>,
    connected_once: &AtomicBool,
) {
    use async_nats::Event as E;
    match event {
        E::Connected => {
            if connected_once.swap(true, Ordering::SeqCst) {
                Stats::add(&stats.reconnects, 1);
                tracing::info!("reconnected to NATS");
            }
            link_tx.send_if_modified(|state| {
                if matches!(state, LinkState::Closed { .. }) {
                    return false;
                }
                *state = LinkState::Connected;
                true
            });
        }
        E::Disconnected => {
            Stats::add(&stats.disconnects, 1);
            if policy == Reconnects::Never {
                tracing::error!("lost the NATS connection; max-reconnects = 0, so this node stays disconnected");
                link_tx.send_replace(LinkState::Closed {
                    reason: "connection lost and max-reconnects = 0 (never reconnect)".into(),
                });
            } else {
                tracing::warn!("lost the NATS connection; reconnecting");
                link_tx.send_if_modified(|state| {
                    if matches!(state, LinkState::Closed { .. }) {
                        return false;
                    }
                    *state = LinkState::Reconnecting;
                    true
                });
            }
        }
        E::ClientError(async_nats::ClientError::MaxReconnects) => {
            let reason = match policy {
                Reconnects::AtMost(n) => format!("gave up after max-reconnects = {n} attempts"),
                _ => "gave up reconnecting".to_string(),
            };
            tracing::error!("NATS connection closed for good: {reason}");
            link_tx.send_replace(LinkState::Closed { reason });
        }
        E::ClientError(err) => tracing::warn!("NATS client error: {err}"),
        E::ServerError(err) => tracing::warn!("NATS server error: {err}"),
        E::SlowConsumer(_) => {
            // Counted here; the receiver sees the resulting sequence gap and reports the loss itself.
            let n = stats.slow_consumer_events.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(
                    total = n + 1,
                    "NATS dropped messages: the subscription channel (capacity.subscription) was full"
                );
            }
        }
        E::LameDuckMode => tracing::warn!("the NATS server is entering lame duck mode; will move to another server"),
        E::Draining => tracing::info!("NATS connection draining"),
        E::Closed => {
            link_tx.send_if_modified(|state| {
                if matches!(state, LinkState::Closed { .. }) {
                    return false;
                }
                *state = LinkState::Closed {
                    reason: "connection closed".into(),
                };
                true
            });
        }
    }
}
