//! The blocked-IP registry: the replicated list of blocked IPv4/IPv6 addresses and networks.
//!
//! A mail server asks [`BlockedIpRegistry::lookup`] on every accepted connection, so that call is built to be cheap:
//! per address family there is one hash map per *populated* prefix length, keyed by the masked address as an integer
//! (`u32` / `u128`), and the maps are kept sorted longest prefix first. A lookup is therefore one mask plus one hash
//! probe per populated prefix length, stopping at the first non-expired rule, which is the most specific one. The maps
//! use a seeded multiply-fold hasher (two multiplications for an IPv6 key) instead of SipHash, and never allocate.
//!
//! Replication is by events applied in any order, so the registry is a last-writer-wins map per network:
//!
//! * a rule is ordered by `(updated_at_us, origin_node, expires_at_ms, reason)`; the greatest rule wins, so two blocks
//!   with the same timestamp resolve the same way on every node;
//! * an unblock leaves a tombstone holding the greatest deletion time seen for the network; a block is visible only
//!   if it is strictly newer than the tombstone (on equal timestamps the unblock wins).
//!
//! The state of a network is thus a function of the greatest block and the greatest unblock it has received, whatever
//! the order of arrival, which is what makes nodes (and [`BlockedIpRegistry::merge`] of snapshots) converge.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are IPv4 clients behind a dual-stack socket: `lookup` treats them as
//! the IPv4 address, and a rule given for a mapped network (prefix ≥ 96 inside `::ffff:0:0/96`) is stored as the
//! equivalent IPv4 network, or it could never match.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

/// One block rule as stored and listed; also the payload of a replicated block event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRule {
    /// The blocked network, always truncated (host bits zero); a single address is a /32 or /128.
    pub network: IpNet,
    /// Absolute expiry in Unix milliseconds, so that a node that was offline when the block was made still honours
    /// it; `None` blocks until an unblock.
    pub expires_at_ms: Option<u64>,
    /// Free text for operators (why the address was blocked).
    pub reason: Option<String>,
    /// The node that made the block, used to break ties between blocks with the same timestamp.
    pub origin_node: u16,
    /// Origin time of the block event in Unix microseconds: the last-writer-wins clock.
    pub updated_at_us: u64,
}

impl BlockRule {
    /// Whether the rule is in force at `now_ms`: a rule expiring at `now_ms` is already expired.
    #[inline]
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|expires| now_ms < expires)
    }

    /// Whether `self` wins over `other` for the same network: a total order over the rule's content, so that every
    /// node picks the same winner whatever the arrival order. Equal rules do not supersede each other, which makes
    /// re-delivered events no-ops.
    fn supersedes(&self, other: &BlockRule) -> bool {
        (
            self.updated_at_us,
            self.origin_node,
            self.expires_at_ms,
            self.reason.as_deref(),
        ) > (
            other.updated_at_us,
            other.origin_node,
            other.expires_at_ms,
            other.reason.as_deref(),
        )
    }
}

/// The record of an unblock, kept so that an older block arriving later (a delayed event, a peer's snapshot) is not
/// resurrected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The unblocked network (truncated).
    pub network: IpNet,
    /// Origin time of the latest unblock event for this network (Unix µs).
    pub deleted_at_us: u64,
}

/// Everything a joining node needs to catch up: the rules and the tombstones (without the tombstones, the joining
/// node would accept older blocks that the cluster already removed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedIpSnapshot {
    /// All stored rules (expired ones included until purged), sorted by network.
    pub rules: Vec<BlockRule>,
    /// All tombstones, sorted by network.
    pub tombstones: Vec<Tombstone>,
}

/// The registry of blocked networks: fast lookups for the connection path, last-writer-wins updates for replication.
///
/// The rules live in one dense vector; the lookup tables map a masked address to a small [`Slot`] (expiry and index
/// into that vector), so that a probe touches 24 or 32 bytes per entry instead of a whole rule, and the tables of 100k
/// rules stay a few MiB, mostly in cache.
#[derive(Clone, Debug)]
pub struct BlockedIpRegistry {
    v4: Family<u32>,
    v6: Family<u128>,
    rules: Vec<BlockRule>,
    tombstones: HashMap<IpNet, u64>,
}

impl Default for BlockedIpRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockedIpRegistry {
    /// An empty registry. The hash seed is random per registry, so that nobody can choose blocked addresses that
    /// collide in the lookup tables.
    pub fn new() -> Self {
        let hasher = IntHashBuilder {
            seed: RandomState::new().hash_one(0x5eed_u64) | 1,
        };
        Self {
            v4: Family::new(hasher),
            v6: Family::new(hasher),
            rules: Vec::new(),
            tombstones: HashMap::new(),
        }
    }

    /// Adds or replaces the rule for `rule.network` if the rule is newer than both the existing rule and any tombstone
    /// for that network (last writer wins; equal timestamps are broken by `origin_node`, then by content, so every
    /// node converges; an unblock with the same timestamp wins). The network is truncated first. Returns true if the
    /// registry changed.
    pub fn block(&mut self, mut rule: BlockRule) -> bool {
        rule.network = canonical(rule.network);
        if self
            .tombstones
            .get(&rule.network)
            .is_some_and(|&deleted| rule.updated_at_us <= deleted)
        {
            return false;
        }
        let expires_at_ms = rule.expires_at_ms.unwrap_or(u64::MAX);
        if let Some(slot) = self.slot(rule.network) {
            let index = slot.index as usize;
            if !rule.supersedes(&self.rules[index]) {
                return false;
            }
            if let Some(slot) = self.slot_mut(rule.network) {
                slot.expires_at_ms = expires_at_ms;
            }
            self.rules[index] = rule;
            return true;
        }
        let index = u32::try_from(self.rules.len()).expect("fewer than 2^32 rules");
        let slot = Slot { expires_at_ms, index };
        match rule.network {
            IpNet::V4(net) => self.v4.insert(net.prefix_len(), u32::from(net.network()), slot),
            IpNet::V6(net) => self.v6.insert(net.prefix_len(), u128::from(net.network()), slot),
        }
        self.rules.push(rule);
        true
    }

    /// Removes the rule for exactly `network` (truncated first) if `at_us` is not older than it, and records a
    /// tombstone (even if no rule exists) so that an older block arriving later is not resurrected. Returns true if a
    /// rule was removed.
    pub fn unblock(&mut self, network: IpNet, at_us: u64) -> bool {
        self.unblock_inner(network, at_us).0
    }

    /// [`Self::unblock`], also telling whether the tombstone changed: `(rule removed, tombstone changed)`.
    fn unblock_inner(&mut self, network: IpNet, at_us: u64) -> (bool, bool) {
        let network = canonical(network);
        let tombstone_changed = match self.tombstones.entry(network) {
            Entry::Occupied(mut entry) if *entry.get() < at_us => {
                entry.insert(at_us);
                true
            }
            Entry::Occupied(_) => false,
            Entry::Vacant(entry) => {
                entry.insert(at_us);
                true
            }
        };
        let removed = match self.slot(network) {
            Some(slot) if self.rules[slot.index as usize].updated_at_us <= at_us => {
                self.remove(slot.index as usize);
                true
            }
            _ => false,
        };
        (removed, tombstone_changed)
    }

    /// The rule covering `ip` that is not expired at `now_ms`, if any; if several cover it, the most specific
    /// (longest prefix). IPv4-mapped IPv6 addresses are looked up as IPv4. Does not allocate: this is the hot path,
    /// called on every accepted connection.
    #[inline]
    pub fn lookup(&self, ip: IpAddr, now_ms: u64) -> Option<&BlockRule> {
        let index = match ip {
            IpAddr::V4(addr) => self.v4.lookup(u32::from(addr), now_ms),
            IpAddr::V6(addr) => match addr.to_ipv4_mapped() {
                Some(addr) => self.v4.lookup(u32::from(addr), now_ms),
                None => self.v6.lookup(u128::from(addr), now_ms),
            },
        }?;
        self.rules.get(index as usize)
    }

    /// The rule for exactly this network (truncated first), expired or not: for showing or checking one rule.
    pub fn get(&self, network: &IpNet) -> Option<&BlockRule> {
        let slot = self.slot(canonical(*network))?;
        self.rules.get(slot.index as usize)
    }

    /// Non-expired rules sorted by network (IPv4 first), for `GET /v1/blocked-ips`.
    pub fn list(&self, now_ms: u64) -> Vec<BlockRule> {
        let mut rules: Vec<BlockRule> = self
            .rules
            .iter()
            .filter(|rule| rule.is_active(now_ms))
            .cloned()
            .collect();
        rules.sort_unstable_by_key(|a| a.network);
        rules
    }

    /// Number of rules in force at `now_ms` (for metrics and status; does not allocate).
    pub fn active_count(&self, now_ms: u64) -> usize {
        self.rules.iter().filter(|rule| rule.is_active(now_ms)).count()
    }

    /// Number of stored rules, expired ones included until [`Self::purge`].
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule is stored (expired ones included until [`Self::purge`]).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of stored tombstones, for metrics: they are dropped by [`Self::purge`] after their time to live.
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// Drops the rules expired at `now_ms` and the tombstones older than `tombstone_ttl_us` before now, so that memory
    /// and lookup cost do not grow forever. Returns how many rules were dropped. The tombstone time to live bounds how
    /// late a delayed block event may arrive and still be recognised as superseded.
    pub fn purge(&mut self, now_ms: u64, tombstone_ttl_us: u64) -> usize {
        let before = self.rules.len();
        // Backwards, so that the rule `remove` moves into `index` (the last one) has already been checked.
        for index in (0..self.rules.len()).rev() {
            if !self.rules[index].is_active(now_ms) {
                self.remove(index);
            }
        }
        let dropped = before - self.rules.len();
        if dropped > 0 {
            self.v4.shrink();
            self.v6.shrink();
            if self.rules.len() * 4 < self.rules.capacity() {
                self.rules.shrink_to_fit();
            }
        }
        let oldest_kept = now_ms.saturating_mul(1000).saturating_sub(tombstone_ttl_us);
        self.tombstones.retain(|_, deleted_at_us| *deleted_at_us >= oldest_kept);
        dropped
    }

    /// Everything (rules, expired ones included, and tombstones), sorted by network so that two converged registries
    /// give equal snapshots: the state transfer for a joining node.
    pub fn snapshot(&self) -> BlockedIpSnapshot {
        let mut rules = self.rules.clone();
        rules.sort_unstable_by_key(|a| a.network);
        let mut tombstones: Vec<Tombstone> = self
            .tombstones
            .iter()
            .map(|(&network, &deleted_at_us)| Tombstone { network, deleted_at_us })
            .collect();
        tombstones.sort_unstable_by_key(|a| a.network);
        BlockedIpSnapshot { rules, tombstones }
    }

    /// Merges a peer's snapshot with the same last-writer-wins rules as [`Self::block`] and [`Self::unblock`] applied
    /// per entry, so that the result does not depend on who merges whom. Returns how many entries (rules and
    /// tombstones) changed.
    pub fn merge(&mut self, snapshot: BlockedIpSnapshot) -> usize {
        let mut changed = 0;
        // Tombstones first: rules they supersede are then rejected instead of inserted and removed again.
        for tombstone in snapshot.tombstones {
            let (removed, tombstone_changed) = self.unblock_inner(tombstone.network, tombstone.deleted_at_us);
            changed += usize::from(removed) + usize::from(tombstone_changed);
        }
        for rule in snapshot.rules {
            changed += usize::from(self.block(rule));
        }
        changed
    }

    /// The lookup-table slot of a (canonical) network.
    fn slot(&self, network: IpNet) -> Option<Slot> {
        match network {
            IpNet::V4(net) => self.v4.get(net.prefix_len(), u32::from(net.network())),
            IpNet::V6(net) => self.v6.get(net.prefix_len(), u128::from(net.network())),
        }
    }

    /// The lookup-table slot of a (canonical) network, to update in place.
    fn slot_mut(&mut self, network: IpNet) -> Option<&mut Slot> {
        match network {
            IpNet::V4(net) => self.v4.get_mut(net.prefix_len(), u32::from(net.network())),
            IpNet::V6(net) => self.v6.get_mut(net.prefix_len(), u128::from(net.network())),
        }
    }

    /// Removes the rule at `index` and its slot, keeping the rule vector dense: the last rule moves into `index`.
    fn remove(&mut self, index: usize) {
        let removed = self.rules.swap_remove(index);
        match removed.network {
            IpNet::V4(net) => self.v4.remove(net.prefix_len(), u32::from(net.network())),
            IpNet::V6(net) => self.v6.remove(net.prefix_len(), u128::from(net.network())),
        }
        if let Some(moved) = self.rules.get(index).map(|rule| rule.network) {
            if let Some(slot) = self.slot_mut(moved) {
                slot.index = index as u32;
            }
        }
    }
}

/// The stored form of a network: truncated, and an IPv4-mapped IPv6 network (inside `::ffff:0:0/96`) as the IPv4
/// network it means, since lookups of mapped addresses go to the IPv4 tables.
fn canonical(network: IpNet) -> IpNet {
    if let IpNet::V6(net) = network {
        if net.prefix_len() >= 96 {
            if let Some(addr) = net.addr().to_ipv4_mapped() {
                return IpNet::V4(Ipv4Net::new_assert(addr, net.prefix_len() - 96).trunc());
            }
        }
    }
    network.trunc()
}

/// An address as an integer key: `u32` for IPv4, `u128` for IPv6.
trait Key: Copy + Eq + std::hash::Hash {
    /// The network mask for a prefix length (`0..=BITS`).
    fn mask(prefix_len: u8) -> Self;
    /// `self & mask`.
    fn and(self, mask: Self) -> Self;
}

impl Key for u32 {
    #[inline]
    fn mask(prefix_len: u8) -> Self {
        u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0)
    }
    #[inline]
    fn and(self, mask: Self) -> Self {
        self & mask
    }
}

impl Key for u128 {
    #[inline]
    fn mask(prefix_len: u8) -> Self {
        u128::MAX.checked_shl(128 - u32::from(prefix_len)).unwrap_or(0)
    }
    #[inline]
    fn and(self, mask: Self) -> Self {
        self & mask
    }
}

/// What a lookup table holds for a network: enough to decide a match without touching the rule.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// The rule's expiry, `u64::MAX` for none.
    expires_at_ms: u64,
    /// The rule's index in `BlockedIpRegistry::rules`.
    index: u32,
}

/// The lookup tables of one address family: one per populated prefix length, longest prefix first, so that the first
/// active match in a lookup is the most specific rule.
#[derive(Clone, Debug)]
struct Family<K> {
    tables: Vec<Table<K>>,
    hasher: IntHashBuilder,
}

/// The slots of one prefix length, keyed by network address.
#[derive(Clone, Debug)]
struct Table<K> {
    prefix_len: u8,
    mask: K,
    slots: HashMap<K, Slot, IntHashBuilder>,
}

impl<K: Key> Family<K> {
    fn new(hasher: IntHashBuilder) -> Self {
        Self {
            tables: Vec::new(),
            hasher,
        }
    }

    /// The index of the most specific rule covering `addr` that is active at `now_ms`.
    #[inline]
    fn lookup(&self, addr: K, now_ms: u64) -> Option<u32> {
        for table in &self.tables {
            if let Some(slot) = table.slots.get(&addr.and(table.mask)) {
                if now_ms < slot.expires_at_ms {
                    return Some(slot.index);
                }
            }
        }
        None
    }

    /// The index of the table for `prefix_len`, or where to insert it (tables are sorted by descending length).
    fn position(&self, prefix_len: u8) -> Result<usize, usize> {
        self.tables.binary_search_by(|table| prefix_len.cmp(&table.prefix_len))
    }

    fn get(&self, prefix_len: u8, key: K) -> Option<Slot> {
        let index = self.position(prefix_len).ok()?;
        self.tables[index].slots.get(&key).copied()
    }

    fn get_mut(&mut self, prefix_len: u8, key: K) -> Option<&mut Slot> {
        let index = self.position(prefix_len).ok()?;
        self.tables[index].slots.get_mut(&key)
    }

    fn insert(&mut self, prefix_len: u8, key: K, slot: Slot) {
        let index = self.position(prefix_len).unwrap_or_else(|index| {
            let slots = HashMap::with_hasher(self.hasher);
            self.tables.insert(
                index,
                Table {
                    prefix_len,
                    mask: K::mask(prefix_len),
                    slots,
                },
            );
            index
        });
        self.tables[index].slots.insert(key, slot);
    }

    /// Removes the slot for `key`; drops the table when it becomes empty, so that lookups never probe an empty table.
    fn remove(&mut self, prefix_len: u8, key: K) {
        if let Ok(index) = self.position(prefix_len) {
            let table = &mut self.tables[index];
            table.slots.remove(&key);
            if table.slots.is_empty() {
                self.tables.remove(index);
            }
        }
    }

    /// Gives back the memory of tables left mostly empty by a purge.
    fn shrink(&mut self) {
        for table in &mut self.tables {
            if table.slots.len() * 4 < table.slots.capacity() {
                table.slots.shrink_to_fit();
            }
        }
    }
}

/// Builds [`IntHasher`]s with a per-registry random seed.
#[derive(Clone, Copy, Debug)]
struct IntHashBuilder {
    seed: u64,
}

impl BuildHasher for IntHashBuilder {
    type Hasher = IntHasher;

    #[inline]
    fn build_hasher(&self) -> IntHasher {
        IntHasher { state: self.seed }
    }
}

/// A fast hasher for integer keys (a folded 64×64→128-bit multiplication per 64-bit word, as in foldhash): SipHash
/// would cost more than the rest of a lookup. Both halves of the result are mixed, since the table index comes from
/// the low bits and the control byte from the high bits of the hash.
struct IntHasher {
    state: u64,
}

/// An odd constant with well-spread bits (2^64 / golden ratio).
const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for IntHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Not used by the integer keys; correct for anything else.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        let product = u128::from(self.state ^ value) * u128::from(MULTIPLIER);
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }

    #[inline]
    fn write_u128(&mut self, value: u128) {
        self.write_u64(value as u64);
        self.write_u64((value >> 64) as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn rule(network: &str, updated_at_us: u64) -> BlockRule {
        BlockRule {
            network: net(network),
            expires_at_ms: None,
            reason: None,
            origin_node: 1,
            updated_at_us,
        }
    }

    #[test]
    fn single_address_v4_and_v6() {
        let mut registry = BlockedIpRegistry::new();
        assert!(registry.is_empty());
        assert!(registry.block(rule("192.0.2.7/32", 1)));
        assert!(registry.block(rule("2001:db8::7/128", 1)));
        assert_eq!(registry.len(), 2);
        assert_eq!(
            registry.lookup(ip("192.0.2.7"), 0).unwrap().network,
            net("192.0.2.7/32")
        );
        assert_eq!(
            registry.lookup(ip("2001:db8::7"), 0).unwrap().network,
            net("2001:db8::7/128")
        );
        assert!(registry.lookup(ip("192.0.2.8"), 0).is_none());
        assert!(registry.lookup(ip("2001:db8::8"), 0).is_none());
    }

    #[test]
    fn cidr_v4_and_v6() {
        let mut registry = BlockedIpRegistry::new();
        registry.block(rule("198.51.100.0/24", 1));
        registry.block(rule("2001:db8:1::/48", 1));
        registry.block(rule("0.0.0.0/0", 1));
        assert_eq!(
            registry.lookup(ip("198.51.100.255"), 0).unwrap().network,
            net("198.51.100.0/24")
        );
        assert_eq!(
            registry.lookup(ip("198.51.101.0"), 0).unwrap().network,
            net("0.0.0.0/0")
        );
        assert_eq!(
            registry.lookup(ip("2001:db8:1:ffff::1"), 0).unwrap().network,
            net("2001:db8:1::/48")
        );
        assert!(registry.lookup(ip("2001:db8:2::1"), 0).is_none());
    }

    #[test]
    fn longest_prefix_wins() {
        let mut registry = BlockedIpRegistry::new();
        registry.block(BlockRule {
            reason: Some("wide".into()),
            ..rule("10.0.0.0/8", 1)
        });
        registry.block(BlockRule {
            reason: Some("narrow".into()),
            ..rule("10.1.2.0/24", 1)
        });
        registry.block(BlockRule {
            reason: Some("host".into()),
            ..rule("10.1.2.3/32", 1)
        });
        let reason = |s| registry.lookup(ip(s), 0).and_then(|rule| rule.reason.clone());
        assert_eq!(reason("10.1.2.3").as_deref(), Some("host"));
        assert_eq!(reason("10.1.2.4").as_deref(), Some("narrow"));
        assert_eq!(reason("10.9.9.9").as_deref(), Some("wide"));
        assert_eq!(reason("11.0.0.0"), None);
    }

    #[test]
    fn expiry_hides_then_purge_drops() {
        let mut registry = BlockedIpRegistry::new();
        registry.block(BlockRule {
            expires_at_ms: Some(1_000),
            ..rule("10.0.0.1/32", 1)
        });
        registry.block(rule("10.0.0.0/24", 1));
        registry.block(BlockRule {
            expires_at_ms: Some(5_000),
            ..rule("2001:db8::/64", 1)
        });
        assert_eq!(
            registry.lookup(ip("10.0.0.1"), 999).unwrap().network,
            net("10.0.0.1/32")
        );
        // Expired at exactly expires_at_ms; the shorter prefix still applies.
        assert_eq!(
            registry.lookup(ip("10.0.0.1"), 1_000).unwrap().network,
            net("10.0.0.0/24")
        );
        assert_eq!(registry.list(1_000).len(), 2);
        assert_eq!(registry.list(999).len(), 3);
        assert!(
            registry.get(&net("10.0.0.1/32")).is_some(),
            "get returns expired rules until purged"
        );
        assert_eq!(registry.len(), 3);
        assert_eq!(registry.purge(1_000, 0), 1);
        assert_eq!(registry.len(), 2);
        assert!(registry.get(&net("10.0.0.1/32")).is_none());
        assert!(registry.lookup(ip("2001:db8::1"), 4_999).is_some());
        assert_eq!(registry.purge(5_000, 0), 1);
        assert!(registry.lookup(ip("2001:db8::1"), 0).is_none());
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn list_is_sorted_ipv4_first() {
        let mut registry = BlockedIpRegistry::new();
        for network in ["2001:db8::/32", "10.0.0.2/32", "::1/128", "10.0.0.0/24", "9.0.0.0/8"] {
            registry.block(rule(network, 1));
        }
        let listed: Vec<IpNet> = registry.list(0).into_iter().map(|rule| rule.network).collect();
        let expected: Vec<IpNet> = ["9.0.0.0/8", "10.0.0.0/24", "10.0.0.2/32", "::1/128", "2001:db8::/32"]
            .into_iter()
            .map(net)
            .collect();
        assert_eq!(listed, expected);
    }

    #[test]
    fn unblock_removes() {
        let mut registry = BlockedIpRegistry::new();
        registry.block(rule("10.0.0.0/24", 5));
        registry.block(rule("10.0.0.1/32", 5));
        assert!(registry.unblock(net("10.0.0.1/32"), 6));
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.lookup(ip("10.0.0.1"), 0).unwrap().network, net("10.0.0.0/24"));
        assert!(!registry.unblock(net("10.0.0.1/32"), 7), "nothing left to remove");
        assert!(
            !registry.unblock(net("10.0.0.0/24"), 4),
            "older unblock does not remove a newer block"
        );
        assert!(registry.lookup(ip("10.0.0.1"), 0).is_some());
        assert!(
            registry.unblock(net("10.0.0.0/24"), 5),
            "an unblock with the same timestamp wins"
        );
        assert!(registry.lookup(ip("10.0.0.1"), 0).is_none());
        assert!(registry.is_empty());
    }

    #[test]
    fn older_block_after_newer_unblock_is_not_resurrected() {
        let mut registry = BlockedIpRegistry::new();
        assert!(
            !registry.unblock(net("10.0.0.1/32"), 10),
            "tombstone recorded even without a rule"
        );
        assert_eq!(registry.tombstone_count(), 1);
        assert!(!registry.block(rule("10.0.0.1/32", 9)));
        assert!(!registry.block(rule("10.0.0.1/32", 10)));
        assert!(registry.lookup(ip("10.0.0.1"), 0).is_none());
        assert!(registry.is_empty());
    }

    #[test]
    fn newer_block_after_older_unblock_applies() {
        let mut registry = BlockedIpRegistry::new();
        registry.block(rule("10.0.0.1/32", 1));
        registry.unblock(net("10.0.0.1/32"), 2);
        assert!(registry.block(rule("10.0.0.1/32", 3)));
        assert!(registry.lookup(ip("10.0.0.1"), 0).is_some());
        assert!(
            !registry.block(rule("10.0.0.1/32", 2)),
            "older block does not replace a newer one"
        );
        assert_eq!(registry.get(&net("10.0.0.1/32")).unwrap().updated_at_us, 3);
    }

    #[test]
    fn tombstones_expire_with_purge() {
        let mut registry = BlockedIpRegistry::new();
        registry.unblock(net("10.0.0.1/32"), 1_000_000);
        registry.unblock(net("10.0.0.2/32"), 2_000_000);
        assert_eq!(registry.purge(2_500, 1_000_000), 0);
        assert_eq!(registry.tombstone_count(), 1);
        assert!(
            registry.block(rule("10.0.0.1/32", 5)),
            "tombstone gone: old blocks apply again"
        );
        assert!(!registry.block(rule("10.0.0.2/32", 5)));
    }

    #[test]
    fn equal_timestamps_tie_break_deterministically() {
        let a = BlockRule {
            origin_node: 1,
            reason: Some("a".into()),
            ..rule("10.0.0.1/32", 7)
        };
        let b = BlockRule {
            origin_node: 2,
            reason: Some("b".into()),
            ..rule("10.0.0.1/32", 7)
        };
        let mut first = BlockedIpRegistry::new();
        assert!(first.block(a.clone()));
        assert!(first.block(b.clone()));
        let mut second = BlockedIpRegistry::new();
        assert!(second.block(b.clone()));
        assert!(!second.block(a.clone()));
        assert!(!second.block(b.clone()), "re-delivery is a no-op");
        assert_eq!(first.get(&a.network), Some(&b));
        assert_eq!(first.snapshot(), second.snapshot());
        // Same node and time, different content: still one winner whatever the order.
        let c = BlockRule {
            reason: Some("c".into()),
            ..b.clone()
        };
        let (mut x, mut y) = (first.clone(), second.clone());
        x.block(c.clone());
        y.block(c.clone());
        y.block(b.clone());
        assert_eq!(x.snapshot(), y.snapshot());
        assert_eq!(x.get(&c.network), Some(&c));
    }

    #[test]
    fn snapshots_merge_and_converge() {
        let ops = |registry: &mut BlockedIpRegistry, order: &[usize]| {
            for &i in order {
                match i {
                    0 => {
                        registry.block(rule("10.0.0.1/32", 1));
                    }
                    1 => {
                        registry.unblock(net("10.0.0.1/32"), 2);
                    }
                    2 => {
                        registry.block(rule("10.0.0.0/24", 3));
                    }
                    3 => {
                        registry.block(BlockRule {
                            origin_node: 2,
                            ..rule("2001:db8::/64", 3)
                        });
                    }
                    4 => {
                        registry.unblock(net("2001:db8::/64"), 1);
                    }
                    _ => {
                        registry.block(rule("2001:db8::/64", 3));
                    }
                }
            }
        };
        let mut a = BlockedIpRegistry::new();
        ops(&mut a, &[0, 1, 2, 3, 4, 5]);
        let mut b = BlockedIpRegistry::new();
        ops(&mut b, &[5, 4, 3, 2, 1, 0]);
        assert_eq!(a.snapshot(), b.snapshot());

        // Each node saw half of the operations; merging both ways converges to the full state.
        let mut c = BlockedIpRegistry::new();
        ops(&mut c, &[0, 2, 4]);
        let mut d = BlockedIpRegistry::new();
        ops(&mut d, &[5, 3, 1]);
        let (c_snapshot, d_snapshot) = (c.snapshot(), d.snapshot());
        assert!(c.merge(d_snapshot) > 0);
        assert!(d.merge(c_snapshot) > 0);
        assert_eq!(c.snapshot(), a.snapshot());
        assert_eq!(d.snapshot(), a.snapshot());
        assert_eq!(c.merge(a.snapshot()), 0, "merging the same state changes nothing");

        // A joining node catches up from a snapshot, tombstones included.
        let mut joining = BlockedIpRegistry::new();
        joining.merge(a.snapshot());
        assert_eq!(joining.snapshot(), a.snapshot());
        assert!(
            !joining.block(rule("10.0.0.1/32", 1)),
            "the tombstone came with the snapshot"
        );
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let mut registry = BlockedIpRegistry::new();
        registry.block(BlockRule {
            expires_at_ms: Some(9),
            reason: Some("spam".into()),
            ..rule("10.0.0.1/32", 1)
        });
        registry.unblock(net("2001:db8::/48"), 4);
        let json = serde_json::to_string(&registry.snapshot()).unwrap();
        let back: BlockedIpSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, registry.snapshot());
    }

    #[test]
    fn ipv4_mapped_ipv6_is_looked_up_as_ipv4() {
        let mut registry = BlockedIpRegistry::new();
        registry.block(rule("192.0.2.0/24", 1));
        assert_eq!(
            registry.lookup(ip("::ffff:192.0.2.9"), 0).unwrap().network,
            net("192.0.2.0/24")
        );
        assert!(registry.lookup(ip("::ffff:192.0.3.9"), 0).is_none());
        // A rule given in mapped form is stored as IPv4, so that it matches.
        registry.block(rule("::ffff:198.51.100.7/128", 1));
        assert!(registry.get(&net("198.51.100.7/32")).is_some());
        assert!(registry.lookup(ip("198.51.100.7"), 0).is_some());
        assert!(registry.lookup(ip("::ffff:198.51.100.7"), 0).is_some());
        assert!(registry.unblock(net("::ffff:198.51.100.7/128"), 2));
        // An IPv4-compatible (not mapped) address stays IPv6.
        assert!(registry.lookup(ip("::192.0.2.9"), 0).is_none());
    }

    #[test]
    fn host_bits_are_truncated() {
        let mut registry = BlockedIpRegistry::new();
        registry.block(rule("10.1.2.3/16", 1));
        registry.block(rule("2001:db8::1234/64", 1));
        assert_eq!(registry.get(&net("10.1.0.0/16")).unwrap().network, net("10.1.0.0/16"));
        assert_eq!(registry.get(&net("10.1.9.9/16")).unwrap().network, net("10.1.0.0/16"));
        assert_eq!(
            registry.lookup(ip("10.1.200.200"), 0).unwrap().network,
            net("10.1.0.0/16")
        );
        assert_eq!(
            registry.lookup(ip("2001:db8::ffff"), 0).unwrap().network,
            net("2001:db8::/64")
        );
        assert!(registry.unblock(net("10.1.255.255/16"), 2));
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn masks() {
        assert_eq!(<u32 as Key>::mask(0), 0);
        assert_eq!(<u32 as Key>::mask(24), 0xffff_ff00);
        assert_eq!(<u32 as Key>::mask(32), u32::MAX);
        assert_eq!(<u128 as Key>::mask(0), 0);
        assert_eq!(<u128 as Key>::mask(64), u128::MAX << 64);
        assert_eq!(<u128 as Key>::mask(128), u128::MAX);
    }

    /// A network in a small address space, so that random rules overlap and random addresses hit them.
    fn small_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (0u32..64, prop_oneof![24u8..=32, Just(16), Just(8), Just(0)]).prop_map(|(low, len)| {
                IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(0x0a00_0000 | low), len).trunc())
            }),
            (0u128..64, prop_oneof![120u8..=128, Just(64), Just(48), Just(0)]).prop_map(|(low, len)| {
                let addr = Ipv6Addr::from(0x2001_0db8_u128 << 96 | low);
                IpNet::V6(ipnet::Ipv6Net::new_assert(addr, len).trunc())
            }),
        ]
    }

    fn small_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u32..80).prop_map(|low| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | low))),
            (0u32..80).prop_map(|low| IpAddr::V6(Ipv4Addr::from(0x0a00_0000 | low).to_ipv6_mapped())),
            (0u128..80).prop_map(|low| IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | low))),
            any::<u32>().prop_map(|bits| IpAddr::V4(Ipv4Addr::from(bits))),
        ]
    }

    fn any_rule(max_time: u64) -> impl Strategy<Value = BlockRule> {
        (
            small_net(),
            prop::option::of(0u64..20),
            prop::option::of("[ab]"),
            0u16..3,
            0..max_time,
        )
            .prop_map(
                |(network, expires_at_ms, reason, origin_node, updated_at_us)| BlockRule {
                    network,
                    expires_at_ms,
                    reason,
                    origin_node,
                    updated_at_us,
                },
            )
    }

    #[derive(Clone, Debug)]
    enum Op {
        Block(BlockRule),
        Unblock(IpNet, u64),
    }

    fn any_op() -> impl Strategy<Value = Op> {
        // Few distinct timestamps, so that ties between blocks and between blocks and unblocks happen.
        prop_oneof![
            2 => any_rule(6).prop_map(Op::Block),
            1 => (small_net(), 0u64..6).prop_map(|(network, at)| Op::Unblock(network, at)),
        ]
    }

    fn apply(registry: &mut BlockedIpRegistry, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Block(rule) => {
                    registry.block(rule.clone());
                }
                Op::Unblock(network, at) => {
                    registry.unblock(*network, *at);
                }
            }
        }
    }

    /// Every rule is reachable through its slot, and every slot points at its rule with the rule's expiry.
    fn check_invariants(registry: &BlockedIpRegistry) {
        let slots: usize = registry.v4.tables.iter().map(|table| table.slots.len()).sum::<usize>()
            + registry.v6.tables.iter().map(|table| table.slots.len()).sum::<usize>();
        assert_eq!(slots, registry.rules.len());
        assert!(registry.v4.tables.iter().all(|table| !table.slots.is_empty()));
        assert!(registry.v6.tables.iter().all(|table| !table.slots.is_empty()));
        for rule in &registry.rules {
            assert_eq!(rule.network, canonical(rule.network));
            let slot = registry.slot(rule.network).expect("slot");
            assert_eq!(&registry.rules[slot.index as usize], rule);
            assert_eq!(slot.expires_at_ms, rule.expires_at_ms.unwrap_or(u64::MAX));
        }
    }

    /// The specification of `lookup`: the longest active rule containing the address.
    fn naive_lookup(rules: &[BlockRule], ip: IpAddr, now_ms: u64) -> Option<&BlockRule> {
        let ip = match ip {
            IpAddr::V6(addr) => addr.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        rules
            .iter()
            .filter(|rule| rule.network.contains(&ip) && rule.is_active(now_ms))
            .max_by_key(|rule| rule.network.prefix_len())
    }

    proptest! {
        #[test]
        fn lookup_matches_linear_scan(
            rules in prop::collection::vec(any_rule(1), 0..60),
            ips in prop::collection::vec(small_ip(), 1..60),
            now_ms in 0u64..20,
        ) {
            let mut registry = BlockedIpRegistry::new();
            // Increasing timestamps: the last rule for a network wins, as in the model below.
            let mut model: HashMap<IpNet, BlockRule> = HashMap::new();
            for (i, rule) in rules.into_iter().enumerate() {
                let rule = BlockRule { updated_at_us: i as u64, ..rule };
                prop_assert!(registry.block(rule.clone()));
                model.insert(rule.network, rule);
            }
            let model: Vec<BlockRule> = model.into_values().collect();
            prop_assert_eq!(registry.len(), model.len());
            let ips_after = ips.clone();
            for ip in ips {
                prop_assert_eq!(registry.lookup(ip, now_ms), naive_lookup(&model, ip, now_ms), "ip {}", ip);
            }
            let mut active: Vec<BlockRule> = model.iter().filter(|rule| rule.is_active(now_ms)).cloned().collect();
            active.sort_by_key(|a| a.network);
            prop_assert_eq!(registry.list(now_ms), active.clone());
            check_invariants(&registry);
            prop_assert_eq!(registry.purge(now_ms, 0), model.len() - active.len());
            check_invariants(&registry);
            prop_assert_eq!(registry.list(now_ms), active.clone());
            for ip in &ips_after {
                prop_assert_eq!(registry.lookup(*ip, now_ms), naive_lookup(&active, *ip, now_ms), "ip {}", ip);
            }
        }

        #[test]
        fn operations_in_any_order_converge(
            (ops, shuffled) in prop::collection::vec(any_op(), 0..40)
                .prop_flat_map(|ops| (Just(ops.clone()), Just(ops).prop_shuffle())),
            split in 0usize..40,
            ips in prop::collection::vec(small_ip(), 1..30),
            now_ms in 0u64..20,
        ) {
            let mut a = BlockedIpRegistry::new();
            apply(&mut a, &ops);
            let mut b = BlockedIpRegistry::new();
            apply(&mut b, &shuffled);
            prop_assert_eq!(a.snapshot(), b.snapshot());
            check_invariants(&a);
            check_invariants(&b);

            // Two nodes that each saw part of the operations converge by exchanging snapshots.
            let split = split.min(shuffled.len());
            let mut c = BlockedIpRegistry::new();
            apply(&mut c, &shuffled[..split]);
            let mut d = BlockedIpRegistry::new();
            apply(&mut d, &shuffled[split..]);
            let c_snapshot = c.snapshot();
            c.merge(d.snapshot());
            d.merge(c_snapshot);
            prop_assert_eq!(c.snapshot(), a.snapshot());
            prop_assert_eq!(d.snapshot(), a.snapshot());
            check_invariants(&c);
            check_invariants(&d);
            // Purging (swap-removes in the rule vector) keeps the tables consistent.
            c.purge(now_ms, 0);
            check_invariants(&c);
            for ip in ips {
                let expected = d.lookup(ip, now_ms).cloned();
                prop_assert_eq!(c.lookup(ip, now_ms).cloned(), expected);
            }
        }
    }
}
