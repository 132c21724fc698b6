//! Replicated state kept by the node and served to the local server through the HTTP API.
//!
//! Each service is an in-memory structure updated by cluster events (in any order, so updates are last-writer-wins)
//! and read on the server's hot paths, so reads never go over the network.

pub mod blocked_ips;
