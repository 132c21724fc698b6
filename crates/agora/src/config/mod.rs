//! Configuration: the Stalwart-compatible TOML file, parsed once and validated strictly.
//!
//! Every bad value is an error naming the full key (`store."nats".capacity.read-buffer`), the value and what is
//! allowed; unknown keys in known sections suggest the closest known key. Nothing falls back silently, and secrets
//! ([`Secret`]) never appear in `Debug`, `Display` or error output.
//!
//! Any string value may be exactly `%{env:NAME}%` or `%{file:/path}%` (file contents are trimmed), as in Stalwart.
//! [`parse`] and [`load`] report every problem at once as [`ConfigErrors`]; [`Config::to_redacted_toml`] prints the
//! effective settings for `check-config`.

mod clients;
mod error;
mod http;
mod key_file;
pub(crate) mod keys;
mod nats_store;
mod parse;
mod push;
mod render;
mod stalwart;
mod substitute;
mod types;
mod values;
mod warnings;

pub use clients::MIN_HMAC_KEY_BYTES;
pub use error::{ConfigError, ConfigErrors};
pub use parse::{load, load_stalwart_file, parse, parse_stalwart_file};
pub use stalwart::FORWARDABLE;
pub use types::*;
pub use warnings::is_loopback_address;
