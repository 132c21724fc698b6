//! `agora publish`: publish one event and exit once it is flushed to NATS.

use std::path::Path;

use agora::Event;

use crate::error::{CliError, ConfigError};

/// Publishes `event_json` (an [`Event`] as JSON) and waits until NATS confirmed it.
pub async fn run(config: Option<&Path>, event_json: &str) -> Result<(), CliError> {
    let event: Event = serde_json::from_str(event_json).map_err(ConfigError::EventJson)?;
    let coordinator = super::start_tool(&super::load_config(config)?).await?;
    if coordinator.is_single_node() {
        tracing::warn!("no [cluster] coordinator configured: the event stays in this process");
    }
    // An event the configured Stalwart release cannot decode is a usage error (exit 2): `CliError::exit_code`.
    coordinator.publish(event).await.map_err(CliError::Publish)?;
    coordinator.shutdown().await;
    if !coordinator.flushed_cleanly() {
        return Err(CliError::NotConfirmed);
    }
    Ok(())
}
