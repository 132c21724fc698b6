//! The agora node: cluster coordination for a server written in any language, through a local HTTP API.
//!
//! A library so that the binary (`src/main.rs`), the integration tests and the benches share one implementation:
//! `cli` parses the command line, `commands` runs each subcommand, `http` serves the API, `services` keeps the
//! replicated state (blocked IPs, push subscriptions) and delivers push notifications.

#![warn(missing_docs)]

pub mod app;
pub mod bus_runtime;
pub mod cli;
pub mod commands;
pub mod error;
pub mod http;
pub mod services;

pub use error::CliError;
