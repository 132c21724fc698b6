//! Streams that lose nothing without saying so: every event of `/v1/events` and `/v1/eventsource` has an id, a
//! client that reconnects with `Last-Event-ID` (or `?last-event-id=`) gets exactly what it missed, an id the node
//! cannot serve starts with `resync`, a client too slow for the journal is told `lagged` before its stream ends,
//! and `GET /v1/events/poll` serves the same journal to clients that cannot hold a stream.

use std::time::Duration;

use crate::support::{bin, cluster_config};
use agora_testkit::http::SseStream;
use agora_testkit::node::AgoraNode;
use agora_testkit::NatsServer;
use serde_json::Value;

fn change(i: u64) -> String {
    format!(r#"{{"type":"state_change","account_id":42,"change_id":{i},"types":["Mailbox"]}}"#)
}

fn post(node: &AgoraNode, body: &str) {
    let r = node.post("/v1/events", body);
    assert_eq!(r.status, 202, "{}", r.body);
}

fn change_id(event: &agora_testkit::http::SseEvent) -> u64 {
    let data: Value = serde_json::from_str(&event.data).expect("JSON");
    data["change_id"].as_u64().expect("a state change")
}

#[test]
fn a_client_that_reconnects_with_last_event_id_gets_exactly_what_it_missed() {
    let server = NatsServer::start();
    let node = AgoraNode::start(bin(), &cluster_config(&server, ""), 1);
    let mut stream = SseStream::open(&node.addr, "/v1/events?types=state_change").expect("SSE");
    for i in 0..5 {
        post(&node, &change(i));
    }
    let mut last_id = None;
    for i in 0..3 {
        let event = stream.next_event().expect("event");
        assert_eq!(change_id(&event), i);
        assert!(event.id.is_some(), "every event has an id");
        last_id = event.id;
    }
    drop(stream); // the client goes away after change 2
    for i in 5..8 {
        post(&node, &change(i));
    }
    let last_id = last_id.expect("an id");
    for (path, headers) in [
        (
            "/v1/events?types=state_change".to_string(),
            vec![("Last-Event-ID", last_id.as_str())],
        ),
        (format!("/v1/events?types=state_change&last-event-id={last_id}"), vec![]),
    ] {
        let mut resumed = SseStream::open_with_headers(&node.addr, &path, &headers).expect("SSE");
        let got: Vec<u64> = (0..5)
            .map(|_| change_id(&resumed.next_event().expect("event")))
            .collect();
        assert_eq!(got, [3, 4, 5, 6, 7], "{path}: nothing twice, nothing skipped");
    }
    // The JMAP EventSource resumes the same way, its state events carrying ids too.
    let mut jmap = SseStream::open(&node.addr, "/v1/eventsource?accounts=42").expect("EventSource");
    post(&node, &change(8));
    let state = jmap.next_event().expect("state");
    assert_eq!(state.event, "state");
    let id = state.id.expect("state events have ids");
    drop(jmap);
    post(&node, &change(9));
    let mut jmap = SseStream::open_with_headers(&node.addr, "/v1/eventsource?accounts=42", &[("Last-Event-ID", &id)])
        .expect("EventSource");
    let state: Value = serde_json::from_str(&jmap.next_event().expect("state").data).expect("JSON");
    assert_eq!(state["changed"]["42"]["Mailbox"], "9");
}

#[test]
fn an_id_the_node_cannot_serve_starts_with_resync() {
    let server = NatsServer::start();
    let config = cluster_config(&server, "") + "\n[http]\njournal-events = 5\n";
    let node = AgoraNode::start(bin(), &config, 1);
    let mut stream = SseStream::open(&node.addr, "/v1/events?types=state_change").expect("SSE");
    post(&node, &change(0));
    let first = stream.next_event().expect("event").id.expect("id");
    for i in 1..20 {
        post(&node, &change(i));
    }
    let mut expired =
        SseStream::open_with_headers(&node.addr, "/v1/events", &[("Last-Event-ID", &first)]).expect("SSE");
    let notice = expired.next_event().expect("resync");
    assert_eq!(notice.event, "resync");
    let notice: Value = serde_json::from_str(&notice.data).expect("JSON");
    assert_eq!(notice["reason"], "expired");
    assert!(notice["missed"].as_u64().is_some_and(|m| m > 0), "{notice}");
    // An id from an earlier process (or garbage).
    let mut unknown =
        SseStream::open_with_headers(&node.addr, "/v1/events", &[("Last-Event-ID", "123abc-7")]).expect("SSE");
    let notice = unknown.next_event().expect("resync");
    let notice: Value = serde_json::from_str(&notice.data).expect("JSON");
    assert_eq!(
        (notice["type"].as_str(), notice["missed"].is_null()),
        (Some("resync"), true),
        "{notice}"
    );
}

#[test]
fn a_client_too_slow_for_the_journal_is_told_lagged_before_its_stream_ends() {
    let server = NatsServer::start();
    let config = cluster_config(&server, "") + "\n[http]\njournal-events = 20\n";
    let node = AgoraNode::start(bin(), &config, 1);
    let mut slow = SseStream::open(&node.addr, "/v1/events?types=custom").expect("SSE");
    // 300 events of ~80 KB: far more than the socket buffers hold while the client does not read.
    let payload = "A".repeat(80_000);
    for i in 0..300 {
        post(
            &node,
            &format!(r#"{{"type":"custom","name":"bulk-{i}","data":"{payload}"}}"#),
        );
    }
    let mut seen = 0;
    let lagged = loop {
        let event = slow.next_event().expect("the stream goes on until it says lagged");
        if event.event == "lagged" {
            break event;
        }
        seen += 1;
        assert!(seen < 300, "a stalled client cannot have received everything");
    };
    let lagged: Value = serde_json::from_str(&lagged.data).expect("JSON");
    let missed = lagged["missed"].as_u64().expect("missed");
    assert!(
        missed > 0 && seen as u64 + missed <= 300,
        "seen {seen}, missed {missed}"
    );
    assert!(slow.next_event().is_err(), "the stream ends after lagged");
    let metrics = node.get("/metrics").expect("GET").body;
    assert!(metrics.contains("agora_stream_clients_lagged_total 1"), "{metrics}");
}

#[test]
fn the_long_poll_serves_the_same_journal() {
    let server = NatsServer::start();
    let node = AgoraNode::start(bin(), &cluster_config(&server, ""), 1);
    let now = node.get("/v1/events/poll?wait=0").expect("GET").json();
    assert_eq!(now["events"], serde_json::json!([]));
    let next = now["next"].as_str().expect("next").to_string();
    for i in 0..3 {
        post(&node, &change(i));
    }
    let page = node
        .get(&format!("/v1/events/poll?after={next}&limit=2&types=state_change"))
        .expect("GET")
        .json();
    let events = page["events"].as_array().expect("events");
    assert_eq!(events.len(), 2, "{page}");
    assert_eq!(events[0]["event"]["change_id"], 0);
    assert!(events[0]["id"].is_string());
    assert_eq!(
        events[0]["event"]["type"], "state_change",
        "the event whole, beside its id"
    );
    assert!(
        events[0]["event"].get("id").is_none(),
        "the id is not merged into the event"
    );
    let next = page["next"].as_str().expect("next");
    let rest = node
        .get(&format!("/v1/events/poll?after={next}&types=state_change"))
        .expect("GET")
        .json();
    assert_eq!(rest["events"].as_array().map(Vec::len), Some(1), "{rest}");
    assert_eq!(rest["events"][0]["event"]["change_id"], 2);
    // Waiting: an event posted meanwhile ends the wait.
    let next = rest["next"].as_str().expect("next").to_string();
    let addr = node.addr.clone();
    let waiter = std::thread::spawn(move || {
        agora_testkit::http::request(&addr, "GET", &format!("/v1/events/poll?after={next}&wait=10"), None)
            .expect("GET")
            .json()
    });
    // Deliberate: the poll is (most likely) waiting when the event arrives, which is the path under test; were it
    // not yet, the event would be returned all the same (the poll starts after `next`).
    std::thread::sleep(Duration::from_millis(300));
    post(&node, &change(3));
    let woken = waiter.join().expect("thread");
    assert_eq!(woken["events"][0]["event"]["change_id"], 3, "{woken}");
    let unknown = node.get("/v1/events/poll?after=123abc-1").expect("GET").json();
    assert_eq!(unknown["events"][0]["event"]["type"], "resync", "{unknown}");
    let bad = node.get("/v1/events/poll?wait=61").expect("GET");
    assert_eq!(bad.status, 400);
}

#[test]
fn the_fanout_bench_delivers_every_change_to_every_stream_of_its_account() {
    use agora_bench::fanout::{self, FanoutOptions};
    let server = NatsServer::start();
    let options = FanoutOptions {
        streams: 50,
        accounts: 5,
        rate: 100,
        seconds: 1,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let r = runtime
        .block_on(fanout::run(bin(), &server.url(), &options))
        .expect("the fanout scenario runs");
    let row = r.to_json();
    assert_eq!(r.events, 100, "{row}");
    assert_eq!(r.lost, 0, "{row}");
    assert_eq!(
        row["deliveries"],
        100 * 10,
        "each event reaches the 10 streams of its account: {row}"
    );
    assert!(r.p50_us > 0.0 && r.p99_us >= r.p50_us && r.p999_us >= r.p99_us, "{row}");
    assert!(r.events_per_sec > 0.0, "{row}");
    assert_eq!(row["streams"], 50, "{row}");
    assert!(row["rss_kib"].as_u64().is_some_and(|k| k > 0), "{row}");
    assert!(row["cpu_seconds"].as_f64().is_some_and(|s| s > 0.0), "{row}");
    assert!(row["healthz_p50_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{row}");
    assert!(row["healthz_p99_ms"].is_number(), "{row}");
    // The node's own share, from its fan-out histogram: the streams were written, so it observed something.
    let node_p99 = row["node_fanout_p99_ms"].as_f64();
    assert!(node_p99.is_some_and(|ms| ms > 0.0), "{row}");
    assert!(row["node_fanout_p50_ms"].as_f64() <= node_p99, "{row}");
    assert!(
        row.get("unexpected").is_none() && row.get("streams_ended").is_none(),
        "{row}"
    );
}

#[test]
fn the_token_bench_opens_streams_with_the_node_token_and_with_hs256_and_es256_client_tokens() {
    let server = NatsServer::start();
    let rows = agora_bench::tokens::run(bin(), &server.url(), 40).expect("the tokens scenario runs");
    let modes: Vec<String> = rows.iter().map(|r| r.mode.clone()).collect();
    assert_eq!(modes, ["node_token", "client_token_hs256", "client_token_es256"]);
    for r in rows {
        let row = r.to_json();
        // Every connection got its 200: the node accepted the bench's tokens (minted with ring, verified by
        // jsonwebtoken), so the row measures verification, not refusals.
        assert_eq!(r.lost, 0, "{row}");
        assert_eq!(r.events, 40, "{row}");
        assert!(r.events_per_sec > 0.0 && r.p99_us >= r.p50_us, "{row}");
    }
}
