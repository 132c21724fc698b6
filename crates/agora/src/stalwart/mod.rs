//! Stalwart's own cluster bus (`stwt.agora`): its wire format for the 0.15 and 0.16 releases. The mapping between
//! Stalwart's events and agora's is [`crate::event::stalwart_mapping`] (agora's events carry Stalwart's, so this
//! module sits below them).
//!
//! Stalwart's bus has no version byte and its format changed inside 0.16.x, so everything here is parameterised by
//! the [`StalwartVersion`] the operator configures: agora never sends what that release cannot decode.

pub mod codec;
pub mod error;
pub mod event;
mod json;
mod leb128;
pub mod object_type;
mod version;

pub use codec::{
    decode_batch, decode_canonical, decode_canonical_prefix, encode_batch, encode_canonical, DecodedBatch,
    DEFAULT_SUBJECT,
};
pub use error::{DecodeError, DecodeErrorKind, EncodeError, Unsupported};
pub use event::{CacheInvalidation, StalwartEvent};
pub use object_type::ObjectType;
pub use version::{StalwartVersion, VersionError};

/// The most events Stalwart puts in one message; [`encode_batch`] refuses more. Defined here rather than in the codec
/// so that the error type (which names it in its message) does not depend on the codec that depends on it.
pub const MAX_BATCH_EVENTS: usize = 100;
