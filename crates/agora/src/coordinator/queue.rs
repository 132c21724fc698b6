//! The outgoing queue between `publish` and the publisher task.
//!
//! A bounded, multi-producer, single-consumer queue that the consumer empties in one step: producers push under a
//! short mutex, the publisher task swaps the whole buffer out and encodes it without holding the lock. Compared with
//! `tokio::sync::mpsc`, which pays a semaphore permit and a list node per item, this turns the per-event cost into
//! one uncontended lock, and the per-batch cost into one swap (measured in docs/performance.md).

use std::sync::Mutex;

use tokio::sync::Notify;

use super::Delivery;

/// Why a push failed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PushError {
    /// At capacity (only from `try_push`).
    Full,
    /// The consumer is gone.
    Closed,
}

#[derive(Debug)]
struct State {
    items: Vec<Delivery>,
    closed: bool,
}

/// The queue. Shared as `Arc<OutgoingQueue>`.
#[derive(Debug)]
pub(super) struct OutgoingQueue {
    state: Mutex<State>,
    capacity: usize,
    /// Wakes the consumer when the queue becomes non-empty (or closes).
    filled: Notify,
    /// Wakes producers waiting for room.
    drained: Notify,
}

impl OutgoingQueue {
    pub(super) fn new(capacity: usize) -> Self {
        OutgoingQueue {
            state: Mutex::new(State {
                items: Vec::new(),
                closed: false,
            }),
            capacity: capacity.max(1),
            filled: Notify::new(),
            drained: Notify::new(),
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Pushes unless full or closed. The item is handed back on failure.
    fn push_now(&self, item: Delivery) -> Result<(), (PushError, Delivery)> {
        let mut state = self.lock();
        if state.closed {
            return Err((PushError::Closed, item));
        }
        if state.items.len() >= self.capacity {
            return Err((PushError::Full, item));
        }
        let was_empty = state.items.is_empty();
        state.items.push(item);
        drop(state);
        if was_empty {
            self.filled.notify_one();
        }
        Ok(())
    }

    /// Pushes, or fails at once when full.
    pub(super) fn try_push(&self, item: Delivery) -> Result<(), PushError> {
        self.push_now(item).map_err(|(e, _)| e)
    }

    /// Pushes, waiting for room when full.
    pub(super) async fn push(&self, item: Delivery) -> Result<(), PushError> {
        // Fast path: room available, no waiter registration needed.
        let mut item = match self.push_now(item) {
            Ok(()) => return Ok(()),
            Err((PushError::Full, back)) => back,
            Err((e, _)) => return Err(e),
        };
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Register before checking, so a drain between the check and the await is not missed.
            drained.as_mut().enable();
            match self.push_now(item) {
                Ok(()) => return Ok(()),
                Err((PushError::Full, back)) => {
                    item = back;
                    drained.await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Moves everything queued into `out` (which should be empty), waiting until there is something. Returns
    /// false once the queue is closed and empty.
    pub(super) async fn pop_all(&self, out: &mut Vec<Delivery>) -> bool {
        loop {
            {
                let mut state = self.lock();
                if !state.items.is_empty() {
                    std::mem::swap(&mut state.items, out);
                    drop(state);
                    self.drained.notify_waiters();
                    return true;
                }
                if state.closed {
                    return false;
                }
            }
            self.filled.notified().await;
        }
    }

    /// Takes what is queued without waiting.
    pub(super) fn take_now(&self, out: &mut Vec<Delivery>) {
        let mut state = self.lock();
        std::mem::swap(&mut state.items, out);
        drop(state);
        self.drained.notify_waiters();
    }

    /// Refuses further pushes and wakes everyone.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.filled.notify_one();
        self.drained.notify_waiters();
    }
}
