//! The seed's scenarios end to end: real `agora node` processes, a real nats-server, real HTTP.

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{bin, cluster_config};
use agora_node::services::push::push_owner;
use agora_testkit::http::SseStream;
use agora_testkit::node::AgoraNode;
use agora_testkit::{wait_until, NatsServer};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(15);

/// The cluster's configuration; the push test's webhook listens on loopback, which deliveries may reach only when
/// `[push] allow-networks` says so.
fn config(server: &NatsServer) -> String {
    cluster_config(server, "\n[push]\nallow-networks = [\"127.0.0.0/8\"]\n")
}

fn start_cluster(server: &NatsServer, ids: &[u16]) -> Vec<AgoraNode> {
    let config = config(server);
    let nodes: Vec<AgoraNode> = ids.iter().map(|id| AgoraNode::start(bin(), &config, *id)).collect();
    for node in &nodes {
        assert!(
            wait_until(DEADLINE, || member_count(node) == ids.len()),
            "node {} did not see all {} nodes",
            node.node_id,
            ids.len()
        );
    }
    nodes
}

fn member_count(node: &AgoraNode) -> usize {
    node.get("/v1/cluster/nodes")
        .map(|r| r.json().as_array().map_or(0, Vec::len))
        .unwrap_or(0)
}

fn blocked_status(node: &AgoraNode, ip: &str) -> u16 {
    node.get(&format!("/v1/blocked-ips/{ip}"))
        .map(|r| r.status)
        .unwrap_or(0)
}

#[test]
fn a_block_on_one_node_holds_on_all_and_reaches_late_joiners() {
    let server = NatsServer::start();
    let nodes = start_cluster(&server, &[1, 2, 3]);

    let r = nodes[0].post(
        "/v1/blocked-ips",
        r#"{"network":"203.0.113.0/24","reason":"auth failures"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        nodes[0].post("/v1/blocked-ips", r#"{"network":"2001:db8::7"}"#).status,
        201
    );
    assert_eq!(
        nodes[1]
            .post("/v1/blocked-ips", r#"{"network":"198.51.100.9","ttl":"1s"}"#)
            .status,
        201
    );
    for node in &nodes {
        assert!(
            wait_until(DEADLINE, || blocked_status(node, "203.0.113.77") == 200),
            "node {} blocks 203.0.113.77",
            node.node_id
        );
        assert!(wait_until(DEADLINE, || blocked_status(node, "2001:db8::7") == 200));
        let hit = node.get("/v1/blocked-ips/203.0.113.77").expect("GET").json();
        assert_eq!(hit["blocked"], true);
        assert_eq!(hit["network"], "203.0.113.0/24");
        assert_eq!(hit["origin_node"], 1);
        assert_eq!(hit["reason"], "auth failures");
        let miss = node.get("/v1/blocked-ips/203.0.114.1").expect("GET");
        assert_eq!((miss.status, miss.json()), (404, json!({"blocked": false})));
    }
    // The TTL'd rule expires everywhere.
    for node in &nodes {
        assert!(
            wait_until(DEADLINE, || blocked_status(node, "198.51.100.9") == 404),
            "node {} lets the expired rule go",
            node.node_id
        );
        let list = node.get("/v1/blocked-ips").expect("GET").json();
        assert!(!list.to_string().contains("198.51.100.9"), "{list}");
    }
    // Unblock on another node than the one that blocked.
    assert_eq!(nodes[2].delete("/v1/blocked-ips/2001:db8::7").status, 204);
    for node in &nodes {
        assert!(wait_until(DEADLINE, || blocked_status(node, "2001:db8::7") == 404));
    }
    // A push subscription registered on node 2 is replicated too.
    let created = nodes[1].post(
        "/v1/push-subscriptions",
        r#"{"account_id":5,"url":"https://push.example.com/hook","types":["Mailbox"]}"#,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(wait_until(DEADLINE, || {
        nodes[2]
            .get("/v1/push-subscriptions")
            .is_ok_and(|r| r.json().as_array().is_some_and(|a| a.len() == 1))
    }));
    // A fourth node gets the list and the registry through the snapshot before it reports healthy.
    let late = AgoraNode::start(bin(), &config(&server), 4);
    let subs = late.get("/v1/push-subscriptions").expect("GET").json();
    assert_eq!(
        subs[0]["account_id"], 5,
        "the push registry came with the snapshot: {subs}"
    );
    assert_eq!(subs[0]["types"], json!(["Mailbox"]));
    assert_eq!(
        blocked_status(&late, "203.0.113.1"),
        200,
        "the snapshot arrived before /healthz said ok"
    );
    assert_eq!(
        blocked_status(&late, "2001:db8::7"),
        404,
        "the unblock is not resurrected"
    );
    let list = late.get("/v1/blocked-ips").expect("GET").json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let metrics = late.get("/metrics").expect("GET /metrics").body;
    assert!(metrics.contains("agora_blocked_ip_rules 1"), "{metrics}");
    assert!(metrics.contains("agora_snapshots_fetched_total 1"), "{metrics}");
}

#[test]
fn an_eventsource_client_on_one_node_hears_a_change_posted_on_another() {
    let server = NatsServer::start();
    let nodes = start_cluster(&server, &[1, 2, 3]);
    let mut stream =
        SseStream::open(&nodes[0].addr, "/v1/eventsource?accounts=42&types=Email,Mailbox&ping=1").expect("open");
    let r = nodes[2].post(
        "/v1/events",
        r#"{"type":"state_change","account_id":42,"change_id":9,"types":["Email","Thread"]}"#,
    );
    assert_eq!(r.status, 202);
    // Another account and a type not asked for are filtered out.
    nodes[2].post(
        "/v1/events",
        r#"{"type":"state_change","account_id":43,"change_id":1,"types":["Email"]}"#,
    );
    nodes[2].post(
        "/v1/events",
        r#"{"type":"state_change","account_id":42,"change_id":10,"types":["Thread"]}"#,
    );
    let first = stream.next_event().expect("state event");
    assert_eq!(first.event, "state");
    let data: Value = serde_json::from_str(&first.data).expect("JSON");
    assert_eq!(data, json!({"@type": "StateChange", "changed": {"42": {"Email": "9"}}}));
    let ping = stream.next_event().expect("ping after a quiet second");
    assert_eq!(ping.event, "ping");
    assert_eq!(serde_json::from_str::<Value>(&ping.data).expect("JSON")["interval"], 1);

    let bad = nodes[0].get("/v1/eventsource?accounts=x").expect("GET");
    assert_eq!(bad.status, 400);
    let bad = nodes[0].get("/v1/eventsource?ping=soon").expect("GET");
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"].as_str().is_some_and(|e| e.contains("ping")),
        "{}",
        bad.body
    );
    let bad = nodes[0].get("/v1/eventsource?types=Emial").expect("GET");
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("Emial"));
}

/// A webhook receiver: records every POST body, answers 200.
struct Webhook {
    addr: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let sink = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    while let Some((_, body)) = agora_testkit::http::read_request(&mut reader) {
                        if let Ok(v) = serde_json::from_slice(&body) {
                            sink.lock().expect("lock").push(v);
                        }
                        let _ = reader
                            .get_mut()
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                    }
                });
            }
        });
        Webhook { addr, bodies }
    }

    fn count(&self) -> usize {
        self.bodies.lock().expect("lock").len()
    }
}

#[test]
fn exactly_one_node_delivers_each_push_and_another_takes_over_when_it_dies() {
    let server = NatsServer::start();
    let mut nodes = start_cluster(&server, &[1, 2, 3]);
    let hook = Webhook::start();
    let account = 42u32;
    let created = nodes[1].post(
        "/v1/push-subscriptions",
        &format!(
            r#"{{"account_id":{account},"url":"http://{}/push","types":["Email"]}}"#,
            hook.addr
        ),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().expect("id").to_string();
    for node in &nodes {
        assert!(wait_until(DEADLINE, || {
            node.get("/v1/push-subscriptions")
                .is_ok_and(|r| r.json().as_array().is_some_and(|a| a.len() == 1))
        }));
    }

    for change in 1..=20u64 {
        let node = &nodes[usize::try_from(change % 3).expect("small")];
        let body =
            format!(r#"{{"type":"state_change","account_id":{account},"change_id":{change},"types":["Email"]}}"#);
        assert_eq!(node.post("/v1/events", &body).status, 202);
    }
    // A change of a type the subscription does not want is not pushed.
    nodes[0].post(
        "/v1/events",
        &format!(r#"{{"type":"state_change","account_id":{account},"change_id":99,"types":["Mailbox"]}}"#),
    );
    assert!(
        wait_until(DEADLINE, || {
            hook.bodies
                .lock()
                .expect("lock")
                .iter()
                .any(|b| b["changed"]["42"]["Email"] == "20")
        }),
        "the last of 20 changes is pushed, got {}",
        hook.count()
    );
    std::thread::sleep(Duration::from_millis(800)); // a duplicate would arrive within this quiet period
    let bodies = hook.bodies.lock().expect("lock").clone();
    // Changes that arrive while a push is in flight are coalesced (RFC 8620 7.2): fewer POSTs, the newest state
    // last, and no state ever pushed twice (which a second delivering node would do).
    let mut states: Vec<u64> = bodies
        .iter()
        .filter_map(|b| b["changed"]["42"]["Email"].as_str()?.parse().ok())
        .collect();
    assert_eq!(
        states.len(),
        bodies.len(),
        "every push names the Email state: {bodies:?}"
    );
    assert!(states.contains(&20), "the newest state is pushed: {states:?}");
    states.sort_unstable();
    states.dedup();
    assert_eq!(states.len(), bodies.len(), "no state pushed twice: {bodies:?}");
    assert_eq!(bodies[0]["@type"], "StateChange");

    // Kill the owner without a clean leave; later changes are still delivered.
    let owner = push_owner(account, &[1, 2, 3]).expect("owner");
    let index = nodes.iter().position(|n| n.node_id == owner).expect("owner runs");
    nodes[index].kill();
    let survivor = &nodes[(index + 1) % 3];
    for change in 21..=25u64 {
        let body =
            format!(r#"{{"type":"state_change","account_id":{account},"change_id":{change},"types":["Email"]}}"#);
        assert_eq!(survivor.post("/v1/events", &body).status, 202);
    }
    let started = Instant::now();
    assert!(
        wait_until(DEADLINE, || {
            // Coalesced or not, the newest state reaches the client.
            let bodies = hook.bodies.lock().expect("lock");
            bodies.iter().any(|b| b["changed"]["42"]["Email"] == "25")
        }),
        "changes after the owner died are delivered"
    );
    eprintln!("takeover delivered within {:?}", started.elapsed());

    // Removing the subscription stops pushes; an unknown id is a 404.
    assert_eq!(survivor.delete(&format!("/v1/push-subscriptions/{id}")).status, 204);
    let r = survivor.delete(&format!("/v1/push-subscriptions/{id}"));
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().is_some_and(|e| e.contains(&id)));
}

#[test]
fn bad_requests_are_rejected_with_a_reason_and_change_nothing() {
    let node = AgoraNode::start(bin(), "", 1);
    let cases: &[(&str, &str, &str, &str)] = &[
        ("POST", "/v1/blocked-ips", "{not json", "invalid request"),
        ("POST", "/v1/blocked-ips", r#"{"network":"10.0.0.300"}"#, "10.0.0.300"),
        ("POST", "/v1/blocked-ips", r#"{"network":"10.0.0.0/33"}"#, "10.0.0.0/33"),
        (
            "POST",
            "/v1/blocked-ips",
            r#"{"network":"10.0.0.1","ttl":"soon"}"#,
            "ttl",
        ),
        ("POST", "/v1/blocked-ips", r#"{"network":"10.0.0.1","ttl":"0s"}"#, "ttl"),
        (
            "POST",
            "/v1/blocked-ips",
            r#"{"network":"10.0.0.1","color":"red"}"#,
            "color",
        ),
        ("GET", "/v1/blocked-ips/not-an-ip", "", "not-an-ip"),
        ("DELETE", "/v1/blocked-ips/10.9.9.300", "", "10.9.9.300"),
        (
            "POST",
            "/v1/push-subscriptions",
            r#"{"account_id":1,"url":"ftp://x/y"}"#,
            "url",
        ),
        ("POST", "/v1/push-subscriptions", r#"{"account_id":1}"#, "url"),
        (
            "POST",
            "/v1/push-subscriptions",
            r#"{"account_id":1,"url":"http://x/","types":["Nope"]}"#,
            "Nope",
        ),
        ("DELETE", "/v1/push-subscriptions/does-not-exist", "", "does-not-exist"),
        ("POST", "/v1/events", r#"{"type":"unknown_event"}"#, "unknown_event"),
    ];
    for (method, path, body, needle) in cases {
        let r = agora_testkit::http::request(&node.addr, method, path, (!body.is_empty()).then_some(*body))
            .expect("request");
        assert!(
            (400..500).contains(&r.status),
            "{method} {path} {body}: {} {}",
            r.status,
            r.body
        );
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(
            error.contains(needle),
            "{method} {path}: {error:?} should mention {needle:?}"
        );
    }
    assert_eq!(node.get("/v1/blocked-ips").expect("GET").json(), json!([]));
    assert_eq!(node.get("/v1/push-subscriptions").expect("GET").json(), json!([]));
    let info = node.get("/v1/node").expect("GET").json();
    // Only the broadcast removal of the unknown push subscription went out (other nodes may hold it); nothing else.
    assert_eq!(info["counters"]["events_published"], 1);
}

#[test]
fn metrics_count_events_by_type_and_report_the_connection() {
    let server = NatsServer::start();
    let nodes = start_cluster(&server, &[1, 2]);
    nodes[0].post("/v1/events", r#"{"type":"reload","target":"settings"}"#);
    assert!(wait_until(DEADLINE, || {
        nodes[1]
            .get("/metrics")
            .is_ok_and(|r| r.body.contains(r#"agora_events_received_total{type="reload"} 1"#))
    }));
    let text = nodes[0].get("/metrics").expect("GET").body;
    for needle in [
        r#"agora_events_published_total{type="reload"} 1"#,
        "agora_connected 1",
        "agora_members 1",
        "agora_batches_sent_total",
        "agora_invalid_records_total 0",
        "agora_gaps_total 0",
        "agora_reconnects_total 0",
        "agora_push_subscriptions 0",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let remote = nodes[1].get("/metrics").expect("GET").body;
    assert!(remote.contains("agora_delivery_latency_seconds_count"), "{remote}");
}

#[test]
fn a_thousand_eventsource_streams_on_one_node_all_hear_a_change() {
    let node = AgoraNode::start(bin(), "", 1);
    const STREAMS: usize = 1000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let addr = node.addr.clone();
    let heard = runtime.block_on(async move {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut streams = Vec::with_capacity(STREAMS);
        for _ in 0..STREAMS {
            let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
            s.write_all(b"GET /v1/eventsource?accounts=7 HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            let mut reader = tokio::io::BufReader::new(s);
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("status line");
            assert!(line.contains(" 200 "), "{line}");
            streams.push(reader);
        }
        let post_addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            agora_testkit::http::request(
                &post_addr,
                "POST",
                "/v1/events",
                Some(r#"{"type":"state_change","account_id":7,"change_id":1,"types":["Email"]}"#),
            )
        })
        .await
        .expect("join")
        .expect("POST");
        let mut tasks = Vec::new();
        for mut reader in streams {
            tasks.push(tokio::spawn(async move {
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return false;
                    }
                    if line.starts_with("event: state") {
                        return true;
                    }
                }
            }));
        }
        let mut heard = 0;
        for t in tasks {
            if tokio::time::timeout(DEADLINE, t)
                .await
                .is_ok_and(|r| r.unwrap_or(false))
            {
                heard += 1;
            }
        }
        heard
    });
    assert_eq!(heard, STREAMS);
    if let Some(pid) = node.pid() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let rss = status.lines().find(|l| l.starts_with("VmRSS")).unwrap_or("VmRSS: ?");
            eprintln!("node with {STREAMS} EventSource streams: {rss}");
        }
    }
}
