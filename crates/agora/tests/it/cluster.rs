//! Coordinators exchanging events through a real nats-server that the test starts itself.

use crate::common::{collect_until_sentinels, member_ids, node, sentinel, start, wait_for, DEADLINE};

use std::time::Duration;

use agora::codec::{self, BatchEncoder};
use agora::config::{Backend, Config, NatsConfig};
use agora::event::{CacheKind, PushSubscription, ReloadTarget};
use agora::stats::Stats;
use agora::{Coordinator, DataTypes, Event, Notification, StartOptions, Subscription};
use agora_testkit::NatsServer;
use bytes::Bytes;

fn config(server: &NatsServer) -> Config {
    let mut config = Config::nats(NatsConfig::with_addresses(vec![server.url()]));
    config.cluster.heartbeat_interval = Duration::from_millis(100);
    config
}

/// One event of every type.
fn every_event(tag: u32) -> Vec<Event> {
    vec![
        Event::StateChange {
            account_id: tag,
            change_id: 7,
            types: DataTypes::from_names(["Email", "Mailbox"]).expect("known"),
        },
        Event::EmailPush {
            account_id: tag,
            email_id: 3,
            change_id: 8,
        },
        Event::CalendarAlert {
            account_id: tag,
            event_id: 1,
            alert_id: "a1".into(),
            recurrence_id: Some(-5),
        },
        Event::PushSubscriptionSet(Box::new(PushSubscription::webhook(
            format!("sub-{tag}"),
            tag,
            "http://127.0.0.1:9/push",
            DataTypes::EMPTY,
        ))),
        Event::PushSubscriptionRemoved {
            id: format!("sub-{tag}"),
        },
        Event::BlockedIp {
            network: "2001:db8::/32".parse().expect("net"),
            expires_at_ms: Some(1_764_150_000_000),
            reason: Some("auth failures".into()),
        },
        Event::UnblockedIp {
            network: "203.0.113.7/32".parse().expect("net"),
        },
        Event::Reload {
            target: ReloadTarget::TlsCertificates,
        },
        Event::CertificateRenewed {
            domains: vec!["mail.example.org".into(), "ünïcode.example".into()],
        },
        Event::CacheInvalidate {
            cache: CacheKind::DkimSignature,
            key: "example.org".into(),
        },
        Event::CacheInvalidateAll {},
        Event::QueuePaused {},
        Event::QueueResumed {},
        Event::QueueRefresh {},
        Event::Custom {
            name: "app.thing".into(),
            data: Bytes::from_static(&[0, 1, 2, 255]),
        },
        Event::Stalwart(agora::stalwart::StalwartEvent::CacheInvalidate(vec![
            agora::stalwart::CacheInvalidation::Account(tag),
            agora::stalwart::CacheInvalidation::EmailNegative {
                domain_id: u32::MAX,
                local_part_hash: tag,
            },
        ])),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_every_event_type_exactly_once() {
    let server = NatsServer::start();
    let cfg = config(&server);
    let nodes = [start(&cfg, 1).await, start(&cfg, 2).await, start(&cfg, 3).await];
    let mut subs: Vec<Subscription> = nodes.iter().map(Coordinator::subscribe).collect();

    for (i, c) in nodes.iter().enumerate() {
        let id = u16::try_from(i + 1).expect("small");
        for event in every_event(u32::from(id)) {
            c.publish(event).await.expect("publish");
        }
        c.publish(sentinel(id)).await.expect("publish sentinel");
    }

    for (i, sub) in subs.iter_mut().enumerate() {
        let got = collect_until_sentinels(sub, &[1, 2, 3]).await;
        for origin in 1..=3u16 {
            assert_eq!(
                got.get(&origin).cloned().unwrap_or_default(),
                every_event(u32::from(origin)),
                "node {} received node {origin}'s events (local and remote, once each, in order)",
                i + 1
            );
        }
    }
    for c in &nodes {
        let s = c.stats();
        assert_eq!(
            Stats::get(&s.echoes_filtered),
            0,
            "no-echo: the server sends nothing back"
        );
        assert_eq!(Stats::get(&s.invalid_records), 0);
        assert_eq!(Stats::get(&s.gaps), 0);
        assert_eq!(
            Stats::total(&s.received),
            2 * (every_event(0).len() as u64 + 1),
            "only remote events count as received (every event and a sentinel from each of two peers)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_no_echo_own_events_are_still_delivered_once() {
    let server = NatsServer::start();
    let mut cfg = config(&server);
    if let Backend::Nats { config, .. } = &mut cfg.backend {
        config.no_echo = false;
    }
    let a = start(&cfg, 1).await;
    let b = start(&cfg, 2).await;
    let mut sub = a.subscribe();
    a.publish(Event::QueueRefresh {}).await.expect("publish");
    a.publish(sentinel(1)).await.expect("publish");
    b.publish(sentinel(2)).await.expect("publish");
    let got = collect_until_sentinels(&mut sub, &[1, 2]).await;
    assert_eq!(got.get(&1).cloned().unwrap_or_default(), vec![Event::QueueRefresh {}]);
    assert!(
        agora_testkit::wait_until(DEADLINE, || Stats::get(&a.stats().echoes_filtered) >= 2),
        "the echoed batches were filtered by sender id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_follows_leave_restart_and_timeouts() {
    let server = NatsServer::start();
    let cfg = config(&server);
    let a = start(&cfg, 1).await;
    let b = start(&cfg, 2).await;
    let c = start(&cfg, 3).await;
    wait_for(DEADLINE, "node 1 to see nodes 2 and 3", || member_ids(&a) == vec![2, 3]).await;

    c.shutdown().await;
    wait_for(DEADLINE, "node 3 to leave", || member_ids(&a) == vec![2]).await;
    drop(c);

    let c2 = start(&cfg, 3).await;
    wait_for(DEADLINE, "node 3 to come back", || member_ids(&a) == vec![2, 3]).await;
    assert_ne!(
        a.members().iter().find(|m| m.node_id == node(3)).map(|m| m.instance_id),
        None
    );
    assert_eq!(
        a.members()[1].instance_id,
        c2.instance_id(),
        "the new instance is the member"
    );

    // A node that dies without leaving times out after three missed heartbeats.
    drop(b);
    wait_for(DEADLINE, "node 2 to time out", || member_ids(&a) == vec![3]).await;
    assert!(a.node_id_clash().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_clash_is_detected_by_both_processes_and_their_peers() {
    let server = NatsServer::start();
    let cfg = config(&server);
    let first = start(&cfg, 7).await;
    let observer = start(&cfg, 8).await;
    let second = start(&cfg, 7).await;
    wait_for(DEADLINE, "both processes with node id 7 to report the clash", || {
        first.node_id_clash().is_some() && second.node_id_clash().is_some()
    })
    .await;
    let clash = first.node_id_clash().expect("clash");
    assert_eq!(clash.node_id, node(7));
    assert!(clash.involves_us);
    wait_for(DEADLINE, "a third node to notice the alternating instances", || {
        observer.node_id_clash().is_some()
    })
    .await;
    assert!(Stats::get(&first.stats().node_id_clashes) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_corrupt_records_are_skipped_and_the_rest_of_the_batch_delivered() {
    let server = NatsServer::start();
    let cfg = config(&server);
    let receiver = start(&cfg, 1).await;
    let mut sub = receiver.subscribe();

    // A hand-made batch from node 9: good, unknown tag, corrupt body, good.
    let good = |event: &Event| {
        let mut enc = BatchEncoder::new(node(9), 42);
        enc.begin(0, 1_000);
        enc.push_event(event, 1_000);
        enc.finish()[codec::HEADER_LEN..].to_vec()
    };
    let first = Event::QueuePaused {};
    let last = Event::Reload {
        target: ReloadTarget::Settings,
    };
    let mut batch = Vec::new();
    batch.push(codec::VERSION);
    batch.push(0);
    batch.extend_from_slice(&9u16.to_be_bytes());
    batch.extend_from_slice(&42u64.to_be_bytes());
    batch.extend_from_slice(&0u64.to_be_bytes());
    batch.extend_from_slice(&1_000u64.to_be_bytes());
    batch.extend_from_slice(&4u32.to_be_bytes());
    batch.extend_from_slice(&good(&first));
    batch.extend_from_slice(&[0x8F, 0x4E, 0, 3, 1, 2, 3]); // tag 9999, dt 0, 3 bytes of body
    batch.extend_from_slice(&[8, 0, 1, 200]); // reload with an unknown target code
    batch.extend_from_slice(&good(&last));

    let raw = async_nats::connect(server.url()).await.expect("raw client");
    raw.publish("agora.events", Bytes::from(batch))
        .await
        .expect("raw publish");
    raw.publish("agora.events", Bytes::from_static(b"\x00garbage that is not a batch"))
        .await
        .expect("raw publish");
    raw.flush().await.expect("flush");

    let mut events = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while events.len() < 2 {
            if let Some(Notification::Event(d)) = sub.recv().await {
                assert_eq!(d.origin, node(9));
                events.push(d.event.clone());
            }
        }
    })
    .await
    .expect("the two good events arrive");
    assert_eq!(events, vec![first, last]);
    let stats = receiver.stats();
    wait_for(DEADLINE, "the garbage message to be counted", || {
        Stats::get(&stats.invalid_batches) == 1
    })
    .await;
    assert_eq!(Stats::get(&stats.invalid_records), 2);
    assert_eq!(
        Stats::get(&stats.gaps),
        0,
        "skipped records still consume their sequence numbers"
    );

    // The node is still fine.
    let other = start(&cfg, 2).await;
    other.publish(sentinel(2)).await.expect("publish");
    let got = collect_until_sentinels(&mut sub, &[2]).await;
    assert!(got.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_batch_is_detected_as_a_gap_and_announced() {
    let server = NatsServer::start();
    let cfg = config(&server);
    let receiver = start(&cfg, 1).await;
    let mut sub = receiver.subscribe();
    let raw = async_nats::connect(server.url()).await.expect("raw client");
    let mut enc = BatchEncoder::new(node(5), 77);
    for first_seq in [0u64, 1, 4] {
        // seqs 2 and 3 never sent
        enc.begin(first_seq, 1);
        enc.push_event(&Event::QueueRefresh {}, 1);
        raw.publish("agora.events", enc.finish()).await.expect("publish");
    }
    raw.flush().await.expect("flush");
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while seen.len() < 4 {
            match sub.recv().await.expect("alive") {
                Notification::Event(_) => seen.push("event".to_string()),
                Notification::Resync { node: n, missed, .. } => seen.push(format!("resync {n} {missed}")),
                Notification::Lagged { .. } => panic!("lagged"),
            }
        }
    })
    .await
    .expect("notifications arrive");
    assert_eq!(seen, ["event", "event", "resync 5 2", "event"]);
    assert_eq!(Stats::get(&receiver.stats().missed_records), 2);
}

/// Reads notifications until `n` have arrived, as short labels.
async fn labels(sub: &mut Subscription, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while seen.len() < n {
            match sub.recv().await.expect("alive") {
                Notification::Event(d) => seen.push(format!("{} from {}", d.event.type_name(), d.origin)),
                Notification::Resync { node: n, missed, .. } => seen.push(format!("resync {n} {missed}")),
                Notification::Lagged { missed } => seen.push(format!("lagged {missed}")),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {seen:?} arrived"));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_whose_sequence_wraps_past_u64_max_keeps_being_heard() {
    let server = NatsServer::start();
    let receiver = start(&config(&server), 1).await;
    let mut sub = receiver.subscribe();
    let raw = async_nats::connect(server.url()).await.expect("raw client");
    let mut enc = BatchEncoder::new(node(6), 66);
    // Records u64::MAX-1; u64::MAX, 0 (the wrap); 1; then 3 after a real gap of one (2).
    for (first_seq, count) in [(u64::MAX - 1, 1), (u64::MAX, 2), (1, 1), (3, 1)] {
        enc.begin(first_seq, 1);
        for _ in 0..count {
            enc.push_event(&Event::QueueRefresh {}, 1);
        }
        raw.publish("agora.events", enc.finish()).await.expect("publish");
    }
    raw.flush().await.expect("flush");
    let event = "queue_refresh from 6";
    assert_eq!(
        labels(&mut sub, 6).await,
        [event, event, event, event, "resync 6 1", event],
        "nothing after the wrap is dropped, and a gap across it is still counted exactly"
    );
    assert_eq!(Stats::get(&receiver.stats().missed_records), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_records_a_truncated_batch_never_delivered_are_reported_as_missed() {
    let server = NatsServer::start();
    let receiver = start(&config(&server), 1).await;
    let mut sub = receiver.subscribe();
    let raw = async_nats::connect(server.url()).await.expect("raw client");
    let mut enc = BatchEncoder::new(node(7), 77);
    enc.begin(0, 1);
    for _ in 0..5 {
        enc.push_event(&Event::QueueRefresh {}, 1);
    }
    let whole = enc.finish();
    // Cut inside the third record: two arrive, the third is truncated, the last two never arrive.
    let record = (whole.len() - codec::HEADER_LEN) / 5;
    let cut = whole.slice(..codec::HEADER_LEN + 2 * record + 1);
    raw.publish("agora.events", cut).await.expect("publish");
    enc.begin(5, 1);
    enc.push_event(&Event::QueuePaused {}, 1);
    raw.publish("agora.events", enc.finish()).await.expect("publish");
    raw.flush().await.expect("flush");
    assert_eq!(
        labels(&mut sub, 4).await,
        [
            "queue_refresh from 7",
            "queue_refresh from 7",
            "resync 7 2",
            "queue_paused from 7"
        ],
    );
    let stats = receiver.stats();
    assert_eq!(Stats::get(&stats.invalid_records), 1, "the cut record");
    assert_eq!(Stats::get(&stats.missed_records), 2, "the two after it");
    assert_eq!(
        Stats::get(&stats.gaps),
        1,
        "and the next batch is in sequence: no second gap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_mode_delivers_locally_with_the_same_api() {
    let c = Coordinator::start(&Config::default(), StartOptions::default())
        .await
        .expect("single node starts");
    assert!(c.is_single_node());
    assert!(c.link_state().is_healthy());
    let mut sub = c.subscribe();
    c.publish(Event::QueuePaused {}).await.expect("publish");
    c.try_publish(Event::QueueResumed {}).expect("try_publish");
    for expected in [Event::QueuePaused {}, Event::QueueResumed {}] {
        match sub.recv().await {
            Some(Notification::Event(d)) => {
                assert_eq!(d.event, expected);
                assert_eq!(d.origin, c.node_id());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_is_told_how_much_it_missed() {
    let c = Coordinator::start(
        &Config::default(),
        StartOptions {
            subscriber_capacity: 4,
            ..StartOptions::default()
        },
    )
    .await
    .expect("start");
    let mut sub = c.subscribe();
    for _ in 0..10 {
        c.publish(Event::QueueRefresh {}).await.expect("publish");
    }
    match sub.recv().await {
        Some(Notification::Lagged { missed }) => assert_eq!(missed, 6),
        other => panic!("expected a lag notice, got {other:?}"),
    }
    assert_eq!(Stats::get(&c.stats().subscriber_lagged), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_larger_than_max_payload_is_rejected_and_nothing_else_is_lost() {
    let server = NatsServer::start_with_config("max_payload: 4096", &[]);
    let cfg = config(&server);
    let a = start(&cfg, 1).await;
    let b = start(&cfg, 2).await;
    let mut sub = b.subscribe();
    let big = Event::Custom {
        name: "big".into(),
        data: Bytes::from(vec![0u8; 8192]),
    };
    let err = a.publish(big).await.expect_err("too large");
    assert!(
        matches!(err, agora::PublishError::TooLarge { max, .. } if max < 4096),
        "{err}"
    );
    // Many small events still batch under the limit and all arrive.
    for i in 0..500u32 {
        a.publish(Event::StateChange {
            account_id: i,
            change_id: u64::from(i),
            types: DataTypes::from_names(["Email"]).expect("known"),
        })
        .await
        .expect("publish");
    }
    a.publish(sentinel(1)).await.expect("publish");
    let got = collect_until_sentinels(&mut sub, &[1]).await;
    assert_eq!(got.get(&1).map(Vec::len), Some(500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_answered_and_unanswered_ones_fail_fast() {
    let server = NatsServer::start();
    let cfg = config(&server);
    let a = start(&cfg, 1).await;
    let b = start(&cfg, 2).await;
    let started = std::time::Instant::now();
    let err = a
        .request("echo", Bytes::from_static(b"hi"))
        .await
        .expect_err("nobody serves echo");
    assert_eq!(err.kind(), agora::RequestErrorKind::NoResponders, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no-responders must not wait for timeout.request"
    );

    b.serve("echo", |payload| {
        let mut reply = b"echo:".to_vec();
        reply.extend_from_slice(&payload);
        Some(Bytes::from(reply))
    })
    .await
    .expect("serve");
    let reply = a.request("echo", Bytes::from_static(b"hi")).await.expect("answered");
    assert_eq!(&reply[..], b"echo:hi");
}
