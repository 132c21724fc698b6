//! Stalwart's own cluster bus (`stwt.agora`): its wire format for the 0.15 and 0.16 releases, and the mapping
//! between Stalwart's events and agora's.
//!
//! Stalwart's bus has no version byte and its format changed inside 0.16.x, so everything here is parameterised by
//! the [`StalwartVersion`] the operator configures: agora never sends what that release cannot decode.

mod version;

pub use version::{StalwartVersion, VersionError};

/// The subject Stalwart hard-codes for its bus.
pub const DEFAULT_SUBJECT: &str = "stwt.agora";
