//! A realistic blocked-IP workload, shared by `agora bench` (the `lookup` scenario) and the criterion bench, so that
//! both measure the same thing and neither flatters the registry.
//!
//! Rules spread over the whole IPv4 space plus a few dense ranges (abused hosting networks), and over IPv6 in a few
//! hundred provider /32s, with a mix of prefix lengths that is mostly single hosts: IPv4 85 % /32, 10 % /24, 5 % /16;
//! IPv6 80 % /128, 12 % /64, 8 % /48. Rules are deduplicated, so the count is exact. Probes are what a mail server
//! sees: mostly innocent addresses from everywhere, some from the dense ranges, some repeat offenders inside a rule,
//! and a tenth of the IPv4 ones as IPv4-mapped IPv6 from a dual-stack socket.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{canonical, BlockRule};

/// Dense IPv4 ranges (/16s): a third of the IPv4 host rules fall in them.
const DENSE_V4: [u32; 4] = [0x2d8c_0000, 0x5bc8_0000, 0xb9dc_0000, 0xc1a9_0000];

/// IPv6 provider /32s the IPv6 rules and most IPv6 probes fall in.
const V6_PREFIXES: u64 = 256;

/// The seed both benches start from, so that they measure the same rules.
pub const SEED: u64 = 0x5EED_1234_ABCD_0001;

/// A small deterministic generator (SplitMix64), so every run measures the same data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A random address inside the IPv6 provider /32 number `prefix`.
fn v6_in(prefix: u64, rng: &mut Rng) -> Ipv6Addr {
    // Provider /32s spread over 2000::/3 by a fixed mix, so they are the same in every run.
    let high = 0x2000_0000 | ((prefix.wrapping_mul(0x9e37_79b9) as u32) & 0x1fff_ffff);
    let low = (u128::from(rng.next_u64()) << 32) | u128::from(rng.next_u64() as u32);
    Ipv6Addr::from((u128::from(high) << 96) | low)
}

/// A random global unicast IPv6 address (2000::/3).
fn v6_anywhere(rng: &mut Rng) -> Ipv6Addr {
    let high = (rng.next_u64() >> 3) | 0x2000_0000_0000_0000;
    Ipv6Addr::from((u128::from(high) << 64) | u128::from(rng.next_u64()))
}

/// A random IPv4 address: from a dense range with probability `dense_percent`, else from the whole space.
fn v4(rng: &mut Rng, dense_percent: u64) -> Ipv4Addr {
    if rng.below(100) < dense_percent {
        let range = DENSE_V4[rng.below(DENSE_V4.len() as u64) as usize];
        Ipv4Addr::from(range | (rng.next_u64() as u32 & 0xffff))
    } else {
        Ipv4Addr::from(rng.next_u64() as u32)
    }
}

fn random_network(rng: &mut Rng) -> IpNet {
    if rng.below(100) < 60 {
        let len = match rng.below(100) {
            0..85 => 32,
            85..95 => 24,
            _ => 16,
        };
        let dense_percent = if len == 32 { 33 } else { 0 };
        IpNet::V4(Ipv4Net::new_assert(v4(rng, dense_percent), len))
    } else {
        let len = match rng.below(100) {
            0..80 => 128,
            80..92 => 64,
            _ => 48,
        };
        let prefix = rng.below(V6_PREFIXES);
        IpNet::V6(Ipv6Net::new_assert(v6_in(prefix, rng), len))
    }
}

/// Exactly `count` distinct rules (canonical networks); a fifth expire an hour after `now_ms`, the rest never.
pub fn rules(count: usize, now_ms: u64, rng: &mut Rng) -> Vec<BlockRule> {
    let mut seen = HashSet::with_capacity(count);
    let mut rules = Vec::with_capacity(count);
    while rules.len() < count {
        let network = canonical(random_network(rng));
        if !seen.insert(network) {
            continue;
        }
        let i = rules.len();
        rules.push(BlockRule {
            network,
            expires_at_ms: (rng.below(5) == 0).then_some(now_ms + 3_600_000),
            reason: (i % 10 == 0).then(|| "too many failed logins".to_owned()),
            origin_node: (i % 5) as u16,
            updated_at_us: i as u64,
        });
    }
    rules
}

/// A random address inside `network`.
fn inside(network: IpNet, rng: &mut Rng) -> IpAddr {
    match network {
        IpNet::V4(net) => IpAddr::V4(Ipv4Addr::from(
            u32::from(net.network()) | (rng.next_u64() as u32 & u32::from(net.hostmask())),
        )),
        IpNet::V6(net) => IpAddr::V6(Ipv6Addr::from(
            u128::from(net.network()) | (u128::from(v6_anywhere(rng)) & u128::from(net.hostmask())),
        )),
    }
}

/// `count` connecting addresses: 10 % repeat offenders (inside a random rule), 20 % from the dense IPv4 ranges,
/// 45 % IPv4 from anywhere, 25 % IPv6 (four in five inside a provider /32 of the rules).
pub fn probes(rules: &[BlockRule], count: usize, rng: &mut Rng) -> Vec<IpAddr> {
    (0..count)
        .map(|_| {
            let ip = match rng.below(100) {
                0..10 if !rules.is_empty() => inside(rules[rng.below(rules.len() as u64) as usize].network, rng),
                0..30 => IpAddr::V4(v4(rng, 100)),
                30..75 => IpAddr::V4(v4(rng, 0)),
                _ if rng.below(5) == 0 => IpAddr::V6(v6_anywhere(rng)),
                _ => IpAddr::V6(v6_in(rng.below(V6_PREFIXES), rng)),
            };
            match ip {
                IpAddr::V4(addr) if rng.below(10) == 0 => IpAddr::V6(addr.to_ipv6_mapped()),
                _ => ip,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::blocked_ips::BlockedIpRegistry;

    #[test]
    fn the_rule_count_is_exact_and_lookups_mostly_miss() {
        let mut rng = Rng::new(1);
        let rules = rules(20_000, 0, &mut rng);
        let mut registry = BlockedIpRegistry::new();
        for rule in &rules {
            assert!(registry.block(rule.clone()), "{} drawn twice", rule.network);
        }
        assert_eq!(registry.len(), 20_000);
        let probes = probes(&rules, 10_000, &mut rng);
        let hits = probes.iter().filter(|ip| registry.lookup(**ip, 0).is_some()).count();
        assert!((1_000..5_000).contains(&hits), "hit rate {hits} / 10000");
    }
}
