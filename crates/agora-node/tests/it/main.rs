//! The node's integration tests, one binary: each module drives real `agora node` processes (and real nats-server
//! processes the tests start themselves) through the HTTP API, the command line or the bus. Behaviour that needs no
//! process is tested in-process, next to the code (`src/http/tests`, the services' own tests).

mod support;

mod api;
mod bench_cli;
mod browser_tokens;
mod client_tokens;
mod cluster_resume;
mod dashboard;
mod dev_script;
mod edge;
mod hostile_bus;
mod https;
mod limits;
mod node;
mod push;
mod resume;
mod services;
mod stalwart;
mod streams;
mod transfer;
mod web_push;
