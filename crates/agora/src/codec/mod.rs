//! The binary wire format: one NATS message carries one batch of records from one sender.
//!
//! Designed for a cluster upgraded node by node: a version byte, the sender's identity and sequence numbers for gap
//! detection, and length-prefixed records so an unknown or corrupt record is skipped without losing the rest of the
//! batch. Byte-by-byte description: `docs/wire-format.md`. This module is sans-IO: bytes in, values out.

use crate::event::{Event, NodeId};

mod body;
mod decode;
mod encode;
mod error;
mod tags;
mod varint;

#[cfg(test)]
mod tests;

pub use decode::{decode_batch, BatchReader, DecodedRecord};
pub use encode::{encoded_len, BatchEncoder};
pub use error::{DecodeError, RecordError, RecordErrorKind};

/// The wire format version this build writes and reads.
pub const VERSION: u8 = 1;

/// Size of the batch header, so callers can budget a batch against the server's `max_payload`.
pub const HEADER_LEN: usize = 32;

/// Header flag: a MAC trailer of [`MAC_LEN`] bytes follows the records (authenticated mode).
pub const FLAG_MAC: u8 = 0x01;

/// Size of the MAC trailer present when [`FLAG_MAC`] is set (the MAC is authentication's; see [`crate::auth`]).
pub use crate::auth::MAC_LEN;

/// Control records: membership traffic that the coordinator consumes itself and never hands to subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// "I am alive": sent every heartbeat interval.
    Heartbeat(Heartbeat),
    /// "I am leaving": sent once on clean shutdown.
    Leave,
}

/// The body of a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The sender's heartbeat interval, so receivers know when it is overdue.
    pub interval_ms: u32,
    /// When the sender process started (Unix ms).
    pub started_at_ms: u64,
    /// The sender's local HTTP API address, if it runs one.
    pub http: Option<String>,
    /// The node id the sender's batches carry on the Stalwart bus (`[stalwart] node-id`), so that other agora nodes
    /// recognise its forwarded copies there and skip them. Appended after `http`: older nodes ignore it, and a
    /// heartbeat without it (from an older node) decodes as `None`.
    pub stalwart_node_id: Option<u16>,
}

/// One record of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A cluster event for subscribers.
    Event(Event),
    /// Membership traffic.
    Control(Control),
}

/// The fixed header of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// The sender's node id.
    pub node_id: NodeId,
    /// Random per sender process: a restart shows up as a new instance.
    pub instance_id: u64,
    /// The sequence number of the first record; record `i` has `first_seq + i`.
    pub first_seq: u64,
    /// The origin time of the first record (Unix microseconds).
    pub base_time_us: u64,
    /// How many records the batch holds.
    pub count: u32,
}
