//! A browser's own stream with a client token: headless Chromium on a page of another origin (listed in
//! `cors-origins`) opens `new EventSource(url, {withCredentials: true})` to the node with the `agora_token` cookie set
//! for the node's host, receives a state change, and after the token is revoked a new EventSource is refused.
//!
//! The page is served from another port of the same host: another origin (CORS applies), the same site (the cookie,
//! which is per host and not per port, goes along under the default `SameSite=Lax`), over plain HTTP.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use agora_testkit::node::AgoraNode;
use agora_testkit::NatsServer;
use fantoccini::Client;
use serde_json::{json, Value};

use crate::client_tokens::{admin, change, mint, spec, Keys};
use crate::dashboard::{open_browser, ChromeDriver};
use crate::support::{bin, cluster_config};

const DEADLINE: Duration = Duration::from_secs(30);

/// Serves one small HTML page on its own port, forever (the thread ends with the test process).
fn serve_page() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page's port");
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let body = "<!doctype html><html><head><title>webmail</title></head><body>webmail</body></html>";
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    origin
}

/// Runs `script` in the page until it returns a truthy value, or fails after [`DEADLINE`].
async fn eventually(client: &Client, what: &str, script: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let value = client.execute(script, vec![]).await.unwrap_or(Value::Null);
        if !(value.is_null() || value == json!(false) || value == json!(0)) {
            return value;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?} (last: {value})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens an EventSource named `name` with credentials from the page and records what it sees in `window[name]`.
const OPEN: &str = r#"
    const [name, url] = arguments;
    const seen = { opened: 0, errors: 0, states: [], readyState: 0 };
    window[name] = seen;
    const source = new EventSource(url, { withCredentials: true });
    window[name + "Source"] = source;
    source.onopen = () => { seen.opened += 1; };
    source.onerror = () => { seen.errors += 1; seen.readyState = source.readyState; };
    source.addEventListener("state", (e) => { seen.states.push(JSON.parse(e.data)); });
    return true;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_eventsource_with_the_cookie_gets_its_stream_and_none_after_revocation() {
    let driver = ChromeDriver::start();
    let keys = Keys::generate();
    let page = serve_page();
    let server = NatsServer::start();
    let node = AgoraNode::start(bin(), &(cluster_config(&server, "") + &keys.http_section(&page, "")), 1);
    let jwt = mint(&[spec("ES256", &keys.es256_private, &[42], 600)]).remove(0);
    let client = open_browser(&driver).await;

    // The cookie, set for the node's host by a document of the node's origin.
    client
        .goto(&format!("http://{}/healthz", node.addr))
        .await
        .expect("load the node's health check");
    client
        .execute(
            "document.cookie = `agora_token=${arguments[0]}; path=/`; return document.cookie;",
            vec![json!(jwt)],
        )
        .await
        .expect("set the cookie");

    // The page of the other origin opens the stream with credentials.
    client.goto(&format!("{page}/")).await.expect("load the page");
    let url = format!("http://{}/v1/eventsource?accounts=42", node.addr);
    client
        .execute(OPEN, vec![json!("first"), json!(url)])
        .await
        .expect("open the EventSource");
    eventually(&client, "the EventSource opens", "return window.first.opened;").await;
    change(&node, 42, 17);
    let state = eventually(&client, "the state change arrives", "return window.first.states[0];").await;
    assert_eq!(state["changed"]["42"]["Email"], "17", "{state}");

    // Revoked: the open stream ends, the browser's reconnect is refused (401 closes an EventSource for good), and
    // so is a new EventSource.
    let r = admin(&node, "POST", "/v1/revocations", Some(r#"{"accounts":[42]}"#));
    assert_eq!(r.status, 201, "{}", r.body);
    eventually(
        &client,
        "the first EventSource is closed for good",
        "return window.firstSource.readyState === 2;",
    )
    .await;
    client
        .execute(OPEN, vec![json!("second"), json!(url)])
        .await
        .expect("open another EventSource");
    eventually(
        &client,
        "the new EventSource is refused",
        "return window.secondSource.readyState === 2 && window.second.errors > 0;",
    )
    .await;
    let second = client.execute("return window.second;", vec![]).await.expect("read");
    assert_eq!(second["opened"], 0, "the revoked token opened a stream: {second}");
    client.close().await.expect("end the browser session");
}
