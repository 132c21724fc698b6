//! `agora bench`: measures the cluster bus (contract section 4).

use clap::Args;

use crate::Failure;

/// Benchmark options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The NATS server to measure against.
    #[arg(long)]
    pub server: Option<String>,
}

/// Runs the benchmark.
pub async fn run(_args: BenchArgs) -> Result<(), Failure> {
    Err(Failure::Runtime(
        "agora bench is not available in this build yet".into(),
    ))
}
