//! Transports that carry batches between nodes, and the connection state they report.

pub mod jetstream;
pub(crate) mod nats;

use serde::Serialize;

/// The state of the link to the cluster, published through a `watch` channel so readers never lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LinkState {
    /// No coordinator configured: events stay in this process. Always healthy.
    SingleNode,
    /// Connected to a NATS server.
    Connected,
    /// The connection was lost; the client is trying the configured servers.
    Reconnecting,
    /// Disconnected for good (`max-reconnects` exhausted or 0, or shut down); nothing will be sent or received.
    Closed {
        /// Why, for operators.
        reason: String,
    },
}

impl LinkState {
    /// True when events flow (or need not flow, in single-node mode).
    pub fn is_healthy(&self) -> bool {
        matches!(self, LinkState::SingleNode | LinkState::Connected)
    }

    /// Moves `link` to `state` unless it is closed for good: once `Closed`, only another `Closed` (with a newer
    /// reason) replaces it, so a late connection event cannot make a node that gave up look healthy. Returns true
    /// if the state changed.
    pub(crate) fn set_unless_closed(link: &tokio::sync::watch::Sender<LinkState>, state: LinkState) -> bool {
        link.send_if_modified(|current| {
            if matches!(current, LinkState::Closed { .. }) || *current == state {
                return false;
            }
            *current = state;
            true
        })
    }

    /// A short label for health output and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            LinkState::SingleNode => "single_node",
            LinkState::Connected => "connected",
            LinkState::Reconnecting => "reconnecting",
            LinkState::Closed { .. } => "closed",
        }
    }
}
