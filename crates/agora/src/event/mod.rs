//! The cluster event catalogue: what the nodes of a mail cluster tell each other.
//!
//! Every variant has a JSON form (internally tagged by `type`, snake_case), used by the node's HTTP API and the
//! `agora publish` / `agora watch` tools, and a binary form (see [`crate::codec`] and `docs/wire-format.md`).
//! Variants and data types are only ever added, never renumbered: a cluster is upgraded node by node.

use std::fmt;
use std::num::NonZeroU16;

use base64::Engine as _;
use bytes::Bytes;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[cfg(feature = "openapi")]
mod openapi;
pub mod stalwart_mapping;

/// A node's identity in the cluster, 1..=65535.
///
/// Zero is not a valid id, so "unset" can never be confused with a real node (Stalwart defaults to 1, and nodes that
/// leave it unset silently drop each other's events as their own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(NonZeroU16);

impl NodeId {
    /// The id `n`, or `None` for 0.
    pub fn new(n: u16) -> Option<Self> {
        NonZeroU16::new(n).map(NodeId)
    }

    /// A random id, for nodes whose configuration leaves `node-id` unset.
    pub fn random() -> Self {
        NodeId(rand::random::<NonZeroU16>())
    }

    /// The numeric id.
    pub fn get(self) -> u16 {
        self.0.get()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One event exchanged between the nodes of a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Event {
    /// Objects of `types` changed in an account: wakes IMAP IDLE, JMAP EventSource and push clients.
    StateChange {
        /// The account whose data changed.
        account_id: u32,
        /// The account's change id after the change; JMAP clients see it as the new state string.
        change_id: u64,
        /// The JMAP data types that changed.
        types: DataTypes,
    },
    /// A new email was delivered to an account (for Web Push style notifications).
    EmailPush {
        /// The account that received the email.
        account_id: u32,
        /// The delivered email.
        email_id: u32,
        /// The account's change id after delivery.
        change_id: u64,
    },
    /// A calendar alarm fired for an account.
    CalendarAlert {
        /// The account owning the calendar event.
        account_id: u32,
        /// The calendar event.
        event_id: u32,
        /// The alert within the event.
        alert_id: String,
        /// The recurrence instance (UTC timestamp, seconds) for recurring events.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recurrence_id: Option<i64>,
    },
    /// A push subscription was created or replaced; every node keeps the registry. Boxed: it is by far the largest
    /// variant, and every event would otherwise be as large as it.
    PushSubscriptionSet(Box<PushSubscription>),
    /// A push subscription was removed.
    PushSubscriptionRemoved {
        /// The removed subscription's id.
        id: String,
    },
    /// An address or network is blocked on every node.
    BlockedIp {
        /// The blocked network; a single address is a /32 or /128.
        #[serde(with = "network_serde")]
        #[cfg_attr(feature = "openapi", schema(value_type = String, example = "203.0.113.0/24"))]
        network: IpNet,
        /// When the block ends (Unix milliseconds); absent = until unblocked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at_ms: Option<u64>,
        /// Why it was blocked, for operators.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A block is lifted on every node.
    UnblockedIp {
        /// The network whose rule is removed.
        #[serde(with = "network_serde")]
        #[cfg_attr(feature = "openapi", schema(value_type = String, example = "203.0.113.0/24"))]
        network: IpNet,
    },
    /// Every node reloads something from its configuration or store.
    Reload {
        /// What to reload.
        target: ReloadTarget,
    },
    /// A TLS certificate was renewed (e.g. by ACME on one node); the others reload it.
    CertificateRenewed {
        /// The domains the certificate covers.
        domains: Vec<String>,
    },
    /// One cached entry is stale on every node.
    CacheInvalidate {
        /// Which cache.
        cache: CacheKind,
        /// The entry's key (an account id, a domain name, a token id...).
        key: String,
    },
    /// Every cache on every node is stale.
    CacheInvalidateAll {},
    /// The outgoing mail queue was paused cluster-wide.
    QueuePaused {},
    /// The outgoing mail queue was resumed cluster-wide.
    QueueResumed {},
    /// Messages were added to the outgoing queue; nodes should look at it now.
    QueueRefresh {},
    /// An application-defined event, so servers other than mail servers can use agora too.
    Custom {
        /// The application's name for the event.
        name: String,
        /// Opaque payload; base64 in JSON.
        #[serde(with = "base64_serde")]
        #[cfg_attr(feature = "openapi", schema(value_type = String, content_encoding = "base64"))]
        data: Bytes,
    },
    /// An event of a Stalwart cluster's bus that has no agora counterpart (a registry change, a cache
    /// invalidation...), carried as is: `{"type":"stalwart","kind":"<Kind>", ...fields}`. The Stalwart events that
    /// do have one arrive as that agora event (see [`stalwart_mapping`]).
    Stalwart(crate::stalwart::StalwartEvent),
    /// End clients' scoped tokens (`[http.clients]`) are revoked on every node: every token of one of `accounts`
    /// issued at or before `revoked_at_ms` (a token without `iat` counts as issued before), and the token whose
    /// `jti` is given. Every node holds it until `keep_until_ms`, when every token it covers has expired.
    TokensRevoked {
        /// Accounts whose tokens issued until `revoked_at_ms` are refused, and whose open streams close.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        accounts: Vec<u32>,
        /// The `jti` of one token refused from now on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jti: Option<String>,
        /// When the revocation was made (Unix milliseconds).
        revoked_at_ms: u64,
        /// When it may be forgotten (Unix milliseconds): the revocation time plus the longest token lifetime.
        keep_until_ms: u64,
    },
}

impl Event {
    /// The `type` string of the JSON form, also used as a metrics label and SSE event name.
    pub fn type_name(&self) -> &'static str {
        Self::TYPE_NAMES[self.type_index()]
    }

    /// The position of this event's type in [`Event::TYPE_NAMES`] (for per-type counters without hashing).
    pub fn type_index(&self) -> usize {
        match self {
            Event::StateChange { .. } => 0,
            Event::EmailPush { .. } => 1,
            Event::CalendarAlert { .. } => 2,
            Event::PushSubscriptionSet(_) => 3,
            Event::PushSubscriptionRemoved { .. } => 4,
            Event::BlockedIp { .. } => 5,
            Event::UnblockedIp { .. } => 6,
            Event::Reload { .. } => 7,
            Event::CertificateRenewed { .. } => 8,
            Event::CacheInvalidate { .. } => 9,
            Event::CacheInvalidateAll {} => 10,
            Event::QueuePaused {} => 11,
            Event::QueueResumed {} => 12,
            Event::QueueRefresh {} => 13,
            Event::Custom { .. } => 14,
            Event::Stalwart(_) => 15,
            Event::TokensRevoked { .. } => 16,
        }
    }

    /// Every `type` string, in catalogue order.
    pub const TYPE_NAMES: &'static [&'static str] = &[
        "state_change",
        "email_push",
        "calendar_alert",
        "push_subscription_set",
        "push_subscription_removed",
        "blocked_ip",
        "unblocked_ip",
        "reload",
        "certificate_renewed",
        "cache_invalidate",
        "cache_invalidate_all",
        "queue_paused",
        "queue_resumed",
        "queue_refresh",
        "custom",
        "stalwart",
        "tokens_revoked",
    ];
}

/// A JMAP push subscription (RFC 8620 section 7.2 flavour), replicated to every node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PushSubscription {
    /// Cluster-wide unique id.
    pub id: String,
    /// The account whose changes are pushed.
    pub account_id: u32,
    /// Where state changes are POSTed.
    pub url: String,
    /// The data types that trigger a push; empty = all.
    pub types: DataTypes,
    /// RFC 8620 `deviceClientId`: set for a JMAP PushSubscription (a device or browser behind a push service), which
    /// gets nothing but its verification until it is verified; absent for an application's own webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_client_id: Option<String>,
    /// RFC 8291 keys of the receiving user agent: with them every push body is encrypted (`aes128gcm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<PushKeys>,
    /// When the subscription expires (Unix milliseconds): never pushed after, then removed on every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// The code sent in the `PushVerification` (RFC 8620 section 7.2.2), which the client must send back. Cluster
    /// state, never shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_code: Option<String>,
    /// The client sent the verification code back: pushes may go to the URL.
    #[serde(default)]
    pub verified: bool,
}

impl PushSubscription {
    /// An application webhook (no device, no keys, no expiry): what subscriptions were before RFC 8620's fields.
    pub fn webhook(id: impl Into<String>, account_id: u32, url: impl Into<String>, types: DataTypes) -> Self {
        PushSubscription {
            id: id.into(),
            account_id,
            url: url.into(),
            types,
            device_client_id: None,
            keys: None,
            expires_at_ms: None,
            verification_code: None,
            verified: false,
        }
    }

    /// True when pushes other than the verification may be sent: a webhook, or a verified JMAP subscription.
    pub fn may_push(&self) -> bool {
        self.device_client_id.is_none() || self.verified
    }

    /// True once `now_ms` is at or past `expires_at_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| now_ms >= at)
    }
}

/// The receiving user agent's RFC 8291 keys, base64url without padding as the client sent them (checked by the node
/// that accepted the subscription).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PushKeys {
    /// The user agent's P-256 public key (65-byte uncompressed point).
    pub p256dh: String,
    /// The 16-byte authentication secret.
    pub auth: String,
}

/// What a [`Event::Reload`] asks every node to reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReloadTarget {
    /// The configuration settings.
    Settings,
    /// TLS certificates.
    TlsCertificates,
    /// The blocked-IP list from the store.
    BlockedIps,
    /// Spam filter rules.
    SpamFilter,
    /// Lookup stores (lists, maps).
    LookupStores,
}

impl ReloadTarget {
    /// Every target with its wire code; codes are never reused.
    pub const ALL: [(ReloadTarget, u8); 5] = [
        (ReloadTarget::Settings, 0),
        (ReloadTarget::TlsCertificates, 1),
        (ReloadTarget::BlockedIps, 2),
        (ReloadTarget::SpamFilter, 3),
        (ReloadTarget::LookupStores, 4),
    ];

    /// The wire code.
    pub fn code(self) -> u8 {
        Self::ALL.iter().find(|(t, _)| *t == self).map_or(0, |(_, c)| *c)
    }

    /// The target for a wire code, if known.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.iter().find(|(_, c)| *c == code).map(|(t, _)| *t)
    }
}

/// Which cache a [`Event::CacheInvalidate`] refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CacheKind {
    /// OAuth / API access tokens.
    AccessToken,
    /// Account data (permissions, quotas, names).
    Account,
    /// Domain data.
    Domain,
    /// DKIM signatures.
    DkimSignature,
    /// Tenants.
    Tenant,
    /// Roles.
    Role,
    /// Mailing lists.
    List,
    /// Negative caches (known-missing entries).
    Negative,
}

impl CacheKind {
    /// Every kind with its wire code; codes are never reused.
    pub const ALL: [(CacheKind, u8); 8] = [
        (CacheKind::AccessToken, 0),
        (CacheKind::Account, 1),
        (CacheKind::Domain, 2),
        (CacheKind::DkimSignature, 3),
        (CacheKind::Tenant, 4),
        (CacheKind::Role, 5),
        (CacheKind::List, 6),
        (CacheKind::Negative, 7),
    ];

    /// The wire code.
    pub fn code(self) -> u8 {
        Self::ALL.iter().find(|(k, _)| *k == self).map_or(0, |(_, c)| *c)
    }

    /// The kind for a wire code, if known.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.iter().find(|(_, c)| *c == code).map(|(k, _)| *k)
    }
}

/// A set of JMAP data types, stored as a bitmap whose bit positions are fixed forever (they are Stalwart's
/// `DataType` bits, so a bitmap crosses between the two buses unchanged).
///
/// Bits this version has no name for (set by a newer node or Stalwart release) are kept, and written in JSON as
/// `"bit<N>"` (accepted on input too), so a bitmap survives a round trip through JSON unchanged.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DataTypes(u64);

impl DataTypes {
    /// JMAP type names by bit position.
    pub const NAMES: &'static [&'static str] = &[
        "Email",
        "EmailDelivery",
        "EmailSubmission",
        "Mailbox",
        "Thread",
        "Identity",
        "Core",
        "PushSubscription",
        "SearchSnippet",
        "VacationResponse",
        "MDN",
        "Quota",
        "SieveScript",
        "Calendar",
        "CalendarEvent",
        "CalendarEventNotification",
        "AddressBook",
        "ContactCard",
        "FileNode",
        "Principal",
        "ShareNotification",
        "ParticipantIdentity",
        "CalendarAlert",
    ];

    /// The empty set.
    pub const EMPTY: DataTypes = DataTypes(0);

    /// The set with exactly these bits (unknown bits included).
    pub const fn from_bits(bits: u64) -> Self {
        DataTypes(bits)
    }

    /// The bitmap.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The set holding the type named `name` (case-sensitive, as in JMAP), or the bit `"bit<N>"` (`N` < 64).
    pub fn from_name(name: &str) -> Option<Self> {
        if let Some(i) = Self::NAMES.iter().position(|n| *n == name) {
            return Some(DataTypes(1 << i));
        }
        let n: u32 = name.strip_prefix("bit")?.parse().ok()?;
        // One canonical spelling per bit: no "bit07", no "+7", and named bits go by their name.
        (n < 64 && name == format!("bit{n}") && n as usize >= Self::NAMES.len()).then(|| DataTypes(1 << n))
    }

    /// Parses names; the error names the first unknown one.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut set = DataTypes::EMPTY;
        for name in names {
            match Self::from_name(name) {
                Some(t) => set = set.union(t),
                None => {
                    return Err(format!(
                        "unknown data type {name:?}; known types: {}, or \"bit<N>\" for another bit N < 64",
                        Self::NAMES.join(", ")
                    ))
                }
            }
        }
        Ok(set)
    }

    /// Both sets together.
    pub const fn union(self, other: DataTypes) -> Self {
        DataTypes(self.0 | other.0)
    }

    /// The types in both sets.
    pub const fn intersection(self, other: DataTypes) -> Self {
        DataTypes(self.0 & other.0)
    }

    /// True if no type is in the set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True if `other`'s types are all in this set.
    pub const fn contains(self, other: DataTypes) -> bool {
        self.0 & other.0 == other.0
    }

    /// The names of the known types in the set, in bit order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
    }

    /// Every set bit's name in bit order: the type names, then `"bit<N>"` for bits without one (the JSON form).
    pub fn all_names(self) -> impl Iterator<Item = std::borrow::Cow<'static, str>> {
        (0..64u32)
            .filter(move |i| self.0 & (1 << i) != 0)
            .map(|i| match Self::NAMES.get(i as usize) {
                Some(name) => std::borrow::Cow::Borrowed(*name),
                None => std::borrow::Cow::Owned(format!("bit{i}")),
            })
    }
}

impl fmt::Debug for DataTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        list.entries(self.names());
        let known = (1u64 << Self::NAMES.len()) - 1;
        if self.0 & !known != 0 {
            list.entry(&format_args!("unknown bits {:#x}", self.0 & !known));
        }
        list.finish()
    }
}

impl Serialize for DataTypes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.all_names())
    }
}

impl<'de> Deserialize<'de> for DataTypes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        DataTypes::from_names(names.iter().map(String::as_str)).map_err(serde::de::Error::custom)
    }
}

/// A network in JSON: `"203.0.113.0/24"`, or a bare address meaning the single host.
mod network_serde {
    use super::*;

    pub fn serialize<S: Serializer>(net: &IpNet, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(net)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        let text = String::deserialize(d)?;
        crate::event::parse_network(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses `"203.0.113.0/24"`, `"2001:db8::/32"` or a bare address (a /32 or /128). Host bits are cleared, so
/// `10.1.2.3/8` means `10.0.0.0/8`.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(addr) = text.parse::<std::net::IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    Err(format!(
        "invalid network {text:?}: expected an IPv4/IPv6 address or CIDR network such as 203.0.113.0/24"
    ))
}

/// Opaque bytes as standard base64 in JSON.
mod base64_serde {
    use super::*;

    pub fn serialize<S: Serializer>(data: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(|e| serde::de::Error::custom(format!("data is not valid base64: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_matches_the_documented_examples() {
        let event: Event = serde_json::from_str(
            r#"{"type":"state_change","account_id":42,"change_id":7,"types":["Email","Mailbox"]}"#,
        )
        .expect("documented example parses");
        assert_eq!(
            event,
            Event::StateChange {
                account_id: 42,
                change_id: 7,
                types: DataTypes::from_names(["Email", "Mailbox"]).expect("known types"),
            }
        );
        let blocked: Event = serde_json::from_str(
            r#"{"type":"blocked_ip","network":"203.0.113.0/24","expires_at_ms":1764150000000,"reason":"auth failures"}"#,
        )
        .expect("documented example parses");
        assert_eq!(blocked.type_name(), "blocked_ip");
        let back = serde_json::to_value(&blocked).expect("serializes");
        assert_eq!(back["network"], "203.0.113.0/24");
    }

    #[test]
    fn a_bare_address_is_a_host_network() {
        let net = parse_network("203.0.113.7").expect("address");
        assert_eq!(net.to_string(), "203.0.113.7/32");
        let v6 = parse_network("2001:db8::1").expect("address");
        assert_eq!(v6.prefix_len(), 128);
        assert_eq!(parse_network("10.1.2.3/8").expect("net").to_string(), "10.0.0.0/8");
        assert!(parse_network("10.0.0.300").is_err());
    }

    #[test]
    fn unknown_types_and_fields_are_rejected_with_their_name() {
        let err =
            serde_json::from_str::<Event>(r#"{"type":"state_change","account_id":1,"change_id":1,"types":["Emial"]}"#)
                .expect_err("unknown data type");
        assert!(err.to_string().contains("Emial"), "{err}");
        let err = serde_json::from_str::<Event>(r#"{"type":"exploded"}"#).expect_err("unknown event type");
        assert!(err.to_string().contains("exploded"), "{err}");
    }

    #[test]
    fn type_names_cover_every_variant() {
        for name in Event::TYPE_NAMES {
            assert!(
                serde_json::from_str::<Event>(&format!(r#"{{"type":"{name}"}}"#))
                    .map(|e| e.type_name() == *name)
                    .unwrap_or_else(|e| !e.to_string().contains("unknown variant")),
                "{name} is not a variant"
            );
        }
    }

    #[test]
    fn every_bitmap_survives_json_calendar_alert_is_bit_22_and_other_bits_are_named_by_number() {
        assert_eq!(
            DataTypes::from_name("CalendarAlert"),
            Some(DataTypes::from_bits(1 << 22))
        );
        let bits = DataTypes::from_bits(1 | (1 << 22) | (1 << 23) | (1 << 63));
        let json = serde_json::to_value(bits).expect("serialises");
        assert_eq!(json, serde_json::json!(["Email", "CalendarAlert", "bit23", "bit63"]));
        let back: DataTypes = serde_json::from_value(json).expect("parses");
        assert_eq!(back.bits(), bits.bits(), "lossless");
        for bad in ["bit64", "bit07", "bit0", "bit+30", "bit"] {
            assert!(DataTypes::from_name(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn events_without_fields_reject_unknown_fields_like_the_others() {
        for json in [
            r#"{"type":"queue_paused","bogus":1}"#,
            r#"{"type":"cache_invalidate_all","x":null}"#,
            r#"{"type":"queue_refresh","queue":"default"}"#,
        ] {
            let err = serde_json::from_str::<Event>(json).expect_err(json);
            assert!(err.to_string().contains("unknown field"), "{json}: {err}");
        }
        let paused: Event = serde_json::from_str(r#"{"type":"queue_paused"}"#).expect("valid");
        assert_eq!(paused, Event::QueuePaused {});
        assert_eq!(
            serde_json::to_string(&paused).expect("serialises"),
            r#"{"type":"queue_paused"}"#
        );
    }
}
