//! Streams that survive their node (contract 6.2): in the durable mode the ids on `/v1/events`,
//! `/v1/eventsource` and `/v1/events/poll` are places in the JetStream stream, the same on every node, so a client
//! whose node dies (or that a load balancer sends elsewhere) resumes on another node with its last id and loses
//! nothing: every event once, in the order every node reads the stream.
//!
//! Each test runs three real nodes on one JetStream-enabled nats-server, publishes 1,500 events at about 300/s on
//! two nodes, and reads them with the three kinds of clients at once, next to a reference reader that never moves.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{bin, cluster_config};
use agora_testkit::node::AgoraNode;
use agora_testkit::{scratch_dir, wait_until, NatsServer};
use serde_json::Value;

/// Events published per test.
const EVENTS: u64 = 1_500;

/// The account every event is for.
const ACCOUNT: u32 = 7;

/// How a client reads.
#[derive(Clone, Copy, Debug)]
enum Protocol {
    /// `GET /v1/events` (SSE, `Last-Event-ID`).
    Events,
    /// `GET /v1/eventsource` (JMAP EventSource, the state string is the change id).
    EventSource,
    /// `GET /v1/events/poll?after=`.
    Poll,
}

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    /// Change ids in arrival order.
    ids: Vec<u64>,
    /// `resync` or `lagged` notices received.
    notices: Vec<String>,
    /// Responses with status 200 (streams opened, polls answered).
    opened: u64,
    /// Streams or polls that ended or failed and were started again.
    reconnects: u64,
    /// Each node address the client was served by, in order of first use.
    served_by: Vec<String>,
}

/// A client that reads with `protocol` from the first node of `addrs` that answers, reconnecting with its last id
/// whenever its stream ends, its node is gone, or (`hang_up_every`) on its own, to the next node in turn.
struct Client {
    protocol: Protocol,
    addrs: Vec<String>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    hang_up_every: usize,
}

impl Client {
    fn spawn(protocol: Protocol, addrs: Vec<String>, hang_up_every: usize) -> RunningClient {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let client = Client {
            protocol,
            addrs,
            seen: seen.clone(),
            stop: stop.clone(),
            hang_up_every,
        };
        let thread = std::thread::spawn(move || client.run());
        RunningClient { seen, stop, thread }
    }

    fn run(self) {
        let mut last_id: Option<String> = None;
        let mut node = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let addr = self.addrs[node % self.addrs.len()].clone();
            let served = match self.protocol {
                Protocol::Poll => self.poll(&addr, &mut last_id),
                Protocol::Events | Protocol::EventSource => self.stream(&addr, &mut last_id),
            };
            if served {
                let mut seen = self.seen.lock().expect("lock");
                if !seen.served_by.contains(&addr) {
                    seen.served_by.push(addr);
                }
            } else {
                std::thread::sleep(Duration::from_millis(50)); // paces retries while a node is down
            }
            self.seen.lock().expect("lock").reconnects += 1;
            node += 1;
        }
    }

    /// One SSE stream; true if the node served it.
    fn stream(&self, addr: &str, last_id: &mut Option<String>) -> bool {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
        let resume = last_id
            .as_ref()
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let path = match self.protocol {
            Protocol::Events => "/v1/events?types=state_change".to_string(),
            _ => format!("/v1/eventsource?types=*&closeafter=no&ping=0&accounts={ACCOUNT}"),
        };
        if write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n{resume}\r\n").is_err() {
            return false;
        }
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        let (mut id, mut name, mut data) = (None::<String>, String::new(), String::new());
        let mut served = false;
        let mut this_stream = 0;
        while this_stream < self.hang_up_every {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if self.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    continue;
                }
                Err(_) => break,
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.starts_with("HTTP/1.1 ") {
                served = l.starts_with("HTTP/1.1 200");
                if served {
                    self.seen.lock().expect("lock").opened += 1;
                } else {
                    break;
                }
            } else if let Some(v) = l.strip_prefix("id:") {
                id = Some(v.trim().to_string());
            } else if let Some(v) = l.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = l.strip_prefix("data:") {
                data = v.trim().to_string();
            } else if l.is_empty() && !data.is_empty() {
                let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                let mut seen = self.seen.lock().expect("lock");
                match name.as_str() {
                    "state" => seen.ids.extend(state_ids(&value)),
                    "state_change" => seen.ids.extend(value["change_id"].as_u64()),
                    other => seen.notices.push(format!("{other}: {data}")),
                }
                drop(seen);
                this_stream += 1;
                if let Some(id) = id.take() {
                    *last_id = Some(id);
                }
                name.clear();
                data.clear();
            }
        }
        served
    }

    /// Polls `addr` until `hang_up_every` events came from it or it fails; true if it answered.
    fn poll(&self, addr: &str, after: &mut Option<String>) -> bool {
        let mut served = false;
        let mut got = 0;
        while got < self.hang_up_every && !self.stop.load(Ordering::Relaxed) {
            let mut path = "/v1/events/poll?types=state_change&wait=1&limit=100".to_string();
            if let Some(id) = after.as_deref() {
                path.push_str("&after=");
                path.push_str(id);
            }
            let Ok(response) = agora_testkit::http::request(addr, "GET", &path, None) else {
                return served;
            };
            if response.status != 200 {
                return served;
            }
            if !served {
                self.seen.lock().expect("lock").opened += 1;
                served = true;
            }
            let Ok(answer) = serde_json::from_str::<Value>(&response.body) else {
                return served;
            };
            let mut seen = self.seen.lock().expect("lock");
            for item in answer["events"].as_array().into_iter().flatten() {
                let event = &item["event"];
                match event["type"].as_str() {
                    Some("state_change") => seen.ids.extend(event["change_id"].as_u64()),
                    _ => seen.notices.push(event.to_string()),
                }
                got += 1;
            }
            drop(seen);
            if let Some(next) = answer["next"].as_str() {
                *after = Some(next.to_string());
            }
        }
        served
    }
}

/// The change ids in a JMAP `StateChange` (the node's state strings are change ids).
fn state_ids(value: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = value["changed"]
        .as_object()
        .into_iter()
        .flat_map(|accounts| accounts.values())
        .filter_map(Value::as_object)
        .flat_map(|types| types.values())
        .filter_map(|state| state.as_str()?.parse().ok())
        .collect();
    ids.dedup();
    ids
}

struct RunningClient {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl RunningClient {
    fn count(&self) -> usize {
        self.seen.lock().expect("lock").ids.len()
    }

    fn opened(&self) -> u64 {
        self.seen.lock().expect("lock").opened
    }

    fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        Arc::try_unwrap(self.seen)
            .map(|m| m.into_inner().expect("lock"))
            .unwrap_or_default()
    }
}

/// Three durable nodes on one JetStream server with file storage.
fn durable_cluster(name: &str) -> (NatsServer, String, [AgoraNode; 3]) {
    let dir = scratch_dir(name);
    let dir = dir.to_string_lossy().into_owned();
    let server = NatsServer::start_with_args(&["-js", "-sd", &dir]);
    let config = cluster_config(&server, "jetstream.enable = true\njetstream.storage = \"file\"\n");
    let nodes = [1, 2, 3].map(|id| AgoraNode::start(bin(), &config, id));
    (server, config, nodes)
}

/// Publishes [`EVENTS`] state changes (change ids 0..) at about 300/s, alternately on `publishers`; calls
/// `midway` once, after `at` of them were accepted. Every event must be accepted.
fn publish(publishers: &[&AgoraNode], at: u64, mut midway: impl FnMut()) {
    let started = Instant::now();
    for i in 0..EVENTS {
        if i == at {
            midway();
        }
        // Paced by the clock, not by sleeps between posts: 300/s whatever each post takes.
        let due = started + Duration::from_micros(i * 1_000_000 / 300);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let node = publishers[i as usize % publishers.len()];
        let body = format!(r#"{{"type":"state_change","account_id":{ACCOUNT},"change_id":{i},"types":["Email"]}}"#);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match agora_testkit::http::request(&node.addr, "POST", "/v1/events", Some(&body)) {
                Ok(r) if r.status == 202 => break,
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "event {i} not accepted by node {}: {other:?}",
                        node.node_id
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// Waits until every client has [`EVENTS`] events (or a deadline), stops them and checks each against the
/// reference: the same events in the same order, each once, no notice.
fn check(reference: RunningClient, clients: Vec<(&str, RunningClient)>) {
    let all = |c: &RunningClient| c.count() >= EVENTS as usize;
    let deadline = Duration::from_secs(60);
    wait_until(deadline, || all(&reference) && clients.iter().all(|(_, c)| all(c)));
    let reference = reference.finish();
    assert_eq!(
        reference.ids.len(),
        EVENTS as usize,
        "the reference reader got every event: {:?}",
        reference.notices
    );
    let mut sorted = reference.ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted,
        (0..EVENTS).collect::<Vec<_>>(),
        "the reference holds each event once"
    );
    for (name, client) in clients {
        let seen = client.finish();
        assert!(
            seen.notices.is_empty(),
            "{name}: no resync or lagged notice: {:?}",
            seen.notices
        );
        let missing = EVENTS as usize - seen.ids.iter().collect::<std::collections::HashSet<_>>().len();
        assert_eq!(
            missing,
            0,
            "{name}: {missing} events never seen ({} received, served by {:?}, {} reconnects)",
            seen.ids.len(),
            seen.served_by,
            seen.reconnects
        );
        if seen.ids != reference.ids {
            let at = seen.ids.iter().zip(&reference.ids).position(|(a, b)| a != b);
            panic!(
                "{name}: not the reference's order or count ({} vs {} events, first difference at {at:?}; served by \
                 {:?})",
                seen.ids.len(),
                reference.ids.len(),
                seen.served_by
            );
        }
        eprintln!(
            "{name}: {} events once, in stream order, served by {:?}, {} reconnects",
            seen.ids.len(),
            seen.served_by,
            seen.reconnects
        );
    }
}

#[test]
fn a_client_whose_node_is_killed_resumes_on_another_node_and_loses_nothing() {
    let (_server, _config, [mut node1, node2, node3]) = durable_cluster("cluster-resume-kill");
    let reference = Client::spawn(Protocol::Events, vec![node2.addr.clone()], usize::MAX);
    // Readers on node 1, with node 3 to fall back to (a load balancer's next choice).
    let failover = vec![node1.addr.clone(), node3.addr.clone()];
    let clients = [Protocol::Events, Protocol::EventSource, Protocol::Poll]
        .map(|p| (p, Client::spawn(p, failover.clone(), usize::MAX)));
    assert!(
        wait_until(Duration::from_secs(10), || reference.opened() >= 1
            && clients.iter().all(|(_, c)| c.opened() >= 1)),
        "every reader is connected before the load starts"
    );
    publish(&[&node2, &node3], 450, || node1.kill());
    check(
        reference,
        clients.into_iter().map(|(p, c)| (protocol_name(p), c)).collect(),
    );
}

#[test]
fn clients_that_move_between_nodes_across_a_nats_server_restart_lose_nothing() {
    let (mut server, _config, [node1, node2, node3]) = durable_cluster("cluster-resume-nats");
    let reference = Client::spawn(Protocol::Events, vec![node2.addr.clone()], usize::MAX);
    // Every reader hangs up every 100 events and resumes on the next node: ids cross nodes all the time.
    let everywhere = vec![node1.addr.clone(), node3.addr.clone(), node2.addr.clone()];
    let clients = [Protocol::Events, Protocol::EventSource, Protocol::Poll]
        .map(|p| (p, Client::spawn(p, everywhere.clone(), 100)));
    assert!(
        wait_until(Duration::from_secs(10), || reference.opened() >= 1
            && clients.iter().all(|(_, c)| c.opened() >= 1)),
        "every reader is connected before the load starts"
    );
    let mut restarted = false;
    publish(&[&node2, &node3], 450, || {
        server.kill();
        std::thread::sleep(Duration::from_secs(1));
        server.restart();
        restarted = true;
    });
    assert!(restarted);
    check(
        reference,
        clients.into_iter().map(|(p, c)| (protocol_name(p), c)).collect(),
    );
    drop(node1);
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Events => "/v1/events",
        Protocol::EventSource => "/v1/eventsource",
        Protocol::Poll => "/v1/events/poll",
    }
}

#[test]
fn the_resume_storm_bench_moves_every_client_without_losing_or_repeating_a_change() {
    use agora_bench::resume::{self, ResumeOptions};
    let dir = scratch_dir("resume-bench");
    let dir = dir.to_string_lossy().into_owned();
    let server = NatsServer::start_with_args(&["-js", "-sd", &dir]);
    let options = ResumeOptions {
        clients: 200,
        accounts: 10,
        rate: 100,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let r = runtime
        .block_on(resume::run(bin(), &server.url(), &options))
        .expect("the resume scenario runs");
    let row = r.to_json();
    assert_eq!(row["never_resumed"], 0, "{row}");
    assert_eq!(r.lost, 0, "{row}");
    assert_eq!(row["duplicates"], 0, "{row}");
    assert_eq!(row["out_of_order"], 0, "{row}");
    assert!(r.events > 100, "changes kept coming: {row}");
    assert!(r.p50_us > 0.0 && r.p99_us >= r.p50_us, "{row}");
    assert!(row["all_streaming_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{row}");
}

/// The id a poll of `node` starts from now with.
fn poll_from_now(node: &AgoraNode) -> String {
    let answer = node.get("/v1/events/poll").expect("poll").json();
    answer["next"].as_str().expect("next").to_string()
}

/// Polls `node` after `after` until `want` state changes came (or a deadline): their change ids, the notices in
/// between, and the last `next`.
fn poll_until(node: &AgoraNode, after: &str, want: usize) -> (Vec<u64>, Vec<Value>, String) {
    let (mut ids, mut notices, mut next) = (Vec::new(), Vec::new(), after.to_string());
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids.len() < want && Instant::now() < deadline {
        let limit = (want - ids.len()).min(1000);
        let answer = node
            .get(&format!(
                "/v1/events/poll?types=state_change&wait=2&limit={limit}&after={next}"
            ))
            .expect("poll")
            .json();
        for item in answer["events"].as_array().into_iter().flatten() {
            match item["event"]["change_id"].as_u64() {
                Some(id) => ids.push(id),
                None => notices.push(item["event"].clone()),
            }
        }
        next = answer["next"].as_str().expect("next").to_string();
    }
    (ids, notices, next)
}

#[test]
fn a_node_that_joins_later_serves_ids_issued_before_it_started() {
    let dir = scratch_dir("cluster-resume-join");
    let dir = dir.to_string_lossy().into_owned();
    let server = NatsServer::start_with_args(&["-js", "-sd", &dir]);
    let config = cluster_config(&server, "jetstream.enable = true\njetstream.storage = \"file\"\n");
    let node1 = AgoraNode::start(bin(), &config, 1);
    let node2 = AgoraNode::start(bin(), &config, 2);
    let from_now = poll_from_now(&node1);
    for i in 0..1_000u64 {
        let body = format!(r#"{{"type":"state_change","account_id":{ACCOUNT},"change_id":{i},"types":["Email"]}}"#);
        assert_eq!(node2.post("/v1/events", &body).status, 202);
    }
    // A client read 300 on node 1, then went away.
    let (first, notices, id) = poll_until(&node1, &from_now, 300);
    assert_eq!(first, (0..300).collect::<Vec<_>>(), "{notices:?}");
    // Node 3 joins after all of it was published (a new consumer starts with new events only) and is asked to
    // resume after the 300th.
    let node3 = AgoraNode::start(bin(), &config, 3);
    let (rest, notices, _) = poll_until(&node3, &id, 700);
    assert!(notices.is_empty(), "no resync: {notices:?}");
    assert_eq!(rest, (300..1_000).collect::<Vec<_>>(), "the rest, once, in order");
    drop(node3);
}

#[test]
fn in_core_mode_ids_stay_per_node_and_another_node_says_unknown_id() {
    let server = NatsServer::start();
    let config = cluster_config(&server, "");
    let node1 = AgoraNode::start(bin(), &config, 1);
    let node2 = AgoraNode::start(bin(), &config, 2);
    let from_now = poll_from_now(&node1);
    let body = format!(r#"{{"type":"state_change","account_id":{ACCOUNT},"change_id":1,"types":["Email"]}}"#);
    assert_eq!(node1.post("/v1/events", &body).status, 202);
    let (ids, notices, id) = poll_until(&node1, &from_now, 1);
    assert_eq!((ids, notices), (vec![1], vec![]));
    // The id resumes on the node that issued it...
    let same = node1.get(&format!("/v1/events/poll?after={id}")).expect("poll").json();
    assert_eq!(same["events"], serde_json::json!([]), "{same}");
    // ...and another node says it cannot serve it.
    let other = node2.get(&format!("/v1/events/poll?after={id}")).expect("poll").json();
    assert_eq!(other["events"][0]["event"]["type"], "resync", "{other}");
    assert_eq!(other["events"][0]["event"]["reason"], "unknown_id", "{other}");
}
