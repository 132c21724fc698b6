//! Blocked-IP lookups per second on one core against a large, realistic rule set. The registry and its workload
//! (rules over the whole address space, mostly misses) are the node's own, built by the binary's
//! [`Hooks::lookup`](crate::Hooks::lookup); this module times them, so the measurement is the same in every build.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::report::ScenarioResult;

/// Lookups per measured chunk (latency percentiles are per-lookup averages over a chunk: one lookup is too short
/// to time on its own).
const CHUNK: usize = 1000;

/// Total lookups measured.
const LOOKUPS: usize = 10_000_000;

/// Distinct probe addresses to generate (a power of two, cycled through): far more than fit in cache with their
/// table entries.
pub const PROBES: usize = 1 << 20;

/// Times 10,000,000 (`LOOKUPS`) calls of `is_blocked` over `probes` (cycled through; its length must be a power of
/// two, e.g. [`PROBES`]) against a registry holding `rules` rules. Generic, so the node's lookup is inlined into the
/// loop as it is on the node's hot path, with no dynamic call in between.
pub fn measure<F: Fn(IpAddr) -> bool>(rules: usize, probes: &[IpAddr], is_blocked: F) -> ScenarioResult {
    assert!(
        probes.len().is_power_of_two(),
        "the probe count is a power of two (cycled through with a mask)"
    );
    let hits = probes.iter().filter(|ip| is_blocked(**ip)).count();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("constant, valid bounds");
    let mut found = 0usize;
    let started = Instant::now();
    let mut done = 0;
    while done < LOOKUPS {
        let chunk_start = Instant::now();
        for i in 0..CHUNK {
            let ip = probes[(done + i) & (probes.len() - 1)];
            found += usize::from(black_box(is_blocked(black_box(ip))));
        }
        let ns = chunk_start.elapsed().as_nanos() / CHUNK as u128;
        let _ = histogram.record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
        done += CHUNK;
    }
    let elapsed = started.elapsed().as_secs_f64();
    black_box(found);
    let mut details = serde_json::Map::new();
    details.insert("rules".into(), serde_json::json!(rules));
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
