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

/// Removes from an event's JSON what only the cluster may know: a push subscription's verification code (whoever
/// read it could verify a URL they do not control) and its user agent keys (the `auth` secret).
pub fn without_secrets(event: &mut Value) {
    if let Some(map) = event.as_object_mut() {
        if map.get("type").and_then(Value::as_str) == Some("push_subscription_set") {
            map.remove("verification_code");
            map.remove("keys");
        }
    }
}

/// An event's JSON (as accepted by `POST /v1/events`) plus `origin_node` and `origin_time_us`, and `origin_bus`
/// (`"agora"` or `"stalwart"`: Stalwart node ids are another id space); resync and lag notices as their own
/// objects.
pub fn notification_json(notification: &Notification) -> Value {
    match notification {
        Notification::Event(d) => {
            let mut value = serde_json::to_value(&d.event).unwrap_or_else(|_| json!({}));
            without_secrets(&mut value);
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

#[cfg(test)]
mod tests {
    use agora::event::{PushKeys, PushSubscription};
    use agora::{DataTypes, Event};

    use super::*;

    #[test]
    fn push_subscription_secrets_never_reach_subscribers() {
        let sub = PushSubscription {
            device_client_id: Some("phone".into()),
            keys: Some(PushKeys {
                p256dh: "public-point".into(),
                auth: "auth-secret".into(),
            }),
            verification_code: Some("the-code".into()),
            ..PushSubscription::webhook("s", 1, "https://push.example.com/x", DataTypes::EMPTY)
        };
        let mut json = serde_json::to_value(Event::PushSubscriptionSet(Box::new(sub))).expect("json");
        without_secrets(&mut json);
        let text = json.to_string();
        assert!(!text.contains("the-code") && !text.contains("auth-secret"), "{text}");
        assert!(text.contains("\"device_client_id\":\"phone\""), "{text}");
    }
}
