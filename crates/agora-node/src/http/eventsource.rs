//! JMAP EventSource (RFC 8620 section 7.3): push state changes of chosen accounts to long-lived SSE clients.
//!
//! Each stream is a cursor into the node's journal and a small filter, so thousands of idle clients cost little, and
//! every `state` event carries the journal id: a client that reconnects with `Last-Event-ID` gets the changes it
//! missed. A stream that falls behind the journal, or that may have missed events because the bus lost some, is
//! closed: a JMAP client reconnects and asks for `/changes` from its last state, which is exactly the
//! resynchronisation it needs.
//!
//! Two transports carry the same frames. A plain-HTTP connection is written by the fan-out (`http::fanout`): a few
//! tasks write each event to every stream that wants it, instead of one task per stream waking for it. A TLS
//! connection, or a stream that closes after its first state (`closeafter=state`), is a hyper response body.
//! [`Filter::step`] decides for both what an entry becomes.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use futures::StreamExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::client_tokens::StreamEnd;
use super::edge::ClientGrant;
use super::error::{ApiError, ErrorBody};
use super::fanout::{DirectConnection, DirectJoin, Join};
use super::stream_filter::{parse, ping_frame, EventSourceQuery, Filter, Step};
use super::stream_schema::{EventSourceFrame, SSE};
use super::{sse, AppState};
use crate::services::journal::{Cursor, Journal};

/// The EventSource route, with its documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(eventsource))
}

/// The headers every event stream is sent with.
fn stream_response(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

struct StreamState {
    journal: Arc<Journal>,
    cursor: Cursor,
    filter: Filter,
    done: bool,
    /// Released when the stream ends.
    _permit: tokio::sync::OwnedSemaphorePermit,
    /// A client token's stream: stops watching the token when the stream ends.
    _end: Option<tokio_util::sync::DropGuard>,
}

/// `GET /v1/eventsource`: a JMAP EventSource stream of the chosen accounts' state changes.
#[utoipa::path(
    get,
    path = "/v1/eventsource",
    tag = "events",
    params(
        EventSourceQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume right after this id"),
        ("access_token" = Option<String>, Query, description = "A client token ([http.clients]) for clients that \
            cannot set headers; never logged"),
        ("agora_token" = Option<String>, Cookie, description = "A client token ([http.clients]), for a browser's \
            EventSource with `withCredentials`"),
    ),
    responses(
        (status = 200, description = "`event: state` frames (a JMAP StateChange) and `event: ping` frames; endless \
            unless `closeafter=state`; a client token's stream ends at its `exp` or when it is revoked",
            content_type = SSE, body = EventSourceFrame),
        (status = 400, description = "A bad `accounts`, `types`, `ping` or `closeafter`", body = ErrorBody),
        (status = 401, description = "No valid token: missing, expired, not yet valid, badly signed or revoked",
            body = ErrorBody),
        (status = 403, description = "`accounts` names accounts outside the client token's", body = ErrorBody),
        (status = 503, description = "Too many open streams ([http] max-streams)", body = ErrorBody),
    )
)]
async fn eventsource(
    State(state): State<AppState>,
    direct: Option<Extension<DirectConnection>>,
    grant: Option<Extension<ClientGrant>>,
    headers: HeaderMap,
    query: Result<Query<EventSourceQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let id = sse::last_event_id(&headers, query.last_event_id.as_deref()).map(str::to_owned);
    let mut filter = parse(query)?;
    let end = match grant {
        Some(Extension(ClientGrant(scope))) => Some(super::client_tokens::scope_stream(&state, scope, &mut filter)?),
        None => None,
    };
    let permit = sse::permit(&state)?;
    // An id the journal cannot serve starts live: a JMAP client re-fetches `/changes` on every reconnect anyway.
    let start = sse::start(&state.journal, id.as_deref());
    // A cursor still waiting for the node to read up to another node's id stays on this path, which passes over
    // what the client already has (the fan-out offers entries by number only).
    if direct.is_some() && !filter.close_after_state && !start.cursor.is_catching_up() {
        // The connection is the fan-out's once these headers are written.
        let mut response = stream_response(Body::empty());
        response.extensions_mut().insert(DirectJoin::new(Join {
            hub: state.fanout.clone(),
            filter: Arc::new(filter),
            start: start.cursor.position(),
            permit,
            end,
        }));
        return Ok(response);
    }
    // A stream for chosen accounts wakes only for their state changes (and for notices).
    let cursor = match &filter.accounts {
        Some(accounts) => start.cursor.only_accounts(accounts.iter().copied()),
        None => start.cursor,
    };
    let (until, end_guard) = match end {
        Some(StreamEnd { token, guard }) => (token, Some(guard)),
        None => (state.shutdown.clone(), None),
    };
    let start = StreamState {
        journal: state.journal.clone(),
        cursor,
        filter,
        done: false,
        _permit: permit,
        _end: end_guard,
    };
    let next = |mut s: StreamState| async move {
        if s.done {
            return None;
        }
        let frame = next_frame(&mut s).await?;
        Some((frame, s))
    };
    let frames = sse::stream(start, next, until).map(Ok::<_, Infallible>);
    Ok(stream_response(Body::from_stream(frames)))
}

/// Waits for the next frame of this stream: a matching state change, or a ping when the interval passes idle.
async fn next_frame(s: &mut StreamState) -> Option<Bytes> {
    // The ping is due `interval` after the last event *sent* (RFC 8620 7.3), however many events are filtered out
    // meanwhile.
    let ping_at = s
        .filter
        .ping
        .map(|interval| (tokio::time::Instant::now() + interval, interval));
    loop {
        let next = match ping_at {
            Some((at, interval)) => match tokio::time::timeout_at(at, s.cursor.next()).await {
                Ok(next) => next,
                Err(_) => return Some(ping_frame(interval)),
            },
            None => s.cursor.next().await,
        };
        // Fell behind the journal: end the stream so the client resynchronises.
        let Ok(entry) = next else { return None };
        match s.filter.step(&entry, &s.journal) {
            Step::Send(frame) => {
                s.done = s.filter.close_after_state;
                return Some(frame);
            }
            Step::Skip => continue,
            Step::End => return None,
        }
    }
}
