//! The node's event journal: every notification the node delivers to applications, numbered, serialised once and
//! kept for a while, so that a client that reconnects with `Last-Event-ID` (or polls with `after`) gets everything
//! it missed, nothing twice, and a client too slow for its stream is told how much it lost.
//!
//! One feeder task appends what the coordinator dispatches; every stream and poll reads the journal through a
//! [`Cursor`] at its own pace. The journal is bounded by entries and bytes; the oldest entries go first. Ids are
//! `<epoch>-<seq>`: the epoch is random per process, so an id from an earlier run (or another node) is recognised
//! as one this journal cannot serve, and the client is told to resynchronise instead of being silently resumed at
//! the wrong place (the model of Centrifugo's offset + epoch).
//!
//! In the durable mode the journal reads the coordinator's stream-ordered subscription, and the ids it gives are
//! cluster-wide (docs/stream-ids.md): an event's id is its place in the JetStream stream (the stream's incarnation,
//! the message's stream sequence, the record's index in that batch), the same on every node, so a client resumes on
//! any node. What is not in the stream (Stalwart-bus events, notices) takes the place of the stream event before it
//! plus this journal's own number.

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

/// Where an entry sits in the cluster-wide order of the durable mode: ordered by the stream's incarnation (as a
/// generation this journal counts), the stream sequence and the record index; an entry that is not in the stream
/// (`local`) sits right after the stream event before it. Core-mode entries all have the default place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    generation: u32,
    seq: u64,
    index: u32,
    local: bool,
}

/// The durable mode's id of a place in the stream: `<incarnation hex>.<stream seq>.<record index>`.
fn stream_id(incarnation: u64, place: Place) -> String {
    format!("{incarnation:x}.{}.{}", place.seq, place.index)
}

/// One notification as streams send it.
#[derive(Debug)]
pub struct Entry {
    /// Its number in this journal (from 1).
    pub seq: u64,
    /// Its place in the cluster-wide order (durable mode).
    place: Place,
    /// The incarnation of the stream its place is in (durable mode), so that its id is made without a lock.
    incarnation: u64,
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
    /// After this place in the durable stream (an id another node, or an earlier run of this one, issued).
    After(Place),
    /// The id names a place in the stream that this journal no longer holds (or never held): the client must
    /// resynchronise.
    Expired,
    /// The id is from another process (core mode), another incarnation of the stream, or malformed: the client
    /// must resynchronise.
    Unknown,
}

/// The durable mode's side of the ring: the stream's incarnation and what the ring holds of it.
#[derive(Debug)]
struct StreamIds {
    /// The incarnation of the stream the current generation reads.
    incarnation: u64,
    generation: u32,
    /// The place of the last entry appended (at first, where the node's consumer started).
    last: Place,
    /// Entries before this place may be missing (and the one at it, if it is the last dropped): dropped from the
    /// ring, before this node started reading, or lost when the feed lagged.
    floor: Place,
    /// The feed lagged and no stream event came since: the floor moves up to the next one.
    lagging: bool,
    /// The stream sequence the node's consumer started after: the history a journal is prefilled with ends there.
    start_seq: u64,
}

struct Ring {
    entries: VecDeque<Arc<Entry>>,
    bytes: usize,
    /// Sequence number of the next entry appended.
    next_seq: u64,
    /// Durable mode only.
    stream: Option<StreamIds>,
}

impl Ring {
    fn first_seq(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |e| e.seq)
    }
}

/// The journal (see the module documentation).
pub struct Journal {
    epoch: u64,
    /// Durable mode: ids are places in the stream.
    cluster_wide: bool,
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
    /// An empty journal with these bounds (each at least 1), with ids of its own (core mode).
    pub fn new(max_events: usize, max_bytes: usize) -> Arc<Self> {
        Self::build(max_events, max_bytes, None)
    }

    /// An empty journal of the durable mode, whose ids are places in the stream, reading it after `start` (where
    /// the node's consumer started: the journal holds nothing before).
    pub fn cluster_wide(max_events: usize, max_bytes: usize, start: agora::StreamPosition) -> Arc<Self> {
        let place = Place {
            generation: 0,
            seq: start.seq,
            index: start.index,
            local: false,
        };
        Self::build(
            max_events,
            max_bytes,
            Some(StreamIds {
                incarnation: start.incarnation,
                generation: 0,
                last: place,
                floor: place,
                lagging: false,
                start_seq: start.seq,
            }),
        )
    }

    fn build(max_events: usize, max_bytes: usize, stream: Option<StreamIds>) -> Arc<Self> {
        Arc::new(Journal {
            epoch: rand::random::<u64>() >> 16,
            cluster_wide: stream.is_some(),
            accounts: Mutex::new(std::collections::HashMap::new()),
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
            ring: RwLock::new(Ring {
                entries: VecDeque::new(),
                bytes: 0,
                next_seq: 1,
                stream,
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
        let position = match &notification {
            Notification::Event(d) => d.stream_position(),
            _ => None,
        };
        self.append_placed(notification, position);
    }

    /// Appends an event read from the stream's history (before where this node's consumer started), while nothing
    /// else was appended yet: the first one moves the floor down to just before it, so that ids from there on resume
    /// on this node too. Anything else is ignored.
    pub fn prefill(&self, event: agora::EventRef) {
        let Some(position) = event.stream_position() else {
            return;
        };
        {
            let mut ring = self.ring_mut();
            let empty = ring.entries.is_empty();
            let Some(ids) = ring.stream.as_mut() else { return };
            if position.incarnation != ids.incarnation || position.seq > ids.start_seq {
                return;
            }
            if empty {
                ids.floor = ids.floor.min(Place {
                    generation: ids.generation,
                    seq: position.seq.saturating_sub(1),
                    index: u32::MAX,
                    local: false,
                });
            }
        }
        self.append_placed(Notification::Event(event), Some(position));
    }

    /// Appends a notification at this place in the stream (`None`: not in the stream).
    fn append_placed(&self, notification: Notification, position: Option<agora::StreamPosition>) {
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
        let lagged = matches!(notification, Notification::Lagged { .. });
        let seq = {
            let mut ring = self.ring_mut();
            let seq = ring.next_seq;
            ring.next_seq += 1;
            ring.bytes += entry_cost(data.len());
            let (place, incarnation) = ring
                .stream
                .as_mut()
                .map_or_else(Default::default, |ids| (ids.place(position, lagged), ids.incarnation));
            ring.entries.push_back(Arc::new(Entry {
                seq,
                place,
                incarnation,
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
                    if let Some(ids) = &mut ring.stream {
                        ids.floor = ids.floor.max(old.place);
                    }
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

    /// The id clients see for an entry.
    pub fn id_of(&self, entry: &Entry) -> String {
        if !self.cluster_wide {
            self.local_id(entry.seq)
        } else if entry.place.local {
            format!(
                "{}.{}",
                stream_id(entry.incarnation, entry.place),
                self.local_id(entry.seq)
            )
        } else {
            stream_id(entry.incarnation, entry.place)
        }
    }

    /// The id of the entry numbered `seq`, or of the place before everything held when it is gone (or 0: nothing
    /// yet): what resumes right after it.
    pub fn id(&self, seq: u64) -> String {
        let entry = {
            let ring = self.ring();
            let Some(ids) = &ring.stream else {
                return self.local_id(seq);
            };
            let first = ring.first_seq();
            if seq < first || seq >= ring.next_seq {
                return stream_id(ids.incarnation, ids.floor);
            }
            let index = usize::try_from(seq - first).unwrap_or(usize::MAX);
            match ring.entries.get(index) {
                Some(entry) => entry.clone(),
                None => return stream_id(ids.incarnation, ids.floor),
            }
        };
        self.id_of(&entry)
    }

    /// The id of a cursor's position: right after what it returned last, or the place a resumed cursor still waits
    /// to pass.
    pub fn cursor_id(&self, cursor: &Cursor) -> String {
        if let Some(place) = cursor.skip_through {
            if let Some(ids) = &self.ring().stream {
                return stream_id(ids.incarnation, place);
            }
        }
        self.id(cursor.position().saturating_sub(1))
    }

    /// This journal's own id for `seq`: `<epoch hex>-<seq>`.
    fn local_id(&self, seq: u64) -> String {
        format!("{:x}-{seq}", self.epoch)
    }

    /// Where `id` (a `Last-Event-ID` or `after`) resumes: right after that entry, if this journal numbered it, or
    /// (durable mode) right after the place in the stream it names.
    pub fn resume(&self, id: &str) -> Resume {
        let ring = self.ring();
        let (stream_part, local_part) = match id.rsplit_once('.') {
            // `<incarnation>.<seq>.<index>.<epoch>-<n>`: a local entry after a stream place.
            Some((stream, local)) if local.contains('-') => (Some(stream), Some(local)),
            Some(_) => (Some(id), None),
            None => (None, Some(id)),
        };
        if let Some((epoch, seq)) = local_part.and_then(parse_local_id) {
            if epoch == self.epoch {
                return if seq < ring.next_seq {
                    Resume::From(seq + 1)
                } else {
                    Resume::Unknown
                };
            }
        }
        let (Some(ids), Some(stream_part)) = (&ring.stream, stream_part) else {
            return Resume::Unknown;
        };
        let Some((incarnation, seq, index)) = parse_stream_id(stream_part) else {
            return Resume::Unknown;
        };
        if incarnation != ids.incarnation {
            return Resume::Unknown;
        }
        let place = Place {
            generation: ids.generation,
            seq,
            index,
            local: false,
        };
        // While the feed's loss is not bounded yet (no stream event since), anything after it may be in the hole.
        if place < ids.floor || (ids.lagging && place > ids.last) {
            return Resume::Expired;
        }
        Resume::After(place)
    }

    /// A cursor right after `place`: at the first entry past it, or (the node has not read that far yet) from the
    /// next entry on, passing over whatever is still at or before it.
    pub fn cursor_after(self: &Arc<Self>, place: Place) -> Cursor {
        let (start, waiting) = {
            let ring = self.ring();
            let index = ring.entries.partition_point(|e| e.place <= place);
            match ring.entries.get(index) {
                Some(entry) => (entry.seq, false),
                None => (ring.next_seq, ring.stream.as_ref().is_some_and(|ids| ids.last < place)),
            }
        };
        let mut cursor = self.cursor(start);
        if waiting {
            cursor.skip_through = Some(place);
        }
        cursor
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
            skip_through: None,
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

impl StreamIds {
    /// The place of the next entry: its stream position, or (not in the stream) right after the last one. A lag of
    /// the feed means events are missing after the last place: ids up to there can no longer be served exactly.
    fn place(&mut self, position: Option<agora::StreamPosition>, lagged: bool) -> Place {
        if lagged {
            // The lost events come after the last place, up to the next stream event this journal gets.
            self.floor = self.floor.max(Place {
                local: true,
                ..self.last
            });
            self.lagging = true;
        }
        let Some(position) = position else {
            return Place {
                local: true,
                ..self.last
            };
        };
        if position.incarnation != self.incarnation {
            // A re-created stream numbers from 1 again: a new generation, and nothing before it can be resumed.
            self.incarnation = position.incarnation;
            self.generation += 1;
            self.floor = Place {
                generation: self.generation,
                ..Place::default()
            };
        }
        self.last = Place {
            generation: self.generation,
            seq: position.seq,
            index: position.index,
            local: false,
        };
        if std::mem::take(&mut self.lagging) {
            self.floor = self.floor.max(self.last);
        }
        self.last
    }
}

/// `<epoch hex>-<seq>`.
fn parse_local_id(id: &str) -> Option<(u64, u64)> {
    let (epoch, seq) = id.split_once('-')?;
    Some((u64::from_str_radix(epoch, 16).ok()?, seq.parse().ok()?))
}

/// `<incarnation hex>.<stream seq>.<record index>`.
fn parse_stream_id(id: &str) -> Option<(u64, u64, u32)> {
    let mut parts = id.split('.');
    let incarnation = u64::from_str_radix(parts.next()?, 16).ok()?;
    let seq = parts.next()?.parse().ok()?;
    let index = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((incarnation, seq, index))
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
    /// Resumed after a place the node had not read yet: entries at or before it are passed over.
    skip_through: Option<Place>,
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

    /// Whether the cursor still passes over entries up to a place another node's id named (this node had not read
    /// that far when the client resumed).
    pub fn is_catching_up(&self) -> bool {
        self.skip_through.is_some()
    }

    /// The sequence number this cursor reads next.
    pub fn position(&self) -> u64 {
        self.next
    }

    fn take(&mut self) -> Option<Arc<Entry>> {
        loop {
            let entry = self.buffered.pop_front()?;
            self.next = entry.seq + 1;
            if self.buffered.is_empty() {
                // What the read passed over after this entry need not be looked at again.
                self.next = self.next.max(self.examined);
            }
            match self.skip_through {
                Some(place) if entry.place <= place => continue,
                Some(_) => self.skip_through = None,
                None => {}
            }
            return Some(entry);
        }
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

/// Appends every notification of `subscription` until shutdown (in the durable mode, the coordinator's
/// stream-ordered subscription).
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

    /// Durable-mode journals of two nodes: the same stream events at the same positions, each with local entries
    /// (Stalwart events, notices) of its own in between.
    mod cluster_wide {
        use super::*;
        use agora::StreamPosition;

        const INCARNATION: u64 = 0x1234;

        fn at(seq: u64, index: u32) -> Option<StreamPosition> {
            Some(StreamPosition {
                incarnation: INCARNATION,
                seq,
                index,
            })
        }

        /// Real dispatched events (change id `n`) from a single-node coordinator.
        struct Events {
            _node: agora::Coordinator,
            events: agora::Subscription,
            node: agora::Coordinator,
        }

        impl Events {
            async fn new() -> Self {
                let node = agora::Coordinator::start(&agora::config::Config::default(), agora::StartOptions::default())
                    .await
                    .expect("single node");
                Events {
                    events: node.subscribe(),
                    _node: node.clone(),
                    node,
                }
            }

            async fn change(&mut self, change_id: u64) -> Notification {
                let event = agora::Event::StateChange {
                    account_id: 1,
                    change_id,
                    types: agora::DataTypes::EMPTY,
                };
                self.node.publish(event).await.expect("publish");
                self.events.recv().await.expect("delivered")
            }
        }

        /// A local entry (not in the stream) that loses nothing.
        fn local() -> Notification {
            Notification::Resync {
                node: agora::Origin::Agora(agora::NodeId::new(9).expect("non-zero")),
                missed: 0,
                reason: agora::ResyncReason::SenderRestarted,
            }
        }

        fn change_id(entry: &Entry) -> Option<u64> {
            match &entry.notification {
                Notification::Event(d) => match d.event {
                    agora::Event::StateChange { change_id, .. } => Some(change_id),
                    _ => None,
                },
                _ => None,
            }
        }

        fn journal(start_seq: u64) -> Arc<Journal> {
            Journal::cluster_wide(
                100,
                usize::MAX,
                StreamPosition {
                    incarnation: INCARNATION,
                    seq: start_seq,
                    index: u32::MAX,
                },
            )
        }

        /// Reads what a cursor has now: change ids, and `None` for a local notice.
        fn drain(cursor: &mut Cursor) -> Vec<Option<u64>> {
            std::iter::from_fn(|| cursor.try_next())
                .map(|e| change_id(&e.expect("nothing dropped")))
                .collect()
        }

        #[tokio::test]
        async fn an_id_from_one_node_resumes_right_after_the_same_event_on_another() {
            let mut events = Events::new().await;
            let (a, b) = (journal(10), journal(10));
            // Stream messages 11 (two events, a heartbeat record in between) and 12; node A has a local notice
            // after 11.0, node B one after 11.2.
            a.append_placed(events.change(1).await, at(11, 0));
            a.append_placed(local(), None);
            a.append_placed(events.change(2).await, at(11, 2));
            a.append_placed(events.change(3).await, at(12, 0));
            b.append_placed(events.change(1).await, at(11, 0));
            b.append_placed(events.change(2).await, at(11, 2));
            b.append_placed(local(), None);
            b.append_placed(events.change(3).await, at(12, 0));

            let first = a.cursor(1).try_next().expect("held").expect("held");
            let id = a.id_of(&first);
            assert_eq!(
                id,
                format!("{INCARNATION:x}.11.0"),
                "the stream's place, not the node's number"
            );
            let resumed = b.resume(&id);
            let Resume::After(place) = resumed else {
                panic!("B resumes A's id: {resumed:?}")
            };
            assert_eq!(drain(&mut b.cursor_after(place)), [Some(2), None, Some(3)]);

            // A's local notice: B resumes after the stream event before it (B's own local entries may repeat).
            let notice_id = a.id(2);
            assert!(notice_id.starts_with(&format!("{INCARNATION:x}.11.0.")), "{notice_id}");
            let Resume::After(place) = b.resume(&notice_id) else {
                panic!("B resumes A's local id")
            };
            assert_eq!(drain(&mut b.cursor_after(place)), [Some(2), None, Some(3)]);
            // ...and A itself resumes its own local id exactly.
            assert_eq!(a.resume(&notice_id), Resume::From(3));

            // The last event's id: nothing more to read on either node.
            let last = a.id(4);
            for journal in [&a, &b] {
                let Resume::After(place) = journal.resume(&last) else {
                    panic!("resumes")
                };
                assert!(drain(&mut journal.cursor_after(place)).is_empty());
            }
        }

        #[tokio::test]
        async fn a_node_behind_the_id_passes_over_what_the_client_already_has() {
            let mut events = Events::new().await;
            let behind = journal(10);
            behind.append_placed(events.change(1).await, at(11, 0));
            // The client saw 12.0 on a node that is ahead.
            let id = format!("{INCARNATION:x}.12.0");
            let Resume::After(place) = behind.resume(&id) else {
                panic!("resumable")
            };
            let mut cursor = behind.cursor_after(place);
            assert!(cursor.is_catching_up());
            assert_eq!(
                behind.cursor_id(&cursor),
                id,
                "a poll that finds nothing yet hands the id back"
            );
            behind.append_placed(events.change(2).await, at(12, 0));
            behind.append_placed(local(), None);
            behind.append_placed(events.change(3).await, at(13, 0));
            assert_eq!(drain(&mut cursor), [None, Some(3)], "12.0 is not sent again");
            assert!(!cursor.is_catching_up());
        }

        #[tokio::test]
        async fn ids_the_journal_cannot_serve_are_expired_or_unknown() {
            let mut events = Events::new().await;
            let journal = Journal::cluster_wide(
                2,
                usize::MAX,
                StreamPosition {
                    incarnation: INCARNATION,
                    seq: 10,
                    index: u32::MAX,
                },
            );
            assert_eq!(
                journal.resume(&format!("{INCARNATION:x}.9.0")),
                Resume::Expired,
                "before this node started reading"
            );
            assert!(matches!(
                journal.resume(&format!("{INCARNATION:x}.10.4294967295")),
                Resume::After(_)
            ));
            for seq in 11..15 {
                journal.append_placed(events.change(seq).await, at(seq, 0));
            }
            assert_eq!(
                journal.resume(&format!("{INCARNATION:x}.11.0")),
                Resume::Expired,
                "dropped"
            );
            assert!(
                matches!(journal.resume(&format!("{INCARNATION:x}.12.0")), Resume::After(_)),
                "the last dropped entry's id: everything after it is held"
            );
            assert_eq!(
                journal.resume("ffff.12.0"),
                Resume::Unknown,
                "another incarnation of the stream"
            );
            assert_eq!(journal.resume("zz.12.0"), Resume::Unknown);
            assert_eq!(journal.resume(&format!("{INCARNATION:x}.12")), Resume::Unknown);
            assert_eq!(journal.resume(&format!("{INCARNATION:x}.12.0.1")), Resume::Unknown);
            // The feed lagged: events after the last place are missing, so its id can no longer be served.
            journal.append_placed(notice(5), None);
            assert_eq!(journal.resume(&format!("{INCARNATION:x}.14.0")), Resume::Expired);
            assert_eq!(
                journal.resume(&format!("{INCARNATION:x}.15.0")),
                Resume::Expired,
                "an id from another node, inside the hole"
            );
            journal.append_placed(events.change(16).await, at(16, 0));
            assert_eq!(journal.resume(&format!("{INCARNATION:x}.15.0")), Resume::Expired);
            assert!(matches!(
                journal.resume(&format!("{INCARNATION:x}.16.0")),
                Resume::After(_)
            ));
            // A re-created stream: a new generation, the old ids are unknown.
            journal.append_placed(
                events.change(1).await,
                Some(StreamPosition {
                    incarnation: 0x9999,
                    seq: 1,
                    index: 0,
                }),
            );
            assert_eq!(journal.resume(&format!("{INCARNATION:x}.14.0")), Resume::Unknown);
            assert!(matches!(journal.resume("9999.1.0"), Resume::After(_)));
        }
    }
}
