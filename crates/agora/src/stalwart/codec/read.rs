//! Reading an event's fields after its tag or kind code, safely: every length and count is checked against the input
//! before anything is allocated, and the [`Rules`] of the release refuse what it would not know.

use super::Rules;
use crate::stalwart::error::{DecodeError, DecodeErrorKind};
use crate::stalwart::event::{CacheInvalidation, StalwartEvent};
use crate::stalwart::leb128::Reader;
use crate::stalwart::object_type::ObjectType;

/// Tag 0 (both): change id, DataType bitmap, account id.
pub(super) fn read_state_change(r: &mut Reader<'_>, _: Rules) -> Result<StalwartEvent, DecodeError> {
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
pub(super) fn read_calendar_alert(r: &mut Reader<'_>, _: Rules) -> Result<StalwartEvent, DecodeError> {
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
pub(super) fn read_email_push(r: &mut Reader<'_>, _: Rules) -> Result<StalwartEvent, DecodeError> {
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
pub(super) fn read_push_server_update(r: &mut Reader<'_>, _: Rules) -> Result<StalwartEvent, DecodeError> {
    let account_id = r.u32("account id")?;
    Ok(StalwartEvent::PushServerUpdate { account_id })
}

/// Tag 7 (0.15): account id.
pub(super) fn read_reload_push_servers(r: &mut Reader<'_>, _: Rules) -> Result<StalwartEvent, DecodeError> {
    let account_id = r.u32("account id")?;
    Ok(StalwartEvent::ReloadPushServers { account_id })
}

/// An object type id, refused when Stalwart would not know it and `rules` say so.
pub(super) fn read_object_type(r: &mut Reader<'_>, rules: Rules) -> Result<ObjectType, DecodeError> {
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
pub(super) fn read_object_id(r: &mut Reader<'_>, rules: Rules) -> Result<(ObjectType, u64), DecodeError> {
    let object = read_object_type(r, rules)?;
    let id = r.u64("object id")?;
    Ok((object, id))
}

/// Tag 4 (0.16): object type, id.
pub(super) fn read_registry_insert(r: &mut Reader<'_>, rules: Rules) -> Result<StalwartEvent, DecodeError> {
    read_object_id(r, rules).map(|(object, id)| StalwartEvent::RegistryInsert { object, id })
}

/// Tag 5 (0.16): object type, id.
pub(super) fn read_registry_delete(r: &mut Reader<'_>, rules: Rules) -> Result<StalwartEvent, DecodeError> {
    read_object_id(r, rules).map(|(object, id)| StalwartEvent::RegistryDelete { object, id })
}

/// Tag 6 (0.16): object type.
pub(super) fn read_registry_reload(r: &mut Reader<'_>, rules: Rules) -> Result<StalwartEvent, DecodeError> {
    let object = read_object_type(r, rules)?;
    Ok(StalwartEvent::RegistryReload { object })
}

/// Tag 7 (0.16): a count, then per item a marker byte and its fields (each item at least 2 bytes).
pub(super) fn read_cache_invalidate(r: &mut Reader<'_>, rules: Rules) -> Result<StalwartEvent, DecodeError> {
    let count = r.count("cache invalidation count", 2)?;
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        items.push(read_cache_item(r, rules)?);
    }
    Ok(StalwartEvent::CacheInvalidate(items))
}

/// One cache invalidation, refused when its marker is not one of the release's.
pub(super) fn read_cache_item(r: &mut Reader<'_>, rules: Rules) -> Result<CacheInvalidation, DecodeError> {
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
pub(super) fn read_account_ids(r: &mut Reader<'_>) -> Result<Vec<u32>, DecodeError> {
    let count = r.count("account id count", 1)?;
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push(r.u32("account id")?);
    }
    Ok(ids)
}

/// Tag 3 (0.15): account ids.
pub(super) fn read_invalidate_access_tokens(r: &mut Reader<'_>, _: Rules) -> Result<StalwartEvent, DecodeError> {
    read_account_ids(r).map(StalwartEvent::InvalidateAccessTokens)
}

/// Tag 4 (0.15): account ids.
pub(super) fn read_invalidate_groupware_cache(r: &mut Reader<'_>, _: Rules) -> Result<StalwartEvent, DecodeError> {
    read_account_ids(r).map(StalwartEvent::InvalidateGroupwareCache)
}

/// Canonical code 10: the `MtaQueueStatus` running flag, one byte 0 or 1.
pub(super) fn read_running_flag(r: &mut Reader<'_>, _: Rules) -> Result<StalwartEvent, DecodeError> {
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
