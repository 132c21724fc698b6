//! State transfer: how a node that joins, or that lost events, gets the replicated state (blocked IPs, push
//! subscriptions and client-token revocations) from a peer, page by page, whatever its size.
//!
//! **Pages.** A request names a [`Cursor`]: a section (rules, rule tombstones, push subscriptions, push tombstones)
//! and the last key already received. The peer answers with the entries that follow, in key order, as many as fit in
//! one NATS message (`max_payload`), and the cursor to ask for next. Pages are cut from the peer's current state and
//! the peer keeps nothing between them, so any ready peer can serve any page: if the first one dies mid-transfer, the
//! next request goes to whoever answers. The first request goes to every node (`state`); later ones to the node that
//! answered it (`state.<node-id>`), so that one peer, not all, does the work.
//!
//! **Consistency.** The joiner subscribes to the bus before it asks, and applies live events while pages arrive; both
//! go through the same last-writer-wins merge. A rule changed during the transfer is therefore either in a later
//! page in its new form or arrives as an event, and a deletion leaves a tombstone that an older copy in a page cannot
//! override: nothing is lost, nothing resurrected, whatever the order (property-tested in `lww`).
//!
//! **Believing it is alone.** A node is not ready until a transfer ends, or until it has proof that no peer holds
//! state: no heartbeat heard for two heartbeat intervals, or every node it hears says (in an authenticated reply)
//! that it is starting too. The server's "no responders" status is not proof of anything: it carries no MAC, so with
//! `[cluster] key` set and peers heard it is ignored (see [`agora::Coordinator::request_each`]), and without peers
//! it only ends one attempt early. Nothing unauthenticated changes what the node believes.
//!
//! **Who may ask.** With a key, requests are authenticated. Without one, a peer answers only a node it hears
//! heartbeats from (the snapshot holds push URLs, which carry secrets), and says `unknown_requester` otherwise so
//! that a joiner whose first heartbeat has not arrived yet asks again at once.

mod client;
mod legacy;
mod page;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use agora::{Coordinator, StartError};
use bytes::Bytes;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::blocked_ips::{BlockRule, BlockedIpSnapshot, Tombstone};
use super::push::{PushSnapshot, StoredSubscription};
use super::revocations::{RevocationKey, StoredRevocation};
use super::state::NodeState;

pub use client::Transfers;

/// The request/reply handler name for state transfer (and `state.<node-id>` for one node's).
pub const STATE: &str = "state";

/// A request larger than this is not a page request: dropped unread.
const MAX_REQUEST: usize = 64 * 1024;

/// Where a transfer stands: the section being read and the last key received from it (`None`: from the start).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "section", content = "after", rename_all = "snake_case")]
pub enum Cursor {
    /// Blocked-IP rules, by network.
    Rules(Option<IpNet>),
    /// Blocked-IP tombstones, by network.
    RuleTombstones(Option<IpNet>),
    /// Push subscriptions, by id.
    Push(Option<String>),
    /// Push tombstones, by id.
    PushTombstones(Option<String>),
    /// Client-token revocations, by key. Served only to a requester that asks for them (`revocations`), so that
    /// nodes of earlier releases, which know no such cursor, never get one.
    Revocations(Option<RevocationKey>),
}

impl Cursor {
    /// The first page of the first section.
    pub const START: Cursor = Cursor::Rules(None);
}

/// What a joiner sends.
#[derive(Debug, Serialize, Deserialize)]
struct PageRequest {
    /// The requester's node id and instance (hex), so that a node never answers itself and, without a key, answers
    /// only members.
    node_id: u16,
    instance_id: String,
    cursor: Cursor,
    /// The requester knows the `revocations` section (absent in requests of earlier releases).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    revocations: bool,
}

/// What a peer answers. Read through [`WireReply`]: serde reads an internally tagged enum by buffering the whole
/// message first, which for a page of a megabyte doubled the joiner's parsing time.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", from = "WireReply")]
enum Reply {
    /// Entries after the cursor.
    Page(Page),
    /// The peer has no state to give: it is starting too.
    Starting { node_id: u16 },
    /// Without a key: the peer has not heard the requester's heartbeat yet.
    UnknownRequester { node_id: u16 },
}

/// One page of state, in key order within each section.
#[derive(Debug, Default, Serialize)]
struct Page {
    node_id: u16,
    #[serde(default)]
    rules: Vec<BlockRule>,
    #[serde(default)]
    rule_tombstones: Vec<Tombstone>,
    #[serde(default)]
    push: Vec<StoredSubscription>,
    #[serde(default)]
    push_tombstones: Vec<(String, u64)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    revocations: Vec<StoredRevocation>,
    /// The cursor to ask for next; `None` when the transfer is complete.
    next: Option<Cursor>,
}

impl Page {
    /// Merges the page into `state` with the same rules as live events; returns how many entries changed.
    fn merge_into(self, state: &NodeState) -> usize {
        state.merge_revocations(self.revocations)
            + state.merge(
                BlockedIpSnapshot {
                    rules: self.rules,
                    tombstones: self.rule_tombstones,
                },
                PushSnapshot {
                    subscriptions: self.push,
                    tombstones: self.push_tombstones,
                },
            )
    }
}

/// A reply as it is read: every field of every kind, the kind in `status`.
#[derive(Deserialize)]
struct WireReply {
    status: Status,
    node_id: u16,
    #[serde(default)]
    rules: Vec<BlockRule>,
    #[serde(default)]
    rule_tombstones: Vec<Tombstone>,
    #[serde(default)]
    push: Vec<StoredSubscription>,
    #[serde(default)]
    push_tombstones: Vec<(String, u64)>,
    #[serde(default)]
    revocations: Vec<StoredRevocation>,
    #[serde(default)]
    next: Option<Cursor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Page,
    Starting,
    UnknownRequester,
}

impl From<WireReply> for Reply {
    fn from(wire: WireReply) -> Self {
        let node_id = wire.node_id;
        match wire.status {
            Status::Page => Reply::Page(Page {
                node_id,
                rules: wire.rules,
                rule_tombstones: wire.rule_tombstones,
                push: wire.push,
                push_tombstones: wire.push_tombstones,
                revocations: wire.revocations,
                next: wire.next,
            }),
            Status::Starting => Reply::Starting { node_id },
            Status::UnknownRequester => Reply::UnknownRequester { node_id },
        }
    }
}

/// Starts answering page requests (`state` and `state.<this node's id>`).
pub async fn serve(coordinator: &Coordinator, state: Arc<NodeState>) -> Result<(), StartError> {
    let me = coordinator.node_id().get();
    let names = [STATE.to_string(), format!("{STATE}.{me}")];
    let indexes = Arc::new(page::PageIndexes::default());
    for name in names {
        let (state, indexes) = (state.clone(), indexes.clone());
        let peers = coordinator.clone();
        coordinator
            .serve(&name, move |request| answer(&peers, &state, &indexes, &request))
            .await?;
    }
    legacy::serve(coordinator, state).await
}

/// The reply to one request, or `None` to stay silent (our own request, or not a page request at all).
fn answer(coordinator: &Coordinator, state: &NodeState, indexes: &page::PageIndexes, request: &[u8]) -> Option<Bytes> {
    let me = coordinator.node_id().get();
    if request.len() > MAX_REQUEST {
        return None;
    }
    let request: PageRequest = serde_json::from_slice(request).ok()?;
    let instance = u64::from_str_radix(&request.instance_id, 16).ok()?;
    if request.node_id == me && instance == coordinator.instance_id() {
        return None;
    }
    let reply = |reply: &Reply| serde_json::to_vec(reply).ok().map(Bytes::from);
    if !coordinator.is_authenticated()
        && !coordinator
            .members()
            .iter()
            .any(|m| m.node_id.get() == request.node_id && m.instance_id == instance)
    {
        return reply(&Reply::UnknownRequester { node_id: me });
    }
    if !state.is_ready() {
        return reply(&Reply::Starting { node_id: me });
    }
    // A page is a pass over a section (tens of milliseconds for a million rules): off the async worker, so that the
    // tasks queued behind it move to another thread meanwhile.
    let budget = coordinator.max_reply_size();
    let cut = || page::page(state, indexes, me, request.cursor, budget, request.revocations);
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let bytes = if multi_thread {
        tokio::task::block_in_place(cut)
    } else {
        cut()
    };
    Some(Bytes::from(bytes))
}
