//! Benchmarks of the blocked-IP registry: `lookup` is called on every accepted connection, so it must stay far above
//! 10 M lookups/s on one core with 100,000 rules.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agora_node::services::blocked_ips::{BlockRule, BlockedIpRegistry};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

const RULES: usize = 100_000;
const LOOKUPS: usize = 1_000_000;
const NOW_MS: u64 = 1_700_000_000_000;

/// SplitMix64: deterministic, so every run measures the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A global unicast-looking IPv6 address (2000::/3).
fn random_v6(rng: &mut Rng) -> u128 {
    let high = (rng.next() >> 3) | 0x2000_0000_0000_0000;
    (u128::from(high) << 64) | u128::from(rng.next())
}

/// Realistic mix: 60% IPv4 (90% /32, 7% /24, 3% /16), 40% IPv6 (85% /128, 10% /64, 5% /48); 20% of the rules expire
/// later, 5% are already expired.
fn rules() -> Vec<BlockRule> {
    let mut rng = Rng(42);
    (0..RULES)
        .map(|i| {
            let network = if rng.below(100) < 60 {
                let len = match rng.below(100) {
                    0..90 => 32,
                    90..97 => 24,
                    _ => 16,
                };
                IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(rng.next() as u32), len).trunc())
            } else {
                let len = match rng.below(100) {
                    0..85 => 128,
                    85..95 => 64,
                    _ => 48,
                };
                IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from(random_v6(&mut rng)), len).trunc())
            };
            let expires_at_ms = match rng.below(100) {
                0..20 => Some(NOW_MS + 3_600_000),
                20..25 => Some(NOW_MS - 1),
                _ => None,
            };
            BlockRule {
                network,
                expires_at_ms,
                reason: (i % 10 == 0).then(|| "too many failed logins".to_owned()),
                origin_node: (i % 5) as u16,
                updated_at_us: i as u64,
            }
        })
        .collect()
}

/// Half addresses inside a random rule (hits, except for the expired ones), half random addresses (almost all misses);
/// 10% of the IPv4 addresses come as IPv4-mapped IPv6, as from a dual-stack socket.
fn addresses(rules: &[BlockRule]) -> Vec<IpAddr> {
    let mut rng = Rng(7);
    (0..LOOKUPS)
        .map(|_| {
            let ip = if rng.below(2) == 0 {
                let rule = &rules[rng.below(rules.len() as u64) as usize];
                match rule.network {
                    IpNet::V4(net) => IpAddr::V4(Ipv4Addr::from(
                        u32::from(net.network()) | (rng.next() as u32 & u32::from(net.hostmask())),
                    )),
                    IpNet::V6(net) => IpAddr::V6(Ipv6Addr::from(
                        u128::from(net.network()) | (random_v6(&mut rng) & u128::from(net.hostmask())),
                    )),
                }
            } else if rng.below(100) < 60 {
                IpAddr::V4(Ipv4Addr::from(rng.next() as u32))
            } else {
                IpAddr::V6(Ipv6Addr::from(random_v6(&mut rng)))
            };
            match ip {
                IpAddr::V4(v4) if rng.below(10) == 0 => IpAddr::V6(v4.to_ipv6_mapped()),
                _ => ip,
            }
        })
        .collect()
}

fn build(rules: Vec<BlockRule>) -> BlockedIpRegistry {
    let mut registry = BlockedIpRegistry::new();
    for rule in rules {
        registry.block(rule);
    }
    registry
}

fn bench(c: &mut Criterion) {
    let rules = rules();
    let registry = build(rules.clone());
    let ips = addresses(&rules);
    let hits = ips.iter().filter(|ip| registry.lookup(**ip, NOW_MS).is_some()).count();
    eprintln!(
        "{} rules, {} lookups, {:.1}% hits",
        registry.len(),
        ips.len(),
        hits as f64 * 100.0 / ips.len() as f64
    );

    let mut group = c.benchmark_group("blocked_ips");
    group.throughput(Throughput::Elements(LOOKUPS as u64));
    group.bench_function("lookup_100k_rules", |b| {
        b.iter(|| {
            let registry = black_box(&registry);
            let mut hits = 0usize;
            for ip in &ips {
                hits += usize::from(registry.lookup(black_box(*ip), NOW_MS).is_some());
            }
            hits
        })
    });
    group.throughput(Throughput::Elements(RULES as u64));
    group.bench_function("insert_100k_rules", |b| {
        b.iter_batched(|| rules.clone(), build, BatchSize::LargeInput)
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
