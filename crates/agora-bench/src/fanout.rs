//! Fan-out: one real `agora node` process holding many JMAP EventSource streams (`/v1/eventsource`) over a few
//! accounts while state changes arrive at a fixed rate through `POST /v1/events`. Measures each delivery from its
//! POST to its arrival on every stream of that account, the node's CPU time and peak memory, and how fast `/healthz`
//! answers meanwhile.

use std::io::BufReader;
use std::net::TcpStream as StdTcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::client::{on_own_runtime, open_stream, read_body, OpenStream};
use super::eventsource::post;
use super::memory::{http_get, NodeProcess};
use super::report::ScenarioResult;

/// Keep-alive connections the events are POSTed over (event `k` goes over connection `k % POSTERS`).
const POSTERS: u64 = 4;

/// Streams being opened at once (so as not to overflow the node's accept backlog).
const OPENING: usize = 256;

/// How long after the last POST deliveries may still arrive before they count as lost.
const GRACE: Duration = Duration::from_secs(5);

/// How often `/healthz` is asked, each time on a fresh connection.
const HEALTHZ_EVERY: Duration = Duration::from_millis(100);

/// Descriptors the node and the bench need besides the streams (NATS, POSTs, health checks, files).
const FD_SPARE: u64 = 256;

/// The data type every stream asks for and every event carries.
const TYPE: &str = "Mailbox";

/// The scenario's size.
#[derive(Debug, Clone, Copy)]
pub struct FanoutOptions {
    /// Open EventSource streams, spread evenly over the accounts.
    pub streams: usize,
    /// Accounts (ids 1..=accounts); events are spread evenly over them too.
    pub accounts: u32,
    /// Events POSTed per second.
    pub rate: u64,
    /// Seconds of POSTing.
    pub seconds: u64,
}

/// What one stream received: change ids with their arrival times, and whether the node ended the stream.
struct Received {
    account: u32,
    got: Vec<(u64, Instant)>,
    ended: bool,
}

/// Runs the scenario against a node started from `exe` (an `agora` binary) on `nats_url`.
pub async fn run(exe: &Path, nats_url: &str, options: &FanoutOptions) -> Result<ScenarioResult, String> {
    let FanoutOptions {
        streams,
        accounts,
        rate,
        seconds,
    } = *options;
    if streams == 0 || accounts == 0 || rate == 0 || seconds == 0 {
        return Err(
            "fanout: --fanout-streams, --fanout-accounts, --fanout-rate and --fanout-seconds must be > 0".into(),
        );
    }
    // The bench holds one descriptor per stream too; the node raises its own limit the same way when it starts.
    let limit = rlimit::increase_nofile_limit(u64::MAX).map_err(|e| format!("cannot raise the fd limit: {e}"))?;
    let needed = streams as u64 + FD_SPARE;
    if limit < needed {
        return Err(format!(
            "fanout: {streams} streams need about {needed} file descriptors, the limit is {limit} (raise ulimit -n or \
             lower --fanout-streams)"
        ));
    }
    let extra = format!("[http]\nmax-connections = {needed}\nmax-streams = {needed}\n");
    let node = NodeProcess::start_with(exe, nats_url, 997, &extra)?;

    // Open every stream (a bounded number at a time), then read them all concurrently.
    let addr = node.http.clone();
    let opened: Vec<Result<(u32, OpenStream), String>> = futures::stream::iter(0..streams)
        .map(|i| {
            let addr = addr.clone();
            let account = (i as u64 % u64::from(accounts)) as u32 + 1;
            async move {
                let path = format!("/v1/eventsource?accounts={account}&types={TYPE}");
                open_stream(&addr, &path).await.map(|s| (account, s))
            }
        })
        .buffer_unordered(OPENING)
        .collect()
        .await;
    let cancel = CancellationToken::new();
    let delivered = Arc::new(AtomicU64::new(0));
    // The readers run on a one-thread runtime of their own: 10,000 sockets read by two worker threads that keep
    // waking each other cost the machine (whose 2 cores the node shares) more than the node's own work.
    let mut handed = Vec::with_capacity(streams);
    for opened in opened {
        let (account, open) = opened?;
        let stream = open.stream.into_std().map_err(|e| e.to_string())?;
        handed.push((account, stream, open.body_start, open.chunked));
    }
    let readers = {
        let (cancel, delivered) = (cancel.clone(), delivered.clone());
        std::thread::Builder::new()
            .name("bench-readers".into())
            .spawn(move || read_all(handed, cancel, delivered))
            .map_err(|e| format!("cannot start the readers' thread: {e}"))?
    };

    let total = rate * seconds;
    let cpu_before = node.cpu_seconds();
    let stop = Arc::new(AtomicBool::new(false));
    let healthz = {
        let (addr, stop) = (addr.clone(), stop.clone());
        tokio::task::spawn_blocking(move || healthz_loop(&addr, &stop))
    };
    let started = Instant::now();
    let posters: Vec<_> = (0..POSTERS.min(total))
        .map(|c| {
            let addr = addr.clone();
            tokio::task::spawn_blocking(move || post_loop(&addr, c, total, rate, accounts, started))
        })
        .collect();
    let mut sent_at: Vec<Option<Instant>> = vec![None; usize::try_from(total + 1).unwrap_or(usize::MAX)];
    let mut post_failure = None;
    for poster in posters {
        match poster.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(sent) => {
                for (id, at) in sent {
                    sent_at[id as usize] = Some(at);
                }
            }
            Err(e) => post_failure = Some(e),
        }
    }
    let last_post = sent_at.iter().flatten().max().copied().unwrap_or(started);

    // Every stream of an account wants every event of that account.
    let per_account = |a: u32| {
        let a = u64::from(a - 1);
        total / u64::from(accounts) + u64::from(a < total % u64::from(accounts))
    };
    let stream_accounts: Vec<u32> = (0..streams)
        .map(|i| (i as u64 % u64::from(accounts)) as u32 + 1)
        .collect();
    let expected: u64 = stream_accounts.iter().map(|&a| per_account(a)).sum();
    let deadline = last_post + GRACE;
    while post_failure.is_none() && delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_seconds = node.cpu_seconds() - cpu_before;
    let peak_rss_kib = node.peak_rss_kib();
    // The node's own share of the delay (journal append to written), apart from the readers' and the kernel's.
    let node_metrics = super::memory::http_get(&addr, "/metrics")
        .map(|(_, text)| text)
        .unwrap_or_default();
    let node_delay = |p| histogram_quantile_ms(&node_metrics, FANOUT_DELAY, p);
    stop.store(true, Ordering::Relaxed);
    cancel.cancel();
    let healthz_ms = healthz.await.map_err(|e| e.to_string())?;
    let mut received = tokio::task::spawn_blocking(move || readers.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "the readers' thread panicked".to_string())??;
    if let Some(e) = post_failure {
        return Err(format!("fanout: POST /v1/events failed: {e}"));
    }

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("constant, valid bounds");
    let mut deliveries = 0u64;
    let mut unexpected = 0u64;
    let mut ended = 0u64;
    let mut last_arrival = started;
    for r in &mut received {
        ended += u64::from(r.ended);
        r.got.sort_unstable_by_key(|&(id, _)| id);
        r.got.dedup_by_key(|&mut (id, _)| id);
        for &(id, at) in &r.got {
            let wanted = id >= 1 && id <= total && ((id - 1) % u64::from(accounts)) as u32 + 1 == r.account;
            let Some(Some(t0)) = sent_at.get(id as usize).filter(|_| wanted) else {
                unexpected += 1;
                continue;
            };
            deliveries += 1;
            last_arrival = last_arrival.max(at);
            let us = u64::try_from(at.saturating_duration_since(*t0).as_micros()).unwrap_or(u64::MAX);
            let _ = histogram.record(us.max(1));
        }
    }
    let window = last_arrival.saturating_duration_since(started).as_secs_f64();
    let q = |p: f64| histogram.value_at_quantile(p) as f64;
    let hq = |p: f64| percentile(&healthz_ms.0, p);
    let mut details = serde_json::Map::new();
    details.insert("streams".into(), json!(streams));
    details.insert("accounts".into(), json!(accounts));
    details.insert("rate".into(), json!(rate));
    details.insert("seconds".into(), json!(seconds));
    details.insert("deliveries".into(), json!(deliveries));
    details.insert(
        "post_seconds".into(),
        json!(round3(last_post.duration_since(started).as_secs_f64())),
    );
    details.insert("cpu_seconds".into(), json!(round3(cpu_seconds)));
    details.insert("node_fanout_p50_ms".into(), json!(node_delay(0.5)));
    details.insert("node_fanout_p99_ms".into(), json!(node_delay(0.99)));
    details.insert("healthz_checks".into(), json!(healthz_ms.0.len()));
    details.insert("healthz_failures".into(), json!(healthz_ms.1));
    details.insert("healthz_p50_ms".into(), json!(round3(hq(0.5))));
    details.insert("healthz_p99_ms".into(), json!(round3(hq(0.99))));
    if ended > 0 {
        details.insert("streams_ended".into(), json!(ended));
    }
    if unexpected > 0 {
        details.insert("unexpected".into(), json!(unexpected));
    }
    Ok(ScenarioResult {
        scenario: "fanout".into(),
        mode: "node".into(),
        events: total,
        events_per_sec: if window > 0.0 { deliveries as f64 / window } else { 0.0 },
        p50_us: q(0.5),
        p99_us: q(0.99),
        p999_us: q(0.999),
        lost: expected.saturating_sub(deliveries),
        rss_kib: Some(peak_rss_kib),
        details,
    })
}

/// The node's histogram of journal-append-to-written delays.
const FANOUT_DELAY: &str = "agora_stream_fanout_delay_seconds";

/// The `p` quantile of the Prometheus histogram `name` in the `metrics` text, in ms: the upper bound of the bucket
/// it falls in (the buckets double, so this is within a factor of two). `None` without observations.
fn histogram_quantile_ms(metrics: &str, name: &str, p: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|line| {
            let (le, count) = line.strip_prefix(&prefix)?.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.split_whitespace().next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let bound = buckets.iter().find(|(_, count)| *count >= p * total)?.0;
    Some(round3(bound * 1000.0))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The `p` quantile of `values` (nearest rank), 0 if empty.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The readers' thread: a one-thread runtime reading every stream until `cancel`.
fn read_all(
    streams: Vec<(u32, StdTcpStream, Vec<u8>, bool)>,
    cancel: CancellationToken,
    delivered: Arc<AtomicU64>,
) -> Result<Vec<Received>, String> {
    on_own_runtime(async move {
        let mut readers = Vec::with_capacity(streams.len());
        for (account, stream, body_start, chunked) in streams {
            let stream = tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())?;
            let open = OpenStream {
                stream,
                body_start,
                chunked,
            };
            readers.push(tokio::spawn(read_stream(
                account,
                open,
                cancel.clone(),
                delivered.clone(),
            )));
        }
        let mut received = Vec::with_capacity(readers.len());
        for reader in readers {
            received.push(reader.await.map_err(|e| e.to_string())?);
        }
        Ok(received)
    })
}

/// Reads one stream until `cancel` or its end, noting each state change's id and when it arrived.
async fn read_stream(account: u32, open: OpenStream, cancel: CancellationToken, delivered: Arc<AtomicU64>) -> Received {
    // Made once: a new `cancelled()` future per read would register and drop a waiter 100,000 times a second.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let mut got = Vec::new();
    let ended = read_body(open, cancelled, |text| {
        let before = got.len();
        take_state_changes(text, Instant::now(), &mut got);
        delivered.fetch_add((got.len() - before) as u64, Ordering::Relaxed);
    })
    .await;
    Received { account, got, ended }
}

/// Takes the complete lines out of `text`, noting the change id of each `state` event's data line:
/// `data: {"@type":"StateChange","changed":{"7":{"Mailbox":"<change id>"}}}`.
fn take_state_changes(text: &mut Vec<u8>, at: Instant, got: &mut Vec<(u64, Instant)>) {
    // `"<TYPE>":"`, the data type every stream asks for.
    const MARKER: &[u8] = b"\"Mailbox\":\"";
    let Some(last_newline) = text.iter().rposition(|&b| b == b'\n') else {
        return;
    };
    for line in text[..last_newline].split(|&b| b == b'\n') {
        let Some(data) = line.strip_prefix(b"data:") else {
            continue;
        };
        let Some(at_marker) = data.windows(MARKER.len()).position(|w| w == MARKER) else {
            continue;
        };
        let digits = &data[at_marker + MARKER.len()..];
        let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
        if let Some(id) = std::str::from_utf8(&digits[..end]).ok().and_then(|d| d.parse().ok()) {
            got.push((id, at));
        }
    }
    text.drain(..=last_newline);
}

/// POSTs events `k` with `k % POSTERS == connection` (change id `k + 1`, account `k % accounts + 1`), event `k` at
/// `started + k / rate`, over one kept-alive connection. Returns each event's change id and POST time.
fn post_loop(
    addr: &str,
    connection: u64,
    total: u64,
    rate: u64,
    accounts: u32,
    started: Instant,
) -> Result<Vec<(u64, Instant)>, String> {
    let stream = StdTcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut conn = BufReader::new(stream);
    let mut sent = Vec::with_capacity(usize::try_from(total / POSTERS + 1).unwrap_or(0));
    for k in (connection..total).step_by(POSTERS as usize) {
        let due = started + Duration::from_nanos(k.saturating_mul(1_000_000_000) / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let id = k + 1;
        let account = k % u64::from(accounts) + 1;
        let body = format!(r#"{{"type":"state_change","account_id":{account},"change_id":{id},"types":["{TYPE}"]}}"#);
        sent.push((id, Instant::now()));
        let status = post(&mut conn, addr, &body)?;
        if status != 202 {
            return Err(format!("POST /v1/events answered {status}"));
        }
    }
    Ok(sent)
}

/// `GET /healthz` every [`HEALTHZ_EVERY`] on a fresh connection until `stop`: each answer's time in ms, and how many
/// checks failed (no answer or not 200).
fn healthz_loop(addr: &str, stop: &AtomicBool) -> (Vec<f64>, u64) {
    let mut times = Vec::new();
    let mut failures = 0;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        match http_get(addr, "/healthz") {
            Some((200, _)) => times.push(t0.elapsed().as_secs_f64() * 1000.0),
            _ => failures += 1,
        }
        next += HEALTHZ_EVERY;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    (times, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_delay_is_read_from_its_histogram_buckets() {
        let text = "# HELP x\n\
            agora_stream_fanout_delay_seconds_bucket{le=\"0.001\"} 50\n\
            agora_stream_fanout_delay_seconds_bucket{le=\"0.002\"} 98\n\
            agora_stream_fanout_delay_seconds_bucket{le=\"0.004\"} 100\n\
            agora_stream_fanout_delay_seconds_bucket{le=\"+Inf\"} 100\n\
            agora_other_bucket{le=\"0.001\"} 7\n";
        assert_eq!(histogram_quantile_ms(text, FANOUT_DELAY, 0.5), Some(1.0));
        assert_eq!(histogram_quantile_ms(text, FANOUT_DELAY, 0.99), Some(4.0));
        assert_eq!(histogram_quantile_ms("", FANOUT_DELAY, 0.5), None);
        let empty = "agora_stream_fanout_delay_seconds_bucket{le=\"+Inf\"} 0\n";
        assert_eq!(histogram_quantile_ms(empty, FANOUT_DELAY, 0.5), None);
    }
}
