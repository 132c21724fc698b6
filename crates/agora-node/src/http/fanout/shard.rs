//! One shard of the fan-out: a set of streams, indexed by account, and the task that writes the journal's entries
//! to those of them that are in sync.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use agora::{Event, Notification};
use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Filter;
use crate::http::stream_filter::Step;
use crate::services::journal::{Cursor, Entry, Journal};
use crate::services::metrics::NodeMetrics;

/// Who writes a stream's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The shard, entry by entry.
    InSync,
    /// The stream's own task: it has a frame to finish, or entries to catch up on.
    Behind,
    /// Nobody: the stream ends.
    Ended,
}

/// One stream as its shard sees it.
pub struct Slot {
    socket: Arc<TcpStream>,
    filter: Arc<Filter>,
    /// The first entry this stream has not been offered.
    pub next: u64,
    pub mode: Mode,
    /// The rest of a frame the socket did not take, for the stream's task to write first.
    pub pending: Option<Bytes>,
    /// When a frame was last written whole (pings are due an interval after it).
    pub last_sent: Instant,
    wake: Arc<Notify>,
}

impl Slot {
    /// Writes `frame` if the socket takes it now; otherwise hands the stream (and the rest of the frame) to its own
    /// task. Never waits.
    pub fn offer(&mut self, frame: Bytes, now: Instant) {
        match self.socket.try_write(&frame) {
            Ok(n) if n == frame.len() => self.last_sent = now,
            Ok(n) => self.fall_behind(frame.slice(n..)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.fall_behind(frame),
            Err(_) => self.end(),
        }
    }

    fn fall_behind(&mut self, rest: Bytes) {
        self.pending = Some(rest);
        self.mode = Mode::Behind;
        self.wake.notify_one();
    }

    fn end(&mut self) {
        self.mode = Mode::Ended;
        self.wake.notify_one();
    }
}

/// The streams of a shard and how far the shard has written.
pub struct ShardState {
    /// The first entry the shard has not processed.
    pub position: u64,
    members: HashMap<u64, Slot>,
    /// Members by watched account.
    by_account: HashMap<u32, HashSet<u64>>,
    /// Members watching every account.
    everyone: HashSet<u64>,
}

impl ShardState {
    /// The slot of member `id`, while it exists.
    pub fn slot(&mut self, id: u64) -> Option<&mut Slot> {
        self.members.get_mut(&id)
    }

    /// Offers `entry` to every in-sync stream it concerns; whether it concerned any stream.
    fn fan_out(&mut self, entry: &Entry, journal: &Journal, now: Instant) -> bool {
        let account = match &entry.notification {
            Notification::Event(delivery) => match delivery.event {
                Event::StateChange { account_id, .. } => account_id,
                _ => return false,
            },
            // Notices concern every stream.
            _ => {
                for slot in self.members.values_mut() {
                    offer_entry(slot, entry, journal, now);
                }
                return !self.members.is_empty();
            }
        };
        let watching = self.by_account.get(&account);
        let any = watching.is_some_and(|w| !w.is_empty()) || !self.everyone.is_empty();
        for id in watching.into_iter().flatten().chain(self.everyone.iter()) {
            if let Some(slot) = self.members.get_mut(id) {
                offer_entry(slot, entry, journal, now);
            }
        }
        any
    }

    /// Ends every in-sync stream that had not been offered everything before `first`: the shard fell behind the
    /// journal, and entries they may have wanted were dropped unsent. Streams already past it lost nothing.
    fn end_missed(&mut self, first: u64) -> usize {
        let mut ended = 0;
        for slot in self.members.values_mut() {
            if slot.mode == Mode::InSync && slot.next < first {
                slot.end();
                ended += 1;
            }
        }
        ended
    }
}

/// Offers `entry` to `slot` if the shard writes it and has not offered it this entry yet.
fn offer_entry(slot: &mut Slot, entry: &Entry, journal: &Journal, now: Instant) {
    if slot.mode != Mode::InSync || entry.seq < slot.next {
        return;
    }
    slot.next = entry.seq + 1;
    match slot.filter.step(entry, journal) {
        Step::Send(frame) => slot.offer(frame, now),
        Step::Skip => {}
        Step::End => slot.end(),
    }
}

/// A shard (see the module documentation).
pub struct Shard {
    state: Mutex<ShardState>,
    journal: Arc<Journal>,
    metrics: Arc<NodeMetrics>,
    /// Falling behind the journal is logged rate-limited: a flood of events could make it happen again and again.
    lag_log: agora::log_limit::LogLimiter,
}

impl Shard {
    /// A shard starting at the journal's next entry, and the cursor its task reads with.
    pub fn new(journal: Arc<Journal>, metrics: Arc<NodeMetrics>) -> (Arc<Self>, Cursor) {
        let cursor = journal.cursor(journal.next_seq());
        let shard = Arc::new(Shard {
            state: Mutex::new(ShardState {
                position: cursor.position(),
                members: HashMap::new(),
                by_account: HashMap::new(),
                everyone: HashSet::new(),
            }),
            journal,
            metrics,
            lag_log: agora::log_limit::LogLimiter::new(),
        });
        (shard, cursor)
    }

    /// The shard's state. Held only for short, non-blocking work (offering entries is `try_write`s).
    pub fn lock(&self) -> MutexGuard<'_, ShardState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a stream, behind (its task catches it up from `start`); returns what wakes its task.
    pub fn insert(&self, id: u64, socket: Arc<TcpStream>, filter: Arc<Filter>, start: u64) -> Arc<Notify> {
        let wake = Arc::new(Notify::new());
        let mut state = self.lock();
        match &filter.accounts {
            Some(accounts) => {
                for account in accounts {
                    state.by_account.entry(*account).or_default().insert(id);
                }
            }
            None => {
                state.everyone.insert(id);
            }
        }
        state.members.insert(
            id,
            Slot {
                socket,
                filter,
                next: start,
                mode: Mode::Behind,
                pending: None,
                last_sent: Instant::now(),
                wake: wake.clone(),
            },
        );
        wake
    }

    /// Removes a stream.
    pub fn remove(&self, id: u64) {
        let mut state = self.lock();
        let Some(slot) = state.members.remove(&id) else { return };
        match &slot.filter.accounts {
            Some(accounts) => {
                for account in accounts {
                    if let Some(ids) = state.by_account.get_mut(account) {
                        ids.remove(&id);
                        if ids.is_empty() {
                            state.by_account.remove(account);
                        }
                    }
                }
            }
            None => {
                state.everyone.remove(&id);
            }
        }
    }

    /// Streams in sync and behind; for tests.
    #[cfg(test)]
    pub fn modes(&self) -> (usize, usize) {
        let state = self.lock();
        let count = |mode| state.members.values().filter(|s| s.mode == mode).count();
        (count(Mode::InSync), count(Mode::Behind))
    }

    /// Writes every journal entry to the in-sync streams it concerns, until `shutdown`.
    pub async fn run(self: Arc<Self>, mut cursor: Cursor, shutdown: CancellationToken) {
        // Made once: a new `cancelled()` per entry would lock the token's mutex 32 times an event.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            let next = tokio::select! {
                biased;
                () = &mut cancelled => return,
                next = cursor.next() => next,
            };
            let mut state = self.lock();
            match next {
                Ok(entry) => {
                    if state.fan_out(&entry, &self.journal, Instant::now()) {
                        self.metrics
                            .fanout_delay
                            .observe(entry.appended.elapsed().as_secs_f64());
                    }
                    state.position = entry.seq + 1;
                }
                Err(missed) => {
                    let ended = state.end_missed(cursor.position());
                    state.position = cursor.position();
                    drop(state);
                    let (times, log) = self.lag_log.record();
                    if log {
                        tracing::warn!(
                            missed,
                            ended,
                            times,
                            "an EventSource fan-out shard fell behind the node's journal; its streams that may have \
                         missed events are closed (their clients resynchronise)"
                        );
                    }
                }
            }
        }
    }
}
