//! Writing an event's fields, in Stalwart's order: the same for both catalogues and the canonical encoding.

use crate::stalwart::event::{CacheInvalidation, StalwartEvent};
use crate::stalwart::leb128;

/// Writes an event's fields in Stalwart's order (the same for both catalogues and the canonical encoding).
pub(super) fn write_fields(event: &StalwartEvent, out: &mut Vec<u8>) {
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
