//! agora: cluster coordination for mail and application servers, over NATS.
//!
//! The nodes of a cluster exchange typed [`Event`]s so that all of them stay in sync: a mailbox changed on node B wakes
//! the IMAP IDLE / JMAP push client connected to node A, an IP blocked for abuse on one node is blocked on all, a
//! renewed certificate is reloaded everywhere.
//!
//! # Delivery guarantees
//! - Every event published on a node is delivered to that node's subscribers once, and to every other live node's
//!   subscribers once, tagged with its origin node. A node never re-broadcasts what it received.
//! - Core NATS is at-most-once. agora does not hide that: every batch carries the sender's instance id and sequence
//!   numbers, so a receiver detects what it missed (a disconnection, a slow-consumer drop, a sender restart), counts it
//!   and tells its subscribers to resynchronise.
//! - A subscriber that falls behind is told how many events it missed; nothing is skipped silently.
//! - [`Coordinator::publish`] never blocks on the network: events go into a bounded queue, and a full queue makes the
//!   caller wait (or [`Coordinator::try_publish`] fail) instead of dropping.
//!
//! # Non-goals
//! agora is not a message store: without the durable mode, events published while a node is away are not replayed to
//! it; the node is told it missed them. The durable mode (`jetstream.enable = true`) stores events in a JetStream
//! stream and replays what a node missed, in order (docs/durable-mode.md).

#![warn(missing_docs)]

pub mod auth;
pub mod backoff;
pub mod clock;
pub mod codec;
pub mod config;
mod coordinator;
pub mod error;
pub mod event;
pub mod log_limit;
pub mod peers;
pub mod stalwart;
pub mod stats;
pub mod transport;

pub use coordinator::{
    Coordinator, Delivery, EventRef, Notification, Origin, ResyncReason, Role, StalwartSender, StalwartStats,
    StartOptions, StreamPosition, Subscription, Subscriptions, DEFAULT_QUEUE_CAPACITY, DEFAULT_SUBSCRIBER_CAPACITY,
};
pub use error::{
    ConnectError, ConnectErrorKind, HistoryError, PublishError, Report, RequestError, RequestErrorKind, StartError,
};
pub use event::{DataTypes, Event, NodeId};
pub use peers::{Member, NodeIdClash};
pub use transport::LinkState;
