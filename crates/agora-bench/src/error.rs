//! The bench's one error type: the binary maps it to its exit status (2 for usage, 1 for run time).

/// Why `agora bench` stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad options (an unknown mode or scenario, no NATS server given): the command line must change.
    #[error("{0}")]
    Usage(String),
    /// A scenario failed while running (the NATS server, a node process, a socket): the run may succeed again.
    #[error("{0}")]
    Runtime(String),
}
