//! Every NATS connection setting of Stalwart's NATS documentation, proven against real nats-server processes the tests start
//! themselves (plain, with users, in operator mode, with TLS, as a two-server cluster).
//!
//! Tests wait for conditions with deadlines; the few fixed waits prove that something does *not* happen.

use crate::common::{node, start, try_start, wait_for, DEADLINE};

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use agora::config::{Backend, Config, NatsAuth, NatsConfig, Reconnects, Secret};
use agora::stats::Stats;
use agora::{
    ConnectError, ConnectErrorKind, Coordinator, Event, LinkState, Notification, RequestErrorKind, StartError,
    Subscription,
};
use agora_testkit::operator::Operator;
use agora_testkit::tls::Pki;
use agora_testkit::{scratch_file, NatsCluster, NatsServer};
use bytes::Bytes;

// ---------------------------------------------------------------------------------------------------------------
// Helpers

fn nats(addresses: Vec<String>) -> NatsConfig {
    NatsConfig::with_addresses(addresses)
}

fn config(nats: NatsConfig) -> Config {
    let mut config = Config::nats(nats);
    config.cluster.heartbeat_interval = Duration::from_millis(100);
    config
}

/// A config from TOML text, through the real parser (`%{file:...}%` and address normalisation included).
fn parsed(store_lines: &str) -> Config {
    let text = format!(
        "[cluster]\ncoordinator = \"nats\"\nheartbeat-interval = \"100ms\"\n\n[store.\"nats\"]\ntype = \"nats\"\n\
         {store_lines}\n"
    );
    agora::config::parse(&text).unwrap_or_else(|e| panic!("config does not parse: {e}\n{text}"))
}

/// The connect error of a start that must fail.
async fn start_error(config: &Config, id: u16) -> ConnectError {
    match try_start(config, id).await {
        Ok(_) => panic!("coordinator {id} started but should not have"),
        Err(StartError::Connect(e)) => e,
        Err(other) => panic!("expected a connect error, got {other}"),
    }
}

async fn wait_connected(c: &Coordinator) {
    wait_for(DEADLINE, "the link to be connected", || {
        c.link_state() == LinkState::Connected
    })
    .await;
}

fn port_of(c: &Coordinator) -> u16 {
    c.server()
        .and_then(|s| s.rsplit(':').next().and_then(|p| p.parse().ok()))
        .expect("a NATS server in use")
}

/// Publishes a probe from `from` every 50 ms until each of `to` received it; fails after the deadline.
async fn assert_flows(from: &Coordinator, to: &mut [&mut Subscription], tag: &str) {
    let probe = Event::Custom {
        name: "probe".into(),
        data: Bytes::from(tag.to_string()),
    };
    let started = Instant::now();
    let mut got = vec![false; to.len()];
    while !got.iter().all(|g| *g) {
        assert!(
            started.elapsed() < DEADLINE,
            "probe {tag} from node {} did not reach every node (received: {got:?})",
            from.node_id()
        );
        from.publish(probe.clone()).await.expect("publish probe");
        let round = Instant::now() + Duration::from_millis(50);
        for (i, sub) in to.iter_mut().enumerate() {
            while let Ok(Some(n)) = tokio::time::timeout_at(round.into(), sub.recv()).await {
                if let Notification::Event(d) = n {
                    if d.event == probe && d.origin == from.node_id() {
                        got[i] = true;
                    }
                }
            }
        }
    }
}

/// Everything logged by the test process, for the few assertions about log lines.
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("agora=debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        logs
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        // Also to stderr, which the harness shows for failing tests.
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Log lines of one coordinator (its client name contains the instance id).
fn log_lines_of(c: &Coordinator) -> Vec<String> {
    let instance = format!("{:016x}", c.instance_id());
    let logs = captured_logs().lock().expect("log lock");
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| l.contains(&instance))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// address

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_accepts_every_documented_form() {
    let v4 = NatsServer::start();
    let v6 = NatsServer::start_on("::1", &[]);
    let pki = Pki::generate();
    let tls_args = pki.server_args(false);
    let tls_args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    let tls = NatsServer::start_with_args(&tls_args);
    let ca = pki.ca.display().to_string();

    let forms = [
        format!("address = \"127.0.0.1:{}\"", v4.port()),
        format!("address = \"localhost:{}\"", v4.port()),
        format!("address = \"nats://127.0.0.1:{}\"", v4.port()),
        format!("address = [\"127.0.0.1:{}\"]", v4.port()),
        format!("address = \"[::1]:{}\"", v6.port()),
        format!("address = \"nats://[::1]:{}\"", v6.port()),
        // The private CA comes from tls.ca-file (which the parser accepts only with tls.enable).
        format!(
            "address = \"tls://127.0.0.1:{}\"\ntls.enable = true\ntls.ca-file = \"{ca}\"",
            tls.port()
        ),
        format!(
            "address = \"tls://localhost:{}\"\ntls.enable = true\ntls.ca-file = \"{ca}\"",
            tls.port()
        ),
    ];
    for (i, form) in forms.iter().enumerate() {
        let c = start(&parsed(form), 100 + u16::try_from(i).expect("few")).await;
        assert_eq!(c.link_state(), LinkState::Connected, "{form}");
        let expected = if form.contains("tls://") {
            tls.port()
        } else if form.contains("::1") {
            v6.port()
        } else {
            v4.port()
        };
        assert_eq!(port_of(&c), expected, "{form}");
        c.shutdown().await;
    }

    // tls:// alone asks for TLS (tls.enable = false): the handshake happens and checks the certificate.
    let mut tls_scheme = nats(vec![format!("tls://127.0.0.1:{}", tls.port())]);
    let err = start_error(&config(tls_scheme.clone()), 120).await;
    assert_eq!(
        err.kind(),
        ConnectErrorKind::Tls,
        "system roots do not know the test CA: {err}"
    );
    tls_scheme.tls.ca_file = Some(pki.ca.clone());
    let c = start(&config(tls_scheme), 121).await;
    assert_eq!(port_of(&c), tls.port());
    // ...and a tls:// address to a server without TLS is refused.
    let err = start_error(&config(nats(vec![format!("tls://{}", v4.address())])), 122).await;
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_list_is_tried_in_full_at_start() {
    let live = NatsServer::start();
    let dead = format!("127.0.0.1:{}", agora_testkit::free_port());
    // Whatever order the client picks, the dead address never prevents the start.
    for i in 0..6 {
        let cfg = parsed(&format!("address = [\"{dead}\", \"{}\"]", live.address()));
        let c = start(&cfg, 1 + i).await;
        assert_eq!(port_of(&c), live.port());
        c.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_learns_the_servers_the_cluster_announces_and_fails_over_to_them() {
    let mut cluster = NatsCluster::start(2);
    assert!(cluster.wait_for_routes(DEADLINE), "the two servers form a cluster");
    let (a, b) = (cluster.servers[0].port(), cluster.servers[1].port());
    // Only server A is configured.
    let c = start(&config(nats(vec![cluster.servers[0].address()])), 1).await;
    assert_eq!(port_of(&c), a);
    let witness = start(&config(nats(vec![cluster.servers[1].address()])), 2).await;
    let mut witness_sub = witness.subscribe();
    assert_flows(&c, &mut [&mut witness_sub], "before").await;

    cluster.servers[0].kill();
    wait_for(DEADLINE, "failover to the announced server B", || {
        c.link_state() == LinkState::Connected && c.server().is_some_and(|s| s.ends_with(&format!(":{b}")))
    })
    .await;
    assert_flows(&c, &mut [&mut witness_sub], "after").await;
    assert!(Stats::get(&c.stats().reconnects) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_server_cluster_keeps_events_flowing_through_either_server() {
    let mut cluster = NatsCluster::start(2);
    assert!(cluster.wait_for_routes(DEADLINE), "the two servers form a cluster");
    let cfg = config(nats(cluster.addresses()));
    let nodes = [start(&cfg, 1).await, start(&cfg, 2).await, start(&cfg, 3).await];
    let mut subs: Vec<Subscription> = nodes.iter().map(Coordinator::subscribe).collect();

    check_all(&nodes, &mut subs, "both servers up").await;

    // Kill the server node 1 uses: everyone on it moves to the other one.
    let first = port_of(&nodes[0]);
    cluster.by_port(first).expect("known server").kill();
    for c in &nodes {
        wait_for(DEADLINE, "every node on the surviving server", || {
            c.link_state() == LinkState::Connected && port_of(c) != first
        })
        .await;
    }
    check_all(&nodes, &mut subs, "first server down").await;

    // Bring it back, wait for the route, then kill the other one.
    cluster.by_port(first).expect("known server").restart();
    assert!(cluster.wait_for_routes(DEADLINE), "the cluster re-forms");
    let second = port_of(&nodes[0]);
    cluster.by_port(second).expect("known server").kill();
    for c in &nodes {
        wait_for(DEADLINE, "every node back on the first server", || {
            c.link_state() == LinkState::Connected && port_of(c) == first
        })
        .await;
    }
    check_all(&nodes, &mut subs, "second server down").await;
    for c in &nodes {
        assert!(
            Stats::get(&c.stats().reconnects) >= 1,
            "node {} reconnected",
            c.node_id()
        );
    }
}

/// Every node's probe reaches every other node.
async fn check_all(nodes: &[Coordinator], subs: &mut [Subscription], round: &str) {
    for (i, from) in nodes.iter().enumerate() {
        let (before, rest) = subs.split_at_mut(i);
        let mut others: Vec<&mut Subscription> = before.iter_mut().chain(rest.iter_mut().skip(1)).collect();
        assert_flows(from, &mut others, round).await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// user / password

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_connect_and_wrong_ones_fail_fast_as_authentication() {
    let server = NatsServer::start_with_args(&["--user", "agora", "--pass", "s3cret-pass"]);
    let good = parsed(&format!(
        "address = \"{}\"\nuser = \"agora\"\npassword = \"s3cret-pass\"",
        server.address()
    ));
    let a = start(&good, 1).await;
    let b = start(&good, 2).await;
    let mut sub = b.subscribe();
    assert_flows(&a, &mut [&mut sub], "authenticated").await;

    for (label, lines) in [
        ("wrong password", "user = \"agora\"\npassword = \"hunter2-wrong\""),
        ("wrong user", "user = \"nobody\"\npassword = \"s3cret-pass\""),
        ("no credentials", ""),
    ] {
        let cfg = parsed(&format!(
            "address = \"{}\"\ntimeout.connection = \"3s\"\n{lines}",
            server.address()
        ));
        let started = Instant::now();
        let err = start_error(&cfg, 3).await;
        let elapsed = started.elapsed();
        assert_eq!(err.kind(), ConnectErrorKind::Authentication, "{label}: {err}");
        let message = err.to_string();
        assert!(message.contains("authentication failed"), "{label}: {message}");
        assert!(
            !message.contains("hunter2") && !message.contains("s3cret"),
            "{label}: secret in {message}"
        );
        assert!(
            elapsed < Duration::from_secs(3),
            "{label}: took {elapsed:?}, more than timeout.connection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_rejected_on_reconnect_are_logged_and_keep_the_node_unhealthy() {
    captured_logs();
    let mut server = NatsServer::start_with_args(&["--user", "agora", "--pass", "first-pass"]);
    let mut cfg = nats(vec![server.address()]);
    cfg.auth = NatsAuth::UserPassword {
        user: "agora".into(),
        password: Secret::new("first-pass"),
    };
    let c = start(&config(cfg), 1).await;

    server.restart_with_args(&["--user", "agora", "--pass", "second-pass"]);
    wait_for(DEADLINE, "an authentication failure to be logged", || {
        log_lines_of(&c)
            .iter()
            .any(|l| l.contains("ERROR") && l.contains("authentication failed"))
    })
    .await;
    assert_ne!(c.link_state(), LinkState::Connected);
    assert!(!c.link_state().is_healthy());
    // It keeps trying, and keeps failing, without ever claiming to be connected (a deliberate wait: nothing may
    // change during it).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.link_state(), LinkState::Reconnecting);
    assert!(
        log_lines_of(&c).iter().all(|l| !l.contains("first-pass")),
        "the password must never be logged"
    );

    // Once the server accepts the credentials again, the node recovers on its own.
    server.restart_with_args(&["--user", "agora", "--pass", "first-pass"]);
    wait_connected(&c).await;
}

// ---------------------------------------------------------------------------------------------------------------
// credentials

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_a_creds_file_work_in_operator_mode() {
    let operator = Operator::new("agora-test-operator");
    let account = operator.account("agora");
    let server = NatsServer::start_with_config(&operator.server_config(&[&account]), &[]);

    // Through %{file:...}%, as an operator would write it.
    let creds_path = scratch_file("node.creds", &account.user("node-a").creds());
    let a = start(
        &parsed(&format!(
            "address = \"{}\"\ncredentials = \"%{{file:{}}}%\"",
            server.address(),
            creds_path.display()
        )),
        1,
    )
    .await;
    // And directly as the value.
    let mut direct = nats(vec![server.address()]);
    direct.auth = NatsAuth::Credentials(Secret::new(account.user("node-b").creds()));
    let b = start(&config(direct), 2).await;
    let mut sub_a = a.subscribe();
    let mut sub_b = b.subscribe();
    assert_flows(&a, &mut [&mut sub_b], "a to b").await;
    assert_flows(&b, &mut [&mut sub_a], "b to a").await;

    // A user of an account the server does not know is rejected as an authentication failure.
    let stranger = Operator::new("other").account("other").user("intruder");
    let mut bad = nats(vec![server.address()]);
    bad.auth = NatsAuth::Credentials(Secret::new(stranger.creds()));
    let err = start_error(&config(bad), 3).await;
    assert_eq!(err.kind(), ConnectErrorKind::Authentication, "{err}");
    assert!(
        !err.to_string().contains(&stranger.seed),
        "the seed must not appear: {err}"
    );

    // Connecting without credentials is refused too.
    let err = start_error(&config(nats(vec![server.address()])), 4).await;
    assert_eq!(err.kind(), ConnectErrorKind::Authentication, "{err}");

    // Content that is not a .creds file is reported as such, without echoing it.
    let mut garbage = nats(vec![server.address()]);
    garbage.auth = NatsAuth::Credentials(Secret::new("not-a-creds-file-SUAGARBAGE"));
    let err = start_error(&config(garbage), 5).await;
    assert_eq!(err.kind(), ConnectErrorKind::Credentials, "{err}");
    assert!(!err.to_string().contains("SUAGARBAGE"), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// tls.enable (+ tls.ca-file, tls.cert-file, tls.key-file)

fn tls_config(server: &NatsServer, pki: &Pki, client_cert: bool) -> NatsConfig {
    let mut cfg = nats(vec![server.address()]);
    cfg.tls.enable = true;
    cfg.tls.ca_file = Some(pki.ca.clone());
    if client_cert {
        cfg.tls.cert_file = Some(pki.client_cert.clone());
        cfg.tls.key_file = Some(pki.client_key.clone());
    }
    cfg
}

fn start_tls_server(pki: &Pki, verify_clients: bool) -> NatsServer {
    let args = pki.server_args(verify_clients);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    NatsServer::start_with_args(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_carries_events() {
    let pki = Pki::generate();
    let server = start_tls_server(&pki, false);
    let a = start(&config(tls_config(&server, &pki, false)), 1).await;
    let b = start(&config(tls_config(&server, &pki, false)), 2).await;
    let mut sub = b.subscribe();
    assert_flows(&a, &mut [&mut sub], "over tls").await;

    // The same through the parser.
    let c = start(
        &parsed(&format!(
            "address = \"{}\"\ntls.enable = true\ntls.ca-file = \"{}\"",
            server.address(),
            pki.ca.display()
        )),
        3,
    )
    .await;
    assert_eq!(c.link_state(), LinkState::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificates_are_presented_to_servers_that_verify_clients() {
    let pki = Pki::generate();
    let server = start_tls_server(&pki, true);
    let a = start(&config(tls_config(&server, &pki, true)), 1).await;
    assert_eq!(a.link_state(), LinkState::Connected);

    let err = start_error(&config(tls_config(&server, &pki, false)), 2).await;
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_enable_refuses_a_server_without_tls() {
    let pki = Pki::generate();
    let plain = NatsServer::start();
    let started = Instant::now();
    let err = start_error(&config(tls_config(&plain, &pki, false)), 1).await;
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err}");
    let message = err.to_string();
    assert!(message.contains("TLS"), "{message}");
    assert!(message.contains("does not speak TLS"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_wrong_ca_fails_with_a_certificate_error() {
    let pki = Pki::generate();
    let other = Pki::generate();
    let server = start_tls_server(&pki, false);
    let err = start_error(&config(tls_config(&server, &other, false)), 1).await;
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err}");
    let message = err.to_string();
    assert!(message.contains("certificate"), "{message}");
    assert!(message.contains("tls.ca-file"), "{message}");

    // Without tls.ca-file the system roots do not know the private CA either.
    let mut no_ca = tls_config(&server, &pki, false);
    no_ca.tls.ca_file = None;
    let err = start_error(&config(no_ca), 2).await;
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// max-reconnects

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_reconnects_absent_means_unlimited_and_recovers_after_a_restart() {
    let mut server = NatsServer::start();
    let cfg = config(nats(vec![server.address()]));
    let a = start(&cfg, 1).await;
    let b = start(&cfg, 2).await;
    let mut sub = b.subscribe();
    server.kill();
    wait_for(DEADLINE, "the loss to be noticed", || {
        a.link_state() == LinkState::Reconnecting
    })
    .await;
    // Long enough for a bounded policy to have given up several times over (a deliberate wait: the link must not
    // close during it).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.link_state(), LinkState::Reconnecting);
    server.restart();
    wait_connected(&a).await;
    wait_connected(&b).await;
    assert_flows(&a, &mut [&mut sub], "after restart").await;
    assert_eq!(Stats::get(&a.stats().reconnects), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_reconnects_n_gives_up_after_n_attempts() {
    captured_logs();
    let mut server = NatsServer::start();
    let mut cfg = nats(vec![server.address()]);
    cfg.max_reconnects = Reconnects::AtMost(NonZeroU32::new(2).expect("non-zero"));
    let c = start(&config(cfg), 1).await;
    server.kill();
    let took = wait_for(Duration::from_secs(5), "the link to close for good", || {
        matches!(c.link_state(), LinkState::Closed { .. })
    })
    .await;
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    match c.link_state() {
        LinkState::Closed { reason } => assert!(reason.contains("max-reconnects = 2"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(log_lines_of(&c).iter().any(|l| l.contains("closed for good")));
    // It stays closed when the server comes back (a deliberate wait: a reconnect would happen within it).
    server.restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(c.link_state(), LinkState::Closed { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_reconnects_n_does_not_limit_the_initial_connect() {
    // async-nats counts the initial connect's attempts against max_reconnects: with one allowed reconnect and the
    // dead address tried first, the start would fail. agora counts only attempts after a loss.
    let live = NatsServer::start();
    let dead = format!("127.0.0.1:{}", agora_testkit::free_port());
    for i in 0..8 {
        let cfg = parsed(&format!(
            "address = [\"{dead}\", \"{}\"]\nmax-reconnects = 1",
            live.address()
        ));
        let c = start(&cfg, 1 + i).await;
        assert_eq!(c.link_state(), LinkState::Connected);
        c.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_reconnects_zero_never_reconnects_and_publishing_counts_dropped_events() {
    let mut server = NatsServer::start();
    let mut cfg = nats(vec![server.address()]);
    cfg.max_reconnects = Reconnects::Never;
    cfg.request_timeout = Duration::from_secs(10);
    let c = start(&config(cfg), 1).await;
    server.kill();
    wait_for(DEADLINE, "the link to close", || {
        matches!(c.link_state(), LinkState::Closed { .. })
    })
    .await;
    match c.link_state() {
        LinkState::Closed { reason } => assert!(reason.contains("max-reconnects = 0"), "{reason}"),
        other => panic!("{other:?}"),
    }
    server.restart();
    // A reconnecting client would be back within a few hundred milliseconds (a deliberate wait: it must not be).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(matches!(c.link_state(), LinkState::Closed { .. }));
    assert_eq!(Stats::get(&c.stats().reconnects), 0);

    // Publishing neither hangs nor pretends: the events are counted as dropped.
    let publishing = async {
        for _ in 0..100 {
            c.publish(Event::QueueRefresh {})
                .await
                .expect("publish is accepted locally");
        }
    };
    tokio::time::timeout(Duration::from_secs(2), publishing)
        .await
        .expect("publish does not hang");
    wait_for(DEADLINE, "the events to be counted as dropped", || {
        Stats::get(&c.stats().dropped_events) >= 100
    })
    .await;
    // A request fails at once instead of waiting for timeout.request.
    let started = Instant::now();
    let err = c.request("anything", Bytes::new()).await.expect_err("closed");
    assert_eq!(err.kind(), RequestErrorKind::Closed, "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    tokio::time::timeout(Duration::from_secs(7), c.shutdown())
        .await
        .expect("shutdown does not hang");
}

// ---------------------------------------------------------------------------------------------------------------
// timeout.connection

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_connection_bounds_a_server_that_never_speaks() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let accepted = std::thread::spawn(move || {
        // Accept and hold connections without ever writing a byte.
        let mut held = Vec::new();
        for stream in silent.incoming().take(1).flatten() {
            held.push(stream);
        }
        // Holds them well past the 500 ms connect timeout under test (not a synchronisation).
        std::thread::sleep(Duration::from_secs(5));
        held.len()
    });
    let cfg = parsed(&format!("address = \"{addr}\"\ntimeout.connection = \"500ms\""));
    let started = Instant::now();
    let err = start_error(&cfg, 1).await;
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), ConnectErrorKind::TimedOut, "{err}");
    assert!(err.to_string().contains("timeout.connection"), "{err}");
    assert!(
        elapsed > Duration::from_millis(400) && elapsed < Duration::from_secs(3),
        "failed after {elapsed:?}"
    );
    assert_eq!(
        accepted.join().expect("listener thread"),
        1,
        "the TCP connection was accepted"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// timeout.request

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_request_no_responders_fail_fast_and_silence_times_out() {
    let server = NatsServer::start_with_monitoring(&[]);
    let mut fast = nats(vec![server.address()]);
    fast.request_timeout = Duration::from_secs(10);
    let a = start(&config(fast), 1).await;
    let started = Instant::now();
    let err = a
        .request("nobody", Bytes::from_static(b"?"))
        .await
        .expect_err("no responders");
    assert_eq!(err.kind(), RequestErrorKind::NoResponders, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );

    // A responder that never answers: a raw client subscribed to the request subject.
    let raw = async_nats::connect(server.url()).await.expect("raw client");
    let _silent = raw.subscribe("agora.events.slow").await.expect("subscribe");
    raw.flush().await.expect("flush");
    let mut slow = nats(vec![server.address()]);
    slow.request_timeout = Duration::from_millis(300);
    let b = start(&config(slow), 2).await;
    let started = Instant::now();
    let err = b
        .request("slow", Bytes::from_static(b"?"))
        .await
        .expect_err("times out");
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), RequestErrorKind::TimedOut, "{err}");
    assert!(err.to_string().contains("timeout.request"), "{err}");
    assert!(
        elapsed >= Duration::from_millis(290) && elapsed < Duration::from_millis(1500),
        "timed out after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_requests_leave_no_subscriptions_behind() {
    let server = NatsServer::start_with_monitoring(&[]);
    let raw = async_nats::connect(server.url()).await.expect("raw client");
    let _silent = raw.subscribe("agora.events.slow").await.expect("subscribe");
    raw.flush().await.expect("flush");
    let mut cfg = nats(vec![server.address()]);
    cfg.request_timeout = Duration::from_millis(20);
    let c = start(&config(cfg), 1).await;
    let settle = |what: &'static str| {
        let server = &server;
        async move {
            let mut last = server.subscriptions();
            // Stable for 200 ms.
            let mut stable_since = Instant::now();
            let started = Instant::now();
            while stable_since.elapsed() < Duration::from_millis(200) {
                assert!(started.elapsed() < DEADLINE, "subscriptions never settle ({what})");
                tokio::time::sleep(Duration::from_millis(50)).await;
                let now = server.subscriptions();
                if now != last {
                    last = now;
                    stable_since = Instant::now();
                }
            }
            last
        }
    };
    let baseline = settle("baseline").await;
    for _ in 0..100 {
        let err = c.request("slow", Bytes::new()).await.expect_err("nobody answers");
        assert_eq!(err.kind(), RequestErrorKind::TimedOut);
        let err = c.request("nobody", Bytes::new()).await.expect_err("nobody serves");
        assert_eq!(err.kind(), RequestErrorKind::NoResponders);
    }
    wait_for(DEADLINE, "the server's subscriptions to return to the baseline", || {
        server.subscriptions() <= baseline
    })
    .await;
    // Per connection too: the coordinator holds only its events subscription.
    let instance = format!("{:016x}", c.instance_id());
    let connz = server.monitor("/connz");
    let ours = connz["connections"]
        .as_array()
        .and_then(|conns| {
            conns
                .iter()
                .find(|c| c["name"].as_str().is_some_and(|n| n.contains(&instance)))
        })
        .cloned()
        .expect("the coordinator's connection is listed");
    assert_eq!(ours["subscriptions"].as_u64(), Some(1), "{ours}");
}

// ---------------------------------------------------------------------------------------------------------------
// ping-interval

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_interval_detects_a_hung_server_and_fails_over() {
    let cluster = NatsCluster::start(2);
    assert!(cluster.wait_for_routes(DEADLINE), "the two servers form a cluster");
    let mut cfg = nats(cluster.addresses());
    cfg.ping_interval = Duration::from_millis(500);
    cfg.connection_timeout = Duration::from_secs(1);
    let cfg = config(cfg);
    let a = start(&cfg, 1).await;
    let b = start(&cfg, 2).await;
    let mut sub_a = a.subscribe();
    let mut sub_b = b.subscribe();
    assert_flows(&a, &mut [&mut sub_b], "before").await;

    let hung_port = port_of(&a);
    let hung = cluster
        .servers
        .iter()
        .find(|s| s.port() == hung_port)
        .expect("known server");
    hung.pause();
    let detected = wait_for(Duration::from_secs(5), "the hung server to be detected", || {
        a.link_state() != LinkState::Connected
    })
    .await;
    // async-nats disconnects once more than two pings are outstanding: within three intervals.
    assert!(detected < Duration::from_millis(2500), "detected after {detected:?}");
    wait_for(DEADLINE, "failover to the other server", || {
        a.link_state() == LinkState::Connected && port_of(&a) != hung_port
    })
    .await;
    // b may have been on the hung server too; either way, events flow both ways again.
    wait_for(DEADLINE, "b to be on the live server", || {
        b.link_state() == LinkState::Connected && port_of(&b) != hung_port
    })
    .await;
    assert_flows(&a, &mut [&mut sub_b], "after a").await;
    assert_flows(&b, &mut [&mut sub_a], "after b").await;
    hung.resume();
}

// ---------------------------------------------------------------------------------------------------------------
// capacity.client / capacity.subscription / capacity.read-buffer

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_subscription_capacity_reports_loss_and_never_stalls() {
    let server = NatsServer::start();
    let mut cfg = nats(vec![server.address()]);
    cfg.subscription_capacity = 8;
    let c = start(&config(cfg), 1).await;
    let mut sub = c.subscribe();
    // The control: the same flood with the default capacity (65536) loses nothing.
    let control = start(&config(nats(vec![server.address()])), 3).await;

    // A flood of valid batches from a fake node 9, far faster than the receiver drains a channel of 8.
    let raw = async_nats::connect(server.url()).await.expect("raw client");
    let mut encoder = agora::codec::BatchEncoder::new(node(9), 99);
    for seq in 0..20_000u64 {
        encoder.begin(seq, 1);
        encoder.push_event(&Event::QueueRefresh {}, 1);
        raw.publish("agora.events", encoder.finish()).await.expect("publish");
    }
    raw.flush().await.expect("flush");

    let stats = c.stats();
    wait_for(DEADLINE, "the loss to be counted", || {
        Stats::get(&stats.slow_consumer_events) > 0 && Stats::get(&stats.gaps) > 0
    })
    .await;
    // Subscribers are told to resync node 9.
    let told = tokio::time::timeout(DEADLINE, async {
        loop {
            match sub.recv().await {
                Some(Notification::Resync { node: n, .. }) if n == node(9) => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(told, "a Resync notification for node 9");
    assert!(Stats::get(&stats.missed_records) > 0);
    wait_for(DEADLINE, "the control node to receive the whole flood", || {
        Stats::total(&control.stats().received) >= 20_000
    })
    .await;
    assert_eq!(Stats::get(&control.stats().slow_consumer_events), 0);
    assert_eq!(Stats::get(&control.stats().gaps), 0);

    // And the node still works.
    let other = start(&config(nats(vec![server.address()])), 2).await;
    let mut fresh = c.subscribe();
    assert_flows(&other, &mut [&mut fresh], "after the flood").await;
    assert_eq!(c.link_state(), LinkState::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_read_buffer_still_delivers_events_larger_than_it() {
    let server = NatsServer::start();
    let mut cfg = nats(vec![server.address()]);
    cfg.read_buffer_capacity = 512;
    let cfg = config(cfg);
    let a = start(&cfg, 1).await;
    let b = start(&cfg, 2).await;
    let mut sub = b.subscribe();
    let big = Event::Custom {
        name: "big".into(),
        data: Bytes::from((0..4096u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
    };
    for _ in 0..20 {
        a.publish(big.clone()).await.expect("publish");
    }
    let mut received = 0;
    tokio::time::timeout(DEADLINE, async {
        while received < 20 {
            if let Some(Notification::Event(d)) = sub.recv().await {
                if d.origin == a.node_id() {
                    assert_eq!(d.event, big);
                    received += 1;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "all 20 events of 4 KiB arrive; got {received} (b: {} batches, {} gaps)",
            Stats::get(&b.stats().batches_received),
            Stats::get(&b.stats().gaps)
        )
    });
    assert_eq!(Stats::get(&b.stats().gaps), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_client_capacity_still_carries_every_event_in_order() {
    let server = NatsServer::start();
    let mut cfg = nats(vec![server.address()]);
    cfg.client_capacity = 1;
    let cfg = config(cfg);
    let a = start(&cfg, 1).await;
    let b = start(&cfg, 2).await;
    let mut sub = b.subscribe();
    for i in 0..2000u32 {
        a.publish(Event::EmailPush {
            account_id: 1,
            email_id: i,
            change_id: u64::from(i),
        })
        .await
        .expect("publish");
    }
    let mut next = 0u32;
    tokio::time::timeout(DEADLINE, async {
        while next < 2000 {
            if let Some(Notification::Event(d)) = sub.recv().await {
                if let Event::EmailPush { email_id, .. } = d.event {
                    assert_eq!(email_id, next, "in order, none missing");
                    next += 1;
                }
            }
        }
    })
    .await
    .expect("every event arrives");
    assert_eq!(Stats::get(&a.stats().dropped_events), 0);
}

// ---------------------------------------------------------------------------------------------------------------
// no-echo

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_echo_is_on_by_default_and_the_server_sends_nothing_back() {
    let server = NatsServer::start();
    let cfg = parsed(&format!("address = \"{}\"", server.address()));
    if let Backend::Nats { config, .. } = &cfg.backend {
        assert!(config.no_echo, "no-echo defaults to true");
    }
    let a = start(&cfg, 1).await;
    // A raw observer proves the batches really went out.
    let raw = async_nats::connect(server.url()).await.expect("raw client");
    let mut observed = raw.subscribe("agora.events").await.expect("subscribe");
    raw.flush().await.expect("flush");
    for _ in 0..10 {
        a.publish(Event::QueueRefresh {}).await.expect("publish");
    }
    let mut batches = 0;
    tokio::time::timeout(DEADLINE, async {
        use futures::StreamExt;
        while Stats::get(&a.stats().records_sent) < 10 || batches == 0 {
            if observed.next().await.is_some() {
                batches += 1;
            }
        }
    })
    .await
    .expect("the observer sees the batches");
    // Give an echo, were there one, time to come back (a deliberate wait: none may arrive).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        Stats::get(&a.stats().echoes_filtered),
        0,
        "the server echoed our own messages"
    );
    assert_eq!(Stats::get(&a.stats().batches_received), 0);

    // With no-echo off, the server does echo, and the node filters it: each event still delivered once.
    let off = parsed(&format!("address = \"{}\"\nno-echo = false", server.address()));
    let b = start(&off, 2).await;
    let mut sub = b.subscribe();
    b.publish(Event::QueuePaused {}).await.expect("publish");
    wait_for(DEADLINE, "the echo to be filtered", || {
        Stats::get(&b.stats().echoes_filtered) >= 1
    })
    .await;
    let mut own = 0;
    while let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
        if let Notification::Event(d) = n {
            if d.origin == b.node_id() && d.event == (Event::QueuePaused {}) {
                own += 1;
            }
        }
    }
    assert_eq!(own, 1, "own event delivered exactly once");
}
