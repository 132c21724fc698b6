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

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use agora::{DataTypes, Event, Notification, ResyncReason};
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;

use super::error::ApiError;
use super::fanout::{DirectConnection, DirectJoin, Join};
use super::{sse, AppState};
use crate::services::journal::{Cursor, Entry, Journal};
use crate::services::push::state_change_json;

/// Most accounts one stream may watch (each costs a wake-up registration).
const MAX_ACCOUNTS: usize = 1000;

/// Longest accepted ping interval (seconds).
const MAX_PING: u64 = 3600;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/eventsource", get(eventsource))
}

#[derive(Debug, Deserialize)]
struct EventSourceQuery {
    /// Comma-separated account ids; absent = every account.
    accounts: Option<String>,
    /// Comma-separated JMAP types, or `*` / absent for all.
    types: Option<String>,
    /// Seconds between pings; 0 or absent = no pings.
    ping: Option<u64>,
    /// `state`: close after the first state event; `no` (default): keep open.
    closeafter: Option<String>,
    /// Resume after this id, for clients that cannot set the `Last-Event-ID` header.
    #[serde(rename = "last-event-id")]
    last_event_id: Option<String>,
}

/// The parsed filter of one stream.
#[derive(Debug)]
pub struct Filter {
    /// Only these accounts' changes; `None`: every account.
    pub accounts: Option<HashSet<u32>>,
    types: Option<DataTypes>,
    /// The ping interval, if the client asked for pings.
    pub ping: Option<Duration>,
    close_after_state: bool,
}

#[cfg(test)]
impl Filter {
    /// Every type of these accounts' changes, with pings every `ping`.
    pub fn for_accounts(accounts: &[u32], ping: Option<Duration>) -> Self {
        Filter {
            accounts: Some(accounts.iter().copied().collect()),
            types: None,
            ping,
            close_after_state: false,
        }
    }
}

/// What a stream does with one journal entry.
#[derive(Debug)]
pub enum Step {
    /// Send this frame.
    Send(Bytes),
    /// Nothing for this stream.
    Skip,
    /// End the stream: events may have been missed, and the client must resynchronise (`/changes`).
    End,
}

impl Filter {
    /// What this stream sends for `entry` (numbered in `journal`).
    pub fn step(&self, entry: &Entry, journal: &Journal) -> Step {
        match &entry.notification {
            Notification::Event(delivery) => {
                let Event::StateChange {
                    account_id,
                    change_id,
                    types,
                } = delivery.event
                else {
                    return Step::Skip;
                };
                if self.accounts.as_ref().is_some_and(|a| !a.contains(&account_id)) {
                    return Step::Skip;
                }
                let wanted = match self.types {
                    Some(wanted) => wanted.intersection(types),
                    None => types,
                };
                if wanted.is_empty() {
                    return Step::Skip;
                }
                // The common case (the stream wants every type that changed) shares one frame per event.
                let make = |types| {
                    state_frame(
                        &journal.id(entry.seq),
                        &state_change_json(account_id, change_id, types).to_string(),
                    )
                };
                Step::Send(if wanted == types {
                    entry.shared_frame(|| make(types))
                } else {
                    make(wanted)
                })
            }
            // Events were missed: end the stream so the client resynchronises.
            Notification::Lagged { .. }
            | Notification::Resync {
                reason: ResyncReason::Gap,
                ..
            } => Step::End,
            // A peer restarted: what it sent last may be lost, but closing every stream in the cluster on each
            // restart would cause a reconnect storm; the gap detector covers real losses.
            Notification::Resync { .. } => Step::Skip,
        }
    }
}

/// The SSE frame of a state change: `id`, `event: state`, and the JMAP `StateChange` JSON (one line).
fn state_frame(id: &str, json: &str) -> Bytes {
    format!("id: {id}\nevent: state\ndata: {json}\n\n").into()
}

/// The SSE frame of a ping (RFC 8620 7.3: `{"interval": seconds}`).
pub fn ping_frame(interval: Duration) -> Bytes {
    format!("event: ping\ndata: {{\"interval\":{}}}\n\n", interval.as_secs()).into()
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

fn parse(query: EventSourceQuery) -> Result<Filter, ApiError> {
    let accounts = match query.accounts.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(list) => Some(
            list.split(',')
                .map(|a| {
                    a.trim()
                        .parse::<u32>()
                        .map_err(|_| ApiError::bad_request(format!("invalid account id {a:?} in accounts")))
                })
                .collect::<Result<HashSet<u32>, _>>()?,
        ),
    };
    if accounts.as_ref().is_some_and(|a| a.len() > MAX_ACCOUNTS) {
        return Err(ApiError::bad_request(format!(
            "too many accounts: at most {MAX_ACCOUNTS} per stream"
        )));
    }
    let types = match query.types.as_deref().map(str::trim) {
        None | Some("") | Some("*") => None,
        Some(list) => Some(DataTypes::from_names(list.split(',').map(str::trim)).map_err(ApiError::bad_request)?),
    };
    let ping = match query.ping {
        None | Some(0) => None,
        Some(s) if s <= MAX_PING => Some(Duration::from_secs(s)),
        Some(s) => {
            return Err(ApiError::bad_request(format!(
                "ping {s} is too large; at most {MAX_PING} seconds"
            )))
        }
    };
    let close_after_state = match query.closeafter.as_deref() {
        None | Some("no") => false,
        Some("state") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "closeafter must be state or no, not {other:?}"
            )))
        }
    };
    Ok(Filter {
        accounts,
        types,
        ping,
        close_after_state,
    })
}

struct StreamState {
    journal: Arc<Journal>,
    cursor: Cursor,
    filter: Filter,
    done: bool,
    /// Released when the stream ends.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

async fn eventsource(
    State(state): State<AppState>,
    direct: Option<Extension<DirectConnection>>,
    headers: HeaderMap,
    query: Result<Query<EventSourceQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let id = sse::last_event_id(&headers, query.last_event_id.as_deref()).map(str::to_owned);
    let filter = parse(query)?;
    let permit = sse::permit(&state)?;
    // An id the journal cannot serve starts live: a JMAP client re-fetches `/changes` on every reconnect anyway.
    let start = sse::start(&state.journal, id.as_deref());
    if direct.is_some() && !filter.close_after_state {
        // The connection is the fan-out's once these headers are written.
        let mut response = stream_response(Body::empty());
        response.extensions_mut().insert(DirectJoin::new(Join {
            hub: state.fanout.clone(),
            filter: Arc::new(filter),
            start: start.cursor.position(),
            permit,
        }));
        return Ok(response);
    }
    // A stream for chosen accounts wakes only for their state changes (and for notices).
    let cursor = match &filter.accounts {
        Some(accounts) => start.cursor.only_accounts(accounts.iter().copied()),
        None => start.cursor,
    };
    let start = StreamState {
        journal: state.journal.clone(),
        cursor,
        filter,
        done: false,
        _permit: permit,
    };
    let next = |mut s: StreamState| async move {
        if s.done {
            return None;
        }
        let frame = next_frame(&mut s).await?;
        Some((frame, s))
    };
    let frames = sse::stream(start, next, state.shutdown.clone()).map(Ok::<_, Infallible>);
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
