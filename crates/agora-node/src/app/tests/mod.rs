//! The HTTP API in process: the node's own assembly (services, state, router) on a single-node coordinator,
//! requests sent to the router with `tower::ServiceExt::oneshot`, no socket and no process. Most of the API's
//! behaviour is tested here; what needs a real cluster, a socket or a process is in `tests/it`.

mod fixture;

mod blocked_ips;
mod client_tokens;
mod errors;
mod events;
mod openapi;
mod push;
mod status;
