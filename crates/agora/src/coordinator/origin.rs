//! Where an event came from: an agora node, or a node of the Stalwart bus agora also listens to.

use std::fmt;

use crate::event::NodeId;

/// The sender of a delivered event (or of lost ones, in a resync notice).
///
/// Stalwart node ids are a separate space: any u16, 0 included (Stalwart 0.16 leases ids from 0), and the same
/// number may belong to an agora node and a Stalwart node, so the bus is part of the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// An agora node (this one included).
    Agora(NodeId),
    /// A node of the Stalwart bus (`[stalwart]`), by the node id its batches carry.
    Stalwart(u16),
}

impl Origin {
    /// The node id on its bus.
    pub fn get(self) -> u16 {
        match self {
            Origin::Agora(id) => id.get(),
            Origin::Stalwart(id) => id,
        }
    }

    /// `"agora"` or `"stalwart"`: the `origin_bus` of the JSON forms.
    pub fn bus(self) -> &'static str {
        match self {
            Origin::Agora(_) => "agora",
            Origin::Stalwart(_) => "stalwart",
        }
    }

    /// The agora node, if the event came from one.
    pub fn agora(self) -> Option<NodeId> {
        match self {
            Origin::Agora(id) => Some(id),
            Origin::Stalwart(_) => None,
        }
    }
}

impl From<NodeId> for Origin {
    fn from(id: NodeId) -> Self {
        Origin::Agora(id)
    }
}

/// An origin equals an agora node id when it is that agora node.
impl PartialEq<NodeId> for Origin {
    fn eq(&self, other: &NodeId) -> bool {
        *self == Origin::Agora(*other)
    }
}

/// `7` for agora node 7, `stalwart:7` for Stalwart node 7 (padding applies to the whole).
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Agora(id) => f.pad(&id.get().to_string()),
            Origin::Stalwart(id) => f.pad(&format!("stalwart:{id}")),
        }
    }
}
