//! Long-lived Server-Sent Events streams with a bounded buffer per client.
//!
//! A task per stream reads the node's subscription and hands ready SSE events to the HTTP response through a
//! bounded channel. A client that stops reading (but keeps its connection open) therefore holds at most
//! [`STREAM_BUFFER`] events, not the node's whole dispatch backlog: when its buffer is full the stream is closed
//! and the client, like any SSE client, reconnects and resynchronises.

use std::convert::Infallible;
use std::future::Future;

use axum::response::sse::Event as SseEvent;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events buffered for one client before it counts as too slow.
pub const STREAM_BUFFER: usize = 1024;

/// Runs `next` (in the manner of `futures::stream::unfold`) in its own task until it returns `None`, the client
/// goes away, the client falls [`STREAM_BUFFER`] events behind, or the node shuts down.
pub fn bounded_stream<S, F, Fut>(
    init: S,
    next: F,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Send + 'static,
    Fut: Future<Output = Option<(SseEvent, S)>> + Send,
{
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let mut state = init;
        loop {
            let step = tokio::select! {
                () = shutdown.cancelled() => break,
                () = tx.closed() => break,
                step = next(state) => step,
            };
            let Some((event, rest)) = step else { break };
            state = rest;
            match tx.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!("an SSE client fell {STREAM_BUFFER} events behind: closing its stream");
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|event| (Ok(event), rx)) })
}
