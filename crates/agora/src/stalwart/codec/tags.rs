//! The tag tables: which tag each release writes for an event (with the version gates that refuse what a release
//! cannot decode), agora's canonical kind codes, and the field reader behind each tag and code.

use super::read::*;
use super::ReadFn;
use crate::stalwart::error::Unsupported;
use crate::stalwart::event::{CacheInvalidation, StalwartEvent};
use crate::stalwart::version::StalwartVersion;

/// The first release that decodes the `EmailNegative` cache marker (10).
const EMAIL_NEGATIVE_SINCE: StalwartVersion = StalwartVersion::v0_16(10);
/// The first release that decodes the `QueueRefresh` event (tag 12).
const QUEUE_REFRESH_SINCE: StalwartVersion = StalwartVersion::v0_16(12);
/// The first release that decodes the `DomainNegative` cache marker (11).
const DOMAIN_NEGATIVE_SINCE: StalwartVersion = StalwartVersion::v0_16(18);

/// The support check lives with the tag table it reads, so that encoding and the check cannot disagree, and so that
/// the event type's module does not depend on the codec that depends on it.
impl StalwartEvent {
    /// Whether `version` can decode this event: its tag exists in that release, every cache marker inside it does,
    /// and every object type id is one Stalwart knows. If not, why, as a sentence naming the event or marker and the
    /// first release that has it (or that it belongs to the other catalogue). Sending it anyway would make that
    /// release drop the rest of the batch, or, across 0.15 and 0.16, misread it as another event.
    pub fn check_supported(&self, version: StalwartVersion) -> Result<(), Unsupported> {
        batch_tag(self, version).map(|_| ())
    }
}

/// The tag `version` writes for `event`, or why that release cannot decode it. The single source of the tag tables
/// and of the version gates, so that encoding and [`StalwartEvent::check_supported`] cannot disagree.
pub(super) fn batch_tag(event: &StalwartEvent, version: StalwartVersion) -> Result<u8, Unsupported> {
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
pub(super) fn canonical_code(event: &StalwartEvent) -> u8 {
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
pub(super) fn batch_reader(version: StalwartVersion, tag: u8) -> Option<ReadFn> {
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
pub(super) fn canonical_reader(code: u8) -> Option<ReadFn> {
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
