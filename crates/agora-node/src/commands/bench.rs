//! `agora bench`: measures the cluster bus (contract section 4).

use clap::Args;

use crate::Failure;

/// Benchmark options.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The NATS server to measure against.
    #[arg(long)]
    pub(crate) server: Option<String>,
}

pub(crate) async fn run(_args: BenchArgs) -> Result<(), Failure> {
    Err(Failure::Runtime(
        "agora bench is not available in this build yet".into(),
    ))
}
