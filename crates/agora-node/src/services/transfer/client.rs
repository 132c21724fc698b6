//! The joining side: one transfer at a time, page after page, until the state is complete or there is proof that
//! no peer holds any.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora::Coordinator;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{legacy, Cursor, Page, PageRequest, Reply, STATE};
use crate::services::metrics::NodeMetrics;
use crate::services::state::NodeState;

/// Waits between attempts that got no page (doubling up to the maximum).
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Transfers start at most this often; wants in between are merged into the next one.
const MIN_SPACING: Duration = Duration::from_secs(1);

/// Asks for state transfers: the service task says when state may be missing; one background task runs one
/// transfer at a time, and wants that arrive meanwhile are merged into the next.
#[derive(Clone)]
pub struct Transfers {
    wanted: Arc<Notify>,
    why: Arc<std::sync::Mutex<&'static str>>,
    /// Counts wants: a transfer that sees it change while it runs does not report the state complete, since events
    /// were lost meanwhile (the next transfer, already wanted, does).
    wants: Arc<AtomicU64>,
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
            wants: Arc::new(AtomicU64::new(0)),
        };
        transfers.wanted.notify_one();
        let client = Client {
            coordinator,
            state,
            metrics,
            wants: transfers.wants.clone(),
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
        self.wants.fetch_add(1, Ordering::AcqRel);
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
    wants: Arc<AtomicU64>,
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
        let wants_at_start = self.wants.load(Ordering::Acquire);
        // The discovery window counts only time connected: peers cannot be heard over a dead link.
        let mut started = Instant::now();
        let me = self.coordinator.node_id().get();
        let instance_id = format!("{:016x}", self.coordinator.instance_id());
        let mut cursor = Cursor::START;
        let mut source: Option<u16> = None;
        let (mut pages, mut changed) = (0u64, 0usize);
        let mut retry = RETRY_MIN;
        let mut waits = 0u64;
        let mut pending: Option<Page> = None;
        loop {
            if !self.coordinator.link_state().is_healthy() {
                started = Instant::now();
                tokio::time::sleep(RETRY_MIN).await;
                continue;
            }
            let members: HashSet<u16> = self.coordinator.members().iter().map(|m| m.node_id.get()).collect();
            let request = PageRequest {
                node_id: me,
                instance_id: instance_id.clone(),
                cursor: cursor.clone(),
                revocations: true,
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
            let mut unknown = HashSet::new();
            let attempt = self.coordinator.request_each(&name, Bytes::from(payload), |reply| {
                match serde_json::from_slice::<Reply>(&reply) {
                    Ok(Reply::Page(page)) => Some(Answer::Page(page)),
                    Ok(Reply::UnknownRequester { node_id }) => {
                        // Ask again soon only once nobody else can answer: a ready peer's page may still come.
                        unknown.insert(node_id);
                        members
                            .iter()
                            .all(|m| unknown.contains(m) || starting.contains(m))
                            .then_some(Answer::RetrySoon)
                    }
                    Ok(Reply::Starting { node_id }) => {
                        starting.insert(node_id);
                        (may_conclude && !members.is_empty() && members.is_subset(&starting))
                            .then_some(Answer::AllStarting)
                    }
                    Err(_) => None,
                }
            });
            // The page received last is merged while the next one is asked for and cut by the peer.
            let (outcome, merged) = tokio::join!(tokio::time::timeout(timeout, attempt), async {
                pending.take().map_or(0, |page| page.merge_into(&self.state))
            });
            changed += merged;
            let answer = match outcome {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) | Err(_) => {
                    if source.take().is_some() {
                        // The peer serving us stopped answering: go on from the same cursor with whoever answers.
                        self.metrics.snapshot_failures.inc();
                        continue;
                    }
                    if self.conclude_alone(may_conclude, &starting, why, pages, wants_at_start) {
                        return;
                    }
                    if may_conclude {
                        // Past the discovery window, peers are heard but none sends the state.
                        waits += 1;
                        // Members that answer neither pages nor `starting` may be of an older release.
                        let silent = members.iter().any(|m| !starting.contains(m) && !unknown.contains(m));
                        if silent && waits.is_power_of_two() && self.fetch_from_older_release(why, wants_at_start).await
                        {
                            return;
                        }
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
                    match page.next.clone() {
                        Some(next) => {
                            cursor = next;
                            pending = Some(page);
                        }
                        None => {
                            changed += page.merge_into(&self.state);
                            self.complete(wants_at_start);
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
                    self.complete(wants_at_start);
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
    fn conclude_alone(
        &self,
        may_conclude: bool,
        starting: &HashSet<u16>,
        why: &'static str,
        pages: u64,
        wants_at_start: u64,
    ) -> bool {
        if !may_conclude {
            return false;
        }
        let members: HashSet<u16> = self.coordinator.members().iter().map(|m| m.node_id.get()).collect();
        if members.is_empty() && starting.is_empty() {
            self.complete(wants_at_start);
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
            self.complete(wants_at_start);
            tracing::info!(why, peers = ?starting, "every node heard is starting too: the cluster's state starts here");
            return true;
        }
        false
    }

    /// Members are heard but none answers `state`: they may be of an older release, which serves the whole state
    /// as `snapshot`. True if one answered and its state is merged.
    async fn fetch_from_older_release(&self, why: &'static str, wants_at_start: u64) -> bool {
        let fetched = tokio::time::timeout(self.attempt_timeout, legacy::fetch(&self.coordinator, &self.state)).await;
        let Ok(Some(changed)) = fetched else {
            return false;
        };
        self.complete(wants_at_start);
        self.metrics.snapshots_fetched.inc();
        tracing::info!(
            why,
            changed,
            "merged the whole replicated state from a node of an older release"
        );
        true
    }

    /// The transfer is done: the state is complete, unless events were lost while it ran (a want came meanwhile),
    /// in which case the node stays resyncing (or starting) until the transfer already wanted is done too.
    fn complete(&self, wants_at_start: u64) {
        if self.wants.load(Ordering::Acquire) == wants_at_start {
            self.state.set_current();
        } else {
            self.state.set_resyncing();
        }
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
}
