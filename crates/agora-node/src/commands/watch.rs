//! `agora watch`: join the bus read-only and print every event, decoded, one per line.

use std::io::Write;
use std::path::Path;

use agora::Notification;

use crate::error::{CliError, ConfigError};
use crate::services::notification_json::notification_json;

/// Prints every event on the bus until SIGINT/SIGTERM or until stdout closes.
pub async fn run(config: Option<&Path>, json: bool, stalwart: Option<&str>) -> Result<(), CliError> {
    let Some(path) = config else {
        // Without a file there is no NATS store: the in-process single-node bus could never show anything.
        return Err(ConfigError::WatchWithoutConfig.into());
    };
    let config = match stalwart {
        None => super::load_config(Some(path))?,
        Some(version) => stalwart_config(path, version)?,
    };
    let coordinator = super::start_tool(&config).await?;
    let mut subscription = coordinator.subscribe();
    let stop = super::shutdown_signal();
    tokio::pin!(stop);
    let mut out = std::io::stdout().lock();
    loop {
        let notification = tokio::select! {
            () = &mut stop => break,
            n = subscription.recv() => match n {
                Some(n) => n,
                None => break,
            },
        };
        let line = if json {
            notification_json(&notification).to_string()
        } else {
            human_line(&notification)
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break; // stdout closed (e.g. piped into head)
        }
    }
    drop(out);
    coordinator.shutdown().await;
    Ok(())
}

/// The configuration for `--stalwart VERSION`: the file may be Stalwart's own (only its NATS store is read), and
/// the watcher only listens (no `forward`, so no node id on the Stalwart bus).
fn stalwart_config(path: &Path, version: &str) -> Result<agora::config::Config, ConfigError> {
    let version: agora::stalwart::StalwartVersion = version.parse().map_err(ConfigError::StalwartVersion)?;
    let mut config = agora::config::load_stalwart_file(path).map_err(|errors| ConfigError::Invalid {
        path: path.to_path_buf(),
        errors,
    })?;
    for note in &config.notes {
        tracing::info!("config: {note}");
    }
    if matches!(config.backend, agora::config::Backend::SingleNode) {
        return Err(ConfigError::NoNatsStore {
            path: path.to_path_buf(),
        });
    }
    let subject = config
        .stalwart
        .as_ref()
        .map_or_else(|| agora::stalwart::DEFAULT_SUBJECT.to_string(), |s| s.subject.clone());
    config.stalwart = Some(agora::config::StalwartConfig {
        version,
        subject,
        node_id: None,
        forward: Vec::new(),
    });
    Ok(config)
}

fn human_line(notification: &Notification) -> String {
    match notification {
        Notification::Event(d) => {
            let mut body = serde_json::to_value(&d.event).unwrap_or_default();
            crate::services::notification_json::without_secrets(&mut body);
            if let Some(map) = body.as_object_mut() {
                map.remove("type");
            }
            format!("node {:>5}  {:<26} {}", d.origin, d.event.type_name(), body)
        }
        Notification::Resync { node, missed, reason } => {
            format!("node {node:>5}  !! resync: {reason:?}, {missed} record(s) missed")
        }
        Notification::Lagged { missed } => format!("!! this watcher fell behind and skipped {missed} event(s)"),
    }
}
