//! The JSON form of Stalwart events inside agora: `{"type":"stalwart","kind":"<Kind>", ...fields}`.
//!
//! Lossless both ways: every field is an exact integer (u64 ids above 2^53 included, as serde_json keeps them) or a
//! string, object types travel by name, and cache items by marker name. The kinds that have an agora counterpart
//! (`StateChange`, `EmailPush`, `CacheInvalidateAll`, `MtaQueueStatus`, `QueueRefresh`) are refused here: they are
//! the agora events `state_change`, `email_push`, `cache_invalidate_all`, `queue_paused` / `queue_resumed` and
//! `queue_refresh`.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{CacheInvalidation, ObjectType, StalwartEvent};

/// The JSON shape of every Stalwart-only kind, tagged by `kind`.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", deny_unknown_fields)]
enum Json {
    CalendarAlert {
        account_id: u32,
        event_id: u32,
        recurrence_id: Option<i64>,
        uid: String,
        alert_id: String,
    },
    PushServerUpdate {
        account_id: u32,
    },
    ReloadPushServers {
        account_id: u32,
    },
    RegistryInsert {
        object: ObjectName,
        id: u64,
    },
    RegistryDelete {
        object: ObjectName,
        id: u64,
    },
    RegistryReload {
        object: ObjectName,
    },
    CacheInvalidate {
        items: Vec<Item>,
    },
    CacheInvalidateNegative {},
    InvalidateAccessTokens {
        ids: Vec<u32>,
    },
    InvalidateGroupwareCache {
        ids: Vec<u32>,
    },
    ReloadSettings {},
    ReloadBlockedIps {},
    ReloadSpamFilter {},
    // The kinds with an agora counterpart: accepted only to say which agora type to use.
    StateChange {},
    EmailPush {},
    CacheInvalidateAll {},
    MtaQueueStatus {},
    QueueRefresh {},
}

/// One cache item, tagged by its marker name.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", deny_unknown_fields)]
enum Item {
    AccessToken { id: u32 },
    DavResources { id: u32 },
    Domain { id: u32 },
    Account { id: u32 },
    DkimSignature { id: u32 },
    Tenant { id: u32 },
    Role { id: u32 },
    List { id: u32 },
    DomainLogo { id: u32 },
    TenantLogo { id: u32 },
    EmailNegative { domain_id: u32, local_part_hash: u32 },
    DomainNegative {},
}

/// An ObjectType by its Stalwart name (`"BlockedIp"`); an id without a name is written as its number.
struct ObjectName(ObjectType);

impl Serialize for ObjectName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.name() {
            Some(name) => s.serialize_str(name),
            None => s.serialize_u16(self.0 .0),
        }
    }
}

impl<'de> Deserialize<'de> for ObjectName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// A name, or the number of a type this release has no name for (as serialised).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NameOrId {
            Id(u16),
            Name(String),
        }
        let name = match NameOrId::deserialize(d)? {
            NameOrId::Id(id) => return Ok(ObjectName(ObjectType(id))),
            NameOrId::Name(name) => name,
        };
        ObjectType::from_name(&name).map(ObjectName).ok_or_else(|| {
            D::Error::custom(format!(
                "unknown Stalwart object type {name:?}; e.g. \"BlockedIp\", \"Domain\", \"Account\" (the 117 names of \
                 Stalwart 0.16's ObjectType)"
            ))
        })
    }
}

/// The kinds [`Json`] accepts only to refuse them, naming the agora event to use instead: left out of the
/// documented schema.
#[cfg(feature = "openapi")]
const MAPPED_KINDS: [&str; 5] = [
    "StateChange",
    "EmailPush",
    "CacheInvalidateAll",
    "MtaQueueStatus",
    "QueueRefresh",
];

/// An object type: its name, or the number of a type without one.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ObjectName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let name = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ObjectType::NAMES));
        let number = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(u16::MAX));
        OneOfBuilder::new().item(name).item(number).into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ObjectName {}

/// `{"kind":"<Kind>", ...fields}`: the kinds a Stalwart event of agora can have (the type tag is the event's).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for StalwartEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::{RefOr, Schema};
        let mut schema = <Json as utoipa::PartialSchema>::schema();
        let kind_of = |item: &RefOr<Schema>| match item {
            RefOr::T(Schema::Object(object)) => match object.properties.get("kind") {
                Some(RefOr::T(Schema::Object(kind))) => kind.enum_values.as_ref().and_then(|v| v.first().cloned()),
                _ => None,
            },
            _ => None,
        };
        if let RefOr::T(Schema::OneOf(one_of)) = &mut schema {
            one_of
                .items
                .retain(|item| !kind_of(item).is_some_and(|kind| MAPPED_KINDS.iter().any(|m| kind == *m)));
        }
        schema
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for StalwartEvent {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)>) {
        <Json as utoipa::ToSchema>::schemas(schemas);
    }
}

impl From<&CacheInvalidation> for Item {
    fn from(item: &CacheInvalidation) -> Self {
        use CacheInvalidation as C;
        match *item {
            C::AccessToken(id) => Item::AccessToken { id },
            C::DavResources(id) => Item::DavResources { id },
            C::Domain(id) => Item::Domain { id },
            C::Account(id) => Item::Account { id },
            C::DkimSignature(id) => Item::DkimSignature { id },
            C::Tenant(id) => Item::Tenant { id },
            C::Role(id) => Item::Role { id },
            C::List(id) => Item::List { id },
            C::DomainLogo(id) => Item::DomainLogo { id },
            C::TenantLogo(id) => Item::TenantLogo { id },
            C::EmailNegative {
                domain_id,
                local_part_hash,
            } => Item::EmailNegative {
                domain_id,
                local_part_hash,
            },
            C::DomainNegative => Item::DomainNegative {},
        }
    }
}

impl From<Item> for CacheInvalidation {
    fn from(item: Item) -> Self {
        use CacheInvalidation as C;
        match item {
            Item::AccessToken { id } => C::AccessToken(id),
            Item::DavResources { id } => C::DavResources(id),
            Item::Domain { id } => C::Domain(id),
            Item::Account { id } => C::Account(id),
            Item::DkimSignature { id } => C::DkimSignature(id),
            Item::Tenant { id } => C::Tenant(id),
            Item::Role { id } => C::Role(id),
            Item::List { id } => C::List(id),
            Item::DomainLogo { id } => C::DomainLogo(id),
            Item::TenantLogo { id } => C::TenantLogo(id),
            Item::EmailNegative {
                domain_id,
                local_part_hash,
            } => C::EmailNegative {
                domain_id,
                local_part_hash,
            },
            Item::DomainNegative {} => C::DomainNegative,
        }
    }
}

impl Serialize for StalwartEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use StalwartEvent as E;
        let json = match self {
            E::CalendarAlert {
                account_id,
                event_id,
                recurrence_id,
                uid,
                alert_id,
            } => Json::CalendarAlert {
                account_id: *account_id,
                event_id: *event_id,
                recurrence_id: *recurrence_id,
                uid: uid.clone(),
                alert_id: alert_id.clone(),
            },
            E::PushServerUpdate { account_id } => Json::PushServerUpdate {
                account_id: *account_id,
            },
            E::ReloadPushServers { account_id } => Json::ReloadPushServers {
                account_id: *account_id,
            },
            E::RegistryInsert { object, id } => Json::RegistryInsert {
                object: ObjectName(*object),
                id: *id,
            },
            E::RegistryDelete { object, id } => Json::RegistryDelete {
                object: ObjectName(*object),
                id: *id,
            },
            E::RegistryReload { object } => Json::RegistryReload {
                object: ObjectName(*object),
            },
            E::CacheInvalidate(items) => Json::CacheInvalidate {
                items: items.iter().map(Item::from).collect(),
            },
            E::CacheInvalidateNegative => Json::CacheInvalidateNegative {},
            E::InvalidateAccessTokens(ids) => Json::InvalidateAccessTokens { ids: ids.clone() },
            E::InvalidateGroupwareCache(ids) => Json::InvalidateGroupwareCache { ids: ids.clone() },
            E::ReloadSettings => Json::ReloadSettings {},
            E::ReloadBlockedIps => Json::ReloadBlockedIps {},
            E::ReloadSpamFilter => Json::ReloadSpamFilter {},
            // Never inside an agora `stalwart` event (they map to agora events), but never panic either.
            E::StateChange { .. } => Json::StateChange {},
            E::EmailPush { .. } => Json::EmailPush {},
            E::CacheInvalidateAll => Json::CacheInvalidateAll {},
            E::MtaQueueStatus { .. } => Json::MtaQueueStatus {},
            E::QueueRefresh => Json::QueueRefresh {},
        };
        json.serialize(s)
    }
}

impl<'de> Deserialize<'de> for StalwartEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use StalwartEvent as E;
        let mapped = |kind: &str, agora: &str| {
            D::Error::custom(format!(
                "the Stalwart kind {kind} is the agora event type {agora:?}: send that instead"
            ))
        };
        Ok(match Json::deserialize(d)? {
            Json::CalendarAlert {
                account_id,
                event_id,
                recurrence_id,
                uid,
                alert_id,
            } => E::CalendarAlert {
                account_id,
                event_id,
                recurrence_id,
                uid,
                alert_id,
            },
            Json::PushServerUpdate { account_id } => E::PushServerUpdate { account_id },
            Json::ReloadPushServers { account_id } => E::ReloadPushServers { account_id },
            Json::RegistryInsert { object, id } => E::RegistryInsert { object: object.0, id },
            Json::RegistryDelete { object, id } => E::RegistryDelete { object: object.0, id },
            Json::RegistryReload { object } => E::RegistryReload { object: object.0 },
            Json::CacheInvalidate { items } => E::CacheInvalidate(items.into_iter().map(Into::into).collect()),
            Json::CacheInvalidateNegative {} => E::CacheInvalidateNegative,
            Json::InvalidateAccessTokens { ids } => E::InvalidateAccessTokens(ids),
            Json::InvalidateGroupwareCache { ids } => E::InvalidateGroupwareCache(ids),
            Json::ReloadSettings {} => E::ReloadSettings,
            Json::ReloadBlockedIps {} => E::ReloadBlockedIps,
            Json::ReloadSpamFilter {} => E::ReloadSpamFilter,
            Json::StateChange {} => return Err(mapped("StateChange", "state_change")),
            Json::EmailPush {} => return Err(mapped("EmailPush", "email_push")),
            Json::CacheInvalidateAll {} => return Err(mapped("CacheInvalidateAll", "cache_invalidate_all")),
            Json::MtaQueueStatus {} => return Err(mapped("MtaQueueStatus", "queue_paused or queue_resumed")),
            Json::QueueRefresh {} => return Err(mapped("QueueRefresh", "queue_refresh")),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::event::Event;

    fn round_trip(value: serde_json::Value) -> Event {
        let event: Event = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(serde_json::to_value(&event).expect("serialises"), value, "lossless");
        event
    }

    #[test]
    fn every_stalwart_only_kind_has_the_documented_json_and_round_trips() {
        for value in [
            json!({"type":"stalwart","kind":"CalendarAlert","account_id":1,"event_id":2,"recurrence_id":null,
                   "uid":"ü@example","alert_id":"a1"}),
            json!({"type":"stalwart","kind":"CalendarAlert","account_id":1,"event_id":2,"recurrence_id":-7,
                   "uid":"","alert_id":""}),
            json!({"type":"stalwart","kind":"PushServerUpdate","account_id":4294967295u32}),
            json!({"type":"stalwart","kind":"ReloadPushServers","account_id":0}),
            json!({"type":"stalwart","kind":"RegistryInsert","object":"BlockedIp","id":18446744073709551615u64}),
            json!({"type":"stalwart","kind":"RegistryDelete","object":"Account","id":9007199254740993u64}),
            json!({"type":"stalwart","kind":"RegistryReload","object":"WebHook"}),
            json!({"type":"stalwart","kind":"RegistryReload","object":200}),
            json!({"type":"stalwart","kind":"CacheInvalidate","items":[
                {"kind":"AccessToken","id":1},{"kind":"DavResources","id":2},{"kind":"Domain","id":3},
                {"kind":"Account","id":4},{"kind":"DkimSignature","id":5},{"kind":"Tenant","id":6},
                {"kind":"Role","id":7},{"kind":"List","id":8},{"kind":"DomainLogo","id":9},
                {"kind":"TenantLogo","id":10},{"kind":"EmailNegative","domain_id":11,"local_part_hash":12},
                {"kind":"DomainNegative"}]}),
            json!({"type":"stalwart","kind":"CacheInvalidateNegative"}),
            json!({"type":"stalwart","kind":"InvalidateAccessTokens","ids":[1, 4294967295u32]}),
            json!({"type":"stalwart","kind":"InvalidateGroupwareCache","ids":[]}),
            json!({"type":"stalwart","kind":"ReloadSettings"}),
            json!({"type":"stalwart","kind":"ReloadBlockedIps"}),
            json!({"type":"stalwart","kind":"ReloadSpamFilter"}),
        ] {
            assert_eq!(round_trip(value).type_name(), "stalwart");
        }
    }

    #[test]
    fn mapped_kinds_unknown_names_and_extra_fields_are_refused_with_a_reason() {
        for (value, expected) in [
            (json!({"type":"stalwart","kind":"QueueRefresh"}), "queue_refresh"),
            (json!({"type":"stalwart","kind":"StateChange"}), "state_change"),
            (
                json!({"type":"stalwart","kind":"RegistryReload","object":"Nope"}),
                "unknown Stalwart object type",
            ),
            (
                json!({"type":"stalwart","kind":"ReloadSettings","x":1}),
                "unknown field",
            ),
            (json!({"type":"stalwart","kind":"Bogus"}), "unknown variant"),
            (
                json!({"type":"stalwart","kind":"CacheInvalidate","items":[{"kind":"Account"}]}),
                "missing field",
            ),
        ] {
            let err = serde_json::from_value::<Event>(value.clone()).expect_err("refused");
            assert!(err.to_string().contains(expected), "{value}: {err}");
        }
    }
}
