//! The views of the counters agree: every counter of the catalogue is in `/metrics` and `/v1/node`, nothing is in
//! one and not the other, and the dashboard names none of its own.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::catalogue::{self, COUNTERS};
use super::{NodeMetrics, StateGauges};

/// Labelled families: one name, several series, so they are not single counters of `/v1/node`.
const LABELLED_FAMILIES: &[&str] = &[
    "push_deliveries",
    "push_refused",
    "stalwart_events_received",
    "stalwart_batches_by_sender",
];

struct NoState;

impl StateGauges for NoState {
    fn blocked_ip_rules(&self) -> usize {
        0
    }
    fn push_subscriptions(&self) -> usize {
        0
    }
    fn holds_state(&self) -> bool {
        true
    }
    fn tombstones(&self) -> (usize, usize) {
        (0, 0)
    }
    fn revocations(&self) -> usize {
        0
    }
}

/// The counter names `/metrics` declares (`# TYPE agora_<name> counter`).
fn prometheus_counters(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE agora_"))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn every_counter_is_in_metrics_and_in_v1_node_under_one_name() {
    let config = agora::config::Config::default();
    let coordinator = agora::Coordinator::start(&config, agora::StartOptions::default())
        .await
        .expect("single-node coordinator");
    let node = Arc::new(NodeMetrics::default());
    let journal = crate::services::journal::Journal::new(100, 1 << 20);
    let registry = super::registry(coordinator.clone(), &node, Arc::new(NoState), journal);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");

    let in_metrics = prometheus_counters(&text);
    let (counters, stalwart) = catalogue::node_counters(&coordinator, &node);
    assert!(stalwart.is_empty(), "no [stalwart]: no Stalwart counters");
    let in_node: BTreeSet<String> = counters.keys().cloned().collect();

    // Everything /metrics counts, /v1/node shows, under the same name (labelled families aside).
    let families: BTreeSet<String> = LABELLED_FAMILIES.iter().map(|s| s.to_string()).collect();
    let only_metrics: Vec<_> = in_metrics
        .difference(&in_node)
        .filter(|n| !families.contains(*n))
        .collect();
    assert!(
        only_metrics.is_empty(),
        "in /metrics, not in /v1/node: {only_metrics:?}"
    );
    let only_node: Vec<_> = in_node.difference(&in_metrics).collect();
    assert!(only_node.is_empty(), "in /v1/node, not in /metrics: {only_node:?}");
    // Without durable mode or [stalwart], their counters are absent from both; everything else is present.
    for spec in COUNTERS {
        let optional = spec.name.starts_with("durable_") || spec.is_stalwart();
        assert_eq!(in_node.contains(spec.name), !optional, "{}", spec.name);
    }
    coordinator.shutdown().await;
}

#[test]
fn names_are_unique_and_the_dashboard_only_shows_declared_counters() {
    let mut seen = BTreeSet::new();
    for spec in COUNTERS {
        assert!(seen.insert(spec.name), "{} declared twice", spec.name);
        assert!(!spec.help.is_empty(), "{} has no help", spec.name);
    }
    let problems: Vec<_> = catalogue::dashboard_problems().collect();
    assert!(
        problems.len() >= 10,
        "the dashboard shows the problem counters: {problems:?}"
    );
    for (name, _label) in &problems {
        assert!(seen.contains(name), "dashboard tile for an undeclared counter {name}");
    }
    // The dashboard reads which counters to show from /v1/node: it names none itself.
    let script = include_str!("../../http/dashboard/status.js");
    for spec in COUNTERS {
        for quoted in [format!("\"{}\"", spec.name), format!("c.{}", spec.name)] {
            if spec.name == "events_published" || spec.name == "events_received" {
                continue; // shown as facts (totals), not as problem tiles
            }
            assert!(!script.contains(&quoted), "status.js names the counter {quoted}");
        }
    }
}
