//! Writing values read at scrape time into the Prometheus text format (constant metrics: the hot path only ever
//! bumps an atomic; the scrape reads it).

use std::sync::atomic::AtomicU64;

use agora::stats::Stats;
use agora::Event;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// One counter.
pub(super) fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

/// One gauge.
pub(super) fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

/// A counter family with one series per event type (`type` label).
pub(super) fn per_type(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[AtomicU64],
) -> Result<(), std::fmt::Error> {
    labelled(
        encoder,
        name,
        help,
        "type",
        values.iter().map(Stats::get).zip(Event::TYPE_NAMES.iter().copied()),
    )
}

/// A counter family with one label, one series per `(value, label value)`.
pub(super) fn labelled<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    series: impl IntoIterator<Item = (u64, &'a str)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, label_value) in series {
        let labels = [(label, label_value)];
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}
