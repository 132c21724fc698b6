//! Agora on a Stalwart cluster's bus, against a real nats-server: Stalwart-format batches published by a plain NATS
//! client, and the bytes agora forwards read back by a plain subscriber.

use std::time::Duration;

use crate::common::{member_ids, node, start, wait_for, DEADLINE};
use agora::config::{Config, NatsAuth, NatsConfig, Secret, StalwartConfig};
use agora::stalwart::{ObjectType, StalwartEvent, StalwartVersion};
use agora::stats::Stats;
use agora::{ConnectErrorKind, Coordinator, DataTypes, Event, Notification, Origin, PublishError, Role, StartError};
use agora::{StartOptions, Subscription};
use agora_testkit::NatsServer;
use bytes::Bytes;
use futures::StreamExt;

const SUBJECT: &str = "stwt.agora";

fn config(server: &NatsServer, version: &str, node_id: Option<u16>, forward: &[&'static str]) -> Config {
    let mut config = Config::nats(NatsConfig::with_addresses(vec![server.url()]));
    config.cluster.heartbeat_interval = Duration::from_millis(100);
    config.stalwart = Some(StalwartConfig {
        version: version.parse().expect("version"),
        subject: SUBJECT.into(),
        node_id,
        forward: forward.to_vec(),
    });
    config
}

async fn raw(server: &NatsServer) -> async_nats::Client {
    async_nats::connect(server.url()).await.expect("raw client")
}

/// The next notification, or a panic naming what was awaited.
async fn next(sub: &mut Subscription, what: &str) -> Notification {
    tokio::time::timeout(DEADLINE, sub.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("alive")
}

/// The next raw message on the Stalwart subject.
async fn next_raw(sub: &mut async_nats::Subscriber) -> Bytes {
    tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("a message on the Stalwart subject")
        .expect("subscription alive")
        .payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalwart_batches_are_delivered_once_decoded_with_their_sender_and_a_cut_batch_is_reported() {
    let server = NatsServer::start();
    let c = start(&config(&server, "0.16.18", None, &[]), 1).await;
    let mut sub = c.subscribe();
    let raw = raw(&server).await;
    // Node 3: StateChange {change 7, Email|Mailbox, account 42}; RegistryReload(BlockedIp); then a CalendarAlert whose
    // uid claims 2^62 bytes (the message that crashes Stalwart itself).
    let mut batch = vec![0x03, 0x00, 0x07, 0x09, 0x2a, 0x06, 0x11];
    batch.extend_from_slice(&[
        0x01, 0x01, 0x02, 0x00, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40,
    ]);
    raw.publish(SUBJECT, batch.into()).await.expect("publish");
    raw.flush().await.expect("flush");

    let Notification::Event(first) = next(&mut sub, "the state change").await else {
        panic!("not an event")
    };
    assert_eq!(first.origin, Origin::Stalwart(3));
    assert_eq!(
        first.event,
        Event::StateChange {
            account_id: 42,
            change_id: 7,
            types: DataTypes::from_names(["Email", "Mailbox"]).expect("types"),
        }
    );
    let Notification::Event(second) = next(&mut sub, "the registry reload").await else {
        panic!("not an event")
    };
    assert_eq!(
        second.event,
        Event::Stalwart(StalwartEvent::RegistryReload { object: ObjectType(17) })
    );
    let s = c.stalwart_stats().expect("[stalwart] stats");
    assert_eq!(Stats::get(&s.invalid_batches), 1);
    let kind =
        |k: &str| Stats::get(&s.events_received[StalwartEvent::KINDS.iter().position(|x| *x == k).expect("kind")]);
    assert_eq!(
        (kind("StateChange"), kind("RegistryReload"), kind("CalendarAlert")),
        (1, 1, 0)
    );
    assert_eq!(
        s.senders().iter().map(|s| (s.node_id, s.events)).collect::<Vec<_>>(),
        [(3, 2)]
    );

    // Garbage and a node id beyond u16 are counted, and the node keeps reading.
    for garbage in [&[0x80u8, 0x80, 0x04][..], &[0x05, 0xff]] {
        raw.publish(SUBJECT, Bytes::copy_from_slice(garbage))
            .await
            .expect("publish");
    }
    raw.publish(SUBJECT, Bytes::from_static(&[0x00, 0x08]))
        .await
        .expect("publish"); // node 0: CacheInvalidateAll
    raw.flush().await.expect("flush");
    // Nothing on the Stalwart subject (truncated batches, unknown tags) makes subscribers resync: the next thing
    // they get is node 0's event.
    match next(&mut sub, "node 0's event").await {
        Notification::Event(d) => assert_eq!(
            (d.origin, &d.event),
            (Origin::Stalwart(0), &Event::CacheInvalidateAll {})
        ),
        other => panic!("expected node 0's event and nothing else, got {other:?}"),
    }
    assert_eq!(Stats::get(&s.invalid_batches), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_events_are_the_exact_bytes_of_the_configured_release_at_most_100_a_message() {
    let server = NatsServer::start();
    let raw = raw(&server).await;
    let mut wire = raw.subscribe(SUBJECT).await.expect("subscribe");
    raw.flush().await.expect("flush");
    let c = start(
        &config(
            &server,
            "0.16.18",
            Some(65000),
            &["queue_refresh", "stalwart", "state_change"],
        ),
        1,
    )
    .await;
    // LEB128(65000) = e8 fb 03.
    c.publish(Event::QueueRefresh {}).await.expect("publish");
    assert_eq!(next_raw(&mut wire).await.as_ref(), [0xe8, 0xfb, 0x03, 0x0c]);
    c.publish(Event::Stalwart(StalwartEvent::RegistryDelete {
        object: ObjectType(17),
        id: 300,
    }))
    .await
    .expect("publish");
    assert_eq!(
        next_raw(&mut wire).await.as_ref(),
        [0xe8, 0xfb, 0x03, 0x05, 0x11, 0xac, 0x02]
    );
    // Not in `forward`: stays on agora's bus.
    c.publish(Event::QueuePaused {}).await.expect("publish");
    // A burst is split into messages of at most 100 events.
    for i in 0..250u64 {
        c.publish(Event::StateChange {
            account_id: 1,
            change_id: i,
            types: DataTypes::EMPTY,
        })
        .await
        .expect("publish");
    }
    let mut events = 0;
    while events < 250 {
        let message = next_raw(&mut wire).await;
        let batch = agora::stalwart::decode_batch(StalwartVersion::v0_16(18), &message).expect("decodes");
        assert!(batch.error.is_none() && batch.node_id == 65000);
        assert!(
            batch.events.len() <= 100,
            "{} events in one message",
            batch.events.len()
        );
        assert!(
            batch
                .events
                .iter()
                .all(|e| matches!(e, StalwartEvent::StateChange { .. })),
            "queue_paused not sent"
        );
        events += batch.events.len();
    }
    assert_eq!(events, 250);
    let s = c.stalwart_stats().expect("stats");
    assert_eq!(Stats::get(&s.events_forwarded), 252);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_configured_release_cannot_decode_is_refused_with_the_reason_and_never_sent() {
    let server = NatsServer::start();
    let raw = raw(&server).await;
    let mut wire = raw.subscribe(SUBJECT).await.expect("subscribe");
    raw.flush().await.expect("flush");
    let c = start(
        &config(&server, "0.16.11", Some(65000), &["queue_refresh", "stalwart"]),
        1,
    )
    .await;
    let err = c
        .publish(Event::QueueRefresh {})
        .await
        .expect_err("0.16.11 has no QueueRefresh");
    assert!(matches!(err, PublishError::StalwartCannotDecode { .. }), "{err}");
    assert!(err.to_string().contains("0.16.12"), "{err}");
    let err = c
        .publish(Event::Stalwart(StalwartEvent::ReloadSpamFilter))
        .await
        .expect_err("a 0.15 event for a 0.16 cluster");
    assert!(err.to_string().contains("0.15"), "{err}");
    c.publish(Event::Stalwart(StalwartEvent::CacheInvalidateNegative))
        .await
        .expect("0.16.11 has this one");
    assert_eq!(
        next_raw(&mut wire).await.as_ref(),
        [0xe8, 0xfb, 0x03, 0x09],
        "only the decodable one was sent"
    );
    assert_eq!(Stats::get(&c.stalwart_stats().expect("stats").events_refused), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_reaches_each_agora_node_once_whichever_bus_it_came_by() {
    let server = NatsServer::start();
    let forward = &["state_change", "stalwart"];
    let a = start(&config(&server, "0.16.18", Some(65001), forward), 1).await;
    let b = start(&config(&server, "0.16.18", Some(65002), forward), 2).await;
    wait_for(DEADLINE, "the nodes to see each other", || {
        member_ids(&a) == [2] && member_ids(&b) == [1]
    })
    .await;
    wait_for(DEADLINE, "their Stalwart ids to be announced", || {
        b.members().iter().any(|m| m.stalwart_node_id == Some(65001))
    })
    .await;
    let mut sub_b = b.subscribe();
    let mut sub_a = a.subscribe();
    let change = |i| Event::StateChange {
        account_id: 9,
        change_id: i,
        types: DataTypes::EMPTY,
    };
    for i in 0..20 {
        a.publish(change(i)).await.expect("publish");
    }
    // A Stalwart node (id 7) speaks too; then a sentinel from each agora node.
    let raw = raw(&server).await;
    raw.publish(SUBJECT, Bytes::from_static(&[0x07, 0x09]))
        .await
        .expect("publish"); // CacheInvalidateNegative
    raw.flush().await.expect("flush");
    let sentinel = Event::Custom {
        name: "end".into(),
        data: Bytes::new(),
    };
    // The raw client is another connection: wait until b (and a) read its message, and b read a's 20 copies.
    wait_for(
        DEADLINE,
        "both nodes to read the Stalwart node and b a's 20 forwarded copies",
        || {
            let heard_7 = |c: &Coordinator| {
                c.stalwart_stats()
                    .is_some_and(|s| s.senders().iter().any(|s| s.node_id == 7))
            };
            heard_7(&a) && heard_7(&b) && Stats::get(&b.stalwart_stats().expect("stats").forwarded_copies_skipped) >= 20
        },
    )
    .await;
    a.publish(sentinel.clone()).await.expect("publish");
    let mut seen_by_b = Vec::new();
    loop {
        match next(&mut sub_b, "a's events on b").await {
            Notification::Event(d) if d.event == sentinel => break,
            Notification::Event(d) => seen_by_b.push((d.origin, d.event.clone())),
            other => panic!("{other:?}"),
        }
    }
    let from_a: Vec<_> = seen_by_b.iter().filter(|(o, _)| *o == Origin::Agora(node(1))).collect();
    assert_eq!(
        from_a.len(),
        20,
        "each of a's events once, through agora's bus: {seen_by_b:?}"
    );
    let from_stalwart: Vec<_> = seen_by_b.iter().filter(|(o, _)| *o == Origin::Stalwart(7)).collect();
    assert_eq!(from_stalwart.len(), 1, "the Stalwart node's event once: {seen_by_b:?}");
    assert!(
        seen_by_b.iter().all(|(o, _)| *o != Origin::Stalwart(65001)),
        "a's forwarded copies are skipped"
    );
    assert!(Stats::get(&b.stalwart_stats().expect("stats").forwarded_copies_skipped) >= 20);
    // a saw its own events once (locally) and the Stalwart node's once.
    let mut own = 0;
    let mut stalwart = 0;
    while own < 21 || stalwart < 1 {
        match next(&mut sub_a, "a's own events").await {
            Notification::Event(d) if d.origin == Origin::Agora(node(1)) => own += 1,
            Notification::Event(d) if d.origin == Origin::Stalwart(7) => stalwart += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(a.stalwart_node_id_clash().is_none() && b.stalwart_node_id_clash().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_sender_with_this_nodes_stalwart_id_is_a_clash_but_a_tools_forwarded_copy_is_not() {
    let server = NatsServer::start();
    let cfg = config(&server, "0.16.18", Some(65001), &["queue_refresh"]);
    let a = start(&cfg, 1).await;
    let mut sub = a.subscribe();
    // `agora publish` with the node's own file: the tool forwards with the same Stalwart id.
    let tool = Coordinator::start(
        &cfg,
        StartOptions {
            role: Role::Tool,
            ..StartOptions::default()
        },
    )
    .await
    .expect("tool starts");
    tool.publish(Event::QueueRefresh {}).await.expect("publish");
    match next(&mut sub, "the tool's event").await {
        Notification::Event(d) => assert_eq!((d.origin.bus(), &d.event), ("agora", &Event::QueueRefresh {})),
        other => panic!("{other:?}"),
    }
    tool.shutdown().await;
    wait_for(DEADLINE, "a to read the tool's copy on the Stalwart subject", || {
        Stats::get(&a.stalwart_stats().expect("stats").batches_received) >= 1
    })
    .await;
    assert_eq!(a.stalwart_node_id_clash(), None, "the tool's copy is recognised");
    assert_eq!(
        Stats::get(&a.stalwart_stats().expect("stats").forwarded_copies_skipped),
        1
    );
    assert!(sub.try_recv().is_none(), "and not delivered a second time");

    // A Stalwart node misconfigured with agora's id.
    let raw = raw(&server).await;
    raw.publish(SUBJECT, Bytes::from_static(&[0xe9, 0xfb, 0x03, 0x08]))
        .await
        .expect("publish");
    raw.flush().await.expect("flush");
    wait_for(DEADLINE, "the clash to be reported", || {
        a.stalwart_node_id_clash() == Some(65001)
    })
    .await;
    assert_eq!(Stats::get(&a.stalwart_stats().expect("stats").node_id_clashes), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_authentication_connects_and_a_wrong_token_is_an_authentication_failure() {
    let server = NatsServer::start_with_args(&["--auth", "s3cret-token"]);
    let mut nats = NatsConfig::with_addresses(vec![server.url()]);
    nats.auth = NatsAuth::Token(Secret::new("s3cret-token"));
    let c = start(&Config::nats(nats.clone()), 1).await;
    assert!(c.link_state().is_healthy());
    nats.auth = NatsAuth::Token(Secret::new("wrong"));
    match Coordinator::start(&Config::nats(nats), StartOptions::default()).await {
        Err(StartError::Connect(e)) => {
            assert_eq!(e.kind(), ConnectErrorKind::Authentication, "{}", agora::Report(&e));
            assert!(
                !agora::Report(&e).to_string().contains("wrong"),
                "the token is never shown"
            );
        }
        Ok(_) => panic!("a wrong token must not connect"),
        Err(e) => panic!("expected an authentication failure: {e}"),
    }
}
