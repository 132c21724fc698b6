//! State transfer: a real `agora node` holding many blocked-IP rules and push subscriptions, and a second node that
//! joins and must get all of it before it reports healthy. Measures the time from the joiner's start to healthy, the
//! pages it took, and both processes' peak memory.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use agora::config::{Config, NatsConfig};
use agora::event::PushSubscription;
use agora::{Coordinator, DataTypes, Event, NodeId, Role, StartOptions};
use ipnet::IpNet;
use serde_json::json;

use super::memory::NodeProcess;
use super::report::ScenarioResult;

/// Events published between checks that the serving node has applied them (so its service task never lags).
const CHUNK: usize = 50_000;

/// Push subscriptions per account (the default per-account cap).
const PER_ACCOUNT: usize = 100;

/// Runs the scenario with `rules` rules and `subscriptions` push subscriptions, nodes started from `exe`.
pub async fn run(exe: &Path, nats_url: &str, rules: usize, subscriptions: usize) -> Result<ScenarioResult, String> {
    let server = NodeProcess::start_with(exe, nats_url, 901, "")?;
    let tool = tool(nats_url).await?;
    let load_started = Instant::now();
    for chunk_start in (0..rules).step_by(CHUNK) {
        for i in chunk_start..(chunk_start + CHUNK).min(rules) {
            tool.publish(rule(i)).await.map_err(|e| e.to_string())?;
        }
        wait_for(&server, "blocked_ip_rules", (chunk_start + CHUNK).min(rules)).await?;
    }
    for chunk_start in (0..subscriptions).step_by(CHUNK) {
        for i in chunk_start..(chunk_start + CHUNK).min(subscriptions) {
            tool.publish(subscription(i)).await.map_err(|e| e.to_string())?;
        }
        wait_for(&server, "push_subscriptions", (chunk_start + CHUNK).min(subscriptions)).await?;
    }
    tool.shutdown().await;
    let load_seconds = load_started.elapsed().as_secs_f64();
    let server_rss_before = server.peak_rss_kib();

    let started = Instant::now();
    let joiner = NodeProcess::spawn_with(exe, nats_url, 902, "")?;
    let deadline = Duration::from_secs(600);
    tokio::task::block_in_place(|| joiner.wait_healthy(deadline))?;
    let seconds = started.elapsed().as_secs_f64();
    let joined = joiner
        .get("/v1/node")
        .and_then(|(_, body)| body.split_once("\r\n\r\n").map(|(_, b)| b.to_string()))
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
        .ok_or("the joiner's /v1/node is unreadable")?;
    let got_rules = joined["blocked_ip_rules"].as_u64().unwrap_or(0);
    let got_subscriptions = joined["push_subscriptions"].as_u64().unwrap_or(0);
    let lost = (rules as u64).saturating_sub(got_rules) + (subscriptions as u64).saturating_sub(got_subscriptions);
    let pages = metric(&joiner, "agora_snapshot_pages_total");
    let entries = (rules + subscriptions) as u64;
    let mut details = serde_json::Map::new();
    for (key, value) in [
        ("rules", json!(rules)),
        ("push_subscriptions", json!(subscriptions)),
        ("seconds", json!((seconds * 1000.0).round() / 1000.0)),
        ("pages", json!(pages)),
        ("load_seconds", json!((load_seconds * 10.0).round() / 10.0)),
        ("joiner_peak_rss_mib", json!(joiner.peak_rss_kib() / 1024)),
        ("server_peak_rss_mib_before", json!(server_rss_before / 1024)),
        ("server_peak_rss_mib_after", json!(server.peak_rss_kib() / 1024)),
    ] {
        details.insert(key.into(), value);
    }
    Ok(ScenarioResult {
        scenario: "transfer".into(),
        mode: "node".into(),
        events: entries,
        events_per_sec: entries as f64 / seconds,
        p50_us: 0.0,
        p99_us: 0.0,
        p999_us: 0.0,
        lost,
        rss_kib: Some(joiner.peak_rss_kib()),
        details,
    })
}

/// A tool on the bus that publishes the state (fast: the events go out in large batches).
async fn tool(nats_url: &str) -> Result<Coordinator, String> {
    let mut nats = NatsConfig::with_addresses(vec![nats_url.to_string()]);
    nats.client_capacity = 65_536;
    let options = StartOptions {
        role: Role::Tool,
        node_id: NodeId::new(900),
        ..StartOptions::default()
    };
    Coordinator::start(&Config::nats(nats), options)
        .await
        .map_err(|e| e.to_string())
}

/// Rule `i`: four in five IPv4 /32s and /24s, one in five IPv6 /64s, each with a short reason.
fn rule(i: usize) -> Event {
    let network = match i % 5 {
        0 => IpNet::new(
            IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | (i as u128) << 64)),
            64,
        ),
        1 => IpNet::new(IpAddr::V4(Ipv4Addr::from(0x0B00_0000 + ((i as u32) << 8))), 24),
        _ => IpNet::new(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | i as u32)), 32),
    };
    Event::BlockedIp {
        network: network.unwrap_or_else(|_| IpNet::from(IpAddr::V4(Ipv4Addr::from(i as u32)))),
        expires_at_ms: None,
        reason: Some("authentication failures".into()),
    }
}

/// Subscription `i`: [`PER_ACCOUNT`] to an account, with a JMAP-style URL carrying a secret.
fn subscription(i: usize) -> Event {
    Event::PushSubscriptionSet(Box::new(PushSubscription::webhook(
        format!("bench-{i:08}"),
        (i / PER_ACCOUNT) as u32 + 1,
        format!("https://push.example.com/jmap/{i}?token=0123456789abcdef{i}"),
        DataTypes::from_names(["Email", "Mailbox"]).unwrap_or(DataTypes::EMPTY),
    )))
}

/// Waits until `/v1/node` reports `field` at least `count`.
async fn wait_for(node: &NodeProcess, field: &str, count: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let want = count as u64;
    loop {
        let current = node
            .get("/v1/node")
            .and_then(|(_, text)| text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()))
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|v| v[field].as_u64())
            .unwrap_or(0);
        if current >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the serving node reached {current} of {want} {field}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One counter from the node's `/metrics` (0 if absent).
fn metric(node: &NodeProcess, name: &str) -> u64 {
    node.get("/metrics")
        .and_then(|(_, text)| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}
