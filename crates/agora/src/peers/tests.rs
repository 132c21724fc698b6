//! The peer table against scripted batches and heartbeats, with explicit times: membership, gaps, clashes, jumps.

use super::*;

fn node(n: u16) -> NodeId {
    NodeId::new(n).expect("non-zero")
}

fn header(n: u16, instance_id: u64, first_seq: u64, count: u32) -> BatchHeader {
    BatchHeader {
        node_id: node(n),
        instance_id,
        first_seq,
        base_time_us: 0,
        count,
    }
}

#[test]
fn in_order_batches_report_nothing_and_gaps_report_their_size() {
    let now = Instant::now();
    let mut table = PeerTable::new(node(1), 10, Duration::from_secs(1));
    assert!(table.observe_batch(&header(2, 20, 0, 5), now, 0).new_sender);
    assert_eq!(
        table.observe_batch(&header(2, 20, 5, 3), now, 0),
        BatchVerdict::default()
    );
    let verdict = table.observe_batch(&header(2, 20, 12, 1), now, 0);
    assert_eq!(verdict.missed, 4);
    let dup = table.observe_batch(&header(2, 20, 11, 3), now, 0);
    assert_eq!(dup.skip, 2);
}

#[test]
fn sequence_numbers_wrap_past_u64_max_without_a_gap() {
    let now = Instant::now();
    let mut table = PeerTable::new(node(1), 10, Duration::from_secs(1));
    assert!(table.observe_batch(&header(2, 20, u64::MAX - 2, 2), now, 0).new_sender);
    // u64::MAX, 0, 1: the batch that wraps is in order.
    assert_eq!(
        table.observe_batch(&header(2, 20, u64::MAX, 3), now, 0),
        BatchVerdict::default()
    );
    assert_eq!(
        table.observe_batch(&header(2, 20, 2, 1), now, 0),
        BatchVerdict::default(),
        "and so is the one after it"
    );
    // A gap across the wrap is counted exactly, and a repeat across it is skipped.
    let mut table = PeerTable::new(node(1), 10, Duration::from_secs(1));
    table.observe_batch(&header(2, 20, u64::MAX - 1, 1), now, 0);
    assert_eq!(table.observe_batch(&header(2, 20, 3, 1), now, 0).missed, 4);
    assert_eq!(table.observe_batch(&header(2, 20, u64::MAX, 6), now, 0).skip, 5);
}

#[test]
fn serial_distance_is_modulo_two_to_the_64() {
    assert_eq!(serial_distance(5, 5), Distance::Same);
    assert_eq!(serial_distance(5, 9), Distance::Ahead(4));
    assert_eq!(serial_distance(9, 5), Distance::Behind(4));
    assert_eq!(serial_distance(u64::MAX, 1), Distance::Ahead(2));
    assert_eq!(serial_distance(1, u64::MAX), Distance::Behind(2));
}

#[test]
fn own_messages_are_flagged_and_a_second_process_with_our_id_is_a_clash() {
    let now = Instant::now();
    let mut table = PeerTable::new(node(1), 10, Duration::from_secs(1));
    let own = table.observe_batch(&header(1, 10, 0, 1), now, 0);
    assert!(own.own && own.clash.is_none());
    let other = table.observe_batch(&header(1, 11, 0, 1), now, 0);
    assert!(other.own);
    let clash = other.clash.expect("clash reported");
    assert!(clash.involves_us);
    assert!(
        table.observe_batch(&header(1, 11, 1, 1), now, 0).clash.is_none(),
        "reported once"
    );
}

#[test]
fn a_restart_is_not_a_clash_but_alternating_instances_are() {
    let now = Instant::now();
    let mut table = PeerTable::new(node(1), 10, Duration::from_secs(1));
    table.observe_batch(&header(2, 20, 0, 1), now, 0);
    let restart = table.observe_batch(&header(2, 21, 0, 1), now, 0);
    assert!(restart.restarted && restart.clash.is_none());
    let back = table.observe_batch(&header(2, 20, 1, 1), now, 0);
    assert_eq!(back.clash.map(|c| c.node_id), Some(node(2)));
}

#[test]
fn silent_peers_expire_and_leaving_peers_go_at_once() {
    let start = Instant::now();
    let mut table = PeerTable::new(node(1), 10, Duration::from_millis(100));
    let hb = Heartbeat {
        interval_ms: 100,
        started_at_ms: 1,
        http: None,
        stalwart_node_id: None,
    };
    table.observe_batch(&header(2, 20, 0, 1), start, 0);
    table.observe_batch(&header(3, 30, 0, 1), start, 0);
    table.observe_batch(&header(4, 40, 0, 1), start, 0);
    assert!(
        table.members().is_empty(),
        "a sender without heartbeats is a tool, not a member"
    );
    assert!(table.on_heartbeat(node(2), 20, &hb));
    assert!(!table.on_heartbeat(node(2), 20, &hb), "joins once");
    assert!(table.on_heartbeat(node(3), 30, &hb));
    assert_eq!(table.members().len(), 2);
    assert_eq!(table.on_leave(node(3), 30), Some(MembershipChange::Left(node(3))));
    assert!(table.expire(start + Duration::from_millis(250)).is_empty());
    assert_eq!(
        table.expire(start + Duration::from_millis(350)),
        vec![MembershipChange::TimedOut(node(2))]
    );
    assert!(table.members().is_empty());
    assert!(table.observe_batch(&header(3, 31, 0, 1), start, 0).new_sender);
    // Node 2 timed out, but when it speaks again after the outage its gap is still seen.
    let back = table.observe_batch(&header(2, 20, 9, 1), start + Duration::from_secs(5), 0);
    assert_eq!(back.missed, 8, "sequence state survives the membership timeout");
    assert!(!back.new_sender);
}

#[test]
fn announced_intervals_are_bounded_and_clash_memory_too() {
    let now = Instant::now();
    let mut table = PeerTable::new(node(1), 10, Duration::from_secs(1));
    table.observe_batch(&header(2, 20, 0, 1), now, 0);
    let forged = Heartbeat {
        interval_ms: u32::MAX,
        started_at_ms: 0,
        http: None,
        stalwart_node_id: None,
    };
    assert!(table.on_heartbeat(node(2), 20, &forged));
    let silent = now + Duration::from_secs(10) * MISSED_HEARTBEATS + Duration::from_secs(1);
    assert_eq!(
        table.expire(silent),
        vec![MembershipChange::TimedOut(node(2))],
        "an interval of 49 days is held to ten of ours (10 s)"
    );
    for n in 2..(MAX_TRACKED_SENDERS as u16 + 100) {
        table.observe_batch(&header(n, 20, 0, 1), now, 0);
    }
    assert_eq!(table.peers.len(), MAX_TRACKED_SENDERS, "senders tracked are bounded");
    for i in 0..(MAX_REPORTED_CLASHES as u64 + 10) {
        table.observe_batch(&header(1, 1000 + i, 0, 1), now, 0);
    }
    assert!(table.reported_clashes.len() <= MAX_REPORTED_CLASHES);
}

#[test]
fn a_forged_jump_is_undone_by_two_batches_that_continue_the_genuine_sequence() {
    let now = Instant::now();
    let mut table = PeerTable::new(node(1), 10, Duration::from_secs(1));
    table.observe_batch(&header(2, 20, 0, 5), now, 0);
    // One forged batch with the peer's ids, far ahead.
    let forged = table.observe_batch(&header(2, 20, 1 << 62, 1), now, 0);
    assert_eq!(forged.missed, (1 << 62) - 5);
    // The genuine sender goes on from 5: delivered in full, not taken for repeats.
    let first = table.observe_batch(&header(2, 20, 5, 2), now, 0);
    assert_eq!((first.skip, first.jump_undone), (0, false));
    let second = table.observe_batch(&header(2, 20, 7, 1), now, 0);
    assert_eq!((second.skip, second.jump_undone), (0, true), "two batches prove it");
    assert_eq!(
        table.observe_batch(&header(2, 20, 8, 1), now, 0),
        BatchVerdict::default(),
        "and the sequence is the genuine one again"
    );
    assert_eq!(
        table.observe_batch(&header(2, 20, 8, 1), now, 0).skip,
        1,
        "repeats are still skipped"
    );
}

#[test]
fn a_genuine_gap_is_not_undone_and_a_late_batch_from_inside_it_is_delivered_once() {
    let now = Instant::now();
    let mut table = PeerTable::new(node(1), 10, Duration::from_secs(1));
    table.observe_batch(&header(2, 20, 0, 5), now, 0);
    assert_eq!(table.observe_batch(&header(2, 20, 8, 2), now, 0).missed, 3);
    assert_eq!(
        table.observe_batch(&header(2, 20, 10, 1), now, 0),
        BatchVerdict::default()
    );
    // The lost batch arrives late (e.g. a redelivery): its records never arrived, so they are delivered.
    assert_eq!(table.observe_batch(&header(2, 20, 5, 3), now, 0).skip, 0);
    assert_eq!(
        table.observe_batch(&header(2, 20, 5, 3), now, 0).skip,
        3,
        "but only once"
    );
    assert_eq!(
        table.observe_batch(&header(2, 20, 11, 1), now, 0),
        BatchVerdict::default()
    );
}

#[test]
fn replaced_instances_remembered_are_bounded() {
    let now = Instant::now();
    let mut table = PeerTable::new(node(1), 10, Duration::from_secs(1));
    for instance in 0..1000 {
        table.observe_batch(&header(2, instance, 0, 1), now, 0);
    }
    assert!(table.peers[&node(2)].retired.len() <= MAX_RETIRED);
}

#[test]
fn with_a_key_a_jump_is_a_loss_and_is_never_undone() {
    let now = Instant::now();
    let mut table = PeerTable::new(node(1), 10, Duration::from_secs(1)).without_jump_recovery();
    table.observe_batch(&header(2, 20, 0, 5), now, 0);
    assert_eq!(table.observe_batch(&header(2, 20, 9, 1), now, 0).missed, 4);
    assert_eq!(
        table.observe_batch(&header(2, 20, 5, 2), now, 0).skip,
        2,
        "a replay from the gap is skipped"
    );
    assert_eq!(table.observe_batch(&header(2, 20, 7, 2), now, 0).skip, 2);
    assert_eq!(
        table.observe_batch(&header(2, 20, 10, 1), now, 0),
        BatchVerdict::default()
    );
}

#[test]
fn a_full_table_forgets_senders_that_are_not_members_first() {
    let now = Instant::now();
    let mut table = PeerTable::new(node(1), 10, Duration::from_secs(1));
    let heartbeat = Heartbeat {
        interval_ms: 1000,
        started_at_ms: 0,
        http: None,
        stalwart_node_id: None,
    };
    table.observe_batch(&header(2, 20, 0, 1), now, 0);
    assert!(table.on_heartbeat(node(2), 20, &heartbeat));
    let later = now + Duration::from_millis(1);
    for n in 3..(MAX_TRACKED_SENDERS as u16 + 200) {
        table.observe_batch(&header(n, 20, 0, 1), later, 0);
    }
    assert!(
        table.is_member(node(2)),
        "the member heard first stays: the flood of non-members gives way"
    );
}
