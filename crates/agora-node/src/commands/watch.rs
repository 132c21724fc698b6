//! `agora watch`: join the bus read-only and print every event, decoded, one per line.

use std::io::Write;
use std::path::Path;

use agora::Notification;

use crate::http::json::notification_json;
use crate::Failure;

pub async fn run(config: Option<&Path>, json: bool) -> Result<(), Failure> {
    let Some(config) = config else {
        // Without a file there is no NATS store: the in-process single-node bus could never show anything.
        return Err(Failure::Usage(
            "watch needs --config FILE naming the NATS store to watch: without one there is no bus to watch".into(),
        ));
    };
    let coordinator = super::start_tool(Some(config)).await?;
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

fn human_line(notification: &Notification) -> String {
    match notification {
        Notification::Event(d) => {
            let mut body = serde_json::to_value(&d.event).unwrap_or_default();
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
