//! The HTTP API's contract on one real node and a small cluster: read-your-writes without handlers writing state,
//! bodies parsed by one extractor with one error shape, idempotent deletes, and metrics present from the start.

use std::time::Duration;

use crate::support::{bin, cluster_config};
use agora_testkit::node::AgoraNode;
use agora_testkit::{wait_until, NatsServer};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(15);

/// A POST with a chosen `Content-Type` header, or none (the testkit's `request` always sends `application/json`).
fn post_with_content_type(node: &AgoraNode, path: &str, content_type: Option<&str>, body: &str) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = content_type.map(|t| ("Content-Type", t)).into_iter().collect();
    let r = agora_testkit::http::request_with_headers(&node.addr, "POST", path, &headers, Some(body)).expect("POST");
    (r.status, serde_json::from_str(&r.body).unwrap_or(Value::Null))
}

#[test]
fn a_block_is_answered_as_stored_and_visible_at_once_on_the_same_node() {
    let server = NatsServer::start();
    let node = AgoraNode::start(bin(), &cluster_config(&server, ""), 1);
    // The reply is the stored rule: host bits dropped, an IPv4-mapped address stored as IPv4.
    let r = node.post("/v1/blocked-ips", r#"{"network":"::ffff:192.0.2.1","reason":"spam"}"#);
    assert_eq!(r.status, 201, "{}", r.body);
    let body = r.json();
    assert_eq!(body["network"], "192.0.2.1/32", "{body}");
    assert_eq!(body["origin_node"], 1);
    assert_eq!(body["reason"], "spam");
    let r = node.post("/v1/blocked-ips", r#"{"network":"10.1.2.3/16"}"#);
    assert_eq!(r.json()["network"], "10.1.0.0/16", "{}", r.body);
    // Read-your-writes, every time: the 201 comes only once this node applied the event.
    for i in 0..50 {
        let ip = format!("198.51.100.{i}");
        assert_eq!(
            node.post("/v1/blocked-ips", &format!(r#"{{"network":"{ip}"}}"#)).status,
            201
        );
        let hit = node.get(&format!("/v1/blocked-ips/{ip}")).expect("GET");
        assert_eq!(hit.status, 200, "{ip} is blocked right after the POST: {}", hit.body);
        assert_eq!(node.delete(&format!("/v1/blocked-ips/{ip}")).status, 204);
        let miss = node.get(&format!("/v1/blocked-ips/{ip}")).expect("GET");
        assert_eq!(
            miss.status, 404,
            "{ip} is unblocked right after the DELETE: {}",
            miss.body
        );
    }
    let created = node.post(
        "/v1/push-subscriptions",
        r#"{"account_id":1,"url":"https://push.example.com/hook"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        node.delete(&format!("/v1/push-subscriptions/{id}")).status,
        204,
        "the subscription is known right after the POST"
    );
}

#[test]
fn deleting_an_unknown_rule_is_idempotent_but_an_unknown_subscription_is_404() {
    let node = AgoraNode::start(bin(), "", 1);
    assert_eq!(node.delete("/v1/blocked-ips/203.0.113.9").status, 204);
    assert_eq!(node.delete("/v1/blocked-ips/203.0.113.9").status, 204);
    assert_eq!(node.delete("/v1/blocked-ips/2001:db8::%2F48").status, 204);
    let r = node.delete("/v1/push-subscriptions/nope");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(
        r.json()["error"].as_str().is_some_and(|e| e.contains("nope")),
        "{}",
        r.body
    );
}

#[test]
fn bodies_go_through_one_extractor_with_the_api_error_shape() {
    let node = AgoraNode::start(bin(), "", 1);
    // Unit events take no fields, like every other event takes no unknown ones.
    let r = node.post("/v1/events", r#"{"type":"queue_paused","bogus":1}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("bogus") && error.contains("invalid event"), "{error}");
    assert_eq!(node.post("/v1/events", r#"{"type":"queue_paused"}"#).status, 202);
    // A body that says it is not JSON is refused with 415; a body without a Content-Type is read as JSON.
    for path in ["/v1/events", "/v1/blocked-ips", "/v1/push-subscriptions"] {
        let (status, body) = post_with_content_type(&node, path, Some("text/plain"), "{}");
        assert_eq!(status, 415, "{path}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("text/plain")),
            "{body}"
        );
    }
    let (status, body) = post_with_content_type(&node, "/v1/blocked-ips", None, r#"{"network":"192.0.2.9"}"#);
    assert_eq!((status, &body["network"]), (201, &json!("192.0.2.9/32")), "{body}");
    let (status, body) = post_with_content_type(&node, "/v1/push-subscriptions", None, "[1]");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.starts_with("invalid request")),
        "{body}"
    );
}

#[test]
fn a_fresh_node_exports_every_metric_family_at_zero() {
    let node = AgoraNode::start(bin(), "", 1);
    let text = node.get("/metrics").expect("GET /metrics").body;
    for sample in [
        r#"agora_push_deliveries_total{result="ok"} 0"#,
        r#"agora_push_deliveries_total{result="failed"} 0"#,
        r#"agora_push_deliveries_total{result="retried"} 0"#,
        r#"agora_push_refused_total{reason="node_backlog"} 0"#,
        r#"agora_push_refused_total{reason="endpoint_backlog"} 0"#,
        r#"agora_push_refused_total{reason="blocked_address"} 0"#,
        r#"agora_push_refused_total{reason="invalid_url"} 0"#,
        r#"agora_push_refused_total{reason="account_cap"} 0"#,
        "agora_push_pending_subscriptions 0",
        "agora_push_in_flight 0",
        "agora_push_coalesced_total 0",
        "agora_push_breakers_open 0",
        "agora_push_breaker_opened_total 0",
        r#"agora_events_published_total{type="queue_paused"} 0"#,
        r#"agora_events_received_total{type="state_change"} 0"#,
        "agora_delivery_latency_seconds_count 0",
        "agora_snapshots_fetched_total 0",
        "agora_snapshot_failures_total 0",
        "agora_events_dropped_total 0",
        "agora_blocked_ip_rules 0",
        "agora_push_subscriptions 0",
    ] {
        assert!(text.contains(sample), "missing {sample:?} in:\n{text}");
    }
    // Every declared family has a sample, and every counter of a fresh node is 0.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let family = line.split_whitespace().nth(2).unwrap_or_default();
        assert!(
            text.lines().any(|l| !l.starts_with('#') && l.starts_with(family)),
            "family {family} has no sample:\n{text}"
        );
    }
    for sample in text.lines().filter(|l| l.contains("_total")) {
        assert!(sample.ends_with(" 0"), "a fresh node counted something: {sample}");
    }
    assert!(wait_until(DEADLINE, || node
        .get("/healthz")
        .is_ok_and(|r| r.status == 200)));
}

#[test]
fn a_durable_node_exports_the_durable_counters_from_the_start() {
    let store = agora_testkit::scratch_dir("api-durable");
    let store = store.to_string_lossy();
    let server = NatsServer::start_with_args(&["-js", "-sd", &store]);
    let node = AgoraNode::start(bin(), &cluster_config(&server, "jetstream.enable = true\n"), 1);
    let text = node.get("/metrics").expect("GET /metrics").body;
    for sample in [
        "agora_durable_own_replays_skipped_total 0",
        "agora_durable_redeliveries_skipped_total 0",
        "agora_durable_holes_filled_total 0",
        "agora_durable_expired_total 0",
    ] {
        assert!(text.contains(sample), "missing {sample:?} in:\n{text}");
    }
}
