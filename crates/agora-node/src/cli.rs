//! The command line. Flags override the configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// agora: cluster coordination for mail and application servers, over NATS.
#[derive(Debug, Parser)]
#[command(name = "agora", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a cluster node until SIGINT/SIGTERM, then leave the cluster cleanly.
    Node {
        /// The configuration file; without it, a single node with defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The local HTTP API address (overrides [http] listen).
        #[arg(long)]
        http: Option<SocketAddr>,
        /// This node's id, 1..=65535 (overrides [cluster] node-id).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        node_id: Option<u16>,
    },
    /// Validate a configuration file and print the effective settings, secrets redacted.
    CheckConfig {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Join the bus read-only and print every cluster event, one per line.
    Watch {
        /// The configuration file naming the NATS store (required: there is nothing to watch without one).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Watch a Stalwart cluster's bus, speaking this release's format (0.15.x or 0.16.x); the file may be an
        /// unmodified Stalwart configuration.
        #[arg(long, value_name = "VERSION")]
        stalwart: Option<String>,
    },
    /// Publish one event (the JSON of POST /v1/events) and exit once it is flushed.
    Publish {
        /// The configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The event, e.g. '{"type":"reload","target":"settings"}'.
        event: String,
    },
    /// Measure the cluster bus (see docs/performance.md).
    #[cfg(feature = "bench")]
    Bench(Box<agora_bench::BenchArgs>),
    /// Measure the cluster bus: not in this build (it was built without the `bench` feature).
    #[cfg(not(feature = "bench"))]
    Bench {
        /// Whatever options were given; none is read.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<std::ffi::OsString>,
    },
}
