//! Push subscriptions: the replicated registry, the choice of the one node that delivers each state change, and the
//! JMAP `StateChange` payload.
//!
//! The registry is the shared last-writer-wins map ([`crate::services::lww`]) keyed by subscription id: writes are
//! ordered by `(origin time, origin node, content)`, deletions leave tombstones that win ties, so every node ends with
//! the same registry whatever the order of events and snapshots.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

use agora::event::PushSubscription;
use agora::DataTypes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::lww::{Hasher, Index, LwwMap, PageIndex, Register};

/// A subscription with the stamp of its last write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSubscription {
    /// The subscription.
    #[serde(flatten)]
    pub subscription: PushSubscription,
    /// Origin time of the write that created or replaced it (Unix µs).
    pub updated_at_us: u64,
    /// The node that made that write: breaks ties between writes with the same time. Absent in snapshots of older
    /// nodes, which read as node 0.
    #[serde(default)]
    pub origin_node: u16,
}

impl Register for StoredSubscription {
    type Key = String;

    fn key(&self) -> &String {
        &self.subscription.id
    }

    fn updated_at_us(&self) -> u64 {
        self.updated_at_us
    }

    fn origin_node(&self) -> u16 {
        self.origin_node
    }

    fn cmp_content(&self, other: &Self) -> Ordering {
        let (a, b) = (&self.subscription, &other.subscription);
        let key = |s: &'_ PushSubscription| {
            (
                s.account_id,
                s.url.clone(),
                s.types.bits(),
                s.device_client_id.clone(),
                s.keys.as_ref().map(|k| (k.p256dh.clone(), k.auth.clone())),
                s.expires_at_ms,
                s.verification_code.clone(),
                s.verified,
            )
        };
        key(a).cmp(&key(b))
    }
}

/// The registry as sent to a joining node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSnapshot {
    /// Live subscriptions, sorted by id.
    pub subscriptions: Vec<StoredSubscription>,
    /// Deleted ids and when they were deleted (Unix µs), sorted by id.
    pub tombstones: Vec<(String, u64)>,
}

/// Every push subscription of the cluster, identical on every node once events have propagated.
#[derive(Debug, Default)]
pub struct PushRegistry {
    subscriptions: LwwMap<StoredSubscription, AccountIndex>,
}

/// Which subscriptions each account has, kept in step with the map: a state change looks up its account's few
/// subscriptions instead of scanning every subscription of the cluster (100,000s), once per change.
#[derive(Debug, Default)]
pub struct AccountIndex {
    by_account: HashMap<u32, BTreeSet<String>, Hasher>,
    account_of: HashMap<String, u32, Hasher>,
}

impl AccountIndex {
    fn insert(&mut self, value: &StoredSubscription) {
        let (id, account) = (&value.subscription.id, value.subscription.account_id);
        match self.account_of.insert(id.clone(), account) {
            Some(old) if old == account => return,
            Some(old) => self.forget(old, id),
            None => {}
        }
        self.by_account.entry(account).or_default().insert(id.clone());
    }

    fn forget(&mut self, account: u32, id: &str) {
        if let Some(ids) = self.by_account.get_mut(&account) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_account.remove(&account);
            }
        }
    }
}

impl Index<StoredSubscription> for AccountIndex {
    fn place(&mut self, value: &StoredSubscription, _: u32) {
        self.insert(value);
    }

    fn replace(&mut self, value: &StoredSubscription, _: u32) {
        self.insert(value);
    }

    fn remove(&mut self, value: &StoredSubscription) {
        let id = &value.subscription.id;
        if let Some(account) = self.account_of.remove(id) {
            self.forget(account, id);
        }
    }
}

impl PushRegistry {
    /// Creates or replaces a subscription unless a greater write or a deletion at least as new is known for its id.
    /// Returns true if the registry changed.
    pub fn set(&mut self, subscription: PushSubscription, at_us: u64, origin_node: u16) -> bool {
        self.subscriptions.write(StoredSubscription {
            subscription,
            updated_at_us: at_us,
            origin_node,
        })
    }

    /// Deletes a subscription (unless it was written after `at_us`) and remembers the deletion. Returns true if a
    /// subscription was removed.
    pub fn remove(&mut self, id: &str, at_us: u64) -> bool {
        self.subscriptions.delete(&id.to_string(), at_us).0
    }

    /// The subscription with this id.
    pub fn get(&self, id: &str) -> Option<&StoredSubscription> {
        self.subscriptions.get(id)
    }

    /// All subscriptions, sorted by id.
    pub fn list(&self) -> Vec<StoredSubscription> {
        self.subscriptions.snapshot().0
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.subscriptions.len()
    }

    /// Number of deletions remembered.
    pub fn tombstone_count(&self) -> usize {
        self.subscriptions.tombstone_count()
    }

    /// Deletions forgotten because the registry held [`super::lww::MAX_TOMBSTONES`].
    pub fn tombstones_evicted(&self) -> u64 {
        self.subscriptions.tombstones_evicted()
    }

    /// True without subscriptions.
    pub fn is_empty(&self) -> bool {
        self.subscriptions.is_empty()
    }

    /// The subscriptions of `account_id` interested in any of `types` (a subscription with no types wants all) that
    /// may be pushed now: webhooks and verified JMAP subscriptions, not expired.
    pub fn matching(&self, account_id: u32, types: DataTypes) -> Vec<PushSubscription> {
        let now_ms = agora::clock::now_us() / 1000;
        self.of_account(account_id)
            .map(|s| &s.subscription)
            .filter(|s| s.types.is_empty() || !s.types.intersection(types).is_empty())
            .filter(|s| s.may_push() && !s.is_expired(now_ms))
            .cloned()
            .collect()
    }

    /// The subscriptions expired at `now_ms`, each with the stamp of the write that set its expiry: removing it at
    /// that stamp deletes exactly that version, so a later write (a `PATCH` extending `expires`) wins wherever it
    /// arrives, before or after this node's scan, and every node converges.
    pub fn expired(&self, now_ms: u64) -> Vec<(String, u64)> {
        self.subscriptions
            .values()
            .iter()
            .filter(|s| s.subscription.is_expired(now_ms))
            .map(|s| (s.subscription.id.clone(), s.updated_at_us))
            .collect()
    }

    /// The subscriptions of `account_id`, in id order.
    fn of_account(&self, account_id: u32) -> impl Iterator<Item = &StoredSubscription> {
        self.subscriptions
            .index()
            .by_account
            .get(&account_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.subscriptions.get(id.as_str()))
    }

    /// How many subscriptions `account_id` holds (for `[push] max-subscriptions-per-account`).
    pub fn account_count(&self, account_id: u32) -> usize {
        self.subscriptions
            .index()
            .by_account
            .get(&account_id)
            .map_or(0, BTreeSet::len)
    }

    /// Everything, for a joining node.
    pub fn snapshot(&self) -> PushSnapshot {
        let (subscriptions, tombstones) = self.subscriptions.snapshot();
        PushSnapshot {
            subscriptions,
            tombstones,
        }
    }

    /// One page of a state transfer: at most `max` subscriptions after id `after`, in id order.
    pub fn subscriptions_after(
        &self,
        index: &PageIndex<String>,
        after: Option<&String>,
        max: usize,
    ) -> Vec<&StoredSubscription> {
        index.values_after(&self.subscriptions, after, max)
    }

    /// One page of a state transfer: at most `max` tombstones after id `after`, in id order.
    pub fn tombstones_after(
        &self,
        index: &PageIndex<String>,
        after: Option<&String>,
        max: usize,
    ) -> Vec<(&String, u64)> {
        index.tombstones_after(&self.subscriptions, after, max)
    }

    /// Merges a peer's snapshot with the same rules as live events; returns how many entries changed.
    pub fn merge(&mut self, snapshot: PushSnapshot) -> usize {
        self.subscriptions.merge(snapshot.subscriptions, snapshot.tombstones)
    }

    /// Forgets tombstones older than `before_us`.
    pub fn purge_tombstones(&mut self, before_us: u64) {
        self.subscriptions.purge_tombstones(before_us);
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
    use proptest::prelude::*;

    use super::*;
    use crate::services::lww::convergence::{replay_and_merge, Replica};

    fn sub(id: &str, account_id: u32, types: &[&str]) -> PushSubscription {
        PushSubscription::webhook(
            id,
            account_id,
            format!("http://127.0.0.1/{id}"),
            DataTypes::from_names(types.iter().copied()).expect("known types"),
        )
    }

    #[test]
    fn last_writer_wins_and_deletions_are_not_resurrected() {
        let mut r = PushRegistry::default();
        assert!(r.set(sub("a", 1, &["Email"]), 10, 1));
        assert!(!r.set(sub("a", 1, &["Mailbox"]), 5, 1), "older write loses");
        assert!(r.remove("a", 20));
        assert!(
            !r.set(sub("a", 1, &["Email"]), 15, 1),
            "a write older than the deletion stays deleted"
        );
        assert!(r.set(sub("a", 1, &["Email"]), 25, 1), "a newer write recreates it");
        assert!(!r.remove("a", 22), "a deletion older than the write loses");
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn snapshots_converge_in_any_order() {
        let mut a = PushRegistry::default();
        a.set(sub("x", 1, &[]), 1, 1);
        a.set(sub("y", 2, &[]), 2, 1);
        a.remove("x", 3);
        let mut b = PushRegistry::default();
        b.set(sub("x", 1, &[]), 1, 1);
        b.set(sub("z", 3, &[]), 4, 1);
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
    fn writes_with_the_same_timestamp_converge_whatever_the_order() {
        // Two nodes replace the same subscription in the same microsecond: every node keeps the same winner.
        let (a, b) = (sub("s", 1, &["Email"]), sub("s", 2, &["Mailbox"]));
        let mut first = PushRegistry::default();
        first.set(a.clone(), 7, 1);
        first.set(b.clone(), 7, 2);
        let mut second = PushRegistry::default();
        second.set(b.clone(), 7, 2);
        assert!(!second.set(a.clone(), 7, 1), "the smaller origin loses the tie");
        assert_eq!(first.snapshot(), second.snapshot());
        assert_eq!(first.get("s").map(|s| s.subscription.account_id), Some(2));
        // Same time and origin, different content: still one winner.
        let mut third = PushRegistry::default();
        third.set(a.clone(), 7, 2);
        third.set(b.clone(), 7, 2);
        let mut fourth = PushRegistry::default();
        fourth.set(b, 7, 2);
        fourth.set(a, 7, 2);
        assert_eq!(third.snapshot(), fourth.snapshot());
    }

    #[derive(Clone, Debug)]
    pub(crate) enum Op {
        Set(PushSubscription, u64, u16),
        Remove(String, u64),
    }

    fn any_op() -> impl Strategy<Value = Op> {
        // Few ids, times and origins, so that equal-timestamp conflicts between writes and deletions are common.
        let id = prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_string);
        prop_oneof![
            3 => (id.clone(), 0u32..3, prop::sample::select(vec!["Email", "Mailbox"]), 0u64..4, 0u16..3).prop_map(
                |(id, account_id, kind, at, origin)| Op::Set(sub(&id, account_id, &[kind]), at, origin)
            ),
            1 => (id, 0u64..4).prop_map(|(id, at)| Op::Remove(id, at)),
        ]
    }

    impl Replica for PushRegistry {
        type Op = Op;
        type Snapshot = PushSnapshot;
        fn apply(&mut self, op: &Op) {
            match op {
                Op::Set(subscription, at, origin) => self.set(subscription.clone(), *at, *origin),
                Op::Remove(id, at) => self.remove(id, *at),
            };
        }
        fn snapshot(&self) -> PushSnapshot {
            PushRegistry::snapshot(self)
        }
        fn merge(&mut self, snapshot: PushSnapshot) {
            PushRegistry::merge(self, snapshot);
        }
    }

    proptest! {
        /// The account index answers exactly what a scan of every subscription would, whatever the writes, account
        /// moves and deletions.
        #[test]
        fn the_account_index_agrees_with_a_scan(ops in prop::collection::vec(any_op(), 0..60)) {
            let mut registry = PushRegistry::default();
            for op in &ops {
                Replica::apply(&mut registry, op);
            }
            let all = DataTypes::from_names(["Email", "Mailbox"]).expect("known");
            for account in 0..3 {
                let mut indexed: Vec<String> = registry.matching(account, all).into_iter().map(|s| s.id).collect();
                indexed.sort();
                let scanned: Vec<String> = registry
                    .list()
                    .into_iter()
                    .filter(|s| s.subscription.account_id == account)
                    .map(|s| s.subscription.id)
                    .collect();
                prop_assert_eq!(&indexed, &scanned);
                prop_assert_eq!(registry.account_count(account), scanned.len());
            }
        }

        #[test]
        fn operations_in_any_order_converge(
            (ops, shuffled) in prop::collection::vec(any_op(), 0..30)
                .prop_flat_map(|ops| (Just(ops.clone()), Just(ops).prop_shuffle())),
            split in 0usize..30,
        ) {
            replay_and_merge::<PushRegistry>(&ops, &shuffled, split)?;
        }
    }

    /// An expired subscription is removed at the stamp of the write that set its expiry: a later write extending it
    /// wins whether it arrives before or after a node's scan, so nodes that scanned and nodes that did not agree.
    #[test]
    fn expiry_removal_loses_to_a_later_extension_in_any_order() {
        let expiring = |expires_at_ms| PushSubscription {
            expires_at_ms: Some(expires_at_ms),
            ..sub("s", 1, &[])
        };
        // Scanned first, then the extension (written at 150, after the expiring write at 100) arrives.
        let mut scanned = PushRegistry::default();
        scanned.set(expiring(10), 100, 1);
        assert_eq!(scanned.expired(20), [("s".to_string(), 100)]);
        assert!(scanned.remove("s", 100));
        assert!(scanned.set(expiring(1_000_000), 150, 1), "the extension recreates it");
        // The extension first: nothing expired to scan.
        let mut extended = PushRegistry::default();
        extended.set(expiring(10), 100, 1);
        extended.set(expiring(1_000_000), 150, 1);
        assert!(extended.expired(20).is_empty());
        assert_eq!(scanned.snapshot().subscriptions, extended.snapshot().subscriptions);
        // A stale copy of the expired version cannot come back after the removal.
        let mut stale = PushRegistry::default();
        stale.set(expiring(10), 100, 1);
        stale.remove("s", 100);
        assert!(!stale.set(expiring(10), 100, 1));
        // Expired and unverified subscriptions are never matched.
        let mut gated = PushRegistry::default();
        gated.set(expiring(10), 100, 1);
        gated.set(
            PushSubscription {
                device_client_id: Some("d".into()),
                ..sub("j", 1, &[])
            },
            100,
            1,
        );
        assert!(gated
            .matching(1, DataTypes::from_names(["Email"]).expect("known"))
            .is_empty());
    }

    #[test]
    fn matching_filters_by_account_and_type() {
        let mut r = PushRegistry::default();
        r.set(sub("email", 1, &["Email"]), 1, 1);
        r.set(sub("all", 1, &[]), 1, 1);
        r.set(sub("other", 2, &["Email"]), 1, 1);
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
