//! Push subscriptions: the replicated registry, the choice of the one node that delivers each state change, and the
//! JMAP `StateChange` payload.
//!
//! The registry converges like the blocked-IP list: last writer wins by origin time, deletions leave tombstones so a
//! late or snapshot copy of an older subscription is not resurrected.

use std::collections::HashMap;

use agora::event::PushSubscription;
use agora::DataTypes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// A subscription with the origin time of its last write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSubscription {
    /// The subscription.
    #[serde(flatten)]
    pub subscription: PushSubscription,
    /// Origin time of the write that created or replaced it (Unix µs).
    pub updated_at_us: u64,
}

/// The registry as sent to a joining node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSnapshot {
    /// Live subscriptions.
    pub subscriptions: Vec<StoredSubscription>,
    /// Deleted ids and when they were deleted (Unix µs).
    pub tombstones: Vec<(String, u64)>,
}

/// Every push subscription of the cluster, identical on every node once events have propagated.
#[derive(Debug, Default)]
pub struct PushRegistry {
    subscriptions: HashMap<String, StoredSubscription>,
    tombstones: HashMap<String, u64>,
}

impl PushRegistry {
    /// Creates or replaces a subscription unless a newer write or deletion of the same id is known.
    pub fn set(&mut self, subscription: PushSubscription, at_us: u64) -> bool {
        if self.tombstones.get(&subscription.id).is_some_and(|t| *t >= at_us) {
            return false;
        }
        if let Some(existing) = self.subscriptions.get(&subscription.id) {
            if existing.updated_at_us > at_us
                || (existing.updated_at_us == at_us && existing.subscription == subscription)
            {
                return false;
            }
        }
        self.tombstones.remove(&subscription.id);
        self.subscriptions.insert(
            subscription.id.clone(),
            StoredSubscription {
                subscription,
                updated_at_us: at_us,
            },
        );
        true
    }

    /// Deletes a subscription (unless it was written after `at_us`) and remembers the deletion.
    pub fn remove(&mut self, id: &str, at_us: u64) -> bool {
        if self.subscriptions.get(id).is_some_and(|s| s.updated_at_us > at_us) {
            return false;
        }
        let tombstone = self.tombstones.entry(id.to_string()).or_insert(at_us);
        *tombstone = (*tombstone).max(at_us);
        self.subscriptions.remove(id).is_some()
    }

    /// The subscription with this id.
    pub fn get(&self, id: &str) -> Option<&StoredSubscription> {
        self.subscriptions.get(id)
    }

    /// All subscriptions, sorted by id.
    pub fn list(&self) -> Vec<StoredSubscription> {
        let mut all: Vec<_> = self.subscriptions.values().cloned().collect();
        all.sort_by(|a, b| a.subscription.id.cmp(&b.subscription.id));
        all
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.subscriptions.len()
    }

    /// True without subscriptions.
    pub fn is_empty(&self) -> bool {
        self.subscriptions.is_empty()
    }

    /// The subscriptions of `account_id` interested in any of `types` (a subscription with no types wants all).
    pub fn matching(&self, account_id: u32, types: DataTypes) -> Vec<PushSubscription> {
        self.subscriptions
            .values()
            .map(|s| &s.subscription)
            .filter(|s| s.account_id == account_id && (s.types.is_empty() || !s.types.intersection(types).is_empty()))
            .cloned()
            .collect()
    }

    /// Everything, for a joining node.
    pub fn snapshot(&self) -> PushSnapshot {
        PushSnapshot {
            subscriptions: self.list(),
            tombstones: self.tombstones.iter().map(|(id, at)| (id.clone(), *at)).collect(),
        }
    }

    /// Merges a peer's snapshot with the same rules as live events; returns how many entries changed.
    pub fn merge(&mut self, snapshot: PushSnapshot) -> usize {
        let mut changed = 0;
        for (id, at) in snapshot.tombstones {
            changed += usize::from(self.remove(&id, at));
        }
        for stored in snapshot.subscriptions {
            changed += usize::from(self.set(stored.subscription, stored.updated_at_us));
        }
        changed
    }

    /// Forgets tombstones older than `before_us`.
    pub fn purge_tombstones(&mut self, before_us: u64) {
        self.tombstones.retain(|_, at| *at >= before_us);
    }
}

/// The node that delivers pushes for `account_id`: rendezvous (highest-random-weight) hashing over the live nodes.
///
/// Every node computes the same answer from the same membership, and when a node leaves only its accounts move.
pub fn push_owner(account_id: u32, nodes: &[u16]) -> Option<u16> {
    nodes
        .iter()
        .copied()
        .max_by_key(|node| (mix((u64::from(account_id) << 16) | u64::from(*node)), *node))
}

/// splitmix64's finaliser: a fixed, well-mixing hash that is the same on every node and every build.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The JMAP `StateChange` object (RFC 8620 section 7.1) for one account: `types` mapped to the new state string.
pub fn state_change_json(account_id: u32, change_id: u64, types: DataTypes) -> Value {
    let state = change_id.to_string();
    let per_type: Map<String, Value> = types.names().map(|t| (t.to_string(), json!(state))).collect();
    json!({
        "@type": "StateChange",
        "changed": { account_id.to_string(): per_type },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: &str, account_id: u32, types: &[&str]) -> PushSubscription {
        PushSubscription {
            id: id.into(),
            account_id,
            url: format!("http://127.0.0.1/{id}"),
            types: DataTypes::from_names(types.iter().copied()).expect("known types"),
        }
    }

    #[test]
    fn last_writer_wins_and_deletions_are_not_resurrected() {
        let mut r = PushRegistry::default();
        assert!(r.set(sub("a", 1, &["Email"]), 10));
        assert!(!r.set(sub("a", 1, &["Mailbox"]), 5), "older write loses");
        assert!(r.remove("a", 20));
        assert!(
            !r.set(sub("a", 1, &["Email"]), 15),
            "a write older than the deletion stays deleted"
        );
        assert!(r.set(sub("a", 1, &["Email"]), 25), "a newer write recreates it");
        assert!(!r.remove("a", 22), "a deletion older than the write loses");
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn snapshots_converge_in_any_order() {
        let mut a = PushRegistry::default();
        a.set(sub("x", 1, &[]), 1);
        a.set(sub("y", 2, &[]), 2);
        a.remove("x", 3);
        let mut b = PushRegistry::default();
        b.set(sub("x", 1, &[]), 1);
        b.set(sub("z", 3, &[]), 4);
        let (sa, sb) = (a.snapshot(), b.snapshot());
        a.merge(sb);
        b.merge(sa);
        assert_eq!(a.list(), b.list());
        assert_eq!(
            a.list().iter().map(|s| s.subscription.id.as_str()).collect::<Vec<_>>(),
            ["y", "z"]
        );
    }

    #[test]
    fn matching_filters_by_account_and_type() {
        let mut r = PushRegistry::default();
        r.set(sub("email", 1, &["Email"]), 1);
        r.set(sub("all", 1, &[]), 1);
        r.set(sub("other", 2, &["Email"]), 1);
        let hit = |types: &[&str]| {
            let mut ids: Vec<String> = r
                .matching(1, DataTypes::from_names(types.iter().copied()).expect("known"))
                .into_iter()
                .map(|s| s.id)
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(hit(&["Email", "Thread"]), ["all", "email"]);
        assert_eq!(hit(&["Mailbox"]), ["all"]);
    }

    #[test]
    fn owners_are_deterministic_and_only_a_leaving_nodes_accounts_move() {
        let nodes = [1, 2, 3, 4];
        let before: Vec<u16> = (0..1000).filter_map(|a| push_owner(a, &nodes)).collect();
        let mut counts = [0usize; 5];
        for o in &before {
            counts[usize::from(*o)] += 1;
        }
        assert!(counts[1..].iter().all(|c| *c > 150), "spread evenly: {counts:?}");
        let after: Vec<u16> = (0..1000).filter_map(|a| push_owner(a, &[1, 2, 4])).collect();
        for (b, a) in before.iter().zip(&after) {
            if *b != 3 {
                assert_eq!(b, a, "accounts of surviving nodes stay put");
            }
        }
        assert_eq!(push_owner(7, &[]), None);
    }

    #[test]
    fn state_change_payload_follows_rfc_8620() {
        let v = state_change_json(42, 7, DataTypes::from_names(["Email", "Mailbox"]).expect("known"));
        assert_eq!(
            v,
            json!({"@type": "StateChange", "changed": {"42": {"Email": "7", "Mailbox": "7"}}})
        );
    }
}
