//! The fan-out over real loopback sockets, fed by a real (single-node) coordinator through the journal's feeder:
//! a client that stops reading falls behind, catches up and rejoins without losing or repeating a change; a client
//! that leaves frees its places; notices of lost events end streams; pings come when nothing else does.

use std::sync::Arc;
use std::time::Duration;

use agora::{Coordinator, DataTypes, Event, Notification};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{FanoutHub, Join};
use crate::http::stream_filter::Filter;
use crate::services::journal::{self, Journal};
use crate::services::metrics::NodeMetrics;

const DEADLINE: Duration = Duration::from_secs(30);

struct Fixture {
    node: Coordinator,
    journal: Arc<Journal>,
    hub: Arc<FanoutHub>,
    metrics: Arc<NodeMetrics>,
    listener: TcpListener,
    streams: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    _stop: DropGuard,
}

impl Fixture {
    async fn new() -> Self {
        let node = Coordinator::start(&agora::config::Config::default(), agora::StartOptions::default())
            .await
            .expect("single node");
        let stop = CancellationToken::new();
        let journal = Journal::new(1_000_000, 1 << 30);
        tokio::spawn(journal::feed(journal.clone(), node.subscribe(), stop.clone()));
        let metrics = Arc::new(NodeMetrics::default());
        let hub = FanoutHub::start(journal.clone(), metrics.clone(), stop.clone());
        Fixture {
            node,
            journal,
            hub,
            metrics,
            listener: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            streams: Arc::new(Semaphore::new(10)),
            connections: Arc::new(Semaphore::new(10)),
            _stop: stop.drop_guard(),
        }
    }

    /// A client whose stream (of `account`, from the journal's next entry) the hub serves. The socket buffers are
    /// small, so that a client that does not read makes the shard's writes block soon.
    async fn connect(&self, account: u32, ping: Option<Duration>) -> TcpStream {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let client = socket
            .connect(self.listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = self.listener.accept().await.expect("accept");
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .expect("SO_SNDBUF");
        let join = Join {
            hub: self.hub.clone(),
            filter: Arc::new(Filter::for_accounts(&[account], ping)),
            start: self.journal.next_seq(),
            permit: self.streams.clone().try_acquire_owned().expect("stream place"),
            end: None,
        };
        let connection = self.connections.clone().try_acquire_owned().expect("connection place");
        self.hub.attach(server, join, connection);
        client
    }

    async fn change(&self, account_id: u32, change_id: u64) {
        let types = DataTypes::from_names(["Email"]).expect("a JMAP type");
        let event = Event::StateChange {
            account_id,
            change_id,
            types,
        };
        self.node.publish(event).await.expect("publish");
    }

    /// Waits until the journal holds `entries` entries in all.
    async fn journaled(&self, entries: u64) {
        eventually("the journal to hold every event", || self.journal.next_seq() > entries).await;
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads SSE frames from `client` until `wanted` state changes have arrived (or the stream ends): their change ids
/// and the journal sequence numbers of their ids, in order of arrival.
async fn read_changes(client: &mut TcpStream, wanted: usize) -> (Vec<u64>, Vec<u64>, String) {
    let (mut changes, mut seqs, mut text) = (Vec::new(), Vec::new(), String::new());
    let mut buffer = vec![0u8; 64 * 1024];
    let read = async {
        while changes.len() < wanted {
            let n = client.read(&mut buffer).await.expect("read");
            if n == 0 {
                break;
            }
            text.push_str(std::str::from_utf8(&buffer[..n]).expect("UTF-8"));
            while let Some(end) = text.find("\n\n") {
                let frame: String = text.drain(..end + 2).collect();
                let field = |name: &str| frame.lines().find_map(|l| l.strip_prefix(name).map(str::to_owned));
                if let (Some(id), Some(data)) = (field("id: "), field("data: ")) {
                    let seq = id
                        .split_once('-')
                        .and_then(|(_, s)| s.parse().ok())
                        .expect("id <epoch>-<seq>");
                    let change = data
                        .split("\"Email\":\"")
                        .nth(1)
                        .and_then(|r| r.split('"').next())
                        .and_then(|c| c.parse().ok())
                        .expect("a change id");
                    seqs.push(seq);
                    changes.push(change);
                }
            }
        }
    };
    tokio::time::timeout(DEADLINE, read).await.expect("changes in time");
    (changes, seqs, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_gets_every_change_once_and_in_order_then_rejoins() {
    const CHANGES: u64 = 20_000;
    let fx = Fixture::new().await;
    let mut client = fx.connect(7, None).await;
    eventually("the stream to join its shard", || fx.hub.modes() == (1, 0)).await;
    // The client reads nothing while 20,000 changes of its account (and as many of another) are published: about
    // 2 MB for a client that takes a few KiB, so the shard's writes block and the stream's own task takes over.
    for change_id in 1..=CHANGES {
        fx.change(7, change_id).await;
        fx.change(8, change_id).await;
    }
    fx.journaled(2 * CHANGES).await;
    assert!(
        fx.metrics.streams_caught_up.get() >= 1,
        "the stream fell behind and was caught up"
    );
    let (changes, seqs, _) = read_changes(&mut client, CHANGES as usize).await;
    assert_eq!(
        changes,
        (1..=CHANGES).collect::<Vec<_>>(),
        "every change, once, in order"
    );
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "ids increase");
    // Caught up: the shard writes again, and what comes next arrives as it happens.
    eventually("the stream to rejoin its shard", || fx.hub.modes() == (1, 0)).await;
    fx.change(7, CHANGES + 1).await;
    let (next, _, _) = read_changes(&mut client, 1).await;
    assert_eq!(next, [CHANGES + 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_is_removed_and_frees_its_places() {
    let fx = Fixture::new().await;
    let clients = [fx.connect(1, None).await, fx.connect(2, None).await];
    eventually("both streams to join", || fx.hub.modes() == (2, 0)).await;
    assert_eq!(fx.streams.available_permits(), 8);
    drop(clients);
    eventually("the streams to be removed", || {
        fx.hub.modes() == (0, 0) && fx.streams.available_permits() == 10 && fx.connections.available_permits() == 10
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_of_lost_events_ends_the_stream_so_the_client_resynchronises() {
    let fx = Fixture::new().await;
    let mut client = fx.connect(3, None).await;
    eventually("the stream to join", || fx.hub.modes() == (1, 0)).await;
    fx.change(3, 1).await;
    fx.journaled(1).await;
    fx.journal.append(Notification::Lagged { missed: 5 });
    let (changes, _, _) = read_changes(&mut client, 2).await;
    assert_eq!(changes, [1], "the change, then the end of the stream");
    eventually("the stream to be removed", || fx.hub.modes() == (0, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_gets_pings() {
    let fx = Fixture::new().await;
    let mut idle = fx.connect(4, Some(Duration::from_secs(1))).await;
    let mut text = String::new();
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !text.contains("event: ping\ndata: {\"interval\":1}\n\n") {
            let n = idle.read(&mut buffer).await.expect("read");
            assert!(n > 0, "the stream ended: {text}");
            text.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    })
    .await
    .expect("a ping within 10 s");
}
