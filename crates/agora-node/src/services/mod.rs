//! Node services: the replicated state (blocked IPs, push subscriptions, client-token revocations), push delivery
//! and metrics.

pub mod block_list;
pub mod blocked_ips;
pub mod error;
pub mod intake;
pub mod journal;
pub mod local_writes;
pub mod lww;
pub mod metrics;
pub mod notification_json;
pub mod push;
pub mod push_delivery;
pub mod push_subscriptions;
pub mod revocation_list;
pub mod revocations;
pub mod state;
pub mod sync;
pub mod transfer;
pub mod web_push;
