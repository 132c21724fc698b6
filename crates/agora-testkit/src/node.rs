//! Running `agora node` processes.

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
