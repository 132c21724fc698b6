//! JMAP Web Push as push services and user agents see it, checked with implementations that are not agora's: every
//! body is decrypted with Python's `http_ece` (RFC 8291) and every VAPID JWT verified with PyJWT (RFC 8292), by
//! `tests/python/webpush_check.py`. Real `agora node` processes on a real nats-server push to a push service on
//! loopback that records each request and answers as a test scripts it (201, 404/410, 413, 429 with `Retry-After`).

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use agora_node::services::push::push_owner;
use agora_testkit::http::{read_full_request, ReceivedRequest};
use agora_testkit::node::AgoraNode;
use agora_testkit::{scratch_file, wait_until, NatsServer};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::{json, Value};

use crate::support::{bin, cluster_config, metric};

const DEADLINE: Duration = Duration::from_secs(20);

/// A push service on 127.0.0.1: records every request with its arrival, answers 201 unless a response was scripted
/// for the request's path.
struct PushService {
    addr: String,
    received: Arc<Mutex<Vec<(Instant, ReceivedRequest)>>>,
    script: Arc<Mutex<HashMap<String, VecDeque<String>>>>,
}

impl PushService {
    fn start() -> PushService {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let service = PushService {
            addr: listener.local_addr().expect("addr").to_string(),
            received: Arc::default(),
            script: Arc::default(),
        };
        let (received, script) = (service.received.clone(), service.script.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (received, script) = (received.clone(), script.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    while let Some(request) = read_full_request(&mut reader) {
                        let response = script
                            .lock()
                            .expect("lock")
                            .get_mut(&request.target)
                            .and_then(VecDeque::pop_front)
                            .unwrap_or_else(|| "HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n".into());
                        received.lock().expect("lock").push((Instant::now(), request));
                        if reader.get_mut().write_all(response.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        service
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests to `path`, with their arrival.
    fn requests(&self, path: &str) -> Vec<(Instant, ReceivedRequest)> {
        let received = self.received.lock().expect("lock");
        received.iter().filter(|(_, r)| r.target == path).cloned().collect()
    }

    /// The next requests to `path` get these raw responses, in order.
    fn answer(&self, path: &str, responses: &[&str]) {
        let mut script = self.script.lock().expect("lock");
        script
            .entry(path.to_string())
            .or_default()
            .extend(responses.iter().map(|r| r.to_string()));
    }
}

/// A browser's push subscription keys: the private key stays here, for decrypting.
struct UserAgent {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl UserAgent {
    fn new(seed: u8) -> UserAgent {
        UserAgent {
            secret: p256::SecretKey::from_slice(&[seed; 32]).expect("scalar"),
            auth: [seed.wrapping_mul(7); 16],
        }
    }

    fn keys(&self) -> Value {
        let point = self.secret.public_key().to_encoded_point(false);
        json!({"p256dh": URL_SAFE_NO_PAD.encode(point.as_bytes()), "auth": URL_SAFE_NO_PAD.encode(self.auth)})
    }

    /// Decrypts and verifies one request with the Python implementations; the decrypted JSON and the JWT claims.
    fn open(&self, request: &ReceivedRequest, audience: &str) -> Result<Value, String> {
        self.open_with_auth(request, audience, &self.auth)
    }

    fn open_with_auth(&self, request: &ReceivedRequest, audience: &str, auth: &[u8]) -> Result<Value, String> {
        let input = json!({
            "body": STANDARD.encode(&request.body),
            "ua_private": URL_SAFE_NO_PAD.encode(self.secret.to_bytes()),
            "auth": URL_SAFE_NO_PAD.encode(auth),
            "authorization": request.header("authorization"),
            "audience": audience,
        });
        python_check(&input)
    }
}

fn python_check(input: &Value) -> Result<Value, String> {
    crate::support::python("webpush_check.py", input)
}

/// A VAPID key file (SEC1 PEM) and the `[push]` section that uses it.
fn push_section(ttl: &str) -> String {
    let key = p256::SecretKey::from_slice(&[42u8; 32]).expect("scalar");
    let pem = key.to_sec1_pem(p256::pkcs8::LineEnding::LF).expect("pem");
    let file = scratch_file("vapid.pem", &pem);
    format!(
        "\n[push]\nallow-networks = [\"127.0.0.0/8\"]\nvapid-key-file = {:?}\nvapid-subject = \
         \"mailto:ops@example.com\"\nttl = \"{ttl}\"\n",
        file.display().to_string()
    )
}

fn subscribe(node: &AgoraNode, body: &Value) -> Value {
    let r = node.post("/v1/push-subscriptions", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

fn change(node: &AgoraNode, account: u32, change_id: u64) {
    let event = json!({"type": "state_change", "account_id": account, "change_id": change_id, "types": ["Email"]});
    let r = node.post("/v1/events", &event.to_string());
    assert_eq!(r.status, 202, "{}", r.body);
}

fn listed(node: &AgoraNode) -> Vec<Value> {
    node.get("/v1/push-subscriptions")
        .map(|r| r.json().as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

fn members(node: &AgoraNode) -> usize {
    node.get("/v1/cluster/nodes")
        .map(|r| r.json().as_array().map_or(0, Vec::len))
        .unwrap_or(0)
}

fn deliveries(nodes: &[&AgoraNode], result: &str) -> f64 {
    nodes
        .iter()
        .map(|node| metric(node, &format!("agora_push_deliveries_total{{result=\"{result}\"}}")))
        .sum()
}

/// The RFC 8030 headers every push carries, and the aes128gcm framing.
fn assert_web_push_headers(request: &ReceivedRequest, ttl: &str) {
    assert_eq!(request.method, "POST");
    assert_eq!(request.header("ttl"), Some(ttl));
    assert_eq!(request.header("urgency"), Some("normal"));
    assert_eq!(request.header("content-encoding"), Some("aes128gcm"));
    assert_eq!(request.header("content-type"), Some("application/octet-stream"));
    let authorization = request.header("authorization").expect("VAPID Authorization");
    assert!(authorization.starts_with("vapid t="), "{authorization}");
    // The header is salt (16), record size (4), key id length (1) = 65, the sender's key: never JSON in the clear.
    assert_eq!(request.body[20], 65);
    assert!(!String::from_utf8_lossy(&request.body).contains("@type"));
}

#[test]
fn a_jmap_subscription_is_verified_then_gets_encrypted_signed_pushes() {
    let server = NatsServer::start();
    let node = AgoraNode::start(bin(), &cluster_config(&server, &push_section("1h")), 1);
    let service = PushService::start();
    let agent = UserAgent::new(3);
    let sub = subscribe(
        &node,
        &json!({"account_id": 5, "device_client_id": "browser-1", "url": service.url("/ua/1"),
                "keys": agent.keys(), "types": ["Email"]}),
    );
    let id = sub["id"].as_str().expect("id").to_string();
    assert_eq!(sub["verified"], false);

    // The PushVerification, encrypted for the agent and signed for the push service's origin.
    assert!(wait_until(DEADLINE, || service.requests("/ua/1").len() == 1));
    let (_, verification) = service.requests("/ua/1").remove(0);
    assert_web_push_headers(&verification, "3600");
    let opened = agent
        .open(&verification, &service.origin())
        .expect("decrypts and verifies");
    let payload: Value = serde_json::from_str(opened["plaintext"].as_str().expect("text")).expect("JSON");
    assert_eq!(payload["@type"], "PushVerification");
    assert_eq!(payload["pushSubscriptionId"], id.as_str());
    let code = payload["verificationCode"].as_str().expect("code").to_string();
    assert!(
        URL_SAFE_NO_PAD.decode(&code).expect("base64url").len() >= 16,
        "at least 128 bits"
    );
    assert_eq!(opened["claims"]["aud"], service.origin());
    assert_eq!(opened["claims"]["sub"], "mailto:ops@example.com");
    let vapid = node.get("/v1/push/vapid").expect("vapid").json();
    assert_eq!(
        opened["k"], vapid["applicationServerKey"],
        "k= is the key the session advertises"
    );

    // The check checks: the wrong auth secret, or a flipped bit, does not decrypt.
    let err = agent
        .open_with_auth(&verification, &service.origin(), &[1u8; 16])
        .expect_err("a wrong auth secret must not decrypt");
    assert!(
        err.contains("Invalid") || err.contains("Tag") || err.contains("decrypt"),
        "{err}"
    );
    let mut flipped = verification.clone();
    let last = flipped.body.len() - 1;
    flipped.body[last] ^= 1;
    assert!(agent.open(&flipped, &service.origin()).is_err());
    assert!(
        agent.open(&verification, "http://other.example").is_err(),
        "aud is checked"
    );

    // Unverified: a change of the account is not pushed. (A fixed wait: proving that nothing is sent.)
    change(&node, 5, 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        service.requests("/ua/1").len(),
        1,
        "nothing but the verification before PATCH"
    );

    let wrong = node.patch(
        &format!("/v1/push-subscriptions/{id}"),
        r#"{"verification_code":"guess"}"#,
    );
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    let right = node.patch(
        &format!("/v1/push-subscriptions/{id}"),
        &json!({"verification_code": code}).to_string(),
    );
    assert_eq!(right.status, 200, "{}", right.body);
    assert_eq!(right.json()["verified"], true);

    change(&node, 5, 2);
    assert!(wait_until(DEADLINE, || service.requests("/ua/1").len() == 2));
    let (_, push) = service.requests("/ua/1").remove(1);
    assert_web_push_headers(&push, "3600");
    let opened = agent.open(&push, &service.origin()).expect("decrypts");
    let payload: Value = serde_json::from_str(opened["plaintext"].as_str().expect("text")).expect("JSON");
    assert_eq!(
        payload,
        json!({"@type": "StateChange", "changed": {"5": {"Email": "2"}}})
    );
    // Fresh ephemeral key and salt per message.
    assert_ne!(verification.body[..86], push.body[..86]);
    assert_eq!(deliveries(&[&node], "verification_sent"), 1.0);
    assert_eq!(deliveries(&[&node], "verified"), 1.0);
    assert_eq!(deliveries(&[&node], "ok"), 1.0);
}

/// Three nodes on one nats-server, `[push]` with VAPID; waits until each sees all three.
fn three_nodes(server: &NatsServer) -> Vec<AgoraNode> {
    let config = cluster_config(server, &push_section("1d"));
    let nodes: Vec<AgoraNode> = (1..=3).map(|id| AgoraNode::start(bin(), &config, id)).collect();
    assert!(wait_until(DEADLINE, || nodes.iter().all(|n| members(n) == 3)));
    nodes
}

#[test]
fn verification_is_sent_once_and_a_new_owner_pushes_after_the_patch_then_410_removes_it_everywhere() {
    let server = NatsServer::start();
    let mut nodes = three_nodes(&server);
    let service = PushService::start();
    let agent = UserAgent::new(5);
    // An account node 3 owns: created on node 1, its owner killed, verified on node 2.
    let account = (1..)
        .find(|a| push_owner(*a, &[1, 2, 3]) == Some(3))
        .expect("an account");
    let sub = subscribe(
        &nodes[0],
        &json!({"account_id": account, "device_client_id": "phone", "url": service.url("/p/1"),
                "keys": agent.keys()}),
    );
    let id = sub["id"].as_str().expect("id").to_string();
    assert!(wait_until(DEADLINE, || service.requests("/p/1").len() == 1));
    assert!(wait_until(DEADLINE, || nodes.iter().all(|n| listed(n).len() == 1)));
    // A fixed wait, proving no other node sends a second verification.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        service.requests("/p/1").len(),
        1,
        "exactly one node sends the verification"
    );
    let opened = agent
        .open(&service.requests("/p/1")[0].1, &service.origin())
        .expect("decrypts");
    let payload: Value = serde_json::from_str(opened["plaintext"].as_str().expect("text")).expect("JSON");
    let code = payload["verificationCode"].as_str().expect("code").to_string();

    nodes[2].kill();
    assert!(wait_until(DEADLINE, || members(&nodes[0]) == 2 && members(&nodes[1]) == 2));
    let verified = nodes[1].patch(
        &format!("/v1/push-subscriptions/{id}"),
        &json!({"verification_code": code}).to_string(),
    );
    assert_eq!(verified.status, 200, "{}", verified.body);
    assert!(wait_until(DEADLINE, || listed(&nodes[0])
        .first()
        .is_some_and(|s| s["verified"] == true)));
    change(&nodes[0], account, 9);
    assert!(
        wait_until(DEADLINE, || service.requests("/p/1").len() == 2),
        "the new owner pushes after the PATCH"
    );
    let opened = agent
        .open(&service.requests("/p/1")[1].1, &service.origin())
        .expect("decrypts");
    assert!(opened["plaintext"].as_str().expect("text").contains("\"StateChange\""));

    // The push service forgets the device: 410 removes the subscription on every node, published once.
    service.answer("/p/1", &["HTTP/1.1 410 Gone\r\ncontent-length: 0\r\n\r\n"]);
    change(&nodes[1], account, 10);
    assert!(
        wait_until(DEADLINE, || listed(&nodes[0]).is_empty()
            && listed(&nodes[1]).is_empty()),
        "removed on every node"
    );
    let live = [&nodes[0], &nodes[1]];
    assert_eq!(deliveries(&live, "gone"), 1.0);
    change(&nodes[0], account, 11);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(service.requests("/p/1").len(), 3, "nothing is sent after the 410");
}

#[test]
fn throttled_pushes_wait_for_retry_after_and_413_and_expiry_end_them() {
    let server = NatsServer::start();
    let node = AgoraNode::start(bin(), &cluster_config(&server, &push_section("1d")), 1);
    let service = PushService::start();

    // 429 with Retry-After: 2 (then 201): the retry comes no sooner than 2 s after the refusal.
    // The push service throttles the sender, not one subscription: another subscription on the same origin waits
    // too.
    subscribe(&node, &json!({"account_id": 1, "url": service.url("/hook/429")}));
    subscribe(&node, &json!({"account_id": 5, "url": service.url("/hook/other")}));
    service.answer(
        "/hook/429",
        &["HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\ncontent-length: 0\r\n\r\n"],
    );
    change(&node, 1, 1);
    assert!(wait_until(DEADLINE, || service.requests("/hook/429").len() == 1));
    change(&node, 5, 1);
    assert!(wait_until(DEADLINE, || service.requests("/hook/429").len() == 2));
    assert!(wait_until(DEADLINE, || service.requests("/hook/other").len() == 1));
    let requests = service.requests("/hook/429");
    let waited = requests[1].0 - requests[0].0;
    assert!(
        waited >= Duration::from_secs(2),
        "retried after {waited:?}, Retry-After said 2 s"
    );
    let other_waited = service.requests("/hook/other")[0].0 - requests[0].0;
    assert!(
        other_waited >= Duration::from_millis(1900),
        "the same origin's other subscription waited {other_waited:?}"
    );
    assert_eq!(
        requests[1].1.header("content-type"),
        Some("application/json"),
        "no keys: plain JSON"
    );
    assert!(requests[1]
        .1
        .header("authorization")
        .is_some_and(|a| a.starts_with("vapid t=")));
    assert_eq!(
        deliveries(&[&node], "throttled"),
        1.0,
        "{}",
        node.get("/metrics").map(|r| r.body).unwrap_or_default()
    );

    // An application's webhook answering 404 keeps its earlier treatment: a failed attempt, retried, not removed.
    subscribe(&node, &json!({"account_id": 4, "url": service.url("/hook/404")}));
    service.answer("/hook/404", &["HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"]);
    change(&node, 4, 1);
    assert!(
        wait_until(DEADLINE, || service.requests("/hook/404").len() == 2),
        "retried after its 404"
    );
    assert!(
        listed(&node).iter().any(|s| s["account_id"] == 4),
        "a webhook is not removed for a 404"
    );

    // 413: counted, not retried.
    subscribe(&node, &json!({"account_id": 2, "url": service.url("/hook/413")}));
    service.answer(
        "/hook/413",
        &["HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n"],
    );
    change(&node, 2, 1);
    assert!(wait_until(DEADLINE, || deliveries(&[&node], "rejected") == 1.0));
    // A fixed wait, proving no retry follows (the first retry would come after 250 ms).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(service.requests("/hook/413").len(), 1, "a 413 is not retried");

    // An expiry 2 s ahead: pushed before, removed after (on every node, by each node), never pushed after.
    let expires = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3)).to_string();
    subscribe(
        &node,
        &json!({"account_id": 3, "url": service.url("/hook/exp"), "expires": expires}),
    );
    change(&node, 3, 1);
    assert!(wait_until(DEADLINE, || service.requests("/hook/exp").len() == 1));
    assert!(
        wait_until(DEADLINE, || listed(&node).iter().all(|s| s["account_id"] != 3)),
        "the expired subscription is removed"
    );
    change(&node, 3, 2);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(service.requests("/hook/exp").len(), 1, "never pushed after its expiry");
    assert!(deliveries(&[&node], "expired") >= 1.0);
}

/// The `web_push` bench scenario on a small load: both rows, every (change, subscription) pair covered, and the
/// encrypted row's bodies really `aes128gcm`.
#[test]
fn the_web_push_bench_covers_every_change_plain_and_encrypted() {
    use agora_bench::web_push::{self, WebPushOptions};
    let server = NatsServer::start();
    let options = WebPushOptions {
        subscriptions: 40,
        accounts: 10,
        rate: 50,
        seconds: 1,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rows = runtime
        .block_on(web_push::run(bin(), &server.url(), &options))
        .expect("the web_push scenario runs");
    let [plain, encrypted] = rows.as_slice() else {
        panic!("two rows: {rows:?}");
    };
    let (p, e) = (plain.to_json(), encrypted.to_json());
    assert_eq!(p["scenario"], "web_push_plain", "{p}");
    assert_eq!(e["scenario"], "web_push_encrypted", "{e}");
    for (row, json) in [(plain, &p), (encrypted, &e)] {
        assert_eq!(row.events, 50, "{json}");
        assert_eq!(
            row.lost, 0,
            "every subscription of a changed account got a push: {json}"
        );
        assert!(
            json["node_cpu_us_per_push"].as_f64().is_some_and(|us| us > 0.0),
            "{json}"
        );
    }
    assert_eq!(p["aes128gcm_bodies"], 0, "{p}");
    assert_eq!(e["aes128gcm_bodies"], e["pushes"], "{e}");
}
