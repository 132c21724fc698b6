//! `agora publish`: publish one event and exit once it is flushed to NATS.

use std::path::Path;

use agora::Event;

use crate::Failure;

pub async fn run(config: Option<&Path>, event_json: &str) -> Result<(), Failure> {
    let event: Event =
        serde_json::from_str(event_json).map_err(|e| Failure::Usage(format!("invalid event JSON: {e}")))?;
    let coordinator = super::start_tool(&super::load_config(config)?).await?;
    if coordinator.is_single_node() {
        tracing::warn!("no [cluster] coordinator configured: the event stays in this process");
    }
    coordinator.publish(event).await.map_err(|e| match e {
        // The event itself cannot be sent (as configured): a usage error, not a failure of the bus.
        agora::PublishError::StalwartCannotDecode { .. } => Failure::Usage(format!("cannot publish: {e}")),
        _ => Failure::Runtime(format!("cannot publish: {e}")),
    })?;
    coordinator.shutdown().await;
    if !coordinator.flushed_cleanly() {
        return Err(Failure::Runtime(
            "NATS did not confirm the event: it may not have been published (see the log)".into(),
        ));
    }
    Ok(())
}
