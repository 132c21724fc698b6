//! Configuration: the Stalwart-compatible TOML file, parsed once and validated strictly.
//!
//! Every bad value is an error naming the full key (`store."nats".capacity.read-buffer`), the value and what is
//! allowed; unknown keys in known sections suggest the closest known key. Nothing falls back silently, and secrets
//! ([`Secret`]) never appear in `Debug`, `Display` or error output.

mod types;

pub use types::*;
