//! JSON forms of what subscribers receive, shared by the SSE stream and `agora watch --json`.

use agora::{Notification, ResyncReason};
use serde_json::{json, Value};

/// The SSE event name of a notification.
pub fn notification_name(notification: &Notification) -> &'static str {
    match notification {
        Notification::Event(d) => d.event.type_name(),
        Notification::Resync { .. } => "resync",
        Notification::Lagged { .. } => "lagged",
    }
}

/// An event's JSON (as accepted by `POST /v1/events`) plus `origin_node` and `origin_time_us`, and `origin_bus`
/// (`"agora"` or `"stalwart"`: Stalwart node ids are another id space); resync and lag notices as their own
/// objects.
pub fn notification_json(notification: &Notification) -> Value {
    match notification {
        Notification::Event(d) => {
            let mut value = serde_json::to_value(&d.event).unwrap_or_else(|_| json!({}));
            if let Some(map) = value.as_object_mut() {
                map.insert("origin_node".into(), json!(d.origin.get()));
                map.insert("origin_bus".into(), json!(d.origin.bus()));
                map.insert("origin_time_us".into(), json!(d.time_us));
            }
            value
        }
        Notification::Resync { node, missed, reason } => json!({
            "type": "resync",
            "node": node.get(),
            "bus": node.bus(),
            "missed": missed,
            "reason": match reason {
                ResyncReason::Gap => "gap",
                ResyncReason::SenderRestarted => "sender_restarted",
                _ => "unknown",
            },
        }),
        Notification::Lagged { missed } => json!({ "type": "lagged", "missed": missed }),
    }
}
