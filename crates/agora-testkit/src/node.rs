//! Running `agora node` processes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::http::{request, Response};
use crate::{scratch_file, wait_until};

/// How long a node may take to report healthy.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// How long a node may take to bind its HTTP port (before it joins the cluster).
const BIND_DEADLINE: Duration = Duration::from_secs(20);

/// Forwards the node's log to this process's stderr, on a thread of its own, and returns the address of the node's
/// `HTTP API bound` line (`None` if the log ends or the deadline passes first).
fn bound_address(stderr: ChildStderr) -> Option<String> {
    follow_log(stderr, None)
}

/// Follows the log of an `agora node` started with `--http 127.0.0.1:0` (its stderr, piped) on a thread of its
/// own: every line is passed to this process's stderr and, with `keep`, appended there too (for tests that count
/// log lines). Returns the address of the `HTTP API bound` line, `None` if the log ends or [`BIND_DEADLINE`]
/// passes first.
pub fn follow_log(stderr: ChildStderr, keep: Option<Arc<Mutex<Vec<String>>>>) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            if let Some(addr) = tx.as_ref().and(http_field(&line)) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr);
                }
            }
            if let Some(keep) = &keep {
                keep.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line);
            }
        }
    });
    rx.recv_timeout(BIND_DEADLINE).ok()
}

/// The `http=` field of the node's `HTTP API bound` log line (tracing's text format, colours or not).
fn http_field(line: &str) -> Option<String> {
    let plain = strip_ansi(line);
    if !plain.contains("HTTP API bound") {
        return None;
    }
    let value = plain.split_whitespace().find_map(|word| word.strip_prefix("http="))?;
    Some(value.trim_matches('"').to_string())
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A running `agora node`, killed on drop.
pub struct AgoraNode {
    child: Option<Child>,
    /// `127.0.0.1:<port>` of its HTTP API.
    pub addr: String,
    /// Its node id.
    pub node_id: u16,
}

impl AgoraNode {
    /// Starts `bin node --config <config> --http 127.0.0.1:0 --node-id <id>` and waits for `/healthz` 200.
    pub fn start(bin: &Path, config: &str, node_id: u16) -> AgoraNode {
        let node = Self::spawn(bin, config, node_id);
        assert!(
            wait_until(START_DEADLINE, || node.get("/healthz").is_ok_and(|r| r.status == 200)),
            "node {node_id} did not become healthy"
        );
        node
    }

    /// Starts the process without waiting for it to become healthy; returns once it has bound its HTTP port.
    ///
    /// The node binds port 0 (`--http 127.0.0.1:0`) and the address is read from its `HTTP API bound` log line:
    /// no port is picked beforehand, so two tests can never race for one. The node's log is passed through to
    /// stderr as before.
    pub fn spawn(bin: &Path, config: &str, node_id: u16) -> AgoraNode {
        let path = scratch_file("agora.toml", config);
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        let mut child = Command::new(bin)
            .args(["node", "--config"])
            .arg(&path)
            .args(["--http", "127.0.0.1:0", "--node-id", &node_id.to_string()])
            // The bound address is logged at info by the node command: keep that line whatever else is filtered.
            .env("RUST_LOG", format!("{filter},agora_node::commands::node=info"))
            .env_remove("AGORA_LOG_FORMAT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agora node");
        let stderr = child.stderr.take().expect("piped stderr");
        let addr = match bound_address(stderr) {
            Some(addr) => addr,
            None => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {node_id} did not report its HTTP address within {BIND_DEADLINE:?} (exit: {status:?})");
            }
        };
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

    /// `PATCH path` with a JSON body (panics on connection failure).
    pub fn patch(&self, path: &str, body: &str) -> Response {
        request(&self.addr, "PATCH", path, Some(body)).expect("PATCH")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_address_is_read_with_or_without_colours() {
        let plain = "2026-12-03T23:00:00Z  INFO agora_node::commands::node: HTTP API bound http=127.0.0.1:40123";
        assert_eq!(http_field(plain).as_deref(), Some("127.0.0.1:40123"));
        let coloured = "\u{1b}[2m2026-12-03T23:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2magora_node::commands::node\u{1b}[0m\u{1b}[2m:\u{1b}[0m HTTP API bound \u{1b}[3mhttp\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:40123";
        assert_eq!(http_field(coloured).as_deref(), Some("127.0.0.1:40123"));
        assert_eq!(
            http_field("agora node ready http=127.0.0.1:1"),
            None,
            "only the bound line"
        );
    }
}
