//! Publishing events and streaming them as Server-Sent Events.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use agora::{Event, Notification};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::body::ApiJson;
use super::error::{ApiError, ErrorBody};
use super::sse;
use super::stream_schema::{EventsFrame, StreamItem, SSE};
use super::AppState;
use crate::services::intake::EventIntake;
use crate::services::journal::{Cursor, Entry, Journal};

/// SSE comment lines keep idle connections (and proxies) from timing out.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The event routes, with their documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(publish, stream))
        .routes(routes!(poll))
}

/// The answer to a published event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Always true: the coordinator queued the event.
    accepted: bool,
}

/// `POST /v1/events`: 202 once the coordinator queued the event (replicated state gets its endpoint's checks).
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body(content = Event, description = "Any event of the catalogue, tagged by `type`"),
    responses(
        (status = 202, description = "Queued for the cluster", body = Accepted),
        (status = 400, description = "Not an event of the catalogue, or refused by its endpoint's checks", body = ErrorBody),
        (status = 409, description = "A push subscription for an account that has as many as it may", body = ErrorBody),
        (status = 413, description = "The event is larger than the bus carries", body = ErrorBody),
        (status = 503, description = "The coordinator's queue is full or the node is shutting down", body = ErrorBody),
    )
)]
async fn publish(
    State(intake): State<EventIntake>,
    ApiJson(event): ApiJson<Event>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    intake.publish(event).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted: true })))
}

/// The query of `GET /v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// Comma-separated event types; absent = all.
    #[param(example = "state_change,blocked_ip")]
    types: Option<String>,
    /// Resume after this id, for clients that cannot set the `Last-Event-ID` header.
    #[serde(rename = "last-event-id")]
    last_event_id: Option<String>,
}

/// The `types` filter: event type names; notices (`resync`, `lagged`) always pass.
fn type_filter(types: Option<&str>) -> Result<Option<HashSet<&'static str>>, ApiError> {
    let Some(list) = types.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let mut set = HashSet::new();
    for name in list.split(',').map(str::trim) {
        let known = Event::TYPE_NAMES.iter().find(|n| **n == name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown event type {name:?} in types; known: {}",
                Event::TYPE_NAMES.join(", ")
            ))
        })?;
        set.insert(*known);
    }
    Ok(Some(set))
}

fn wanted(entry: &Entry, filter: &Option<HashSet<&'static str>>) -> bool {
    match (&entry.notification, filter) {
        (Notification::Event(d), Some(types)) => types.contains(d.event.type_name()),
        _ => true,
    }
}

/// Per-stream state: where it reads, what it wants, what to send first, whether it has ended.
struct EventStream {
    journal: Arc<Journal>,
    cursor: Cursor,
    filter: Option<HashSet<&'static str>>,
    first: Option<SseEvent>,
    done: bool,
    metrics: Arc<crate::services::metrics::NodeMetrics>,
    /// Released when the stream ends.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// `GET /v1/events`: every cluster event as Server-Sent Events, from now or after the client's last id.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume right after this id"),
    ),
    responses(
        (status = 200, description = "An endless stream of events and notices", content_type = SSE, body = EventsFrame),
        (status = 400, description = "An unknown event type in `types`", body = ErrorBody),
        (status = 503, description = "Too many open streams ([http] max-streams)", body = ErrorBody),
    )
)]
async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = type_filter(query.types.as_deref())?;
    let permit = sse::permit(&state)?;
    let start = sse::start(
        &state.journal,
        sse::last_event_id(&headers, query.last_event_id.as_deref()),
    );
    let init = EventStream {
        journal: state.journal.clone(),
        cursor: start.cursor,
        filter,
        first: start
            .resync
            .map(|notice| SseEvent::default().event("resync").data(notice.to_string())),
        done: false,
        metrics: state.node_metrics.clone(),
        _permit: permit,
    };
    let next = |mut s: EventStream| async move {
        if let Some(first) = s.first.take() {
            return Some((first, s));
        }
        if s.done {
            return None;
        }
        loop {
            match s.cursor.next().await {
                Ok(entry) if wanted(&entry, &s.filter) => {
                    let event = SseEvent::default()
                        .id(s.journal.id_of(&entry))
                        .event(entry.name)
                        .data(&*entry.data);
                    return Some((event, s));
                }
                Ok(_) => {}
                Err(missed) => {
                    s.metrics.streams_lagged.inc();
                    s.done = true;
                    return Some((sse::lagged(missed), s));
                }
            }
        }
    };
    Ok(Sse::new(sse::stream(init, next, state.shutdown.clone()).map(Ok))
        .keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE)))
}

/// Longest long poll.
const MAX_POLL_WAIT: Duration = Duration::from_secs(60);

/// Most events one poll returns.
const MAX_POLL_LIMIT: usize = 1000;

/// The query of `GET /v1/events/poll`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PollQuery {
    /// The last id the client has; absent = from now.
    after: Option<String>,
    /// Seconds to wait for an event when there is none yet (0..=60, default 0).
    #[param(minimum = 0, maximum = 60)]
    wait: Option<u64>,
    /// At most this many events (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Comma-separated event types; absent = all.
    types: Option<String>,
}

/// One item of a poll's `events`: the journal id beside the event, never inside it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PollItem {
    /// The item's id, as on the streams.
    id: String,
    /// The event (with its origin) or a `resync` notice.
    #[schema(value_type = StreamItem)]
    event: Value,
}

/// A poll's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PollAnswer {
    /// What happened after `after`, oldest first.
    events: Vec<PollItem>,
    /// The id to pass as `after` on the next call.
    next: String,
}

/// A poll item.
fn poll_item(id: String, event: Value) -> PollItem {
    PollItem { id, event }
}

/// `GET /v1/events/poll`: the journal for clients that cannot hold a stream (PHP workers, cron jobs), with the same
/// ids: `{"events":[{"id":"<id>","event":{...}}],"next":"<id>"}`; pass `next` as `after` on the following call.
#[utoipa::path(
    get,
    path = "/v1/events/poll",
    tag = "events",
    params(PollQuery),
    responses(
        (status = 200, description = "The events after `after` (waiting up to `wait` seconds for the first)", body = PollAnswer),
        (status = 400, description = "A bad `wait`, `limit` or `types`, or an unknown parameter", body = ErrorBody),
    )
)]
async fn poll(
    State(state): State<AppState>,
    query: Result<Query<PollQuery>, QueryRejection>,
) -> Result<Json<PollAnswer>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = type_filter(query.types.as_deref())?;
    let wait = Duration::from_secs(query.wait.unwrap_or(0));
    if wait > MAX_POLL_WAIT {
        return Err(ApiError::bad_request(format!(
            "wait {} is too long; at most {} seconds",
            wait.as_secs(),
            MAX_POLL_WAIT.as_secs()
        )));
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_POLL_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1..={MAX_POLL_LIMIT}, not {limit}"
        )));
    }
    let journal = &state.journal;
    let start = sse::start(journal, query.after.as_deref());
    let mut cursor = start.cursor;
    let mut events: Vec<PollItem> = Vec::new();
    // Each item is `{"id", "event"}`: the journal id never overwrites a field of the event (a Stalwart
    // RegistryInsert has an `id` of its own).
    if let Some(resync) = start.resync {
        events.push(poll_item(journal.cursor_id(&cursor), resync));
    }
    let deadline = tokio::time::Instant::now() + wait;
    while events.len() < limit {
        let next = match cursor.try_next() {
            Some(next) => next,
            None if events.is_empty() && tokio::time::Instant::now() < deadline => {
                match tokio::time::timeout_at(deadline, cursor.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                }
            }
            None => break,
        };
        match next {
            Ok(entry) if wanted(&entry, &filter) => {
                let value: Value = serde_json::from_str(&entry.data).unwrap_or_else(|_| json!({}));
                events.push(poll_item(journal.id_of(&entry), value));
            }
            Ok(_) => {}
            Err(missed) => {
                let notice = json!({ "type": "resync", "reason": "expired", "missed": missed });
                events.push(poll_item(journal.cursor_id(&cursor), notice));
            }
        }
    }
    let next = journal.cursor_id(&cursor);
    Ok(Json(PollAnswer { events, next }))
}
