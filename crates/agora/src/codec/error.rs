//! Decoding errors: whole-batch errors ([`DecodeError`]) and per-record errors ([`RecordError`]), kept apart because a
//! bad record only costs that record while a bad header costs the batch.

/// Why a whole batch was rejected: its header cannot be trusted, so none of its records are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message is shorter than the 32-byte header (plus the 32-byte MAC trailer when its flag is set).
    #[error("batch too short: {len} bytes, less than its header (and MAC trailer, if flagged)")]
    TooShort {
        /// The message length in bytes, to tell an empty message from a cut one.
        len: usize,
    },
    /// The sender speaks another wire format version; during an upgrade, the older node cannot read it.
    #[error("unsupported wire format version {0} (this node reads version 1); upgrade this node")]
    UnsupportedVersion(u8),
    /// The header sets flag bits this build does not know, so it cannot tell how to read the batch.
    #[error("unsupported batch flags {0:#04x} (this node knows only 0x01, the MAC trailer)")]
    UnsupportedFlags(u8),
    /// The header names node 0, which no node can have: the sender is misconfigured or the message is garbage.
    #[error("invalid node id 0 in batch header")]
    InvalidNodeId,
}

/// What was wrong with one record; the other records of the batch are still delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordErrorKind {
    /// The tag is not known to this build: usually a record type added by a newer node.
    #[error("unknown record tag (sent by a newer node?)")]
    UnknownTag,
    /// A field holds an enum code this build does not know (e.g. a new reload target); names the field.
    #[error("unknown {0} value (sent by a newer node?)")]
    UnknownValue(&'static str),
    /// The body is malformed: too short for its fields, invalid UTF-8, a value out of range; names the field.
    #[error("corrupt record: invalid or truncated {0}")]
    Corrupt(&'static str),
    /// The message ends before this record does (or before it starts, when the header counts more records than are
    /// present); nothing after it can be read.
    #[error("batch truncated: the message ends inside or before this record")]
    Truncated,
}

/// A record that could not be decoded, with enough context to count it and report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("record seq {seq} (tag {tag}): {kind}")]
pub struct RecordError {
    /// The record's sequence number: it was received, so it is not a gap, but it is lost.
    pub seq: u64,
    /// The record's tag, or 0 if it could not be read (or does not fit 16 bits).
    pub tag: u16,
    /// What was wrong.
    pub kind: RecordErrorKind,
}
