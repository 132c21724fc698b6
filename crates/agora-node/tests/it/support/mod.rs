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
