//! The metrics of the Stalwart bus (`[stalwart]` only): events by kind, batches by sender, what was skipped,
//! forwarded, refused or invalid.

use agora::stalwart::StalwartEvent;
use agora::stats::Stats;
use agora::StalwartStats;
use prometheus_client::encoding::DescriptorEncoder;

use super::metrics::{counter, gauge, labelled};

/// Senders get their own series up to this many; the rest are summed under `sender="other"`, so a flood of forged
/// node ids cannot blow up the scrape.
const SENDER_SERIES: usize = 256;

/// Writes every Stalwart family (all present, at 0, from start).
pub(super) fn encode(e: &mut DescriptorEncoder, s: &StalwartStats, clash: bool) -> Result<(), std::fmt::Error> {
    labelled(
        e,
        "stalwart_events_received",
        "Events delivered from the Stalwart bus, by Stalwart kind",
        "kind",
        s.events_received
            .iter()
            .map(Stats::get)
            .zip(StalwartEvent::KINDS.iter().copied()),
    )?;
    let senders = s.senders();
    let mut named: Vec<(u64, String)> = senders
        .iter()
        .take(SENDER_SERIES)
        .map(|sender| (sender.batches, sender.node_id.to_string()))
        .collect();
    let rest: u64 = senders.iter().skip(SENDER_SERIES).map(|sender| sender.batches).sum();
    if senders.len() > SENDER_SERIES {
        named.push((rest, "other".to_string()));
    }
    labelled(
        e,
        "stalwart_batches_by_sender",
        "Batches delivered from the Stalwart bus, by sending Stalwart node id",
        "sender",
        named.iter().map(|(n, id)| (*n, id.as_str())),
    )?;
    for (name, help, value) in [
        (
            "stalwart_batches_received",
            "Messages received on the Stalwart subject",
            &s.batches_received,
        ),
        (
            "stalwart_bytes_received",
            "Bytes received on the Stalwart subject",
            &s.bytes_received,
        ),
        (
            "stalwart_invalid_batches",
            "Stalwart messages that failed to decode, in whole or after some events",
            &s.invalid_batches,
        ),
        (
            "stalwart_forwarded_copies_skipped",
            "Copies of agora events on the Stalwart subject, skipped (agora's bus delivered them)",
            &s.forwarded_copies_skipped,
        ),
        (
            "stalwart_events_forwarded",
            "Events this node published on the Stalwart bus",
            &s.events_forwarded,
        ),
        (
            "stalwart_batches_forwarded",
            "Messages this node published on the Stalwart bus",
            &s.batches_forwarded,
        ),
        (
            "stalwart_events_refused",
            "Events refused because the configured Stalwart release cannot decode them",
            &s.events_refused,
        ),
        (
            "stalwart_forward_failures",
            "Forwarded events the NATS client did not take",
            &s.forward_failures,
        ),
        (
            "stalwart_node_id_clashes",
            "Batches carrying this node's [stalwart] node-id that it did not send",
            &s.node_id_clashes,
        ),
    ] {
        counter(e, name, help, Stats::get(value))?;
    }
    gauge(
        e,
        "stalwart_node_id_clash",
        "1 once another sender used this node's [stalwart] node-id",
        i64::from(clash),
    )
}
