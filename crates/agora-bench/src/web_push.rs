//! Web Push delivery cost: one real `agora node` process with a VAPID key pushing to a push service the bench runs
//! on loopback, `subscriptions` subscriptions spread over `accounts` accounts, `rate` state changes per second for
//! `seconds`. Two rows from the same run, the same load:
//! - `web_push_plain`: the subscriptions without keys (JSON bodies, VAPID-signed): the baseline;
//! - `web_push_encrypted`: the subscriptions with RFC 8291 keys (a fresh ephemeral ECDH key, HKDF and AES-128-GCM
//!   per push).
//!
//! Per row: pushes per second at the push service, the node's CPU time per push (user + system, from `/proc`), and
//! each change's latency to the first push each of its account's subscriptions received after it (p50/p99/p999);
//! `lost` counts (change, subscription) pairs that got no push within the grace period.

use std::collections::HashMap;
use std::io::BufReader;
use std::net::TcpStream as StdTcpStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::eventsource::post_to;
use super::memory::NodeProcess;
use super::push::{post_changes, read_push, series_value, serve_loopback};
use super::report::ScenarioResult;

/// How long after the last change pushes may still arrive.
const GRACE: Duration = Duration::from_secs(10);

/// A P-256 user agent key (RFC 8291 section 5's) and auth secret: every subscription uses them; the sender's
/// ephemeral key and salt are fresh per push whatever the subscription.
const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

/// The bench's VAPID key (a fixed test key; it signs nothing outside this run).
const VAPID_PEM: &str =
    "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIFW+xs5QIQyo58VAMKUwdDNmlJxeACswJrtQXUqWT9L0oAoGCCqGSM49\n\
AwEHoUQDQgAE9/42qb7Ehfxf0JqHacrO0T+ND2yXUVgUuMsZfkRD4vYZZx7wP1VM\nPEUOa86Isr+cZ2g7HvaP+GuoW4xFzCKq5w==\n\
-----END EC PRIVATE KEY-----\n";

/// The scenario's size.
#[derive(Debug, Clone, Copy)]
pub struct WebPushOptions {
    /// Subscriptions of each row.
    pub subscriptions: u32,
    /// Accounts they are spread over (round robin).
    pub accounts: u32,
    /// State changes per second.
    pub rate: u64,
    /// Seconds of changes per row.
    pub seconds: u64,
}

/// Every push the service received: subscription index (from the path) and arrival.
type Arrivals = Arc<Mutex<Vec<(u32, Instant)>>>;

/// Runs both rows against a node started from `exe` on `nats_url`.
pub async fn run(
    exe: &std::path::Path,
    nats_url: &str,
    options: &WebPushOptions,
) -> Result<Vec<ScenarioResult>, String> {
    let WebPushOptions {
        subscriptions,
        accounts,
        rate,
        seconds,
    } = *options;
    if subscriptions == 0 || accounts == 0 || rate == 0 || seconds == 0 {
        return Err("web_push: --web-push-subscriptions, -accounts, -rate and -seconds must be > 0".into());
    }
    let dir = std::env::temp_dir().join(format!("agora-bench-webpush-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let key_file = dir.join("vapid.pem");
    std::fs::write(&key_file, VAPID_PEM).map_err(|e| e.to_string())?;
    let config = format!(
        "[push]\nallow-networks = [\"127.0.0.0/8\"]\nmax-subscriptions-per-account = 10000\nvapid-key-file = {:?}\n\
         vapid-subject = \"mailto:bench@example.com\"\n",
        key_file.display().to_string()
    );
    let node = NodeProcess::start_with(exe, nats_url, 995, &config)?;
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let arrivals: Arrivals = Arc::default();
    let encrypted_bodies = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let service = push_service(arrivals.clone(), encrypted_bodies.clone(), cancel.clone()).await?;

    let mut rows = Vec::new();
    let mut first_change = 1;
    for (row, keys) in [("web_push_plain", false), ("web_push_encrypted", true)] {
        // Subscription i of this row: path /s/<offset + i>, account offset + i % accounts.
        let offset = if keys { 10_000_000 } else { 0 };
        let subs: Vec<(u32, u32)> = (0..subscriptions)
            .map(|i| (offset + i, offset + i % accounts))
            .collect();
        register(&node, &service, &subs, keys).await?;
        arrivals.lock().unwrap_or_else(PoisonError::into_inner).clear();
        let total = rate * seconds;
        let plan: Vec<(u32, u64)> = (0..total)
            .map(|k| (offset + (k % u64::from(accounts)) as u32, first_change + k))
            .collect();
        first_change += total;
        let cpu_before = node.cpu_seconds();
        let posted = post_changes(&node.http, plan, Some(rate)).await?;
        let last_post = posted.iter().map(|p| p.2).max().unwrap_or_else(Instant::now);
        // Each change is covered once every subscription of its account got a push after it.
        let expected = posted.len() as u64 * u64::from(subscriptions / accounts);
        while Instant::now() < last_post + GRACE {
            let got = arrivals.lock().unwrap_or_else(PoisonError::into_inner).len() as u64;
            if got >= expected.min(u64::from(subscriptions) * 2) && Instant::now() > last_post + Duration::from_secs(1)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cpu = node.cpu_seconds() - cpu_before;
        let got = arrivals.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let by_account: HashMap<u32, Vec<u32>> = subs.iter().fold(HashMap::new(), |mut m, &(s, a)| {
            m.entry(a).or_default().push(s);
            m
        });
        let (histogram, lost) = coverage(&posted, &got, &by_account);
        let started = posted.iter().map(|p| p.2).min().unwrap_or(last_post);
        let last_arrival = got.iter().map(|a| a.1).max().unwrap_or(started);
        let window = last_arrival.saturating_duration_since(started).as_secs_f64();
        let text = node.get("/metrics").map(|(_, t)| t).unwrap_or_default();
        let mut details = serde_json::Map::new();
        details.insert("subscriptions".into(), json!(subscriptions));
        details.insert("accounts".into(), json!(accounts));
        details.insert("rate".into(), json!(rate));
        details.insert("pushes".into(), json!(got.len()));
        details.insert("encrypted".into(), json!(keys));
        let per_push_us = if got.is_empty() {
            0.0
        } else {
            cpu * 1e6 / got.len() as f64
        };
        details.insert(
            "node_cpu_us_per_push".into(),
            json!((per_push_us * 10.0).round() / 10.0),
        );
        details.insert("node_cpu_seconds".into(), json!((cpu * 100.0).round() / 100.0));
        details.insert(
            "coalesced".into(),
            json!(series_value(&text, "agora_push_coalesced_total")),
        );
        details.insert(
            "aes128gcm_bodies".into(),
            json!(encrypted_bodies.load(std::sync::atomic::Ordering::Relaxed)),
        );
        rows.push(ScenarioResult::of_node(
            row,
            posted.len(),
            got.len(),
            window,
            &histogram,
            lost,
            node.peak_rss_kib(),
            details,
        ));
    }
    Ok(rows)
}

/// For each change and each subscription of its account, the latency to the first push that subscription got
/// after the change; pairs without one are lost.
fn coverage(
    posted: &[(u32, u64, Instant)],
    arrivals: &[(u32, Instant)],
    by_account: &HashMap<u32, Vec<u32>>,
) -> (Histogram<u64>, u64) {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("constant, valid bounds");
    let mut by_subscription: HashMap<u32, Vec<Instant>> = HashMap::new();
    for &(s, at) in arrivals {
        by_subscription.entry(s).or_default().push(at);
    }
    for list in by_subscription.values_mut() {
        list.sort_unstable();
    }
    let mut lost = 0;
    for &(account, _, t0) in posted {
        for s in by_account.get(&account).into_iter().flatten() {
            let list = by_subscription.get(s).map_or(&[][..], Vec::as_slice);
            let i = list.partition_point(|at| *at < t0);
            match list.get(i) {
                Some(at) => {
                    let us = u64::try_from(at.saturating_duration_since(t0).as_micros()).unwrap_or(u64::MAX);
                    let _ = histogram.record(us.max(1));
                }
                None => lost += 1,
            }
        }
    }
    (histogram, lost)
}

/// Registers `(subscription, account)` pairs (with the user agent keys when `keys`) and waits until applied.
async fn register(node: &NodeProcess, service: &str, subs: &[(u32, u32)], keys: bool) -> Result<(), String> {
    let addr = node.http.clone();
    let bodies: Vec<String> = subs
        .iter()
        .map(|&(s, account)| {
            let mut body = json!({"account_id": account, "url": format!("http://{service}/s/{s}"), "types": ["Email"]});
            if keys {
                body["keys"] = json!({"p256dh": P256DH, "auth": AUTH});
            }
            body.to_string()
        })
        .collect();
    let before = count(&addr);
    let wanted = bodies.len();
    let post_addr = addr.clone();
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let stream = StdTcpStream::connect(&post_addr).map_err(|e| e.to_string())?;
        let mut conn = BufReader::new(stream);
        for body in bodies {
            let status = post_to(&mut conn, &post_addr, "/v1/push-subscriptions", &body)?;
            if status != 201 {
                return Err(format!("POST /v1/push-subscriptions answered {status}"));
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())??;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&addr) < before + wanted {
        if Instant::now() > deadline {
            return Err("web_push: the node did not apply the subscriptions".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn count(addr: &str) -> usize {
    super::memory::http_get(addr, "/metrics").map_or(0.0, |(_, text)| series_value(&text, "agora_push_subscriptions"))
        as usize
}

/// A push service on a free loopback port answering 201 at once; records each push's subscription and arrival,
/// and counts `aes128gcm` bodies. Returns its `host:port`.
async fn push_service(
    arrivals: Arrivals,
    encrypted: Arc<std::sync::atomic::AtomicU64>,
    cancel: CancellationToken,
) -> Result<String, String> {
    serve_loopback(cancel, move |stream| {
        let (arrivals, encrypted) = (arrivals.clone(), encrypted.clone());
        async move {
            let mut reader = tokio::io::BufReader::new(stream);
            while let Some(push) = read_push(&mut reader).await {
                arrivals
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((push.last_segment.unwrap_or(u32::MAX), Instant::now()));
                if push.aes128gcm {
                    encrypted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let response: &[u8] = b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
                if reader.get_mut().write_all(response).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}
