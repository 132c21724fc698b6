//! Resume storm: three durable nodes, many JMAP EventSource clients on the first one while state changes arrive
//! on the second; the first node is killed (-9) and every client reconnects at once to a surviving node with its
//! `Last-Event-ID`, as browsers behind a load balancer do. Measures how long until every client streams again (each
//! client's reconnect time, its p50/p99, the last one), what the survivors' memory grows to, and whether any client
//! lost or repeated a change across the move.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::client::{on_own_runtime, open_stream_with, read_body, OpenStream};
use super::eventsource::post;
use super::memory::NodeProcess;
use super::report::ScenarioResult;

/// Streams being opened at once (so as not to overflow the node's accept backlog).
const OPENING: usize = 256;

/// Descriptors the nodes and the bench need besides the streams.
const FD_SPARE: u64 = 512;

/// The data type every stream asks for and every change carries.
const TYPE: &str = "Mailbox";

/// How long clients get to stream again after the kill.
const RESUME_DEADLINE: Duration = Duration::from_secs(60);

/// How long changes keep coming after every client streams again (so each one's resumed stream carries some).
const AFTER_RESUME: Duration = Duration::from_secs(2);

/// How long after the last POST a change may still arrive before it counts as lost.
const GRACE: Duration = Duration::from_secs(3);

/// The scenario's size.
#[derive(Debug, Clone, Copy)]
pub struct ResumeOptions {
    /// EventSource clients on the node that dies.
    pub clients: usize,
    /// Accounts the clients and changes are spread over.
    pub accounts: u32,
    /// State changes POSTed per second throughout.
    pub rate: u64,
}

/// What one client saw.
#[derive(Default)]
struct ClientLog {
    /// Change ids received, in order.
    got: Vec<u64>,
    /// The last `id:` received.
    last_id: Option<String>,
    /// When its stream on the dead node ended, and when its new stream answered 200.
    lost_at: Option<Instant>,
    resumed_at: Option<Instant>,
    /// Why it could not resume, if it could not.
    error: Option<String>,
}

/// Runs the scenario with nodes started from `exe` on `nats_url`, which must offer JetStream.
pub async fn run(exe: &Path, nats_url: &str, options: &ResumeOptions) -> Result<ScenarioResult, String> {
    let ResumeOptions {
        clients,
        accounts,
        rate,
    } = *options;
    if clients == 0 || accounts == 0 || rate == 0 {
        return Err("resume: --resume-clients, --resume-accounts and --resume-rate must be > 0".into());
    }
    let limit = rlimit::increase_nofile_limit(u64::MAX).map_err(|e| format!("cannot raise the fd limit: {e}"))?;
    let needed = clients as u64 + FD_SPARE;
    if limit < needed {
        return Err(format!(
            "resume: {clients} clients need about {needed} file descriptors, the limit is {limit} (raise ulimit -n or \
             lower --resume-clients)"
        ));
    }
    // Memory storage: the server lives for this run only; node ids of their own, so no earlier consumer is resumed.
    let extra = format!(
        "jetstream.enable = true\njetstream.storage = \"memory\"\njetstream.stream = \"agora-bench-resume-{}\"\n\
         [http]\nmax-connections = {needed}\nmax-streams = {needed}\n",
        std::process::id()
    );
    let mut dying = NodeProcess::start_with(exe, nats_url, 961, &extra)?;
    let survivors = [
        NodeProcess::start_with(exe, nats_url, 962, &extra)?,
        NodeProcess::start_with(exe, nats_url, 963, &extra)?,
    ];
    let survivor_addrs = [survivors[0].http.clone(), survivors[1].http.clone()];

    // Changes on a survivor from now to the end, paced by the clock.
    let stop_posting = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(AtomicU64::new(0));
    let poster = {
        let (addr, stop, posted) = (survivor_addrs[0].clone(), stop_posting.clone(), posted.clone());
        tokio::task::spawn_blocking(move || post_loop(&addr, rate, accounts, &stop, &posted))
    };

    // Every client opens its stream on the node that will die.
    let dying_addr = dying.http.clone();
    let opened: Vec<Result<(usize, OpenStream), String>> = futures::stream::iter(0..clients)
        .map(|i| {
            let addr = dying_addr.clone();
            async move {
                open_stream_with(&addr, &stream_path(account_of(i, accounts)), "")
                    .await
                    .map(|s| (i, s))
            }
        })
        .buffer_unordered(OPENING)
        .collect()
        .await;
    let logs: Vec<Arc<Mutex<ClientLog>>> = (0..clients).map(|_| Arc::default()).collect();
    let cancel = CancellationToken::new();
    let mut handed = Vec::with_capacity(clients);
    for opened in opened {
        let (i, open) = opened?;
        let stream = open.stream.into_std().map_err(|e| e.to_string())?;
        handed.push((i, stream, open.body_start, open.chunked));
    }
    let readers = {
        let (cancel, logs) = (cancel.clone(), logs.clone());
        let survivors = survivor_addrs.clone();
        std::thread::Builder::new()
            .name("bench-resume-clients".into())
            .spawn(move || run_clients(handed, logs, survivors, accounts, cancel))
            .map_err(|e| format!("cannot start the clients' thread: {e}"))?
    };

    // Every client has an id before the node dies (each account got a change).
    let deadline = Instant::now() + Duration::from_secs(30);
    while logs.iter().any(|l| lock(l).last_id.is_none()) {
        if Instant::now() > deadline {
            return Err("resume: not every client received a change within 30 s of the start".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed_at = Instant::now();
    dying.kill();
    let deadline = killed_at + RESUME_DEADLINE;
    while logs.iter().any(|l| {
        let l = lock(l);
        l.resumed_at.is_none() && l.error.is_none()
    }) && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_resumed_at = Instant::now();
    tokio::time::sleep(AFTER_RESUME).await;
    stop_posting.store(true, Ordering::Relaxed);
    let sent = poster.await.map_err(|e| e.to_string())??;
    tokio::time::sleep(GRACE).await;
    let peak_rss_kib: Vec<u64> = survivors.iter().map(NodeProcess::peak_rss_kib).collect();
    cancel.cancel();
    tokio::task::spawn_blocking(move || readers.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "the clients' thread panicked".to_string())??;

    // Each client wants every change of its account, once, in order.
    let mut per_account: HashMap<u32, Vec<u64>> = HashMap::new();
    for id in 1..=sent {
        per_account.entry(account_of_change(id, accounts)).or_default().push(id);
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("constant, valid bounds");
    let (mut lost, mut duplicates, mut out_of_order, mut never_resumed) = (0u64, 0u64, 0u64, 0u64);
    let mut first_error = None;
    for (i, log) in logs.iter().enumerate() {
        let log = lock(log);
        match log.resumed_at {
            Some(at) => {
                let us = u64::try_from(at.saturating_duration_since(killed_at).as_micros()).unwrap_or(u64::MAX);
                let _ = histogram.record(us.max(1));
            }
            None => {
                never_resumed += 1;
                first_error = first_error.or(log.error.clone());
            }
        }
        let wanted = per_account.get(&account_of(i, accounts)).map_or(&[][..], Vec::as_slice);
        let mut seen = std::collections::HashSet::with_capacity(log.got.len());
        for id in &log.got {
            duplicates += u64::from(!seen.insert(*id));
        }
        // Changes posted before the client's stream opened are not its to miss: count from its first one.
        let first = log.got.first().copied().unwrap_or(u64::MAX);
        lost += wanted.iter().filter(|id| **id >= first && !seen.contains(id)).count() as u64;
        out_of_order += log.got.windows(2).filter(|w| w[0] >= w[1]).count() as u64;
    }
    let last_resume_ms = histogram.max() as f64 / 1000.0;
    let mut details = serde_json::Map::new();
    details.insert("clients".into(), json!(clients));
    details.insert("accounts".into(), json!(accounts));
    details.insert("rate".into(), json!(rate));
    details.insert("all_streaming_ms".into(), json!(last_resume_ms));
    details.insert(
        "waited_ms".into(),
        json!(all_resumed_at.duration_since(killed_at).as_millis() as u64),
    );
    details.insert("never_resumed".into(), json!(never_resumed));
    details.insert("duplicates".into(), json!(duplicates));
    details.insert("out_of_order".into(), json!(out_of_order));
    details.insert("survivor_peak_rss_kib".into(), json!(peak_rss_kib));
    if let Some(e) = first_error {
        details.insert("first_error".into(), json!(e));
    }
    // The row's rate is reconnections per second, from the kill to the last client streaming again.
    Ok(ScenarioResult::of_node(
        "resume_storm",
        usize::try_from(sent).unwrap_or(usize::MAX),
        clients,
        last_resume_ms / 1000.0,
        &histogram,
        lost,
        peak_rss_kib.iter().copied().max().unwrap_or(0),
        details,
    ))
}

fn lock(log: &Mutex<ClientLog>) -> std::sync::MutexGuard<'_, ClientLog> {
    log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Client `i`'s account (1-based).
fn account_of(i: usize, accounts: u32) -> u32 {
    (i as u64 % u64::from(accounts)) as u32 + 1
}

/// Change `id`'s account (changes 1, 2, ... go to accounts 1, 2, ... in turn).
fn account_of_change(id: u64, accounts: u32) -> u32 {
    ((id - 1) % u64::from(accounts)) as u32 + 1
}

fn stream_path(account: u32) -> String {
    format!("/v1/eventsource?accounts={account}&types={TYPE}&ping=0")
}

/// Runs every client on a one-thread runtime of its own (as the fan-out scenario's readers do).
fn run_clients(
    streams: Vec<(usize, std::net::TcpStream, Vec<u8>, bool)>,
    logs: Vec<Arc<Mutex<ClientLog>>>,
    survivors: [String; 2],
    accounts: u32,
    cancel: CancellationToken,
) -> Result<(), String> {
    on_own_runtime(async move {
        let mut tasks = Vec::with_capacity(streams.len());
        for (i, stream, body_start, chunked) in streams {
            let stream = tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())?;
            let open = OpenStream {
                stream,
                body_start,
                chunked,
            };
            let survivor = survivors[i % 2].clone();
            tasks.push(tokio::spawn(client(
                open,
                account_of(i, accounts),
                survivor,
                logs[i].clone(),
                cancel.clone(),
            )));
        }
        for task in tasks {
            task.await.map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// One client: reads its stream until it ends, then reconnects to `survivor` with its last id (retrying while the
/// survivor refuses), and reads on until `cancel`.
async fn client(
    first: OpenStream,
    account: u32,
    survivor: String,
    log: Arc<Mutex<ClientLog>>,
    cancel: CancellationToken,
) {
    read(first, &log, &cancel).await;
    if cancel.is_cancelled() {
        return;
    }
    lock(&log).lost_at = Some(Instant::now());
    let mut attempts = 0u32;
    let resumed = loop {
        let last = lock(&log).last_id.clone().unwrap_or_default();
        let header = format!("Last-Event-ID: {last}\r\n");
        match open_stream_with(&survivor, &stream_path(account), &header).await {
            Ok(open) => break open,
            Err(e) => {
                attempts += 1;
                if attempts >= 50 || cancel.is_cancelled() {
                    lock(&log).error = Some(e);
                    return;
                }
                // Refused while thousands reconnect at once (backlog, max-connections): back off a little.
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempts.min(10)))).await;
            }
        }
    };
    lock(&log).resumed_at = Some(Instant::now());
    read(resumed, &log, &cancel).await;
}

/// Reads one stream until it ends or `cancel`, noting change ids and the last `id:`.
async fn read(open: OpenStream, log: &Mutex<ClientLog>, cancel: &CancellationToken) {
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    read_body(open, cancelled, |text| take_frames(text, &mut lock(log))).await;
}

/// Takes the complete lines out of `text`: `id:` lines and the change id of `data:` lines
/// (`{"@type":"StateChange","changed":{"7":{"Mailbox":"<change id>"}}}`).
fn take_frames(text: &mut Vec<u8>, log: &mut ClientLog) {
    const MARKER: &[u8] = b"\"Mailbox\":\"";
    let Some(last_newline) = text.iter().rposition(|&b| b == b'\n') else {
        return;
    };
    for line in text[..last_newline].split(|&b| b == b'\n') {
        if let Some(id) = line.strip_prefix(b"id:") {
            log.last_id = Some(String::from_utf8_lossy(id).trim().to_string());
            continue;
        }
        let Some(data) = line.strip_prefix(b"data:") else {
            continue;
        };
        let Some(at) = data.windows(MARKER.len()).position(|w| w == MARKER) else {
            continue;
        };
        let digits = &data[at + MARKER.len()..];
        let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
        if let Some(id) = std::str::from_utf8(&digits[..end]).ok().and_then(|d| d.parse().ok()) {
            log.got.push(id);
        }
    }
    text.drain(..=last_newline);
}

/// POSTs change 1, 2, ... (account `(id - 1) % accounts + 1`) at `rate` per second over one kept-alive connection
/// until `stop`; returns how many were accepted (all of them, or an error).
fn post_loop(addr: &str, rate: u64, accounts: u32, stop: &AtomicBool, posted: &AtomicU64) -> Result<u64, String> {
    let stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut conn = std::io::BufReader::new(stream);
    let started = Instant::now();
    let mut id = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = started + Duration::from_nanos(id.saturating_mul(1_000_000_000) / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        id += 1;
        let account = account_of_change(id, accounts);
        let body = format!(r#"{{"type":"state_change","account_id":{account},"change_id":{id},"types":["{TYPE}"]}}"#);
        let status = post(&mut conn, addr, &body)?;
        if status != 202 {
            return Err(format!("POST /v1/events answered {status}"));
        }
        posted.store(id, Ordering::Relaxed);
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_give_ids_and_change_ids_across_reads() {
        let mut log = ClientLog::default();
        let mut text =
            b"id: 1a.5.0\nevent: state\ndata: {\"@type\":\"StateChange\",\"changed\":{\"3\":{\"Mailbox\":\"4".to_vec();
        take_frames(&mut text, &mut log);
        assert_eq!(log.last_id.as_deref(), Some("1a.5.0"));
        assert!(log.got.is_empty(), "the data line is not complete yet");
        text.extend_from_slice(b"2\"}}}\n\n");
        take_frames(&mut text, &mut log);
        assert_eq!(log.got, [42]);
        assert_eq!(account_of_change(1, 100), 1);
        assert_eq!(account_of_change(101, 100), 1);
        assert_eq!(account_of(99, 100), 100);
    }
}
