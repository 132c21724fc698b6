//! Local fan-out: hands every event (local and remote) to every local subscriber, a whole batch at a time.
//!
//! One broadcast item per received batch, not per event: a 10,000-event batch costs one channel operation and one
//! allocation, and the subscriber walks it in place. Items carry a dispatch sequence number, so a subscriber that
//! falls behind learns exactly how many events it missed (the broadcast channel itself only counts items).

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::message::StoredAt;
use super::{Delivery, Notification, StreamPosition};
use crate::stats::Stats;

/// The events of one dispatch: a local event on its own (one allocation), a received batch (its decode buffer,
/// moved in without copying), or a batch read from the durable stream, with its place there.
#[derive(Debug)]
pub(super) enum Batch {
    One(Delivery),
    Many(Vec<Delivery>),
    Stored {
        deliveries: Vec<Delivery>,
        at: StoredAt,
        /// The record index of each delivery in its batch (records that are not events, or were skipped, take an
        /// index too, so every node numbers an event alike whatever it could decode).
        indices: Vec<u32>,
    },
}

impl Batch {
    /// The events of a batch read from the durable stream, with their record indices (every record counts, so the
    /// indices are the stream positions every node gives them).
    pub(super) fn stored(reader: crate::codec::BatchReader<'_>, at: StoredAt) -> Batch {
        let origin = super::Origin::Agora(reader.header().node_id);
        let mut deliveries = Vec::new();
        let mut indices = Vec::new();
        for (index, item) in reader.enumerate() {
            if let Ok(crate::codec::DecodedRecord {
                record: crate::codec::Record::Event(event),
                time_us,
                ..
            }) = item
            {
                deliveries.push(Delivery { origin, time_us, event });
                indices.push(u32::try_from(index).unwrap_or(u32::MAX));
            }
        }
        Batch::Stored {
            deliveries,
            at,
            indices,
        }
    }

    /// Handles to each of this batch's events.
    pub(super) fn events(self: &Arc<Self>) -> impl Iterator<Item = EventRef> + '_ {
        (0..self.len()).map(|index| EventRef {
            batch: self.clone(),
            index,
        })
    }

    fn as_slice(&self) -> &[Delivery] {
        match self {
            Batch::One(d) => std::slice::from_ref(d),
            Batch::Many(v) | Batch::Stored { deliveries: v, .. } => v,
        }
    }

    /// The stream position of the event at `index`, for a batch read from the durable stream.
    fn position(&self, index: usize) -> Option<StreamPosition> {
        match self {
            Batch::Stored { at, indices, .. } => Some(StreamPosition {
                incarnation: at.incarnation,
                seq: at.seq,
                index: *indices.get(index)?,
            }),
            _ => None,
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }
}

/// Read access to a batch that was dispatched (the publisher encodes from it after local subscribers got it).
pub(super) struct EventsHandle(Arc<Batch>);

impl EventsHandle {
    pub(super) fn as_slice(&self) -> &[Delivery] {
        self.0.as_slice()
    }
}

/// A delivered event: a cheap handle (one `Arc` clone) into the batch it arrived in.
#[derive(Clone, Debug)]
pub struct EventRef {
    batch: Arc<Batch>,
    index: usize,
}

impl Deref for EventRef {
    type Target = Delivery;

    fn deref(&self) -> &Delivery {
        // `index` is always in bounds: EventRefs are only made by `Subscription::next_in_batch`, which checks it.
        &self.batch.as_slice()[self.index]
    }
}

impl EventRef {
    /// Where the event sits in the durable stream: the same on every node. `None` for events that are not read from
    /// the stream (core mode, Stalwart-bus events, and this node's own events on [`Coordinator::subscribe`]).
    ///
    /// [`Coordinator::subscribe`]: super::Coordinator::subscribe
    pub fn stream_position(&self) -> Option<StreamPosition> {
        self.batch.position(self.index)
    }
}

impl PartialEq for EventRef {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

/// What goes through the broadcast channel.
#[derive(Clone, Debug)]
enum Item {
    /// Events numbered `first..first + batch.len()` in dispatch order.
    Events { first: u64, batch: Arc<Batch> },
    /// A notice that is not an event (resync).
    Notice(Notification),
}

/// The sending side, shared by `publish` (local events) and the receiver task (remote ones).
#[derive(Debug)]
pub(super) struct Dispatcher {
    tx: broadcast::Sender<Item>,
    /// Next dispatch sequence number. Held across the send so items enter the channel in sequence order.
    next: Mutex<u64>,
}

impl Dispatcher {
    pub(super) fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Dispatcher {
            tx,
            next: Mutex::new(0),
        }
    }

    fn send(&self, batch: Arc<Batch>) {
        let mut next = self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = *next;
        *next += batch.len() as u64;
        // No receiver is fine: nobody local is listening.
        let _ = self.tx.send(Item::Events { first, batch });
    }

    /// Dispatches one event (single-node mode, where there is no publisher task).
    pub(super) fn send_one(&self, delivery: Delivery) {
        if self.tx.receiver_count() > 0 {
            self.send(Arc::new(Batch::One(delivery)));
        }
    }

    /// Dispatches the events of one batch (received, or taken from the outgoing queue). Returns the events back
    /// when nobody local listens, so the caller can reuse them (and their allocation).
    pub(super) fn send_batch(&self, deliveries: Vec<Delivery>) -> Option<Vec<Delivery>> {
        if deliveries.is_empty() || self.tx.receiver_count() == 0 {
            return Some(deliveries);
        }
        self.send(Arc::new(Batch::Many(deliveries)));
        None
    }

    /// Like [`Dispatcher::send_batch`], but keeps a handle to the dispatched events for the caller to read.
    pub(super) fn send_batch_shared(&self, deliveries: Vec<Delivery>) -> Result<EventsHandle, Vec<Delivery>> {
        if deliveries.is_empty() || self.tx.receiver_count() == 0 {
            return Err(deliveries);
        }
        let batch = Arc::new(Batch::Many(deliveries));
        self.send(batch.clone());
        Ok(EventsHandle(batch))
    }

    /// Dispatches a batch that other dispatchers may get too (the durable mode's two audiences share it).
    pub(super) fn send_shared(&self, batch: &Arc<Batch>) {
        if batch.len() > 0 && self.tx.receiver_count() > 0 {
            self.send(batch.clone());
        }
    }

    /// Dispatches a notice (resync).
    pub(super) fn send_notice(&self, notice: Notification) {
        let _ = self.tx.send(Item::Notice(notice));
    }

    pub(super) fn subscribe(&self, stats: Arc<Stats>) -> Subscription {
        // Under the lock, so the first batch this subscriber sees starts exactly at `expected`.
        let next = self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Subscription {
            rx: self.tx.subscribe(),
            stats,
            current: None,
            expected: Some(*next),
            pending: None,
            overrun: false,
            pending_notice: None,
        }
    }
}

/// A stream of notifications for one local consumer.
pub struct Subscription {
    rx: broadcast::Receiver<Item>,
    stats: Arc<Stats>,
    /// The batch being walked and the next index in it.
    current: Option<(Arc<Batch>, usize)>,
    /// Dispatch number of the next event this subscriber should see.
    expected: Option<u64>,
    /// A batch received right after a gap, held while the `Lagged` notice goes out first.
    pending: Option<(u64, Arc<Batch>)>,
    /// The channel overwrote items this subscriber had not read; if they were only notices (which carry no
    /// dispatch number), the next item still has to say so.
    overrun: bool,
    /// A notice received right after an overrun, held while the `Lagged` notice goes out first.
    pending_notice: Option<Notification>,
}

impl Subscription {
    /// The next event of the batch being walked, if any.
    fn next_in_batch(&mut self) -> Option<Notification> {
        loop {
            if let Some((batch, index)) = &mut self.current {
                if *index < batch.len() {
                    let event = EventRef {
                        batch: batch.clone(),
                        index: *index,
                    };
                    *index += 1;
                    return Some(Notification::Event(event));
                }
                self.current = None;
            }
            if let Some(notice) = self.pending_notice.take() {
                return Some(notice);
            }
            let (first, batch) = self.pending.take()?;
            self.start_batch(first, batch);
        }
    }

    /// Takes in one item from the channel; returns a notification if the item produces one right away.
    fn take_item(&mut self, item: Result<Item, broadcast::error::RecvError>) -> Option<Option<Notification>> {
        match item {
            Ok(Item::Events { first, batch }) => {
                let missed = self.expected.map_or(0, |expected| first.saturating_sub(expected));
                if missed > 0 || std::mem::take(&mut self.overrun) {
                    // `missed` may be 0 when only notices were overwritten: still a loss to report.
                    Stats::add(&self.stats.subscriber_lagged, missed.max(1));
                    self.pending = Some((first, batch));
                    self.expected = Some(first);
                    return Some(Some(Notification::Lagged { missed }));
                }
                self.start_batch(first, batch);
                None
            }
            Ok(Item::Notice(notice)) => {
                if std::mem::take(&mut self.overrun) {
                    Stats::add(&self.stats.subscriber_lagged, 1);
                    self.pending_notice = Some(notice);
                    return Some(Some(Notification::Lagged { missed: 0 }));
                }
                Some(Some(notice))
            }
            // The next batch's number tells exactly how many events were skipped.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                self.overrun = true;
                None
            }
            Err(broadcast::error::RecvError::Closed) => Some(None),
        }
    }

    /// The next notification if one is ready, without waiting; `None` if nothing is ready (or the coordinator is
    /// gone). Lets a consumer drain a burst without a timer or an await per event.
    pub fn try_recv(&mut self) -> Option<Notification> {
        loop {
            if let Some(n) = self.next_in_batch() {
                return Some(n);
            }
            let item = match self.rx.try_recv() {
                Ok(item) => Ok(item),
                Err(broadcast::error::TryRecvError::Lagged(n)) => Err(broadcast::error::RecvError::Lagged(n)),
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => return None,
            };
            if let Some(result) = self.take_item(item) {
                return result;
            }
        }
    }

    /// The next notification; `None` once the coordinator is gone.
    pub async fn recv(&mut self) -> Option<Notification> {
        loop {
            if let Some(n) = self.next_in_batch() {
                return Some(n);
            }
            let item = self.rx.recv().await;
            if let Some(result) = self.take_item(item) {
                return result;
            }
        }
    }

    fn start_batch(&mut self, first: u64, batch: Arc<Batch>) {
        self.expected = Some(first + batch.len() as u64);
        self.current = Some((batch, 0));
    }
}
