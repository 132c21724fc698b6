//! The node's replicated state: blocked IPs and push subscriptions, kept identical on every node by applying the
//! same events, and transferred whole to a node that joins or lost events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use agora::{Delivery, Event};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::blocked_ips::{BlockRule, BlockedIpRegistry, BlockedIpSnapshot};
use super::push::{PushRegistry, PushSnapshot};

/// What one node sends another on join or resync.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StateSnapshot {
    /// The blocked-IP rules and tombstones.
    pub blocked_ips: BlockedIpSnapshot,
    /// The push subscriptions and tombstones.
    pub push: PushSnapshot,
}

/// Shared by the HTTP handlers and the metrics (readers) and the service task (the only writer: every change is a
/// delivered event or a peer's snapshot, never a handler's own write).
///
/// std `RwLock`s: every critical section is a few map operations and never spans an `.await`, so an async lock
/// would only add cost to the blocked-IP lookup, which sits on the mail server's connection-accept path.
#[derive(Debug, Default)]
pub struct NodeState {
    blocked: RwLock<BlockedIpRegistry>,
    push: RwLock<PushRegistry>,
    ready: AtomicBool,
}

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

    /// Number of blocked-IP rules in force.
    pub fn blocked_rule_count(&self) -> usize {
        self.blocked().active_count(agora::clock::now_ms())
    }

    /// Number of push subscriptions held.
    pub fn push_subscription_count(&self) -> usize {
        self.push().len()
    }

    /// True once the initial state transfer is done (or no peer answered).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the node ready.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Applies a delivered event under the last-writer-wins rules, stamped with the delivery's origin node and time
    /// (the same on every node); events that are not replicated state are ignored. Returns true if the state changed.
    pub fn apply(&self, delivery: &Delivery) -> bool {
        match &delivery.event {
            Event::BlockedIp {
                network,
                expires_at_ms,
                reason,
            } => self.blocked_mut().block(BlockRule {
                network: *network,
                expires_at_ms: *expires_at_ms,
                reason: reason.clone(),
                origin_node: delivery.origin.get(),
                updated_at_us: delivery.time_us,
            }),
            Event::UnblockedIp { network } => self.blocked_mut().unblock(*network, delivery.time_us),
            Event::PushSubscriptionSet(sub) => {
                self.push_mut()
                    .set(sub.clone(), delivery.time_us, delivery.origin.get())
            }
            Event::PushSubscriptionRemoved { id } => self.push_mut().remove(id, delivery.time_us),
            _ => false,
        }
    }

    /// Drops expired rules, and tombstones older than `tombstone_ttl_us`, so that memory does not grow forever.
    pub fn purge(&self, now_us: u64, tombstone_ttl_us: u64) {
        self.blocked_mut().purge(now_us / 1000, tombstone_ttl_us);
        self.push_mut()
            .purge_tombstones(now_us.saturating_sub(tombstone_ttl_us));
    }

    /// The whole state as JSON, for a peer's request.
    pub fn snapshot_bytes(&self) -> Bytes {
        let snapshot = StateSnapshot {
            blocked_ips: self.blocked().snapshot(),
            push: self.push().snapshot(),
        };
        serde_json::to_vec(&snapshot).map(Bytes::from).unwrap_or_default()
    }

    /// Merges a peer's snapshot (later writes win, deletions stay deleted); returns how many entries changed.
    pub fn merge_snapshot(&self, bytes: &[u8]) -> Result<usize, serde_json::Error> {
        let snapshot: StateSnapshot = serde_json::from_slice(bytes)?;
        let blocked = self.blocked_mut().merge(snapshot.blocked_ips);
        let push = self.push_mut().merge(snapshot.push);
        Ok(blocked + push)
    }
}
