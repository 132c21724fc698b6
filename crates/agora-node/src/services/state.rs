//! The node's replicated state: blocked IPs, push subscriptions and client-token revocations, kept identical on every
//! node by applying the same events, and transferred page by page to a node that joins or lost events
//! (`super::transfer`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use std::time::Duration;

use agora::stalwart::StalwartEvent;
use agora::{Delivery, Event};
use tokio::sync::watch;

use super::blocked_ips::{BlockRule, BlockedIpRegistry, BlockedIpSnapshot};
use super::push::{PushRegistry, PushSnapshot};
use super::revocations::{keys_of, Held, RevocationRegistry, StoredRevocation};

/// Whether the node holds the cluster's replicated state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Never had it: the initial state transfer is not done. `/healthz` says `starting` (503).
    Starting,
    /// Has it, as far as the node knows.
    Current,
    /// Had it, then lost events (a reconnect, a gap, a lagged service task): a new transfer is running.
    Resyncing {
        /// Since when (Unix ms).
        since_ms: u64,
    },
}

/// Shared by the HTTP handlers and the metrics (readers) and the service task (the only writer: every change is a
/// delivered event or a peer's snapshot, never a handler's own write).
///
/// std `RwLock`s: every critical section is a few map operations and never spans an `.await`, so an async lock
/// would only add cost to the blocked-IP lookup, which sits on the mail server's connection-accept path.
#[derive(Debug)]
pub struct NodeState {
    blocked: RwLock<BlockedIpRegistry>,
    push: RwLock<PushRegistry>,
    /// Revoked client tokens (accounts and token ids).
    revocations: RwLock<RevocationRegistry>,
    /// Bumped whenever a revocation is added or extended: open client streams re-check their token then.
    revoked_tx: watch::Sender<u64>,
    /// `[http.clients] max-token-lifetime` in ms (default 24 h): how long a Stalwart `InvalidateAccessTokens`
    /// revocation is held.
    token_lifetime_ms: AtomicU64,
    /// [`READINESS_STARTING`], [`READINESS_CURRENT`], or the Unix ms since which the node is resyncing.
    readiness: AtomicU64,
    /// Why the state transfer is not done yet, for `/healthz` (e.g. which peers do not answer).
    waiting_for: Mutex<Option<String>>,
}

/// Longest push subscription id kept (the API makes 16 hex digits).
pub const MAX_PUSH_ID: usize = 256;

/// Longest push URL kept.
pub const MAX_PUSH_URL: usize = 8192;

/// Longest block reason kept; longer ones are cut (at a character boundary).
pub const MAX_REASON: usize = 1024;

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Default for NodeState {
    fn default() -> Self {
        NodeState {
            blocked: RwLock::default(),
            push: RwLock::default(),
            revocations: RwLock::default(),
            revoked_tx: watch::Sender::default(),
            token_lifetime_ms: AtomicU64::new(24 * 3600 * 1000),
            readiness: AtomicU64::new(READINESS_STARTING),
            waiting_for: Mutex::default(),
        }
    }
}

const READINESS_STARTING: u64 = 0;
const READINESS_CURRENT: u64 = 1;

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps half-updated in a way readers care about.
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl NodeState {
    /// The blocked-IP registry, for reading.
    pub fn blocked(&self) -> RwLockReadGuard<'_, BlockedIpRegistry> {
        read(&self.blocked)
    }

    fn blocked_mut(&self) -> RwLockWriteGuard<'_, BlockedIpRegistry> {
        write(&self.blocked)
    }

    /// The push registry, for reading.
    pub fn push(&self) -> RwLockReadGuard<'_, PushRegistry> {
        read(&self.push)
    }

    fn push_mut(&self) -> RwLockWriteGuard<'_, PushRegistry> {
        write(&self.push)
    }

    /// The revoked client tokens, for reading.
    pub fn revocations(&self) -> RwLockReadGuard<'_, RevocationRegistry> {
        read(&self.revocations)
    }

    /// Changes whenever a revocation is added or extended (open client streams watch it).
    pub fn watch_revocations(&self) -> watch::Receiver<u64> {
        self.revoked_tx.subscribe()
    }

    /// `[http.clients]`: at most `max` revocations held; Stalwart's revocations held for `lifetime`.
    pub fn configure_revocations(&self, max: usize, lifetime: Duration) {
        write(&self.revocations).set_max(max);
        self.token_lifetime_ms.store(
            u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Records a revocation of these keys and wakes the open client streams if it changed anything.
    fn revoke(&self, accounts: &[u32], jti: Option<&str>, held: Held) -> bool {
        let changed = {
            let mut registry = write(&self.revocations);
            keys_of(accounts, jti)
                .into_iter()
                .fold(false, |changed, key| registry.revoke(key, held) | changed)
        };
        if changed {
            self.revoked_tx.send_modify(|generation| *generation += 1);
        }
        changed
    }

    /// Merges revocations of a state-transfer page; returns how many changed.
    pub fn merge_revocations(&self, entries: Vec<StoredRevocation>) -> usize {
        if entries.is_empty() {
            return 0;
        }
        let changed = {
            let mut registry = write(&self.revocations);
            entries
                .into_iter()
                .filter(|e| match &e.key {
                    super::revocations::RevocationKey::Jti(j) => super::revocations::jti_ok(j),
                    super::revocations::RevocationKey::Account(_) => true,
                })
                .map(|e| registry.revoke(e.key, e.held))
                .filter(|changed| *changed)
                .count()
        };
        if changed > 0 {
            self.revoked_tx.send_modify(|generation| *generation += 1);
        }
        changed
    }

    /// Number of blocked-IP rules in force.
    pub fn blocked_rule_count(&self) -> usize {
        self.blocked().active_count(agora::clock::now_ms())
    }

    /// Number of push subscriptions held.
    pub fn push_subscription_count(&self) -> usize {
        self.push().len()
    }

    /// Deletions remembered `(blocked IPs, push subscriptions)`, each at most [`super::lww::MAX_TOMBSTONES`].
    pub fn tombstone_counts(&self) -> (usize, usize) {
        (self.blocked().tombstone_count(), self.push().tombstone_count())
    }

    /// Deletions forgotten so far because a registry held [`super::lww::MAX_TOMBSTONES`] (both registries).
    pub fn tombstones_evicted(&self) -> u64 {
        self.blocked().tombstones_evicted() + self.push().tombstones_evicted()
    }

    /// Where the node stands with the replicated state.
    pub fn readiness(&self) -> Readiness {
        match self.readiness.load(Ordering::Acquire) {
            READINESS_STARTING => Readiness::Starting,
            READINESS_CURRENT => Readiness::Current,
            since_ms => Readiness::Resyncing { since_ms },
        }
    }

    /// True once the initial state transfer is done: the node holds the state (perhaps resyncing it) and may serve
    /// it to a peer.
    pub fn is_ready(&self) -> bool {
        self.readiness() != Readiness::Starting
    }

    /// The state is complete: a transfer finished, or there is proof that no peer holds any.
    pub fn set_current(&self) {
        self.readiness.store(READINESS_CURRENT, Ordering::Release);
        self.set_waiting_for(None);
    }

    /// Events were lost: the state may be missing some until the transfer that is starting ends. A node still
    /// starting stays starting.
    pub fn set_resyncing(&self) {
        let since_ms = agora::clock::now_ms().max(2);
        let _ = self
            .readiness
            .compare_exchange(READINESS_CURRENT, since_ms, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Why the transfer is not done yet (shown by `/healthz`), or `None`.
    pub fn waiting_for(&self) -> Option<String> {
        self.waiting_for
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records why the transfer is not done yet.
    pub fn set_waiting_for(&self, why: Option<String>) {
        *self
            .waiting_for
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = why;
    }

    /// Applies a delivered event under the last-writer-wins rules, stamped with the delivery's origin node and time
    /// (the same on every node); events that are not replicated state are ignored. Returns true if the state changed.
    ///
    /// What anyone on the bus can send is bounded here, the same way on every node (so that the registries still
    /// converge): a block's reason is cut to [`MAX_REASON`] bytes, and a subscription whose id or URL is longer than
    /// [`MAX_PUSH_ID`] / [`MAX_PUSH_URL`] is ignored. Every entry then fits in a state-transfer page.
    pub fn apply(&self, delivery: &Delivery) -> bool {
        match &delivery.event {
            Event::BlockedIp {
                network,
                expires_at_ms,
                reason,
            } => self.blocked_mut().block(BlockRule {
                network: *network,
                expires_at_ms: *expires_at_ms,
                reason: reason.as_deref().map(|r| truncate(r, MAX_REASON).to_string()),
                origin_node: delivery.origin.get(),
                updated_at_us: delivery.time_us,
            }),
            Event::UnblockedIp { network } => self.blocked_mut().unblock(*network, delivery.time_us),
            Event::PushSubscriptionSet(sub) if !within_bounds(sub) => false,
            Event::PushSubscriptionSet(sub) => {
                self.push_mut()
                    .set((**sub).clone(), delivery.time_us, delivery.origin.get())
            }
            Event::PushSubscriptionRemoved { id } if id.len() > MAX_PUSH_ID => false,
            Event::PushSubscriptionRemoved { id } => self.push_mut().remove(id, delivery.time_us),
            Event::TokensRevoked {
                accounts,
                jti,
                revoked_at_ms,
                keep_until_ms,
            } => self.revoke(
                accounts,
                jti.as_deref(),
                Held {
                    revoked_at_ms: *revoked_at_ms,
                    keep_until_ms: *keep_until_ms,
                },
            ),
            // Stalwart 0.15 invalidated these accounts' access tokens: their client tokens go too. Every node reads
            // the Stalwart bus and applies it itself, at the time it received it.
            Event::Stalwart(StalwartEvent::InvalidateAccessTokens(ids)) => {
                let revoked_at_ms = delivery.time_us / 1000;
                let lifetime = self.token_lifetime_ms.load(Ordering::Relaxed);
                self.revoke(
                    ids,
                    None,
                    Held {
                        revoked_at_ms,
                        keep_until_ms: revoked_at_ms.saturating_add(lifetime),
                    },
                )
            }
            _ => false,
        }
    }

    /// Drops expired rules, and tombstones older than `tombstone_ttl_us`, so that memory does not grow forever.
    pub fn purge(&self, now_us: u64, tombstone_ttl_us: u64) {
        self.blocked_mut().purge(now_us / 1000, tombstone_ttl_us);
        self.push_mut()
            .purge_tombstones(now_us.saturating_sub(tombstone_ttl_us));
        write(&self.revocations).purge(now_us / 1000);
    }

    /// Removes the push subscriptions expired at `now_us`, each with a deletion stamped as the write that set its
    /// expiry (so a later `PATCH` extending it wins, and every node removes the same ones without a message).
    /// Returns how many.
    pub fn remove_expired_subscriptions(&self, now_us: u64) -> usize {
        let expired = self.push().expired(now_us / 1000);
        if expired.is_empty() {
            return 0;
        }
        let mut push = self.push_mut();
        expired.iter().filter(|(id, at_us)| push.remove(id, *at_us)).count()
    }

    /// Merges part of a peer's state (one page of a transfer) with the same rules as live events: later writes win,
    /// deletions stay deleted, and what the page does not mention is left alone. Returns how many entries changed.
    pub fn merge(&self, blocked: BlockedIpSnapshot, push: PushSnapshot) -> usize {
        let mut changed = 0;
        if !blocked.rules.is_empty() || !blocked.tombstones.is_empty() {
            changed += self.blocked_mut().merge(blocked);
        }
        if !push.subscriptions.is_empty() || !push.tombstones.is_empty() {
            changed += self.push_mut().merge(push);
        }
        changed
    }
}

/// Bytes of a JMAP `deviceClientId` at most.
pub const MAX_DEVICE_CLIENT_ID: usize = 255;

/// Bytes of a stored key or verification code at most (base64url of 65 bytes is 87).
pub const MAX_PUSH_KEY: usize = 128;

/// Whether a subscription from the bus fits what a node keeps (anyone on NATS may publish one).
fn within_bounds(sub: &agora::event::PushSubscription) -> bool {
    sub.id.len() <= MAX_PUSH_ID
        && sub.url.len() <= MAX_PUSH_URL
        && sub
            .device_client_id
            .as_ref()
            .is_none_or(|d| d.len() <= MAX_DEVICE_CLIENT_ID)
        && sub
            .keys
            .as_ref()
            .is_none_or(|k| k.p256dh.len() <= MAX_PUSH_KEY && k.auth.len() <= MAX_PUSH_KEY)
        && sub.verification_code.as_ref().is_none_or(|c| c.len() <= MAX_PUSH_KEY)
}
