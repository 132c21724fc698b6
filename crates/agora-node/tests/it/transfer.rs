//! State transfer against real processes: a joiner gets state many times larger than one NATS message while it
//! changes, and a forged "no responders" reply cannot make it believe it is alone.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{bin, cluster_config, metric};
use agora_testkit::node::AgoraNode;
use agora_testkit::{wait_until, NatsServer};

/// A cluster configuration with a short heartbeat and, optionally, a cluster key.
fn config(server: &NatsServer, key: Option<&str>) -> String {
    let plain = cluster_config(server, "");
    match key {
        Some(key) => plain.replacen("[cluster]\n", &format!("[cluster]\nkey = \"{key}\"\n"), 1),
        None => plain,
    }
}

/// The networks a node lists.
fn networks(node: &AgoraNode) -> BTreeSet<String> {
    let Ok(response) = node.get("/v1/blocked-ips") else {
        return BTreeSet::new();
    };
    let list = response.json();
    list.as_array()
        .or_else(|| list["rules"].as_array())
        .map(|rules| {
            rules
                .iter()
                .filter_map(|r| r["network"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn block(node: &AgoraNode, network: &str) {
    // A long reason makes every rule ~200 bytes of JSON, so the state spans many pages.
    let body = format!(r#"{{"network":"{network}","reason":"{}"}}"#, "abuse ".repeat(20));
    let response = node.post("/v1/blocked-ips", &body);
    assert_eq!(response.status, 201, "{}", response.body);
}

fn unblock(node: &AgoraNode, network: &str) {
    let path = format!("/v1/blocked-ips/{}", network.replace('/', "%2F"));
    let response = node.delete(&path);
    assert_eq!(response.status, 204, "{}", response.body);
}

#[test]
fn a_joiner_gets_state_many_messages_long_while_it_changes() {
    // 16 KiB messages: 1,500 rules of ~200 bytes and 200 subscriptions take about twenty pages.
    let server = NatsServer::start_with_config("max_payload: 16384\n", &[]);
    let first = AgoraNode::start(bin(), &config(&server, None), 1);
    for i in 0..1500u32 {
        block(&first, &format!("10.{}.{}.0/24", i / 256, i % 256));
    }
    for i in 0..200u32 {
        let body = format!(
            r#"{{"account_id":{},"url":"https://push.example.com/{i}?secret=abcdef{i}","types":["Email"]}}"#,
            i % 40
        );
        let response = first.post("/v1/push-subscriptions", &body);
        assert_eq!(response.status, 201, "{}", response.body);
    }

    // While the second node joins, rules are removed from the part already sent and added after it.
    let joiner = AgoraNode::spawn(bin(), &config(&server, None), 2);
    for i in 0..300u32 {
        if i % 2 == 0 {
            unblock(&first, &format!("10.{}.{}.0/24", i / 256, i % 256));
        }
        block(&first, &format!("172.16.{}.{}/32", i / 256, i % 256));
    }
    assert!(
        wait_until(Duration::from_secs(30), || joiner
            .get("/healthz")
            .is_ok_and(|r| r.status == 200)),
        "the joiner did not become healthy"
    );
    let expected = networks(&first);
    assert_eq!(expected.len(), 1500 - 150 + 300);
    assert!(
        wait_until(Duration::from_secs(20), || networks(&joiner) == expected),
        "the joiner's rules differ: {} missing, {} extra",
        expected.difference(&networks(&joiner)).count(),
        networks(&joiner).difference(&expected).count()
    );
    let subscriptions = joiner.get("/v1/push-subscriptions").expect("list").json();
    let count = subscriptions
        .as_array()
        .or_else(|| subscriptions["subscriptions"].as_array())
        .map_or(0, Vec::len);
    assert_eq!(count, 200, "every push subscription arrived");
    let pages = metric(&joiner, "agora_snapshot_pages_total");
    assert!(
        pages >= 10.0,
        "the state came in {pages} pages; it cannot fit in fewer than ten"
    );
}

/// Answers every state request on `subject` with a forged "no responders" status (503), as anyone who can publish
/// on the server can; counts the forgeries.
fn forge_no_responders(server: &str, subject: &str, stop: Arc<AtomicBool>, forged: Arc<AtomicU64>) {
    let mut socket = TcpStream::connect(server).expect("connect to nats");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut reader = BufReader::new(socket.try_clone().expect("clone"));
    let mut info = String::new();
    reader.read_line(&mut info).expect("INFO");
    write!(
        socket,
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}}\r\nSUB {subject} 1\r\nPING\r\n"
    )
    .expect("subscribe");
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => continue,
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["PING"] => socket.write_all(b"PONG\r\n").expect("pong"),
            ["MSG", _, _, reply, len] => {
                let mut payload = vec![0; len.parse::<usize>().expect("length") + 2];
                reader.read_exact(&mut payload).expect("payload");
                socket
                    .write_all(format!("HPUB {reply} 16 16\r\nNATS/1.0 503\r\n\r\n\r\n").as_bytes())
                    .expect("forge");
                forged.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

#[test]
fn a_forged_no_responders_reply_cannot_make_a_keyed_joiner_believe_it_is_alone() {
    let server = NatsServer::start();
    let key = "a cluster key that is long enough to be real";
    let first = AgoraNode::start(bin(), &config(&server, Some(key)), 1);
    for i in 0..50u32 {
        block(&first, &format!("198.51.100.{i}/32"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let forged = Arc::new(AtomicU64::new(0));
    std::thread::scope(|scope| {
        let (stop_forging, count, address) = (stop.clone(), forged.clone(), server.address());
        scope.spawn(move || forge_no_responders(&address, "agora.events.state", stop_forging, count));
        let joiner = AgoraNode::spawn(bin(), &config(&server, Some(key)), 2);
        // Every time the joiner says it is healthy, it must hold all 50 rules.
        let mut healthy_checks = 0;
        let became_healthy = wait_until(Duration::from_secs(30), || {
            if !joiner.get("/healthz").is_ok_and(|r| r.status == 200) {
                return false;
            }
            let rules = joiner.get("/v1/node").expect("node").json()["blocked_ip_rules"].as_u64();
            assert_eq!(rules, Some(50), "healthy with missing state");
            healthy_checks += 1;
            healthy_checks >= 5
        });
        stop.store(true, Ordering::Relaxed);
        assert!(became_healthy, "the joiner never became healthy");
    });
    assert!(
        forged.load(Ordering::Relaxed) > 0,
        "the forger never saw a state request: the test proves nothing"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_node_of_an_older_release_joining_gets_the_whole_state_in_one_message() {
    let server = NatsServer::start();
    let key = "a cluster key that is long enough to be real";
    let node = AgoraNode::start(bin(), &config(&server, Some(key)), 1);
    for i in 0..20u32 {
        block(&node, &format!("203.0.113.{i}/32"));
    }
    // What an older node sends: its instance id, 8 bytes, sealed with the key, on `snapshot`.
    let keyring = agora::auth::Keyring::new([key.as_bytes()]).expect("keyring");
    let (request, request_mac) = keyring.seal_request("snapshot", &0x0123_4567_89ab_cdef_u64.to_be_bytes());
    let rt = runtime();
    let reply = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connect");
        tokio::time::timeout(Duration::from_secs(5), client.request("agora.events.snapshot", request))
            .await
            .expect("an answer in time")
            .expect("a reply")
    });
    let json = keyring
        .open_reply("snapshot", &request_mac, &reply.payload)
        .expect("an authenticated reply");
    let state: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(
        state["blocked_ips"]["rules"].as_array().map(Vec::len),
        Some(20),
        "{state}"
    );
}

#[test]
fn a_joiner_takes_the_state_from_members_of_an_older_release() {
    use agora::codec::{BatchEncoder, Control, Heartbeat};
    use futures::StreamExt;

    let server = NatsServer::start();
    let rt = runtime();
    let client = rt.block_on(async_nats::connect(server.url())).expect("connect");
    // An "older node" 9: heartbeats every 200 ms, and answers `snapshot` (never `state`) with three rules.
    let old_state = r#"{"blocked_ips":{"rules":[
        {"network":"192.0.2.1/32","expires_at_ms":null,"reason":"old","origin_node":9,"updated_at_us":1},
        {"network":"192.0.2.2/32","expires_at_ms":null,"reason":"old","origin_node":9,"updated_at_us":1},
        {"network":"192.0.2.3/32","expires_at_ms":null,"reason":"old","origin_node":9,"updated_at_us":1}],
        "tombstones":[]},"push":{"subscriptions":[],"tombstones":[]}}"#;
    let old_node = {
        let client = client.clone();
        rt.spawn(async move {
            let mut requests = client.subscribe("agora.events.snapshot").await.expect("serve");
            let node = agora::NodeId::new(9).expect("id");
            let mut encoder = BatchEncoder::new(node, 0x9999);
            let mut ticker = tokio::time::interval(Duration::from_millis(200));
            let mut seq = 0;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {
                        let now = agora::clock::now_us();
                        encoder.begin(seq, now);
                        encoder.push_control(&Control::Heartbeat(Heartbeat {
                            interval_ms: 200,
                            started_at_ms: 1,
                            http: None,
                            stalwart_node_id: None,
                        }), now);
                        seq += 1;
                        let _ = client.publish("agora.events", encoder.finish()).await;
                    }
                    Some(request) = requests.next() => {
                        if let Some(reply) = request.reply {
                            let _ = client.publish(reply, old_state.into()).await;
                        }
                    }
                }
            }
        })
    };
    let joiner = AgoraNode::spawn(bin(), &config(&server, None), 2);
    assert!(
        wait_until(Duration::from_secs(30), || joiner
            .get("/healthz")
            .is_ok_and(|r| r.status == 200)),
        "the joiner did not become healthy"
    );
    assert_eq!(
        joiner.get("/v1/node").expect("node").json()["blocked_ip_rules"].as_u64(),
        Some(3),
        "the older member's state was merged"
    );
    old_node.abort();
}
