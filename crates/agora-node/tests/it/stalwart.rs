//! The `agora` binary on a Stalwart cluster's bus: what applications see of Stalwart's events (SSE, EventSource,
//! metrics, `/v1/node`), injecting events with `agora publish` and `POST /v1/events`, and `agora watch --stalwart`
//! with an unmodified Stalwart configuration file. Stalwart's side is a plain NATS client speaking its format.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{bin, cluster_config};
use agora_testkit::http::SseStream;
use agora_testkit::node::AgoraNode;
use agora_testkit::{scratch_file, NatsServer};
use futures::StreamExt;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(15);
const SUBJECT: &str = "stwt.agora";

/// A tokio runtime for the plain NATS client that plays the Stalwart nodes.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Publishes raw Stalwart-format batches, as a Stalwart node would.
fn publish_raw(server: &NatsServer, batches: &[&[u8]]) {
    runtime().block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connect");
        for batch in batches {
            client
                .publish(SUBJECT, bytes::Bytes::copy_from_slice(batch))
                .await
                .expect("publish");
        }
        client.flush().await.expect("flush");
    });
}

fn stalwart_section(version: &str, forward: &str) -> String {
    format!("\n[stalwart]\nversion = \"{version}\"\nnode-id = 65000\nforward = [{forward}]\n")
}

#[test]
fn stalwart_events_reach_applications_and_the_node_says_who_it_heard() {
    let server = NatsServer::start();
    let config = cluster_config(&server, "") + &stalwart_section("0.16.11", r#""queue_refresh", "state_change""#);
    let node = AgoraNode::start(bin(), &config, 1);
    let mut events = SseStream::open(&node.addr, "/v1/events?types=state_change").expect("SSE");
    let mut jmap = SseStream::open(&node.addr, "/v1/eventsource?accounts=42&types=Mailbox").expect("EventSource");
    // Stalwart node 3: StateChange {change 7, Email|Mailbox, account 42}.
    publish_raw(&server, &[&[0x03, 0x00, 0x07, 0x09, 0x2a]]);

    let event = events.next_event().expect("SSE event");
    let data: Value = serde_json::from_str(&event.data).expect("JSON");
    assert_eq!(event.event, "state_change");
    assert_eq!(data["origin_bus"], "stalwart");
    assert_eq!(data["origin_node"], 3);
    assert_eq!(data["types"], serde_json::json!(["Email", "Mailbox"]));
    let state = jmap.next_event().expect("EventSource event");
    assert_eq!(state.event, "state");
    let state: Value = serde_json::from_str(&state.data).expect("JSON");
    assert_eq!(state["changed"]["42"]["Mailbox"], "7");

    // The configured release (0.16.11) has no QueueRefresh: refused, with the reason.
    let refused = node.post("/v1/events", r#"{"type":"queue_refresh"}"#);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.json()["error"].as_str().is_some_and(|e| e.contains("0.16.12")),
        "{}",
        refused.body
    );

    let metrics = node.get("/metrics").expect("GET /metrics").body;
    for line in [
        "agora_stalwart_events_received_total{kind=\"StateChange\"} 1",
        "agora_stalwart_events_received_total{kind=\"QueueRefresh\"} 0",
        "agora_stalwart_batches_by_sender_total{sender=\"3\"} 1",
        "agora_stalwart_events_refused_total 1",
        "agora_stalwart_invalid_batches_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing from:\n{metrics}");
    }
    let info = node.get("/v1/node").expect("GET /v1/node").json();
    assert_eq!(info["stalwart"]["version"], "0.16.11");
    assert_eq!(info["stalwart"]["nodes"][0]["node_id"], 3, "{info}");
}

#[test]
fn agora_publish_injects_events_that_every_stalwart_node_decodes() {
    let server = NatsServer::start();
    let config = cluster_config(&server, "") + &stalwart_section("0.16.18", r#""stalwart", "queue_paused""#);
    let path = scratch_file("agora.toml", &config);
    let rt = runtime();
    let (client, mut wire) = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let wire = client.subscribe(SUBJECT).await.expect("subscribe");
        client.flush().await.expect("flush");
        (client, wire)
    });
    for (event, expected) in [
        // RegistryReload(Domain = 37)
        (
            r#"{"type":"stalwart","kind":"RegistryReload","object":"Domain"}"#,
            vec![0xe8, 0xfb, 0x03, 0x06, 0x25],
        ),
        // MtaQueueStatus { running: false }
        (r#"{"type":"queue_paused"}"#, vec![0xe8, 0xfb, 0x03, 0x0b]),
    ] {
        let status = Command::new(bin())
            .args(["publish", "--config"])
            .arg(&path)
            .arg(event)
            .status()
            .expect("run publish");
        assert!(status.success(), "{event}");
        let message = rt
            .block_on(async { tokio::time::timeout(DEADLINE, wire.next()).await })
            .expect("a message on stwt.agora")
            .expect("subscription alive");
        assert_eq!(message.payload.as_ref(), expected.as_slice(), "{event}");
    }
    // A 0.15-only event for a 0.16 cluster: exit 2 with the reason, nothing sent.
    let out = Command::new(bin())
        .args(["publish", "--config"])
        .arg(&path)
        .arg(r#"{"type":"stalwart","kind":"ReloadSpamFilter"}"#)
        .output()
        .expect("run publish");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("0.15"));
    drop(client);
}

#[test]
fn watch_stalwart_reads_an_unmodified_stalwart_configuration_and_prints_the_bus() {
    let server = NatsServer::start();
    // A Stalwart 0.15 configuration file as shipped, NATS section pasted in.
    let stalwart_file = agora_testkit::stalwart_config_file(&server.address());
    let path = scratch_file("config.toml", &stalwart_file);
    let mut watch = Command::new(bin())
        .args(["watch", "--json", "--stalwart", "0.15", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let stdout = watch.stdout.take().expect("stdout");
    let stderr = watch.stderr.take().expect("stderr");
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let (log_tx, log_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if log_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The watcher subscribes asynchronously: publish until it prints. Stalwart 0.15 node 2: ReloadSpamFilter (tag 8).
    let end = Instant::now() + DEADLINE;
    let line = 'found: loop {
        assert!(Instant::now() < end, "watch printed nothing");
        publish_raw(&server, &[&[0x02, 0x08]]);
        while let Ok(line) = line_rx.recv_timeout(Duration::from_millis(300)) {
            if line.contains("ReloadSpamFilter") {
                break 'found line;
            }
        }
    };
    let value: Value = serde_json::from_str(&line).expect("JSON line");
    assert_eq!(value["type"], "stalwart");
    assert_eq!(value["kind"], "ReloadSpamFilter");
    assert_eq!(value["origin_bus"], "stalwart");
    assert_eq!(value["origin_node"], 2);
    let _ = watch.kill();
    let _ = watch.wait();
    let logs: Vec<String> = log_rx.try_iter().collect();
    let ignored: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("ignored (a Stalwart server"))
        .collect();
    assert_eq!(ignored.len(), 1, "one line names what is ignored: {logs:?}");
    assert!(
        ignored[0].contains("cluster.node-id") && ignored[0].contains("http"),
        "{ignored:?}"
    );
}

#[test]
fn undecodable_messages_on_the_stalwart_subject_end_no_stream_and_fetch_no_state() {
    let server = NatsServer::start();
    let config = cluster_config(&server, "") + &stalwart_section("0.16.11", "");
    let a = AgoraNode::start(bin(), &config, 1);
    let b = AgoraNode::start(bin(), &config, 2);
    let members = |n: &AgoraNode| {
        n.get("/v1/node")
            .map(|r| r.json()["members"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    };
    assert!(
        agora_testkit::wait_until(DEADLINE, || members(&a) >= 1 && members(&b) >= 1),
        "the nodes see each other (a resync would fetch the state from the peer)"
    );
    let fetched = |n: &AgoraNode| {
        n.get("/v1/node").expect("GET").json()["counters"]["snapshots_fetched"]
            .as_u64()
            .expect("counter")
    };
    let before = (fetched(&a), fetched(&b));
    let mut jmap = SseStream::open(&a.addr, "/v1/eventsource?accounts=42&types=Mailbox").expect("EventSource");
    let mut events = SseStream::open(&b.addr, "/v1/events?types=state_change").expect("SSE");
    // The attack: a node id then an unknown tag, 50 times (anyone on NATS can publish there); then Stalwart node 3's
    // StateChange {change 7, Email|Mailbox, account 42}, which decodes.
    let mut messages: Vec<&[u8]> = vec![&[0x05, 0xff]; 50];
    messages.push(&[0x03, 0x00, 0x07, 0x09, 0x2a]);
    publish_raw(&server, &messages);

    // Both streams carry on: the next thing each gets is the state change, with no resync before it.
    let state = jmap.next_event().expect("the EventSource stream is still open");
    assert_eq!(state.event, "state", "{}", state.data);
    let event = events.next_event().expect("the SSE stream is still open");
    assert_eq!(event.event, "state_change", "no resync before it: {}", event.data);
    assert!(
        agora_testkit::wait_until(DEADLINE, || crate::support::metric(
            &a,
            "agora_stalwart_invalid_batches_total"
        ) >= 50.0),
        "every bad message is counted"
    );
    assert_eq!(
        (fetched(&a), fetched(&b)),
        before,
        "no node re-fetched its replicated state"
    );
    assert_eq!(a.get("/healthz").expect("GET").status, 200);
}

#[test]
fn a_poll_keeps_a_registry_insert_whole_beside_its_stream_id() {
    let server = NatsServer::start();
    let config = cluster_config(&server, "") + &stalwart_section("0.16.18", "");
    let node = AgoraNode::start(bin(), &config, 1);
    let from_now = node.get("/v1/events/poll").expect("poll").json()["next"]
        .as_str()
        .expect("next")
        .to_string();
    // Stalwart node 3: RegistryInsert {object 116, id 42}.
    publish_raw(&server, &[&[0x03, 0x04, 0x74, 0x2a]]);
    let answer = node
        .get(&format!("/v1/events/poll?types=stalwart&wait=10&after={from_now}"))
        .expect("poll")
        .json();
    let item = &answer["events"][0];
    assert_eq!(item["event"]["kind"], "RegistryInsert", "{answer}");
    assert_eq!(item["event"]["id"], 42, "the event's own id is kept: {answer}");
    assert!(
        item["id"].as_str().is_some_and(|id| id != "42" && !id.is_empty()),
        "the stream id stands beside the event: {answer}"
    );
    assert_eq!(answer["next"], item["id"], "{answer}");
}
