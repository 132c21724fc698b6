//! The events of Stalwart's cluster bus, one catalogue covering 0.15 and 0.16.

use super::object_type::ObjectType;

/// One event of Stalwart's bus (`BroadcastEvent` in Stalwart), covering both catalogues, so that agora can carry any
/// of them and decide per configured release what may be sent. Field names follow Stalwart's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StalwartEvent {
    /// Objects of `types` (a DataType bitmap, bits 0..=22 known, not validated) changed in an account (tag 0, both).
    StateChange {
        /// The account.
        account_id: u32,
        /// The account's change id after the change.
        change_id: u64,
        /// The DataType bitmap.
        types: u64,
    },
    /// A calendar alert is due (tag 1, both).
    CalendarAlert {
        /// The account.
        account_id: u32,
        /// The calendar event's document id.
        event_id: u32,
        /// The recurrence. On the wire `None` and `Some(0)` are both 0, so `Some(0)` decodes as `None`.
        recurrence_id: Option<i64>,
        /// The event's iCalendar UID.
        uid: String,
        /// The alarm's id.
        alert_id: String,
    },
    /// A message was delivered to an account (tag 2, both).
    EmailPush {
        /// The account.
        account_id: u32,
        /// The message's document id.
        email_id: u32,
        /// The account's change id after the delivery.
        change_id: u64,
    },
    /// An account's push subscriptions changed (0.16, tag 3).
    PushServerUpdate {
        /// The account.
        account_id: u32,
    },
    /// A registry object was created (0.16, tag 4).
    RegistryInsert {
        /// Its type.
        object: ObjectType,
        /// Its id.
        id: u64,
    },
    /// A registry object was deleted (0.16, tag 5).
    RegistryDelete {
        /// Its type.
        object: ObjectType,
        /// Its id.
        id: u64,
    },
    /// All registry objects of a type must be reloaded (0.16, tag 6).
    RegistryReload {
        /// The type.
        object: ObjectType,
    },
    /// Cache entries to drop (0.16, tag 7).
    CacheInvalidate(Vec<CacheInvalidation>),
    /// Drop every cache (0.16, tag 8).
    CacheInvalidateAll,
    /// Drop the negative (not-found) caches (0.16, tag 9).
    CacheInvalidateNegative,
    /// The MTA queue was started or stopped (0.16, tag 10 for running, 11 for stopped).
    MtaQueueStatus {
        /// Whether the queue now runs.
        running: bool,
    },
    /// The MTA queue has new work (0.16.12 and later, tag 12).
    QueueRefresh,
    /// Access tokens of these accounts are stale (0.15, tag 3).
    InvalidateAccessTokens(Vec<u32>),
    /// Groupware (DAV) caches of these accounts are stale (0.15, tag 4).
    InvalidateGroupwareCache(Vec<u32>),
    /// Reload the settings (0.15, tag 5).
    ReloadSettings,
    /// Reload the blocked IPs (0.15, tag 6).
    ReloadBlockedIps,
    /// An account's push subscriptions changed (0.15, tag 7).
    ReloadPushServers {
        /// The account.
        account_id: u32,
    },
    /// Reload the spam filter (0.15, tag 8).
    ReloadSpamFilter,
}

impl StalwartEvent {
    /// Every kind name, in declaration order (which is also the order of the canonical kind codes), for metrics that
    /// must exist before the first event of a kind is seen.
    pub const KINDS: &'static [&'static str] = &[
        "StateChange",
        "CalendarAlert",
        "EmailPush",
        "PushServerUpdate",
        "RegistryInsert",
        "RegistryDelete",
        "RegistryReload",
        "CacheInvalidate",
        "CacheInvalidateAll",
        "CacheInvalidateNegative",
        "MtaQueueStatus",
        "QueueRefresh",
        "InvalidateAccessTokens",
        "InvalidateGroupwareCache",
        "ReloadSettings",
        "ReloadBlockedIps",
        "ReloadPushServers",
        "ReloadSpamFilter",
    ];

    /// The variant's name, as in [`Self::KINDS`]: a stable label for JSON and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StalwartEvent::StateChange { .. } => "StateChange",
            StalwartEvent::CalendarAlert { .. } => "CalendarAlert",
            StalwartEvent::EmailPush { .. } => "EmailPush",
            StalwartEvent::PushServerUpdate { .. } => "PushServerUpdate",
            StalwartEvent::RegistryInsert { .. } => "RegistryInsert",
            StalwartEvent::RegistryDelete { .. } => "RegistryDelete",
            StalwartEvent::RegistryReload { .. } => "RegistryReload",
            StalwartEvent::CacheInvalidate(_) => "CacheInvalidate",
            StalwartEvent::CacheInvalidateAll => "CacheInvalidateAll",
            StalwartEvent::CacheInvalidateNegative => "CacheInvalidateNegative",
            StalwartEvent::MtaQueueStatus { .. } => "MtaQueueStatus",
            StalwartEvent::QueueRefresh => "QueueRefresh",
            StalwartEvent::InvalidateAccessTokens(_) => "InvalidateAccessTokens",
            StalwartEvent::InvalidateGroupwareCache(_) => "InvalidateGroupwareCache",
            StalwartEvent::ReloadSettings => "ReloadSettings",
            StalwartEvent::ReloadBlockedIps => "ReloadBlockedIps",
            StalwartEvent::ReloadPushServers { .. } => "ReloadPushServers",
            StalwartEvent::ReloadSpamFilter => "ReloadSpamFilter",
        }
    }
}

/// One cache entry to drop, in a [`StalwartEvent::CacheInvalidate`] (Stalwart 0.16's `CacheInvalidation`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheInvalidation {
    /// An account's access token (marker 0).
    AccessToken(u32),
    /// An account's DAV resources (marker 1).
    DavResources(u32),
    /// A domain (marker 2).
    Domain(u32),
    /// An account (marker 3).
    Account(u32),
    /// A DKIM signature (marker 4).
    DkimSignature(u32),
    /// A tenant (marker 5).
    Tenant(u32),
    /// A role (marker 6).
    Role(u32),
    /// A mailing list (marker 7).
    List(u32),
    /// A domain's logo (marker 8).
    DomainLogo(u32),
    /// A tenant's logo (marker 9).
    TenantLogo(u32),
    /// A cached "no such address" for a local part of a domain (marker 10, from 0.16.10).
    EmailNegative {
        /// The domain.
        domain_id: u32,
        /// The hash of the local part.
        local_part_hash: u32,
    },
    /// The cached "no such domain" entries (marker 11, from 0.16.18; carries a u32 written as 0).
    DomainNegative,
}

impl CacheInvalidation {
    /// Every kind name, in marker order, for metrics.
    pub const KINDS: &'static [&'static str] = &[
        "AccessToken",
        "DavResources",
        "Domain",
        "Account",
        "DkimSignature",
        "Tenant",
        "Role",
        "List",
        "DomainLogo",
        "TenantLogo",
        "EmailNegative",
        "DomainNegative",
    ];

    /// The variant's name, as in [`Self::KINDS`]: a stable label for JSON, metrics and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            CacheInvalidation::AccessToken(_) => "AccessToken",
            CacheInvalidation::DavResources(_) => "DavResources",
            CacheInvalidation::Domain(_) => "Domain",
            CacheInvalidation::Account(_) => "Account",
            CacheInvalidation::DkimSignature(_) => "DkimSignature",
            CacheInvalidation::Tenant(_) => "Tenant",
            CacheInvalidation::Role(_) => "Role",
            CacheInvalidation::List(_) => "List",
            CacheInvalidation::DomainLogo(_) => "DomainLogo",
            CacheInvalidation::TenantLogo(_) => "TenantLogo",
            CacheInvalidation::EmailNegative { .. } => "EmailNegative",
            CacheInvalidation::DomainNegative => "DomainNegative",
        }
    }
}
