//! The serving side: one page of state, cut from the current registries in key order.

use super::{Cursor, NodeState};

/// Room kept in a page beyond the last entry and its key: section headers and the closing `"next"` cursor.
const PAGE_TAIL: usize = 256;

/// Fewest entries a page scan selects: a page costs one pass over a section, so each pass should fill a page.
const MIN_SCAN: usize = 64;

/// Most entries a page scan selects (the heap it keeps).
const MAX_SCAN: usize = 65_536;

/// Writes the page that starts at `cursor`: at most `budget` bytes of JSON. Entries are serialised straight into
/// the page under the registries' read locks, and the page costs one pass over the section per `scan` entries.
pub(super) fn page(state: &NodeState, me: u16, cursor: Cursor, budget: usize) -> Vec<u8> {
    let scan = (budget / 48).clamp(MIN_SCAN, MAX_SCAN);
    let mut w = PageWriter {
        out: Vec::with_capacity(budget.min(1 << 20)),
        budget,
        entries: 0,
        oversized: 0,
    };
    w.out
        .extend_from_slice(format!("{{\"status\":\"page\",\"node_id\":{me}").as_bytes());
    // Each section in turn from the cursor's: a full page stops inside a section, an exhausted section moves the
    // cursor to the start of the next; sections before the cursor's are left out of the page.
    let mut next = Some(cursor);
    if let Some(Cursor::Rules(after)) = next.clone() {
        let stop = w.section("rules", after, scan, |after, max| {
            let blocked = state.blocked();
            let page = blocked.rules_after(after, max);
            page.into_iter().map(|r| (r.network, serde_json::to_vec(r))).collect()
        });
        next = Some(stop.map_or(Cursor::RuleTombstones(None), Cursor::Rules));
    }
    if let Some(Cursor::RuleTombstones(after)) = next.clone() {
        let stop = w.section("rule_tombstones", after, scan, |after, max| {
            let blocked = state.blocked();
            let page = blocked.tombstones_after(after, max);
            page.into_iter().map(|t| (t.network, serde_json::to_vec(&t))).collect()
        });
        next = Some(stop.map_or(Cursor::Push(None), Cursor::RuleTombstones));
    }
    if let Some(Cursor::Push(after)) = next.clone() {
        let stop = w.section("push", after, scan, |after, max| {
            let push = state.push();
            let page = push.subscriptions_after(after, max);
            page.into_iter()
                .map(|s| (s.subscription.id.clone(), serde_json::to_vec(s)))
                .collect()
        });
        next = Some(stop.map_or(Cursor::PushTombstones(None), Cursor::Push));
    }
    if let Some(Cursor::PushTombstones(after)) = next.clone() {
        let stop = w.section("push_tombstones", after, scan, |after, max| {
            let push = state.push();
            let page = push.tombstones_after(after, max);
            page.into_iter()
                .map(|(id, at)| (id.clone(), serde_json::to_vec(&(id, at))))
                .collect()
        });
        next = stop.map(Cursor::PushTombstones);
    }
    if w.oversized > 0 {
        tracing::error!(
            entries = w.oversized,
            "state transfer: entries larger than one NATS message were left out of a page"
        );
    }
    w.out.extend_from_slice(b",\"next\":");
    let _ = serde_json::to_writer(&mut w.out, &next);
    w.out.push(b'}');
    w.out
}

/// A page being written.
struct PageWriter {
    out: Vec<u8>,
    budget: usize,
    /// Entries written so far.
    entries: usize,
    /// Entries skipped because even alone they would not fit in a message.
    oversized: usize,
}

impl PageWriter {
    /// Writes `,"name":[...]` with the entries after `after`, fetched `scan` at a time, until the page is full
    /// (returns `Some(last key written)`, where the next page starts) or the section ends (returns `None`).
    fn section<K>(
        &mut self,
        name: &str,
        mut after: Option<K>,
        scan: usize,
        fetch: impl Fn(Option<&K>, usize) -> Vec<(K, serde_json::Result<Vec<u8>>)>,
    ) -> Option<Option<K>> {
        self.out.extend_from_slice(format!(",\"{name}\":[").as_bytes());
        let mut written_here = 0;
        loop {
            let entries = fetch(after.as_ref(), scan);
            let exhausted = entries.len() < scan;
            for (key, json) in entries {
                let Ok(json) = json else { continue };
                // The entry, a comma, and the closing cursor (whose key is no longer than the entry).
                let needed = 2 * json.len() + 1 + PAGE_TAIL;
                if self.out.len() + needed > self.budget {
                    if self.entries > 0 {
                        self.out.push(b']');
                        return Some(after);
                    }
                    // Alone it cannot travel: skip it (counted), or the transfer would never move on.
                    self.oversized += 1;
                    after = Some(key);
                    continue;
                }
                if written_here > 0 {
                    self.out.push(b',');
                }
                self.out.extend_from_slice(&json);
                written_here += 1;
                self.entries += 1;
                after = Some(key);
            }
            if exhausted {
                self.out.push(b']');
                return None;
            }
        }
    }
}
