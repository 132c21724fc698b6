//! Bus scenarios: throughput and fixed-rate latency for the three designs, on one subject of a real NATS server.

use std::time::{Duration, Instant};

use agora::codec::{decode_batch, BatchEncoder, Record};
use agora::config::{Config, NatsConfig};
use agora::{Coordinator, DataTypes, Event, NodeId, Notification, Role, StartOptions};
use async_nats::Client;
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::report::ScenarioResult;

/// The designs compared.
pub const MODES: &[&str] = &["raw", "batch100", "agora"];

/// The subject every mode uses (runs are sequential).
const SUBJECT: &str = "agora.bench";

/// Receivers give up this long after the last event they saw.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// Large enough that a receiver's client never drops for lack of buffer: the baseline gets a fair chance.
const SUBSCRIPTION_CAPACITY: usize = 1 << 20;

/// Throughput runs sample the latency of one event in this many (latency runs measure every event).
const THROUGHPUT_SAMPLE: u64 = 64;

/// Stalwart's queue bound and batch size.
const BATCH100_QUEUE: usize = 1024;
const BATCH100_MAX: usize = 100;

fn event(i: u64) -> Event {
    Event::StateChange {
        account_id: u32::try_from(i % 10_000).unwrap_or(0),
        change_id: i,
        types: DataTypes::from_bits(0b1001), // Email, Mailbox
    }
}

fn now_us() -> u64 {
    agora::clock::now_us()
}

fn node(n: u16) -> NodeId {
    NodeId::new(n).unwrap_or_else(NodeId::random)
}

fn agora_config(url: &str) -> Config {
    let mut nats = NatsConfig::with_addresses(vec![url.to_string()]);
    nats.subject = SUBJECT.to_string();
    nats.subscription_capacity = SUBSCRIPTION_CAPACITY;
    Config::nats(nats)
}

async fn raw_client(url: &str) -> Result<Client, String> {
    async_nats::ConnectOptions::new()
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .connect(url)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))
}

/// What a receiver saw.
struct Received {
    count: u64,
    lost_reported: u64,
    /// Events this receiver waits for.
    expected: u64,
    /// Latency is sampled every this many events (1 = every event).
    sample_every: u64,
    /// Wall-clock time of the last delivery (Unix µs; one clock read per event serves latency and throughput).
    last_us: u64,
    latency_us: Histogram<u64>,
}

impl Received {
    fn new(expected: u64, sample_every: u64) -> Self {
        Received {
            expected,
            sample_every: sample_every.max(1),
            count: 0,
            lost_reported: 0,
            last_us: 0,
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).expect("constant, valid histogram bounds"),
        }
    }

    /// Counts one delivery. The clock is read for every `sample_every`-th event and for the last one expected:
    /// at millions of events per second a clock read per event would cost the receivers of every mode more than
    /// the bus itself.
    fn record(&mut self, origin_us: u64) {
        self.count += 1;
        if self.count.is_multiple_of(self.sample_every) || self.count == self.expected {
            let now = now_us();
            let latency = now.saturating_sub(origin_us).max(1);
            let _ = self.latency_us.record(latency.min(120_000_000));
            self.last_us = now;
        }
    }
}

/// Starts one receiving node for `mode`; resolves `ready` once its subscription is registered on the server.
async fn spawn_receiver(
    mode: &str,
    url: &str,
    id: u16,
    expected: u64,
    sample_every: u64,
) -> Result<JoinHandle<Received>, String> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let handle = if mode == "agora" {
        let options = StartOptions {
            role: Role::Tool,
            node_id: Some(node(id)),
            ..StartOptions::default()
        };
        let coordinator = Coordinator::start(&agora_config(url), options)
            .await
            .map_err(|e| e.to_string())?;
        let mut sub = coordinator.subscribe();
        if let Some(client) = coordinator.nats_client() {
            client.flush().await.map_err(|e| e.to_string())?;
        }
        let _ = ready_tx.send(());
        tokio::spawn(async move {
            let mut got = Received::new(expected, sample_every);
            while got.count < expected {
                // Drain what is ready without a timer per event, then wait (bounded) for more.
                let next = match sub.try_recv() {
                    Some(n) => Some(n),
                    None => tokio::time::timeout(IDLE_TIMEOUT, sub.recv()).await.ok().flatten(),
                };
                match next {
                    Some(Notification::Event(d)) => got.record(d.time_us),
                    Some(Notification::Lagged { missed }) => got.lost_reported += missed,
                    Some(Notification::Resync { missed, .. }) => got.lost_reported += missed,
                    None => break,
                }
            }
            coordinator.shutdown().await;
            got
        })
    } else {
        let client = raw_client(url).await?;
        let mut sub = client.subscribe(SUBJECT).await.map_err(|e| e.to_string())?;
        client.flush().await.map_err(|e| e.to_string())?;
        let _ = ready_tx.send(());
        tokio::spawn(async move {
            let _client = client;
            let mut got = Received::new(expected, sample_every);
            while got.count < expected {
                match tokio::time::timeout(IDLE_TIMEOUT, sub.next()).await {
                    Ok(Some(message)) => {
                        if let Ok(reader) = decode_batch(&message.payload) {
                            for record in reader.flatten() {
                                if matches!(record.record, Record::Event(_)) {
                                    got.record(record.time_us);
                                }
                            }
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            got
        })
    };
    ready_rx.await.map_err(|_| "receiver failed to start".to_string())?;
    Ok(handle)
}

/// The sending node of one mode.
#[allow(clippy::large_enum_variant)] // one per bench run: the size does not matter
enum Publisher {
    Raw {
        client: Client,
        encoder: BatchEncoder,
        seq: u64,
    },
    Batch100 {
        queue: mpsc::Sender<(Event, u64)>,
        sender: JoinHandle<Result<(), String>>,
    },
    Agora(Coordinator),
}

impl Publisher {
    async fn start(mode: &str, url: &str) -> Result<Publisher, String> {
        match mode {
            "raw" => Ok(Publisher::Raw {
                client: raw_client(url).await?,
                encoder: BatchEncoder::new(node(1), rand::random()),
                seq: 0,
            }),
            "batch100" => {
                let client = raw_client(url).await?;
                let (queue, mut rx) = mpsc::channel::<(Event, u64)>(BATCH100_QUEUE);
                let sender = tokio::spawn(async move {
                    let mut encoder = BatchEncoder::new(node(1), rand::random());
                    let mut seq = 0u64;
                    while let Some((first, at)) = rx.recv().await {
                        encoder.begin(seq, at);
                        encoder.push_event(&first, at);
                        while (encoder.count() as usize) < BATCH100_MAX {
                            match rx.try_recv() {
                                Ok((e, at)) => encoder.push_event(&e, at),
                                Err(_) => break,
                            }
                        }
                        seq += u64::from(encoder.count());
                        client
                            .publish(SUBJECT, encoder.finish())
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    client.flush().await.map_err(|e| e.to_string())
                });
                Ok(Publisher::Batch100 { queue, sender })
            }
            _ => {
                let options = StartOptions {
                    role: Role::Tool,
                    node_id: Some(node(1)),
                    ..StartOptions::default()
                };
                let coordinator = Coordinator::start(&agora_config(url), options)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Publisher::Agora(coordinator))
            }
        }
    }

    async fn send(&mut self, event: Event) -> Result<(), String> {
        match self {
            Publisher::Raw { client, encoder, seq } => {
                let at = now_us();
                encoder.begin(*seq, at);
                encoder.push_event(&event, at);
                *seq += 1;
                client
                    .publish(SUBJECT, encoder.finish())
                    .await
                    .map_err(|e| e.to_string())
            }
            Publisher::Batch100 { queue, .. } => queue
                .send((event, now_us()))
                .await
                .map_err(|_| "the batch100 sender stopped".to_string()),
            Publisher::Agora(coordinator) => coordinator.publish(event).await.map_err(|e| e.to_string()),
        }
    }

    async fn finish(self) -> Result<(), String> {
        match self {
            Publisher::Raw { client, .. } => client.flush().await.map_err(|e| e.to_string()),
            Publisher::Batch100 { queue, sender } => {
                drop(queue);
                sender.await.map_err(|e| e.to_string())?
            }
            Publisher::Agora(coordinator) => {
                coordinator.shutdown().await;
                Ok(())
            }
        }
    }
}

async fn spawn_receivers(
    mode: &str,
    url: &str,
    count: usize,
    expected: u64,
    sample_every: u64,
) -> Result<Vec<JoinHandle<Received>>, String> {
    let mut receivers = Vec::with_capacity(count);
    for i in 0..count {
        let id = u16::try_from(i + 2).map_err(|_| "too many receivers")?;
        receivers.push(spawn_receiver(mode, url, id, expected, sample_every).await?);
    }
    Ok(receivers)
}

/// Collects the receivers' results into one scenario line.
async fn collect(
    scenario: String,
    mode: &str,
    events: u64,
    started_us: u64,
    receivers: Vec<JoinHandle<Received>>,
) -> Result<ScenarioResult, String> {
    let count = receivers.len() as u64;
    let mut merged = Received::new(0, 1);
    let mut last_us = started_us;
    for r in receivers {
        let got = r.await.map_err(|e| e.to_string())?;
        merged.count += got.count;
        merged.lost_reported += got.lost_reported;
        last_us = last_us.max(got.last_us);
        let _ = merged.latency_us.add(&got.latency_us);
    }
    let elapsed = (last_us.saturating_sub(started_us) as f64 / 1e6).max(1e-9);
    let q = |p: f64| merged.latency_us.value_at_quantile(p) as f64;
    Ok(ScenarioResult {
        scenario,
        mode: mode.to_string(),
        events,
        events_per_sec: (merged.count as f64 / count as f64) / elapsed,
        p50_us: q(0.5),
        p99_us: q(0.99),
        p999_us: q(0.999),
        lost: (events * count).saturating_sub(merged.count),
        rss_kib: None,
        details: serde_json::Map::new(),
    })
}

/// Sends `events` as fast as the design allows; events/s is per receiver, first send to last delivery.
pub async fn throughput(mode: &str, url: &str, events: u64, receivers: usize) -> Result<ScenarioResult, String> {
    let handles = spawn_receivers(mode, url, receivers, events, THROUGHPUT_SAMPLE).await?;
    let mut publisher = Publisher::start(mode, url).await?;
    let started_us = now_us();
    for i in 0..events {
        publisher.send(event(i)).await?;
    }
    publisher.finish().await?;
    collect(format!("throughput_1to{receivers}"), mode, events, started_us, handles).await
}

/// Offers `rate` events/s for `seconds` to one receiver and measures origin-to-delivery latency.
pub async fn latency(mode: &str, url: &str, rate: u64, seconds: u64) -> Result<ScenarioResult, String> {
    let events = rate.saturating_mul(seconds).max(1);
    let handles = spawn_receivers(mode, url, 1, events, 1).await?;
    let mut publisher = Publisher::start(mode, url).await?;
    let started_us = now_us();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0u64;
    while sent < events {
        ticker.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(events);
        while sent < due {
            publisher.send(event(sent)).await?;
            sent += 1;
        }
    }
    publisher.finish().await?;
    collect(format!("latency_{rate}"), mode, events, started_us, handles).await
}
