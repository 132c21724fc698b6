//! One module per subcommand; each returns a [`CliError`] that `main` maps to an exit status.

mod bench;
mod check_config;
mod node;
mod publish;
mod watch;

use std::path::Path;

use agora::config::{self, Config};

use crate::cli::{Cli, Command};
use crate::error::{CliError, ConfigError};

/// Runs the chosen subcommand.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Node { config, http, node_id } => node::run(config.as_deref(), http, node_id).await,
        Command::CheckConfig { config } => Ok(check_config::run(&config)?),
        Command::Watch { config, json, stalwart } => watch::run(config.as_deref(), json, stalwart.as_deref()).await,
        Command::Publish { config, event } => publish::run(config.as_deref(), &event).await,
        #[cfg(feature = "bench")]
        Command::Bench(args) => Ok(bench::run(*args).await?),
        #[cfg(not(feature = "bench"))]
        Command::Bench { args } => Ok(bench::run(args).await?),
    }
}

/// Loads and validates the configuration (defaults without a file); logs what was ignored on purpose.
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    let Some(path) = path else {
        return Ok(Config::default());
    };
    let config = config::load(path).map_err(|errors| ConfigError::Invalid {
        path: path.to_path_buf(),
        errors,
    })?;
    for note in &config.notes {
        tracing::info!("config: {note}");
    }
    Ok(config)
}

/// Joins the bus as a tool (`watch`, `publish`): no heartbeats, never a member, and a fresh random node id even
/// when the file sets `[cluster] node-id` (it is usually a running node's file; `Role::Tool` enforces this).
pub(crate) async fn start_tool(config: &Config) -> Result<agora::Coordinator, CliError> {
    let options = agora::StartOptions {
        role: agora::Role::Tool,
        ..agora::StartOptions::default()
    };
    agora::Coordinator::start(config, options).await.map_err(CliError::Join)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
