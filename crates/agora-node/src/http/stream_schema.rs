//! The documented shapes of what the streams (`/v1/events`, `/v1/eventsource`) and the long poll carry. They are
//! built as JSON from the journal (`services::notification_json`), so these types exist for the API document only;
//! the in-process tests check real stream items against them.

use agora::Event;
use serde::Serialize;

/// The media type of the Server-Sent Events streams.
pub const SSE: &str = "text/event-stream";

/// Where a delivered event came from, added beside the event's own fields.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Origin {
    /// The node that published it (a Stalwart node id when `origin_bus` is `stalwart`).
    origin_node: u16,
    /// Which bus it came from: `agora` or `stalwart`.
    origin_bus: String,
    /// When its origin published it (Unix microseconds).
    origin_time_us: u64,
}

/// An event as subscribers receive it: its JSON (as `POST /v1/events` takes it, without a push subscription's
/// secrets) and its origin.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Delivered {
    /// The event.
    #[serde(flatten)]
    event: Event,
    /// Its origin.
    #[serde(flatten)]
    origin: Origin,
}

/// A notice in place of events: `resync` (events were missed or the id asked for is not served) or `lagged` (the
/// client fell behind; its stream ends).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Notice {
    /// `resync` or `lagged`.
    #[schema(pattern = "^(resync|lagged)$")]
    r#type: String,
    /// Why events were missed (`resync`): `expired`, `unknown_id`, `gap`, `sender_restarted`, `unknown`.
    reason: Option<String>,
    /// How many events were missed, when known.
    missed: Option<u64>,
    /// The sender whose events were missed (`resync` of a gap).
    node: Option<u16>,
    /// That sender's bus (`resync` of a gap).
    bus: Option<String>,
}

/// One item of a stream or a poll: a delivered event or a notice.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Documentation only: the streams write JSON built from the journal.
#[serde(untagged)]
pub enum StreamItem {
    /// A delivered event.
    Event(Delivered),
    /// A notice.
    Notice(Notice),
}

/// One frame of `GET /v1/events`: `event: <type>`, `id: <id>` (not on notices), `data: <a StreamItem as JSON>`.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Documentation only: `axum::response::sse` writes the frames.
pub struct EventsFrame {
    /// The event's type, or `resync` / `lagged`.
    event: String,
    /// The id to resume after (`Last-Event-ID`); absent on notices.
    id: Option<String>,
    /// A [`StreamItem`], as JSON (its schema: `contentSchema`).
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// A JMAP `StateChange` (RFC 8620 section 7.1): the new state of each changed type, per account.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Documentation only: `services::push::state_change_json` writes it.
pub struct JmapStateChange {
    /// Always `StateChange`.
    #[serde(rename = "@type")]
    #[schema(pattern = "^StateChange$")]
    at_type: String,
    /// Account id -> type name -> state.
    changed: std::collections::HashMap<String, std::collections::HashMap<String, String>>,
}

/// The data of a JMAP EventSource ping.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Documentation only: `stream_filter::ping_frame` writes it.
pub struct Ping {
    /// The ping interval the client asked for (seconds).
    interval: u64,
}

/// A `state` frame of `GET /v1/eventsource`.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Documentation only.
pub struct StateFrame {
    /// `state`.
    #[schema(pattern = "^state$")]
    event: String,
    /// The id to resume after (`Last-Event-ID`).
    id: String,
    /// A [`JmapStateChange`], as JSON (its schema: `contentSchema`).
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// A `ping` frame of `GET /v1/eventsource`.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Documentation only.
pub struct PingFrame {
    /// `ping`.
    #[schema(pattern = "^ping$")]
    event: String,
    /// A [`Ping`], as JSON (its schema: `contentSchema`).
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// One frame of `GET /v1/eventsource`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Documentation only.
pub enum EventSourceFrame {
    /// A state change.
    State(StateFrame),
    /// A ping.
    Ping(PingFrame),
}

/// Each frame schema whose `data` is JSON, and the schema of that JSON: the API document gives it as the `data`
/// field's `contentSchema`, which utoipa cannot write.
pub const FRAME_DATA: [(&str, &str); 3] = [
    ("EventsFrame", "StreamItem"),
    ("StateFrame", "JmapStateChange"),
    ("PingFrame", "Ping"),
];
