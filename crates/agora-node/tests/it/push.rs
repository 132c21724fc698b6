//! Push delivery against real processes: a real nats-server, real `agora node` processes, and real HTTP endpoints
//! on loopback that answer, fail, hang, hold or redirect. Isolation (a hanging endpoint never delays a healthy
//! one), coalescing, the circuit breaker, the per-account cap and the SSRF guard.

use std::collections::HashSet;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::support::{bin, cluster_config};
use agora_node::services::push_delivery::guard::classify;
use agora_testkit::node::AgoraNode;
use agora_testkit::{wait_until, NatsServer};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(15);

/// Lets deliveries reach the test endpoints, which listen on loopback.
const ALLOW_LOOPBACK: &str = "[push]\nallow-networks = [\"127.0.0.0/8\"]\n";

/// How a test endpoint answers each request.
#[derive(Clone, Debug)]
enum Mode {
    /// This status, empty body.
    Status(u16),
    /// `302 Found` to this location.
    Redirect(String),
    /// Reads the request and never answers.
    Hang,
    /// Holds every request until [`TestEndpoint::release`], then answers 200.
    Hold,
}

/// A push endpoint on 127.0.0.1: records every request's path and JSON body, answers as its mode says.
struct TestEndpoint {
    addr: String,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
    mode: Arc<Mutex<Mode>>,
    released: Arc<(Mutex<bool>, Condvar)>,
}

impl TestEndpoint {
    fn start(mode: Mode) -> TestEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let endpoint = TestEndpoint {
            addr,
            requests: Arc::default(),
            mode: Arc::new(Mutex::new(mode)),
            released: Arc::default(),
        };
        let (requests, mode, released) = (
            endpoint.requests.clone(),
            endpoint.mode.clone(),
            endpoint.released.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (requests, mode, released) = (requests.clone(), mode.clone(), released.clone());
                std::thread::spawn(move || serve(stream, &requests, &mode, &released));
            }
        });
        endpoint
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn count(&self) -> usize {
        self.requests.lock().expect("lock").len()
    }

    fn bodies(&self) -> Vec<Value> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }

    fn paths(&self) -> Vec<String> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }

    fn release(&self) {
        let (flag, condvar) = &*self.released;
        *flag.lock().expect("lock") = true;
        condvar.notify_all();
    }
}

/// Serves one connection's requests (keep-alive) until it closes.
fn serve(
    stream: TcpStream,
    requests: &Mutex<Vec<(String, Value)>>,
    mode: &Mutex<Mode>,
    released: &(Mutex<bool>, Condvar),
) {
    let mut reader = BufReader::new(stream);
    while let Some((path, body)) = agora_testkit::http::read_request(&mut reader) {
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        requests.lock().expect("lock").push((path, body));
        let mode = mode.lock().expect("lock").clone();
        let response = match mode {
            Mode::Status(status) => format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n"),
            Mode::Redirect(location) => {
                format!("HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n")
            }
            Mode::Hang => loop {
                std::thread::park();
            },
            Mode::Hold => {
                let (flag, condvar) = released;
                let mut done = flag.lock().expect("lock");
                while !*done {
                    done = condvar.wait(done).expect("lock");
                }
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_string()
            }
        };
        if reader.get_mut().write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A loopback port nothing listens on (connection refused).
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// One node against its own nats-server, with `extra` configuration.
fn node(extra: &str) -> (NatsServer, AgoraNode) {
    let server = NatsServer::start();
    let node = AgoraNode::start(bin(), &cluster_config(&server, &format!("\n{extra}")), 1);
    (server, node)
}

/// Registers a subscription through the API; returns its id.
fn subscribe(node: &AgoraNode, account: u32, url: &str) -> String {
    let r = node.post(
        "/v1/push-subscriptions",
        &json!({"account_id": account, "url": url}).to_string(),
    );
    assert_eq!(r.status, 201, "{url}: {}", r.body);
    r.json()["id"].as_str().expect("id").to_string()
}

/// Puts a subscription straight on the bus (with `agora publish`), as a second node racing the cap or a hostile
/// publisher would: no registration check applies, only the delivery's.
fn inject(server: &NatsServer, id: &str, account: u32, url: &str) {
    let event = json!({"type": "push_subscription_set", "id": id, "account_id": account, "url": url, "types": []});
    let config = agora_testkit::scratch_file("publish.toml", &cluster_config(server, ""));
    let status = std::process::Command::new(bin())
        .args(["publish", "--config"])
        .arg(&config)
        .arg(event.to_string())
        .status()
        .expect("run agora publish");
    assert!(status.success(), "agora publish failed");
}

fn change(node: &AgoraNode, account: u32, change_id: u64, types: &[&str]) {
    let event = json!({"type": "state_change", "account_id": account, "change_id": change_id, "types": types});
    let r = node.post("/v1/events", &event.to_string());
    assert_eq!(r.status, 202, "{}", r.body);
}

fn subscriptions(node: &AgoraNode) -> usize {
    node.get("/v1/push-subscriptions")
        .map(|r| r.json().as_array().map_or(0, Vec::len))
        .unwrap_or(0)
}

/// The value of one series of `/metrics` (`name` with its labels, e.g. `agora_push_refused_total{reason="x"}`).
fn metric(node: &AgoraNode, series: &str) -> f64 {
    let text = node.get("/metrics").expect("GET /metrics").body;
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{text}"))
}

fn refused(node: &AgoraNode, reason: &str) -> f64 {
    metric(node, &format!("agora_push_refused_total{{reason=\"{reason}\"}}"))
}

fn deliveries(node: &AgoraNode, result: &str) -> f64 {
    metric(node, &format!("agora_push_deliveries_total{{result=\"{result}\"}}"))
}

#[test]
fn a_healthy_endpoint_gets_every_push_promptly_while_ten_others_hang_or_fail() {
    let (_server, node) = node(ALLOW_LOOPBACK);
    let healthy = TestEndpoint::start(Mode::Status(200));
    let hanging: Vec<TestEndpoint> = (0..5).map(|_| TestEndpoint::start(Mode::Hang)).collect();
    let failing: Vec<TestEndpoint> = (0..3).map(|_| TestEndpoint::start(Mode::Status(500))).collect();
    let mut bad_urls: Vec<String> = hanging.iter().chain(&failing).map(|e| e.url("/push")).collect();
    bad_urls.extend((0..2).map(|_| format!("http://{}/push", closed_port())));
    // Accounts 1..=10 push to the ten bad endpoints, accounts 1001..=1100 to the healthy one.
    for (i, url) in bad_urls.iter().enumerate() {
        subscribe(&node, i as u32 + 1, url);
    }
    for account in 1001..=1100 {
        subscribe(&node, account, &healthy.url(&format!("/{account}")));
    }
    assert!(wait_until(DEADLINE, || subscriptions(&node) == 110));

    // 60 changes for each bad account: before isolation, the 300 hanging POSTs alone took every node-wide slot.
    for change_id in 1..=60 {
        for account in 1..=10 {
            change(&node, account, change_id, &["Email"]);
        }
    }
    assert!(
        wait_until(DEADLINE, || hanging.iter().all(|e| e.count() >= 1)),
        "the hanging endpoints are being tried"
    );
    let started = Instant::now();
    for account in 1001..=1100 {
        change(&node, account, 7, &["Email"]);
    }
    // Well under the 5 s request timeout: no healthy push waited for a hanging one.
    let prompt = Duration::from_secs(4);
    assert!(
        wait_until(prompt, || healthy.count() >= 100),
        "the healthy endpoint got {} of 100 pushes within {prompt:?}",
        healthy.count()
    );
    eprintln!(
        "100 healthy pushes delivered in {:?} next to 10 bad endpoints",
        started.elapsed()
    );
    let paths: HashSet<String> = healthy.paths().into_iter().collect();
    assert_eq!(paths.len(), 100, "one push per healthy account");
    assert!(healthy.bodies().iter().all(|b| b["@type"] == "StateChange"));

    // The bad accounts' 600 changes were coalesced, not queued one by one.
    assert!(metric(&node, "agora_push_coalesced_total") >= 400.0);
    assert!(metric(&node, "agora_push_pending_subscriptions") <= 10.0);
    assert!(
        metric(&node, "agora_push_in_flight") <= 10.0,
        "a failing endpoint holds one slot"
    );
    for e in &hanging {
        assert!(
            e.count() <= 16,
            "a hanging endpoint is never sent more than its limit: {}",
            e.count()
        );
    }
}

#[test]
fn changes_arriving_during_a_push_are_coalesced_into_the_newest_state() {
    let (_server, node) = node(ALLOW_LOOPBACK);
    let endpoint = TestEndpoint::start(Mode::Hold);
    subscribe(&node, 5, &endpoint.url("/push"));
    assert!(wait_until(DEADLINE, || subscriptions(&node) == 1));
    change(&node, 5, 1, &["Email"]);
    assert!(
        wait_until(DEADLINE, || endpoint.count() == 1),
        "the first push is in flight"
    );
    for change_id in 2..=10 {
        let types: &[&str] = if change_id % 2 == 0 { &["Email"] } else { &["Mailbox"] };
        change(&node, 5, change_id, types);
    }
    // Change 2 waits behind the push in flight; 3..=10 merge into it.
    assert!(
        wait_until(DEADLINE, || metric(&node, "agora_push_coalesced_total") >= 8.0),
        "coalesced: {}",
        metric(&node, "agora_push_coalesced_total")
    );
    endpoint.release();
    assert!(wait_until(DEADLINE, || endpoint.count() >= 2));
    std::thread::sleep(Duration::from_millis(300)); // a third push would arrive within this quiet period
    let bodies = endpoint.bodies();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[0]["changed"], json!({"5": {"Email": "1"}}));
    assert_eq!(bodies[1]["changed"], json!({"5": {"Email": "10", "Mailbox": "9"}}));
    assert_eq!(deliveries(&node, "ok"), 2.0);
}

#[test]
fn endpoints_that_keep_failing_open_their_breaker_and_a_success_closes_it() {
    let (_server, node) = node(ALLOW_LOOPBACK);
    let failing = TestEndpoint::start(Mode::Status(503));
    subscribe(&node, 1, &failing.url("/push"));
    subscribe(&node, 2, &format!("http://{}/push", closed_port()));
    assert!(wait_until(DEADLINE, || subscriptions(&node) == 2));
    assert_eq!(metric(&node, "agora_push_breakers_open"), 0.0);
    change(&node, 1, 1, &["Email"]);
    change(&node, 2, 1, &["Email"]);
    assert!(
        wait_until(DEADLINE, || metric(&node, "agora_push_breakers_open") == 2.0),
        "both breakers open: {}",
        metric(&node, "agora_push_breakers_open")
    );
    assert!(metric(&node, "agora_push_breaker_opened_total") >= 2.0);
    assert!(
        wait_until(DEADLINE, || deliveries(&node, "failed") >= 2.0),
        "each gave up after its attempts"
    );
    let tried = failing.count();
    assert!(tried >= 5, "five consecutive failures open the breaker: {tried}");

    // The endpoint recovers: the half-open probe succeeds and closes the breaker.
    failing.set_mode(Mode::Status(204));
    change(&node, 1, 2, &["Email"]);
    assert!(
        wait_until(DEADLINE, || deliveries(&node, "ok") >= 1.0),
        "delivered after recovery"
    );
    assert!(wait_until(DEADLINE, || metric(&node, "agora_push_breakers_open") == 1.0));
    let last = failing.bodies().pop().expect("a request");
    assert_eq!(last["changed"], json!({"1": {"Email": "2"}}));
}

#[test]
fn subscriptions_per_account_are_capped_at_registration_and_at_delivery() {
    let (server, node) = node(&format!("{ALLOW_LOOPBACK}max-subscriptions-per-account = 3\n"));
    let hook = TestEndpoint::start(Mode::Status(200));
    for i in 0..3 {
        subscribe(&node, 78, &hook.url(&format!("/78/{i}")));
    }
    assert!(wait_until(DEADLINE, || subscriptions(&node) == 3));
    let r = node.post(
        "/v1/push-subscriptions",
        &json!({"account_id": 78, "url": hook.url("/78/3")}).to_string(),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    for fragment in [
        "account 78",
        "3 push subscriptions",
        "[push] max-subscriptions-per-account",
    ] {
        assert!(error.contains(fragment), "{fragment:?} missing from {error:?}");
    }
    subscribe(&node, 79, &hook.url("/79/0"));

    // Five subscriptions of one account reach the registry anyway (straight from the bus): a change is pushed to
    // the first three by id only, and the other two are counted.
    for id in ["cap-e", "cap-b", "cap-d", "cap-a", "cap-c"] {
        inject(&server, id, 77, &hook.url(&format!("/77/{id}")));
    }
    assert!(wait_until(DEADLINE, || subscriptions(&node) == 9));
    change(&node, 77, 1, &["Email"]);
    assert!(wait_until(DEADLINE, || refused(&node, "account_cap") >= 2.0));
    assert!(wait_until(DEADLINE, || hook.count() >= 3));
    std::thread::sleep(Duration::from_millis(300)); // a fourth push would arrive within this quiet period
    let mut paths = hook.paths();
    paths.sort();
    assert_eq!(paths, ["/77/cap-a", "/77/cap-b", "/77/cap-c"]);
    assert_eq!(refused(&node, "account_cap"), 2.0);
}

/// A host name of this machine that resolves only to non-public addresses, if there is one: it exercises the check
/// on resolved addresses (IP literals and `localhost` are refused before any lookup).
fn internal_host_name() -> Option<String> {
    let hostname = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string());
    hostname
        .into_iter()
        .chain(["ip6-localhost".to_string(), "ip6-loopback".to_string()])
        .filter(|name| !name.is_empty())
        .find(|name| {
            let addrs: Vec<_> = (name.as_str(), 80)
                .to_socket_addrs()
                .map(Iterator::collect)
                .unwrap_or_default();
            !addrs.is_empty() && addrs.iter().all(|a| classify(a.ip()).is_some())
        })
}

#[test]
fn internal_addresses_are_refused_at_registration_and_at_delivery() {
    let (server, node) = node("");
    let hook = TestEndpoint::start(Mode::Status(200));
    let port = hook.addr.rsplit(':').next().expect("port").to_string();
    let own_api = format!("http://{}/v1/blocked-ips", node.addr);
    let refused_urls = [
        ("http://169.254.169.254/latest/meta-data/".to_string(), "link-local"),
        (format!("http://localhost:{port}/"), "loopback"),
        (format!("http://0x7f.1:{port}/"), "127.0.0.1 is a loopback"),
        ("http://0/".to_string(), "0.0.0.0 is an unspecified"),
        (own_api.clone(), "loopback"),
        (format!("http://[::ffff:127.0.0.1]:{port}/"), "loopback"),
        ("http://10.1.2.3/".to_string(), "private"),
        ("http://[fd00::1]/".to_string(), "private"),
        ("http://100.64.0.1/".to_string(), "carrier-grade NAT"),
        ("http://224.0.0.1/".to_string(), "multicast"),
        ("file:///etc/passwd".to_string(), "http"),
    ];
    for (url, fragment) in &refused_urls {
        let r = node.post(
            "/v1/push-subscriptions",
            &json!({"account_id": 1, "url": url}).to_string(),
        );
        assert_eq!(r.status, 400, "{url}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(fragment), "{url}: {fragment:?} missing from {error:?}");
        assert!(error.contains("allow-networks") || *fragment == "http", "{error}");
    }
    assert_eq!(subscriptions(&node), 0);

    // The same URLs straight from the bus, and a name that resolves to an internal address: refused when
    // connecting, counted, and nothing arrives.
    let mut urls = vec![
        format!("http://127.0.0.1:{port}/a"),
        format!("http://localhost:{port}/b"),
        format!("http://0x7f.1:{port}/c"),
        format!("http://0:{port}/d"),
        format!("http://[::ffff:127.0.0.1]:{port}/e"),
        own_api,
    ];
    match internal_host_name() {
        Some(name) => urls.push(format!("http://{name}:{port}/f")),
        None => eprintln!("no host name resolving to internal addresses only: the resolver check is not exercised"),
    }
    for (i, url) in urls.iter().enumerate() {
        inject(&server, &format!("ssrf-{i}"), 9, url);
    }
    assert!(wait_until(DEADLINE, || subscriptions(&node) == urls.len()));
    change(&node, 9, 1, &["Email"]);
    let expected = urls.len() as f64;
    assert!(
        wait_until(DEADLINE, || refused(&node, "blocked_address") == expected),
        "{} of {expected} refused",
        refused(&node, "blocked_address")
    );
    assert_eq!(
        hook.count(),
        0,
        "nothing reached the internal endpoint: {:?}",
        hook.paths()
    );
    for result in ["ok", "retried", "failed"] {
        assert_eq!(deliveries(&node, result), 0.0, "{result}: refusals are not attempts");
    }
}

#[test]
fn allow_networks_opens_the_listed_networks_only() {
    let (_server, node) = node(ALLOW_LOOPBACK);
    let hook = TestEndpoint::start(Mode::Status(200));
    let port = hook.addr.rsplit(':').next().expect("port").to_string();
    subscribe(&node, 3, &format!("http://localhost:{port}/a"));
    subscribe(&node, 3, &format!("http://0x7f.1:{port}/b"));
    subscribe(&node, 3, &format!("http://[::ffff:127.0.0.1]:{port}/c"));
    let r = node.post(
        "/v1/push-subscriptions",
        &json!({"account_id": 3, "url": "http://169.254.169.254/"}).to_string(),
    );
    assert_eq!(r.status, 400, "other internal networks stay refused: {}", r.body);
    assert!(wait_until(DEADLINE, || subscriptions(&node) == 3));
    change(&node, 3, 1, &["Email"]);
    // `localhost` may resolve to ::1 first (refused: the endpoint listens on 127.0.0.1), so /a can come after a
    // retry; `[::ffff:127.0.0.1]` is 127.0.0.1 for the guard, and whether it connects depends on the IPv6 stack.
    let arrived = |path: &str| hook.paths().iter().any(|p| p == path);
    assert!(
        wait_until(DEADLINE, || arrived("/a") && arrived("/b")),
        "allowed loopback pushes did not arrive: {:?}",
        hook.paths()
    );
    assert_eq!(refused(&node, "blocked_address"), 0.0);
}

#[test]
fn redirects_are_never_followed() {
    let (_server, node) = node(ALLOW_LOOPBACK);
    let internal = TestEndpoint::start(Mode::Status(200));
    let redirector = TestEndpoint::start(Mode::Redirect(internal.url("/stolen")));
    subscribe(&node, 4, &redirector.url("/push"));
    assert!(wait_until(DEADLINE, || subscriptions(&node) == 1));
    change(&node, 4, 1, &["Email"]);
    assert!(
        wait_until(DEADLINE, || deliveries(&node, "failed") >= 1.0),
        "a 3xx is a failure, retried then given up"
    );
    assert!(redirector.count() >= 1);
    assert_eq!(internal.count(), 0, "the redirect target was never contacted");
    assert_eq!(deliveries(&node, "ok"), 0.0);
    // The endpoint answered: a 3xx concerns this subscription, so a shared gateway's breaker stays closed.
    assert_eq!(metric(&node, "agora_push_breakers_open"), 0.0);
}

#[test]
fn the_push_bench_covers_every_healthy_change_next_to_bad_endpoints() {
    use agora_bench::push::{self, PushOptions};
    let server = NatsServer::start();
    let options = PushOptions {
        accounts: 20,
        changes: 200,
        rate: 100,
        seconds: 2,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rows = runtime
        .block_on(push::run(bin(), &server.url(), &options))
        .expect("the push scenario runs");
    let [throughput, isolation] = rows.as_slice() else {
        panic!("two rows: {rows:?}");
    };
    let (t, i) = (throughput.to_json(), isolation.to_json());
    assert_eq!(t["scenario"], "push_throughput", "{t}");
    assert_eq!(throughput.events, 200, "{t}");
    assert_eq!(throughput.lost, 0, "every change is covered by a push: {t}");
    assert!(
        throughput.events_per_sec > 0.0 && t["deliveries"].as_u64().is_some_and(|d| d >= 20),
        "{t}"
    );
    assert_eq!(i["scenario"], "push_isolation", "{i}");
    assert_eq!(isolation.events, 100, "half of 2 s at 100/s are healthy changes: {i}");
    assert_eq!(isolation.lost, 0, "{i}");
    assert_eq!(i["healthy_share"], 100.0, "{i}");
    assert!(
        isolation.p99_us < 4_000_000.0,
        "no healthy push waited for a bad endpoint: {i}"
    );
    assert!(i["breaker_opened"].as_f64().is_some_and(|n| n >= 1.0), "{i}");
}
