//! The API's edge on a real node: bearer tokens (rotation, 401 with `WWW-Authenticate`, the open health check), the
//! rule that an API reachable from other hosts needs a token, CORS for configured origins, and the JSON error shape
//! on every error status (404, 405, 413, 414, 431).

use std::process::Command;

use crate::support::{bin, cluster_config};
use agora_testkit::http::{request, request_with_headers, Response};
use agora_testkit::node::AgoraNode;
use agora_testkit::{scratch_file, NatsServer};

fn tokened(server: &NatsServer) -> String {
    cluster_config(server, "") + "\n[http]\ntoken = [\"current-token-1\", \"next-token-22\"]\ncors-origins = [\"https://webmail.example.com\"]\n"
}

fn get_with(node: &AgoraNode, path: &str, headers: &[(&str, &str)]) -> Response {
    request_with_headers(&node.addr, "GET", path, headers, None).expect("GET")
}

/// Asserts the API's error shape.
#[track_caller]
fn assert_json_error(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}", r.body);
    let body: serde_json::Value =
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body));
    assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()), "{}", r.body);
}

#[test]
fn with_a_token_every_request_but_the_health_check_needs_it_and_any_listed_token_works() {
    let server = NatsServer::start();
    let node = AgoraNode::start(bin(), &tokened(&server), 1);
    assert_eq!(
        node.get("/healthz").expect("GET").status,
        200,
        "the health check stays open"
    );
    for path in [
        "/v1/node",
        "/v1/blocked-ips",
        "/v1/events",
        "/metrics",
        "/v1/cluster/nodes",
    ] {
        let r = node.get(path).expect("GET");
        assert_json_error(&r, 401);
        assert!(r.body.contains("Bearer"), "{}", r.body);
    }
    for token in ["current-token-1", "next-token-22"] {
        let auth = format!("Bearer {token}");
        let r = get_with(&node, "/v1/node", &[("Authorization", &auth)]);
        assert_eq!(r.status, 200, "{token}: {}", r.body);
    }
    for wrong in [
        "Bearer current-token-2",
        "Bearer ",
        "Basic Y3VycmVudC10b2tlbi0x",
        "current-token-1",
    ] {
        assert_json_error(&get_with(&node, "/v1/node", &[("Authorization", wrong)]), 401);
    }
    // A write without the token changes nothing.
    let r = request(
        &node.addr,
        "POST",
        "/v1/blocked-ips",
        Some(r#"{"network":"0.0.0.0/0"}"#),
    )
    .expect("POST");
    assert_json_error(&r, 401);
    let list = get_with(&node, "/v1/blocked-ips", &[("Authorization", "Bearer current-token-1")]);
    assert_eq!(list.body.trim(), "[]");
}

#[test]
fn the_401_carries_www_authenticate() {
    let server = NatsServer::start();
    let node = AgoraNode::start(bin(), &tokened(&server), 1);
    let mut stream = std::net::TcpStream::connect(&node.addr).expect("connect");
    use std::io::{Read, Write};
    write!(stream, "GET /v1/node HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
}

#[test]
fn an_api_reachable_from_other_hosts_without_a_token_is_a_configuration_error() {
    let server = NatsServer::start();
    let exposed = cluster_config(&server, "") + "\n[http]\nlisten = \"0.0.0.0:7911\"\n";
    let path = scratch_file("exposed.toml", &exposed);
    for args in [vec!["check-config", "--config"], vec!["node", "--config"]] {
        let out = Command::new(bin()).args(&args).arg(&path).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("http.token"), "{args:?}");
    }
    // The flag is held to the same rule.
    let local = scratch_file("local.toml", &cluster_config(&server, ""));
    let out = Command::new(bin())
        .args(["node", "--http", "0.0.0.0:0", "--config"])
        .arg(&local)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.token"));
}

#[test]
fn configured_browser_origins_get_cors_headers_and_preflights_others_do_not() {
    let server = NatsServer::start();
    let node = AgoraNode::start(bin(), &tokened(&server), 1);
    let preflight = |origin: &str| {
        let mut stream = std::net::TcpStream::connect(&node.addr).expect("connect");
        use std::io::{Read, Write};
        write!(
            stream,
            "OPTIONS /v1/eventsource HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: GET\r\n\
             Access-Control-Request-Headers: authorization\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read");
        text.to_ascii_lowercase()
    };
    let allowed = preflight("https://webmail.example.com");
    assert!(allowed.starts_with("http/1.1 204"), "{allowed}");
    assert!(
        allowed.contains("access-control-allow-origin: https://webmail.example.com"),
        "{allowed}"
    );
    assert!(
        allowed.contains("access-control-allow-headers: authorization"),
        "{allowed}"
    );
    let other = preflight("https://evil.example");
    assert!(!other.contains("access-control-allow-origin"), "{other}");
    let get = get_with(&node, "/healthz", &[("Origin", "https://webmail.example.com")]);
    assert_eq!(get.status, 200);
}

#[test]
fn every_error_status_has_the_json_error_shape() {
    let server = NatsServer::start();
    let node = AgoraNode::start(bin(), &cluster_config(&server, ""), 1);
    assert_json_error(&node.get("/no/such/endpoint").expect("GET"), 404);
    assert_json_error(&node.delete("/v1/events"), 405);
    assert_json_error(
        &node.get(&format!("/v1/blocked-ips/{}", "1".repeat(9000))).expect("GET"),
        414,
    );
    let big = "x".repeat(40_000);
    assert_json_error(&get_with(&node, "/v1/node", &[("X-Padding", &big)]), 431);
    let body = format!(r#"{{"type":"custom","name":"big","data":"{}"}}"#, "A".repeat(2_200_000));
    match request(&node.addr, "POST", "/v1/events", Some(&body)) {
        Ok(r) => assert_json_error(&r, 413),
        // The server may answer and close before the client has written everything.
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
    }
    assert_json_error(&node.get("/v1/events?types=nope").expect("GET"), 400);
}

#[test]
fn blocking_the_whole_internet_needs_force_and_the_reply_says_what_is_stored() {
    let server = NatsServer::start();
    let node = AgoraNode::start(bin(), &cluster_config(&server, ""), 1);
    for network in ["0.0.0.0/0", "::/0", "::ffff:0:0/96", "10.0.0.0/7", "2001::/16"] {
        let body = format!(r#"{{"network":"{network}"}}"#);
        let r = node.post("/v1/blocked-ips", &body);
        assert_json_error(&r, 400);
        assert!(r.body.contains("force"), "{network}: {}", r.body);
    }
    assert_eq!(
        node.get("/v1/blocked-ips").expect("GET").body.trim(),
        "[]",
        "nothing was blocked"
    );
    // With force, the mapped /96 is stored and reported as what it is: all of IPv4.
    let r = node.post(
        "/v1/blocked-ips",
        r#"{"network":"::ffff:0:0/96","force":true,"ttl":"1m"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["network"], "0.0.0.0/0");
    // Narrower than the bound needs no force; a TTL under a second is refused.
    assert_eq!(node.post("/v1/blocked-ips", r#"{"network":"10.0.0.0/8"}"#).status, 201);
    let r = node.post("/v1/blocked-ips", r#"{"network":"192.0.2.1","ttl":"500ms"}"#);
    assert_json_error(&r, 400);
    assert!(r.body.contains("at least 1s"), "{}", r.body);
}

/// Sends `request` on a new connection and returns what arrives up to the end of the response head (lowercased),
/// and the connection.
fn response_head(node: &AgoraNode, request: &str) -> (String, std::net::TcpStream) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(&node.addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).expect("read") == 1 {
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).to_ascii_lowercase(), stream)
}

#[test]
fn the_jmap_eventsource_passes_the_same_edge_as_every_request() {
    // Plain-HTTP EventSource connections have a transport of their own (the fan-out); the token, CORS, the bounds
    // and the error shape are the router's all the same.
    let server = NatsServer::start();
    let node = AgoraNode::start(bin(), &tokened(&server), 1);
    let path = "/v1/eventsource?accounts=42";
    let r = get_with(&node, path, &[]);
    assert_json_error(&r, 401);
    let (head, _) = response_head(&node, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(head.contains("www-authenticate: bearer"), "{head}");

    let (head, _stream) = response_head(
        &node,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer next-token-22\r\n\
             Origin: https://webmail.example.com\r\n\r\n"
        ),
    );
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(
        head.contains("access-control-allow-origin: https://webmail.example.com"),
        "{head}"
    );

    let auth = ("Authorization", "Bearer current-token-1");
    let big = "x".repeat(40_000);
    assert_json_error(&get_with(&node, path, &[auth, ("X-Padding", &big)]), 431);
    assert_json_error(&get_with(&node, "/v1/eventsource?accounts=nope", &[auth]), 400);
    let with_body = request_with_headers(&node.addr, "GET", path, &[auth], Some("unexpected")).expect("GET");
    assert_json_error(&with_body, 400);
}

#[test]
fn an_eventsource_stream_that_closes_after_its_first_state_does() {
    use std::io::Read;
    let server = NatsServer::start();
    let node = AgoraNode::start(bin(), &cluster_config(&server, ""), 1);
    let (head, mut stream) = response_head(
        &node,
        "GET /v1/eventsource?accounts=5&closeafter=state HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let posted = node.post(
        "/v1/events",
        r#"{"type":"state_change","account_id":5,"change_id":9,"types":["Email"]}"#,
    );
    assert_eq!(posted.status, 202, "{}", posted.body);
    let mut rest = String::new();
    stream.read_to_string(&mut rest).expect("the stream ends");
    assert!(rest.contains("event: state"), "{rest}");
    assert!(rest.contains(r#""Email":"9""#), "{rest}");
    assert_eq!(rest.matches("event: state").count(), 1, "{rest}");
}

#[test]
fn a_stream_that_would_close_after_a_state_frees_its_place_when_its_client_leaves() {
    // Nothing else is read from such a connection: without watching it, a client that left would hold the place
    // until its account changed.
    let server = NatsServer::start();
    let node = AgoraNode::start(bin(), &(cluster_config(&server, "") + "\n[http]\nmax-streams = 1\n"), 1);
    let open = |path: &str| response_head(&node, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
    let (head, first) = open("/v1/eventsource?accounts=6&closeafter=state");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_json_error(&get_with(&node, "/v1/eventsource?accounts=6", &[]), 503);
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (head, _next) = open("/v1/eventsource?accounts=6");
        if head.starts_with("http/1.1 200") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the place was never freed: {head}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
