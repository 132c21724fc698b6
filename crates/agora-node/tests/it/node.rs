//! Real `agora` processes, a real nats-server, real HTTP.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{bin, cluster_config};
use agora_testkit::http::SseStream;
use agora_testkit::node::AgoraNode;
use agora_testkit::{free_port, scratch_file, wait_until, NatsServer};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(15);

fn agora() -> Command {
    Command::new(bin())
}

/// A node of the `agora` binary under test.
struct Node;

impl Node {
    fn start(config: &str, node_id: u16) -> AgoraNode {
        AgoraNode::start(bin(), config, node_id)
    }
}

#[test]
fn an_event_posted_on_one_node_streams_from_another() {
    let server = NatsServer::start();
    let config = cluster_config(&server, "");
    let a = Node::start(&config, 1);
    let b = Node::start(&config, 2);
    let mut stream = SseStream::open(&b.addr, "/v1/events?types=state_change,reload").expect("SSE");

    let posted = a.post(
        "/v1/events",
        r#"{"type":"state_change","account_id":42,"change_id":7,"types":["Email","Mailbox"]}"#,
    );
    assert_eq!(posted.status, 202, "{}", posted.body);
    assert_eq!(posted.json(), json!({"accepted": true}));
    // Filtered out by ?types, then a reload that passes.
    assert_eq!(a.post("/v1/events", r#"{"type":"queue_refresh"}"#).status, 202);
    assert_eq!(
        a.post("/v1/events", r#"{"type":"reload","target":"settings"}"#).status,
        202
    );

    let first = stream.next_event().expect("first SSE event");
    assert_eq!(first.event, "state_change");
    let data: Value = serde_json::from_str(&first.data).expect("JSON data");
    assert_eq!(data["account_id"], 42);
    assert_eq!(data["types"], json!(["Email", "Mailbox"]));
    assert_eq!(data["origin_node"], 1);
    let second = stream.next_event().expect("second SSE event");
    assert_eq!(second.event, "reload");

    assert!(wait_until(DEADLINE, || {
        a.get("/v1/cluster/nodes")
            .map(|r| {
                let ids: Vec<u64> = r
                    .json()
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n["node_id"].as_u64())
                    .collect();
                ids == vec![1, 2]
            })
            .unwrap_or(false)
    }));
    let nodes = a.get("/v1/cluster/nodes").expect("GET").json();
    assert_eq!(nodes[1]["http"], json!(b.addr));

    let info = a.get("/v1/node").expect("GET /v1/node").json();
    assert_eq!(info["node_id"], 1);
    assert_eq!(info["coordinator"], "nats");
    assert_eq!(info["connected"], true);
    assert!(
        info["server"]
            .as_str()
            .is_some_and(|s| s.ends_with(&format!(":{}", server.port()))),
        "{info}"
    );
    assert_eq!(info["counters"]["events_published"], 3);
}

#[test]
fn bad_requests_get_a_message_and_change_nothing() {
    let node = Node::start("", 1);
    for (body, needle) in [
        ("{not json", "invalid event"),
        (r#"{"type":"exploded"}"#, "exploded"),
        (
            r#"{"type":"state_change","account_id":1,"change_id":1,"types":["Emial"]}"#,
            "Emial",
        ),
        (r#"{"type":"blocked_ip","network":"10.0.0.300"}"#, "10.0.0.300"),
        // Replicated state through the generic endpoint gets its own endpoint's checks.
        (r#"{"type":"blocked_ip","network":"0.0.0.0/0"}"#, "broader than"),
        (
            r#"{"type":"push_subscription_set","id":"x","account_id":1,"url":"http://169.254.169.254/","types":[]}"#,
            "push URL refused",
        ),
    ] {
        let r = node.post("/v1/events", body);
        assert_eq!(r.status, 400, "{body} -> {}", r.body);
        let error = r.json()["error"].as_str().map(str::to_string).unwrap_or_default();
        assert!(
            error.contains(needle),
            "{body}: error {error:?} should mention {needle}"
        );
    }
    let r = node.get("/v1/events?types=nope").expect("GET");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("nope"));
    let info = node.get("/v1/node").expect("GET").json();
    assert_eq!(info["counters"]["events_published"], 0);
    assert_eq!(info["coordinator"], "single-node");
}

#[test]
fn single_node_mode_is_healthy_and_streams_its_own_events() {
    let node = Node::start("", 5);
    let health = node.get("/healthz").expect("GET").json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["link"], "single_node");
    let mut stream = SseStream::open(&node.addr, "/v1/events").expect("SSE");
    assert_eq!(
        node.post("/v1/events", r#"{"type":"cache_invalidate_all"}"#).status,
        202
    );
    let event = stream.next_event().expect("event");
    assert_eq!(event.event, "cache_invalidate_all");
    assert!(event.data.contains(r#""origin_node":5"#));
}

#[test]
fn max_reconnects_zero_stays_disconnected_and_says_so() {
    let mut server = NatsServer::start();
    let node = Node::start(&cluster_config(&server, "max-reconnects = 0"), 1);
    server.kill();
    assert!(
        wait_until(DEADLINE, || node.get("/healthz").is_ok_and(|r| r.status == 503)),
        "healthz turns 503"
    );
    server.restart();
    std::thread::sleep(Duration::from_millis(1500)); // give a (wrong) reconnect every chance to happen
    let health = node.get("/healthz").expect("GET");
    assert_eq!(
        health.status, 503,
        "still down after the server returned: {}",
        health.body
    );
    let body = health.json();
    assert_eq!(body["status"], "disconnected");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("max-reconnects = 0")),
        "{body}"
    );
}

#[test]
fn unlimited_reconnects_recover_after_a_server_restart() {
    let mut server = NatsServer::start();
    let config = cluster_config(&server, "");
    let a = Node::start(&config, 1);
    let b = Node::start(&config, 2);
    server.kill();
    assert!(wait_until(DEADLINE, || a
        .get("/healthz")
        .is_ok_and(|r| r.status == 503)));
    server.restart();
    assert!(wait_until(DEADLINE, || a
        .get("/healthz")
        .is_ok_and(|r| r.status == 200)));
    assert!(wait_until(DEADLINE, || b
        .get("/healthz")
        .is_ok_and(|r| r.status == 200)));
    let mut stream = SseStream::open(&b.addr, "/v1/events").expect("SSE");
    assert_eq!(a.post("/v1/events", r#"{"type":"queue_paused"}"#).status, 202);
    let event = stream.next_event().expect("event after recovery");
    assert_eq!(event.event, "queue_paused");
    let info = a.get("/v1/node").expect("GET").json();
    assert!(info["counters"]["reconnects"].as_u64() >= Some(1), "{info}");
}

#[test]
fn sigterm_leaves_the_cluster_cleanly() {
    let server = NatsServer::start();
    let config = cluster_config(&server, "");
    let a = Node::start(&config, 1);
    let mut b = Node::start(&config, 2);
    let member_count = |n: &AgoraNode| {
        n.get("/v1/cluster/nodes")
            .map(|r| r.json().as_array().map_or(0, Vec::len))
            .unwrap_or(0)
    };
    assert!(wait_until(DEADLINE, || member_count(&a) == 2));
    // Long-lived streams must not hold the shutdown up.
    let _events = SseStream::open(&b.addr, "/v1/events").expect("SSE");
    let _eventsource = SseStream::open(&b.addr, "/v1/eventsource?accounts=1").expect("EventSource");
    let started = std::time::Instant::now();
    let status = b.terminate().expect("exit status");
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "open SSE streams do not delay shutdown: took {:?}",
        started.elapsed()
    );
    assert!(
        wait_until(Duration::from_millis(500), || member_count(&a) == 1),
        "a leave is seen at once, not after a timeout"
    );
}

#[test]
fn publish_and_watch_tools_use_the_bus() {
    let server = NatsServer::start();
    let config = cluster_config(&server, "");
    let path = scratch_file("agora.toml", &config);
    let node = Node::start(&config, 1);
    let mut watch = agora()
        .args(["watch", "--json", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn watch");
    let stdout = watch.stdout.take().expect("stdout");
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stream = SseStream::open(&node.addr, "/v1/events").expect("SSE");

    let status = agora()
        .args(["publish", "--config"])
        .arg(&path)
        .arg(r#"{"type":"certificate_renewed","domains":["mail.example.org"]}"#)
        .status()
        .expect("run publish");
    assert!(status.success());
    let event = stream.next_event().expect("node sees the published event");
    assert_eq!(event.event, "certificate_renewed");
    assert!(event.data.contains("mail.example.org"));

    // The watcher subscribes asynchronously: post until it prints one.
    let end = std::time::Instant::now() + DEADLINE;
    let line = 'found: loop {
        assert!(std::time::Instant::now() < end, "watch printed nothing");
        assert_eq!(node.post("/v1/events", r#"{"type":"queue_resumed"}"#).status, 202);
        while let Ok(line) = line_rx.recv_timeout(Duration::from_millis(300)) {
            if line.contains("queue_resumed") {
                break 'found line;
            }
        }
    };
    let value: Value = serde_json::from_str(&line).expect("watch --json prints JSON lines");
    assert_eq!(value["type"], "queue_resumed");
    assert_eq!(value["origin_node"], 1);
    let _ = watch.kill();
    let _ = watch.wait();
    let members = node.get("/v1/cluster/nodes").expect("GET").json();
    assert_eq!(
        members.as_array().map(Vec::len),
        Some(1),
        "tools are not members: {members}"
    );
}

#[test]
fn tools_given_a_running_nodes_config_file_never_send_as_that_node() {
    let server = NatsServer::start();
    // The very file the node runs with, node id included.
    let config = cluster_config(&server, "").replace("[cluster]\n", "[cluster]\nnode-id = 7\n");
    let path = scratch_file("agora.toml", &config);
    let node = Node::start(&config, 7);
    let mut stream = SseStream::open(&node.addr, "/v1/events?types=reload").expect("SSE");
    let status = agora()
        .args(["publish", "--config"])
        .arg(&path)
        .arg(r#"{"type":"reload","target":"settings"}"#)
        .status()
        .expect("run publish");
    assert!(status.success());
    let event = stream
        .next_event()
        .expect("the node receives the tool's event instead of dropping it as its own");
    let data: Value = serde_json::from_str(&event.data).expect("JSON");
    assert_ne!(data["origin_node"], 7, "the tool used a fresh id: {data}");
    let health = node.get("/healthz").expect("GET").json();
    assert_eq!(health["status"], "ok", "no node-id clash: {health}");
    assert!(health.get("node_id_clash").is_none(), "{health}");
}

#[test]
fn watch_without_a_config_file_says_there_is_no_bus_to_watch() {
    let out = agora().arg("watch").output().expect("run watch");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--config"), "{stderr}");
}

#[test]
fn check_config_prints_effective_settings_without_secrets_and_rejects_bad_files() {
    let good = scratch_file(
        "good.toml",
        r#"
[store."nats"]
type = "nats"
address = ["nats1:4222", "nats2:4222"]
user = "nats-user"
password = "hunter2-very-secret"

[cluster]
coordinator = "nats"
"#,
    );
    let out = agora()
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ping-interval"), "{text}");
    assert!(text.contains("nats://nats1:4222"), "{text}");
    assert!(!text.contains("hunter2"), "secret leaked: {text}");

    let bad = scratch_file(
        "bad.toml",
        r#"
[store."nats"]
type = "nats"
address = "nats1:4222"
password = "hunter2-very-secret"
[store."nats".capacity]
read-buffer = 70000
"#,
    );
    let out = agora()
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(r#"store."nats".capacity.read-buffer"#), "{err}");
    assert!(!err.contains("hunter2"), "secret leaked: {err}");

    let missing: PathBuf = std::env::temp_dir().join("agora-no-such-config.toml");
    let out = agora()
        .args(["check-config", "--config"])
        .arg(&missing)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_node_that_cannot_reach_nats_exits_with_status_1_and_says_why() {
    let port = free_port();
    let path = scratch_file(
        "agora.toml",
        &format!(
            "[cluster]\ncoordinator = \"nats\"\n[store.\"nats\"]\ntype = \"nats\"\naddress = \"127.0.0.1:{port}\"\n\
             timeout.connection = \"500ms\"\n"
        ),
    );
    let out = agora()
        .args(["node", "--config"])
        .arg(&path)
        .args(["--http", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to NATS"), "{err}");
}
