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
    /// Bumped whenever a key is added or removed (not when a value is replaced): a [`PageIndex`] of sorted keys
    /// stays valid while it does not change.
    key_generation: u64,
    /// The same for the tombstones' keys.
    tombstone_generation: u64,
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
            key_generation: 0,
            tombstone_generation: 0,
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
        let before = self.tombstones.len();
        self.tombstones
            .retain(|_, deleted_at_us| *deleted_at_us >= oldest_kept_us);
        if self.tombstones.len() != before {
            self.tombstone_generation += 1;
        }
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
        self.key_generation += 1;
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
                self.tombstone_generation += 1;
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
        self.key_generation += 1;
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

/// The sorted keys of one [`LwwMap`] (its values' or its tombstones'), kept between the pages of state transfers
/// so that a page costs a binary search and a page's lookups instead of a pass over the whole map.
///
/// Valid only while the map's key set is unchanged (its generation); a page served from it is exactly the page
/// [`LwwMap::values_after`] would cut. It is built on the second page asked for while the key set stayed the same
/// (one sort), so that a map under constant change is paged by the pass as before, never re-sorted page after
/// page; and only for maps of at least [`PageIndex::MIN_KEYS`] keys, where the pass costs more than the sort.
#[derive(Debug)]
pub struct PageIndex<K> {
    inner: std::sync::Mutex<PageIndexState<K>>,
}

impl<K> Default for PageIndex<K> {
    fn default() -> Self {
        PageIndex {
            inner: std::sync::Mutex::new(PageIndexState::default()),
        }
    }
}

#[derive(Debug)]
struct PageIndexState<K> {
    /// The generation `keys` were sorted at.
    generation: u64,
    keys: Option<std::sync::Arc<Vec<K>>>,
    /// The generation the previous page saw.
    seen: Option<u64>,
}

impl<K> Default for PageIndexState<K> {
    fn default() -> Self {
        PageIndexState {
            generation: 0,
            keys: None,
            seen: None,
        }
    }
}

impl<K: Clone + Ord + std::hash::Hash> PageIndex<K> {
    /// Below this many keys, a pass is cheap: no index is kept.
    pub const MIN_KEYS: usize = 10_000;

    /// The sorted keys for `generation`, built with `build` if the key set has not changed since the previous page;
    /// `None` when the caller should make a pass.
    fn keys(&self, generation: u64, len: usize, build: impl FnOnce() -> Vec<K>) -> Option<std::sync::Arc<Vec<K>>> {
        let mut state = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(keys) = state.keys.as_ref().filter(|_| state.generation == generation) {
            return Some(keys.clone());
        }
        if len >= Self::MIN_KEYS && state.seen == Some(generation) {
            let mut keys = build();
            keys.sort_unstable();
            let keys = std::sync::Arc::new(keys);
            state.keys = Some(keys.clone());
            state.generation = generation;
            return Some(keys);
        }
        state.keys = None;
        state.seen = Some(generation);
        None
    }

    /// [`LwwMap::values_after`], from the index when it is valid.
    pub fn values_after<'a, T: Register<Key = K>, I>(
        &self,
        map: &'a LwwMap<T, I>,
        after: Option<&K>,
        max: usize,
    ) -> Vec<&'a T> {
        let keys = self.keys(map.key_generation, map.values.len(), || {
            map.values.iter().map(|v| v.key().clone()).collect()
        });
        match keys {
            Some(keys) => page_of(&keys, after, max)
                .iter()
                .filter_map(|k| map.positions.get(k).and_then(|&p| map.at(p)))
                .collect(),
            None => map.values_after(after, max),
        }
    }

    /// [`LwwMap::tombstones_after`], from the index when it is valid.
    pub fn tombstones_after<'a, T: Register<Key = K>, I>(
        &self,
        map: &'a LwwMap<T, I>,
        after: Option<&K>,
        max: usize,
    ) -> Vec<(&'a K, u64)> {
        let keys = self.keys(map.tombstone_generation, map.tombstones.len(), || {
            map.tombstones.keys().cloned().collect()
        });
        match keys {
            Some(keys) => page_of(&keys, after, max)
                .iter()
                .filter_map(|k| map.tombstones.get_key_value(k).map(|(k, at)| (k, *at)))
                .collect(),
            None => map.tombstones_after(after, max),
        }
    }
}

/// The at most `max` keys of sorted `keys` after `after`.
fn page_of<'k, K: Ord>(keys: &'k [K], after: Option<&K>, max: usize) -> &'k [K] {
    let start = after.map_or(0, |after| keys.partition_point(|k| k <= after));
    &keys[start..keys.len().min(start.saturating_add(max))]
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

    /// A register keyed by a number, for maps larger than [`PageIndex::MIN_KEYS`].
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Wide(u32, u64);

    impl Register for Wide {
        type Key = u32;
        fn key(&self) -> &u32 {
            &self.0
        }
        fn updated_at_us(&self) -> u64 {
            self.1
        }
        fn origin_node(&self) -> u16 {
            1
        }
        fn cmp_content(&self, _: &Self) -> Ordering {
            Ordering::Equal
        }
    }

    #[test]
    fn the_page_index_cuts_exactly_the_pages_a_pass_would_while_the_map_changes() {
        let mut map: LwwMap<Wide> = LwwMap::default();
        // Inserted out of order, with tombstones too.
        for i in 0..12_000u32 {
            map.write(Wide(i.wrapping_mul(2_654_435_761) % 1_000_000, 1));
            if i % 3 == 0 {
                map.delete(&(i * 7 + 1_000_001), 5);
            }
        }
        let index: PageIndex<u32> = PageIndex::default();
        let tombstone_index: PageIndex<u32> = PageIndex::default();
        let (mut after, mut after_tombstone) = (None, None);
        for page in 0..40 {
            if page == 20 {
                // The key sets change mid-transfer: the index must notice and fall back, then rebuild.
                map.delete(&after.unwrap_or(0), 9);
                map.write(Wide(999_999_999, 1));
                map.purge_tombstones(6);
            }
            let want: Vec<u32> = map.values_after(after.as_ref(), 500).iter().map(|w| w.0).collect();
            let got: Vec<u32> = index
                .values_after(&map, after.as_ref(), 500)
                .iter()
                .map(|w| w.0)
                .collect();
            assert_eq!(got, want, "page {page}");
            after = want.last().copied().or(after);
            let want: Vec<(u32, u64)> = map
                .tombstones_after(after_tombstone.as_ref(), 300)
                .into_iter()
                .map(|(k, at)| (*k, at))
                .collect();
            let got: Vec<(u32, u64)> = tombstone_index
                .tombstones_after(&map, after_tombstone.as_ref(), 300)
                .into_iter()
                .map(|(k, at)| (*k, at))
                .collect();
            assert_eq!(got, want, "tombstone page {page}");
            after_tombstone = want.last().map(|(k, _)| *k).or(after_tombstone);
        }
        assert!(
            index.inner.lock().expect("lock").keys.is_some(),
            "the index was in use at the end"
        );
    }
}
