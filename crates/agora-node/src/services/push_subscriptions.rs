//! The write path of push subscriptions: the rules a registration must pass (a URL the delivery may reach, room in
//! the account, RFC 8291 keys, a date), its replication (published, then applied here before the caller hears
//! back), the RFC 8620 verification round trip, and the reads. The HTTP handlers only parse a request and call one
//! method here.
//!
//! A subscription with a `device_client_id` is a JMAP PushSubscription (a device or browser behind a push
//! service): this node, the one that created it, sends its `PushVerification` at once, and nothing else is sent
//! until a `PATCH` brings the code back (to any node: the code is replicated state). One without is the
//! application's own webhook: pushed at once, as before.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agora::event::PushSubscription;
use agora::{Coordinator, DataTypes, Event};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer};

use super::error::{ErrorKind, ServiceError};
use super::local_writes::{LocalWrites, WriteError};
use super::lww::PageIndex;
use super::metrics::{NodeMetrics, PushResult};
use super::push_delivery::guard::UrlRefused;
use super::push_delivery::{PushDelivery, PushPolicy};
use super::state::{NodeState, MAX_DEVICE_CLIENT_ID, MAX_PUSH_ID, MAX_PUSH_URL};
use super::web_push::keys::{KeyError, UserAgentKeys};

/// The keys a client sends (RFC 8620 section 7.2 `keys`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeys {
    /// The user agent's P-256 public key, base64url.
    pub p256dh: String,
    /// The authentication secret, base64url.
    pub auth: String,
}

/// A new subscription, as a caller sends it (the id is chosen here).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// The account whose changes are pushed.
    pub account_id: u32,
    /// Where they are pushed: an absolute http(s) URL.
    #[schema(examples("https://push.example/abc"))]
    pub url: String,
    /// The data types pushed (absent, null or empty: all).
    #[serde(default, deserialize_with = "types_or_null")]
    #[schema(value_type = Option<DataTypes>)]
    pub types: DataTypes,
    /// RFC 8620 `deviceClientId`: makes it a JMAP PushSubscription, verified before use.
    #[serde(default)]
    pub device_client_id: Option<String>,
    /// RFC 8291 keys: pushes are encrypted for them.
    #[serde(default)]
    pub keys: Option<NewKeys>,
    /// RFC 3339 UTC date after which nothing is pushed (clamped to `[push] max-expiry`).
    #[serde(default)]
    #[schema(examples("2026-12-10T00:00:00Z"))]
    pub expires: Option<String>,
}

/// A change to a subscription (`PATCH`): the verification code, and/or new `types` or `expires`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionPatch {
    /// The code the `PushVerification` carried.
    #[serde(default)]
    pub verification_code: Option<String>,
    /// New data types (null: all).
    #[serde(default, deserialize_with = "some_types_or_null")]
    pub types: Option<DataTypes>,
    /// A new expiry (clamped to `[push] max-expiry`).
    #[serde(default)]
    pub expires: Option<String>,
}

/// `types`: a list of names, or null for all.
fn types_or_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DataTypes, D::Error> {
    Ok(Option::<DataTypes>::deserialize(deserializer)?.unwrap_or_default())
}

/// `types` in a patch: present (a list, or null for all) or absent (unchanged).
fn some_types_or_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DataTypes>, D::Error> {
    types_or_null(deserializer).map(Some)
}

/// Why a subscription was refused or not found.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// The URL is longer than a subscription may hold.
    #[error("url too long: {0} bytes, at most {MAX_PUSH_URL}")]
    UrlTooLong(usize),
    /// The id of a subscription published as an event is empty or too long.
    #[error("push subscription id of {0} bytes: 1 to {MAX_PUSH_ID} are allowed")]
    BadId(usize),
    /// The URL does not parse.
    #[error("invalid url: {0}; an absolute http:// or https:// URL is required")]
    InvalidUrl(String),
    /// The URL is not an absolute http(s) URL with a host.
    #[error("invalid url: an absolute http:// or https:// URL is required")]
    NotHttp,
    /// The URL's host is an address pushes may not reach (`[push] allow-networks`).
    #[error("push URL refused: {0}")]
    Refused(UrlRefused),
    /// `keys` are not usable RFC 8291 keys.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// `device_client_id` is empty or too long.
    #[error("device_client_id of {0} bytes: 1 to {MAX_DEVICE_CLIENT_ID} are allowed")]
    DeviceClientId(usize),
    /// `expires` is not an RFC 3339 UTC date, or is in the past.
    #[error("expires: {0}")]
    Expires(&'static str),
    /// A verification code for a subscription that has none (a webhook).
    #[error("push subscription {0:?} is a webhook (no device_client_id): it has nothing to verify")]
    NothingToVerify(String),
    /// The verification code does not match.
    #[error("verification_code does not match the one sent to push subscription {0:?}")]
    WrongCode(String),
    /// The account is at `[push] max-subscriptions-per-account`.
    #[error(
        "account {account_id} already has {max} push subscriptions, the most [push] max-subscriptions-per-account \
         allows; remove one first (DELETE /v1/push-subscriptions/{{id}})"
    )]
    AccountFull {
        /// The account.
        account_id: u32,
        /// The limit.
        max: usize,
    },
    /// A subscription with RFC 8620 fields published as an event instead of through the API.
    #[error(
        "a PushSubscriptionSet event carries webhooks only (id, account_id, url, types); subscriptions with \
         device_client_id, keys, expires or verification are created with POST /v1/push-subscriptions"
    )]
    NotAWebhook,
    /// No subscription with this id was known here (a removal is broadcast all the same).
    #[error("no push subscription {0:?}")]
    NotFound(String),
    /// The event was not published or not applied here in time.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl ServiceError for SubscriptionError {
    fn kind(&self) -> ErrorKind {
        match self {
            SubscriptionError::UrlTooLong(_)
            | SubscriptionError::BadId(_)
            | SubscriptionError::InvalidUrl(_)
            | SubscriptionError::NotHttp
            | SubscriptionError::Refused(_)
            | SubscriptionError::Keys(_)
            | SubscriptionError::DeviceClientId(_)
            | SubscriptionError::Expires(_)
            | SubscriptionError::NothingToVerify(_)
            | SubscriptionError::NotAWebhook => ErrorKind::Invalid,
            SubscriptionError::WrongCode(_) => ErrorKind::Forbidden,
            SubscriptionError::AccountFull { .. } => ErrorKind::Conflict,
            SubscriptionError::NotFound(_) => ErrorKind::NotFound,
            SubscriptionError::Write(e) => e.kind(),
        }
    }
}

/// The replicated push subscriptions as callers use them. Cheap to clone.
#[derive(Clone)]
pub struct PushSubscriptions {
    coordinator: Coordinator,
    state: Arc<NodeState>,
    local_writes: Arc<LocalWrites>,
    policy: Arc<PushPolicy>,
    delivery: PushDelivery,
    metrics: Arc<NodeMetrics>,
    /// The sorted ids, shared by every reader of the list while the subscription set is unchanged.
    list_index: Arc<PageIndex<String>>,
}

impl PushSubscriptions {
    /// The subscriptions over this node's replicated state, checked against `policy` (`[push]`); verifications go
    /// out through `delivery`.
    pub fn new(
        coordinator: Coordinator,
        state: Arc<NodeState>,
        local_writes: Arc<LocalWrites>,
        policy: Arc<PushPolicy>,
        delivery: PushDelivery,
        metrics: Arc<NodeMetrics>,
    ) -> Self {
        PushSubscriptions {
            coordinator,
            state,
            local_writes,
            policy,
            delivery,
            metrics,
            list_index: Arc::default(),
        }
    }

    /// `[push]` as this node applies it (the VAPID key for `GET /v1/push/vapid`).
    pub fn policy(&self) -> &PushPolicy {
        &self.policy
    }

    /// Publishes a new subscription and returns it once this node applied it, so that a list right after
    /// includes it; a JMAP subscription's `PushVerification` is then queued, from this node only.
    ///
    /// Refused up front: URLs that are not absolute http(s) URLs, hosts that are internal addresses (IP literals
    /// after WHATWG parsing, `localhost`) unless `[push] allow-networks` allows them, accounts already at
    /// `[push] max-subscriptions-per-account`, keys that are not a P-256 point and a 16-byte secret, and dates that
    /// are not RFC 3339 UTC or are past. The delivery checks the address again when it connects (DNS can change).
    pub async fn create(&self, new: NewSubscription) -> Result<PushSubscription, SubscriptionError> {
        self.check(new.account_id, &new.url, None)?;
        if let Some(device) = &new.device_client_id {
            if device.is_empty() || device.len() > MAX_DEVICE_CLIENT_ID {
                return Err(SubscriptionError::DeviceClientId(device.len()));
            }
        }
        let keys = match &new.keys {
            Some(keys) => Some(UserAgentKeys::parse(&keys.p256dh, &keys.auth)?.to_event_keys()),
            None => None,
        };
        let jmap = new.device_client_id.is_some();
        let expires_at_ms = match new.expires.as_deref() {
            Some(text) => Some(self.clamped_expiry(text)?),
            // A JMAP subscription always expires (RFC 8620 lets the server choose); a webhook lives until removed.
            None if jmap => Some(self.max_expiry_ms()),
            None => None,
        };
        let subscription = PushSubscription {
            device_client_id: new.device_client_id,
            keys,
            expires_at_ms,
            // 128 random bits: what a client must prove it received at the URL.
            verification_code: jmap.then(|| URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())),
            verified: false,
            ..PushSubscription::webhook(
                format!("{:016x}", rand::random::<u64>()),
                new.account_id,
                new.url,
                new.types,
            )
        };
        self.local_writes
            .publish(
                &self.coordinator,
                Event::PushSubscriptionSet(Box::new(subscription.clone())),
            )
            .await?;
        if jmap {
            self.delivery.verify(&subscription);
        }
        Ok(subscription)
    }

    /// Applies a `PATCH`: the verification code (403 when wrong), new `types`, a new `expires`. Published, then
    /// returned once applied here.
    pub async fn update(&self, id: &str, patch: SubscriptionPatch) -> Result<PushSubscription, SubscriptionError> {
        let mut subscription = self
            .state
            .push()
            .get(id)
            .map(|stored| stored.subscription.clone())
            .ok_or_else(|| SubscriptionError::NotFound(id.to_string()))?;
        if let Some(code) = &patch.verification_code {
            let Some(expected) = &subscription.verification_code else {
                return Err(SubscriptionError::NothingToVerify(id.to_string()));
            };
            if !same_code(code, expected) {
                return Err(SubscriptionError::WrongCode(id.to_string()));
            }
            if !subscription.verified {
                self.metrics.count_push(PushResult::Verified);
            }
            subscription.verified = true;
        }
        if let Some(types) = patch.types {
            subscription.types = types;
        }
        if let Some(text) = patch.expires.as_deref() {
            subscription.expires_at_ms = Some(self.clamped_expiry(text)?);
        }
        self.local_writes
            .publish(
                &self.coordinator,
                Event::PushSubscriptionSet(Box::new(subscription.clone())),
            )
            .await?;
        Ok(subscription)
    }

    /// Publishes the removal of `id`. Broadcast even when unknown here (this node may have missed the
    /// subscription that others hold), then reported as not found.
    pub async fn remove(&self, id: &str) -> Result<(), SubscriptionError> {
        let known = self.state.push().get(id).is_some();
        self.local_writes
            .publish(&self.coordinator, Event::PushSubscriptionRemoved { id: id.to_string() })
            .await?;
        if !known {
            return Err(SubscriptionError::NotFound(id.to_string()));
        }
        Ok(())
    }

    /// One page of the list, in id order: at most `max` subscriptions after id `after`, and the cursor for the next
    /// page (`None` once the list is done), so that a reader holds one page at a time.
    pub fn page(&self, after: Option<&String>, max: usize) -> (Vec<PushSubscription>, Option<String>) {
        let registry = self.state.push();
        let page: Vec<PushSubscription> = registry
            .subscriptions_after(&self.list_index, after, max)
            .into_iter()
            .map(|stored| stored.subscription.clone())
            .collect();
        let next = page.last().map(|s| s.id.clone());
        (page, next)
    }

    /// The registration checks: an absolute http(s) URL whose host is not an internal address (unless allowed),
    /// and room in the account (a subscription replacing `replacing` does not count itself).
    pub fn check(&self, account_id: u32, url: &str, replacing: Option<&str>) -> Result<(), SubscriptionError> {
        if url.len() > MAX_PUSH_URL {
            return Err(SubscriptionError::UrlTooLong(url.len()));
        }
        if let Some(id) = replacing.filter(|id| id.is_empty() || id.len() > MAX_PUSH_ID) {
            return Err(SubscriptionError::BadId(id.len()));
        }
        let url = reqwest::Url::parse(url).map_err(|e| SubscriptionError::InvalidUrl(e.to_string()))?;
        match self.policy.guard.check_url(&url) {
            Ok(()) => {}
            Err(UrlRefused::Scheme | UrlRefused::NoHost) => return Err(SubscriptionError::NotHttp),
            Err(refused) => return Err(SubscriptionError::Refused(refused)),
        }
        let max = self.policy.max_per_account;
        let registry = self.state.push();
        let replaced_here = replacing.is_some_and(|id| {
            registry
                .get(id)
                .is_some_and(|s| s.subscription.account_id == account_id)
        });
        let existing = registry.account_count(account_id) - usize::from(replaced_here);
        if existing >= max {
            return Err(SubscriptionError::AccountFull { account_id, max });
        }
        Ok(())
    }

    /// Now + `[push] max-expiry`, in Unix ms.
    fn max_expiry_ms(&self) -> u64 {
        unix_ms(SystemTime::now() + self.policy.max_expiry)
    }

    /// An RFC 3339 UTC date (`2026-12-10T00:00:00Z`), not past, clamped to now + `[push] max-expiry`.
    fn clamped_expiry(&self, text: &str) -> Result<u64, SubscriptionError> {
        let at = parse_utc_date(text)?;
        if at <= SystemTime::now() {
            return Err(SubscriptionError::Expires("in the past"));
        }
        Ok(unix_ms(at).min(self.max_expiry_ms()))
    }
}

/// RFC 8620's `UTCDate`: RFC 3339 with `Z`.
fn parse_utc_date(text: &str) -> Result<SystemTime, SubscriptionError> {
    if text.len() > 64 || !text.ends_with('Z') {
        return Err(SubscriptionError::Expires(
            "not an RFC 3339 UTC date such as \"2026-12-10T00:00:00Z\"",
        ));
    }
    humantime::parse_rfc3339(text)
        .map_err(|_| SubscriptionError::Expires("not an RFC 3339 UTC date such as \"2026-12-10T00:00:00Z\""))
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An expiry as the API shows it: RFC 3339 UTC, to the second.
pub fn format_expiry(at_ms: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms)).to_string()
}

/// Compares two codes in time independent of where they differ (a code is a secret a caller is guessing).
fn same_code(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_must_be_utc_rfc_3339() {
        assert!(parse_utc_date("2026-12-10T00:00:00Z").is_ok());
        assert!(parse_utc_date("2026-12-10T00:00:00.5Z").is_ok());
        for bad in [
            "2026-12-10",
            "2026-12-10T00:00:00+01:00",
            "tomorrow",
            "2026-13-10T00:00:00Z",
        ] {
            let err = parse_utc_date(bad).expect_err(bad).to_string();
            assert!(err.starts_with("expires: not an RFC 3339 UTC date"), "{bad}: {err}");
        }
        assert_eq!(format_expiry(1_800_000_000_000), "2027-01-15T08:00:00Z");
    }

    #[test]
    fn codes_compare_whole() {
        assert!(same_code("abc", "abc"));
        assert!(!same_code("abd", "abc"));
        assert!(!same_code("ab", "abc"));
        assert!(!same_code("", "abc"));
    }
}
