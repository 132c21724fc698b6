//! Record tags. A tag names the body layout of a record and is never renumbered or reused: nodes of different versions
//! share a cluster during a rolling upgrade. 0 is invalid; 64..=127 are reserved for control records.

pub(crate) const STATE_CHANGE: u16 = 1;
pub(crate) const EMAIL_PUSH: u16 = 2;
pub(crate) const CALENDAR_ALERT: u16 = 3;
pub(crate) const PUSH_SUBSCRIPTION_SET: u16 = 4;
pub(crate) const PUSH_SUBSCRIPTION_REMOVED: u16 = 5;
pub(crate) const BLOCKED_IP: u16 = 6;
pub(crate) const UNBLOCKED_IP: u16 = 7;
pub(crate) const RELOAD: u16 = 8;
pub(crate) const CERTIFICATE_RENEWED: u16 = 9;
pub(crate) const CACHE_INVALIDATE: u16 = 10;
pub(crate) const CACHE_INVALIDATE_ALL: u16 = 11;
pub(crate) const QUEUE_PAUSED: u16 = 12;
pub(crate) const QUEUE_RESUMED: u16 = 13;
pub(crate) const QUEUE_REFRESH: u16 = 14;
pub(crate) const CUSTOM: u16 = 15;
/// A Stalwart event, in the canonical encoding of `stalwart::encode_canonical` (kind code, then Stalwart's fields).
pub(crate) const STALWART: u16 = 16;
/// End clients' tokens revoked (`[http.clients]`): accounts, jti, when, and until when it is kept.
pub(crate) const TOKENS_REVOKED: u16 = 17;

pub(crate) const HEARTBEAT: u16 = 64;
pub(crate) const LEAVE: u16 = 65;
