//! One fan-out stream's own task: it writes the stream whenever the shard cannot (at the start, when the client is
//! slow, for pings), notices the client leaving, and removes the stream when it ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::shard::{Mode, Shard};
use super::socket::{self, MAX_CLIENT_BYTES};
use super::Filter;
use crate::http::stream_filter::{ping_frame, Step};
use crate::services::journal::Journal;
use crate::services::metrics::NodeMetrics;

/// Why a stream's task stops writing: the stream ends either way.
#[derive(Debug)]
struct Ended;

/// One stream of a shard (see the module documentation).
pub struct Member {
    pub id: u64,
    pub shard: Arc<Shard>,
    pub journal: Arc<Journal>,
    pub socket: Arc<TcpStream>,
    pub filter: Arc<Filter>,
    pub wake: Arc<Notify>,
    pub metrics: Arc<NodeMetrics>,
}

impl Member {
    /// Runs the stream until the client leaves, falls too far behind, the journal says events were missed, or
    /// `shutdown`; then removes it from its shard (which closes the connection).
    pub async fn run(self, shutdown: CancellationToken) {
        tokio::select! {
            () = shutdown.cancelled() => {}
            _ = self.serve() => {}
        }
        self.shard.remove(self.id);
    }

    async fn serve(&self) -> Result<std::convert::Infallible, Ended> {
        let mut received = 0usize;
        loop {
            self.catch_up().await?;
            // In sync: the shard writes. Wait for a reason to act.
            loop {
                let ping_at = self.ping_at();
                tokio::select! {
                    () = self.wake.notified() => {}
                    ready = self.socket.readable() => {
                        ready.map_err(|_| Ended)?;
                        received += socket::discard_input(&self.socket).map_err(|_| Ended)?;
                        if received > MAX_CLIENT_BYTES {
                            return Err(Ended);
                        }
                    }
                    () = sleep_until(ping_at) => self.ping(),
                }
                match self.mode() {
                    Mode::InSync => {}
                    Mode::Behind => break,
                    Mode::Ended => return Err(Ended),
                }
            }
        }
    }

    fn mode(&self) -> Mode {
        self.shard.lock().slot(self.id).map_or(Mode::Ended, |s| s.mode)
    }

    /// Writes what the shard could not, then reads the journal at the client's pace until nothing is left, and
    /// rejoins the shard.
    async fn catch_up(&self) -> Result<(), Ended> {
        let (pending, next) = {
            let mut state = self.shard.lock();
            let slot = state.slot(self.id).ok_or(Ended)?;
            if slot.mode == Mode::Ended {
                return Err(Ended);
            }
            (slot.pending.take(), slot.next)
        };
        if let Some(rest) = pending {
            // The shard gave up this stream mid-frame: its client is slow.
            self.metrics.streams_caught_up.inc();
            self.write(&rest).await?;
        }
        let mut cursor = self.journal.cursor(next);
        if let Some(accounts) = &self.filter.accounts {
            cursor = cursor.only_accounts(accounts.iter().copied());
        }
        loop {
            match cursor.try_next() {
                Some(Ok(entry)) => match self.filter.step(&entry, &self.journal) {
                    Step::Send(frame) => self.write(&frame).await?,
                    Step::Skip => {}
                    Step::End => return Err(Ended),
                },
                // The journal dropped entries this client had not read: it resynchronises.
                Some(Err(_missed)) => return Err(Ended),
                None => {
                    let mut state = self.shard.lock();
                    let position = state.position;
                    let slot = state.slot(self.id).ok_or(Ended)?;
                    // The shard has passed nothing this cursor has not looked at: from here on it writes.
                    if cursor.position() >= position {
                        slot.next = cursor.position();
                        slot.mode = Mode::InSync;
                        return Ok(());
                    }
                    // Entries arrived since the look: take them too.
                }
            }
        }
    }

    /// Writes `bytes` whole, waiting for the client to read.
    async fn write(&self, bytes: &[u8]) -> Result<(), Ended> {
        socket::write_all(&self.socket, bytes).await.map_err(|_| Ended)?;
        // Only pings need to know (and the shard's lock is not free: it may be writing 100s of frames).
        if self.filter.ping.is_some() {
            if let Some(slot) = self.shard.lock().slot(self.id) {
                slot.last_sent = Instant::now();
            }
        }
        Ok(())
    }

    /// When the next ping is due, if the client asked for pings.
    fn ping_at(&self) -> Option<tokio::time::Instant> {
        let interval = self.filter.ping?;
        let last = self.shard.lock().slot(self.id).map(|s| s.last_sent)?;
        Some(tokio::time::Instant::from_std(last + interval))
    }

    /// Sends a ping if one is due (through the shard's lock, so that it never splits another frame).
    fn ping(&self) {
        let Some(interval) = self.filter.ping else { return };
        let mut state = self.shard.lock();
        let Some(slot) = state.slot(self.id) else { return };
        let now = Instant::now();
        if slot.mode == Mode::InSync && now.duration_since(slot.last_sent) + Duration::from_millis(1) >= interval {
            slot.offer(ping_frame(interval), now);
        }
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
