//! `scripts/dev` end to end: the README's first command starts a real three-node cluster (nats-server with JetStream
//! and three `agora node` processes in durable mode), refuses a second concurrent run, and stops everything on Ctrl-C.
//!
//! The script runs the binary under test (`AGORA_BIN`, no release build) and the nats-server the suite uses
//! (`NATS_SERVER_BIN`, as resolved by the testkit), with its state in a scratch directory so a developer's own
//! `scripts/dev` in `.tools/dev` is not disturbed.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agora_testkit::http::request;
use agora_testkit::{nats_server_bin, scratch_dir, wait_until};

/// Start: the script installs nothing here, but three nodes start one after the other on a loaded machine.
const START_DEADLINE: Duration = Duration::from_secs(90);
/// Replication and membership (heartbeats every second).
const DEADLINE: Duration = Duration::from_secs(15);
/// Stop: the nodes bound their shutdown at 5 s + 5 s; the script's own bound is 20 s per process.
const STOP_DEADLINE: Duration = Duration::from_secs(45);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/dev")
}

/// `scripts/dev` with the test environment. It is started through python, which resets SIGINT to its default
/// disposition before exec (same pid): a test run whose parent ignores SIGINT (a background job of a non-interactive
/// shell) would pass the ignore on, and bash cannot trap a signal ignored at entry, while a terminal's Ctrl-C always
/// reaches the script with the default disposition.
fn dev_command(state_dir: &Path) -> Command {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])",
    ])
    .arg(script())
    .env("AGORA_BIN", env!("CARGO_BIN_EXE_agora"))
    .env("AGORA_DEV_NO_BUILD", "1")
    .env("NATS_SERVER_BIN", nats_server_bin())
    .env("AGORA_DEV_DIR", state_dir)
    .env("RUST_LOG", "info")
    .stdin(Stdio::null());
    cmd
}

/// The running script; on drop (a failed assertion) it gets SIGTERM, so it stops the processes it started.
struct DevScript {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl DevScript {
    fn start(state_dir: &Path) -> DevScript {
        let mut child = dev_command(state_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn scripts/dev");
        let stdout = lines(child.stdout.take().expect("stdout"));
        let stderr = lines(child.stderr.take().expect("stderr"));
        DevScript { child, stdout, stderr }
    }

    /// Reads stdout until the closing line of the banner; returns the banner.
    fn banner(&mut self) -> Vec<String> {
        let end = Instant::now() + START_DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains("Ctrl-C stops the cluster");
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!(
                    "scripts/dev printed no complete banner within {START_DEADLINE:?}\nstdout:\n{}\nstderr:\n{}",
                    seen.join("\n"),
                    self.stderr_text()
                ),
            }
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(sig)
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} failed");
    }
}

impl Drop for DevScript {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal("-TERM");
            if wait_for_exit(&mut self.child, STOP_DEADLINE).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

fn lines(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(deadline, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

/// `127.0.0.1:PORT` from the banner line of node `n` (`  node N: http://127.0.0.1:PORT/  log ...`).
fn node_addr(banner: &[String], n: u32) -> String {
    let prefix = format!("  node {n}: http://");
    let line = banner
        .iter()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no URL for node {n} in the banner:\n{}", banner.join("\n")));
    let rest = &line[prefix.len()..];
    let addr = &rest[..rest.find('/').expect("URL ends with /")];
    assert!(addr.starts_with("127.0.0.1:"), "{line}");
    addr.to_string()
}

/// `127.0.0.1:PORT` of the nats-server from the banner (`... at nats://127.0.0.1:PORT`).
fn nats_addr(banner: &[String]) -> String {
    let line = banner
        .iter()
        .find(|l| l.contains(" at nats://"))
        .expect("the banner names the NATS server");
    line.rsplit("nats://").next().expect("address").trim().to_string()
}

/// Every `agora_...` metric name in a text (a name is `agora_` followed by lowercase letters, digits and `_`; a
/// prefix ending in `_`, as in `agora_durable_*`, names a family of metrics, not one).
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("agora_")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.ends_with('_'))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn answers(addr: &str) -> bool {
    std::net::TcpStream::connect(addr).is_ok()
}

#[test]
fn scripts_dev_runs_a_three_node_durable_cluster_and_stops_it_on_ctrl_c() {
    let state_dir = scratch_dir("dev");
    let mut dev = DevScript::start(&state_dir);
    let banner = dev.banner();
    let nodes: Vec<String> = (1..=3).map(|n| node_addr(&banner, n)).collect();
    let nats = nats_addr(&banner);
    for (line, expected) in [
        ("/v1/blocked-ips", "the example blocks an IP"),
        ("/v1/blocked-ips/203.0.113.7", "the example looks it up"),
    ] {
        assert!(
            banner.iter().any(|l| l.contains(line)),
            "{expected}:\n{}",
            banner.join("\n")
        );
    }
    // The processes it started, to check afterwards that none is left.
    let children: Vec<u32> = std::fs::read_to_string(state_dir.join("children.pids"))
        .expect("children.pids")
        .lines()
        .map(|l| l.trim().parse().expect("a pid"))
        .collect();
    assert_eq!(children.len(), 4, "nats-server and three nodes: {children:?}");

    for addr in &nodes {
        let health = request(addr, "GET", "/healthz", None).expect("GET /healthz");
        assert_eq!(health.status, 200, "{addr}: {}", health.body);
    }
    // Every node sees the two others through heartbeats.
    for addr in &nodes {
        let mut last = String::new();
        let three = wait_until(DEADLINE, || {
            let Ok(r) = request(addr, "GET", "/v1/cluster/nodes", None) else {
                return false;
            };
            last = r.body.clone();
            r.status == 200 && r.json().as_array().is_some_and(|m| m.len() == 3)
        });
        assert!(three, "{addr}: /v1/cluster/nodes did not list 3 members: {last}");
    }

    // The README's demo: block on node 1, see it on node 3.
    let blocked = request(
        &nodes[0],
        "POST",
        "/v1/blocked-ips",
        Some(r#"{"network":"203.0.113.7","ttl":"1h","reason":"demo"}"#),
    )
    .expect("POST /v1/blocked-ips");
    assert_eq!(blocked.status, 201, "{}", blocked.body);
    let mut last = String::new();
    let replicated = wait_until(DEADLINE, || {
        let Ok(r) = request(&nodes[2], "GET", "/v1/blocked-ips/203.0.113.7", None) else {
            return false;
        };
        last = r.body.clone();
        r.status == 200 && r.json()["blocked"] == true
    });
    assert!(replicated, "node 3 does not see the block: {last}");

    // The alerts, the dashboard and the runbook name only metrics a durable node really exports.
    let scrape = request(&nodes[0], "GET", "/metrics", None).expect("GET /metrics");
    assert_eq!(scrape.status, 200);
    // Sample names, plus the families declared by `# TYPE` with the suffixes their samples take.
    let mut exported: Vec<String> = Vec::new();
    for line in scrape.body.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ").and_then(|t| t.split(' ').next()) {
            for suffix in ["", "_total", "_bucket", "_sum", "_count"] {
                exported.push(format!("{family}{suffix}"));
            }
        } else if let Some(name) = line.split(['{', ' ']).next().filter(|_| !line.starts_with('#')) {
            exported.push(name.to_string());
        }
    }
    // Labelled families with nothing observed yet: prometheus-client exports neither samples nor `# TYPE` for them
    // (push deliveries appear with the first delivery).
    exported.push("agora_push_deliveries_total".to_string());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/agora.json",
        "docs/operations.md",
    ] {
        let text = std::fs::read_to_string(repo.join(file)).expect(file);
        for name in metric_names(&text) {
            assert!(
                exported.contains(&name),
                "{file} uses {name}, which a durable node does not export"
            );
        }
    }

    // A second run while this one runs refuses, with a message, and leaves the first alone.
    let mut second = dev_command(&state_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a second scripts/dev");
    let status = wait_for_exit(&mut second, DEADLINE).expect("the second run exits at once");
    let mut message = String::new();
    second
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut message)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "second run: {message}");
    assert!(message.contains("already running"), "second run: {message}");
    assert_eq!(
        request(&nodes[0], "GET", "/healthz", None).map(|r| r.status).ok(),
        Some(200),
        "the first cluster still runs"
    );

    // Ctrl-C: every process stops, the script exits 0.
    dev.signal("-INT");
    let status = wait_for_exit(&mut dev.child, STOP_DEADLINE)
        .unwrap_or_else(|| panic!("scripts/dev did not exit within {STOP_DEADLINE:?} of SIGINT"));
    assert_eq!(
        status.code(),
        Some(0),
        "scripts/dev after SIGINT; stderr:\n{}",
        dev.stderr_text()
    );
    for addr in nodes.iter().chain([&nats]) {
        assert!(!answers(addr), "{addr} still answers after the script exited");
    }
    for pid in &children {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is left running"
        );
    }
    assert!(!state_dir.join("dev.pid").exists(), "the pid file is removed");
}
