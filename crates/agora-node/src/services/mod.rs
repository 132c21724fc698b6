//! Node services: the replicated state (blocked IPs, push subscriptions), push delivery and metrics.

pub mod blocked_ips;
pub mod journal;
pub mod local_writes;
pub mod lww;
pub mod metrics;
pub mod push;
pub mod push_delivery;
mod stalwart_metrics;
pub mod state;
pub mod sync;
pub mod transfer;
