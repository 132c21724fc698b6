//! Stalwart's own cluster bus (`stwt.agora`): its wire format for the 0.15 and 0.16 releases, and the mapping
//! between Stalwart's events and agora's.
//!
//! Stalwart's bus has no version byte and its format changed inside 0.16.x, so everything here is parameterised by
//! the [`StalwartVersion`] the operator configures: agora never sends what that release cannot decode.

pub mod codec;
pub mod error;
pub mod event;
mod json;
mod leb128;
pub mod mapping;
pub mod object_type;
mod version;

pub use codec::{
    decode_batch, decode_canonical, decode_canonical_prefix, encode_batch, encode_canonical, DecodedBatch,
    DEFAULT_SUBJECT, MAX_BATCH_EVENTS,
};
pub use error::{DecodeError, DecodeErrorKind, EncodeError, Unsupported};
pub use event::{CacheInvalidation, StalwartEvent};
pub use object_type::ObjectType;
pub use version::{StalwartVersion, VersionError};
