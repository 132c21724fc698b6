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
//!   recognised as superseded; and there are at most [`MAX_TOMBSTONES`] per map: deletions of keys that never existed
//!   cost a tombstone each, and anyone on the bus can send them, so past the cap the oldest tenth is forgotten
//!   (counted: a write older than a forgotten deletion could then come back, a bounded risk against unbounded memory).
//!
//! Values live in one dense vector, so that a secondary [`Index`] (the blocked-IP prefix tables) can point at them by
//! position; the map tells the index about every insertion, replacement, removal and move.

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;

mod page_index;
use page_index::smallest_after;
pub use page_index::PageIndex;
#[cfg(test)]
pub(crate) mod convergence;
#[cfg(test)]
mod tests;

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

/// Tombstones one map keeps at most (about 100 bytes each with the key).
pub const MAX_TOMBSTONES: usize = 100_000;

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
    /// Tombstones forgotten because the map held [`MAX_TOMBSTONES`].
    tombstones_evicted: u64,
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
            tombstones_evicted: 0,
        }
    }

    /// How many tombstones were forgotten because the map held [`MAX_TOMBSTONES`].
    pub fn tombstones_evicted(&self) -> u64 {
        self.tombstones_evicted
    }

    /// Keeps the tombstones under [`MAX_TOMBSTONES`]: past it, forgets the oldest tenth in one pass (amortised O(1)
    /// per deletion).
    fn cap_tombstones(&mut self) {
        if self.tombstones.len() <= MAX_TOMBSTONES {
            return;
        }
        let mut times: Vec<u64> = self.tombstones.values().copied().collect();
        let cut = times.len() / 10;
        let (_, &mut threshold, _) = times.select_nth_unstable(cut);
        let before = self.tombstones.len();
        // Strictly older than the tenth-oldest time, then as many at that time as still needed.
        let mut at_threshold = cut.saturating_sub(times.iter().filter(|t| **t < threshold).count());
        self.tombstones.retain(|_, at| {
            if *at < threshold {
                false
            } else if *at == threshold && at_threshold > 0 {
                at_threshold -= 1;
                false
            } else {
                true
            }
        });
        self.tombstones_evicted += (before - self.tombstones.len()) as u64;
        self.tombstone_generation += 1;
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
        self.cap_tombstones();
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
