//! End to end through the HTTP API: `POST /v1/events` on one node to the JMAP EventSource stream of another, over
//! real `agora node` processes. What an IMAP IDLE / JMAP push client connected to node B waits for after a change on
//! node A.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::memory::NodeProcess;
use super::report::ScenarioResult;

/// Sends one `POST /v1/events` on a kept-alive connection and reads the whole response.
pub(super) fn post(stream: &mut BufReader<TcpStream>, host: &str, body: &str) -> Result<u16, String> {
    post_to(stream, host, "/v1/events", body)
}

/// Sends one POST of JSON to `path` on a kept-alive connection and reads the whole response.
pub(super) fn post_to(stream: &mut BufReader<TcpStream>, host: &str, path: &str, body: &str) -> Result<u16, String> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    stream.read_line(&mut line).map_err(|e| e.to_string())?;
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        stream.read_line(&mut line).map_err(|e| e.to_string())?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(status)
}

/// Posts `changes` state changes on node A, one at a time, and times each until node B's EventSource stream shows it.
pub fn run(nats_url: &str, changes: u64) -> Result<ScenarioResult, String> {
    let a = NodeProcess::start(nats_url, 901)?;
    let b = NodeProcess::start(nats_url, 902)?;
    let mut sse = TcpStream::connect(&b.http).map_err(|e| e.to_string())?;
    sse.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        sse,
        "GET /v1/eventsource?accounts=7&types=Email HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel::<(u64, Instant)>();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(sse);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            // data: {"@type":"StateChange","changed":{"7":{"Email":"<n>"}}}
            if let Some(state) = line.split("\"Email\":\"").nth(1).and_then(|r| r.split('"').next()) {
                if let Ok(n) = state.parse() {
                    if tx.send((n, Instant::now())).is_err() {
                        break;
                    }
                }
            }
            line.clear();
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut conn = BufReader::new(TcpStream::connect(&a.http).map_err(|e| e.to_string())?);
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("constant, valid bounds");
    let started = Instant::now();
    for n in 1..=changes {
        let body = format!(r#"{{"type":"state_change","account_id":7,"change_id":{n},"types":["Email"]}}"#);
        sent.insert(n, Instant::now());
        let status = post(&mut conn, &a.http, &body)?;
        if status != 202 {
            return Err(format!("POST /v1/events answered {status}"));
        }
        // One change in flight at a time: wait for it on node B.
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok((got, at)) => {
                if let Some(t0) = sent.remove(&got) {
                    let us = u64::try_from(at.duration_since(t0).as_micros()).unwrap_or(u64::MAX);
                    let _ = histogram.record(us.max(1));
                }
            }
            Err(_) => break,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let q = |p: f64| histogram.value_at_quantile(p) as f64;
    Ok(ScenarioResult {
        scenario: "post_to_eventsource".into(),
        mode: "node".into(),
        events: changes,
        events_per_sec: histogram.len() as f64 / elapsed,
        p50_us: q(0.5),
        p99_us: q(0.99),
        p999_us: q(0.999),
        lost: changes.saturating_sub(histogram.len()),
        rss_kib: None,
        details: serde_json::Map::new(),
    })
}
