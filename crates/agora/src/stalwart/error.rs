//! Why a Stalwart bus message could not be decoded or encoded, with enough detail to log and to count.

use super::version::StalwartVersion;

/// A decode failure: what went wrong and at which byte of the input (counted from the start of the message, node id
/// included, or of the canonical encoding), so an operator can find it in a capture.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} (at byte {offset})")]
pub struct DecodeError {
    /// The offset of the field that could not be read (the length field, for a length or count that is too large).
    pub offset: usize,
    /// What was wrong with it.
    pub kind: DecodeErrorKind,
}

/// What was wrong with the bytes. Open to additions, so that a stricter check can be added without breaking callers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ends inside `field`.
    #[error("the message ends inside the {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// A LEB128 longer than its type allows (3 bytes for a u16, 5 for a u32, 10 for a u64): Stalwart fails too.
    #[error("the {field} is a LEB128 longer than its type allows")]
    Overlong {
        /// The field being read.
        field: &'static str,
    },
    /// A LEB128 with bits beyond its type. Stalwart silently drops them (and so reads another value than was meant);
    /// agora refuses the value instead.
    #[error("the {field} has bits beyond its type")]
    TooManyBits {
        /// The field being read.
        field: &'static str,
    },
    /// A string declares more bytes than the message has left: refused before anything is allocated (the message
    /// that crashes a Stalwart node).
    #[error("the {field} declares {declared} bytes but only {remaining} remain")]
    LengthBeyondInput {
        /// The length field.
        field: &'static str,
        /// The declared length.
        declared: u64,
        /// The bytes left after the length field.
        remaining: usize,
    },
    /// A vector declares more items than the message has bytes left for: refused before anything is allocated.
    #[error("the {field} declares {declared} items but only {remaining} bytes remain")]
    CountBeyondInput {
        /// The count field.
        field: &'static str,
        /// The declared count.
        declared: u64,
        /// The bytes left after the count field.
        remaining: usize,
    },
    /// A string that is not UTF-8 (Stalwart fails too).
    #[error("the {field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The string field.
        field: &'static str,
    },
    /// An event tag the configured Stalwart release does not have (including tags added by a later 0.16.x).
    #[error("event tag {0} is not an event of this Stalwart release")]
    UnknownTag(u8),
    /// A cache-invalidation marker the configured Stalwart release does not have.
    #[error("cache-invalidation marker {0} is not known to this Stalwart release")]
    UnknownMarker(u8),
    /// An object type id beyond the 117 that Stalwart 0.16.x knows (Stalwart fails too).
    #[error("object type id {0} is beyond the ids 0..=116 Stalwart knows")]
    ObjectTypeOutOfRange(u16),
    /// A kind code that agora's canonical encoding does not define.
    #[error("kind code {0} is not a Stalwart event kind of agora's canonical encoding")]
    UnknownKind(u8),
    /// A boolean byte of the canonical encoding that is neither 0 nor 1.
    #[error("byte {0} is not a boolean (0 or 1)")]
    InvalidBool(u8),
    /// Bytes left over after a canonical event, which is always exactly one event.
    #[error("{0} bytes follow the event")]
    TrailingBytes(usize),
}

/// Why an event cannot be sent to a given Stalwart release: the release would fail to decode it (and drop the rest of
/// the batch with it), or, across 0.15 and 0.16, silently misread it as another event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unsupported {
    /// A 0.15 event sent to a 0.16 release.
    #[error("{event} is a Stalwart 0.15-only event; Stalwart {version} does not have it")]
    Only0_15 {
        /// The event kind.
        event: &'static str,
        /// The configured release.
        version: StalwartVersion,
    },
    /// A 0.16 event sent to a 0.15 release.
    #[error("{event} is a Stalwart 0.16-only event; Stalwart {version} does not have it")]
    Only0_16 {
        /// The event kind.
        event: &'static str,
        /// The configured release.
        version: StalwartVersion,
    },
    /// An event added inside 0.16.x, sent to an older 0.16 release.
    #[error("{event} first appeared in Stalwart {since}; Stalwart {version} cannot decode it")]
    EventTooNew {
        /// The event kind.
        event: &'static str,
        /// The first release that decodes it.
        since: StalwartVersion,
        /// The configured release.
        version: StalwartVersion,
    },
    /// A cache-invalidation marker added inside 0.16.x, sent to an older 0.16 release.
    #[error("the {marker} cache marker first appeared in Stalwart {since}; Stalwart {version} cannot decode it")]
    MarkerTooNew {
        /// The cache-invalidation kind.
        marker: &'static str,
        /// The first release that decodes it.
        since: StalwartVersion,
        /// The configured release.
        version: StalwartVersion,
    },
    /// A registry event whose object type id Stalwart does not know.
    #[error("{event} carries object type id {object}, which Stalwart {version} does not know (it knows 0..=116)")]
    UnknownObjectType {
        /// The event kind.
        event: &'static str,
        /// The object type id.
        object: u16,
        /// The configured release.
        version: StalwartVersion,
    },
}

/// Why a batch was not encoded. Nothing is written in any of these cases.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// No events: Stalwart never sends an empty batch.
    #[error("a Stalwart batch needs at least one event")]
    Empty,
    /// More events than Stalwart puts in one message.
    #[error("{count} events exceed the {max} a Stalwart batch holds", max = super::MAX_BATCH_EVENTS)]
    TooManyEvents {
        /// The number of events given.
        count: usize,
    },
    /// An event the configured release cannot decode.
    #[error("event {index} of the batch: {source}")]
    Unsupported {
        /// Its index in the batch.
        index: usize,
        /// Why.
        #[source]
        source: Unsupported,
    },
}
