//! Blocked-IP lookups per second on one core against a large rule set (mixed IPv4/IPv6, hits and misses).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use hdrhistogram::Histogram;
use ipnet::IpNet;

use super::report::ScenarioResult;
use crate::services::blocked_ips::{BlockRule, BlockedIpRegistry};

/// Lookups per measured chunk (latency percentiles are per-lookup averages over a chunk: one lookup is too short
/// to time on its own).
const CHUNK: usize = 1000;

/// Total lookups measured.
const LOOKUPS: usize = 10_000_000;

/// A small deterministic generator (xorshift64*), so every run builds the same rules.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Rules: 70% single IPv4, 10% IPv4 /24 or /16, 15% single IPv6, 5% IPv6 /64 or /48, all inside small ranges so
/// that random lookups hit about half the time.
fn build(rules: usize, rng: &mut Rng) -> BlockedIpRegistry {
    let mut registry = BlockedIpRegistry::new();
    for i in 0..rules {
        let r = rng.next();
        let network = match r % 100 {
            0..=69 => Some(IpNet::from(IpAddr::V4(v4(rng.next())))),
            70..=79 => IpNet::new(IpAddr::V4(v4(rng.next())), if r.is_multiple_of(2) { 24 } else { 16 }).ok(),
            80..=94 => Some(IpNet::from(IpAddr::V6(v6(rng.next())))),
            _ => IpNet::new(IpAddr::V6(v6(rng.next())), if r.is_multiple_of(2) { 64 } else { 48 }).ok(),
        };
        let network = match network.map(|n| n.trunc()) {
            Some(n) => n,
            None => continue,
        };
        registry.block(BlockRule {
            network,
            expires_at_ms: None,
            reason: None,
            origin_node: 1,
            updated_at_us: i as u64,
        });
    }
    registry
}

/// IPv4 addresses in 10.0.0.0/12: 1 M addresses, dense enough for hits.
fn v4(r: u64) -> Ipv4Addr {
    Ipv4Addr::from(0x0A00_0000 | (r as u32 & 0x000F_FFFF))
}

/// IPv6 addresses in 2001:db8::/108.
fn v6(r: u64) -> Ipv6Addr {
    Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 | u128::from(r & 0xF_FFFF))
}

/// Runs the lookup benchmark.
pub fn run(rules: usize) -> ScenarioResult {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let registry = build(rules, &mut rng);
    let probes: Vec<IpAddr> = (0..(1 << 16))
        .map(|_| {
            let r = rng.next();
            if r.is_multiple_of(5) {
                IpAddr::V6(v6(rng.next()))
            } else {
                IpAddr::V4(v4(rng.next()))
            }
        })
        .collect();
    let now_ms = agora::clock::now_ms();
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
    eprintln!(
        "bench: {} rules, hit rate {:.0}%",
        registry.len(),
        100.0 * hits as f64 / probes.len() as f64
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
    }
}
