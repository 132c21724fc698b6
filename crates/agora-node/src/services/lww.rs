//! A last-writer-wins register map: the one replication rule shared by every registry the node keeps in step with
//! its peers (blocked IPs, push subscriptions).
//!
//! Events reach nodes in different orders, and snapshots are merged both ways, so the state of a key must depend only
//! on *which* writes and deletions a node has seen, never on their order:
//!
//! * writes are totally ordered by `(updated_at_us, origin_node, content)`; the greatest write wins, so two writes
//!   with the same timestamp resolve the same way on every node, and re-delivering a write is a no-op;
//! * a deletion leaves a tombstone holding the greatest deletion time seen for the key; a write is visible only if it
//!   is strictly newer than the tombstone (on equal timestamps the deletion wins);
//! * tombstones are purged after a time to live, which bounds how late a delayed write may arrive and still be
//!   recognised as superseded.
//!
//! Values live in one dense vector, so that a secondary [`Index`] (the blocked-IP prefix tables) can point at them by
//! position; the map tells the index about every insertion, replacement, removal and move.

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;

/// A value the map can hold: it knows its key, the stamp of the write that made it, and a total order on its content.
pub trait Register {
    /// What the value is stored under.
    type Key: Clone + Eq + Hash + Ord;

    /// The key, which must not change while the value is stored.
    fn key(&self) -> &Self::Key;

    /// Origin time of the write (Unix µs): the last-writer-wins clock.
    fn updated_at_us(&self) -> u64;

    /// The node that made the write: the first tie-break between writes with the same timestamp.
    fn origin_node(&self) -> u16;

    /// The last tie-break: any total order on the rest of the content, equal only for equal content.
    fn cmp_content(&self, other: &Self) -> Ordering;
}

/// Whether `new` wins over `old` for the same key. Equal writes do not supersede each other.
fn supersedes<T: Register>(new: &T, old: &T) -> bool {
    (new.updated_at_us(), new.origin_node())
        .cmp(&(old.updated_at_us(), old.origin_node()))
        .then_with(|| new.cmp_content(old))
        .is_gt()
}

/// Told about every change to the map's dense vector, to keep a secondary lookup structure in step.
pub trait Index<T> {
    /// `value` was stored at `position` (new key, or a move from the end into a freed position).
    fn place(&mut self, value: &T, position: u32);
    /// `value` replaced the value at `position` under the same key.
    fn replace(&mut self, value: &T, position: u32);
    /// `value` is no longer stored.
    fn remove(&mut self, value: &T);
}

/// For maps that need no secondary index.
#[derive(Clone, Debug, Default)]
pub struct NoIndex;

impl<T> Index<T> for NoIndex {
    fn place(&mut self, _: &T, _: u32) {}
    fn replace(&mut self, _: &T, _: u32) {}
    fn remove(&mut self, _: &T) {}
}

/// The hash builder of every node-side map keyed by data from the network: seeded at random per map, so that remote
/// parties cannot choose keys that collide.
pub type Hasher = foldhash::fast::RandomState;

/// The last-writer-wins register map. See the module documentation for the rules.
#[derive(Clone, Debug)]
pub struct LwwMap<T: Register, I = NoIndex> {
    values: Vec<T>,
    positions: HashMap<T::Key, u32, Hasher>,
    tombstones: HashMap<T::Key, u64, Hasher>,
    index: I,
}

impl<T: Register, I: Default> Default for LwwMap<T, I> {
    fn default() -> Self {
        Self::with_index(I::default())
    }
}

impl<T: Register, I> LwwMap<T, I> {
    /// An empty map keeping `index` in step.
    pub fn with_index(index: I) -> Self {
        LwwMap {
            values: Vec::new(),
            positions: HashMap::with_hasher(Hasher::default()),
            tombstones: HashMap::with_hasher(Hasher::default()),
            index,
        }
    }

    /// The secondary index.
    pub fn index(&self) -> &I {
        &self.index
    }

    /// The secondary index, for maintenance that changes no position (e.g. giving back memory).
    pub fn index_mut(&mut self) -> &mut I {
        &mut self.index
    }

    /// The value at a position the index holds.
    #[inline]
    pub fn at(&self, position: u32) -> Option<&T> {
        self.values.get(position as usize)
    }

    /// The value stored under `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&T>
    where
        T::Key: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.positions.get(key).and_then(|&position| self.at(position))
    }

    /// All stored values, in no particular order.
    pub fn values(&self) -> &[T] {
        &self.values
    }

    /// Number of stored values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no value is stored.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Number of tombstones (dropped by [`Self::purge_tombstones`]).
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// Stored values and tombstones, sorted by key, so that two converged maps give equal snapshots.
    pub fn snapshot(&self) -> (Vec<T>, Vec<(T::Key, u64)>)
    where
        T: Clone,
    {
        let mut values = self.values.clone();
        values.sort_unstable_by(|a, b| a.key().cmp(b.key()));
        let mut tombstones: Vec<(T::Key, u64)> = self.tombstones.iter().map(|(k, at)| (k.clone(), *at)).collect();
        tombstones.sort_unstable();
        (values, tombstones)
    }

    /// At most `max` stored values whose keys come after `after` (all keys when `None`), in key order: one page of a
    /// state transfer. Paging with the last key of each page as the next `after` visits every key that stays stored
    /// throughout, whatever is written meanwhile, and needs no state between pages (a value moved inside the dense
    /// vector by a removal is not skipped, as it would be by a position cursor).
    ///
    /// One pass over the map and a heap of `max` entries, so a page costs O(n log max) and no copy of the map.
    pub fn values_after(&self, after: Option<&T::Key>, max: usize) -> Vec<&T> {
        smallest_after(self.values.iter().map(|v| (v.key(), v)), after, max)
    }

    /// Like [`Self::values_after`], for the tombstones: `(key, deleted at µs)` in key order.
    pub fn tombstones_after(&self, after: Option<&T::Key>, max: usize) -> Vec<(&T::Key, u64)> {
        smallest_after(self.tombstones.iter().map(|(k, at)| (k, (k, *at))), after, max)
    }

    /// Forgets the tombstones older than `oldest_kept_us`.
    pub fn purge_tombstones(&mut self, oldest_kept_us: u64) {
        self.tombstones
            .retain(|_, deleted_at_us| *deleted_at_us >= oldest_kept_us);
    }
}

impl<T: Register, I: Index<T>> LwwMap<T, I> {
    /// Stores `value` unless a tombstone at least as new or a greater write for its key is known. Returns true if
    /// the map changed.
    pub fn write(&mut self, value: T) -> bool {
        if self
            .tombstones
            .get(value.key())
            .is_some_and(|&deleted| value.updated_at_us() <= deleted)
        {
            return false;
        }
        if let Some(&position) = self.positions.get(value.key()) {
            let stored = &mut self.values[position as usize];
            if !supersedes(&value, stored) {
                return false;
            }
            self.index.replace(&value, position);
            *stored = value;
            return true;
        }
        let position = u32::try_from(self.values.len()).expect("fewer than 2^32 values");
        self.index.place(&value, position);
        self.positions.insert(value.key().clone(), position);
        self.values.push(value);
        true
    }

    /// Records a deletion of `key` at `at_us` (a tombstone, even if nothing is stored, so that an older write arriving
    /// later is not resurrected) and removes the stored value unless it is newer. Returns
    /// `(value removed, tombstone changed)`.
    pub fn delete(&mut self, key: &T::Key, at_us: u64) -> (bool, bool) {
        let tombstone_changed = match self.tombstones.entry(key.clone()) {
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
        let removed = match self.positions.get(key) {
            Some(&position) if self.values[position as usize].updated_at_us() <= at_us => {
                self.remove_at(position as usize);
                true
            }
            _ => false,
        };
        (removed, tombstone_changed)
    }

    /// Merges a peer's snapshot with the same rules as live writes and deletions, so that the result does not depend
    /// on who merges whom. Returns how many entries (values and tombstones) changed.
    pub fn merge(
        &mut self,
        values: impl IntoIterator<Item = T>,
        tombstones: impl IntoIterator<Item = (T::Key, u64)>,
    ) -> usize {
        let mut changed = 0;
        // Tombstones first: the values they supersede are then rejected instead of inserted and removed again.
        for (key, at_us) in tombstones {
            let (removed, tombstone_changed) = self.delete(&key, at_us);
            changed += usize::from(removed) + usize::from(tombstone_changed);
        }
        for value in values {
            changed += usize::from(self.write(value));
        }
        changed
    }

    /// Drops the values for which `obsolete` is true (not a deletion: no tombstone, e.g. expired rules). Returns how
    /// many were dropped.
    pub fn remove_where(&mut self, mut obsolete: impl FnMut(&T) -> bool) -> usize {
        let before = self.values.len();
        // Backwards, so that the value `remove_at` moves into `position` (the last one) has already been checked.
        for position in (0..self.values.len()).rev() {
            if obsolete(&self.values[position]) {
                self.remove_at(position);
            }
        }
        let dropped = before - self.values.len();
        if dropped > 0 && self.values.len() * 4 < self.values.capacity() {
            self.values.shrink_to_fit();
            self.positions.shrink_to_fit();
        }
        dropped
    }

    /// Removes the value at `position`, keeping the vector dense: the last value moves into `position`.
    fn remove_at(&mut self, position: usize) {
        let removed = self.values.swap_remove(position);
        self.positions.remove(removed.key());
        self.index.remove(&removed);
        if let Some(moved) = self.values.get(position) {
            let position = position as u32;
            if let Some(stored_at) = self.positions.get_mut(moved.key()) {
                *stored_at = position;
            }
            self.index.place(moved, position);
        }
    }
}

/// The `max` items with the smallest keys greater than `after`, sorted by key. A max-heap holds the best `max`
/// candidates seen so far; most items are rejected by one comparison with its top.
fn smallest_after<'a, K: Ord + 'a, V>(
    items: impl Iterator<Item = (&'a K, V)>,
    after: Option<&K>,
    max: usize,
) -> Vec<V> {
    struct ByKey<'a, K, V>(&'a K, V);
    impl<K: Ord, V> PartialEq for ByKey<'_, K, V> {
        fn eq(&self, other: &Self) -> bool {
            self.0 == other.0
        }
    }
    impl<K: Ord, V> Eq for ByKey<'_, K, V> {}
    impl<K: Ord, V> PartialOrd for ByKey<'_, K, V> {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    impl<K: Ord, V> Ord for ByKey<'_, K, V> {
        fn cmp(&self, other: &Self) -> Ordering {
            self.0.cmp(other.0)
        }
    }
    if max == 0 {
        return Vec::new();
    }
    let mut heap: std::collections::BinaryHeap<ByKey<'a, K, V>> = std::collections::BinaryHeap::new();
    for (key, value) in items {
        if after.is_some_and(|after| key <= after) {
            continue;
        }
        if heap.len() < max {
            heap.push(ByKey(key, value));
        } else if heap.peek().is_some_and(|top| key < top.0) {
            heap.pop();
            heap.push(ByKey(key, value));
        }
    }
    heap.into_sorted_vec().into_iter().map(|ByKey(_, v)| v).collect()
}

/// The convergence check every registry built on the map must pass, for their property tests.
#[cfg(test)]
pub(crate) mod convergence {
    use std::fmt::Debug;

    use proptest::prelude::*;

    /// A registry as the convergence check drives it.
    pub(crate) trait Replica: Default {
        /// One replicated operation (a write or a deletion).
        type Op;
        /// The registry's snapshot, equal for converged registries.
        type Snapshot: PartialEq + Debug;
        fn apply(&mut self, op: &Self::Op);
        fn snapshot(&self) -> Self::Snapshot;
        fn merge(&mut self, snapshot: Self::Snapshot);
    }

    /// Feeds `ops` in order to one replica and `shuffled` (the same operations in another order) to another, and the
    /// two halves of `shuffled` split at `split` to two more that then merge each other's snapshot; checks that all
    /// four end equal, and returns them for further checks.
    pub(crate) fn replay_and_merge<R: Replica>(
        ops: &[R::Op],
        shuffled: &[R::Op],
        split: usize,
    ) -> Result<[R; 4], TestCaseError> {
        let replay = |ops: &[R::Op]| {
            let mut replica = R::default();
            ops.iter().for_each(|op| replica.apply(op));
            replica
        };
        let (a, b) = (replay(ops), replay(shuffled));
        prop_assert_eq!(a.snapshot(), b.snapshot());
        let split = split.min(shuffled.len());
        let (mut c, mut d) = (replay(&shuffled[..split]), replay(&shuffled[split..]));
        let c_snapshot = c.snapshot();
        c.merge(d.snapshot());
        d.merge(c_snapshot);
        prop_assert_eq!(c.snapshot(), a.snapshot());
        prop_assert_eq!(d.snapshot(), a.snapshot());
        Ok([a, b, c, d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register whose content is one letter.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Cell {
        key: u8,
        at: u64,
        origin: u16,
        content: char,
    }

    impl Register for Cell {
        type Key = u8;
        fn key(&self) -> &u8 {
            &self.key
        }
        fn updated_at_us(&self) -> u64 {
            self.at
        }
        fn origin_node(&self) -> u16 {
            self.origin
        }
        fn cmp_content(&self, other: &Self) -> Ordering {
            self.content.cmp(&other.content)
        }
    }

    fn cell(key: u8, at: u64, origin: u16, content: char) -> Cell {
        Cell {
            key,
            at,
            origin,
            content,
        }
    }

    #[test]
    fn the_greatest_write_wins_by_time_then_origin_then_content() {
        let mut map: LwwMap<Cell> = LwwMap::default();
        assert!(map.write(cell(1, 5, 1, 'b')));
        assert!(!map.write(cell(1, 4, 9, 'z')), "older loses");
        assert!(map.write(cell(1, 5, 2, 'a')), "same time, greater origin wins");
        assert!(!map.write(cell(1, 5, 1, 'z')), "same time, smaller origin loses");
        assert!(
            map.write(cell(1, 5, 2, 'c')),
            "same time and origin: greater content wins"
        );
        assert!(!map.write(cell(1, 5, 2, 'c')), "re-delivery is a no-op");
        assert_eq!(map.get(&1), Some(&cell(1, 5, 2, 'c')));
    }

    #[test]
    fn deletion_wins_ties_and_tombstones_expire() {
        let mut map: LwwMap<Cell> = LwwMap::default();
        map.write(cell(1, 5, 1, 'a'));
        assert_eq!(map.delete(&1, 4), (false, true), "older deletion keeps the value");
        assert_eq!(map.delete(&1, 5), (true, true), "deletion at the same time wins");
        assert!(
            !map.write(cell(1, 5, 9, 'z')),
            "not resurrected by a write as old as the tombstone"
        );
        assert!(map.write(cell(1, 6, 1, 'a')));
        assert_eq!(
            map.tombstone_count(),
            1,
            "the tombstone stays: it is part of the converged state"
        );
        map.purge_tombstones(6);
        assert_eq!(map.tombstone_count(), 0);
    }

    proptest::proptest! {
        /// Paging through the map while values are written and deleted between pages visits every key that stayed
        /// stored throughout, once, in order: the consistency a state transfer relies on.
        #[test]
        fn paging_visits_every_key_that_stays(
            initial in proptest::collection::btree_set(0u8..=255, 0..120),
            churn in proptest::collection::vec((0u8..=255, proptest::bool::ANY), 0..200),
            page in 1usize..17,
        ) {
            let mut map: LwwMap<Cell> = LwwMap::default();
            for &key in &initial {
                map.write(cell(key, 1, 1, 'a'));
            }
            let mut touched = std::collections::HashSet::new();
            let mut churn = churn.into_iter();
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let keys: Vec<u8> = map.values_after(after.as_ref(), page).iter().map(|c| c.key).collect();
                proptest::prop_assert!(keys.windows(2).all(|w| w[0] < w[1]), "a page is in key order");
                proptest::prop_assert!(keys.len() <= page);
                let Some(&last) = keys.last() else { break };
                seen.extend(keys);
                after = Some(last);
                // Between pages: a few writes and deletions anywhere in the key space.
                for (key, delete) in churn.by_ref().take(3) {
                    touched.insert(key);
                    if delete {
                        map.delete(&key, 10);
                    } else {
                        map.write(cell(key, 2, 1, 'b'));
                    }
                }
            }
            proptest::prop_assert!(seen.windows(2).all(|w| w[0] < w[1]), "no key twice");
            for key in initial.iter().filter(|k| !touched.contains(k)) {
                proptest::prop_assert!(seen.contains(key), "key {} stayed stored but was not visited", key);
            }
        }
    }

    #[test]
    fn tombstone_pages_are_in_key_order() {
        let mut map: LwwMap<Cell> = LwwMap::default();
        for key in [9u8, 3, 7, 1, 5] {
            map.delete(&key, u64::from(key));
        }
        let first = map.tombstones_after(None, 2);
        assert_eq!(first, vec![(&1, 1), (&3, 3)]);
        let rest = map.tombstones_after(Some(&3), 10);
        assert_eq!(rest, vec![(&5, 5), (&7, 7), (&9, 9)]);
        assert!(map.tombstones_after(Some(&9), 10).is_empty());
    }
}
