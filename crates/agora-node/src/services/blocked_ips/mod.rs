//! The blocked-IP registry: the replicated list of blocked IPv4/IPv6 addresses and networks.
//!
//! Two concerns, two modules: replication is the shared last-writer-wins map ([`crate::services::lww`]), keyed by
//! network, with rules ordered by `(updated_at_us, origin_node, expires_at_ms, reason)` and unblocks as tombstones
//! that win ties; the lookup a mail server makes on every accepted connection goes through the prefix tables
//! ([`prefix_table`]), which point into the map's dense rule vector and never allocate.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are IPv4 clients behind a dual-stack socket: `lookup` treats them as
//! the IPv4 address, and a rule given for a mapped network (prefix ≥ 96 inside `::ffff:0:0/96`) is stored as the
//! equivalent IPv4 network, or it could never match.

mod prefix_table;
#[cfg(test)]
mod tests;
pub mod workload;

use std::cmp::Ordering;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use super::lww::{LwwMap, PageIndex, Register};
use prefix_table::PrefixIndex;

/// One block rule as stored and listed; also the payload of a replicated block event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRule {
    /// The blocked network, always canonical (see [`canonical`]); a single address is a /32 or /128.
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
}

impl Register for BlockRule {
    type Key = IpNet;

    fn key(&self) -> &IpNet {
        &self.network
    }

    fn updated_at_us(&self) -> u64 {
        self.updated_at_us
    }

    fn origin_node(&self) -> u16 {
        self.origin_node
    }

    fn cmp_content(&self, other: &Self) -> Ordering {
        (self.expires_at_ms, self.reason.as_deref()).cmp(&(other.expires_at_ms, other.reason.as_deref()))
    }
}

/// The record of an unblock, kept so that an older block arriving later (a delayed event, a peer's snapshot) is not
/// resurrected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The unblocked network (canonical).
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
#[derive(Clone, Debug, Default)]
pub struct BlockedIpRegistry {
    rules: LwwMap<BlockRule, PrefixIndex>,
}

impl BlockedIpRegistry {
    /// An empty registry. Every table is seeded at random, so that nobody can choose blocked addresses that collide.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the rule for `rule.network` (made canonical first) under the last-writer-wins rules. Returns
    /// true if the registry changed.
    pub fn block(&mut self, mut rule: BlockRule) -> bool {
        rule.network = canonical(rule.network);
        self.rules.write(rule)
    }

    /// Removes the rule for exactly `network` (made canonical first) if `at_us` is not older than it, and records a
    /// tombstone (even if no rule exists). Returns true if a rule was removed.
    pub fn unblock(&mut self, network: IpNet, at_us: u64) -> bool {
        self.rules.delete(&canonical(network), at_us).0
    }

    /// The rule covering `ip` that is not expired at `now_ms`, if any; if several cover it, the most specific
    /// (longest prefix). IPv4-mapped IPv6 addresses are looked up as IPv4. Does not allocate: this is the hot path,
    /// called on every accepted connection.
    #[inline]
    pub fn lookup(&self, ip: IpAddr, now_ms: u64) -> Option<&BlockRule> {
        self.rules.at(self.rules.index().lookup(ip, now_ms)?)
    }

    /// The rule for exactly this network (made canonical first), expired or not: for showing or checking one rule.
    pub fn get(&self, network: &IpNet) -> Option<&BlockRule> {
        self.rules.get(&canonical(*network))
    }

    /// Non-expired rules sorted by network (IPv4 first), for `GET /v1/blocked-ips`.
    pub fn list(&self, now_ms: u64) -> Vec<BlockRule> {
        let mut rules: Vec<BlockRule> = self
            .rules
            .values()
            .iter()
            .filter(|rule| rule.is_active(now_ms))
            .cloned()
            .collect();
        rules.sort_unstable_by_key(|a| a.network);
        rules
    }

    /// Number of rules in force at `now_ms` (for metrics and status; does not allocate).
    pub fn active_count(&self, now_ms: u64) -> usize {
        self.rules.values().iter().filter(|rule| rule.is_active(now_ms)).count()
    }

    /// Number of stored rules, expired ones included until [`Self::purge`].
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule is stored (expired ones included until [`Self::purge`]).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of stored tombstones: they are dropped by [`Self::purge`] after their time to live.
    pub fn tombstone_count(&self) -> usize {
        self.rules.tombstone_count()
    }

    /// Tombstones forgotten because the registry held [`crate::services::lww::MAX_TOMBSTONES`].
    pub fn tombstones_evicted(&self) -> u64 {
        self.rules.tombstones_evicted()
    }

    /// Drops the rules expired at `now_ms` and the tombstones older than `tombstone_ttl_us` before now, so that memory
    /// and lookup cost do not grow forever. Returns how many rules were dropped.
    pub fn purge(&mut self, now_ms: u64, tombstone_ttl_us: u64) -> usize {
        let dropped = self.rules.remove_where(|rule| !rule.is_active(now_ms));
        if dropped > 0 {
            self.rules.index_mut().shrink();
        }
        self.rules
            .purge_tombstones(now_ms.saturating_mul(1000).saturating_sub(tombstone_ttl_us));
        dropped
    }

    /// Everything (rules, expired ones included, and tombstones), sorted by network so that two converged registries
    /// give equal snapshots: the state transfer for a joining node.
    pub fn snapshot(&self) -> BlockedIpSnapshot {
        let (rules, tombstones) = self.rules.snapshot();
        let tombstones = tombstones
            .into_iter()
            .map(|(network, deleted_at_us)| Tombstone { network, deleted_at_us })
            .collect();
        BlockedIpSnapshot { rules, tombstones }
    }

    /// One page of a state transfer: at most `max` stored rules (expired ones included until purged) after
    /// `after`, in network order.
    pub fn rules_after(&self, index: &PageIndex<IpNet>, after: Option<&IpNet>, max: usize) -> Vec<&BlockRule> {
        index.values_after(&self.rules, after, max)
    }

    /// One page of a state transfer: at most `max` tombstones after `after`, in network order.
    pub fn tombstones_after(&self, index: &PageIndex<IpNet>, after: Option<&IpNet>, max: usize) -> Vec<Tombstone> {
        index
            .tombstones_after(&self.rules, after, max)
            .into_iter()
            .map(|(network, deleted_at_us)| Tombstone {
                network: *network,
                deleted_at_us,
            })
            .collect()
    }

    /// Merges a peer's snapshot with the same rules as [`Self::block`] and [`Self::unblock`]. Returns how many
    /// entries (rules and tombstones) changed.
    pub fn merge(&mut self, snapshot: BlockedIpSnapshot) -> usize {
        let tombstones = snapshot
            .tombstones
            .into_iter()
            .map(|t| (canonical(t.network), t.deleted_at_us));
        let rules = snapshot.rules.into_iter().map(|rule| BlockRule {
            network: canonical(rule.network),
            ..rule
        });
        self.rules.merge(rules, tombstones)
    }
}

/// The stored form of a network: truncated, and an IPv4-mapped IPv6 network (inside `::ffff:0:0/96`) as the IPv4
/// network it means, since lookups of mapped addresses go to the IPv4 tables.
pub fn canonical(network: IpNet) -> IpNet {
    if let IpNet::V6(net) = network {
        if net.prefix_len() >= 96 {
            if let Some(addr) = net.addr().to_ipv4_mapped() {
                return IpNet::V4(Ipv4Net::new_assert(addr, net.prefix_len() - 96).trunc());
            }
        }
    }
    network.trunc()
}
