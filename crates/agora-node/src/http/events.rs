//! Publishing events and streaming them as Server-Sent Events.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use agora::{Event, Notification};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::post;
use axum::{Json, Router};
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::ApiJson;
use super::error::ApiError;
use super::json::{notification_json, notification_name};
use super::AppState;

/// SSE comment lines keep idle connections (and proxies) from timing out.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/events", post(publish).get(stream))
}

async fn publish(
    State(state): State<AppState>,
    ApiJson(event): ApiJson<Event>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.coordinator.publish(event).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": true }))))
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    /// Comma-separated event types; absent = all.
    types: Option<String>,
}

async fn stream(
    State(state): State<AppState>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = match query.types.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(list) => {
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
            Some(set)
        }
    };
    let subscription = state.coordinator.subscribe();
    let next = |(mut sub, filter): (agora::Subscription, Option<HashSet<&'static str>>)| async move {
        loop {
            let notification = sub.recv().await?;
            let wanted = match (&notification, &filter) {
                (Notification::Event(d), Some(types)) => types.contains(d.event.type_name()),
                _ => true,
            };
            if wanted {
                let sse = SseEvent::default()
                    .event(notification_name(&notification))
                    .data(notification_json(&notification).to_string());
                return Some((sse, (sub, filter)));
            }
        }
    };
    let events = super::sse::bounded_stream((subscription, filter), next, state.shutdown.clone());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE)))
}
