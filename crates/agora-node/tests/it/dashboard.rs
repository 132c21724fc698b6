//! The dashboard in a real browser: headless Chromium driven through WebDriver (chromedriver) against three real
//! nodes. The page must show the cluster, block an address cluster-wide through its form, and tail events published
//! on another node. Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); without them the test
//! fails, it never passes silently.
//!
//! The screenshot is written to the scratch directory; with `AGORA_UPDATE_SCREENSHOT=1` also to
//! `docs/img/dashboard.png` (the README's picture), so that a plain test run leaves the worktree clean.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{bin, cluster_config};
use agora_testkit::node::AgoraNode;
use agora_testkit::{free_port, scratch_dir, NatsServer};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Generous: a 2-core machine runs Chromium, chromedriver, a nats-server and three nodes at once.
const DEADLINE: Duration = Duration::from_secs(30);

/// An executable from `$var`, else the first of `names` found on `PATH`; panics with how to install it.
fn require(var: &str, names: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the dashboard's browser test needs {} (none found on PATH, and {var} is not set): install them with \
         `apt-get install -y chromium chromium-driver` (as ./scripts/test does when run as root)",
        names.join(" or ")
    );
}

/// A chromedriver process in its own process group; the whole group (with the browsers it started) is killed on
/// drop, also when the test fails half-way.
pub(crate) struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    pub(crate) fn start() -> Self {
        let bin = require("CHROMEDRIVER_BIN", &["chromedriver"]);
        let port = free_port();
        let child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let addr = format!("127.0.0.1:{port}");
        assert!(
            // (Not an HTTP request: chromedriver writes `Content-Length:252`, which the testkit's client rejects.)
            agora_testkit::wait_until(DEADLINE, || std::net::TcpStream::connect(&addr).is_ok()),
            "chromedriver did not listen on {addr}"
        );
        driver
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The group id is chromedriver's pid (process_group(0)): this ends it and the browsers it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn open_browser(driver: &ChromeDriver) -> Client {
    let chromium = require("CHROMIUM_BIN", &["chromium", "chromium-browser"]);
    let profile = scratch_dir("chromium-profile");
    let args = [
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--no-first-run".into(),
        "--window-size=1400,1600".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": chromium, "args": args },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("cannot open a Chromium session through chromedriver: {e}"))
}

/// Polls `check` (a short pause between tries, never a fixed wait) until it yields a value or `DEADLINE` passes.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    let end = Instant::now() + DEADLINE;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(value)) => return value,
            Ok(None) => {}
            Err(e) => last = e,
        }
        assert!(Instant::now() < end, "timed out waiting until {what} (last: {last})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(client: &Client, css: &str) -> Result<String, String> {
    let element = client.find(Locator::Css(css)).await.map_err(|e| e.to_string())?;
    element.text().await.map_err(|e| e.to_string())
}

async fn rows(client: &Client, css: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for row in client.find_all(Locator::Css(css)).await.map_err(|e| e.to_string())? {
        out.push(row.text().await.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Remove buttons act on a second, confirming click. The lists are re-rendered on every poll until the first click
/// arms the button (then they wait), so the first click is retried on a freshly found button.
async fn click_twice(client: &Client, css: &str) {
    let button = eventually("the first click arms the remove button", || async {
        let button = client.find(Locator::Css(css)).await.map_err(|e| e.to_string())?;
        button.click().await.map_err(|e| e.to_string())?;
        let armed = button.text().await.map_err(|e| e.to_string())? == "confirm";
        Ok(armed.then_some(button))
    })
    .await;
    button.click().await.expect("confirming click");
}

/// Waits for the page's token form (it appears when the API answers 401), enters `token` and submits it; returns
/// the form, to check later that it is gone.
async fn submit_token(client: &Client, token: &str) -> fantoccini::elements::Element {
    let form = eventually("the token form appears (the API answered 401)", || async {
        let form = client
            .find(Locator::Css("#token-form"))
            .await
            .map_err(|e| e.to_string())?;
        Ok(form.is_displayed().await.map_err(|e| e.to_string())?.then_some(form))
    })
    .await;
    fill(client, "#token-input", token).await;
    form.find(Locator::Css("button[type=submit]"))
        .await
        .expect("token button")
        .click()
        .await
        .expect("click");
    form
}

async fn fill(client: &Client, css: &str, value: &str) {
    let input = client.find(Locator::Css(css)).await.expect(css);
    input.clear().await.expect("clear");
    input.send_keys(value).await.expect("type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_blocks_an_address_and_tails_events() {
    let driver = ChromeDriver::start();
    let server = NatsServer::start();
    let config = cluster_config(&server, "");
    let nodes: Vec<AgoraNode> = (1..=3).map(|id| AgoraNode::start(bin(), &config, id)).collect();
    let client = open_browser(&driver).await;
    let url = format!("http://{}/", nodes[0].addr);
    client.goto(&url).await.expect("load the dashboard");

    // Cluster: three members, this node first, every peer heartbeating.
    let members = eventually("the page shows three members", || async {
        let rows = rows(&client, "#members tbody tr").await?;
        Ok((rows.len() == 3 && rows.iter().filter(|r| r.contains("heartbeating")).count() == 2).then_some(rows))
    })
    .await;
    assert!(members[0].starts_with("1 (this node)"), "{members:?}");
    for node in &nodes {
        assert!(
            members.iter().any(|r| r.contains(&node.addr)),
            "{} in {members:?}",
            node.addr
        );
    }
    assert_eq!(text(&client, "#status-pill").await.as_deref(), Ok("healthy"));
    assert!(!client
        .find(Locator::Css("#banner"))
        .await
        .expect("banner")
        .is_displayed()
        .await
        .expect("displayed"));

    // Blocking through the page's form blocks on every node.
    let ip = "203.0.113.77";
    fill(&client, "#block-form input[name=network]", ip).await;
    fill(&client, "#block-form input[name=ttl]", "1h").await;
    fill(&client, "#block-form input[name=reason]", "browser test").await;
    client
        .find(Locator::Css("#block-form button[type=submit]"))
        .await
        .expect("block button")
        .click()
        .await
        .expect("click");
    let path = format!("/v1/blocked-ips/{ip}");
    eventually("node 3 reports the address blocked", || async {
        let r = nodes[2].get(&path).map_err(|e| e.to_string())?;
        Ok((r.status == 200).then_some(()))
    })
    .await;
    assert_eq!(nodes[2].get(&path).expect("GET").json()["reason"], "browser test");
    eventually("the page lists the rule", || async {
        let listed = rows(&client, "#blocked-list tbody tr").await?;
        let result = text(&client, "#block-result").await?;
        Ok((result.contains("blocked 203.0.113.77/32")
            && listed
                .iter()
                .any(|r| r.contains("203.0.113.77/32") && r.contains("browser test")))
        .then_some(()))
    })
    .await;

    // An event published on node 2 appears in node 1's tail, and the account filter keeps only its account.
    let r = nodes[1].post(
        "/v1/events",
        r#"{"type":"state_change","account_id":4242,"change_id":7,"types":["Email"]}"#,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    eventually("the tail shows node 2's event", || async {
        let tail = rows(&client, "#tail-list tbody tr").await?;
        Ok(tail
            .iter()
            .any(|r| r.contains("state_change") && r.contains("node 2") && r.contains("4242"))
            .then_some(()))
    })
    .await;
    eventually("the tail also shows the block", || async {
        Ok(rows(&client, "#tail-list tbody tr")
            .await?
            .iter()
            .any(|r| r.contains("blocked_ip"))
            .then_some(()))
    })
    .await;
    fill(&client, "#tail-account", "4242").await;
    eventually("the account filter keeps only account 4242", || async {
        let tail = rows(&client, "#tail-list tbody tr").await?;
        Ok((!tail.is_empty() && tail.iter().all(|r| r.contains("4242"))).then_some(()))
    })
    .await;
    fill(&client, "#tail-account", "").await;
    eventually("the tail shows every event again without the filter", || async {
        Ok((rows(&client, "#tail-list tbody tr").await?.len() >= 2).then_some(()))
    })
    .await;

    // Traffic: the rate chart's legend names each type once two samples saw it move. A little traffic from every
    // node, so that the charts (and the README's screenshot) have something to show.
    let kinds = [
        r#"{"type":"state_change","account_id":7,"change_id":1,"types":["Mailbox"]}"#,
        r#"{"type":"email_push","account_id":7,"email_id":3,"change_id":2}"#,
        r#"{"type":"cache_invalidate","cache":"account","key":"7"}"#,
    ];
    let mut sent = 0;
    eventually("the rate chart shows every type published", || {
        for (i, body) in kinds.iter().enumerate() {
            let r = nodes[(sent + i) % 3].post("/v1/events", body);
            assert_eq!(r.status, 202, "{}", r.body);
        }
        sent += 1;
        let client = &client;
        async move {
            let legend = text(client, "#rate-legend").await?;
            let latency = text(client, "#latency-legend").await?;
            Ok((sent >= 60
                && ["state_change", "email_push", "cache_invalidate"]
                    .iter()
                    .all(|t| legend.contains(t))
                && latency.contains("p99 ")
                && !latency.contains("p99 –"))
            .then_some(()))
        }
    })
    .await;

    let png = client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
    let scratch = scratch_dir("dashboard-screenshot").join("dashboard.png");
    std::fs::write(&scratch, &png).expect("write the screenshot");
    eprintln!("dashboard screenshot: {}", scratch.display());
    if std::env::var_os("AGORA_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/img/dashboard.png");
        std::fs::create_dir_all(docs.parent().expect("docs/img")).expect("create docs/img");
        std::fs::write(&docs, &png).expect("write docs/img/dashboard.png");
    }

    // Removing through the page (a click, then a confirming click) removes on every node.
    let created = nodes[1].post(
        "/v1/push-subscriptions",
        r#"{"account_id":7,"url":"https://push.example.com/hook"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().expect("id").to_string();
    eventually("the page lists the push subscription", || async {
        let rows = rows(&client, "#push-list tbody tr").await?;
        Ok(rows.iter().any(|r| r.contains(&id)).then_some(()))
    })
    .await;
    click_twice(&client, "#push-list tbody button").await;
    eventually("node 3 no longer holds the subscription", || async {
        let r = nodes[2].get("/v1/push-subscriptions").map_err(|e| e.to_string())?;
        Ok((r.status == 200 && !r.body.contains(&id)).then_some(()))
    })
    .await;
    click_twice(&client, "#blocked-list tbody tr[data-network='203.0.113.77/32'] button").await;
    eventually("node 3 no longer blocks the address", || async {
        let r = nodes[2].get(&path).map_err(|e| e.to_string())?;
        Ok((r.status == 404).then_some(()))
    })
    .await;
    eventually("the page's lookup says so", || async {
        fill(&client, "#lookup-form input[name=ip]", ip).await;
        client
            .find(Locator::Css("#lookup-form button"))
            .await
            .map_err(|e| e.to_string())?
            .click()
            .await
            .map_err(|e| e.to_string())?;
        Ok(text(&client, "#lookup-result")
            .await?
            .contains("is not blocked")
            .then_some(()))
    })
    .await;

    token_flow(&client).await;

    // Degrades clearly: NATS gone -> healthz 503 -> red banner; the node gone -> "unreachable" banner, retried.
    drop(server);
    eventually("the page says the node is disconnected", || async {
        let banner = text(&client, "#banner").await?;
        Ok((banner.contains("disconnected") && text(&client, "#status-pill").await? != "healthy").then_some(()))
    })
    .await;
    let mut nodes = nodes;
    nodes[0].kill();
    eventually("the page says the node is unreachable", || async {
        let banner = text(&client, "#banner").await?;
        Ok((banner.contains("unreachable") && banner.contains("Retrying in")).then_some(()))
    })
    .await;
    client.close().await.expect("end the browser session");
}

/// The API is about to require a bearer token: with a `fetch` that answers 401 unless the token is sent (injected
/// into the page, as the real node will answer), the page asks for the token once with its form, keeps it in
/// `sessionStorage`, sends it as a header on every request, and never puts it in a URL.
async fn token_flow(client: &Client) {
    const TOKEN: &str = "s3cret-token-for-the-test";
    client
        .execute(
            r#"
            const token = arguments[0];
            const real = window.fetch.bind(window);
            window.__requests = [];
            window.fetch = (url, options = {}) => {
              const auth = new Headers(options.headers || {}).get("Authorization");
              window.__requests.push({ url: String(url), auth });
              if (auth !== `Bearer ${token}`) {
                return Promise.resolve(new Response('{"error":"missing or wrong token"}', {
                  status: 401, headers: { "WWW-Authenticate": "Bearer", "Content-Type": "application/json" },
                }));
              }
              return real(url, options);
            };
            "#,
            vec![json!(TOKEN)],
        )
        .await
        .expect("install the 401 fetch");
    let form = submit_token(client, TOKEN).await;
    let answered = |n: usize| async move {
        let seen = client
            .execute(
                "return window.__requests.filter((r) => r.auth !== null).length;",
                vec![],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok((seen.as_u64().unwrap_or(0) >= n as u64).then_some(()))
    };
    eventually("requests carry the token", || answered(5)).await;
    assert!(
        !form.is_displayed().await.expect("displayed"),
        "the form is gone once the token works"
    );
    let stored = client
        .execute("return sessionStorage.getItem('agora.token');", vec![])
        .await
        .expect("sessionStorage");
    assert_eq!(stored, json!(TOKEN));
    let requests = client
        .execute("return window.__requests;", vec![])
        .await
        .expect("requests");
    let requests = requests.as_array().expect("a list");
    for r in requests {
        assert!(
            !r["url"].as_str().unwrap_or_default().contains(TOKEN),
            "token in a URL: {r}"
        );
        assert!(
            r["auth"].is_null() || r["auth"] == format!("Bearer {TOKEN}"),
            "only the entered token is sent: {r}"
        );
    }
    // Asked once: the first requests went without a token, every one after the form with it.
    let first_with = requests
        .iter()
        .position(|r| !r["auth"].is_null())
        .expect("a request with the token");
    assert!(
        requests[first_with..].iter().all(|r| !r["auth"].is_null()),
        "{requests:?}"
    );
    eventually("the page is live again with the token", || async {
        Ok((text(client, "#status-pill").await? == "healthy").then_some(()))
    })
    .await;
}

/// Against a node that really requires a token: the page asks for it once, then shows the node, the stream and the
/// members through the authenticated API, and the node itself never received the token in a URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_node_with_a_token_the_page_asks_once_and_then_works() {
    const TOKEN: &str = "a-real-token-for-the-node";
    let driver = ChromeDriver::start();
    let server = NatsServer::start();
    let config = cluster_config(&server, "") + &format!("\n[http]\ntoken = \"{TOKEN}\"\n");
    let node = AgoraNode::start(bin(), &config, 1);
    let client = open_browser(&driver).await;
    client
        .goto(&format!("http://{}/", node.addr))
        .await
        .expect("load the dashboard");
    let form = submit_token(&client, TOKEN).await;
    eventually("the page is live with the token", || async {
        Ok((text(&client, "#status-pill").await? == "healthy").then_some(()))
    })
    .await;
    let members = eventually("the node's own row appears", || async {
        let rows = rows(&client, "#members tbody tr").await?;
        Ok((!rows.is_empty()).then_some(rows))
    })
    .await;
    assert!(members[0].starts_with("1 (this node)"), "{members:?}");
    // The tail reads the authenticated stream: an event posted with the token appears.
    let posted = agora_testkit::http::request_with_headers(
        &node.addr,
        "POST",
        "/v1/events",
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Content-Type", "application/json"),
        ],
        Some(r#"{"type":"state_change","account_id":777,"change_id":1,"types":["Email"]}"#),
    )
    .expect("POST");
    assert_eq!(posted.status, 202, "{}", posted.body);
    eventually("the posted event appears in the tail", || async {
        let rows = rows(&client, "#tail-list tbody tr").await?;
        Ok(rows.iter().any(|r| r.contains("777")).then_some(()))
    })
    .await;
    assert!(!form.is_displayed().await.expect("displayed"), "asked once");
}
