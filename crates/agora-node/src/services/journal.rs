//! The node's event journal: every notification the node delivers to applications, numbered, serialised once and
//! kept for a while, so that a client that reconnects with `Last-Event-ID` (or polls with `after`) gets everything
//! it missed, nothing twice, and a client too slow for its stream is told how much it lost.
//!
//! One feeder task appends what the coordinator dispatches; every stream and poll reads the journal through a
//! [`Cursor`] at its own pace. The journal is bounded by entries and bytes; the oldest entries go first. Ids are
//! `<epoch>-<seq>`: the epoch is random per process, so an id from an earlier run (or another node) is recognised
//! as one this journal cannot serve, and the client is told to resynchronise instead of being silently resumed at
//! the wrong place (the model of Centrifugo's offset + epoch).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use agora::Notification;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::services::notification_json::{notification_json, notification_name};

/// Default bound on entries: a client may be away a minute at 10,000 events/s.
pub const DEFAULT_MAX_EVENTS: usize = 600_000;

/// Default bound on bytes (serialised JSON plus bookkeeping).
pub const DEFAULT_MAX_BYTES: usize = 128 << 20;

/// What an entry holds besides its JSON, counted so that `journal-bytes` bounds the memory the journal really takes:
/// the entry and its `Arc`, the event it keeps alive in its received batch, the ring's slot, and the allocator's
/// header of each of those allocations. (Counting the JSON alone left the journal at 1.9 to 2.3 times its bound.)
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>()
    + 16 // the Arc's counts
    + std::mem::size_of::<agora::Delivery>()
    + std::mem::size_of::<Arc<Entry>>()
    + 3 * 16; // allocator headers and rounding of the entry, its JSON and the batch

/// What one entry is counted for: [`ENTRY_OVERHEAD`], its JSON, and as much again for the heap the event holds
/// (its strings, at most as long as its JSON) or, for a state change, the EventSource frame made from it.
fn entry_cost(json_len: usize) -> usize {
    ENTRY_OVERHEAD + 2 * json_len
}

/// Entries a cursor takes from the journal per lock.
const READ_BATCH: usize = 256;

/// One notification as streams send it.
#[derive(Debug)]
pub struct Entry {
    /// Its number in this journal (from 1).
    pub seq: u64,
    /// The SSE event name (`state_change`, `resync`...).
    pub name: &'static str,
    /// Its JSON, serialised once for every stream.
    pub data: Arc<str>,
    /// The notification itself, for streams that need its fields (EventSource).
    pub notification: Notification,
    /// The EventSource frame of a state change, made by the first stream that sends it whole and shared by all the
    /// others.
    frame: std::sync::OnceLock<bytes::Bytes>,
    /// The account of a state change: streams that watch other accounts skip it without waking.
    account: Option<u32>,
    /// When it was appended (for the fan-out's delay metric).
    pub appended: std::time::Instant,
}

impl Entry {
    /// The shared EventSource frame of this entry, made once with `make`.
    pub fn shared_frame(&self, make: impl FnOnce() -> bytes::Bytes) -> bytes::Bytes {
        self.frame.get_or_init(make).clone()
    }
}

/// Where a client asked to resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// From this sequence number on.
    From(u64),
    /// The id is from another process or malformed: the client must resynchronise.
    Unknown,
}

struct Ring {
    entries: VecDeque<Arc<Entry>>,
    bytes: usize,
    /// Sequence number of the next entry appended.
    next_seq: u64,
}

impl Ring {
    fn first_seq(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |e| e.seq)
    }
}

/// The journal (see the module documentation).
pub struct Journal {
    epoch: u64,
    /// One wake-up per watched account, so that an account's state change wakes only the streams that watch it
    /// (10,000 EventSource streams over 100 accounts: 100 wake-ups per event, not 10,000).
    accounts: Mutex<std::collections::HashMap<u32, Arc<tokio::sync::Notify>>>,
    max_events: usize,
    max_bytes: usize,
    /// Read by every stream woken for an entry (100s at once): a read lock, so they do not queue behind each other.
    ring: RwLock<Ring>,
    /// The sequence number of the last entry (0: none yet), for waiting streams.
    last_tx: watch::Sender<u64>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// An empty journal with these bounds (each at least 1).
    pub fn new(max_events: usize, max_bytes: usize) -> Arc<Self> {
        Arc::new(Journal {
            epoch: rand::random::<u64>() >> 16,
            accounts: Mutex::new(std::collections::HashMap::new()),
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
            ring: RwLock::new(Ring {
                entries: VecDeque::new(),
                bytes: 0,
                next_seq: 1,
            }),
            last_tx: watch::channel(0).0,
        })
    }

    fn ring(&self) -> RwLockReadGuard<'_, Ring> {
        self.ring.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn ring_mut(&self) -> RwLockWriteGuard<'_, Ring> {
        self.ring.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends a notification, dropping the oldest entries beyond the bounds.
    pub fn append(&self, notification: Notification) {
        let data: Arc<str> = notification_json(&notification).to_string().into();
        let name = notification_name(&notification);
        let is_notice = !matches!(notification, Notification::Event(_));
        let account = match &notification {
            Notification::Event(d) => match d.event {
                agora::Event::StateChange { account_id, .. } => Some(account_id),
                _ => None,
            },
            _ => None,
        };
        let seq = {
            let mut ring = self.ring_mut();
            let seq = ring.next_seq;
            ring.next_seq += 1;
            ring.bytes += entry_cost(data.len());
            ring.entries.push_back(Arc::new(Entry {
                seq,
                name,
                data,
                notification,
                frame: std::sync::OnceLock::new(),
                appended: std::time::Instant::now(),
                account,
            }));
            while ring.entries.len() > self.max_events || (ring.bytes > self.max_bytes && ring.entries.len() > 1) {
                if let Some(old) = ring.entries.pop_front() {
                    ring.bytes -= entry_cost(old.data.len());
                }
            }
            seq
        };
        self.last_tx.send_replace(seq);
        let accounts = self.accounts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match account {
            Some(account) => {
                if let Some(notify) = accounts.get(&account) {
                    notify.notify_waiters();
                }
            }
            // Notices (resync, lagged) concern every stream.
            None if is_notice => {
                for notify in accounts.values() {
                    notify.notify_waiters();
                }
            }
            None => {}
        }
    }

    /// The wake-up of one account, created on first use; forgotten when the last cursor that watched it is dropped
    /// (see `Drop for Cursor`), so that accounts named once do not stay in memory, and on every notice's walk, for
    /// good.
    fn account_notify(&self, account: u32) -> Arc<tokio::sync::Notify> {
        let mut accounts = self.accounts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        accounts.entry(account).or_default().clone()
    }

    /// Forgets the wake-ups of `accounts` that no cursor but the caller's holds (the caller is dropping its own).
    fn release_accounts(&self, accounts: &[(u32, Arc<tokio::sync::Notify>)]) {
        let mut map = self.accounts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (account, notify) in accounts {
            // Under the lock no new cursor can take a clone: the map's and the caller's are the only ones left.
            if Arc::strong_count(notify) <= 2 {
                map.remove(account);
            }
        }
    }

    /// How many accounts have a wake-up (some cursor watches them).
    pub fn watched_accounts(&self) -> usize {
        self.accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// The id clients see for sequence number `seq`.
    pub fn id(&self, seq: u64) -> String {
        format!("{:x}-{seq}", self.epoch)
    }

    /// Where `id` (a `Last-Event-ID` or `after`) resumes: right after that entry, if this journal numbered it.
    pub fn resume(&self, id: &str) -> Resume {
        let parsed = id
            .split_once('-')
            .and_then(|(epoch, seq)| Some((u64::from_str_radix(epoch, 16).ok()?, seq.parse::<u64>().ok()?)));
        match parsed {
            Some((epoch, seq)) if epoch == self.epoch && seq < self.ring().next_seq => Resume::From(seq + 1),
            _ => Resume::Unknown,
        }
    }

    /// The sequence number the next entry will get: a cursor from here sees only what comes next.
    pub fn next_seq(&self) -> u64 {
        self.ring().next_seq
    }

    /// The oldest sequence number still held.
    pub fn first_seq(&self) -> u64 {
        self.ring().first_seq()
    }

    /// Entries held and their bytes, for metrics.
    pub fn size(&self) -> (usize, usize) {
        let ring = self.ring();
        (ring.entries.len(), ring.bytes)
    }

    /// A cursor reading from `seq` on.
    pub fn cursor(self: &Arc<Self>, seq: u64) -> Cursor {
        Cursor {
            journal: self.clone(),
            next: seq,
            buffered: VecDeque::new(),
            last_rx: self.last_tx.subscribe(),
            accounts: None,
            examined: seq,
        }
    }

    /// Up to `limit` entries from `from` on that `wanted` keeps (the others are passed over without being copied);
    /// `Err(first)` when entries before `first` were dropped. Returns the sequence number after the last entry
    /// examined.
    fn read(
        &self,
        from: u64,
        limit: usize,
        wanted: impl Fn(&Entry) -> bool,
        out: &mut VecDeque<Arc<Entry>>,
    ) -> Result<u64, u64> {
        let ring = self.ring();
        let first = ring.first_seq();
        if from < first {
            return Err(first);
        }
        let skip = usize::try_from(from - first).unwrap_or(usize::MAX);
        let mut next = from;
        for entry in ring.entries.iter().skip(skip) {
            if out.len() >= limit {
                break;
            }
            next = entry.seq + 1;
            if wanted(entry) {
                out.push_back(entry.clone());
            }
        }
        Ok(next)
    }
}

/// One reader's position in the journal.
pub struct Cursor {
    journal: Arc<Journal>,
    next: u64,
    buffered: VecDeque<Arc<Entry>>,
    last_rx: watch::Receiver<u64>,
    /// Only these accounts' state changes (and notices): the cursor sleeps through every other event.
    accounts: Option<Vec<(u32, Arc<tokio::sync::Notify>)>>,
    /// The sequence number after the last entry the latest read examined (kept or passed over).
    examined: u64,
}

impl Drop for Cursor {
    fn drop(&mut self) {
        if let Some(accounts) = self.accounts.take() {
            self.journal.release_accounts(&accounts);
        }
    }
}

impl Cursor {
    /// Restricts the cursor to these accounts' state changes and to notices (EventSource streams).
    pub fn only_accounts(mut self, accounts: impl IntoIterator<Item = u32>) -> Self {
        let journal = self.journal.clone();
        if let Some(previous) = self.accounts.take() {
            journal.release_accounts(&previous);
        }
        self.accounts = Some(accounts.into_iter().map(|a| (a, journal.account_notify(a))).collect());
        self
    }

    /// The next entry, waiting for one. `Err(missed)` when the entries from the cursor on were dropped before it
    /// read them (the reader was too slow, or resumed too late): how many it lost.
    pub async fn next(&mut self) -> Result<Arc<Entry>, u64> {
        loop {
            if let Some(entry) = self.take() {
                return Ok(entry);
            }
            if let Some([(_, notify)]) = self.accounts.as_deref() {
                // One account (the usual EventSource stream): one waiter, no allocation per wake-up.
                let notify = notify.clone();
                let wait = notify.notified();
                tokio::pin!(wait);
                // Registered before looking, so that an append in between is not missed.
                wait.as_mut().enable();
                self.fill()?;
                if self.buffered.is_empty() {
                    wait.await;
                }
                continue;
            }
            if let Some(accounts) = self.accounts.clone() {
                // Registered before looking, so that an append in between is not missed.
                let mut waits: Vec<_> = accounts.iter().map(|(_, n)| Box::pin(n.notified())).collect();
                for wait in &mut waits {
                    wait.as_mut().enable();
                }
                self.fill()?;
                if self.buffered.is_empty() {
                    futures::future::select_all(waits).await;
                }
                continue;
            }
            self.fill()?;
            if !self.buffered.is_empty() {
                continue;
            }
            let next = self.next;
            if self.last_rx.wait_for(|last| *last >= next).await.is_err() {
                // The journal is gone (shutdown): nothing more will come.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The next entry if one is there now.
    pub fn try_next(&mut self) -> Option<Result<Arc<Entry>, u64>> {
        if let Some(entry) = self.take() {
            return Some(Ok(entry));
        }
        if let Err(missed) = self.fill() {
            return Some(Err(missed));
        }
        self.take().map(Ok)
    }

    /// The sequence number this cursor reads next.
    pub fn position(&self) -> u64 {
        self.next
    }

    fn take(&mut self) -> Option<Arc<Entry>> {
        let entry = self.buffered.pop_front()?;
        self.next = entry.seq + 1;
        if self.buffered.is_empty() {
            // What the read passed over after this entry need not be looked at again.
            self.next = self.next.max(self.examined);
        }
        Some(entry)
    }

    fn fill(&mut self) -> Result<(), u64> {
        let accounts = self.accounts.as_deref();
        let wanted = |entry: &Entry| match (accounts, entry.account) {
            (Some(accounts), Some(account)) => accounts.iter().any(|(a, _)| *a == account),
            // Other events are of no interest to an account-filtered cursor; notices always are.
            (Some(_), None) => !matches!(entry.notification, Notification::Event(_)),
            (None, _) => true,
        };
        match self.journal.read(self.next, READ_BATCH, wanted, &mut self.buffered) {
            Ok(examined) => {
                self.examined = examined;
                if self.buffered.is_empty() {
                    // Everything up to `examined` was passed over: do not look at it again.
                    self.next = self.next.max(examined);
                }
                Ok(())
            }
            Err(first) => {
                let missed = first - self.next;
                self.next = first;
                Err(missed)
            }
        }
    }
}

/// Appends every notification of `subscription` until shutdown.
pub async fn feed(journal: Arc<Journal>, mut subscription: agora::Subscription, shutdown: CancellationToken) {
    loop {
        let notification = tokio::select! {
            () = shutdown.cancelled() => break,
            n = subscription.recv() => match n {
                Some(n) => n,
                None => break,
            },
        };
        journal.append(notification);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(missed: u64) -> Notification {
        Notification::Lagged { missed }
    }

    #[tokio::test]
    async fn cursors_resume_after_an_id_and_report_what_was_dropped() {
        let journal = Journal::new(3, usize::MAX);
        for i in 0..5 {
            journal.append(notice(i));
        }
        assert_eq!(journal.size().0, 3, "bounded by entries");
        assert_eq!((journal.first_seq(), journal.next_seq()), (3, 6));
        let id = journal.id(4);
        assert_eq!(journal.resume(&id), Resume::From(5));
        let mut cursor = journal.cursor(5);
        assert_eq!(cursor.next().await.map(|e| e.seq), Ok(5));
        let mut late = journal.cursor(1);
        assert_eq!(late.next().await.map(|e| e.seq), Err(2), "entries 1 and 2 are gone");
        assert_eq!(
            late.next().await.map(|e| e.seq),
            Ok(3),
            "then it reads on from the oldest held"
        );
        assert_eq!(journal.resume("ffff-1"), Resume::Unknown, "another epoch");
        assert_eq!(journal.resume("garbage"), Resume::Unknown);
        assert_eq!(journal.resume(&journal.id(99)), Resume::Unknown, "not numbered yet");
    }

    #[tokio::test]
    async fn a_waiting_cursor_wakes_on_append_and_bytes_bound_the_journal() {
        let journal = Journal::new(usize::MAX, 3 * entry_cost(40));
        let mut cursor = journal.cursor(journal.next_seq());
        assert!(cursor.try_next().is_none());
        let reader = tokio::spawn(async move { cursor.next().await.map(|e| e.seq) });
        journal.append(notice(1));
        assert_eq!(reader.await.expect("task"), Ok(1));
        for i in 0..10 {
            journal.append(notice(i));
        }
        let (entries, bytes) = journal.size();
        assert!(
            entries <= 3 && bytes <= 3 * entry_cost(40),
            "{entries} entries, {bytes} bytes"
        );
    }

    #[test]
    fn accounts_are_forgotten_when_the_last_cursor_watching_them_ends() {
        let journal = Journal::new(100, usize::MAX);
        // Short-lived streams naming 1,000 fresh accounts each, as a flood of requests would.
        for round in 0..200u32 {
            let first = round * 1_000;
            let cursor = journal.cursor(journal.next_seq()).only_accounts(first..first + 1_000);
            assert_eq!(journal.watched_accounts(), 1_000);
            drop(cursor);
        }
        assert_eq!(journal.watched_accounts(), 0, "nothing is kept once every stream ended");
        // An account two streams watch stays until the second ends.
        let a = journal.cursor(journal.next_seq()).only_accounts([7, 8]);
        let b = journal.cursor(journal.next_seq()).only_accounts([7]);
        drop(a);
        assert_eq!(journal.watched_accounts(), 1, "7 is still watched");
        drop(b);
        assert_eq!(journal.watched_accounts(), 0);
    }

    #[tokio::test]
    async fn an_account_cursor_sleeps_through_other_accounts_and_wakes_for_its_own_and_for_notices() {
        // Real dispatched events, from a single-node coordinator, as the feeder appends them.
        let node = agora::Coordinator::start(&agora::config::Config::default(), agora::StartOptions::default())
            .await
            .expect("single node");
        let mut events = node.subscribe();
        let mut change = async |account_id| {
            let event = agora::Event::StateChange {
                account_id,
                change_id: 1,
                types: agora::DataTypes::EMPTY,
            };
            node.publish(event).await.expect("publish");
            events.recv().await.expect("delivered")
        };
        let journal = Journal::new(100, usize::MAX);
        let mut cursor = journal.cursor(journal.next_seq()).only_accounts([7]);
        journal.append(change(1).await);
        journal.append(change(2).await);
        assert!(cursor.try_next().is_none(), "other accounts are passed over");
        let (three, seven) = (change(3).await, change(7).await);
        let waiting = tokio::spawn(async move {
            let first = cursor.next().await.map(|e| e.seq);
            let second = cursor.next().await.map(|e| e.name);
            (first, second)
        });
        tokio::task::yield_now().await;
        journal.append(three);
        journal.append(seven);
        journal.append(notice(0));
        let (first, second) = waiting.await.expect("task");
        assert_eq!(first, Ok(4), "woken for its account's change, entry 4");
        assert_eq!(second, Ok("lagged"), "and for a notice");
    }
}
