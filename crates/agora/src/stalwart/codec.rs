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

use super::error::{DecodeError, DecodeErrorKind, EncodeError, Unsupported};
use super::event::{CacheInvalidation, StalwartEvent};
use super::leb128::{self, Reader};
use super::object_type::ObjectType;
use super::version::StalwartVersion;

/// The subject every Stalwart node publishes and subscribes on (hard-coded in Stalwart, in both 0.15 and 0.16).
pub const DEFAULT_SUBJECT: &str = "stwt.agora";

/// The most events Stalwart puts in one message; [`encode_batch`] refuses more.
pub const MAX_BATCH_EVENTS: usize = 100;

/// The first release that decodes the `EmailNegative` cache marker (10).
const EMAIL_NEGATIVE_SINCE: StalwartVersion = StalwartVersion::v0_16(10);
/// The first release that decodes the `QueueRefresh` event (tag 12).
const QUEUE_REFRESH_SINCE: StalwartVersion = StalwartVersion::v0_16(12);
/// The first release that decodes the `DomainNegative` cache marker (11).
const DOMAIN_NEGATIVE_SINCE: StalwartVersion = StalwartVersion::v0_16(18);

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

/// The tag `version` writes for `event`, or why that release cannot decode it. The single source of the tag tables
/// and of the version gates, so that encoding and [`StalwartEvent::check_supported`] cannot disagree.
pub(crate) fn batch_tag(event: &StalwartEvent, version: StalwartVersion) -> Result<u8, Unsupported> {
    use StalwartEvent as E;
    let kind = event.kind();
    let tag = match event {
        E::StateChange { .. } => 0,
        E::CalendarAlert { .. } => 1,
        E::EmailPush { .. } => 2,
        _ if version.is_0_15() => match event {
            E::InvalidateAccessTokens(_) => 3,
            E::InvalidateGroupwareCache(_) => 4,
            E::ReloadSettings => 5,
            E::ReloadBlockedIps => 6,
            E::ReloadPushServers { .. } => 7,
            E::ReloadSpamFilter => 8,
            _ => return Err(Unsupported::Only0_16 { event: kind, version }),
        },
        E::PushServerUpdate { .. } => 3,
        E::RegistryInsert { .. } => 4,
        E::RegistryDelete { .. } => 5,
        E::RegistryReload { .. } => 6,
        E::CacheInvalidate(_) => 7,
        E::CacheInvalidateAll => 8,
        E::CacheInvalidateNegative => 9,
        E::MtaQueueStatus { running: true } => 10,
        E::MtaQueueStatus { running: false } => 11,
        E::QueueRefresh => 12,
        _ => return Err(Unsupported::Only0_15 { event: kind, version }),
    };
    match event {
        E::QueueRefresh if !version.has_queue_refresh() => Err(Unsupported::EventTooNew {
            event: kind,
            since: QUEUE_REFRESH_SINCE,
            version,
        }),
        E::RegistryInsert { object, .. } | E::RegistryDelete { object, .. } | E::RegistryReload { object }
            if !object.is_known() =>
        {
            Err(Unsupported::UnknownObjectType {
                event: kind,
                object: object.0,
                version,
            })
        }
        E::CacheInvalidate(items) => {
            for item in items {
                let since = match item {
                    CacheInvalidation::EmailNegative { .. } if !version.has_email_negative() => EMAIL_NEGATIVE_SINCE,
                    CacheInvalidation::DomainNegative if !version.has_domain_negative() => DOMAIN_NEGATIVE_SINCE,
                    _ => continue,
                };
                return Err(Unsupported::MarkerTooNew {
                    marker: item.kind(),
                    since,
                    version,
                });
            }
            Ok(tag)
        }
        _ => Ok(tag),
    }
}

/// agora's canonical kind code for `event` (the table in the module documentation; never renumbered).
fn canonical_code(event: &StalwartEvent) -> u8 {
    use StalwartEvent as E;
    match event {
        E::StateChange { .. } => 0,
        E::CalendarAlert { .. } => 1,
        E::EmailPush { .. } => 2,
        E::PushServerUpdate { .. } => 3,
        E::RegistryInsert { .. } => 4,
        E::RegistryDelete { .. } => 5,
        E::RegistryReload { .. } => 6,
        E::CacheInvalidate(_) => 7,
        E::CacheInvalidateAll => 8,
        E::CacheInvalidateNegative => 9,
        E::MtaQueueStatus { .. } => 10,
        E::QueueRefresh => 11,
        E::InvalidateAccessTokens(_) => 12,
        E::InvalidateGroupwareCache(_) => 13,
        E::ReloadSettings => 14,
        E::ReloadBlockedIps => 15,
        E::ReloadPushServers { .. } => 16,
        E::ReloadSpamFilter => 17,
    }
}

/// The reader for a tag of `version`'s catalogue, or `None` for a tag that release does not have (it fails there).
fn batch_reader(version: StalwartVersion, tag: u8) -> Option<ReadFn> {
    use StalwartEvent as E;
    let read: ReadFn = match (version.is_0_15(), tag) {
        (_, 0) => read_state_change,
        (_, 1) => read_calendar_alert,
        (_, 2) => read_email_push,
        (false, 3) => read_push_server_update,
        (false, 4) => read_registry_insert,
        (false, 5) => read_registry_delete,
        (false, 6) => read_registry_reload,
        (false, 7) => read_cache_invalidate,
        (false, 8) => |_, _| Ok(E::CacheInvalidateAll),
        (false, 9) => |_, _| Ok(E::CacheInvalidateNegative),
        (false, 10) => |_, _| Ok(E::MtaQueueStatus { running: true }),
        (false, 11) => |_, _| Ok(E::MtaQueueStatus { running: false }),
        (false, 12) if version.has_queue_refresh() => |_, _| Ok(E::QueueRefresh),
        (true, 3) => read_invalidate_access_tokens,
        (true, 4) => read_invalidate_groupware_cache,
        (true, 5) => |_, _| Ok(E::ReloadSettings),
        (true, 6) => |_, _| Ok(E::ReloadBlockedIps),
        (true, 7) => read_reload_push_servers,
        (true, 8) => |_, _| Ok(E::ReloadSpamFilter),
        _ => return None,
    };
    Some(read)
}

/// The reader for a canonical kind code, or `None` for a code agora does not define.
fn canonical_reader(code: u8) -> Option<ReadFn> {
    use StalwartEvent as E;
    let read: ReadFn = match code {
        0 => read_state_change,
        1 => read_calendar_alert,
        2 => read_email_push,
        3 => read_push_server_update,
        4 => read_registry_insert,
        5 => read_registry_delete,
        6 => read_registry_reload,
        7 => read_cache_invalidate,
        8 => |_, _| Ok(E::CacheInvalidateAll),
        9 => |_, _| Ok(E::CacheInvalidateNegative),
        10 => read_running_flag,
        11 => |_, _| Ok(E::QueueRefresh),
        12 => read_invalidate_access_tokens,
        13 => read_invalidate_groupware_cache,
        14 => |_, _| Ok(E::ReloadSettings),
        15 => |_, _| Ok(E::ReloadBlockedIps),
        16 => read_reload_push_servers,
        17 => |_, _| Ok(E::ReloadSpamFilter),
        _ => return None,
    };
    Some(read)
}

/// Writes an event's fields in Stalwart's order (the same for both catalogues and the canonical encoding).
fn write_fields(event: &StalwartEvent, out: &mut Vec<u8>) {
    use StalwartEvent as E;
    match event {
        E::StateChange {
            account_id,
            change_id,
            types,
        } => {
            leb128::write(out, *change_id);
            leb128::write(out, *types);
            leb128::write(out, u64::from(*account_id));
        }
        E::CalendarAlert {
            account_id,
            event_id,
            recurrence_id,
            uid,
            alert_id,
        } => {
            leb128::write(out, u64::from(*account_id));
            leb128::write(out, u64::from(*event_id));
            // Stalwart: `recurrence_id.unwrap_or_default() as u64`, two's complement for a negative id.
            leb128::write(out, recurrence_id.unwrap_or_default() as u64);
            leb128::write_str(out, uid);
            leb128::write_str(out, alert_id);
        }
        E::EmailPush {
            account_id,
            email_id,
            change_id,
        } => {
            leb128::write(out, u64::from(*account_id));
            leb128::write(out, u64::from(*email_id));
            leb128::write(out, *change_id);
        }
        E::PushServerUpdate { account_id } | E::ReloadPushServers { account_id } => {
            leb128::write(out, u64::from(*account_id));
        }
        E::RegistryInsert { object, id } | E::RegistryDelete { object, id } => {
            leb128::write(out, u64::from(object.0));
            leb128::write(out, *id);
        }
        E::RegistryReload { object } => leb128::write(out, u64::from(object.0)),
        E::CacheInvalidate(items) => {
            leb128::write(out, items.len() as u64);
            for item in items {
                write_cache_item(item, out);
            }
        }
        E::InvalidateAccessTokens(ids) | E::InvalidateGroupwareCache(ids) => {
            leb128::write(out, ids.len() as u64);
            for id in ids {
                leb128::write(out, u64::from(*id));
            }
        }
        E::CacheInvalidateAll
        | E::CacheInvalidateNegative
        | E::MtaQueueStatus { .. }
        | E::QueueRefresh
        | E::ReloadSettings
        | E::ReloadBlockedIps
        | E::ReloadSpamFilter => {}
    }
}

/// Writes one cache invalidation: its marker byte, then its fields.
fn write_cache_item(item: &CacheInvalidation, out: &mut Vec<u8>) {
    use CacheInvalidation as C;
    let (marker, id) = match item {
        C::AccessToken(id) => (0, *id),
        C::DavResources(id) => (1, *id),
        C::Domain(id) => (2, *id),
        C::Account(id) => (3, *id),
        C::DkimSignature(id) => (4, *id),
        C::Tenant(id) => (5, *id),
        C::Role(id) => (6, *id),
        C::List(id) => (7, *id),
        C::DomainLogo(id) => (8, *id),
        C::TenantLogo(id) => (9, *id),
        C::EmailNegative {
            domain_id,
            local_part_hash,
        } => {
            out.push(10);
            leb128::write(out, u64::from(*domain_id));
            leb128::write(out, u64::from(*local_part_hash));
            return;
        }
        // Stalwart writes a u32 0 after the marker.
        C::DomainNegative => (11, 0),
    };
    out.push(marker);
    leb128::write(out, u64::from(id));
}

/// Tag 0 (both): change id, DataType bitmap, account id.
fn read_state_change(r: &mut Reader<'_>, _: Rules) -> Result<StalwartEvent, DecodeError> {
    let change_id = r.u64("change id")?;
    let types = r.u64("DataType bitmap")?;
    let account_id = r.u32("account id")?;
    Ok(StalwartEvent::StateChange {
        account_id,
        change_id,
        types,
    })
}

/// Tag 1 (both): account id, event id, recurrence id (`as i64`, 0 = none), uid, alert id.
fn read_calendar_alert(r: &mut Reader<'_>, _: Rules) -> Result<StalwartEvent, DecodeError> {
    let account_id = r.u32("account id")?;
    let event_id = r.u32("event id")?;
    let recurrence = r.u64("recurrence id")? as i64;
    let uid = r.string("uid")?;
    let alert_id = r.string("alert id")?;
    Ok(StalwartEvent::CalendarAlert {
        account_id,
        event_id,
        recurrence_id: (recurrence != 0).then_some(recurrence),
        uid,
        alert_id,
    })
}

/// Tag 2 (both): account id, email id, change id.
fn read_email_push(r: &mut Reader<'_>, _: Rules) -> Result<StalwartEvent, DecodeError> {
    let account_id = r.u32("account id")?;
    let email_id = r.u32("email id")?;
    let change_id = r.u64("change id")?;
    Ok(StalwartEvent::EmailPush {
        account_id,
        email_id,
        change_id,
    })
}

/// Tag 3 (0.16): account id.
fn read_push_server_update(r: &mut Reader<'_>, _: Rules) -> Result<StalwartEvent, DecodeError> {
    let account_id = r.u32("account id")?;
    Ok(StalwartEvent::PushServerUpdate { account_id })
}

/// Tag 7 (0.15): account id.
fn read_reload_push_servers(r: &mut Reader<'_>, _: Rules) -> Result<StalwartEvent, DecodeError> {
    let account_id = r.u32("account id")?;
    Ok(StalwartEvent::ReloadPushServers { account_id })
}

/// An object type id, refused when Stalwart would not know it and `rules` say so.
fn read_object_type(r: &mut Reader<'_>, rules: Rules) -> Result<ObjectType, DecodeError> {
    let at = r.offset();
    let object = ObjectType(r.u16("object type")?);
    if rules.known_objects_only && !object.is_known() {
        return Err(DecodeError {
            offset: at,
            kind: DecodeErrorKind::ObjectTypeOutOfRange(object.0),
        });
    }
    Ok(object)
}

/// An object type and an object id, the `ObjectId` of a registry insert or delete.
fn read_object_id(r: &mut Reader<'_>, rules: Rules) -> Result<(ObjectType, u64), DecodeError> {
    let object = read_object_type(r, rules)?;
    let id = r.u64("object id")?;
    Ok((object, id))
}

/// Tag 4 (0.16): object type, id.
fn read_registry_insert(r: &mut Reader<'_>, rules: Rules) -> Result<StalwartEvent, DecodeError> {
    read_object_id(r, rules).map(|(object, id)| StalwartEvent::RegistryInsert { object, id })
}

/// Tag 5 (0.16): object type, id.
fn read_registry_delete(r: &mut Reader<'_>, rules: Rules) -> Result<StalwartEvent, DecodeError> {
    read_object_id(r, rules).map(|(object, id)| StalwartEvent::RegistryDelete { object, id })
}

/// Tag 6 (0.16): object type.
fn read_registry_reload(r: &mut Reader<'_>, rules: Rules) -> Result<StalwartEvent, DecodeError> {
    let object = read_object_type(r, rules)?;
    Ok(StalwartEvent::RegistryReload { object })
}

/// Tag 7 (0.16): a count, then per item a marker byte and its fields (each item at least 2 bytes).
fn read_cache_invalidate(r: &mut Reader<'_>, rules: Rules) -> Result<StalwartEvent, DecodeError> {
    let count = r.count("cache invalidation count", 2)?;
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        items.push(read_cache_item(r, rules)?);
    }
    Ok(StalwartEvent::CacheInvalidate(items))
}

/// One cache invalidation, refused when its marker is not one of the release's.
fn read_cache_item(r: &mut Reader<'_>, rules: Rules) -> Result<CacheInvalidation, DecodeError> {
    use CacheInvalidation as C;
    const ID: &str = "cache invalidation id";
    let at = r.offset();
    let marker = r.byte("cache marker")?;
    Ok(match marker {
        0 => C::AccessToken(r.u32(ID)?),
        1 => C::DavResources(r.u32(ID)?),
        2 => C::Domain(r.u32(ID)?),
        3 => C::Account(r.u32(ID)?),
        4 => C::DkimSignature(r.u32(ID)?),
        5 => C::Tenant(r.u32(ID)?),
        6 => C::Role(r.u32(ID)?),
        7 => C::List(r.u32(ID)?),
        8 => C::DomainLogo(r.u32(ID)?),
        9 => C::TenantLogo(r.u32(ID)?),
        10 if rules.email_negative => C::EmailNegative {
            domain_id: r.u32("domain id")?,
            local_part_hash: r.u32("local part hash")?,
        },
        11 if rules.domain_negative => {
            // Written as 0 by Stalwart, read and discarded.
            r.u32(ID)?;
            C::DomainNegative
        }
        _ => {
            return Err(DecodeError {
                offset: at,
                kind: DecodeErrorKind::UnknownMarker(marker),
            })
        }
    })
}

/// A count then that many u32 account ids (each at least 1 byte).
fn read_account_ids(r: &mut Reader<'_>) -> Result<Vec<u32>, DecodeError> {
    let count = r.count("account id count", 1)?;
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push(r.u32("account id")?);
    }
    Ok(ids)
}

/// Tag 3 (0.15): account ids.
fn read_invalidate_access_tokens(r: &mut Reader<'_>, _: Rules) -> Result<StalwartEvent, DecodeError> {
    read_account_ids(r).map(StalwartEvent::InvalidateAccessTokens)
}

/// Tag 4 (0.15): account ids.
fn read_invalidate_groupware_cache(r: &mut Reader<'_>, _: Rules) -> Result<StalwartEvent, DecodeError> {
    read_account_ids(r).map(StalwartEvent::InvalidateGroupwareCache)
}

/// Canonical code 10: the `MtaQueueStatus` running flag, one byte 0 or 1.
fn read_running_flag(r: &mut Reader<'_>, _: Rules) -> Result<StalwartEvent, DecodeError> {
    let at = r.offset();
    let running = match r.byte("running flag")? {
        0 => false,
        1 => true,
        other => {
            return Err(DecodeError {
                offset: at,
                kind: DecodeErrorKind::InvalidBool(other),
            })
        }
    };
    Ok(StalwartEvent::MtaQueueStatus { running })
}

#[cfg(test)]
mod tests;
