//! Push delivery: one real `agora node` process POSTing JMAP `StateChange`s to HTTP endpoints the bench runs on
//! loopback (the node is started with `[push] allow-networks = ["127.0.0.0/8"]`). Two rows:
//! - `push_throughput`: `accounts` accounts, one subscription each, all on one fast endpoint (answers 200 at once);
//!   `changes` state changes POSTed as fast as the node takes them. Deliveries per second at the endpoint, and each
//!   change's latency from its POST to the first push that covers it (a coalesced push covers several changes).
//! - `push_isolation`: the same healthy endpoint next to 10 bad ones (4 accept and never answer, 3 answer 500,
//!   3 refuse connections, 20 subscriptions each), state changes at `rate` for `seconds`, half for healthy accounts
//!   and half for bad ones. The share of healthy changes covered by a push (it must be 100%) and their latency.

use std::collections::HashMap;
use std::io::BufReader;
use std::net::TcpStream as StdTcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::eventsource::post_to;
use super::memory::{http_get, NodeProcess};
use super::report::ScenarioResult;

/// Keep-alive connections the changes are POSTed over.
const POSTERS: u64 = 4;

/// How long after the last POST pushes may still arrive before a change counts as not covered.
const GRACE: Duration = Duration::from_secs(10);

/// Subscriptions on each bad endpoint (accounts of their own).
const BAD_SUBSCRIPTIONS_PER_ENDPOINT: u32 = 20;

/// Accounts of the bad subscriptions start here, far from the healthy ones.
const BAD_ACCOUNTS: u32 = 1_000_000;

/// The scenario's size.
#[derive(Debug, Clone, Copy)]
pub struct PushOptions {
    /// Healthy accounts, one subscription each.
    pub accounts: u32,
    /// State changes of the throughput run.
    pub changes: u64,
    /// State changes per second of the isolation run.
    pub rate: u64,
    /// Seconds of the isolation run.
    pub seconds: u64,
}

/// How a bench endpoint answers.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Ok,
    Fail,
    Hang,
}

/// Every push a healthy endpoint received: account, newest state in it, arrival.
type Arrivals = Arc<Mutex<Vec<(u32, u64, Instant)>>>;

/// Runs both rows against a node started from `exe` on `nats_url`.
pub async fn run(exe: &std::path::Path, nats_url: &str, options: &PushOptions) -> Result<Vec<ScenarioResult>, String> {
    let PushOptions {
        accounts,
        changes,
        rate,
        seconds,
    } = *options;
    if accounts == 0 || changes == 0 || rate == 0 || seconds == 0 {
        return Err("push: --push-accounts, --push-changes, --push-rate and --push-seconds must be > 0".into());
    }
    let node = NodeProcess::start_with(exe, nats_url, 996, "[push]\nallow-networks = [\"127.0.0.0/8\"]\n")?;
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let arrivals: Arrivals = Arc::default();
    let healthy = endpoint(Behaviour::Ok, arrivals.clone(), cancel.clone()).await?;
    let subscriptions: Vec<(u32, String)> = (1..=accounts).map(|a| (a, format!("http://{healthy}/a/{a}"))).collect();
    register(&node, subscriptions).await?;

    // Throughput: account k % accounts + 1, change id k + 1, as fast as the node takes them.
    let plan: Vec<(u32, u64)> = (0..changes)
        .map(|k| ((k % u64::from(accounts)) as u32 + 1, k + 1))
        .collect();
    let posted = post_changes(&node.http, plan, None).await?;
    let throughput = measure(&node, &posted, &arrivals, "push_throughput").await;

    // Isolation: 10 bad endpoints, then changes at a fixed rate, alternately healthy and bad.
    let mut bad = Vec::new();
    for behaviour in [Behaviour::Hang; 4].into_iter().chain([Behaviour::Fail; 3]) {
        bad.push(endpoint(behaviour, Arc::default(), cancel.clone()).await?);
    }
    for _ in 0..3 {
        bad.push(closed_port()?);
    }
    let bad_subscriptions: Vec<(u32, String)> = (0..bad.len() as u32 * BAD_SUBSCRIPTIONS_PER_ENDPOINT)
        .map(|i| {
            (
                BAD_ACCOUNTS + i,
                format!("http://{}/a/{}", bad[(i as usize) % bad.len()], BAD_ACCOUNTS + i),
            )
        })
        .collect();
    let bad_count = bad_subscriptions.len() as u32;
    register(&node, bad_subscriptions).await?;
    arrivals.lock().map_err(|_| "poisoned")?.clear();
    let total = rate * seconds;
    let first_id = changes + 1;
    let plan: Vec<(u32, u64)> = (0..total)
        .map(|k| {
            let account = if k % 2 == 0 {
                ((k / 2) % u64::from(accounts)) as u32 + 1
            } else {
                BAD_ACCOUNTS + ((k / 2) % u64::from(bad_count)) as u32
            };
            (account, first_id + k)
        })
        .collect();
    let posted = post_changes(&node.http, plan, Some(rate)).await?;
    let healthy_posted: Vec<(u32, u64, Instant)> = posted.into_iter().filter(|p| p.0 < BAD_ACCOUNTS).collect();
    let mut isolation = measure(&node, &healthy_posted, &arrivals, "push_isolation").await;
    isolation.details.insert(
        "bad_endpoints".into(),
        json!("4 hang, 3 answer 500, 3 refuse connections"),
    );
    isolation.details.insert("bad_subscriptions".into(), json!(bad_count));
    isolation
        .details
        .insert("bad_changes".into(), json!(total - healthy_posted.len() as u64));
    isolation.details.insert("rate".into(), json!(rate));
    let text = node.get("/metrics").map(|(_, t)| t).unwrap_or_default();
    for (key, series) in [
        ("breakers_open", "agora_push_breakers_open"),
        ("breaker_opened", "agora_push_breaker_opened_total"),
        ("failed", "agora_push_deliveries_total{result=\"failed\"}"),
    ] {
        isolation.details.insert(key.into(), json!(series_value(&text, series)));
    }
    Ok(vec![throughput, isolation])
}

/// Waits until every posted change is covered by a push (or the grace period ends), then makes the row.
async fn measure(
    node: &NodeProcess,
    posted: &[(u32, u64, Instant)],
    arrivals: &Arrivals,
    name: &str,
) -> ScenarioResult {
    let started = posted.iter().map(|p| p.2).min().unwrap_or_else(Instant::now);
    let last_post = posted.iter().map(|p| p.2).max().unwrap_or(started);
    let newest: HashMap<u32, u64> = posted.iter().fold(HashMap::new(), |mut m, &(a, id, _)| {
        let e = m.entry(a).or_insert(0);
        *e = (*e).max(id);
        m
    });
    let covered_all = || {
        let got = arrivals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut best: HashMap<u32, u64> = HashMap::new();
        for &(a, s, _) in got.iter() {
            let e = best.entry(a).or_insert(0);
            *e = (*e).max(s);
        }
        newest.iter().all(|(a, id)| best.get(a).is_some_and(|s| s >= id))
    };
    while !covered_all() && Instant::now() < last_post + GRACE {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = arrivals
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let text = node.get("/metrics").map(|(_, t)| t).unwrap_or_default();
    let (histogram, lost) = coverage(posted, &got);
    let last_arrival = got.iter().map(|a| a.2).max().unwrap_or(started);
    let window = last_arrival.saturating_duration_since(started).as_secs_f64();
    let mut details = serde_json::Map::new();
    details.insert("accounts".into(), json!(newest.len()));
    details.insert("deliveries".into(), json!(got.len()));
    details.insert(
        "coalesced".into(),
        json!(series_value(&text, "agora_push_coalesced_total")),
    );
    let post_seconds = last_post.saturating_duration_since(started).as_secs_f64();
    details.insert("post_seconds".into(), json!((post_seconds * 1000.0).round() / 1000.0));
    if posted.is_empty() {
        details.insert("healthy_share".into(), json!(0.0));
    } else {
        let share = 100.0 * (posted.len() as u64 - lost) as f64 / posted.len() as f64;
        details.insert("healthy_share".into(), json!((share * 1000.0).round() / 1000.0));
    }
    ScenarioResult::of_node(
        name,
        posted.len(),
        got.len(),
        window,
        &histogram,
        lost,
        node.peak_rss_kib(),
        details,
    )
}

/// Each change's latency to the first push of its account, after its POST, that carries its state or a newer one;
/// and how many changes no push covered.
fn coverage(posted: &[(u32, u64, Instant)], arrivals: &[(u32, u64, Instant)]) -> (Histogram<u64>, u64) {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("constant, valid bounds");
    let mut by_account: HashMap<u32, Vec<(Instant, u64)>> = HashMap::new();
    for &(a, s, at) in arrivals {
        by_account.entry(a).or_default().push((at, s));
    }
    for list in by_account.values_mut() {
        list.sort_unstable();
    }
    let mut changes: Vec<&(u32, u64, Instant)> = posted.iter().collect();
    changes.sort_unstable_by_key(|&&(a, id, _)| (a, id));
    let mut lost = 0;
    let mut cursor: HashMap<u32, usize> = HashMap::new();
    for &&(account, id, t0) in &changes {
        let list = by_account.get(&account).map_or(&[][..], Vec::as_slice);
        // Change ids of one account grow with their POST time, so a push that does not cover this change covers
        // none of the later ones either: one pass per account.
        let j = cursor.entry(account).or_insert(0);
        while *j < list.len() && (list[*j].0 < t0 || list[*j].1 < id) {
            *j += 1;
        }
        match list.get(*j) {
            Some(&(at, _)) => {
                let us = u64::try_from(at.saturating_duration_since(t0).as_micros()).unwrap_or(u64::MAX);
                let _ = histogram.record(us.max(1));
            }
            None => lost += 1,
        }
    }
    (histogram, lost)
}

/// The value of one `/metrics` series (0 if absent).
pub(super) fn series_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// A loopback address nothing listens on.
fn closed_port() -> Result<String, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map(|a| a.to_string()).map_err(|e| e.to_string())
}

/// Registers `(account, url)` subscriptions through the API and waits until the node holds them all.
async fn register(node: &NodeProcess, subscriptions: Vec<(u32, String)>) -> Result<(), String> {
    let addr = node.http.clone();
    let wanted = subscriptions.len();
    let before = tokio::task::spawn_blocking(move || -> Result<usize, String> {
        let before = count_subscriptions(&addr);
        let stream = StdTcpStream::connect(&addr).map_err(|e| e.to_string())?;
        let mut conn = BufReader::new(stream);
        for (account, url) in subscriptions {
            let body = json!({"account_id": account, "url": url, "types": ["Email"]}).to_string();
            let status = post_to(&mut conn, &addr, "/v1/push-subscriptions", &body)?;
            if status != 201 {
                return Err(format!("POST /v1/push-subscriptions answered {status}"));
            }
        }
        Ok(before)
    })
    .await
    .map_err(|e| e.to_string())??;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_subscriptions(&node.http) < before + wanted {
        if Instant::now() > deadline {
            return Err("push: the node did not apply the subscriptions".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn count_subscriptions(addr: &str) -> usize {
    http_get(addr, "/metrics").map_or(0.0, |(_, text)| series_value(&text, "agora_push_subscriptions")) as usize
}

/// POSTs `(account, change id)` state changes over [`POSTERS`] kept-alive connections (change `k` on connection
/// `k % POSTERS`), at `rate` per second or as fast as the node answers. Returns each change with its POST time.
pub(super) async fn post_changes(
    addr: &str,
    plan: Vec<(u32, u64)>,
    rate: Option<u64>,
) -> Result<Vec<(u32, u64, Instant)>, String> {
    let plan = Arc::new(plan);
    let started = Instant::now();
    let posters: Vec<_> = (0..POSTERS)
        .map(|c| {
            let (addr, plan) = (addr.to_string(), plan.clone());
            tokio::task::spawn_blocking(move || -> Result<Vec<(u32, u64, Instant)>, String> {
                let stream = StdTcpStream::connect(&addr).map_err(|e| e.to_string())?;
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                let mut conn = BufReader::new(stream);
                let mut sent = Vec::new();
                for k in (c as usize..plan.len()).step_by(POSTERS as usize) {
                    if let Some(rate) = rate {
                        let due = started + Duration::from_nanos((k as u64).saturating_mul(1_000_000_000) / rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let (account, id) = plan[k];
                    let body = format!(
                        r#"{{"type":"state_change","account_id":{account},"change_id":{id},"types":["Email"]}}"#
                    );
                    sent.push((account, id, Instant::now()));
                    let status = post_to(&mut conn, &addr, "/v1/events", &body)?;
                    if status != 202 {
                        return Err(format!("POST /v1/events answered {status}"));
                    }
                }
                Ok(sent)
            })
        })
        .collect();
    let mut posted = Vec::with_capacity(plan.len());
    for poster in posters {
        posted.extend(poster.await.map_err(|e| e.to_string())??);
    }
    Ok(posted)
}

/// Starts an endpoint on a free loopback port; returns its `host:port`.
async fn endpoint(behaviour: Behaviour, arrivals: Arrivals, cancel: CancellationToken) -> Result<String, String> {
    serve_loopback(cancel, move |stream| {
        let arrivals = arrivals.clone();
        async move { serve(stream, behaviour, &arrivals).await }
    })
    .await
}

/// Listens on a free loopback port and serves each connection with `connection` until `cancel`; returns the
/// port's `host:port`. The accept loop of every endpoint the push scenarios run.
pub(super) async fn serve_loopback<F, Fut>(cancel: CancellationToken, connection: F) -> Result<String, String>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?.to_string();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
            };
            let (served, cancel) = (connection(stream), cancel.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = served => {}
                }
            });
        }
    });
    Ok(addr)
}

/// Serves one connection (keep-alive): records each push's account and newest state, answers as `behaviour` says.
async fn serve(stream: TcpStream, behaviour: Behaviour, arrivals: &Arrivals) {
    let mut reader = tokio::io::BufReader::new(stream);
    loop {
        let Some(request) = read_push(&mut reader).await else {
            return;
        };
        let (account, body) = (request.last_segment.unwrap_or(0), request.body);
        let response: &[u8] = match behaviour {
            Behaviour::Hang => return std::future::pending().await,
            Behaviour::Fail => b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
            Behaviour::Ok => {
                let at = Instant::now();
                let state = newest_state(&body, account);
                arrivals
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((account, state, at));
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
            }
        };
        if reader.get_mut().write_all(response).await.is_err() {
            return;
        }
    }
}

/// One push as an endpoint reads it.
pub(super) struct PushRequest {
    /// The last segment of the request path, as a number (the bench puts the account or subscription there).
    pub last_segment: Option<u32>,
    /// `Content-Encoding: aes128gcm`.
    pub aes128gcm: bool,
    /// The body.
    pub body: Vec<u8>,
}

/// Reads one request (`Content-Length` framing) from a kept-alive connection; `None` once it closes or breaks.
pub(super) async fn read_push(reader: &mut tokio::io::BufReader<TcpStream>) -> Option<PushRequest> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
        return None;
    }
    let last_segment = line
        .split_whitespace()
        .nth(1)
        .and_then(|path| path.rsplit('/').next())
        .and_then(|a| a.parse().ok());
    let (mut length, mut aes128gcm) = (0usize, false);
    loop {
        line.clear();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        aes128gcm |= lower.starts_with("content-encoding: aes128gcm");
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some(PushRequest {
        last_segment,
        aes128gcm,
        body,
    })
}

/// The newest state a `StateChange` body carries for `account` (0 if none).
fn newest_state(body: &[u8], account: u32) -> u64 {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    value["changed"][account.to_string()].as_object().map_or(0, |types| {
        types
            .values()
            .filter_map(|s| s.as_str()?.parse().ok())
            .max()
            .unwrap_or(0)
    })
}
