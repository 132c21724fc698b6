//! A sans-IO codec for Stalwart's cluster bus, byte for byte what each release writes and reads.
//!
//! A message on [`DEFAULT_SUBJECT`] is `LEB128(node_id: u16)` followed by events until the payload ends, each one raw
//! tag byte and its fields (unsigned LEB128 integers, length-prefixed UTF-8 strings). There is no version byte, and
//! the tags differ between 0.15 and 0.16 and grew inside 0.16.x, so both directions take the [`StalwartVersion`].
//!
//! Decoding is Stalwart's, made safe: lengths and counts are checked against the input before anything is allocated
//! (a declared length near 2^62 crashes a Stalwart node), and a LEB128 with bits beyond its type is an error instead
//! of being truncated. [`encode_canonical`] is a separate, version-independent encoding of one event, for carrying
//! Stalwart events inside agora's own wire format.
//!
//! # Canonical kind codes
//! [`encode_canonical`] writes one kind code byte, then the event's fields exactly as Stalwart encodes them (the
//! `MtaQueueStatus` flag, which Stalwart puts in the tag, is one byte 0/1 after the code). The codes are agora's,
//! never renumbered; new kinds get new codes:
//!
//! | code | kind | | code | kind |
//! |---|---|---|---|---|
//! | 0 | StateChange | | 9 | CacheInvalidateNegative |
//! | 1 | CalendarAlert | | 10 | MtaQueueStatus (+ running byte) |
//! | 2 | EmailPush | | 11 | QueueRefresh |
//! | 3 | PushServerUpdate | | 12 | InvalidateAccessTokens |
//! | 4 | RegistryInsert | | 13 | InvalidateGroupwareCache |
//! | 5 | RegistryDelete | | 14 | ReloadSettings |
//! | 6 | RegistryReload | | 15 | ReloadBlockedIps |
//! | 7 | CacheInvalidate | | 16 | ReloadPushServers |
//! | 8 | CacheInvalidateAll | | 17 | ReloadSpamFilter |
//!
//! Cache markers inside `CacheInvalidate` are Stalwart's (0..=11, all accepted); object type ids are any `u16` (a
//! later Stalwart may know more than 117), unlike [`decode_batch`], which rejects ids Stalwart does not know.

mod read;
mod tags;
mod write;

use self::tags::{batch_reader, batch_tag, canonical_code, canonical_reader};
use self::write::write_fields;
use super::error::{DecodeError, DecodeErrorKind, EncodeError};
use super::event::StalwartEvent;
use super::leb128::{self, Reader};
use super::version::StalwartVersion;

/// The subject every Stalwart node publishes and subscribes on (hard-coded in Stalwart, in both 0.15 and 0.16).
pub const DEFAULT_SUBJECT: &str = "stwt.agora";

/// The most events Stalwart puts in one message; [`encode_batch`] refuses more (defined in the parent module, which
/// the error type can name without depending on the codec).
pub use super::MAX_BATCH_EVENTS;

/// A decoded message: whose it is, the events read, and the error that stopped the reading, if any. Stalwart applies
/// each event as it decodes it and drops the rest of the batch at the first error, so the events before an error are
/// real and are kept; nothing after it is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedBatch {
    /// The sender's node id (the receiver drops its own).
    pub node_id: u16,
    /// The events decoded before the end of the message or the first error.
    pub events: Vec<StalwartEvent>,
    /// The error that ended the decoding early, or `None` when the whole message was read.
    pub error: Option<DecodeError>,
}

/// Encodes a batch exactly as `version`'s own serializer would: `LEB128(node_id)`, then each event's tag and fields.
///
/// Fails, writing nothing, for zero events (Stalwart never sends an empty batch), more than [`MAX_BATCH_EVENTS`],
/// or an event that `version` cannot decode (see [`StalwartEvent::check_supported`]): such an event would make the
/// receiver drop the rest of the batch, or be misread as another event.
pub fn encode_batch(version: StalwartVersion, node_id: u16, events: &[StalwartEvent]) -> Result<Vec<u8>, EncodeError> {
    if events.is_empty() {
        return Err(EncodeError::Empty);
    }
    if events.len() > MAX_BATCH_EVENTS {
        return Err(EncodeError::TooManyEvents { count: events.len() });
    }
    let mut out = Vec::with_capacity(3 + 12 * events.len());
    leb128::write(&mut out, u64::from(node_id));
    for (index, event) in events.iter().enumerate() {
        let tag = batch_tag(event, version).map_err(|source| EncodeError::Unsupported { index, source })?;
        out.push(tag);
        write_fields(event, &mut out);
    }
    Ok(out)
}

/// Decodes a message the way `version` reads it, but safely (see the module documentation).
///
/// `Err` only when not even the node id can be read; any later error is returned in [`DecodedBatch::error`] with the
/// events decoded before it. An empty batch (a node id alone) is valid, as Stalwart's decoder accepts it.
pub fn decode_batch(version: StalwartVersion, bytes: &[u8]) -> Result<DecodedBatch, DecodeError> {
    let mut reader = Reader::new(bytes);
    let node_id = reader.u16("node id")?;
    let rules = Rules::release(version);
    let mut events = Vec::new();
    while !reader.is_empty() {
        let at = reader.offset();
        let event = reader.byte("event tag").and_then(|tag| {
            let read = batch_reader(version, tag).ok_or(DecodeError {
                offset: at,
                kind: DecodeErrorKind::UnknownTag(tag),
            })?;
            read(&mut reader, rules)
        });
        match event {
            Ok(event) => events.push(event),
            Err(error) => {
                return Ok(DecodedBatch {
                    node_id,
                    events,
                    error: Some(error),
                })
            }
        }
    }
    Ok(DecodedBatch {
        node_id,
        events,
        error: None,
    })
}

/// Appends the canonical encoding of one event (see the module documentation for the kind codes): stable across
/// Stalwart releases, so agora's own wire format can carry any Stalwart event whatever release a node speaks.
pub fn encode_canonical(event: &StalwartEvent, out: &mut Vec<u8>) {
    out.push(canonical_code(event));
    write_fields(event, out);
    if let StalwartEvent::MtaQueueStatus { running } = event {
        out.push(u8::from(*running));
    }
}

/// Decodes exactly one canonically encoded event; bytes after it are an error.
pub fn decode_canonical(bytes: &[u8]) -> Result<StalwartEvent, DecodeError> {
    let (event, used) = decode_canonical_prefix(bytes)?;
    match bytes.len().saturating_sub(used) {
        0 => Ok(event),
        extra => Err(DecodeError {
            offset: used,
            kind: DecodeErrorKind::TrailingBytes(extra),
        }),
    }
}

/// Decodes one canonically encoded event at the start of `bytes` and says how many bytes it took, for a container
/// that does not length-prefix it.
pub fn decode_canonical_prefix(bytes: &[u8]) -> Result<(StalwartEvent, usize), DecodeError> {
    let mut reader = Reader::new(bytes);
    let code = reader.byte("kind code")?;
    let read = canonical_reader(code).ok_or(DecodeError {
        offset: 0,
        kind: DecodeErrorKind::UnknownKind(code),
    })?;
    let event = read(&mut reader, Rules::CANONICAL)?;
    Ok((event, reader.offset()))
}

/// What a decoder accepts beyond the tag table: the cache markers of the release and whether unknown object type
/// ids are refused.
#[derive(Clone, Copy, Debug)]
struct Rules {
    /// Marker 10 is known.
    email_negative: bool,
    /// Marker 11 is known.
    domain_negative: bool,
    /// Object type ids >= 117 are refused, as Stalwart does.
    known_objects_only: bool,
}

impl Rules {
    /// Everything, any object type id: the canonical encoding carries whatever agora may hold.
    const CANONICAL: Rules = Rules {
        email_negative: true,
        domain_negative: true,
        known_objects_only: false,
    };

    /// Exactly what `version` decodes.
    fn release(version: StalwartVersion) -> Self {
        Rules {
            email_negative: version.has_email_negative(),
            domain_negative: version.has_domain_negative(),
            known_objects_only: true,
        }
    }
}

/// Reads one event's fields after its tag or kind code.
type ReadFn = fn(&mut Reader<'_>, Rules) -> Result<StalwartEvent, DecodeError>;

#[cfg(test)]
mod tests;
