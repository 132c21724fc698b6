//! What a node knows about its peers: who is alive, where each sender's sequence stands, and whether two processes
//! share a node id.
//!
//! Sans-IO: the receiver task feeds it batch headers and control records with the current time, and acts on what it
//! returns. That keeps membership, gap detection and clash detection testable without a network.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::codec::{BatchHeader, Heartbeat};
use crate::event::NodeId;

mod serial;

pub use serial::{serial_distance, Distance};

/// A node is gone after this many heartbeat intervals without a message from it.
pub const MISSED_HEARTBEATS: u32 = 3;

/// How long a silent sender's sequence state is kept after it stopped being a member: long enough to span any
/// realistic outage, so the gap is still detected when it speaks again; bounded by the number of node ids.
pub const SEQUENCE_RETENTION: Duration = Duration::from_secs(3600);

/// Clash pairs remembered (to report each once).
const MAX_REPORTED_CLASHES: usize = 1024;

/// Bounds on a peer's announced heartbeat interval: a forged heartbeat cannot make a peer immortal (an interval of
/// hours) nor expire every tick. The upper bound is also at most [`MAX_INTERVAL_RATIO`] times this node's own
/// interval: nodes of one cluster share their configuration, and one forged heartbeat must not keep a fake member
/// (which takes a share of push deliveries) alive for hours.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const MAX_INTERVAL_RATIO: u32 = 10;

/// Senders tracked at most (node ids are 16-bit, so this is a bound on memory, not on a real cluster): past it, the
/// sender heard longest ago is forgotten.
pub const MAX_TRACKED_SENDERS: usize = 4096;

/// How long a replaced instance is remembered: if it speaks again within this window, two processes share the id.
const RETIRED_MEMORY: Duration = Duration::from_secs(60);

/// Replaced instances remembered per node id, at most (forged instance ids could otherwise grow the list).
const MAX_RETIRED: usize = 8;

/// Batches that must continue the sequence from before a forward jump to prove that the jump was not the sender's
/// own (a forgery, or a copy from another sender): then the jump is undone. Senders heartbeat every interval, so
/// this takes at most two intervals.
const JUMP_PROOF: u32 = 2;

/// How long the sequence from before a jump is remembered.
const JUMP_MEMORY: Duration = Duration::from_secs(60);

/// A forward jump in one sender's sequence, remembered in case it was not the sender's own.
#[derive(Clone, Copy, Debug)]
struct Jump {
    /// The next sequence number of the stream from before the jump.
    resume: u64,
    /// The first sequence number after the jump.
    landed: u64,
    /// Batches that continued the stream from before the jump.
    proofs: u32,
    at: Instant,
}

/// A live peer, as listed by `Coordinator::members`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// The peer's node id.
    pub node_id: NodeId,
    /// The peer process's instance id (changes on restart).
    pub instance_id: u64,
    /// When we last heard from it (Unix ms).
    pub last_seen_ms: u64,
    /// When the peer process started (Unix ms), from its heartbeat; 0 until the first heartbeat.
    pub started_at_ms: u64,
    /// The peer's local HTTP API, from its heartbeat.
    pub http: Option<String>,
    /// The node id the peer's forwarded batches carry on the Stalwart bus, from its heartbeat.
    pub stalwart_node_id: Option<u16>,
}

/// Two processes are using one node id: events of one are dropped by the other as its own, or misattributed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeIdClash {
    /// The contested node id.
    pub node_id: NodeId,
    /// The instance ids seen for it.
    pub instances: [u64; 2],
    /// True if one of the two is this process.
    pub involves_us: bool,
}

/// What the receiver must do about one incoming batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchVerdict {
    /// The batch carries our node id: ignore it.
    pub own: bool,
    /// ... and our instance id: the server echoed our own message back (no-echo off).
    pub echo: bool,
    /// Leading records already delivered (a duplicate): skip this many.
    pub skip: u64,
    /// Records between the last one seen from this sender and this batch that never arrived.
    pub missed: u64,
    /// The sender is a new process replacing one we knew, which did not leave cleanly.
    pub restarted: bool,
    /// The sender was unknown before this batch.
    pub new_sender: bool,
    /// A node-id clash that this batch revealed (reported once per pair).
    pub clash: Option<NodeIdClash>,
    /// The batch is evidence of a node-id clash, new or already reported: clash warnings last while evidence does.
    pub clash_evidence: bool,
    /// The batch proved that an earlier jump in this sender's sequence was not its own, and the jump was undone.
    pub jump_undone: bool,
}

/// A membership change worth logging and telling subscribers about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// The node left cleanly.
    Left(NodeId),
    /// The node stopped sending heartbeats.
    TimedOut(NodeId),
}

#[derive(Debug)]
struct Peer {
    instance_id: u64,
    next_seq: u64,
    last_seen: Instant,
    last_seen_ms: u64,
    interval: Duration,
    started_at_ms: u64,
    http: Option<String>,
    stalwart_node_id: Option<u16>,
    /// Sent a heartbeat: a node, not a tool that only publishes or watches.
    member: bool,
    /// Instances this node id had before, and when they were replaced (at most [`MAX_RETIRED`]).
    retired: Vec<(u64, Instant)>,
    /// After a forward jump: where the sequence stood before it (advanced by every batch that continues from there),
    /// where the jump landed, how many continuing batches came, and when the jump happened. Without a key anyone
    /// can send one batch with a peer's ids and a sequence number far ahead, which would make every genuine batch
    /// look like a repeat.
    before_jump: Option<Jump>,
}

/// The peer table.
#[derive(Debug)]
pub struct PeerTable {
    me: NodeId,
    my_instance: u64,
    default_interval: Duration,
    peers: HashMap<NodeId, Peer>,
    /// Clash pairs already reported, oldest first, at most [`MAX_REPORTED_CLASHES`] (forged instance ids could
    /// otherwise grow it without bound).
    reported_clashes: std::collections::VecDeque<(NodeId, u64, u64)>,
    /// Whether forward jumps are remembered to be undone (without a key only).
    jump_recovery: bool,
}

impl PeerTable {
    /// A table for this node; `default_interval` is assumed for peers until their first heartbeat.
    pub fn new(me: NodeId, my_instance: u64, default_interval: Duration) -> Self {
        PeerTable {
            me,
            my_instance,
            default_interval,
            peers: HashMap::new(),
            reported_clashes: std::collections::VecDeque::new(),
            jump_recovery: true,
        }
    }

    /// Accounts for an incoming batch before its records are dispatched.
    pub fn observe_batch(&mut self, header: &BatchHeader, now: Instant, now_ms: u64) -> BatchVerdict {
        let mut verdict = BatchVerdict::default();
        if header.node_id == self.me {
            if header.instance_id == self.my_instance {
                verdict.own = true;
                verdict.echo = true;
            } else {
                verdict.own = true; // never deliver another process's events as if they were ours, nor as theirs
                verdict.clash_evidence = true;
                verdict.clash = self.report_clash(header.node_id, self.my_instance, header.instance_id, true);
            }
            return verdict;
        }
        let end_seq = header.first_seq.wrapping_add(u64::from(header.count));
        let default_interval = self.default_interval;
        let jump_recovery = self.jump_recovery;
        let peer = match self.peers.get_mut(&header.node_id) {
            None => {
                verdict.new_sender = true;
                if self.peers.len() >= MAX_TRACKED_SENDERS {
                    self.forget_stalest();
                }
                self.peers.insert(
                    header.node_id,
                    Peer {
                        instance_id: header.instance_id,
                        next_seq: end_seq,
                        last_seen: now,
                        last_seen_ms: now_ms,
                        interval: default_interval,
                        started_at_ms: 0,
                        http: None,
                        stalwart_node_id: None,
                        member: false,
                        retired: Vec::new(),
                        before_jump: None,
                    },
                );
                return verdict;
            }
            Some(peer) => peer,
        };
        peer.last_seen = now;
        peer.last_seen_ms = now_ms;
        if peer.instance_id != header.instance_id {
            peer.retired.retain(|(_, at)| now.duration_since(*at) < RETIRED_MEMORY);
            if peer.retired.iter().any(|(id, _)| *id == header.instance_id) {
                // An instance we saw replaced speaks again: two live processes alternate on one id.
                let (a, b) = (peer.instance_id, header.instance_id);
                verdict.own = false;
                verdict.clash_evidence = true;
                verdict.clash = self.report_clash(header.node_id, a, b, false);
                return verdict;
            }
            if peer.retired.len() >= MAX_RETIRED {
                peer.retired.remove(0);
            }
            peer.retired.push((peer.instance_id, now));
            peer.instance_id = header.instance_id;
            peer.next_seq = end_seq;
            peer.before_jump = None;
            peer.started_at_ms = 0;
            peer.member = false;
            verdict.restarted = true;
            return verdict;
        }
        if let Some(jump) = peer.before_jump {
            let inside_gap = !matches!(serial_distance(jump.landed, end_seq), Distance::Ahead(_));
            if now.duration_since(jump.at) >= JUMP_MEMORY {
                peer.before_jump = None;
            } else if header.first_seq == jump.resume && inside_gap {
                // It continues exactly where the sender stood before the jump, and ends before where the jump
                // landed: these records never arrived, so deliver them; enough such batches prove that the jump
                // was not the sender's.
                let proofs = jump.proofs + 1;
                if proofs >= JUMP_PROOF {
                    peer.next_seq = end_seq;
                    peer.before_jump = None;
                    verdict.jump_undone = true;
                } else {
                    peer.before_jump = Some(Jump {
                        resume: end_seq,
                        proofs,
                        ..jump
                    });
                }
                return verdict;
            }
        }
        match serial_distance(peer.next_seq, header.first_seq) {
            Distance::Ahead(missed) => {
                verdict.missed = missed;
                if jump_recovery {
                    peer.before_jump.get_or_insert(Jump {
                        resume: peer.next_seq,
                        landed: header.first_seq,
                        proofs: 0,
                        at: now,
                    });
                }
            }
            Distance::Behind(repeated) => verdict.skip = repeated.min(u64::from(header.count)),
            Distance::Same => {}
        }
        if matches!(serial_distance(peer.next_seq, end_seq), Distance::Ahead(_)) {
            peer.next_seq = end_seq;
        }
        verdict
    }

    fn report_clash(&mut self, node: NodeId, a: u64, b: u64, involves_us: bool) -> Option<NodeIdClash> {
        let key = (node, a.min(b), a.max(b));
        if self.reported_clashes.contains(&key) {
            return None;
        }
        if self.reported_clashes.len() >= MAX_REPORTED_CLASHES {
            self.reported_clashes.pop_front();
        }
        self.reported_clashes.push_back(key);
        Some(NodeIdClash {
            node_id: node,
            instances: [a, b],
            involves_us,
        })
    }

    /// The longest heartbeat interval a peer may announce (see [`MAX_INTERVAL_RATIO`]).
    fn max_interval(&self) -> Duration {
        (self.default_interval * MAX_INTERVAL_RATIO).clamp(MIN_INTERVAL, MAX_INTERVAL)
    }

    /// Forgets the sender heard from longest ago, to make room: a sender that is not a member (a tool, or a forged
    /// id that never sent a heartbeat) before any member.
    fn forget_stalest(&mut self) {
        let stalest = self
            .peers
            .iter()
            .min_by_key(|(_, p)| (p.member, p.last_seen))
            .map(|(n, _)| *n);
        if let Some(node) = stalest {
            self.peers.remove(&node);
        }
    }

    /// Turns the undoing of forward sequence jumps off: with `[cluster] key` nobody can forge a batch, so every jump
    /// is a genuine loss, and a replay of recorded batches must not be able to move a sequence backwards.
    pub fn without_jump_recovery(mut self) -> Self {
        self.jump_recovery = false;
        self
    }

    /// Records a heartbeat's details (the batch carrying it was already observed). Returns true if the node just
    /// became a member.
    pub fn on_heartbeat(&mut self, node: NodeId, instance_id: u64, heartbeat: &Heartbeat) -> bool {
        let max_interval = self.max_interval();
        match self.peers.get_mut(&node) {
            Some(peer) if peer.instance_id == instance_id => {
                peer.interval =
                    Duration::from_millis(u64::from(heartbeat.interval_ms)).clamp(MIN_INTERVAL, max_interval);
                peer.started_at_ms = heartbeat.started_at_ms;
                peer.http.clone_from(&heartbeat.http);
                peer.stalwart_node_id = heartbeat.stalwart_node_id;
                !std::mem::replace(&mut peer.member, true)
            }
            _ => false,
        }
    }

    /// A clean leave: the node is no longer a member, and its next instance is a plain join, not a restart.
    pub fn on_leave(&mut self, node: NodeId, instance_id: u64) -> Option<MembershipChange> {
        match self.peers.get(&node) {
            Some(peer) if peer.instance_id == instance_id => {
                let was_member = peer.member;
                self.peers.remove(&node);
                was_member.then_some(MembershipChange::Left(node))
            }
            _ => None,
        }
    }

    /// Removes peers that missed [`MISSED_HEARTBEATS`] heartbeats.
    ///
    /// A silent peer stops being a member, but its sequence state is kept for [`SEQUENCE_RETENTION`]: when it (or
    /// our own connection) comes back after an outage, the first batch still reveals what was missed in between.
    pub fn expire(&mut self, now: Instant) -> Vec<MembershipChange> {
        let mut gone = Vec::new();
        self.peers.retain(|node, peer| {
            let silent_for = now.duration_since(peer.last_seen);
            if peer.member && silent_for >= peer.interval * MISSED_HEARTBEATS {
                peer.member = false;
                gone.push(MembershipChange::TimedOut(*node));
            }
            silent_for < SEQUENCE_RETENTION
        });
        gone
    }

    /// Whether `node` is a live member (it sent heartbeats), as opposed to a tool or an unknown sender.
    pub fn is_member(&self, node: NodeId) -> bool {
        self.peers.get(&node).is_some_and(|p| p.member)
    }

    /// The live peers (not this node), by node id.
    pub fn members(&self) -> Vec<Member> {
        let mut members: Vec<Member> = self
            .peers
            .iter()
            .filter(|(_, peer)| peer.member)
            .map(|(node, peer)| Member {
                node_id: *node,
                instance_id: peer.instance_id,
                last_seen_ms: peer.last_seen_ms,
                started_at_ms: peer.started_at_ms,
                http: peer.http.clone(),
                stalwart_node_id: peer.stalwart_node_id,
            })
            .collect();
        members.sort_by_key(|m| m.node_id);
        members
    }
}

#[cfg(test)]
mod tests;
