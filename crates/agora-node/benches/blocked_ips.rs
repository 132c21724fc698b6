//! Benchmarks of the blocked-IP registry: `lookup` is called on every accepted connection, so it must stay above
//! 10 M lookups/s on one core with 100,000 rules, on the realistic workload `agora bench` uses too.

use std::hint::black_box;

use agora_node::services::blocked_ips::workload::{self, Rng};
use agora_node::services::blocked_ips::{BlockRule, BlockedIpRegistry};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const RULES: usize = 100_000;
const LOOKUPS: usize = 1_000_000;
const NOW_MS: u64 = 1_700_000_000_000;

fn build(rules: Vec<BlockRule>) -> BlockedIpRegistry {
    let mut registry = BlockedIpRegistry::new();
    for rule in rules {
        registry.block(rule);
    }
    registry
}

fn bench(c: &mut Criterion) {
    let mut rng = Rng::new(workload::SEED);
    let rules = workload::rules(RULES, NOW_MS, &mut rng);
    let registry = build(rules.clone());
    let ips = workload::probes(&rules, LOOKUPS, &mut rng);
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
