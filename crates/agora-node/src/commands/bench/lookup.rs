//! Blocked-IP lookups per second on one core against a large, realistic rule set (see
//! [`crate::services::blocked_ips::workload`]: rules over the whole address space, mostly misses).

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::report::ScenarioResult;
use crate::services::blocked_ips::workload::{self, Rng};
use crate::services::blocked_ips::BlockedIpRegistry;

/// Lookups per measured chunk (latency percentiles are per-lookup averages over a chunk: one lookup is too short
/// to time on its own).
const CHUNK: usize = 1000;

/// Total lookups measured.
const LOOKUPS: usize = 10_000_000;

/// Distinct probe addresses (a power of two, cycled through): far more than fit in cache with their table entries.
const PROBES: usize = 1 << 20;

/// Runs the lookup benchmark against exactly `rules` distinct rules.
pub fn run(rules: usize) -> ScenarioResult {
    let now_ms = agora::clock::now_ms();
    let mut rng = Rng::new(workload::SEED);
    let rules = workload::rules(rules, now_ms, &mut rng);
    let probes: Vec<IpAddr> = workload::probes(&rules, PROBES, &mut rng);
    let mut registry = BlockedIpRegistry::new();
    for rule in &rules {
        registry.block(rule.clone());
    }
    let hits = probes
        .iter()
        .filter(|ip| registry.lookup(**ip, now_ms).is_some())
        .count();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("constant, valid bounds");
    let mut found = 0usize;
    let started = Instant::now();
    let mut done = 0;
    while done < LOOKUPS {
        let chunk_start = Instant::now();
        for i in 0..CHUNK {
            let ip = probes[(done + i) & (probes.len() - 1)];
            found += usize::from(black_box(registry.lookup(black_box(ip), now_ms)).is_some());
        }
        let ns = chunk_start.elapsed().as_nanos() / CHUNK as u128;
        let _ = histogram.record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
        done += CHUNK;
    }
    let elapsed = started.elapsed().as_secs_f64();
    black_box(found);
    let mut details = serde_json::Map::new();
    details.insert("rules".into(), serde_json::json!(registry.len()));
    let hit_rate = hits as f64 / probes.len() as f64;
    details.insert(
        "hit_rate".into(),
        serde_json::json!((hit_rate * 1000.0).round() / 1000.0),
    );
    let q = |p: f64| histogram.value_at_quantile(p) as f64 / 1000.0;
    ScenarioResult {
        scenario: "blocked_ip_lookup".into(),
        mode: "registry".into(),
        events: LOOKUPS as u64,
        events_per_sec: LOOKUPS as f64 / elapsed,
        p50_us: q(0.5),
        p99_us: q(0.99),
        p999_us: q(0.999),
        lost: 0,
        rss_kib: None,
        details,
    }
}
