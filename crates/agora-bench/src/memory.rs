//! Resident memory of a real `agora node` process: idle, then holding many blocked-IP rules and open EventSource
//! streams. The node is this same binary, started as a child process against the benchmark's NATS server.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora::config::{Config, NatsConfig};
use agora::{Coordinator, Event, NodeId, Role, StartOptions};
use ipnet::IpNet;

use super::client::open_stream;
use super::report::ScenarioResult;

/// A node under measurement, killed on drop.
pub struct NodeProcess {
    child: Child,
    /// Its HTTP address.
    pub http: String,
    /// Where its warnings and errors go.
    log: std::path::PathBuf,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeProcess {
    /// Starts `agora node` (this binary) with node id `node_id` against `nats_url` and waits until it is healthy.
    pub fn start(nats_url: &str, node_id: u16) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        Self::start_with(&exe, nats_url, node_id, "")
    }

    /// Starts `exe node` (an `agora` binary) with node id `node_id` against `nats_url`, `extra_config` appended to
    /// its configuration file, and waits until it is healthy.
    pub fn start_with(exe: &Path, nats_url: &str, node_id: u16, extra_config: &str) -> Result<Self, String> {
        let node = Self::spawn_with(exe, nats_url, node_id, extra_config)?;
        node.wait_healthy(Duration::from_secs(20))?;
        Ok(node)
    }

    /// Waits until the node answers `/healthz` with 200.
    pub fn wait_healthy(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        while self.get("/healthz").is_none_or(|(status, _)| status != 200) {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "the node did not become healthy; its last log lines:\n{}",
                    tail.join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts `exe node` like [`Self::start_with`] without waiting for it to become healthy.
    pub fn spawn_with(exe: &Path, nats_url: &str, node_id: u16, extra_config: &str) -> Result<Self, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = std::env::temp_dir().join(format!("agora-bench-{}-{node_id}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "[cluster]\ncoordinator = \"nats\"\n[store.\"nats\"]\ntype = \"nats\"\naddress = \"{nats_url}\"\n\
                 {extra_config}"
            ),
        )
        .map_err(|e| e.to_string())?;
        let http = format!("127.0.0.1:{port}");
        // The node's warnings and errors go to a file beside its configuration: a node that does not start says why.
        let log = dir.join("node.log");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .args(["node", "--node-id", &node_id.to_string(), "--http", &http, "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start the node: {e}"))?;
        Ok(NodeProcess { child, http, log })
    }

    /// Kills the process (SIGKILL) and reaps it: a node that dies without leaving.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `GET path` on a fresh connection: status and the whole response text.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.http, path)
    }

    /// Its resident set size now, KiB (0 if unreadable).
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Its peak resident set size so far, KiB (0 if unreadable).
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    /// CPU time it has used so far (user + system), seconds (0 if unreadable).
    pub fn cpu_seconds(&self) -> f64 {
        // Fields 14 and 15 of /proc/<pid>/stat, counted after the parenthesised command name (which may hold spaces),
        // in clock ticks of USER_HZ, which Linux fixes at 100 for /proc.
        const USER_HZ: f64 = 100.0;
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) else {
            return 0.0;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return 0.0;
        };
        // `rest` starts at field 3 (state): utime is field 14, stime field 15.
        let ticks: u64 = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse::<u64>().ok())
            .sum();
        ticks as f64 / USER_HZ
    }
}

/// `GET path` on a fresh connection to `addr`: status and the whole response text.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

/// A result line for a memory scenario.
fn result(scenario: &str, events: u64, rss_kib: u64) -> ScenarioResult {
    ScenarioResult {
        scenario: scenario.into(),
        mode: "node".into(),
        events,
        events_per_sec: 0.0,
        p50_us: 0.0,
        p99_us: 0.0,
        p999_us: 0.0,
        lost: 0,
        rss_kib: Some(rss_kib),
        details: serde_json::Map::new(),
    }
}

/// Measures an idle node, then one holding `rules` blocked-IP rules and `streams` EventSource streams.
pub async fn run(nats_url: &str, rules: usize, streams: usize) -> Result<Vec<ScenarioResult>, String> {
    let node = NodeProcess::start(nats_url, 999)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = node.rss_kib();

    let mut nats = NatsConfig::with_addresses(vec![nats_url.to_string()]);
    nats.client_capacity = 65_536;
    let config = Config::nats(nats);
    let options = StartOptions {
        role: Role::Tool,
        node_id: NodeId::new(998),
        ..StartOptions::default()
    };
    let tool = Coordinator::start(&config, options).await.map_err(|e| e.to_string())?;
    for i in 0..rules {
        let network = if i % 5 == 0 {
            IpNet::from(std::net::IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | i as u128)))
        } else {
            IpNet::from(std::net::IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | i as u32)))
        };
        let event = Event::BlockedIp {
            network,
            expires_at_ms: None,
            reason: Some("bench".into()),
        };
        tool.publish(event).await.map_err(|e| e.to_string())?;
    }
    tool.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let want = format!("\"blocked_ip_rules\":{rules}");
    while node.get("/v1/node").is_none_or(|(_, body)| !body.contains(&want)) {
        if Instant::now() > deadline {
            return Err(format!("the node did not reach {rules} rules"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut open = Vec::with_capacity(streams);
    for _ in 0..streams {
        open.push(open_stream(&node.http, "/v1/eventsource?accounts=1").await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = node.rss_kib();
    drop(open);
    Ok(vec![
        result("memory_idle", 0, idle),
        result(&format!("memory_{rules}_rules_{streams}_streams"), rules as u64, loaded),
    ])
}
