//! The benchmark behind `agora bench`: measures the cluster bus against a real NATS server, with baselines in the
//! same run.
//!
//! A library of its own so the shipped node code does not carry it: the `agora` binary links it behind its default
//! `bench` feature and calls [`run`] with its [`Hooks`], the one node internal a scenario needs (the blocked-IP
//! registry, for `lookup`). Scenarios that measure a real node start this same binary as `agora node`
//! (`std::env::current_exe`), so the bench always runs inside the `agora` binary.
//!
//! Modes (each publisher and receiver on its own connection, like the nodes of a real cluster):
//! - `raw`: one NATS message per event, the same encoded bytes: the naive design and the baseline;
//! - `batch100`: Stalwart's design: producers queue (1,024 at most), a sender drains up to 100 events into one
//!   message, no linger timer;
//! - `agora`: the real `Coordinator`, `publish()` on one node to `subscribe()` on the others.
//!
//! Scenarios: throughput with 1 and 4 receivers, latency at fixed offered rates, blocked-IP lookups, the node's
//! memory, fan-out of state changes to many EventSource streams, and push delivery (throughput, and isolation from
//! endpoints that hang or fail).

#![warn(missing_docs)]

mod bus;
mod client;
mod error;
mod eventsource;
pub mod fanout;
mod hooks;
pub mod lookup;
mod memory;
pub mod push;
mod report;
pub mod resume;
pub mod tokens;
pub mod transfer;
pub mod web_push;

pub use error::BenchError;
pub use hooks::Hooks;
pub use report::ScenarioResult;

use clap::Args;

/// Every scenario, in the order they run.
const SCENARIOS: &[&str] = &[
    "throughput",
    "latency",
    "eventsource",
    "lookup",
    "memory",
    "fanout",
    "push",
    "web_push",
    "transfer",
    "resume",
    "tokens",
];

/// Benchmark options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The NATS server to measure against (e.g. nats://127.0.0.1:4222).
    #[arg(long, conflicts_with = "nats_server_bin")]
    pub server: Option<String>,
    /// Start this nats-server binary on a free loopback port and measure against it.
    #[arg(long)]
    pub nats_server_bin: Option<std::path::PathBuf>,
    /// Modes to compare, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "raw,batch100,agora")]
    pub mode: Vec<String>,
    /// Scenarios to run, comma-separated: throughput, latency, eventsource, lookup, memory, fanout, push, web_push,
    /// transfer, resume, tokens (transfer, web_push and resume are not run unless named: they load over a million
    /// entries, encrypt for seconds, or need JetStream).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "throughput,latency,eventsource,lookup,memory,fanout,push,tokens"
    )]
    pub scenario: Vec<String>,
    /// Events per throughput run.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Receiving nodes for the throughput runs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub receivers: Vec<usize>,
    /// Offered rates (events/s) for the latency runs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,50000")]
    pub rate: Vec<u64>,
    /// Seconds each latency run lasts.
    #[arg(long, default_value_t = 3)]
    pub duration: u64,
    /// Blocked-IP rules for the lookup scenario.
    #[arg(long, default_value_t = 100_000)]
    pub rules: usize,
    /// Open EventSource streams for the memory scenario.
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
    /// Open EventSource streams for the fanout scenario.
    #[arg(long, default_value_t = 10_000)]
    pub fanout_streams: usize,
    /// Accounts the fanout scenario's streams and events are spread over.
    #[arg(long, default_value_t = 100)]
    pub fanout_accounts: u32,
    /// Events POSTed per second in the fanout scenario.
    #[arg(long, default_value_t = 1000)]
    pub fanout_rate: u64,
    /// Seconds the fanout scenario POSTs for.
    #[arg(long, default_value_t = 10)]
    pub fanout_seconds: u64,
    /// Blocked-IP rules the transfer scenario's serving node holds.
    #[arg(long, default_value_t = 1_000_000)]
    pub transfer_rules: usize,
    /// Push subscriptions the transfer scenario's serving node holds.
    #[arg(long, default_value_t = 100_000)]
    pub transfer_subscriptions: usize,
    /// Healthy accounts (one push subscription each, on one fast endpoint) for the push scenario.
    #[arg(long, default_value_t = 1000)]
    pub push_accounts: u32,
    /// State changes POSTed as fast as the node takes them in the push throughput run.
    #[arg(long, default_value_t = 20_000)]
    pub push_changes: u64,
    /// State changes per second in the push isolation run (half for healthy accounts, half for bad endpoints').
    #[arg(long, default_value_t = 1000)]
    pub push_rate: u64,
    /// Seconds the push isolation run POSTs for.
    #[arg(long, default_value_t = 10)]
    pub push_seconds: u64,
    /// Push subscriptions of each web_push row (plain, then encrypted).
    #[arg(long, default_value_t = 10_000)]
    pub web_push_subscriptions: u32,
    /// Accounts the web_push subscriptions are spread over.
    #[arg(long, default_value_t = 1000)]
    pub web_push_accounts: u32,
    /// State changes per second in each web_push row.
    #[arg(long, default_value_t = 1000)]
    pub web_push_rate: u64,
    /// Seconds of changes in each web_push row.
    #[arg(long, default_value_t = 10)]
    pub web_push_seconds: u64,
    /// EventSource clients on the node the resume scenario kills.
    #[arg(long, default_value_t = 10_000)]
    pub resume_clients: usize,
    /// Accounts the resume scenario's clients and changes are spread over.
    #[arg(long, default_value_t = 100)]
    pub resume_accounts: u32,
    /// State changes per second throughout the resume scenario.
    #[arg(long, default_value_t = 200)]
    pub resume_rate: u64,
    /// Connections per credential in the tokens scenario.
    #[arg(long, default_value_t = 2000)]
    pub token_connections: usize,
    /// One JSON object per scenario on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the chosen scenarios and prints the results.
pub async fn run(args: BenchArgs, hooks: &dyn Hooks) -> Result<(), BenchError> {
    for mode in &args.mode {
        if !bus::MODES.contains(&mode.as_str()) {
            return Err(BenchError::Usage(format!(
                "unknown --mode {mode:?}; allowed: {}",
                bus::MODES.join(", ")
            )));
        }
    }
    for scenario in &args.scenario {
        if !SCENARIOS.contains(&scenario.as_str()) {
            return Err(BenchError::Usage(format!(
                "unknown --scenario {scenario:?}; allowed: {}",
                SCENARIOS.join(", ")
            )));
        }
    }
    let wants = |s: &str| args.scenario.iter().any(|x| x == s);
    let needs_server = [
        "throughput",
        "latency",
        "eventsource",
        "memory",
        "fanout",
        "push",
        "web_push",
        "transfer",
        "resume",
        "tokens",
    ]
    .iter()
    .any(|s| wants(s));
    let (_server, url) = match (&args.server, &args.nats_server_bin) {
        _ if !needs_server => (None, String::new()),
        (Some(url), _) => (None, url.clone()),
        (None, Some(bin)) => {
            let server = agora_testkit::NatsServer::try_start(bin, &[]).map_err(BenchError::Runtime)?;
            let url = server.url();
            (Some(server), url)
        }
        (None, None) => {
            return Err(BenchError::Usage(
                "give --server URL or --nats-server-bin PATH (the bus scenarios need a NATS server)".into(),
            ))
        }
    };
    let mut results: Vec<ScenarioResult> = Vec::new();
    let mut emit = |r: ScenarioResult| {
        if args.json {
            println!("{}", r.to_json());
        }
        results.push(r);
    };
    if wants("throughput") {
        for receivers in &args.receivers {
            for mode in &args.mode {
                eprintln!("bench: throughput, {mode}, {} events, 1 -> {receivers}", args.events);
                let r = bus::throughput(mode, &url, args.events, *receivers)
                    .await
                    .map_err(BenchError::Runtime)?;
                emit(r);
            }
        }
    }
    if wants("latency") {
        for rate in &args.rate {
            for mode in &args.mode {
                eprintln!("bench: latency, {mode}, {rate} events/s for {}s", args.duration);
                let r = bus::latency(mode, &url, *rate, args.duration)
                    .await
                    .map_err(BenchError::Runtime)?;
                emit(r);
            }
        }
    }
    if wants("eventsource") {
        eprintln!("bench: POST on one node to EventSource on another, 1000 changes one at a time");
        let url = url.clone();
        let r = tokio::task::spawn_blocking(move || eventsource::run(&url, 1000))
            .await
            .map_err(|e| BenchError::Runtime(e.to_string()))?
            .map_err(BenchError::Runtime)?;
        emit(r);
    }
    if wants("lookup") {
        eprintln!("bench: blocked-IP lookups against {} rules", args.rules);
        emit(hooks.lookup(args.rules));
    }
    if wants("memory") {
        eprintln!(
            "bench: node memory, idle and with {} rules and {} EventSource streams",
            args.rules, args.streams
        );
        for r in memory::run(&url, args.rules, args.streams)
            .await
            .map_err(BenchError::Runtime)?
        {
            emit(r);
        }
    }
    if wants("fanout") {
        let options = fanout::FanoutOptions {
            streams: args.fanout_streams,
            accounts: args.fanout_accounts,
            rate: args.fanout_rate,
            seconds: args.fanout_seconds,
        };
        eprintln!(
            "bench: fan-out, {} EventSource streams over {} accounts, {} events/s for {}s",
            options.streams, options.accounts, options.rate, options.seconds
        );
        let exe = std::env::current_exe().map_err(|e| BenchError::Runtime(e.to_string()))?;
        emit(fanout::run(&exe, &url, &options).await.map_err(BenchError::Runtime)?);
    }
    if wants("transfer") {
        eprintln!(
            "bench: state transfer of {} rules and {} push subscriptions to a joining node",
            args.transfer_rules, args.transfer_subscriptions
        );
        let exe = std::env::current_exe().map_err(|e| BenchError::Runtime(e.to_string()))?;
        let r = transfer::run(&exe, &url, args.transfer_rules, args.transfer_subscriptions)
            .await
            .map_err(BenchError::Runtime)?;
        emit(r);
    }
    if wants("push") {
        let options = push::PushOptions {
            accounts: args.push_accounts,
            changes: args.push_changes,
            rate: args.push_rate,
            seconds: args.push_seconds,
        };
        eprintln!(
            "bench: push, {} changes to {} accounts on one endpoint, then {} changes/s for {}s next to 10 bad endpoints",
            options.changes, options.accounts, options.rate, options.seconds
        );
        let exe = std::env::current_exe().map_err(|e| BenchError::Runtime(e.to_string()))?;
        for r in push::run(&exe, &url, &options).await.map_err(BenchError::Runtime)? {
            emit(r);
        }
    }
    if wants("web_push") {
        let options = web_push::WebPushOptions {
            subscriptions: args.web_push_subscriptions,
            accounts: args.web_push_accounts,
            rate: args.web_push_rate,
            seconds: args.web_push_seconds,
        };
        eprintln!(
            "bench: web_push, {} subscriptions over {} accounts, {} changes/s for {}s, plain then RFC 8291-encrypted, \
             VAPID-signed",
            options.subscriptions, options.accounts, options.rate, options.seconds
        );
        let exe = std::env::current_exe().map_err(|e| BenchError::Runtime(e.to_string()))?;
        for r in web_push::run(&exe, &url, &options).await.map_err(BenchError::Runtime)? {
            emit(r);
        }
    }
    if wants("tokens") {
        eprintln!(
            "bench: {} EventSource connections each with the node token, HS256 and ES256 client tokens",
            args.token_connections
        );
        let exe = std::env::current_exe().map_err(|e| BenchError::Runtime(e.to_string()))?;
        let (url, connections) = (url.clone(), args.token_connections);
        let rows = tokio::task::spawn_blocking(move || tokens::run(&exe, &url, connections))
            .await
            .map_err(|e| BenchError::Runtime(e.to_string()))?
            .map_err(BenchError::Runtime)?;
        for r in rows {
            emit(r);
        }
    }
    if wants("resume") {
        let options = resume::ResumeOptions {
            clients: args.resume_clients,
            accounts: args.resume_accounts,
            rate: args.resume_rate,
        };
        eprintln!(
            "bench: resume storm, {} EventSource clients over {} accounts on one of 3 durable nodes, {} changes/s; the \
             node is killed and every client resumes on a survivor with its Last-Event-ID",
            options.clients, options.accounts, options.rate
        );
        // The durable mode needs JetStream: a server of its own when the bench starts servers, else the one given.
        let (_js_server, js_url) = match &args.nats_server_bin {
            Some(bin) => {
                let dir = std::env::temp_dir().join(format!("agora-bench-js-{}", std::process::id()));
                let dir = dir.to_string_lossy().into_owned();
                let server =
                    agora_testkit::NatsServer::try_start(bin, &["-js", "-sd", &dir]).map_err(BenchError::Runtime)?;
                let url = server.url();
                (Some(server), url)
            }
            None => (None, url.clone()),
        };
        let exe = std::env::current_exe().map_err(|e| BenchError::Runtime(e.to_string()))?;
        emit(
            resume::run(&exe, &js_url, &options)
                .await
                .map_err(BenchError::Runtime)?,
        );
    }
    if !args.json {
        print!("{}", report::table(&results));
    }
    Ok(())
}
