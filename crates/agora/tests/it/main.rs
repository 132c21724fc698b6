//! agora's integration tests, as one test binary: one link step instead of one per file, and one place for the
//! shared helpers ([`common`]). Most tests run against real nats-server processes the tests start themselves
//! (`NATS_SERVER_BIN` says which binary).

mod common;

mod auth;
mod chaos;
mod cluster;
mod config;
mod connection;
mod durable;
mod stalwart;
