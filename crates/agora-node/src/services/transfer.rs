//! State transfer: how a node that joins, or that lost events, gets the replicated state (blocked IPs and push
//! subscriptions) from a peer, page by page, whatever its size.
//!
//! **Pages.** A request names a [`Cursor`]: a section (rules, rule tombstones, push subscriptions, push tombstones)
//! and the last key already received. The peer answers with the entries that follow, in key order, as many as fit in
//! one NATS message (`max_payload`), and the cursor to ask for next. Pages are cut from the peer's current state and
//! the peer keeps nothing between them, so any ready peer can serve any page: if the first one dies mid-transfer, the
//! next request goes to whoever answers. The first request goes to every node (`state`); later ones to the node that
//! answered it (`state.<node-id>`), so that one peer, not all, does the work.
//!
//! **Consistency.** The joiner subscribes to the bus before it asks, and applies live events while pages arrive; both
//! go through the same last-writer-wins merge. A rule changed during the transfer is therefore either in a later
//! page in its new form or arrives as an event, and a deletion leaves a tombstone that an older copy in a page cannot
//! override: nothing is lost, nothing resurrected, whatever the order (property-tested in `lww`).
//!
//! **Believing it is alone.** A node is not ready until a transfer ends, or until it has proof that no peer holds
//! state: no heartbeat heard for two heartbeat intervals, or every node it hears says (in an authenticated reply)
//! that it is starting too. The server's "no responders" status is not proof of anything: it carries no MAC, so with
//! `[cluster] key` set and peers heard it is ignored (see [`agora::Coordinator::request_each`]), and without peers
//! it only ends one attempt early. Nothing unauthenticated changes what the node believes.
//!
//! **Who may ask.** With a key, requests are authenticated. Without one, a peer answers only a node it hears
//! heartbeats from (the snapshot holds push URLs, which carry secrets), and says `unknown_requester` otherwise so
//! that a joiner whose first heartbeat has not arrived yet asks again at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora::{Coordinator, StartError};
use bytes::Bytes;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::blocked_ips::{BlockRule, BlockedIpSnapshot, Tombstone};
use super::metrics::NodeMetrics;
use super::push::{PushSnapshot, StoredSubscription};
use super::state::NodeState;

/// The request/reply handler name for state transfer (and `state.<node-id>` for one node's).
pub const STATE: &str = "state";

/// A request larger than this is not a page request: dropped unread.
const MAX_REQUEST: usize = 64 * 1024;

/// Room kept in a page beyond the last entry and its key: section headers and the closing `"next"` cursor.
const PAGE_TAIL: usize = 256;

/// Fewest entries a page scan selects: a page costs one pass over a section, so each pass should fill a page.
const MIN_SCAN: usize = 64;

/// Most entries a page scan selects (the heap it keeps).
const MAX_SCAN: usize = 65_536;

/// Waits between attempts that got no page (doubling up to the maximum).
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Transfers start at most this often; wants in between are merged into the next one.
const MIN_SPACING: Duration = Duration::from_secs(1);

/// Where a transfer stands: the section being read and the last key received from it (`None`: from the start).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "section", content = "after", rename_all = "snake_case")]
pub enum Cursor {
    /// Blocked-IP rules, by network.
    Rules(Option<IpNet>),
    /// Blocked-IP tombstones, by network.
    RuleTombstones(Option<IpNet>),
    /// Push subscriptions, by id.
    Push(Option<String>),
    /// Push tombstones, by id.
    PushTombstones(Option<String>),
}

impl Cursor {
    /// The first page of the first section.
    pub const START: Cursor = Cursor::Rules(None);
}

/// What a joiner sends.
#[derive(Debug, Serialize, Deserialize)]
struct PageRequest {
    /// The requester's node id and instance (hex), so that a node never answers itself and, without a key, answers
    /// only members.
    node_id: u16,
    instance_id: String,
    cursor: Cursor,
}

/// What a peer answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Reply {
    /// Entries after the cursor.
    Page(Page),
    /// The peer has no state to give: it is starting too.
    Starting { node_id: u16 },
    /// Without a key: the peer has not heard the requester's heartbeat yet.
    UnknownRequester { node_id: u16 },
}

/// One page of state, in key order within each section.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Page {
    node_id: u16,
    #[serde(default)]
    rules: Vec<BlockRule>,
    #[serde(default)]
    rule_tombstones: Vec<Tombstone>,
    #[serde(default)]
    push: Vec<StoredSubscription>,
    #[serde(default)]
    push_tombstones: Vec<(String, u64)>,
    /// The cursor to ask for next; `None` when the transfer is complete.
    next: Option<Cursor>,
}

/// Starts answering page requests (`state` and `state.<this node's id>`).
pub async fn serve(coordinator: &Coordinator, state: Arc<NodeState>) -> Result<(), StartError> {
    let me = coordinator.node_id().get();
    let names = [STATE.to_string(), format!("{STATE}.{me}")];
    for name in names {
        let state = state.clone();
        let peers = coordinator.clone();
        coordinator
            .serve(&name, move |request| answer(&peers, &state, &request))
            .await?;
    }
    Ok(())
}

/// The reply to one request, or `None` to stay silent (our own request, or not a page request at all).
fn answer(coordinator: &Coordinator, state: &NodeState, request: &[u8]) -> Option<Bytes> {
    let me = coordinator.node_id().get();
    if request.len() > MAX_REQUEST {
        return None;
    }
    let request: PageRequest = serde_json::from_slice(request).ok()?;
    let instance = u64::from_str_radix(&request.instance_id, 16).ok()?;
    if request.node_id == me && instance == coordinator.instance_id() {
        return None;
    }
    let reply = |reply: &Reply| serde_json::to_vec(reply).ok().map(Bytes::from);
    if !coordinator.is_authenticated()
        && !coordinator
            .members()
            .iter()
            .any(|m| m.node_id.get() == request.node_id && m.instance_id == instance)
    {
        return reply(&Reply::UnknownRequester { node_id: me });
    }
    if !state.is_ready() {
        return reply(&Reply::Starting { node_id: me });
    }
    Some(Bytes::from(page(
        state,
        me,
        request.cursor,
        coordinator.max_reply_size(),
    )))
}

/// Writes the page that starts at `cursor`: at most `budget` bytes of JSON. Entries are serialised straight into
/// the page under the registries' read locks, and the page costs one pass over the section per `scan` entries.
fn page(state: &NodeState, me: u16, cursor: Cursor, budget: usize) -> Vec<u8> {
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

/// Asks for state transfers: the service task says when state may be missing; one background task runs one
/// transfer at a time, and wants that arrive meanwhile are merged into the next.
#[derive(Clone)]
pub struct Transfers {
    wanted: Arc<Notify>,
    why: Arc<std::sync::Mutex<&'static str>>,
}

impl Transfers {
    /// Starts the transfer task; the first transfer (the join) starts at once.
    pub fn start(
        coordinator: Coordinator,
        state: Arc<NodeState>,
        metrics: Arc<NodeMetrics>,
        heartbeat_interval: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let transfers = Transfers {
            wanted: Arc::new(Notify::new()),
            why: Arc::new(std::sync::Mutex::new("join")),
        };
        transfers.wanted.notify_one();
        let client = Client {
            coordinator,
            state,
            metrics,
            // Peers heartbeat at this interval; two of them heard from nobody is the proof that nobody is there.
            discovery: (heartbeat_interval * 2).max(Duration::from_millis(200)),
            attempt_timeout: heartbeat_interval.max(Duration::from_millis(250)),
        };
        let this = transfers.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = this.wanted.notified() => {}
                }
                let why = *this.why.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let started = Instant::now();
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = client.transfer(why) => {}
                }
                let rest = MIN_SPACING.saturating_sub(started.elapsed());
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(rest) => {}
                }
            }
        });
        transfers
    }

    /// Events may have been lost (`why`: reconnect, resync, lagged): the state is re-fetched; until that ends the
    /// node reports that it is resyncing.
    pub fn want(&self, why: &'static str) {
        *self.why.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = why;
        self.wanted.notify_one();
    }
}

/// What one attempt got.
enum Answer {
    Page(Page),
    /// A peer does not know us yet (no key, our heartbeat not heard): ask again soon.
    RetrySoon,
    /// Every node we hear is starting too.
    AllStarting,
}

/// The joiner's side of a transfer.
struct Client {
    coordinator: Coordinator,
    state: Arc<NodeState>,
    metrics: Arc<NodeMetrics>,
    discovery: Duration,
    attempt_timeout: Duration,
}

impl Client {
    /// Runs one transfer to its end: every page merged, or proof that no peer holds state. Retries for as long as
    /// peers are heard but no page arrives; the node stays `starting` (or `resyncing`) meanwhile.
    async fn transfer(&self, why: &'static str) {
        if self.coordinator.is_single_node() {
            self.state.set_current();
            return;
        }
        self.state.set_resyncing();
        let started = Instant::now();
        let me = self.coordinator.node_id().get();
        let instance_id = format!("{:016x}", self.coordinator.instance_id());
        let mut cursor = Cursor::START;
        let mut source: Option<u16> = None;
        let (mut pages, mut changed) = (0u64, 0usize);
        let mut retry = RETRY_MIN;
        let mut waits = 0u64;
        loop {
            let members: HashSet<u16> = self.coordinator.members().iter().map(|m| m.node_id.get()).collect();
            let request = PageRequest {
                node_id: me,
                instance_id: instance_id.clone(),
                cursor: cursor.clone(),
            };
            let Ok(payload) = serde_json::to_vec(&request) else {
                return;
            };
            let (name, timeout) = match source {
                None => (STATE.to_string(), self.attempt_timeout),
                Some(node) => (format!("{STATE}.{node}"), self.coordinator.request_timeout()),
            };
            let may_conclude = started.elapsed() >= self.discovery;
            let mut starting = HashSet::new();
            let attempt = self.coordinator.request_each(&name, Bytes::from(payload), |reply| {
                match serde_json::from_slice::<Reply>(&reply) {
                    Ok(Reply::Page(page)) => Some(Answer::Page(page)),
                    Ok(Reply::UnknownRequester { .. }) => Some(Answer::RetrySoon),
                    Ok(Reply::Starting { node_id }) => {
                        starting.insert(node_id);
                        (may_conclude && !members.is_empty() && members.is_subset(&starting))
                            .then_some(Answer::AllStarting)
                    }
                    Err(_) => None,
                }
            });
            let outcome = tokio::time::timeout(timeout, attempt).await;
            let answer = match outcome {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) | Err(_) => {
                    if source.take().is_some() {
                        // The peer serving us stopped answering: go on from the same cursor with whoever answers.
                        self.metrics.snapshot_failures.inc();
                        continue;
                    }
                    if self.conclude_alone(may_conclude, &starting, why, pages) {
                        return;
                    }
                    if may_conclude {
                        // Past the discovery window, peers are heard but none sends the state.
                        waits += 1;
                        self.waiting(&members, &starting, waits);
                    }
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                    continue;
                }
            };
            match answer {
                Answer::Page(page) => {
                    retry = RETRY_MIN;
                    source.get_or_insert(page.node_id);
                    pages += 1;
                    self.metrics.snapshot_pages.inc();
                    let next = page.next.clone();
                    changed += self.merge(page);
                    match next {
                        Some(next) => cursor = next,
                        None => {
                            self.state.set_current();
                            self.metrics.snapshots_fetched.inc();
                            tracing::info!(
                                why,
                                pages,
                                changed,
                                from = source,
                                seconds = started.elapsed().as_secs_f64(),
                                "merged the replicated state from a peer"
                            );
                            return;
                        }
                    }
                }
                Answer::RetrySoon => tokio::time::sleep(RETRY_MIN).await,
                Answer::AllStarting => {
                    self.state.set_current();
                    tracing::info!(
                        why,
                        peers = ?starting,
                        "every node heard is starting too: the cluster's state starts here"
                    );
                    return;
                }
            }
        }
    }

    /// After an attempt without a page: is there proof that no peer holds state? No member heard for the whole
    /// discovery window and no reply at all; or every member heard replied that it is starting.
    fn conclude_alone(&self, may_conclude: bool, starting: &HashSet<u16>, why: &'static str, pages: u64) -> bool {
        if !may_conclude {
            return false;
        }
        let members: HashSet<u16> = self.coordinator.members().iter().map(|m| m.node_id.get()).collect();
        if members.is_empty() && starting.is_empty() {
            self.state.set_current();
            if pages > 0 {
                tracing::warn!(
                    why,
                    pages,
                    "the peer serving the state left mid-transfer and no other node is heard: going on with what \
                     arrived"
                );
            } else {
                tracing::info!(why, "no other node is heard: this node starts the cluster's state");
            }
            return true;
        }
        if !members.is_empty() && members.is_subset(starting) {
            self.state.set_current();
            tracing::info!(why, peers = ?starting, "every node heard is starting too: the cluster's state starts here");
            return true;
        }
        false
    }

    /// Records (for `/healthz`) and logs, now and then, why the transfer is not done.
    fn waiting(&self, members: &HashSet<u16>, starting: &HashSet<u16>, waits: u64) {
        self.metrics.snapshot_failures.inc();
        let mut silent: Vec<u16> = members.difference(starting).copied().collect();
        silent.sort_unstable();
        let why = if silent.is_empty() {
            "no peer has answered yet".to_string()
        } else {
            format!("nodes {silent:?} are heard but have not sent the state")
        };
        if waits.is_power_of_two() {
            tracing::warn!(attempts = waits, "state transfer: {why}; asking again");
        }
        self.state.set_waiting_for(Some(why));
    }

    /// Merges one page; returns how many entries changed.
    fn merge(&self, page: Page) -> usize {
        self.state.merge(
            BlockedIpSnapshot {
                rules: page.rules,
                tombstones: page.rule_tombstones,
            },
            PushSnapshot {
                subscriptions: page.push,
                tombstones: page.push_tombstones,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use agora::event::PushSubscription;
    use agora::{DataTypes, Delivery, Event, NodeId, Origin};

    use super::*;

    fn delivery(time_us: u64, event: Event) -> Delivery {
        Delivery {
            origin: Origin::Agora(NodeId::new(1).expect("node id")),
            time_us,
            event,
        }
    }

    fn block(i: u32) -> Event {
        Event::BlockedIp {
            network: IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | i))),
            expires_at_ms: None,
            reason: Some(format!("rule {i}")),
        }
    }

    fn subscription(i: u32) -> Event {
        Event::PushSubscriptionSet(PushSubscription {
            id: format!("sub-{i:06}"),
            account_id: i % 50,
            url: format!("https://push.example.com/{i}?secret=s{i}"),
            types: DataTypes::EMPTY,
        })
    }

    /// A state with rules, push subscriptions and tombstones of both kinds.
    fn populated(rules: u32, subscriptions: u32) -> NodeState {
        let state = NodeState::default();
        for i in 0..rules {
            state.apply(&delivery(10, block(i)));
        }
        for i in 0..subscriptions {
            state.apply(&delivery(10, subscription(i)));
        }
        for i in (0..rules).step_by(7) {
            let network = IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | i)));
            state.apply(&delivery(20, Event::UnblockedIp { network }));
        }
        for i in (0..subscriptions).step_by(5) {
            let id = format!("sub-{i:06}");
            state.apply(&delivery(20, Event::PushSubscriptionRemoved { id }));
        }
        state
    }

    /// Pages `from` into a fresh state with `budget`-byte pages; returns it and the number of pages.
    fn transfer(from: &NodeState, budget: usize) -> (NodeState, usize) {
        let to = NodeState::default();
        let mut cursor = Cursor::START;
        let mut pages = 0;
        loop {
            let bytes = page(from, 1, cursor, budget);
            assert!(
                bytes.len() <= budget,
                "a page of {} bytes exceeds {budget}",
                bytes.len()
            );
            let Reply::Page(page) = serde_json::from_slice(&bytes).expect("a page parses") else {
                panic!("not a page")
            };
            pages += 1;
            let next = page.next.clone();
            to.merge(
                BlockedIpSnapshot {
                    rules: page.rules,
                    tombstones: page.rule_tombstones,
                },
                PushSnapshot {
                    subscriptions: page.push,
                    tombstones: page.push_tombstones,
                },
            );
            match next {
                Some(next) => cursor = next,
                None => return (to, pages),
            }
            assert!(pages < 100_000, "the transfer does not end");
        }
    }

    #[test]
    fn small_pages_carry_everything_and_never_exceed_the_budget() {
        let from = populated(3_000, 700);
        let (to, pages) = transfer(&from, 8 * 1024);
        assert!(pages > 40, "{pages} pages: the state must not fit in a few");
        assert_eq!(
            to.blocked().snapshot(),
            from.blocked().snapshot(),
            "rules and tombstones"
        );
        assert_eq!(
            to.push().snapshot(),
            from.push().snapshot(),
            "subscriptions and tombstones"
        );
    }

    #[test]
    fn an_empty_state_is_one_page_and_a_large_budget_takes_few() {
        let (to, pages) = transfer(&NodeState::default(), 1 << 20);
        assert_eq!((pages, to.blocked_rule_count()), (1, 0));
        let from = populated(3_000, 700);
        let (_, pages) = transfer(&from, 1 << 20);
        assert!(pages <= 2, "{pages} pages for ~500 KB in 1 MiB pages");
    }

    #[test]
    fn an_entry_too_large_for_any_page_is_skipped_not_looped_on() {
        let from = NodeState::default();
        from.apply(&delivery(
            10,
            Event::BlockedIp {
                network: "192.0.2.1/32".parse().expect("network"),
                expires_at_ms: None,
                reason: Some("x".repeat(4096)),
            },
        ));
        from.apply(&delivery(10, block(1)));
        let (to, _) = transfer(&from, 2048);
        assert_eq!(
            to.blocked_rule_count(),
            1,
            "the rule that fits arrives; the oversized one is left out"
        );
    }

    #[test]
    fn requests_and_replies_have_a_stable_json_form() {
        let request = PageRequest {
            node_id: 2,
            instance_id: "00000000000000ff".into(),
            cursor: Cursor::Push(Some("sub-1".into())),
        };
        assert_eq!(
            serde_json::to_string(&request).expect("json"),
            r#"{"node_id":2,"instance_id":"00000000000000ff","cursor":{"section":"push","after":"sub-1"}}"#
        );
        let starting = serde_json::to_string(&Reply::Starting { node_id: 3 }).expect("json");
        assert_eq!(starting, r#"{"status":"starting","node_id":3}"#);
        let bytes = page(&NodeState::default(), 4, Cursor::START, 4096);
        assert_eq!(
            std::str::from_utf8(&bytes).expect("utf-8"),
            r#"{"status":"page","node_id":4,"rules":[],"rule_tombstones":[],"push":[],"push_tombstones":[],"next":null}"#
        );
    }
}
