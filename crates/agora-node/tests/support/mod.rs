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
