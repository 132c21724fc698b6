//! Long-lived Server-Sent Events streams, read from the node's journal (`services::journal`) at each client's own
//! pace: nothing is buffered per client, every event carries its journal id, a client that reconnects with
//! `Last-Event-ID` (header, or `?last-event-id=` where it cannot set headers) resumes right after it, and a client
//! too slow for the journal is told how much it lost (`lagged`) before its stream ends.

use std::future::Future;
use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::sse::Event as SseEvent;
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::services::journal::{Cursor, Journal, Resume};

/// Where a new stream starts, and the `resync` notice to send first when it cannot resume where the client asked.
pub struct Start {
    /// The cursor, at the first entry to send.
    pub cursor: Cursor,
    /// `{"type":"resync","reason":...,"missed":N or null}` when the client's id is not served.
    pub resync: Option<serde_json::Value>,
}

/// The client's last id: the `Last-Event-ID` header, else the `last-event-id` query parameter.
pub fn last_event_id<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(query)
        .map(str::trim)
        .filter(|id| !id.is_empty())
}

/// Positions a stream: from now without an id; right after `id` when the journal still holds what follows it;
/// otherwise from now, with a `resync` notice saying why (and how much was lost, when known).
pub fn start(journal: &Arc<Journal>, id: Option<&str>) -> Start {
    let now = journal.next_seq();
    // An empty id (`after=`, `Last-Event-ID:` with nothing in it) names nothing: it starts from now, like none.
    let Some(id) = id.map(str::trim).filter(|id| !id.is_empty()) else {
        return Start {
            cursor: journal.cursor(now),
            resync: None,
        };
    };
    match journal.resume(id) {
        Resume::From(seq) if seq >= journal.first_seq() => Start {
            cursor: journal.cursor(seq),
            resync: None,
        },
        Resume::From(seq) => Start {
            cursor: journal.cursor(now),
            resync: Some(json!({
                "type": "resync",
                "reason": "expired",
                "missed": journal.first_seq().saturating_sub(seq),
            })),
        },
        Resume::After(place) => Start {
            cursor: journal.cursor_after(place),
            resync: None,
        },
        Resume::Expired => Start {
            cursor: journal.cursor(now),
            resync: Some(json!({
                "type": "resync",
                "reason": "expired",
                "missed": null,
            })),
        },
        Resume::Unknown => Start {
            cursor: journal.cursor(now),
            resync: Some(json!({
                "type": "resync",
                "reason": "unknown_id",
                "missed": null,
            })),
        },
    }
}

/// Runs `next` (in the manner of `futures::stream::unfold`) until it returns `None` or the node shuts down.
pub fn stream<S, T, F, Fut>(init: S, next: F, shutdown: CancellationToken) -> impl Stream<Item = T>
where
    S: Send + 'static,
    F: FnMut(S) -> Fut + Send + 'static,
    Fut: Future<Output = Option<(T, S)>> + Send,
{
    futures::stream::unfold(init, next).take_until(shutdown.cancelled_owned())
}

/// A stream's place under `[http] max-streams`, held for as long as the stream is open; 503 with `Retry-After`
/// (and a metric) when every place is taken.
pub fn permit(state: &super::AppState) -> Result<tokio::sync::OwnedSemaphorePermit, super::error::ApiError> {
    state.streams.clone().try_acquire_owned().map_err(|_| {
        state.node_metrics.streams_refused.inc();
        super::error::ApiError::busy("too many open streams ([http] max-streams); retry later", 5)
    })
}

/// The `lagged` notice of a client that fell `missed` entries behind the journal: sent, then its stream ends.
pub fn lagged(missed: u64) -> SseEvent {
    SseEvent::default()
        .event("lagged")
        .data(json!({ "type": "lagged", "missed": missed }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_id_starts_from_now_without_a_resync() {
        let journal = Journal::new(100, usize::MAX);
        for id in [None, Some(""), Some("  ")] {
            let start = start(&journal, id);
            assert!(start.resync.is_none(), "{id:?}");
            assert_eq!(start.cursor.position(), journal.next_seq());
        }
        let unknown = start(&journal, Some("abc-1"));
        assert_eq!(unknown.resync.expect("an unknown id is told")["reason"], "unknown_id");
    }
}
