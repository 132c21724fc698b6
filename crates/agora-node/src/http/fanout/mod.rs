//! The EventSource fan-out: plain-HTTP EventSource connections written directly, a few tasks for all of them.
//!
//! With one task per stream, every event woke the tasks of the 100s of streams that wanted it, each of which took
//! the journal, formatted its frame and went through hyper's body machinery to write a few hundred bytes: at
//! 10,000 streams and 1,000 events/s that was most of the node's user-space time. Here, once the router has
//! accepted a stream (token, CORS, filter, `[http] max-streams`: the same handler as every other request), its
//! connection joins a [`shard`]. A shard task reads the journal once and writes each entry's shared frame to every
//! stream of the entry's account, without blocking (`try_write`); per stream it keeps little more than the
//! position.
//!
//! A stream whose socket cannot take a frame at once falls *behind*: its own task ([`member`]) finishes the frame,
//! then reads the journal at the client's pace, exactly as the task-per-stream transport does, and rejoins the
//! shard when it has caught up. The journal's sequence numbers make the hand-over exact in both directions: a
//! stream's `next` is the first entry it has not been offered, a shard writes only entries at or past it, and a
//! stream rejoins only once it has looked at everything the shard has already passed. Nothing is sent twice or
//! skipped; a client too slow for the journal itself ends as before (and resynchronises with `/changes`).
//!
//! There are [`SHARDS`] shards, many more than the runtime has worker threads, so that the writes (most of the
//! cost: the kernel's TCP path) are spread over the workers by work stealing, event by event.

mod member;
mod shard;
pub mod socket;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::stream_filter::Filter;
use crate::services::journal::Journal;
use crate::services::metrics::NodeMetrics;
use shard::Shard;

/// Shards: enough that one event's writes split into small tasks that the runtime's workers share by stealing
/// (10,000 streams over 100 accounts: 3 writes per shard per event). Two shards, one per worker, measured worse:
/// one shard that shares its core with something else falls behind alone, and takes its streams with it (the wait
/// for a shard grew to 100s of ms at 1,000 events/s, against a p99 of 10 ms with 32).
const SHARDS: usize = 32;

/// Marks a request read by the direct transport (`http::direct`): the handler may take its connection.
#[derive(Clone, Copy, Debug)]
pub struct DirectConnection;

/// A stream the EventSource handler accepted for the fan-out, as its response carries it back to the transport.
pub struct Join {
    /// Where to join.
    pub hub: Arc<FanoutHub>,
    /// What the stream wants.
    pub filter: Arc<Filter>,
    /// The first journal entry the stream must be offered.
    pub start: u64,
    /// Its place under `[http] max-streams`.
    pub permit: OwnedSemaphorePermit,
    /// For a client token's stream: ends it at the token's `exp` or revocation (instead of only at shutdown).
    pub end: Option<super::client_tokens::StreamEnd>,
}

/// A [`Join`] in a response's extensions (which must be `Clone`): taken once, by the transport.
#[derive(Clone)]
pub struct DirectJoin(Arc<Mutex<Option<Join>>>);

impl DirectJoin {
    /// Wraps `join`.
    pub fn new(join: Join) -> Self {
        DirectJoin(Arc::new(Mutex::new(Some(join))))
    }

    /// The join, the first time.
    pub fn take(&self) -> Option<Join> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

/// The fan-out's shards (see the module documentation).
pub struct FanoutHub {
    journal: Arc<Journal>,
    shards: Vec<Arc<Shard>>,
    /// Round-robin over the shards.
    next_shard: AtomicUsize,
    next_id: AtomicU64,
    shutdown: CancellationToken,
    metrics: Arc<NodeMetrics>,
}

impl std::fmt::Debug for FanoutHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutHub")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl FanoutHub {
    /// Starts the shard tasks, reading `journal` from its next entry on, until `shutdown`. Must be called on the
    /// runtime that serves the streams.
    pub fn start(journal: Arc<Journal>, metrics: Arc<NodeMetrics>, shutdown: CancellationToken) -> Arc<Self> {
        let shards: Vec<_> = (0..SHARDS)
            .map(|_| {
                let (shard, cursor) = Shard::new(journal.clone(), metrics.clone());
                tokio::spawn(shard.clone().run(cursor, shutdown.clone()));
                shard
            })
            .collect();
        Arc::new(FanoutHub {
            journal,
            shards,
            next_shard: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            shutdown,
            metrics,
        })
    }

    /// Hands `socket` (whose response headers are written) to a shard, for as long as the stream lasts;
    /// `connection` is its place under `[http] max-connections`, released with it.
    pub fn attach(self: &Arc<Self>, socket: TcpStream, join: Join, connection: OwnedSemaphorePermit) {
        let index = self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        let shard = self.shards[index].clone();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let socket = Arc::new(socket);
        let wake = shard.insert(id, socket.clone(), join.filter.clone(), join.start);
        let member = member::Member {
            id,
            shard,
            journal: self.journal.clone(),
            socket,
            filter: join.filter,
            wake,
            metrics: self.metrics.clone(),
        };
        let (shutdown, end_guard) = match join.end {
            Some(end) => (end.token, Some(end.guard)),
            None => (self.shutdown.clone(), None),
        };
        let permits = (join.permit, connection, end_guard);
        tokio::spawn(async move {
            member.run(shutdown).await;
            drop(permits);
        });
    }

    /// Streams by who writes them: (in sync, behind); for tests.
    #[cfg(test)]
    fn modes(&self) -> (usize, usize) {
        self.shards
            .iter()
            .map(|s| s.modes())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }
}

#[cfg(test)]
mod tests;
