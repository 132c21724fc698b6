//! Benchmark results: one JSON object per scenario (the documented `--json` form) or a table for people.

use std::fmt::Write;

use serde_json::json;

/// One scenario's outcome.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// e.g. `throughput_1to4`, `latency_50000`, `blocked_ip_lookup`.
    pub scenario: String,
    /// `raw`, `batch100`, `agora`, or `registry`.
    pub mode: String,
    /// Events sent (or lookups made).
    pub events: u64,
    /// Events delivered per second (per receiver), or lookups per second.
    pub events_per_sec: f64,
    /// Latency percentiles in microseconds (origin timestamp to delivery).
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Events not delivered to some receiver (sum over receivers).
    pub lost: u64,
    /// Resident memory of the measured process (memory scenarios only), KiB.
    pub rss_kib: Option<u64>,
    /// Figures only some scenarios have (the lookup's `rules` and `hit_rate`), added to the JSON row as they are.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ScenarioResult {
    /// A row measured on a node process: `events` sent, `deliveries` received over `window_seconds`, latency
    /// percentiles from `histogram` (µs), the node's peak resident memory.
    #[allow(clippy::too_many_arguments)] // one row's figures, named at the call
    pub fn of_node(
        name: &str,
        events: usize,
        deliveries: usize,
        window_seconds: f64,
        histogram: &hdrhistogram::Histogram<u64>,
        lost: u64,
        peak_rss_kib: u64,
        details: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        let q = |p: f64| histogram.value_at_quantile(p) as f64;
        ScenarioResult {
            scenario: name.into(),
            mode: "node".into(),
            events: events as u64,
            events_per_sec: if window_seconds > 0.0 {
                deliveries as f64 / window_seconds
            } else {
                0.0
            },
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            lost,
            rss_kib: Some(peak_rss_kib),
            details,
        }
    }

    /// The documented JSON form (`docs/performance.md`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = json!({
            "scenario": self.scenario,
            "mode": self.mode,
            "events": self.events,
            "events_per_sec": (self.events_per_sec * 10.0).round() / 10.0,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "lost": self.lost,
        });
        if let Some(rss) = self.rss_kib {
            value["rss_kib"] = json!(rss);
        }
        if let Some(row) = value.as_object_mut() {
            row.extend(self.details.clone());
        }
        value
    }
}

/// A table, with each bus scenario's ratio against `raw` and `batch100` of the same scenario.
pub fn table(results: &[ScenarioResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<34} {:<9} {:>10} {:>14} {:>9} {:>9} {:>9} {:>6} {:>8} {:>8} {:>9}",
        "scenario", "mode", "events", "events/s", "p50 µs", "p99 µs", "p999 µs", "lost", "x raw", "x b100", "RSS MiB"
    );
    for r in results {
        let ratio = |base: &str| {
            results
                .iter()
                .find(|b| b.scenario == r.scenario && b.mode == base && b.events_per_sec > 0.0)
                .map_or_else(
                    || "-".to_string(),
                    |b| format!("{:.2}", r.events_per_sec / b.events_per_sec),
                )
        };
        let _ = writeln!(
            out,
            "{:<34} {:<9} {:>10} {:>14.0} {:>9.2} {:>9.2} {:>9.2} {:>6} {:>8} {:>8} {:>9}",
            r.scenario,
            r.mode,
            r.events,
            r.events_per_sec,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.lost,
            ratio("raw"),
            ratio("batch100"),
            r.rss_kib
                .map_or_else(|| "-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0))
        );
    }
    out
}
