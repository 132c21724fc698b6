//! Authenticated mode (`[cluster] key`) against a real nats-server: only nodes with the key can inject events, appear
//! in membership or answer/ask for state; forged messages are dropped and counted while genuine traffic flows on.

use crate::common::{collect_until_sentinels, member_ids, node, sentinel, start, wait_for, DEADLINE};

use std::sync::Arc;
use std::time::Duration;

use agora::auth::Keyring;
use agora::codec::{self, BatchEncoder};
use agora::config::{Config, NatsConfig, Secret};
use agora::stats::Stats;
use agora::{Coordinator, Event, RequestErrorKind};
use agora_testkit::NatsServer;
use bytes::Bytes;

const K1: &str = "k1: the first cluster key, long enough";
const K2: &str = "k2: the second cluster key, also long";

/// A configuration with these cluster keys (none = authentication off) and a heartbeat interval.
fn config_with(server: &NatsServer, keys: &[&str], heartbeat: Duration) -> Config {
    let mut nats = NatsConfig::with_addresses(vec![server.url()]);
    nats.request_timeout = Duration::from_millis(500);
    let mut config = Config::nats(nats);
    config.cluster.keys = keys.iter().map(|k| Secret::new(*k)).collect();
    config.cluster.heartbeat_interval = heartbeat;
    config
}

/// Heartbeats every 100 ms, for membership.
fn config(server: &NatsServer, keys: &[&str]) -> Config {
    config_with(server, keys, Duration::from_millis(100))
}

/// One heartbeat at start and then none for an hour, so a node's `records_sent` counts exactly its one heartbeat and
/// its events (see [`sent`]).
fn quiet(server: &NatsServer, keys: &[&str]) -> Config {
    config_with(server, keys, Duration::from_secs(3600))
}

/// Waits until a [`quiet`] node has handed its start-up heartbeat and `events` events to NATS, then flushes its
/// connection: everything it sent is then queued at the server ahead of anything published afterwards, by anyone.
async fn sent(c: &Coordinator, events: u64) {
    // `>`: its heartbeat is a record too.
    wait_for(DEADLINE, "the node to send its events", || {
        Stats::get(&c.stats().records_sent) > events
    })
    .await;
    c.nats_client().expect("nats mode").flush().await.expect("flush");
}

/// A batch from `from` with these events, signed with `keys` (unsigned when `None`).
fn batch(from: u16, first_seq: u64, keys: Option<&[&str]>, events: &[Event]) -> Bytes {
    let keyring = keys.map(|k| Arc::new(Keyring::new(k).expect("a key")));
    let mut enc = BatchEncoder::new(node(from), 0x5eed).with_keyring(keyring);
    enc.begin(first_seq, 1_000);
    for event in events {
        enc.push_event(event, 1_000);
    }
    enc.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_nodes_exchange_events_and_an_unkeyed_node_cannot_inject_any() {
    let server = NatsServer::start();
    let keyed = quiet(&server, &[K1]);
    let a = start(&keyed, 1).await;
    let b = start(&keyed, 2).await;
    let c = start(&quiet(&server, &[]), 3).await;
    let (mut sub_a, mut sub_b, mut sub_c) = (a.subscribe(), b.subscribe(), c.subscribe());

    // The unkeyed node goes first and its batches reach the server before anything the keyed nodes send.
    c.publish(Event::QueuePaused {}).await.expect("publish");
    c.publish(sentinel(3)).await.expect("publish");
    sent(&c, 2).await;

    for (id, n) in [(1u16, &a), (2, &b)] {
        n.publish(Event::QueueRefresh {}).await.expect("publish");
        n.publish(Event::CacheInvalidateAll {}).await.expect("publish");
        n.publish(sentinel(id)).await.expect("publish");
    }
    let expected = vec![Event::QueueRefresh {}, Event::CacheInvalidateAll {}];
    for sub in [&mut sub_a, &mut sub_b] {
        let got = collect_until_sentinels(sub, &[1, 2]).await;
        assert_eq!(got.get(&1), Some(&expected));
        assert_eq!(got.get(&2), Some(&expected));
        assert_eq!(got.get(&3), None, "nothing from the unkeyed node: {got:?}");
    }
    for n in [&a, &b] {
        let s = n.stats();
        assert_eq!(
            Stats::get(&s.unauthenticated_batches),
            Stats::get(&c.stats().batches_sent),
            "every batch of the unkeyed node was dropped and counted"
        );
        assert_eq!(Stats::get(&s.bad_mac_batches), 0);
        assert_eq!(
            Stats::total(&s.received),
            3,
            "only the keyed peer's events (and sentinel) were received"
        );
        assert_eq!(Stats::get(&s.invalid_batches), 0);
    }

    // Without a key the MAC is not checked: the unkeyed node reads the keyed nodes' signed batches (documented).
    let got = collect_until_sentinels(&mut sub_c, &[1, 2, 3]).await;
    assert_eq!(got.get(&1), Some(&expected));
    assert_eq!(got.get(&2), Some(&expected));
    assert_eq!(Stats::get(&c.stats().unauthenticated_batches), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_batches_are_dropped_and_counted_while_genuine_events_flow() {
    let server = NatsServer::start();
    let cfg = quiet(&server, &[K1]);
    let receiver = start(&cfg, 1).await;
    let sender = start(&cfg, 2).await;
    let mut sub = receiver.subscribe();
    sender.publish(Event::QueuePaused {}).await.expect("publish");
    sent(&sender, 1).await;

    let raw = async_nats::connect(server.url()).await.expect("raw client");
    let forged = Event::Reload {
        target: agora::event::ReloadTarget::Settings,
    };
    // 1. A valid batch without a MAC.
    let unsigned = batch(9, 0, None, std::slice::from_ref(&forged));
    // 2. The MAC flag with a garbage trailer.
    let mut garbage = unsigned.to_vec();
    garbage[1] = codec::FLAG_MAC;
    garbage.extend_from_slice(&[0xaa; codec::MAC_LEN]);
    // 3. A MAC made with another key.
    let wrong_key = batch(9, 0, Some(&[K2]), std::slice::from_ref(&forged));
    // 4. Another key again, impersonating the genuine sender with another instance: must not disturb its stream.
    let impersonation = batch(2, 0, Some(&[K2]), std::slice::from_ref(&forged));
    // 5. A genuine batch cut short by one byte.
    let truncated =
        batch(9, 0, Some(&[K1]), std::slice::from_ref(&forged)).slice(..unsigned.len() + codec::MAC_LEN - 1);
    for message in [unsigned, Bytes::from(garbage), wrong_key, impersonation, truncated] {
        raw.publish("agora.events", message).await.expect("raw publish");
    }
    // 6. A genuine batch from the same raw client: delivered.
    raw.publish(
        "agora.events",
        batch(9, 0, Some(&[K1]), &[Event::QueueResumed {}, sentinel(9)]),
    )
    .await
    .expect("raw publish");
    raw.flush().await.expect("flush");
    sender.publish(Event::QueueRefresh {}).await.expect("publish");
    sender.publish(sentinel(2)).await.expect("publish");

    let got = collect_until_sentinels(&mut sub, &[9, 2]).await;
    assert_eq!(
        got.get(&9),
        Some(&vec![Event::QueueResumed {}]),
        "only the genuine raw batch"
    );
    assert_eq!(got.get(&2), Some(&vec![Event::QueuePaused {}, Event::QueueRefresh {}]));
    let s = receiver.stats();
    assert_eq!(Stats::get(&s.unauthenticated_batches), 1);
    assert_eq!(Stats::get(&s.bad_mac_batches), 4);
    assert_eq!(Stats::get(&s.invalid_batches), 0);
    assert_eq!(Stats::get(&s.invalid_records), 0);
    assert_eq!(Stats::get(&s.node_id_clashes), 0, "the impersonation was not even read");
    assert_eq!(Stats::get(&s.sender_restarts), 0);
    assert_eq!(Stats::get(&s.gaps), 0);
    assert!(receiver.node_id_clash().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_signs_with_the_first_key_and_accepts_any() {
    let server = NatsServer::start();
    let a = start(&quiet(&server, &[K1]), 1).await;
    let b = start(&quiet(&server, &[K2, K1]), 2).await;
    let mut sub_a = a.subscribe();
    let mut sub_b = b.subscribe();
    let raw = async_nats::connect(server.url()).await.expect("raw client");

    // B knows k1: it accepts A's batches.
    a.publish(Event::QueuePaused {}).await.expect("publish");
    a.publish(sentinel(1)).await.expect("publish");
    let got = collect_until_sentinels(&mut sub_b, &[1]).await;
    assert_eq!(got.get(&1), Some(&vec![Event::QueuePaused {}]));

    // B signs with k2, which A does not know: A drops them all. A k1-signed sentinel sent after B's batches reached
    // the server shows that A has seen them.
    b.publish(Event::QueueResumed {}).await.expect("publish");
    b.publish(sentinel(2)).await.expect("publish");
    sent(&b, 2).await;
    raw.publish("agora.events", batch(9, 0, Some(&[K1]), &[sentinel(9)]))
        .await
        .expect("raw publish");
    raw.flush().await.expect("flush");
    let got = collect_until_sentinels(&mut sub_a, &[9]).await;
    assert_eq!(got.get(&2), None, "A read nothing of B's: {got:?}");
    assert_eq!(
        Stats::get(&a.stats().bad_mac_batches),
        Stats::get(&b.stats().batches_sent),
        "every batch B sent was dropped by A"
    );

    // A is given [k2, k1]: now both ways work.
    a.shutdown().await;
    drop((a, sub_a));
    let a = start(&quiet(&server, &[K2, K1]), 1).await;
    let mut sub_a = a.subscribe();
    a.publish(Event::QueueRefresh {}).await.expect("publish");
    a.publish(sentinel(1)).await.expect("publish");
    let got = collect_until_sentinels(&mut sub_b, &[1]).await;
    assert_eq!(got.get(&1), Some(&vec![Event::QueueRefresh {}]));
    b.publish(Event::CacheInvalidateAll {}).await.expect("publish");
    b.publish(sentinel(2)).await.expect("publish");
    let got = collect_until_sentinels(&mut sub_a, &[2]).await;
    assert_eq!(got.get(&2), Some(&vec![Event::CacheInvalidateAll {}]));

    // The rotation completes: a node with [k2] only and B interoperate both ways (and with the new A).
    let c = start(&quiet(&server, &[K2]), 3).await;
    let mut sub_c = c.subscribe();
    c.publish(Event::QueuePaused {}).await.expect("publish");
    c.publish(sentinel(3)).await.expect("publish");
    for sub in [&mut sub_a, &mut sub_b] {
        let got = collect_until_sentinels(sub, &[3]).await;
        assert_eq!(got.get(&3), Some(&vec![Event::QueuePaused {}]));
    }
    b.publish(Event::QueueResumed {}).await.expect("publish");
    b.publish(sentinel(2)).await.expect("publish");
    let got = collect_until_sentinels(&mut sub_c, &[2]).await;
    assert_eq!(got.get(&2), Some(&vec![Event::QueueResumed {}]));
    for n in [&a, &b, &c] {
        assert_eq!(Stats::get(&n.stats().bad_mac_batches), 0, "node {}", n.node_id());
        assert_eq!(Stats::get(&n.stats().unauthenticated_batches), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_the_key_do_not_appear_in_membership() {
    let server = NatsServer::start();
    let a = start(&config(&server, &[K1]), 1).await;
    let b = start(&config(&server, &[K1]), 2).await;
    let unkeyed = start(&config(&server, &[]), 3).await;
    let other_key = start(&config(&server, &[K2]), 4).await;

    wait_for(DEADLINE, "the keyed nodes to see each other", || {
        member_ids(&a) == vec![2] && member_ids(&b) == vec![1]
    })
    .await;
    // Several heartbeats of each intruder have been dropped, and none of them made it into membership.
    wait_for(DEADLINE, "the intruders' heartbeats to be dropped", || {
        [&a, &b]
            .iter()
            .all(|n| Stats::get(&n.stats().unauthenticated_batches) >= 3 && Stats::get(&n.stats().bad_mac_batches) >= 3)
    })
    .await;
    assert_eq!(member_ids(&a), vec![2]);
    assert_eq!(member_ids(&b), vec![1]);
    // The node with another key drops everyone's batches, the unkeyed one checks nothing (documented).
    wait_for(DEADLINE, "the unkeyed node to see everyone", || {
        member_ids(&unkeyed) == vec![1, 2, 4]
    })
    .await;
    assert!(member_ids(&other_key).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_replies_are_authenticated() {
    let server = NatsServer::start();
    let a = start(&config(&server, &[K1]), 1).await;
    let b = start(&config(&server, &[K1]), 2).await;
    let unkeyed = start(&config(&server, &[]), 3).await;
    let other_key = start(&config(&server, &[K2]), 4).await;
    let answer = |name: &'static str| {
        move |request: Bytes| {
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&request);
            Some(Bytes::from(reply))
        }
    };

    // Keyed to keyed: the envelope is invisible to both handler and caller.
    b.serve("snapshot", answer("b")).await.expect("serve");
    let reply = a
        .request("snapshot", Bytes::from_static(b"hi"))
        .await
        .expect("answered");
    assert_eq!(&reply[..], b"b:hi");

    // A keyed node does not answer a node without the key (nor one with another key).
    for asker in [&unkeyed, &other_key] {
        let err = asker
            .request("snapshot", Bytes::from_static(b"hi"))
            .await
            .expect_err("not answered");
        assert_eq!(err.kind(), RequestErrorKind::TimedOut, "{err}");
    }
    assert_eq!(Stats::get(&b.stats().rejected_requests), 2);

    // A keyed node does not accept a reply from a node without the key.
    unkeyed.serve("forged", answer("unkeyed")).await.expect("serve");
    let err = a
        .request("forged", Bytes::from_static(b"hi"))
        .await
        .expect_err("rejected");
    assert_eq!(err.kind(), RequestErrorKind::Unauthenticated, "{err}");
    assert!(err.to_string().contains("reply failed authentication"), "{err}");
    assert_eq!(Stats::get(&a.stats().rejected_replies), 1);

    // Nor is a node with another key answered by, or answering, a keyed one.
    other_key.serve("other", answer("other")).await.expect("serve");
    let err = a
        .request("other", Bytes::from_static(b"hi"))
        .await
        .expect_err("not answered");
    assert_eq!(err.kind(), RequestErrorKind::TimedOut, "{err}");
    assert_eq!(Stats::get(&other_key.stats().rejected_requests), 1);
}
