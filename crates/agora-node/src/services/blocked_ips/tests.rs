//! The blocked-IP registry's behaviour: lookups against a linear-scan model, last-writer-wins convergence in any
//! order, expiry, purge and snapshots.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::services::lww::convergence::{replay_and_merge, Replica};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn rule(network: &str, updated_at_us: u64) -> BlockRule {
    BlockRule {
        network: net(network),
        expires_at_ms: None,
        reason: None,
        origin_node: 1,
        updated_at_us,
    }
}

#[test]
fn single_address_v4_and_v6() {
    let mut registry = BlockedIpRegistry::new();
    assert!(registry.is_empty());
    assert!(registry.block(rule("192.0.2.7/32", 1)));
    assert!(registry.block(rule("2001:db8::7/128", 1)));
    assert_eq!(registry.len(), 2);
    assert_eq!(
        registry.lookup(ip("192.0.2.7"), 0).unwrap().network,
        net("192.0.2.7/32")
    );
    assert_eq!(
        registry.lookup(ip("2001:db8::7"), 0).unwrap().network,
        net("2001:db8::7/128")
    );
    assert!(registry.lookup(ip("192.0.2.8"), 0).is_none());
    assert!(registry.lookup(ip("2001:db8::8"), 0).is_none());
}

#[test]
fn cidr_v4_and_v6() {
    let mut registry = BlockedIpRegistry::new();
    registry.block(rule("198.51.100.0/24", 1));
    registry.block(rule("2001:db8:1::/48", 1));
    registry.block(rule("0.0.0.0/0", 1));
    assert_eq!(
        registry.lookup(ip("198.51.100.255"), 0).unwrap().network,
        net("198.51.100.0/24")
    );
    assert_eq!(
        registry.lookup(ip("198.51.101.0"), 0).unwrap().network,
        net("0.0.0.0/0")
    );
    assert_eq!(
        registry.lookup(ip("2001:db8:1:ffff::1"), 0).unwrap().network,
        net("2001:db8:1::/48")
    );
    assert!(registry.lookup(ip("2001:db8:2::1"), 0).is_none());
}

#[test]
fn longest_prefix_wins() {
    let mut registry = BlockedIpRegistry::new();
    registry.block(BlockRule {
        reason: Some("wide".into()),
        ..rule("10.0.0.0/8", 1)
    });
    registry.block(BlockRule {
        reason: Some("narrow".into()),
        ..rule("10.1.2.0/24", 1)
    });
    registry.block(BlockRule {
        reason: Some("host".into()),
        ..rule("10.1.2.3/32", 1)
    });
    let reason = |s| registry.lookup(ip(s), 0).and_then(|rule| rule.reason.clone());
    assert_eq!(reason("10.1.2.3").as_deref(), Some("host"));
    assert_eq!(reason("10.1.2.4").as_deref(), Some("narrow"));
    assert_eq!(reason("10.9.9.9").as_deref(), Some("wide"));
    assert_eq!(reason("11.0.0.0"), None);
}

#[test]
fn expiry_hides_then_purge_drops() {
    let mut registry = BlockedIpRegistry::new();
    registry.block(BlockRule {
        expires_at_ms: Some(1_000),
        ..rule("10.0.0.1/32", 1)
    });
    registry.block(rule("10.0.0.0/24", 1));
    registry.block(BlockRule {
        expires_at_ms: Some(5_000),
        ..rule("2001:db8::/64", 1)
    });
    assert_eq!(
        registry.lookup(ip("10.0.0.1"), 999).unwrap().network,
        net("10.0.0.1/32")
    );
    // Expired at exactly expires_at_ms; the shorter prefix still applies.
    assert_eq!(
        registry.lookup(ip("10.0.0.1"), 1_000).unwrap().network,
        net("10.0.0.0/24")
    );
    assert_eq!(registry.list(1_000).len(), 2);
    assert_eq!(registry.list(999).len(), 3);
    assert!(
        registry.get(&net("10.0.0.1/32")).is_some(),
        "get returns expired rules until purged"
    );
    assert_eq!(registry.len(), 3);
    assert_eq!(registry.purge(1_000, 0), 1);
    assert_eq!(registry.len(), 2);
    assert!(registry.get(&net("10.0.0.1/32")).is_none());
    assert!(registry.lookup(ip("2001:db8::1"), 4_999).is_some());
    assert_eq!(registry.purge(5_000, 0), 1);
    assert!(registry.lookup(ip("2001:db8::1"), 0).is_none());
    assert_eq!(registry.len(), 1);
}

#[test]
fn list_is_sorted_ipv4_first() {
    let mut registry = BlockedIpRegistry::new();
    for network in ["2001:db8::/32", "10.0.0.2/32", "::1/128", "10.0.0.0/24", "9.0.0.0/8"] {
        registry.block(rule(network, 1));
    }
    let listed: Vec<IpNet> = registry.list(0).into_iter().map(|rule| rule.network).collect();
    let expected: Vec<IpNet> = ["9.0.0.0/8", "10.0.0.0/24", "10.0.0.2/32", "::1/128", "2001:db8::/32"]
        .into_iter()
        .map(net)
        .collect();
    assert_eq!(listed, expected);
}

#[test]
fn unblock_removes() {
    let mut registry = BlockedIpRegistry::new();
    registry.block(rule("10.0.0.0/24", 5));
    registry.block(rule("10.0.0.1/32", 5));
    assert!(registry.unblock(net("10.0.0.1/32"), 6));
    assert_eq!(registry.len(), 1);
    assert_eq!(registry.lookup(ip("10.0.0.1"), 0).unwrap().network, net("10.0.0.0/24"));
    assert!(!registry.unblock(net("10.0.0.1/32"), 7), "nothing left to remove");
    assert!(
        !registry.unblock(net("10.0.0.0/24"), 4),
        "older unblock does not remove a newer block"
    );
    assert!(registry.lookup(ip("10.0.0.1"), 0).is_some());
    assert!(
        registry.unblock(net("10.0.0.0/24"), 5),
        "an unblock with the same timestamp wins"
    );
    assert!(registry.lookup(ip("10.0.0.1"), 0).is_none());
    assert!(registry.is_empty());
}

#[test]
fn older_block_after_newer_unblock_is_not_resurrected() {
    let mut registry = BlockedIpRegistry::new();
    assert!(
        !registry.unblock(net("10.0.0.1/32"), 10),
        "tombstone recorded even without a rule"
    );
    assert_eq!(registry.tombstone_count(), 1);
    assert!(!registry.block(rule("10.0.0.1/32", 9)));
    assert!(!registry.block(rule("10.0.0.1/32", 10)));
    assert!(registry.lookup(ip("10.0.0.1"), 0).is_none());
    assert!(registry.is_empty());
}

#[test]
fn newer_block_after_older_unblock_applies() {
    let mut registry = BlockedIpRegistry::new();
    registry.block(rule("10.0.0.1/32", 1));
    registry.unblock(net("10.0.0.1/32"), 2);
    assert!(registry.block(rule("10.0.0.1/32", 3)));
    assert!(registry.lookup(ip("10.0.0.1"), 0).is_some());
    assert!(
        !registry.block(rule("10.0.0.1/32", 2)),
        "older block does not replace a newer one"
    );
    assert_eq!(registry.get(&net("10.0.0.1/32")).unwrap().updated_at_us, 3);
}

#[test]
fn tombstones_expire_with_purge() {
    let mut registry = BlockedIpRegistry::new();
    registry.unblock(net("10.0.0.1/32"), 1_000_000);
    registry.unblock(net("10.0.0.2/32"), 2_000_000);
    assert_eq!(registry.purge(2_500, 1_000_000), 0);
    assert_eq!(registry.tombstone_count(), 1);
    assert!(
        registry.block(rule("10.0.0.1/32", 5)),
        "tombstone gone: old blocks apply again"
    );
    assert!(!registry.block(rule("10.0.0.2/32", 5)));
}

#[test]
fn equal_timestamps_tie_break_deterministically() {
    let a = BlockRule {
        origin_node: 1,
        reason: Some("a".into()),
        ..rule("10.0.0.1/32", 7)
    };
    let b = BlockRule {
        origin_node: 2,
        reason: Some("b".into()),
        ..rule("10.0.0.1/32", 7)
    };
    let mut first = BlockedIpRegistry::new();
    assert!(first.block(a.clone()));
    assert!(first.block(b.clone()));
    let mut second = BlockedIpRegistry::new();
    assert!(second.block(b.clone()));
    assert!(!second.block(a.clone()));
    assert!(!second.block(b.clone()), "re-delivery is a no-op");
    assert_eq!(first.get(&a.network), Some(&b));
    assert_eq!(first.snapshot(), second.snapshot());
    // Same node and time, different content: still one winner whatever the order.
    let c = BlockRule {
        reason: Some("c".into()),
        ..b.clone()
    };
    let (mut x, mut y) = (first.clone(), second.clone());
    x.block(c.clone());
    y.block(c.clone());
    y.block(b.clone());
    assert_eq!(x.snapshot(), y.snapshot());
    assert_eq!(x.get(&c.network), Some(&c));
}

#[test]
fn snapshots_merge_and_converge() {
    let ops = |registry: &mut BlockedIpRegistry, order: &[usize]| {
        for &i in order {
            match i {
                0 => {
                    registry.block(rule("10.0.0.1/32", 1));
                }
                1 => {
                    registry.unblock(net("10.0.0.1/32"), 2);
                }
                2 => {
                    registry.block(rule("10.0.0.0/24", 3));
                }
                3 => {
                    registry.block(BlockRule {
                        origin_node: 2,
                        ..rule("2001:db8::/64", 3)
                    });
                }
                4 => {
                    registry.unblock(net("2001:db8::/64"), 1);
                }
                _ => {
                    registry.block(rule("2001:db8::/64", 3));
                }
            }
        }
    };
    let mut a = BlockedIpRegistry::new();
    ops(&mut a, &[0, 1, 2, 3, 4, 5]);
    let mut b = BlockedIpRegistry::new();
    ops(&mut b, &[5, 4, 3, 2, 1, 0]);
    assert_eq!(a.snapshot(), b.snapshot());

    // Each node saw half of the operations; merging both ways converges to the full state.
    let mut c = BlockedIpRegistry::new();
    ops(&mut c, &[0, 2, 4]);
    let mut d = BlockedIpRegistry::new();
    ops(&mut d, &[5, 3, 1]);
    let (c_snapshot, d_snapshot) = (c.snapshot(), d.snapshot());
    assert!(c.merge(d_snapshot) > 0);
    assert!(d.merge(c_snapshot) > 0);
    assert_eq!(c.snapshot(), a.snapshot());
    assert_eq!(d.snapshot(), a.snapshot());
    assert_eq!(c.merge(a.snapshot()), 0, "merging the same state changes nothing");

    // A joining node catches up from a snapshot, tombstones included.
    let mut joining = BlockedIpRegistry::new();
    joining.merge(a.snapshot());
    assert_eq!(joining.snapshot(), a.snapshot());
    assert!(
        !joining.block(rule("10.0.0.1/32", 1)),
        "the tombstone came with the snapshot"
    );
}

#[test]
fn snapshot_round_trips_through_json() {
    let mut registry = BlockedIpRegistry::new();
    registry.block(BlockRule {
        expires_at_ms: Some(9),
        reason: Some("spam".into()),
        ..rule("10.0.0.1/32", 1)
    });
    registry.unblock(net("2001:db8::/48"), 4);
    let json = serde_json::to_string(&registry.snapshot()).unwrap();
    let back: BlockedIpSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, registry.snapshot());
}

#[test]
fn ipv4_mapped_ipv6_is_looked_up_as_ipv4() {
    let mut registry = BlockedIpRegistry::new();
    registry.block(rule("192.0.2.0/24", 1));
    assert_eq!(
        registry.lookup(ip("::ffff:192.0.2.9"), 0).unwrap().network,
        net("192.0.2.0/24")
    );
    assert!(registry.lookup(ip("::ffff:192.0.3.9"), 0).is_none());
    // A rule given in mapped form is stored as IPv4, so that it matches.
    registry.block(rule("::ffff:198.51.100.7/128", 1));
    assert!(registry.get(&net("198.51.100.7/32")).is_some());
    assert!(registry.lookup(ip("198.51.100.7"), 0).is_some());
    assert!(registry.lookup(ip("::ffff:198.51.100.7"), 0).is_some());
    assert!(registry.unblock(net("::ffff:198.51.100.7/128"), 2));
    // An IPv4-compatible (not mapped) address stays IPv6.
    assert!(registry.lookup(ip("::192.0.2.9"), 0).is_none());
}

#[test]
fn host_bits_are_truncated() {
    let mut registry = BlockedIpRegistry::new();
    registry.block(rule("10.1.2.3/16", 1));
    registry.block(rule("2001:db8::1234/64", 1));
    assert_eq!(registry.get(&net("10.1.0.0/16")).unwrap().network, net("10.1.0.0/16"));
    assert_eq!(registry.get(&net("10.1.9.9/16")).unwrap().network, net("10.1.0.0/16"));
    assert_eq!(
        registry.lookup(ip("10.1.200.200"), 0).unwrap().network,
        net("10.1.0.0/16")
    );
    assert_eq!(
        registry.lookup(ip("2001:db8::ffff"), 0).unwrap().network,
        net("2001:db8::/64")
    );
    assert!(registry.unblock(net("10.1.255.255/16"), 2));
    assert_eq!(registry.len(), 1);
}

/// A network in a small address space, so that random rules overlap and random addresses hit them.
fn small_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (0u32..64, prop_oneof![24u8..=32, Just(16), Just(8), Just(0)])
            .prop_map(|(low, len)| { IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(0x0a00_0000 | low), len).trunc()) }),
        (0u128..64, prop_oneof![120u8..=128, Just(64), Just(48), Just(0)]).prop_map(|(low, len)| {
            let addr = Ipv6Addr::from(0x2001_0db8_u128 << 96 | low);
            IpNet::V6(ipnet::Ipv6Net::new_assert(addr, len).trunc())
        }),
    ]
}

fn small_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u32..80).prop_map(|low| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | low))),
        (0u32..80).prop_map(|low| IpAddr::V6(Ipv4Addr::from(0x0a00_0000 | low).to_ipv6_mapped())),
        (0u128..80).prop_map(|low| IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | low))),
        any::<u32>().prop_map(|bits| IpAddr::V4(Ipv4Addr::from(bits))),
    ]
}

fn any_rule(max_time: u64) -> impl Strategy<Value = BlockRule> {
    (
        small_net(),
        prop::option::of(0u64..20),
        prop::option::of("[ab]"),
        0u16..3,
        0..max_time,
    )
        .prop_map(
            |(network, expires_at_ms, reason, origin_node, updated_at_us)| BlockRule {
                network,
                expires_at_ms,
                reason,
                origin_node,
                updated_at_us,
            },
        )
}

#[derive(Clone, Debug)]
pub(crate) enum Op {
    Block(BlockRule),
    Unblock(IpNet, u64),
}

fn any_op() -> impl Strategy<Value = Op> {
    // Few distinct timestamps, so that ties between blocks and between blocks and unblocks happen.
    prop_oneof![
        2 => any_rule(6).prop_map(Op::Block),
        1 => (small_net(), 0u64..6).prop_map(|(network, at)| Op::Unblock(network, at)),
    ]
}

impl Replica for BlockedIpRegistry {
    type Op = Op;
    type Snapshot = BlockedIpSnapshot;
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Block(rule) => self.block(rule.clone()),
            Op::Unblock(network, at) => self.unblock(*network, *at),
        };
    }
    fn snapshot(&self) -> BlockedIpSnapshot {
        BlockedIpRegistry::snapshot(self)
    }
    fn merge(&mut self, snapshot: BlockedIpSnapshot) {
        BlockedIpRegistry::merge(self, snapshot);
    }
}

/// Every rule is reachable through its slot, and every slot points at its rule with the rule's expiry.
fn check_invariants(registry: &BlockedIpRegistry) {
    let index = registry.rules.index();
    let (slots, any_empty_table) = index.shape();
    assert_eq!(slots, registry.len());
    assert!(!any_empty_table);
    for rule in registry.rules.values() {
        assert_eq!(rule.network, canonical(rule.network));
        let slot = index.slot(rule.network).expect("slot");
        assert_eq!(registry.rules.at(slot.position), Some(rule));
        assert_eq!(slot.expires_at_ms, rule.expires_at_ms.unwrap_or(u64::MAX));
    }
}

/// The specification of `lookup`: the longest active rule containing the address.
fn naive_lookup(rules: &[BlockRule], ip: IpAddr, now_ms: u64) -> Option<&BlockRule> {
    let ip = match ip {
        IpAddr::V6(addr) => addr.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    rules
        .iter()
        .filter(|rule| rule.network.contains(&ip) && rule.is_active(now_ms))
        .max_by_key(|rule| rule.network.prefix_len())
}

proptest! {
    #[test]
    fn lookup_matches_linear_scan(
        rules in prop::collection::vec(any_rule(1), 0..60),
        ips in prop::collection::vec(small_ip(), 1..60),
        now_ms in 0u64..20,
    ) {
        let mut registry = BlockedIpRegistry::new();
        // Increasing timestamps: the last rule for a network wins, as in the model below.
        let mut model: HashMap<IpNet, BlockRule> = HashMap::new();
        for (i, rule) in rules.into_iter().enumerate() {
            let rule = BlockRule { updated_at_us: i as u64, ..rule };
            prop_assert!(registry.block(rule.clone()));
            model.insert(rule.network, rule);
        }
        let model: Vec<BlockRule> = model.into_values().collect();
        prop_assert_eq!(registry.len(), model.len());
        let ips_after = ips.clone();
        for ip in ips {
            prop_assert_eq!(registry.lookup(ip, now_ms), naive_lookup(&model, ip, now_ms), "ip {}", ip);
        }
        let mut active: Vec<BlockRule> = model.iter().filter(|rule| rule.is_active(now_ms)).cloned().collect();
        active.sort_by_key(|a| a.network);
        prop_assert_eq!(registry.list(now_ms), active.clone());
        check_invariants(&registry);
        prop_assert_eq!(registry.purge(now_ms, 0), model.len() - active.len());
        check_invariants(&registry);
        prop_assert_eq!(registry.list(now_ms), active.clone());
        for ip in &ips_after {
            prop_assert_eq!(registry.lookup(*ip, now_ms), naive_lookup(&active, *ip, now_ms), "ip {}", ip);
        }
    }

    #[test]
    fn operations_in_any_order_converge(
        (ops, shuffled) in prop::collection::vec(any_op(), 0..40)
            .prop_flat_map(|ops| (Just(ops.clone()), Just(ops).prop_shuffle())),
        split in 0usize..40,
        ips in prop::collection::vec(small_ip(), 1..30),
        now_ms in 0u64..20,
    ) {
        let [a, b, mut c, d] = replay_and_merge::<BlockedIpRegistry>(&ops, &shuffled, split)?;
        for registry in [&a, &b, &c, &d] {
            check_invariants(registry);
        }
        // Purging (swap-removes in the rule vector) keeps the tables consistent.
        c.purge(now_ms, 0);
        check_invariants(&c);
        for ip in ips {
            let expected = d.lookup(ip, now_ms).cloned();
            prop_assert_eq!(c.lookup(ip, now_ms).cloned(), expected);
        }
    }
}
