//! The state handler of releases before the paged transfer (`snapshot`: the whole state in one message), kept for
//! rolling upgrades in both directions: a node of this release answers an older joiner when the whole state fits
//! in one message, and asks `snapshot` itself when members are heard but none answers `state`.

use std::sync::Arc;

use agora::log_limit::LogLimiter;
use agora::{Coordinator, StartError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::services::blocked_ips::BlockedIpSnapshot;
use crate::services::push::PushSnapshot;
use crate::services::state::NodeState;

/// The older releases' handler name.
pub const SNAPSHOT: &str = "snapshot";

/// No entry is smaller than this in JSON: a state with more entries than `budget / MIN_ENTRY` cannot fit in one
/// message, and is not even serialised (an older node's request must not cost a copy of a huge state).
const MIN_ENTRY: usize = 40;

/// The older releases' reply: the whole state.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateSnapshot {
    blocked_ips: BlockedIpSnapshot,
    push: PushSnapshot,
}

/// Starts answering older nodes' `snapshot` requests.
pub async fn serve(coordinator: &Coordinator, state: Arc<NodeState>) -> Result<(), StartError> {
    let peers = coordinator.clone();
    let too_large_log = LogLimiter::new();
    coordinator
        .serve(SNAPSHOT, move |request| {
            answer(&peers, &state, &request, &too_large_log)
        })
        .await
}

fn answer(coordinator: &Coordinator, state: &NodeState, request: &[u8], too_large_log: &LogLimiter) -> Option<Bytes> {
    let instance = u64::from_be_bytes(request.try_into().ok()?);
    if instance == coordinator.instance_id() || !state.is_ready() {
        return None;
    }
    if !coordinator.is_authenticated() && !coordinator.members().iter().any(|m| m.instance_id == instance) {
        return None;
    }
    let budget = coordinator.max_reply_size();
    let entries = {
        let (blocked, push) = (state.blocked(), state.push());
        blocked.len() + blocked.tombstone_count() + push.len() + push.tombstone_count()
    };
    let bytes = (entries <= budget / MIN_ENTRY)
        .then(|| {
            let snapshot = StateSnapshot {
                blocked_ips: state.blocked().snapshot(),
                push: state.push().snapshot(),
            };
            serde_json::to_vec(&snapshot).ok()
        })
        .flatten()
        .filter(|bytes| bytes.len() <= budget);
    if bytes.is_none() && too_large_log.should_log() {
        tracing::warn!(
            entries,
            "a node of an older release asked for the whole state, which no longer fits in one NATS message: \
             upgrade it (this release transfers state in pages)"
        );
    }
    bytes.map(Bytes::from)
}

/// Asks older peers for the whole state and merges it; returns how many entries changed, or `None` if no peer
/// answered with a readable state.
pub async fn fetch(coordinator: &Coordinator, state: &NodeState) -> Option<usize> {
    let me = Bytes::copy_from_slice(&coordinator.instance_id().to_be_bytes());
    let snapshot = coordinator
        .request_each(SNAPSHOT, me, |reply| {
            serde_json::from_slice::<StateSnapshot>(&reply).ok()
        })
        .await
        .ok()?;
    Some(state.merge(snapshot.blocked_ips, snapshot.push))
}
