//! The serving side: one page of state, cut from the current registries in key order.

use ipnet::IpNet;

use super::{Cursor, NodeState};
use crate::services::lww::PageIndex;

/// Room kept in a page beyond the last entry and its key: section headers and the closing `"next"` cursor.
const PAGE_TAIL: usize = 256;

/// Fewest entries a page scan selects: a page costs one pass over a section, so each pass should fill a page.
const MIN_SCAN: usize = 64;

/// Most entries a page scan selects (the heap it keeps).
const MAX_SCAN: usize = 65_536;

/// The sorted keys of each section, kept between pages (see [`PageIndex`]).
#[derive(Debug, Default)]
pub struct PageIndexes {
    rules: PageIndex<IpNet>,
    rule_tombstones: PageIndex<IpNet>,
    push: PageIndex<String>,
    push_tombstones: PageIndex<String>,
}

/// Writes the page that starts at `cursor`: at most `budget` bytes of JSON. Entries are serialised straight into
/// the page under the registries' read locks, up to the first that does not fit; the page costs one pass over the
/// section per `scan` entries.
pub(super) fn page(
    state: &NodeState,
    indexes: &PageIndexes,
    me: u16,
    cursor: Cursor,
    budget: usize,
    revocations: bool,
) -> Vec<u8> {
    let scan = (budget / 128).clamp(MIN_SCAN, MAX_SCAN);
    let mut w = PageWriter {
        out: Vec::with_capacity(budget.min(1 << 20)),
        budget,
        entries: 0,
        skipped: 0,
    };
    w.out
        .extend_from_slice(format!("{{\"status\":\"page\",\"node_id\":{me}").as_bytes());
    // Each section in turn from the cursor's: a full page stops inside a section, an exhausted section moves the
    // cursor to the start of the next; sections before the cursor's are left out of the page.
    let mut next = Some(cursor);
    if let Some(Cursor::Rules(after)) = next.clone() {
        let stop = w.section("rules", after, scan, |after, max, visit| {
            let blocked = state.blocked();
            let page = blocked.rules_after(&indexes.rules, after, max);
            visit_all(page.iter().map(|r| (r.network, serde_json::to_vec(r))), visit);
            page.len()
        });
        next = Some(stop.map_or(Cursor::RuleTombstones(None), Cursor::Rules));
    }
    if let Some(Cursor::RuleTombstones(after)) = next.clone() {
        let stop = w.section("rule_tombstones", after, scan, |after, max, visit| {
            let blocked = state.blocked();
            let page = blocked.tombstones_after(&indexes.rule_tombstones, after, max);
            visit_all(page.iter().map(|t| (t.network, serde_json::to_vec(t))), visit);
            page.len()
        });
        next = Some(stop.map_or(Cursor::Push(None), Cursor::RuleTombstones));
    }
    if let Some(Cursor::Push(after)) = next.clone() {
        let stop = w.section("push", after, scan, |after, max, visit| {
            let push = state.push();
            let page = push.subscriptions_after(&indexes.push, after, max);
            let entries = page.iter().map(|s| (s.subscription.id.clone(), serde_json::to_vec(s)));
            visit_all(entries, visit);
            page.len()
        });
        next = Some(stop.map_or(Cursor::PushTombstones(None), Cursor::Push));
    }
    if let Some(Cursor::PushTombstones(after)) = next.clone() {
        let stop = w.section("push_tombstones", after, scan, |after, max, visit| {
            let push = state.push();
            let page = push.tombstones_after(&indexes.push_tombstones, after, max);
            visit_all(
                page.iter()
                    .map(|(id, at)| ((*id).clone(), serde_json::to_vec(&(id, at)))),
                visit,
            );
            page.len()
        });
        next = match stop {
            Some(after) => Some(Cursor::PushTombstones(after)),
            // The revocations follow, for a requester that knows them.
            None if revocations => Some(Cursor::Revocations(None)),
            None => None,
        };
    }
    if let Some(Cursor::Revocations(after)) = next.clone() {
        let stop = w.section("revocations", after, scan, |after, max, visit| {
            let page = state.revocations().after(after, max);
            visit_all(page.iter().map(|r| (r.key.clone(), serde_json::to_vec(r))), visit);
            page.len()
        });
        next = stop.map(Cursor::Revocations);
    }
    if w.skipped > 0 {
        tracing::error!(
            entries = w.skipped,
            "state transfer: entries that cannot be serialised or are larger than one NATS message were left out of \
             a page"
        );
    }
    w.out.extend_from_slice(b",\"next\":");
    let _ = serde_json::to_writer(&mut w.out, &next);
    w.out.push(b'}');
    w.out
}

/// Hands entries to `visit` in order until it says the page is full (the rest are never serialised: `entries` is
/// lazy).
fn visit_all<K>(
    entries: impl Iterator<Item = (K, serde_json::Result<Vec<u8>>)>,
    visit: &mut dyn FnMut(K, serde_json::Result<Vec<u8>>) -> bool,
) {
    for (key, json) in entries {
        if !visit(key, json) {
            return;
        }
    }
}

/// A page being written.
struct PageWriter {
    out: Vec<u8>,
    budget: usize,
    /// Entries written so far.
    entries: usize,
    /// Entries left out: not serialisable, or too large for a message even alone.
    skipped: usize,
}

/// What a section's fetch is given: each entry's key and JSON, in key order; it answers whether to go on.
type Visit<'a, K> = &'a mut dyn FnMut(K, serde_json::Result<Vec<u8>>) -> bool;

impl PageWriter {
    /// Writes `,"name":[...]` with the entries after `after`, fetched `scan` at a time (`fetch` returns how many it
    /// selected), until the page is full (returns `Some(last key written)`, where the next page starts) or the
    /// section ends (returns `None`).
    fn section<K: Clone + serde::Serialize>(
        &mut self,
        name: &str,
        mut after: Option<K>,
        scan: usize,
        fetch: impl Fn(Option<&K>, usize, Visit<'_, K>) -> usize,
    ) -> Option<Option<K>> {
        self.out.extend_from_slice(format!(",\"{name}\":[").as_bytes());
        let mut written_here = 0;
        loop {
            let mut full = false;
            let mut last = after.clone();
            let selected = fetch(after.as_ref(), scan, &mut |key, json| {
                let Ok(json) = json else {
                    // Counted and passed over: the cursor moves on, so the transfer cannot stall on it.
                    self.skipped += 1;
                    last = Some(key);
                    return true;
                };
                // The entry, a comma, and the closing cursor, which holds this key.
                let key_len = serde_json::to_vec(&key).map_or(json.len(), |k| k.len());
                let needed = json.len() + 1 + key_len + PAGE_TAIL;
                if self.out.len() + needed > self.budget {
                    if self.entries > 0 {
                        full = true;
                        return false;
                    }
                    // Alone it cannot travel: skip it (counted), or the transfer would never move on.
                    self.skipped += 1;
                    last = Some(key);
                    return true;
                }
                if written_here > 0 {
                    self.out.push(b',');
                }
                self.out.extend_from_slice(&json);
                written_here += 1;
                self.entries += 1;
                last = Some(key);
                true
            });
            after = last;
            if full {
                self.out.push(b']');
                return Some(after);
            }
            if selected < scan {
                self.out.push(b']');
                return None;
            }
        }
    }
}
