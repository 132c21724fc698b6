//! HTTPS on the API: served with the configured certificate, and a renewed certificate is used for new connections
//! (after a `certificate_renewed` event, or when the files change) while open streams go on undisturbed.

use std::time::Duration;

use crate::support::{bin, cluster_config};
use agora_testkit::node::AgoraNode;
use agora_testkit::tls::Pki;
use agora_testkit::{scratch_dir, NatsServer};

const DEADLINE: Duration = Duration::from_secs(20);

fn client(pki: &Pki) -> reqwest::Client {
    let ca = std::fs::read(&pki.ca).expect("read CA");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"))
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

async fn healthy(client: &reqwest::Client, addr: &str) -> bool {
    client
        .get(format!("https://{addr}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(tokio::time::Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_https_and_a_renewed_certificate_is_used_without_dropping_streams() {
    let server = NatsServer::start();
    let first = Pki::generate();
    let dir = scratch_dir("https");
    let (cert, key) = (dir.join("api.pem"), dir.join("api.key"));
    std::fs::copy(&first.server_cert, &cert).expect("copy cert");
    std::fs::copy(&first.server_key, &key).expect("copy key");
    let config = cluster_config(&server, "")
        + &format!(
            "\n[http]\ntls.cert-file = \"{}\"\ntls.key-file = \"{}\"\n",
            cert.display(),
            key.display()
        );
    let node = AgoraNode::spawn(bin(), &config, 1);
    let old = client(&first);
    eventually("the node to answer over HTTPS", || healthy(&old, &node.addr)).await;
    assert!(
        node.get("/healthz").map(|r| r.status != 200).unwrap_or(true),
        "plain HTTP is not served"
    );

    // A stream opened with the first certificate.
    let mut stream = old
        .get(format!("https://{}/v1/events?types=custom", node.addr))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    // And a JMAP EventSource stream (over TLS, a hyper response body rather than the plain-HTTP fan-out).
    let mut jmap = old
        .get(format!("https://{}/v1/eventsource?accounts=42&types=Email", node.addr))
        .send()
        .await
        .expect("EventSource");
    assert_eq!(jmap.status(), 200);

    // Renew: new files, then the event that says so.
    let second = Pki::generate();
    std::fs::copy(&second.server_cert, &cert).expect("copy cert");
    std::fs::copy(&second.server_key, &key).expect("copy key");
    let renewed = old
        .post(format!("https://{}/v1/events", node.addr))
        .header("content-type", "application/json")
        .body(r#"{"type":"certificate_renewed","domains":["api.example"]}"#)
        .send()
        .await
        .expect("POST");
    assert_eq!(renewed.status(), 202);
    let new = client(&second);
    eventually("new connections to use the renewed certificate", || {
        healthy(&new, &node.addr)
    })
    .await;
    assert!(
        !healthy(&client(&first), &node.addr).await,
        "the old certificate is no longer served"
    );

    // The streams opened before the renewal still deliver.
    let text = post_and_read(
        &new,
        &node.addr,
        r#"{"type":"custom","name":"after-renewal","data":""}"#,
        &mut stream,
        "after-renewal",
    )
    .await;
    assert!(text.is_some(), "the open stream survives the renewal");
    let state_change = r#"{"type":"state_change","account_id":42,"change_id":77,"types":["Email"]}"#;
    let text = post_and_read(&new, &node.addr, state_change, &mut jmap, r#""Email":"77""#).await;
    let text = text.expect("the EventSource stream over TLS delivers");
    assert!(text.contains("id: ") && text.contains("event: state"), "{text}");
}

/// POSTs `event` and reads `stream` until `wanted` arrives: what was read, or `None` if the stream ended first or
/// the deadline passed.
async fn post_and_read(
    client: &reqwest::Client,
    addr: &str,
    event: &str,
    stream: &mut reqwest::Response,
    wanted: &str,
) -> Option<String> {
    let posted = client
        .post(format!("https://{addr}/v1/events"))
        .header("content-type", "application/json")
        .body(event.to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(posted.status(), 202);
    let mut text = String::new();
    let read = async {
        while !text.contains(wanted) {
            match stream.chunk().await {
                Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return false,
            }
        }
        true
    };
    let got = tokio::time::timeout(DEADLINE, read).await;
    (got == Ok(true)).then_some(text)
}

#[test]
fn a_certificate_that_cannot_be_used_fails_the_start_naming_the_key() {
    let server = NatsServer::start();
    let pki = Pki::generate();
    // The CA's own certificate with the server's key: they do not go together.
    let config = cluster_config(&server, "")
        + &format!(
            "\n[http]\ntls.cert-file = \"{}\"\ntls.key-file = \"{}\"\n",
            pki.ca.display(),
            pki.server_key.display()
        );
    let path = agora_testkit::scratch_file("bad-tls.toml", &config);
    let out = std::process::Command::new(bin())
        .args(["node", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http.tls"), "{stderr}");
    assert!(!stderr.contains("PRIVATE KEY"), "no key material: {stderr}");
}
