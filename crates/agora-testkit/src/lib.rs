//! Test support: real `nats-server` processes for integration tests.
//!
//! Tests never depend on a server the machine happens to run: each starts its own on a free loopback port
//! (`-p -1`, the port read back from the server's log, so parallel tests never collide) and the process is killed when
//! the [`NatsServer`] is dropped. The binary is `NATS_SERVER_BIN` if set, else the project-local pinned copy that
//! `scripts/test` installs (`.tools/nats/bin/nats-server`). A missing binary is a loud panic, never a skip.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod operator;
pub mod tls;

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
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let host = flag_value(&args, &["-a", "--addr", "--net"]).unwrap_or_else(|| "127.0.0.1".to_string());
        let monitor_port = flag_value(&args, &["-m", "--http_port"]).and_then(|p| p.parse().ok());
        let (child, port, log) = spawn(&args, None);
        NatsServer {
            child: Some(child),
            port,
            host,
            monitor_port,
            args,
            log,
        }
    }

    /// Starts a server listening on `host` (e.g. `"::1"` for IPv6 loopback) instead of 127.0.0.1.
    pub fn start_on(host: &str, args: &[&str]) -> Self {
        let mut all = vec!["-a", host];
        all.extend_from_slice(args);
        Self::start_with_args(&all)
    }

    /// Starts a server with the HTTP monitoring endpoint on a free port (see [`NatsServer::varz`]).
    pub fn start_with_monitoring(args: &[&str]) -> Self {
        let port = free_port().to_string();
        let mut all = vec!["-m", port.as_str()];
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
        let (child, port, log) = spawn(&self.args, Some(self.port));
        self.child = Some(child);
        self.port = port;
        self.log = log;
    }

    /// Starts the server again on the same port with different arguments (e.g. other credentials), which are kept
    /// for later restarts. The listen address and monitoring port must not change.
    pub fn restart_with_args(&mut self, args: &[&str]) {
        self.kill();
        self.args = args.iter().map(|a| a.to_string()).collect();
        let (child, port, log) = spawn(&self.args, Some(self.port));
        self.child = Some(child);
        self.port = port;
        self.log = log;
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

/// Spawns nats-server and waits until it reports its client port.
fn spawn(args: &[String], port: Option<u16>) -> (Child, u16, mpsc::Receiver<String>) {
    let bin = nats_server_bin();
    let mut cmd = Command::new(&bin);
    if flag_value(args, &["-a", "--addr", "--net"]).is_none() {
        cmd.args(["-a", "127.0.0.1"]);
    }
    if !args.iter().any(|a| a == "-p" || a == "--port") {
        let port = port.map_or_else(|| "-1".to_string(), |p| p.to_string());
        cmd.args(["-p", &port]);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let stderr = child.stderr.take().expect("piped stderr");
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
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                    let port = rest
                        .trim()
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse::<u16>().ok())
                        .unwrap_or_else(|| panic!("unexpected nats-server log line: {line}"));
                    return (child, port, rx);
                }
                seen.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "nats-server did not start within {START_DEADLINE:?}; its log:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
}

/// The value following the first of `flags` in `args`.
fn flag_value(args: &[String], flags: &[&str]) -> Option<String> {
    args.iter()
        .position(|a| flags.contains(&a.as_str()))
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Several nats-servers joined as one cluster (full mesh of routes), each with monitoring enabled.
pub struct NatsCluster {
    /// The servers, in start order.
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` servers on free loopback ports, joined as the cluster `agora-test`.
    pub fn start(n: usize) -> Self {
        Self::start_with_args(n, &[])
    }

    /// Starts `n` JetStream-enabled servers joined as one cluster, each with its own store directory (`-js -sd`), so
    /// that replicated streams work and a killed server restarts ([`NatsServer::restart`]) with its data.
    pub fn start_jetstream(n: usize) -> Self {
        let dirs: Vec<String> = (0..n)
            .map(|i| scratch_dir(&format!("js-{i}")).to_string_lossy().into_owned())
            .collect();
        Self::start_each(n, |i| vec!["-js".to_string(), "-sd".to_string(), dirs[i].clone()])
    }

    /// Like [`NatsCluster::start`], with extra arguments for every server.
    pub fn start_with_args(n: usize, extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        Self::start_each(n, |_| extra.clone())
    }

    /// Starts `n` servers, server `i` with the extra arguments `extra(i)`.
    fn start_each(n: usize, extra: impl Fn(usize) -> Vec<String>) -> Self {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let servers = (0..n)
            .map(|i| {
                let cluster = format!("nats://127.0.0.1:{}", cluster_ports[i]);
                let routes = cluster_ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
                    .collect::<Vec<_>>()
                    .join(",");
                let name = format!("agora-test-{i}");
                let mut args = vec![
                    "--cluster",
                    cluster.as_str(),
                    "--cluster_name",
                    "agora-test",
                    "-n",
                    name.as_str(),
                ];
                if !routes.is_empty() {
                    args.extend_from_slice(&["--routes", routes.as_str()]);
                }
                let extra = extra(i);
                args.extend(extra.iter().map(String::as_str));
                NatsServer::start_with_monitoring(&args)
            })
            .collect();
        NatsCluster { servers }
    }

    /// Waits until every running server has a route to every other one; returns whether that happened in time.
    pub fn wait_for_routes(&self, deadline: Duration) -> bool {
        let expected = self.servers.len().saturating_sub(1);
        wait_until(deadline, || {
            self.servers.iter().filter(|s| s.pid().is_some()).all(|s| {
                s.monitor("/routez")["routes"]
                    .as_array()
                    .map(|routes| {
                        // `remote_id` (the peer's server id) is reported by every server version; `remote_name`
                        // only from 2.10 on. Pooled routes (2.10+) repeat a peer, hence the dedup.
                        let mut peers: Vec<&str> = routes.iter().filter_map(|r| r["remote_id"].as_str()).collect();
                        peers.sort_unstable();
                        peers.dedup();
                        peers.len()
                    })
                    .unwrap_or(0)
                    >= expected
            })
        })
    }

    /// The client addresses of all servers (`127.0.0.1:<port>`), for an agora config's `address` list.
    pub fn addresses(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::address).collect()
    }

    /// The server whose client port is `port`, if any.
    pub fn by_port(&mut self, port: u16) -> Option<&mut NatsServer> {
        self.servers.iter_mut().find(|s| s.port() == port)
    }
}

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

/// A minimal blocking HTTP/1.1 client for tests of the node's API (one request per connection).
pub mod http {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    /// A response: status code and body text.
    #[derive(Debug)]
    pub struct Response {
        /// The status code.
        pub status: u16,
        /// The body.
        pub body: String,
    }

    impl Response {
        /// The body as JSON (panics with the body if it is not JSON).
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
        }
    }

    /// Sends one request and reads the whole response.
    pub fn request(addr: &str, method: &str, path: &str, body: Option<&str>) -> std::io::Result<Response> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        Ok(Response { status, body })
    }

    fn dechunk(mut rest: &str) -> String {
        let mut out = String::new();
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        out
    }

    /// An open Server-Sent Events stream.
    pub struct SseStream {
        reader: BufReader<TcpStream>,
    }

    /// One SSE event.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct SseEvent {
        /// The `event:` field.
        pub event: String,
        /// The `data:` field.
        pub data: String,
    }

    impl SseStream {
        /// Opens `GET path` and checks the response is a 200 event stream.
        pub fn open(addr: &str, path: &str) -> std::io::Result<Self> {
            let mut stream = TcpStream::connect(addr)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
            )?;
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line)?;
            if !line.contains(" 200 ") {
                return Err(std::io::Error::other(format!("SSE request failed: {line}")));
            }
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            Ok(SseStream { reader })
        }

        /// The next event (comments and keep-alives skipped); an error after the read timeout.
        pub fn next_event(&mut self) -> std::io::Result<SseEvent> {
            let mut event = String::new();
            let mut data = String::new();
            let mut line = String::new();
            loop {
                line.clear();
                if self.reader.read_line(&mut line)? == 0 {
                    return Err(std::io::Error::other("SSE stream closed"));
                }
                // Chunked framing lines (hex sizes) interleave with the SSE text; SSE lines always contain ':'.
                let l = line.trim_end_matches(['\r', '\n']);
                if let Some(v) = l.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = l.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                } else if l.is_empty() && !data.is_empty() {
                    return Ok(SseEvent { event, data });
                }
            }
        }
    }
}

/// Running `agora node` processes.
pub mod node {
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use crate::http::{request, Response};
    use crate::{free_port, scratch_file, wait_until};

    /// How long a node may take to report healthy.
    const START_DEADLINE: Duration = Duration::from_secs(20);

    /// A running `agora node`, killed on drop.
    pub struct AgoraNode {
        child: Option<Child>,
        /// `127.0.0.1:<port>` of its HTTP API.
        pub addr: String,
        /// Its node id.
        pub node_id: u16,
    }

    impl AgoraNode {
        /// Starts `bin node --config <config> --http <free port> --node-id <id>` and waits for `/healthz` 200.
        pub fn start(bin: &Path, config: &str, node_id: u16) -> AgoraNode {
            let node = Self::spawn(bin, config, node_id);
            assert!(
                wait_until(START_DEADLINE, || node.get("/healthz").is_ok_and(|r| r.status == 200)),
                "node {node_id} did not become healthy"
            );
            node
        }

        /// Starts the process without waiting for it to become healthy.
        pub fn spawn(bin: &Path, config: &str, node_id: u16) -> AgoraNode {
            let path = scratch_file("agora.toml", config);
            let addr = format!("127.0.0.1:{}", free_port());
            let child = Command::new(bin)
                .args(["node", "--config"])
                .arg(&path)
                .args(["--http", &addr, "--node-id", &node_id.to_string()])
                .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn agora node");
            AgoraNode {
                child: Some(child),
                addr,
                node_id,
            }
        }

        /// `GET path`.
        pub fn get(&self, path: &str) -> std::io::Result<Response> {
            request(&self.addr, "GET", path, None)
        }

        /// `POST path` with a JSON body (panics on connection failure).
        pub fn post(&self, path: &str, body: &str) -> Response {
            request(&self.addr, "POST", path, Some(body)).expect("POST")
        }

        /// `DELETE path` (panics on connection failure).
        pub fn delete(&self, path: &str) -> Response {
            request(&self.addr, "DELETE", path, None).expect("DELETE")
        }

        /// The process id, while running.
        pub fn pid(&self) -> Option<u32> {
            self.child.as_ref().map(Child::id)
        }

        /// SIGTERM, then wait for the exit status (clean shutdown).
        pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
            let mut child = self.child.take()?;
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            child.wait().ok()
        }

        /// SIGKILL: the node dies without leaving.
        pub fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    impl Drop for AgoraNode {
        fn drop(&mut self) {
            self.kill();
        }
    }
}
