//! Read-your-writes for HTTP callers without handlers touching the state: a handler publishes its event and waits
//! until the service task has applied it, so a `GET` right after the `POST` on the same node already sees it.
//!
//! The flow stays one way (handler -> coordinator -> service task -> state): the handler registers a waiter for its
//! event before publishing it, the coordinator dispatches the event to local subscribers like any other, and the
//! service task, after applying an event of this node, wakes the oldest waiter for an equal event. An equal event
//! published by someone else just before is as good (the state then holds the same write), so waiters need no id in
//! the event itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use agora::{Coordinator, Delivery, Event, PublishError};
use tokio::sync::oneshot;

/// How long a handler waits for its event to be applied before answering 503: the service task applies events
/// within microseconds unless the node is overloaded.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a published event was not confirmed as applied.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The coordinator refused the event: it went nowhere.
    #[error(transparent)]
    Publish(PublishError),
    /// The event was published but this node did not apply it within [`APPLY_TIMEOUT`] (it may still).
    #[error(
        "published, but not applied on this node within {APPLY_TIMEOUT:?} (the node is overloaded); it applies when \
         delivered"
    )]
    NotApplied,
}

/// A waiter for one published event.
#[derive(Debug)]
struct Waiter {
    id: u64,
    event: Event,
    applied: oneshot::Sender<()>,
}

/// The events this node's handlers published and wait to see applied. Shared by the handlers and the service task.
#[derive(Debug, Default)]
pub struct LocalWrites {
    next_id: AtomicU64,
    waiting: Mutex<Vec<Waiter>>,
}

/// Forgets a waiter when its handler stops waiting (timeout, publish error, client gone).
struct Registration<'a> {
    writes: &'a LocalWrites,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.writes.lock().retain(|waiter| waiter.id != self.id);
    }
}

impl LocalWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waiter>> {
        // The list is valid after any panic: a waiter is pushed or removed whole.
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes `event` and resolves once the service task applied it.
    pub async fn publish(&self, coordinator: &Coordinator, event: Event) -> Result<(), WriteError> {
        let (applied, confirmation) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Registered before publishing: the event may be applied before `publish` returns.
        self.lock().push(Waiter {
            id,
            event: event.clone(),
            applied,
        });
        let _registration = Registration { writes: self, id };
        coordinator.publish(event).await.map_err(WriteError::Publish)?;
        match tokio::time::timeout(APPLY_TIMEOUT, confirmation).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(WriteError::NotApplied),
        }
    }

    /// Called by the service task after applying an event this node published: wakes the oldest waiter for it.
    pub fn applied(&self, delivery: &Delivery) {
        let mut waiting = self.lock();
        if let Some(index) = waiting.iter().position(|waiter| waiter.event == delivery.event) {
            let waiter = waiting.remove(index);
            // The handler may have given up meanwhile: nothing to tell then.
            let _ = waiter.applied.send(());
        }
    }
}
