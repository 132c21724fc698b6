//! What the node's integration test files share: the binary under test and the cluster configuration.

use std::path::Path;

use agora_testkit::NatsServer;

/// The `agora` binary cargo built for these tests.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agora"))
}

/// A cluster configuration against `server` (`extra` is appended to the NATS store section), with a short heartbeat
/// so that membership settles fast.
pub fn cluster_config(server: &NatsServer, extra: &str) -> String {
    format!(
        "[cluster]\ncoordinator = \"nats\"\nheartbeat-interval = \"200ms\"\n\n[store.\"nats\"]\ntype = \"nats\"\n\
         address = \"{}\"\n{extra}",
        server.address()
    )
}

/// One metric's value from a node's `/metrics` (0 if absent or unreadable).
#[allow(dead_code)] // not every test file reads metrics
pub fn metric(node: &agora_testkit::node::AgoraNode, name: &str) -> f64 {
    let Ok(response) = node.get("/metrics") else { return 0.0 };
    response
        .body
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Runs `tests/python/<script>` (the Python test clients `scripts/test` installs into `.tools/py`: http_ece, PyJWT,
/// cryptography) with `input` as JSON on stdin; its JSON answer, or the `error` it printed.
#[allow(dead_code)] // not every test file runs Python
pub fn python(script: &str, input: &serde_json::Value) -> Result<serde_json::Value, String> {
    use std::io::Write as _;
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    let python_path = std::env::var_os("AGORA_TEST_PYTHONPATH").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/py"),
        PathBuf::from,
    );
    let mut child = Command::new("python3")
        .arg(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/python")
                .join(script),
        )
        .env("PYTHONPATH", python_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("python3 ends");
    let out: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{script} printed {:?}", String::from_utf8_lossy(&output.stdout)));
    match out["error"].as_str() {
        Some(error) => {
            assert!(
                !error.starts_with("ModuleNotFoundError"),
                "the Python test clients are missing ({error}): run ./scripts/test, which installs them into .tools/py"
            );
            Err(error.to_string())
        }
        None => Ok(out),
    }
}
