//! Test support: real `nats-server` processes for integration tests (and for `agora bench`).
//!
//! Tests never depend on a server the machine happens to run: each starts its own on a free loopback port
//! (`-p -1`, the port read back from the server's log, so parallel tests never collide) and the process is killed when
//! the [`NatsServer`] is dropped. The binary is `NATS_SERVER_BIN` if set, else the project-local pinned copy that
//! `scripts/test` installs (`.tools/nats/bin/nats-server`). A missing binary is a loud panic, never a skip.
//!
//! Modules: [`server`] (one server), [`cluster`] (routed servers), [`http`] (a tiny HTTP client for the node's API),
//! [`node`] (`agora node` processes), and with the `pki` feature [`tls`] (a test CA) and [`operator`] (NATS
//! operator-mode JWTs).

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub mod cluster;
pub mod http;
pub mod node;
#[cfg(feature = "pki")]
pub mod operator;
pub mod server;
#[cfg(feature = "pki")]
pub mod tls;

pub use cluster::NatsCluster;
pub use server::{nats_server_bin, NatsServer};

/// Writes `contents` to a new file in a fresh scratch directory and returns its path (left behind for post-mortems;
/// the OS temp directory is cleaned by the OS).
pub fn scratch_file(name: &str, contents: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "agora-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write scratch file");
    path
}

/// Creates a new empty directory `name` in a fresh scratch directory (e.g. a JetStream store dir for `-sd`).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = scratch_file("dir", "").with_file_name(name);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Polls `condition` every 10 ms until it holds or `deadline` passes; returns whether it held.
pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Returns a loopback port that was free a moment ago (for agora's own HTTP listener in process tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// An unmodified Stalwart 0.15 configuration file (server, HTTP, cluster, stores, tracer sections), whose NATS
/// store points at `nats_address`: what `agora watch --stalwart` and the Stalwart-file parser must read as it is.
pub fn stalwart_config_file(nats_address: &str) -> String {
    format!(
        r#"
[server]
hostname = "mx1.example.org"

[server.listener.smtp]
bind = ["[::]:25"]
protocol = "smtp"

[http]
url = "https://mx1.example.org"
use-x-forwarded = true

[cluster]
node-id = 1
coordinator = "nats"

[store."rocksdb"]
type = "rocksdb"
path = "/opt/stalwart/data"

[store."nats"]
type = "nats"
address = ["{nats_address}"]
no-echo = true

[tracer.stdout]
type = "stdout"
level = "info"
"#
    )
}
