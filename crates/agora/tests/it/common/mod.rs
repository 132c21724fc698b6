//! Helpers shared by the integration tests of this crate (each test file includes this module with `mod common;`).
//!
//! Not every test file uses every helper, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agora::config::Config;
use agora::{Coordinator, Event, NodeId, Notification, StartError, StartOptions, Subscription};
use bytes::Bytes;

/// How long a test waits for something that should happen within milliseconds on an idle machine: generous,
/// because CI machines are shared and noisy.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A node id from a literal.
pub fn node(n: u16) -> NodeId {
    NodeId::new(n).expect("non-zero node id")
}

/// Starts a coordinator (a node) with this id.
pub async fn try_start(config: &Config, id: u16) -> Result<Coordinator, StartError> {
    Coordinator::start(
        config,
        StartOptions {
            node_id: Some(node(id)),
            ..StartOptions::default()
        },
    )
    .await
}

/// Starts a coordinator (a node) with this id; panics with the full error chain if it cannot start.
pub async fn start(config: &Config, id: u16) -> Coordinator {
    match try_start(config, id).await {
        Ok(c) => c,
        Err(e) => panic!("coordinator {id} does not start: {}", agora::Report(&e)),
    }
}

/// Waits until `condition` holds, polling every 10 ms; panics after `deadline` naming `what`. Returns how long it
/// took.
pub async fn wait_for(deadline: Duration, what: &str, mut condition: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// The ids of a coordinator's live peers.
pub fn member_ids(c: &Coordinator) -> Vec<u16> {
    c.members().iter().map(|m| m.node_id.get()).collect()
}

/// The last event a node sends in a test: once it arrives, everything the node sent before has arrived too.
pub fn sentinel(from: u16) -> Event {
    Event::Custom {
        name: "sentinel".into(),
        data: Bytes::from(from.to_be_bytes().to_vec()),
    }
}

/// Collects events per origin until a sentinel from each of `origins` arrived (per-sender order is preserved, so
/// everything a node sent before its sentinel has arrived too).
pub async fn collect_until_sentinels(sub: &mut Subscription, origins: &[u16]) -> HashMap<u16, Vec<Event>> {
    let mut got: HashMap<u16, Vec<Event>> = HashMap::new();
    let mut pending: Vec<u16> = origins.to_vec();
    tokio::time::timeout(DEADLINE, async {
        while !pending.is_empty() {
            match sub.recv().await.expect("coordinator alive") {
                Notification::Event(d) => {
                    let origin = d.origin.get();
                    if d.event == sentinel(origin) {
                        pending.retain(|o| *o != origin);
                    } else {
                        got.entry(origin).or_default().push(d.event.clone());
                    }
                }
                other => panic!("unexpected notification {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("sentinels from {pending:?} did not arrive"));
    got
}
