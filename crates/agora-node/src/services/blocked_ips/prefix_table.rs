//! The lookup tables behind [`super::BlockedIpRegistry::lookup`]: per address family, one hash map per *populated*
//! prefix length, keyed by the masked address as an integer (`u32` / `u128`), sorted longest prefix first.
//!
//! A lookup is therefore one mask plus one hash probe per populated prefix length, stopping at the first non-expired
//! rule, which is the most specific one. A table entry is a small [`Slot`] (expiry and position of the rule in the
//! registry's dense rule vector), so that a probe touches a few bytes instead of a whole rule, and the tables of 100k
//! rules stay a few MiB, mostly in cache. The maps hash with foldhash (a few multiplications per key, randomly seeded
//! per table), not SipHash, which would cost more than the rest of a lookup.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::BlockRule;
use crate::services::lww::{Hasher, Index};

/// An address as an integer key: `u32` for IPv4, `u128` for IPv6.
pub(super) trait Key: Copy + Eq + std::hash::Hash {
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot {
    /// The rule's expiry, `u64::MAX` for none.
    pub(super) expires_at_ms: u64,
    /// The rule's position in the registry's rule vector.
    pub(super) position: u32,
}

impl Slot {
    fn of(rule: &BlockRule, position: u32) -> Self {
        Slot {
            expires_at_ms: rule.expires_at_ms.unwrap_or(u64::MAX),
            position,
        }
    }
}

/// The tables of both address families, kept in step with the registry's rules through [`Index`].
#[derive(Clone, Debug, Default)]
pub(super) struct PrefixIndex {
    v4: PrefixTables<u32>,
    v6: PrefixTables<u128>,
}

impl PrefixIndex {
    /// The position of the most specific rule covering `ip` that is active at `now_ms`. IPv4-mapped IPv6 addresses
    /// are looked up as IPv4 (rules for mapped networks are stored as IPv4).
    #[inline]
    pub(super) fn lookup(&self, ip: IpAddr, now_ms: u64) -> Option<u32> {
        match ip {
            IpAddr::V4(addr) => self.v4.lookup(u32::from(addr), now_ms),
            IpAddr::V6(addr) => match addr.to_ipv4_mapped() {
                Some(addr) => self.v4.lookup(u32::from(addr), now_ms),
                None => self.v6.lookup(u128::from(addr), now_ms),
            },
        }
    }

    /// The slot of a (canonical) network.
    #[cfg(test)]
    pub(super) fn slot(&self, network: IpNet) -> Option<Slot> {
        match network {
            IpNet::V4(net) => self.v4.get(net.prefix_len(), u32::from(net.network())),
            IpNet::V6(net) => self.v6.get(net.prefix_len(), u128::from(net.network())),
        }
    }

    /// Number of slots, and whether any table is empty (tables are dropped when they empty).
    #[cfg(test)]
    pub(super) fn shape(&self) -> (usize, bool) {
        let v4 = self.v4.tables.iter().map(|table| table.slots.len());
        let v6 = self.v6.tables.iter().map(|table| table.slots.len());
        v4.chain(v6)
            .fold((0, false), |(slots, empty), len| (slots + len, empty || len == 0))
    }

    /// Gives back the memory of tables left mostly empty by a purge.
    pub(super) fn shrink(&mut self) {
        self.v4.shrink();
        self.v6.shrink();
    }
}

impl Index<BlockRule> for PrefixIndex {
    fn place(&mut self, rule: &BlockRule, position: u32) {
        let slot = Slot::of(rule, position);
        match rule.network {
            IpNet::V4(net) => self.v4.insert(net.prefix_len(), u32::from(net.network()), slot),
            IpNet::V6(net) => self.v6.insert(net.prefix_len(), u128::from(net.network()), slot),
        }
    }

    fn replace(&mut self, rule: &BlockRule, position: u32) {
        self.place(rule, position);
    }

    fn remove(&mut self, rule: &BlockRule) {
        match rule.network {
            IpNet::V4(net) => self.v4.remove(net.prefix_len(), u32::from(net.network())),
            IpNet::V6(net) => self.v6.remove(net.prefix_len(), u128::from(net.network())),
        }
    }
}

/// The tables of one address family: one per populated prefix length, longest prefix first, so that the first
/// active match in a lookup is the most specific rule.
#[derive(Clone, Debug)]
struct PrefixTables<K> {
    tables: Vec<Table<K>>,
}

impl<K> Default for PrefixTables<K> {
    fn default() -> Self {
        PrefixTables { tables: Vec::new() }
    }
}

/// The slots of one prefix length, keyed by network address.
#[derive(Clone, Debug)]
struct Table<K> {
    prefix_len: u8,
    mask: K,
    slots: HashMap<K, Slot, Hasher>,
}

impl<K: Key> PrefixTables<K> {
    /// The position of the most specific rule covering `addr` that is active at `now_ms`.
    #[inline]
    fn lookup(&self, addr: K, now_ms: u64) -> Option<u32> {
        for table in &self.tables {
            if let Some(slot) = table.slots.get(&addr.and(table.mask)) {
                if now_ms < slot.expires_at_ms {
                    return Some(slot.position);
                }
            }
        }
        None
    }

    /// The index of the table for `prefix_len`, or where to insert it (tables are sorted by descending length).
    fn position(&self, prefix_len: u8) -> Result<usize, usize> {
        self.tables.binary_search_by(|table| prefix_len.cmp(&table.prefix_len))
    }

    #[cfg(test)]
    fn get(&self, prefix_len: u8, key: K) -> Option<Slot> {
        let index = self.position(prefix_len).ok()?;
        self.tables[index].slots.get(&key).copied()
    }

    /// Inserts or overwrites the slot for `key`.
    fn insert(&mut self, prefix_len: u8, key: K, slot: Slot) {
        let index = self.position(prefix_len).unwrap_or_else(|index| {
            let table = Table {
                prefix_len,
                mask: K::mask(prefix_len),
                slots: HashMap::with_hasher(Hasher::default()),
            };
            self.tables.insert(index, table);
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

    fn shrink(&mut self) {
        for table in &mut self.tables {
            if table.slots.len() * 4 < table.slots.capacity() {
                table.slots.shrink_to_fit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(<u32 as Key>::mask(0), 0);
        assert_eq!(<u32 as Key>::mask(24), 0xffff_ff00);
        assert_eq!(<u32 as Key>::mask(32), u32::MAX);
        assert_eq!(<u128 as Key>::mask(0), 0);
        assert_eq!(<u128 as Key>::mask(64), u128::MAX << 64);
        assert_eq!(<u128 as Key>::mask(128), u128::MAX);
    }
}
