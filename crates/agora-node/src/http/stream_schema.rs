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
