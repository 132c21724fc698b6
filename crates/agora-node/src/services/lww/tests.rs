//! The map's rules: order independence, tombstones, the index's bookkeeping, paging.

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

/// A flood of deletions of keys that never existed keeps at most `MAX_TOMBSTONES`, forgetting the oldest, counted.
#[test]
fn tombstones_are_capped_oldest_first() {
    let mut map: LwwMap<Wide> = LwwMap::default();
    let flood = MAX_TOMBSTONES as u64 + 50_000;
    for i in 0..flood {
        map.delete(&(i as u32), 1_000 + i);
    }
    assert!(map.tombstone_count() <= MAX_TOMBSTONES, "{}", map.tombstone_count());
    assert_eq!(map.tombstone_count() as u64 + map.tombstones_evicted(), flood);
    // The newest deletions are the ones kept: a write older than the newest one is still refused.
    let newest = flood - 1;
    assert!(!map.write(Wide(newest as u32, 1_000 + newest)));
    // The oldest were forgotten: their keys accept a write again.
    assert!(map.write(Wide(0, 5)));
}
