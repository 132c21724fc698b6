//! JetStream, for the durable mode (`jetstream.enable = true`).
//!
//! Core NATS delivers a message to whoever subscribes at that moment and forgets it. In the durable mode the cluster
//! subject is captured by a JetStream stream: every batch is stored (the publisher waits for the server's ack) and
//! every node reads the stream through its own durable pull consumer, so a node that was disconnected, restarted or
//! slow gets what it missed. This module is the thin layer over async-nats: it creates or checks the stream, stores
//! one batch, creates or resumes a node's consumer, and reads single stored messages. Retries, ordering and
//! deduplication live in the coordinator (`coordinator::durable`).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{
    ConsumerInfoErrorKind, CreateStreamErrorKind, GetStreamErrorKind, PublishError, PublishErrorKind,
};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, DiscardPolicy, LastRawMessageErrorKind, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use bytes::Bytes;

use super::nats::NatsTransport;
use crate::config::{JetStreamConfig, JetStreamStorage};
use crate::error::{BoxError, StartError};

/// JetStream's default duplicate window; shortened to `max-age` when that is shorter (the server requires it).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long the server waits for a node's ack before redelivering. Redeliveries are skipped by the receiver; a
/// message lost in flight is fetched directly as soon as a later one reveals the hole, without waiting for this.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// Room left in a message for the `Nats-Msg-Id` header; a batch too large for it is stored without one (receivers
/// deduplicate by sender and sequence anyway).
pub(crate) const MSG_ID_ROOM: usize = 128;

/// Counters of the durable mode, beside [`crate::stats::Stats`]: what it took to keep delivery complete.
#[derive(Debug, Default)]
pub struct DurableStats {
    /// Batches stored in the stream (acknowledged by JetStream).
    pub batches_stored: AtomicU64,
    /// Store attempts that failed and were retried (server down, leader election, timeout).
    pub publish_retries: AtomicU64,
    /// Messages delivered again by JetStream (after a lost ack or a reconnect) and skipped: already dispatched.
    pub redeliveries_skipped: AtomicU64,
    /// Messages lost in flight to this node and fetched directly from the stream to keep the order.
    pub holes_filled: AtomicU64,
    /// Stored messages that were gone (older than `max-age`) when this node came to read them.
    pub expired: AtomicU64,
    /// This node's own messages from an earlier run, replayed by its consumer and skipped.
    pub own_replays_skipped: AtomicU64,
}

/// Why storing a batch failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// JetStream refused the batch or the publish failed (no stream, no leader yet, disconnected, too large).
    #[error("JetStream did not store the batch")]
    Publish(#[source] PublishError),
    /// No ack in time.
    #[error("no ack from JetStream within {0:?} (timeout.request)")]
    AckTimedOut(Duration),
}

impl StoreError {
    /// Retrying cannot help: the batch is larger than the server accepts.
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(self, StoreError::Publish(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded)
    }

    /// The stream is gone (e.g. a memory stream lost in a server restart) and must be re-created.
    pub(crate) fn is_stream_missing(&self) -> bool {
        matches!(self, StoreError::Publish(e) if e.kind() == PublishErrorKind::StreamNotFound)
    }
}

/// A JetStream API call failed; the async-nats error is the source.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub(crate) struct ApiError {
    /// What was being done, e.g. "cannot read the stream's state".
    what: &'static str,
    #[source]
    source: BoxError,
}

impl ApiError {
    /// A `map_err` adapter: `.map_err(ApiError::new("cannot ..."))`.
    pub(crate) fn new<E: Into<BoxError>>(what: &'static str) -> impl FnOnce(E) -> Self {
        move |source| ApiError {
            what,
            source: source.into(),
        }
    }
}

/// A JetStream context bound to the cluster's stream.
#[derive(Debug)]
pub(crate) struct JetStream {
    context: jetstream::Context,
    stream: stream::Stream,
    subject: String,
    config: JetStreamConfig,
    /// `store."<id>".jetstream`, for error messages.
    key: String,
    request_timeout: Duration,
    /// The stream's incarnation (see [`JetStream::incarnation`]).
    incarnation: AtomicU64,
}

impl JetStream {
    /// Creates the stream, or checks and updates an existing one, as `config` says. Fails with
    /// [`StartError::JetStream`] when the server has no JetStream or the stream conflicts with the configuration.
    pub(crate) async fn open(
        transport: &NatsTransport,
        store_key: &str,
        config: &JetStreamConfig,
        subject: &str,
    ) -> Result<Self, StartError> {
        let request_timeout = transport.request_timeout();
        let context = jetstream::ContextBuilder::new()
            .timeout(request_timeout)
            .ack_timeout(request_timeout)
            .build(transport.client().clone());
        let key = format!("{store_key}.jetstream");
        let wanted = stream_config(config, subject);
        let announced = transport.client().server_info().jetstream;
        let no_jetstream = |source: BoxError| StartError::JetStream {
            key: format!("{key}.enable"),
            detail: if announced {
                format!(
                    "JetStream at {} did not answer; a JetStream cluster may still be electing its leader, or the \
                     account has no JetStream: the durable mode cannot start without it",
                    transport.server()
                )
            } else {
                format!(
                    "the durable mode needs JetStream, but the NATS server at {} does not offer it; start \
                     nats-server with -js (and -sd <dir>) or a jetstream {{}} block, or set {key}.enable = false",
                    transport.server()
                )
            },
            source: Some(source),
        };
        let stream = match context.get_stream(&config.stream).await {
            Ok(mut stream) => {
                let info = stream.info().await.map_err(|e| no_jetstream(e.into()))?.clone();
                let have = &info.config;
                if !have.subjects.iter().any(|s| s == subject) {
                    return Err(StartError::JetStream {
                        key: format!("{key}.stream"),
                        detail: format!(
                            "stream {:?} exists with subjects {:?}, which do not include the cluster subject {subject:?}; \
                             choose another stream name or delete that stream",
                            config.stream, have.subjects
                        ),
                        source: None,
                    });
                }
                if have.storage != wanted.storage {
                    return Err(StartError::JetStream {
                        key: format!("{key}.storage"),
                        detail: format!(
                            "stream {:?} exists with {} storage but the configuration says {:?}; JetStream cannot \
                             change the storage of a stream: set {key}.storage = {:?} or delete the stream",
                            config.stream,
                            storage_name(have.storage),
                            config.storage.as_str(),
                            storage_name(have.storage),
                        ),
                        source: None,
                    });
                }
                if have.max_age != wanted.max_age || have.num_replicas != wanted.num_replicas {
                    let mut updated = have.clone();
                    updated.max_age = wanted.max_age;
                    updated.num_replicas = wanted.num_replicas;
                    if updated.duplicate_window > updated.max_age {
                        updated.duplicate_window = wanted.duplicate_window;
                    }
                    context
                        .update_stream(updated)
                        .await
                        .map_err(|e| StartError::JetStream {
                            key: format!("{key}.replicas"),
                            source: Some(e.into()),
                            detail: format!(
                            "stream {:?} exists with max-age {} and {} replica(s); updating it to max-age {} and {} \
                             replica(s) failed",
                            config.stream,
                            humantime::format_duration(have.max_age),
                            have.num_replicas,
                            humantime::format_duration(wanted.max_age),
                            wanted.num_replicas
                        ),
                        })?;
                    tracing::info!(
                        stream = %config.stream,
                        "updated the durable stream to max-age {} and {} replica(s)",
                        humantime::format_duration(wanted.max_age),
                        wanted.num_replicas
                    );
                }
                stream
            }
            Err(e) if stream_not_found(&e.kind()) => {
                context.create_stream(wanted).await.map_err(|e| match e.kind() {
                    CreateStreamErrorKind::JetStreamUnavailable | CreateStreamErrorKind::TimedOut => {
                        no_jetstream(e.into())
                    }
                    CreateStreamErrorKind::JetStream(err) if err.error_code() == ErrorCode::JETSTREAM_NOT_ENABLED => {
                        no_jetstream(e.into())
                    }
                    _ => StartError::JetStream {
                        key: key.clone(),
                        detail: format!("cannot create stream {:?} for {subject:?}", config.stream),
                        source: Some(e.into()),
                    },
                })?
            }
            Err(e) => return Err(no_jetstream(e.into())),
        };
        let incarnation = incarnation_of(stream.cached_info());
        Ok(JetStream {
            context,
            stream,
            subject: subject.to_string(),
            config: config.clone(),
            key,
            request_timeout,
            incarnation: AtomicU64::new(incarnation),
        })
    }

    /// The stream's incarnation: its creation time (Unix ns), the same on every node. A re-created stream (a memory
    /// stream lost in a server restart) numbers its messages from 1 again; the incarnation tells its sequence numbers
    /// from the earlier ones.
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stores one batch and waits for JetStream's ack (at most `timeout.request`). `msg_id` lets the stream drop a
    /// retry of a batch it already stored.
    pub(crate) async fn store(&self, batch: Bytes, msg_id: Option<&str>) -> Result<u64, StoreError> {
        let mut message = PublishMessage::build().payload(batch);
        if let Some(id) = msg_id {
            message = message.message_id(id);
        }
        let ack = self
            .context
            .send_publish(self.subject.clone(), message)
            .await
            .map_err(StoreError::Publish)?;
        match tokio::time::timeout(self.request_timeout, ack).await {
            Ok(Ok(ack)) => Ok(ack.sequence),
            Ok(Err(e)) => Err(StoreError::Publish(e)),
            Err(_) => Err(StoreError::AckTimedOut(self.request_timeout)),
        }
    }

    /// Re-creates the stream if it is gone (a memory stream after a server restart); best effort.
    pub(crate) async fn recreate_stream(&self) {
        let wanted = stream_config(&self.config, &self.subject);
        match self.context.get_or_create_stream(wanted).await {
            Ok(stream) => self.incarnation.store(
                incarnation_of(stream.cached_info()),
                std::sync::atomic::Ordering::Relaxed,
            ),
            Err(e) => tracing::debug!(
                "cannot re-create the durable stream {:?}: {}",
                self.config.stream,
                crate::error::Report(&e)
            ),
        }
    }

    /// Returns this node's durable consumer, creating it if needed, and the stream sequence it has consumed up to:
    /// the ack floor of a resumed consumer, or the stream's last sequence when it was just created (a new node
    /// starts with new events; state from before comes from the join snapshot).
    pub(crate) async fn node_consumer(&self, name: &str) -> Result<(PullConsumer, u64, bool), ApiError> {
        let stream = &self.stream;
        match stream.consumer_info(name).await {
            Ok(info) => {
                let floor = info.ack_floor.stream_sequence;
                let consumer = stream
                    .get_consumer::<pull::Config>(name)
                    .await
                    .map_err(ApiError::new("cannot open the consumer"))?;
                Ok((consumer, floor, false))
            }
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                let last = self.stream_bounds().await?.1;
                let consumer = stream
                    .create_consumer(pull::Config {
                        durable_name: Some(name.to_string()),
                        description: Some("agora node: durable mode".to_string()),
                        deliver_policy: DeliverPolicy::New,
                        ack_policy: AckPolicy::All,
                        ack_wait: ACK_WAIT,
                        max_deliver: -1,
                        // A node away for longer than the retention cannot catch up anyway.
                        inactive_threshold: self.config.max_age,
                        ..Default::default()
                    })
                    .await
                    .map_err(ApiError::new("cannot create the consumer"))?;
                Ok((consumer, last, true))
            }
            Err(e) => Err(ApiError::new("cannot read the consumer's state")(e)),
        }
    }

    /// The stream's first and last sequence numbers.
    /// Also refreshes [`JetStream::incarnation`].
    pub(crate) async fn stream_bounds(&self) -> Result<(u64, u64), ApiError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(ApiError::new("cannot read the stream's state"))?;
        self.incarnation
            .store(incarnation_of(&info), std::sync::atomic::Ordering::Relaxed);
        Ok((info.state.first_sequence, info.state.last_sequence))
    }

    /// The payload stored at `seq`: `Ok(None)` when it is gone (expired or deleted).
    pub(crate) async fn get(&self, seq: u64) -> Result<Option<Bytes>, ApiError> {
        match self.stream.get_raw_message(seq).await {
            Ok(message) => Ok(Some(message.payload)),
            Err(e) => match e.kind() {
                LastRawMessageErrorKind::NoMessageFound => Ok(None),
                LastRawMessageErrorKind::JetStream(err) if err.error_code() == ErrorCode::NO_MESSAGE_FOUND => Ok(None),
                _ => Err(ApiError::new("cannot read a stored message")(e)),
            },
        }
    }

    /// The messages stored from `start` on, in stream order, through an ordered consumer (ephemeral, no acks,
    /// re-created by the client after a gap); the caller stops reading where it wants.
    pub(crate) async fn read_from(&self, start: u64) -> Result<pull::Ordered, ApiError> {
        let consumer = self
            .stream
            .create_consumer(pull::OrderedConfig {
                description: Some("agora node: reading the stream's history".to_string()),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(ApiError::new("cannot create a reader of the stream"))?;
        consumer
            .messages()
            .await
            .map_err(ApiError::new("cannot read the stream"))
    }

    /// `store."<id>".jetstream`, for log lines.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The stream name.
    pub(crate) fn stream_name(&self) -> &str {
        &self.config.stream
    }
}

/// A stream's incarnation: its creation time in Unix nanoseconds (0 before 1970, which no server reports).
fn incarnation_of(info: &stream::Info) -> u64 {
    u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0)
}

/// Whether a stream lookup failed because the stream does not exist (as opposed to JetStream being unavailable).
fn stream_not_found(kind: &GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// The stream the configuration asks for.
fn stream_config(config: &JetStreamConfig, subject: &str) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        description: Some("agora cluster events (durable mode)".to_string()),
        subjects: vec![subject.to_string()],
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_age: config.max_age,
        storage: match config.storage {
            JetStreamStorage::File => StorageType::File,
            JetStreamStorage::Memory => StorageType::Memory,
        },
        num_replicas: usize::from(config.replicas),
        duplicate_window: DUPLICATE_WINDOW.min(config.max_age),
        ..Default::default()
    }
}

fn storage_name(storage: StorageType) -> &'static str {
    match storage {
        StorageType::File => "file",
        StorageType::Memory => "memory",
    }
}
