//! The labelled metrics of the Stalwart bus (`[stalwart]` only): events by kind, batches by sender, and whether
//! another sender uses this node's id. Its plain counters are in the catalogue (`super::catalogue`).

use agora::stalwart::StalwartEvent;
use agora::stats::Stats;
use agora::StalwartStats;
use prometheus_client::encoding::DescriptorEncoder;

use super::encode::{gauge, labelled};

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
    gauge(
        e,
        "stalwart_node_id_clash",
        "1 once another sender used this node's [stalwart] node-id",
        i64::from(clash),
    )
}
