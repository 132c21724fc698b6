//! What push services require of a sender (RFC 8030 Web Push): the payload encrypted for the device (RFC 8291,
//! [`encryption`]), the sender identified (VAPID, RFC 8292, [`vapid`]), and subscription keys checked before they
//! are stored ([`keys`]). Sans-IO: the delivery ([`super::push_delivery`]) does the HTTP.
//!
//! The cryptography is RustCrypto's (`p256` for ECDH and ECDSA, `hkdf` + `sha2`, `aes-gcm`); this module only
//! composes it as the RFCs say, and its tests check the result against RFC 8291's worked example and against
//! independent implementations (Python `http_ece` and `PyJWT`, in the node's integration tests).

pub mod encryption;
pub mod keys;
pub mod vapid;
