//! The durable mode (`jetstream.enable = true`) against real nats-server processes: no JetStream, conflicting
//! streams, a node that was stopped catching up, a server killed under load, and a three-server cluster losing a
//! server under load. Numbers are printed (run with `--nocapture` to see them).

use crate::common::{node, DEADLINE};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora::config::{Backend, Config, JetStreamConfig, JetStreamStorage, NatsConfig};
use agora::{Coordinator, Event, NodeId, Notification, StartError, StartOptions, Subscription};
use agora_testkit::{scratch_dir, NatsCluster, NatsServer};
use bytes::Bytes;

/// Generous: on two shared cores a JetStream cluster may take a while to elect leaders after a kill.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(90);

fn durable_config(addresses: Vec<String>, replicas: u8) -> Config {
    let mut nats = NatsConfig::with_addresses(addresses);
    nats.jetstream = JetStreamConfig {
        enable: true,
        replicas,
        ..JetStreamConfig::default()
    };
    // A batch written just before a server dies is retried after this, instead of the 10s default.
    nats.request_timeout = Duration::from_secs(2);
    let mut config = Config::nats(nats);
    config.cluster.heartbeat_interval = Duration::from_millis(200);
    config
}

fn options(id: u16) -> StartOptions {
    StartOptions {
        node_id: Some(node(id)),
        ..StartOptions::default()
    }
}

async fn start(config: &Config, id: u16) -> Coordinator {
    Coordinator::start(config, options(id))
        .await
        .expect("coordinator starts")
}

/// Starts a coordinator, retrying while a JetStream cluster is still electing its leaders.
async fn start_when_ready(config: &Config, id: u16) -> Coordinator {
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    loop {
        let options = StartOptions {
            node_id: Some(node(id)),
            ..StartOptions::default()
        };
        match Coordinator::start(config, options).await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("node {id} not started yet: {e}");
                // Paces the retries; RECOVERY_DEADLINE bounds them.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("node {id} did not start: {e}"),
        }
    }
}

fn numbered(n: u64) -> Event {
    Event::Custom {
        name: "n".into(),
        data: Bytes::from(n.to_be_bytes().to_vec()),
    }
}

const SENTINEL: &str = "end";

fn sentinel() -> Event {
    Event::Custom {
        name: SENTINEL.into(),
        data: Bytes::new(),
    }
}

/// What one receiving node saw from `origin`: the numbers in arrival order, and when the first one after
/// `since` (set by the test) arrived.
#[derive(Default)]
struct Received {
    numbers: Vec<u64>,
    first_after: Option<Instant>,
}

/// Collects the numbered events from `origin` until its sentinel.
async fn collect(sub: &mut Subscription, origin: NodeId, since: Arc<Mutex<Option<Instant>>>) -> Received {
    let mut got = Received::default();
    loop {
        let Some(notification) = sub.recv().await else {
            panic!("coordinator stopped before the sentinel");
        };
        if let Notification::Event(d) = notification {
            if d.origin != origin {
                continue;
            }
            if let Event::Custom { name, data } = &d.event {
                if name == SENTINEL {
                    return got;
                }
                let Ok(bytes) = <[u8; 8]>::try_from(data.as_ref()) else {
                    panic!("bad numbered event");
                };
                got.numbers.push(u64::from_be_bytes(bytes));
                if got.first_after.is_none() {
                    if let Some(since) = *since.lock().expect("lock") {
                        got.first_after = Some(Instant::now().max(since));
                    }
                }
            }
        }
    }
}

/// Sent vs received: (delivered, lost, duplicates, out of order).
fn compare(sent: u64, numbers: &[u64]) -> (u64, u64, u64, u64) {
    let mut seen = vec![0u32; usize::try_from(sent).expect("fits")];
    let mut out_of_order = 0;
    for (i, n) in numbers.iter().enumerate() {
        if let Some(slot) = seen.get_mut(usize::try_from(*n).expect("fits")) {
            *slot += 1;
        }
        if i > 0 && numbers[i - 1] >= *n {
            out_of_order += 1;
        }
    }
    let lost = seen.iter().filter(|c| **c == 0).count() as u64;
    let duplicates: u64 = seen.iter().map(|c| u64::from(c.saturating_sub(1))).sum();
    (numbers.len() as u64, lost, duplicates, out_of_order)
}

/// Publishes numbered events at `rate` per second until `stop`, then the sentinel; returns how many were sent.
fn spawn_load(publisher: Coordinator, rate: u64, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let tick = Duration::from_millis(10);
        let per_tick = rate / 100;
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            ticker.tick().await;
            for _ in 0..per_tick {
                publisher.publish(numbered(n)).await.expect("publish");
                n += 1;
            }
        }
        publisher.publish(sentinel()).await.expect("publish sentinel");
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_jetstream_the_start_fails_with_a_clear_error() {
    let server = NatsServer::start();
    let config = durable_config(vec![server.url()], 1);
    let started = tokio::time::timeout(DEADLINE, Coordinator::start(&config, StartOptions::default()))
        .await
        .expect("fails fast, does not hang");
    match started {
        Err(e @ StartError::JetStream { .. }) => {
            let text = e.to_string();
            assert!(text.contains("store.\"nats\".jetstream.enable"), "{text}");
            assert!(text.contains("JetStream") && text.contains("-js"), "{text}");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("started without JetStream"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_conflicting_settings_is_reported() {
    let dir = scratch_dir("js");
    let server = NatsServer::start_with_args(&["-js", "-sd", &dir.to_string_lossy()]);
    let config = durable_config(vec![server.url()], 1);
    let first = start(&config, 1).await;
    first.shutdown().await;

    let mut memory = config.clone();
    if let Backend::Nats { config: nats, .. } = &mut memory.backend {
        nats.jetstream.storage = JetStreamStorage::Memory;
    }
    let Err(e) = Coordinator::start(&memory, StartOptions::default()).await else {
        panic!("started with conflicting storage");
    };
    let text = e.to_string();
    assert!(text.contains("jetstream.storage") && text.contains("file"), "{text}");

    let mut other_subject = config.clone();
    if let Backend::Nats { config: nats, .. } = &mut other_subject.backend {
        nats.subject = "other.events".into();
    }
    let Err(e) = Coordinator::start(&other_subject, StartOptions::default()).await else {
        panic!("started on a stream bound to another subject");
    };
    assert!(e.to_string().contains("jetstream.stream"), "{e}");

    // max-age may change: the stream is updated.
    let mut longer = config.clone();
    if let Backend::Nats { config: nats, .. } = &mut longer.backend {
        nats.jetstream.max_age = Duration::from_secs(48 * 3600);
    }
    start(&longer, 2).await.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_gets_every_missed_event_in_order_exactly_once() {
    let dir = scratch_dir("js");
    let server = NatsServer::start_with_args(&["-js", "-sd", &dir.to_string_lossy()]);
    let config = durable_config(vec![server.url()], 1);
    let publisher = start(&config, 1).await;
    let receiver = start(&config, 2).await;
    let mut sub = receiver.subscribe();
    let no_mark = Arc::new(Mutex::new(None));

    // Before the stop: 0..100 arrive live.
    for n in 0..100 {
        publisher.publish(numbered(n)).await.expect("publish");
    }
    publisher.publish(sentinel()).await.expect("publish");
    let before = tokio::time::timeout(DEADLINE, collect(&mut sub, node(1), no_mark.clone()))
        .await
        .expect("live events arrive");
    assert_eq!(before.numbers, (0..100).collect::<Vec<_>>());
    receiver.shutdown().await;
    drop(sub);
    drop(receiver);

    // While node 2 is away: 100..1100.
    for n in 100..1100 {
        publisher.publish(numbered(n)).await.expect("publish");
    }
    publisher.publish(sentinel()).await.expect("publish");

    let restarted_at = Instant::now();
    // Subscribed before anything is dispatched: the catch-up starts right away.
    let (receiver, mut sub) = Coordinator::start_subscribed(&config, options(2))
        .await
        .expect("restart");
    let after = tokio::time::timeout(DEADLINE, collect(&mut sub, node(1), no_mark.clone()))
        .await
        .expect("missed events arrive after the restart");
    let caught_up = restarted_at.elapsed();
    let (delivered, lost, duplicates, out_of_order) = compare(1100, &after.numbers);
    println!(
        "restart: sent while away 1000, delivered {delivered}, lost {}, duplicates {duplicates}, out of order \
         {out_of_order}, caught up in {caught_up:?}",
        lost - 100
    );
    assert_eq!(
        after.numbers,
        (100..1100).collect::<Vec<_>>(),
        "exactly the missed events, in order"
    );

    // And it goes on live, with nothing replayed twice.
    publisher.publish(numbered(1100)).await.expect("publish");
    publisher.publish(sentinel()).await.expect("publish");
    let live = tokio::time::timeout(DEADLINE, collect(&mut sub, node(1), no_mark))
        .await
        .expect("live again");
    assert_eq!(live.numbers, vec![1100]);
    let stats = receiver.durable_stats().expect("durable mode");
    println!("restart: durable stats of the restarted node: {stats:?}");
    receiver.shutdown().await;
    publisher.shutdown().await;
}

/// Runs `rate` events/s from node 1 to nodes 2 and 3, calls `disrupt` after `before` (returns the instant service
/// is back, for the recovery time), keeps the load for `after`, then checks every receiver got everything.
async fn under_load<F, Fut>(configs: [Config; 3], rate: u64, before: Duration, after: Duration, disrupt: F, label: &str)
where
    F: FnOnce(Coordinator) -> Fut,
    Fut: std::future::Future<Output = Instant>,
{
    let publisher = start_when_ready(&configs[0], 1).await;
    let receivers = [
        start_when_ready(&configs[1], 2).await,
        start_when_ready(&configs[2], 3).await,
    ];
    let since = Arc::new(Mutex::new(None));
    let collectors: Vec<_> = receivers
        .iter()
        .map(|r| {
            let mut sub = r.subscribe();
            let since = since.clone();
            tokio::spawn(async move {
                tokio::time::timeout(RECOVERY_DEADLINE, collect(&mut sub, node(1), since))
                    .await
                    .expect("every receiver gets the sentinel")
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(publisher.clone(), rate, stop.clone());
    tokio::time::sleep(before).await; // the load runs for this long before the failure
    let back = disrupt(publisher.clone()).await;
    *since.lock().expect("lock") = Some(back);
    tokio::time::sleep(after).await; // and this long after
    stop.store(true, Ordering::Relaxed);
    let sent = load.await.expect("load task");
    let retries = AtomicU64::new(0);
    for (i, collector) in collectors.into_iter().enumerate() {
        let got = collector.await.expect("collector");
        let (delivered, lost, duplicates, out_of_order) = compare(sent, &got.numbers);
        let recovery = got.first_after.map(|t| t.saturating_duration_since(back));
        println!(
            "{label}: node {}: sent {sent}, delivered {delivered}, lost {lost}, duplicates {duplicates}, out of \
             order {out_of_order}, recovery (service back -> first delivery after it) {recovery:?}",
            i + 2
        );
        assert_eq!((lost, duplicates, out_of_order), (0, 0, 0), "{label}: node {}", i + 2);
        assert_eq!(delivered, sent);
    }
    let stats = publisher.durable_stats().expect("durable mode");
    retries.fetch_add(stats.publish_retries.load(Ordering::Relaxed), Ordering::Relaxed);
    println!(
        "{label}: publisher: dropped {}, store retries {}; receivers: {:?} / {:?}",
        publisher.stats().dropped_events.load(Ordering::Relaxed),
        retries.load(Ordering::Relaxed),
        receivers[0].durable_stats(),
        receivers[1].durable_stats()
    );
    assert_eq!(publisher.stats().dropped_events.load(Ordering::Relaxed), 0);
    for r in &receivers {
        r.shutdown().await;
    }
    publisher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_under_load_loses_nothing() {
    let dir = scratch_dir("js");
    let server = Arc::new(Mutex::new(NatsServer::start_with_args(&[
        "-js",
        "-sd",
        &dir.to_string_lossy(),
    ])));
    let url = server.lock().expect("lock").url();
    let config = durable_config(vec![url], 1);
    let killer = server.clone();
    under_load(
        [config.clone(), config.clone(), config],
        2000,
        Duration::from_millis(1500),
        Duration::from_secs(3),
        |_| async move {
            let down = Instant::now();
            killer.lock().expect("lock").kill();
            tokio::time::sleep(Duration::from_secs(2)).await; // the outage itself
            let mut guard = killer.lock().expect("lock");
            guard.restart();
            println!("kill -9: server down for {:?}", down.elapsed());
            Instant::now()
        },
        "kill -9",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_stream_survives_losing_a_server_under_load() {
    let cluster = NatsCluster::start_jetstream(3);
    assert!(cluster.wait_for_routes(DEADLINE), "cluster routes");
    let addresses = cluster.addresses();
    // Each node prefers a different server.
    let configs = [0, 1, 2].map(|i| {
        let mut a = addresses.clone();
        a.rotate_left(i);
        durable_config(a, 3)
    });
    let cluster = Arc::new(Mutex::new(cluster));
    let killer = cluster.clone();
    under_load(
        configs,
        2000,
        Duration::from_secs(2),
        Duration::from_secs(4),
        |publisher| async move {
            // Kill the server the publisher is connected to.
            let server = publisher.server().expect("connected");
            let port: u16 = server.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
            let mut cluster = killer.lock().expect("lock");
            let victim = cluster.by_port(port).expect("the publisher's server");
            victim.kill();
            println!("R3: killed the server on port {port}");
            Instant::now()
        },
        "R3 cluster",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_config_round_trips_and_starts() {
    let dir = scratch_dir("js");
    let server = NatsServer::start_with_args(&["-js", "-sd", &dir.to_string_lossy()]);
    let text = format!(
        "[cluster]\ncoordinator = \"nats\"\nnode-id = 4\n\n[store.\"nats\"]\ntype = \"nats\"\naddress = \"{}\"\n\
         jetstream.enable = true\njetstream.stream = \"MAIL\"\njetstream.max-age = \"1h\"\n\
         jetstream.storage = \"memory\"\njetstream.replicas = 1\n",
        server.address()
    );
    let config = agora::config::parse(&text).expect("valid");
    let rendered = config.to_redacted_toml();
    let again = agora::config::parse(&rendered).expect("rendered config parses");
    assert_eq!(again.backend, config.backend, "{rendered}");
    let coordinator = Coordinator::start(&again, StartOptions::default())
        .await
        .expect("starts in durable mode");
    assert!(coordinator.durable_stats().is_some());
    coordinator.shutdown().await;
}
