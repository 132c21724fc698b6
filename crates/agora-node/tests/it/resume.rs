//! The durable promise up to the application: with the durable mode, a nats-server killed with -9 and restarted
//! under load, a client that reads `/v1/events` as a browser EventSource does (and reconnects with `Last-Event-ID`
//! whenever its stream ends or breaks) gets every accepted event exactly once, in order.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{bin, cluster_config};
use agora_testkit::node::AgoraNode;
use agora_testkit::{scratch_dir, wait_until, NatsServer};
use serde_json::Value;

/// What a reconnecting SSE client saw: change ids in arrival order, and how often it reconnected.
#[derive(Default)]
struct Seen {
    ids: Vec<u64>,
    reconnects: u64,
    /// What `resync` and `lagged` notices said was missed (a notice with an unknown count counts as one).
    reported_missed: u64,
    /// Streams the node answered with 200 (its cursor exists from then on).
    opened: u64,
}

/// Reads `/v1/events` like an EventSource: on any end or error, reconnects with the last id it saw. It also hangs
/// up by itself every `hang_up_every` events (a browser tab reloading), so that resuming is exercised throughout.
fn client(addr: String, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>, hang_up_every: usize) {
    let mut last_id: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(&addr) else {
            std::thread::sleep(Duration::from_millis(100)); // paces reconnects while the node is down
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let resume = last_id
            .as_ref()
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        if write!(
            stream,
            "GET /v1/events?types=state_change HTTP/1.1\r\nHost: x\r\n{resume}\r\n"
        )
        .is_err()
        {
            continue;
        }
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        let mut id = None;
        let mut this_connection = 0;
        loop {
            if this_connection >= hang_up_every {
                break;
            }
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    continue;
                }
                Err(_) => break,
            }
            let l = line.trim_end();
            if l.starts_with("HTTP/1.1 200") {
                seen.lock().expect("lock").opened += 1;
            }
            if let Some(v) = l.strip_prefix("id:") {
                id = Some(v.trim().to_string());
            } else if let Some(v) = l.strip_prefix("data:") {
                if let Ok(data) = serde_json::from_str::<Value>(v.trim()) {
                    if data["type"] == "resync" || data["type"] == "lagged" {
                        seen.lock().expect("lock").reported_missed += data["missed"].as_u64().unwrap_or(0).max(1);
                    }
                    if data["type"] == "state_change" {
                        if let Some(change) = data["change_id"].as_u64() {
                            seen.lock().expect("lock").ids.push(change);
                            this_connection += 1;
                        }
                    }
                    if id.is_some() {
                        last_id = id.take();
                    }
                }
            }
        }
        seen.lock().expect("lock").reconnects += 1;
    }
}

/// Starts [`client`] on `node` in a thread: what it saw, the flag that stops it, and the thread.
fn spawn_client(
    node: &AgoraNode,
    hang_up_every: usize,
) -> (Arc<Mutex<Seen>>, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, s, st) = (node.addr.clone(), seen.clone(), stop.clone());
    let reading = std::thread::spawn(move || client(addr, s, st, hang_up_every));
    (seen, stop, reading)
}

#[test]
fn with_the_durable_mode_a_resuming_client_gets_every_event_once_in_order_across_a_server_kill() {
    let dir = scratch_dir("resume-js");
    let dir = dir.to_string_lossy().into_owned();
    let mut server = NatsServer::start_with_args(&["-js", "-sd", &dir]);
    let config = cluster_config(&server, "jetstream.enable = true\njetstream.storage = \"file\"\n");
    let publisher = AgoraNode::start(bin(), &config, 1);
    let reader = AgoraNode::start(bin(), &config, 2);

    let (seen, stop, reading) = spawn_client(&reader, 300);
    // The client's first stream is open before the load starts: what it misses later, it must get by resuming.
    assert!(
        wait_until(Duration::from_secs(10), || seen.lock().expect("lock").opened >= 1),
        "the client's first stream opens"
    );

    let accepted = load_with_a_server_kill(&mut server, &publisher);

    assert!(
        accepted.len() > 1000,
        "the load really ran: {} accepted",
        accepted.len()
    );

    // Everything accepted arrives, once, in order (the catch-up after the restart included).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = seen.lock().expect("lock").ids.len();
        if got >= accepted.len() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = reading.join();
    let seen = seen.lock().expect("lock");
    let missing: Vec<&u64> = accepted.iter().filter(|i| !seen.ids.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted events never reached the client: {:?}",
        missing.len(),
        accepted.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(
        seen.reconnects >= 3,
        "the client resumed several times: {}",
        seen.reconnects
    );
    assert_eq!(
        seen.ids, accepted,
        "exactly once, in order (after {} reconnects)",
        seen.reconnects
    );
    eprintln!(
        "resume: {} events accepted, all delivered once in order, {} client reconnects",
        accepted.len(),
        seen.reconnects
    );
    drop(publisher);
    drop(reader);
}

/// Posts events to `publisher` at up to ~800/s: the server is killed with -9 once 400 were accepted and restarted
/// 1 s later; the load goes on until 600 more were accepted after the restart. Counting, not timing, decides when
/// each step happens, so a slow machine runs the same scenario (only slower). Returns the change ids the node
/// accepted (202), in order.
fn load_with_a_server_kill(server: &mut NatsServer, publisher: &AgoraNode) -> Vec<u64> {
    const BEFORE_KILL: usize = 400;
    const AFTER_RESTART: usize = 600;
    let mut accepted = Vec::new();
    let mut next = 0u64;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut killed_at: Option<Instant> = None;
    let mut accepted_at_restart: Option<usize> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "the load did not finish in time: {} accepted, killed {:?}, restarted after {:?}",
            accepted.len(),
            killed_at.is_some(),
            accepted_at_restart
        );
        if let Some(at_restart) = accepted_at_restart {
            if accepted.len() >= at_restart + AFTER_RESTART {
                break;
            }
        }
        let i = next;
        next += 1;
        let body = format!(r#"{{"type":"state_change","account_id":7,"change_id":{i},"types":["Email"]}}"#);
        if let Ok(r) = agora_testkit::http::request(&publisher.addr, "POST", "/v1/events", Some(&body)) {
            if r.status == 202 {
                accepted.push(i);
            }
        }
        if killed_at.is_none() && accepted.len() >= BEFORE_KILL {
            server.kill();
            killed_at = Some(Instant::now());
        }
        if let (Some(at), None) = (killed_at, accepted_at_restart) {
            if at.elapsed() > Duration::from_secs(1) {
                server.restart();
                accepted_at_restart = Some(accepted.len());
            }
        }
        std::thread::sleep(Duration::from_micros(1250));
    }
    accepted
}

#[test]
fn without_the_durable_mode_every_event_the_client_did_not_get_is_reported_to_it() {
    let mut server = NatsServer::start();
    let config = cluster_config(&server, "");
    let publisher = AgoraNode::start(bin(), &config, 1);
    let reader = AgoraNode::start(bin(), &config, 2);
    let (seen, stop, reading) = spawn_client(&reader, usize::MAX);
    assert!(
        wait_until(Duration::from_secs(10), || seen.lock().expect("lock").opened >= 1),
        "the client's stream opens"
    );
    let accepted = load_with_a_server_kill(&mut server, &publisher);
    // Wait until the client has all, or the loss has been reported at least as large as what is missing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let seen = seen.lock().expect("lock");
        let missing = accepted.iter().filter(|i| !seen.ids.contains(i)).count() as u64;
        if missing == 0 || (seen.reported_missed >= missing && seen.reported_missed > 0) || Instant::now() > deadline {
            break missing;
        }
        drop(seen);
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, Ordering::Relaxed);
    let _ = reading.join();
    let seen = seen.lock().expect("lock");
    assert!(
        missing == 0 || seen.reported_missed > 0,
        "{missing} events never reached the client and nothing told it so"
    );
    let mut sorted = seen.ids.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.ids.len(), "nothing twice");
    eprintln!(
        "core: {} accepted, {} delivered, {missing} missing, {} reported missed",
        accepted.len(),
        seen.ids.len(),
        seen.reported_missed
    );
}
