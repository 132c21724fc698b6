//! One nats-server process on a loopback port of its own choosing, killed on drop.
//!
//! The server picks its client port (`-p -1`) and, when asked for monitoring, its monitoring port (`-m -1`) itself,
//! and the ports are read back from its log: a port found free by the test and then handed to the server could be
//! taken by another process in between. A restart reuses the ports chosen the first time.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{http, scratch_file};

/// How long a server may take to start listening before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(15);

/// Finds the nats-server binary: `NATS_SERVER_BIN`, else `.tools/nats/bin/nats-server` in the workspace.
pub fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        assert!(bin.exists(), "NATS_SERVER_BIN={} does not exist", bin.display());
        return bin;
    }
    let mut dir = Some(Path::new(env!("CARGO_MANIFEST_DIR")));
    while let Some(d) = dir {
        let candidate = d.join(".tools/nats/bin/nats-server");
        if candidate.exists() {
            return candidate;
        }
        dir = d.parent();
    }
    panic!(
        "no nats-server binary: set NATS_SERVER_BIN or run the tests with ./scripts/test, which installs the pinned \
         nats-server 2.15.1 into .tools/nats"
    );
}

/// A running nats-server, killed on drop.
pub struct NatsServer {
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    /// The address the server listens on (`-a`), `127.0.0.1` unless the arguments set one.
    host: String,
    /// The monitoring port (`-m`), if any.
    monitor_port: Option<u16>,
    args: Vec<String>,
    log: mpsc::Receiver<String>,
}

impl NatsServer {
    /// Starts a plain server on a free loopback port.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Starts a server with extra command-line arguments (e.g. `["-js"]`, `["--user","u","--pass","p"]`,
    /// `["-c", "file.conf"]`). The port is chosen by the server unless the arguments set one.
    pub fn start_with_args(args: &[&str]) -> Self {
        Self::try_start(&nats_server_bin(), args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `bin` with these arguments, reporting a failure instead of panicking (for `agora bench`, which starts
    /// its own server the same way the tests do).
    pub fn try_start(bin: &Path, args: &[&str]) -> Result<Self, String> {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let host = flag_value(&args, &["-a", "--addr", "--net"]).unwrap_or_else(|| "127.0.0.1".to_string());
        let spawned = spawn(bin, &args, None)?;
        if let Some(chosen) = spawned.monitor_port {
            // Later restarts keep the monitoring port the server chose (`-m -1`), as they keep the client port.
            set_flag_value(&mut args, MONITOR_FLAGS, &chosen.to_string());
        }
        Ok(NatsServer {
            bin: bin.to_path_buf(),
            child: Some(spawned.child),
            port: spawned.port,
            host,
            monitor_port: spawned.monitor_port,
            args,
            log: spawned.log,
        })
    }

    /// Starts a server listening on `host` (e.g. `"::1"` for IPv6 loopback) instead of 127.0.0.1.
    pub fn start_on(host: &str, args: &[&str]) -> Self {
        let mut all = vec!["-a", host];
        all.extend_from_slice(args);
        Self::start_with_args(&all)
    }

    /// Starts a server with the HTTP monitoring endpoint on a port the server chooses (see [`NatsServer::varz`]).
    pub fn start_with_monitoring(args: &[&str]) -> Self {
        let mut all = vec!["-m", "-1"];
        all.extend_from_slice(args);
        Self::start_with_args(&all)
    }

    /// The server's `/varz` monitoring document (the server must have been started with `-m`).
    pub fn varz(&self) -> serde_json::Value {
        self.monitor("/varz")
    }

    /// A monitoring document such as `/varz`, `/connz` or `/routez` (the server must have been started with `-m`).
    pub fn monitor(&self, path: &str) -> serde_json::Value {
        let port = self
            .monitor_port
            .expect("the server was started without -m (use start_with_monitoring)");
        let addr = format!("127.0.0.1:{port}");
        let response =
            http::request(&addr, "GET", path, None).unwrap_or_else(|e| panic!("GET http://{addr}{path} failed: {e}"));
        assert_eq!(response.status, 200, "GET {path}: {}", response.body);
        response.json()
    }

    /// The number of subscriptions the server holds (`/varz` `subscriptions`).
    pub fn subscriptions(&self) -> u64 {
        self.varz()["subscriptions"]
            .as_u64()
            .expect("varz.subscriptions is a number")
    }

    /// Starts a server with a configuration file holding `config` (nats-server syntax, e.g. `max_payload: 4096`),
    /// plus extra arguments. Command-line flags win over the file, so the port is still chosen freely.
    pub fn start_with_config(config: &str, args: &[&str]) -> Self {
        let path = scratch_file("nats.conf", config);
        let path = path.to_string_lossy().into_owned();
        let mut all = vec!["-c", path.as_str()];
        all.extend_from_slice(args);
        Self::start_with_args(&all)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:<port>` (`nats://[::1]:<port>` for an IPv6 host).
    pub fn url(&self) -> String {
        format!("nats://{}", self.address())
    }

    /// `127.0.0.1:<port>` (`[::1]:<port>` for an IPv6 host), the form an agora config's `address` usually takes.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same arguments (after [`NatsServer::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        self.respawn();
    }

    /// Starts the process again with the stored arguments, on the client port chosen before.
    fn respawn(&mut self) {
        let spawned = spawn(&self.bin, &self.args, Some(self.port)).unwrap_or_else(|e| panic!("{e}"));
        if let Some(chosen) = spawned.monitor_port {
            set_flag_value(&mut self.args, MONITOR_FLAGS, &chosen.to_string());
        }
        self.child = Some(spawned.child);
        self.port = spawned.port;
        self.monitor_port = spawned.monitor_port;
        self.log = spawned.log;
    }

    /// Starts the server again on the same port with different arguments (e.g. other credentials), which are kept
    /// for later restarts. The listen address and monitoring port must not change.
    pub fn restart_with_args(&mut self, args: &[&str]) {
        self.kill();
        self.args = args.iter().map(|a| a.to_string()).collect();
        self.respawn();
    }

    /// Freezes the process (SIGSTOP): the socket stays open but nothing answers, as with a hung server.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Resumes a process frozen by [`NatsServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .arg(sig)
                .arg(pid.to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {sig} {pid} failed");
        }
    }

    /// Log lines printed since the last call (for assertions and diagnostics).
    pub fn drain_log(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.resume();
        }
        self.kill();
    }
}

/// The flags that set the monitoring port.
const MONITOR_FLAGS: &[&str] = &["-m", "--http_port"];

/// A started server process, the ports it reported, and its log lines.
struct Spawned {
    child: Child,
    /// The client port, from "Listening for client connections on HOST:PORT".
    port: u16,
    /// The monitoring port, from "Starting http monitor on HOST:PORT", when monitoring was asked for.
    monitor_port: Option<u16>,
    log: mpsc::Receiver<String>,
}

/// Spawns nats-server and waits until it reports its client port (and its monitoring port, when `-m` is given).
fn spawn(bin: &Path, args: &[String], port: Option<u16>) -> Result<Spawned, String> {
    let mut cmd = Command::new(bin);
    if flag_value(args, &["-a", "--addr", "--net"]).is_none() {
        cmd.args(["-a", "127.0.0.1"]);
    }
    if !args.iter().any(|a| a == "-p" || a == "--port") {
        let port = port.map_or_else(|| "-1".to_string(), |p| p.to_string());
        cmd.args(["-p", &port]);
    }
    let wants_monitor = flag_value(args, MONITOR_FLAGS).is_some();
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stderr = child
        .stderr
        .take()
        .ok_or("nats-server has no stderr to read its port from")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + START_DEADLINE;
    let mut seen = Vec::new();
    let (mut client, mut monitor) = (None, None);
    let fail = |child: &mut Child, message: String| {
        let _ = child.kill();
        let _ = child.wait();
        Err(message)
    };
    loop {
        if let Some(port) = client {
            if monitor.is_some() || !wants_monitor {
                return Ok(Spawned {
                    child,
                    port,
                    monitor_port: monitor,
                    log: rx,
                });
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let message = format!(
                "{} did not start within {START_DEADLINE:?}; its log:\n{}",
                bin.display(),
                seen.join("\n")
            );
            return fail(&mut child, message);
        };
        for (marker, slot) in [
            ("Listening for client connections on ", &mut client),
            ("Starting http monitor on ", &mut monitor),
        ] {
            if let Some(rest) = line.split(marker).nth(1) {
                match rest.trim().rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) {
                    Some(port) => *slot = Some(port),
                    None => return fail(&mut child, format!("unexpected nats-server log line: {line}")),
                }
            }
        }
        seen.push(line);
    }
}

/// The value following the first of `flags` in `args`.
fn flag_value(args: &[String], flags: &[&str]) -> Option<String> {
    args.iter()
        .position(|a| flags.contains(&a.as_str()))
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Sets the value following the first of `flags` in `args` (to pin a port the server chose).
fn set_flag_value(args: &mut [String], flags: &[&str], value: &str) {
    if let Some(i) = args.iter().position(|a| flags.contains(&a.as_str())) {
        if let Some(slot) = args.get_mut(i + 1) {
            *slot = value.to_string();
        }
    }
}
