//! Paging a map's keys for state transfers without a pass over the whole map per page.

use std::cmp::Ordering;

use super::{LwwMap, Register};

/// The sorted keys of one [`LwwMap`] (its values' or its tombstones'), kept between the pages of state transfers
/// so that a page costs a binary search and a page's lookups instead of a pass over the whole map.
///
/// Valid only while the map's key set is unchanged (its generation); a page served from it is exactly the page
/// [`LwwMap::values_after`] would cut. It is built on the second page asked for while the key set stayed the same
/// (one sort), so that a map under constant change is paged by the pass as before, never re-sorted page after
/// page; and only for maps of at least [`PageIndex::MIN_KEYS`] keys, where the pass costs more than the sort.
#[derive(Debug)]
pub struct PageIndex<K> {
    pub(super) inner: std::sync::Mutex<PageIndexState<K>>,
}

impl<K> Default for PageIndex<K> {
    fn default() -> Self {
        PageIndex {
            inner: std::sync::Mutex::new(PageIndexState::default()),
        }
    }
}

#[derive(Debug)]
pub(super) struct PageIndexState<K> {
    /// The generation `keys` were sorted at.
    generation: u64,
    pub(super) keys: Option<std::sync::Arc<Vec<K>>>,
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
pub(super) fn smallest_after<'a, K: Ord + 'a, V>(
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
