//! RFC 8291 message encryption with the RFC 8188 `aes128gcm` content coding, as one record: what every push
//! service forwards to browsers and phones without being able to read it.
//!
//! Per message, a fresh ephemeral P-256 key and a fresh 16-byte salt (reusing either would repeat an AES-GCM key and
//! nonce). The body is `salt (16) || rs (4, big-endian) || idlen (1) = 65 || the ephemeral public key (65) ||
//! AES-128-GCM(plaintext || 0x02)`.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use sha2::Sha256;

use super::keys::UserAgentKeys;

/// The record size announced in the header. One record always: a push payload is at most [`MAX_PLAINTEXT`].
const RECORD_SIZE: u32 = 4096;

/// Header bytes: salt, record size, key id length, key id (the ephemeral public key).
pub const HEADER_BYTES: usize = 16 + 4 + 1 + 65;

/// The AES-GCM tag.
const TAG_BYTES: usize = 16;

/// The most plaintext one push carries: push services accept 4,096 bytes of body, header and tag included.
pub const MAX_PLAINTEXT: usize = 4096 - HEADER_BYTES - TAG_BYTES - 1;

/// Why a body could not be encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncryptError {
    /// The payload is longer than one push may carry.
    #[error("payload of {0} bytes: at most {MAX_PLAINTEXT} fit in one push")]
    TooLarge(usize),
    /// The stored user agent key is not a P-256 point (only possible for a subscription from a hostile bus).
    #[error("the subscription's keys.p256dh is not a P-256 point")]
    BadKey,
    /// The system's random generator failed (no ephemeral key).
    #[error("no randomness for an ephemeral key")]
    Random,
}

/// Encrypts `plaintext` for the user agent with `keys`, with a fresh ephemeral key and salt.
///
/// The ephemeral key agreement is ring's (constant-time, assembly P-256: about a fifth of the CPU of a portable
/// implementation, and it is most of a push's cost); ring cannot import a given private key, so RFC 8291's worked
/// example tests [`encrypt_with`], which shares everything after the agreement.
pub fn encrypt(plaintext: &[u8], keys: &UserAgentKeys) -> Result<Vec<u8>, EncryptError> {
    use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EncryptError::TooLarge(plaintext.len()));
    }
    let rng = ring::rand::SystemRandom::new();
    let ephemeral = EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| EncryptError::Random)?;
    let as_public: [u8; 65] = ephemeral
        .compute_public_key()
        .map_err(|_| EncryptError::Random)?
        .as_ref()
        .try_into()
        .map_err(|_| EncryptError::BadKey)?;
    let salt: [u8; 16] = rand::random();
    agree_ephemeral(ephemeral, &UnparsedPublicKey::new(&ECDH_P256, &keys.p256dh), |shared| {
        seal(plaintext, keys, shared, &as_public, salt)
    })
    .map_err(|_| EncryptError::BadKey)?
}

/// [`encrypt`] with a given ephemeral key and salt (RustCrypto's agreement): RFC 8291 section 5's worked example is
/// a test of this.
pub fn encrypt_with(
    plaintext: &[u8],
    keys: &UserAgentKeys,
    ephemeral: &SecretKey,
    salt: [u8; 16],
) -> Result<Vec<u8>, EncryptError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EncryptError::TooLarge(plaintext.len()));
    }
    let ua_public = PublicKey::from_sec1_bytes(&keys.p256dh).map_err(|_| EncryptError::BadKey)?;
    let as_public: [u8; 65] = ephemeral
        .public_key()
        .to_encoded_point(false)
        .as_bytes()
        .try_into()
        .map_err(|_| EncryptError::BadKey)?;
    let shared = p256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), ua_public.as_affine());
    seal(plaintext, keys, shared.raw_secret_bytes().as_slice(), &as_public, salt)
}

/// Everything after the key agreement: the RFC 8291 key schedule and one RFC 8188 record.
fn seal(
    plaintext: &[u8],
    keys: &UserAgentKeys,
    shared: &[u8],
    as_public: &[u8; 65],
    salt: [u8; 16],
) -> Result<Vec<u8>, EncryptError> {
    // RFC 8291 section 3.4: IKM = HKDF(auth, ecdh_secret, "WebPush: info" || 0x00 || ua_public || as_public, 32).
    let mut key_info = Vec::with_capacity(14 + 65 + 65);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(&keys.p256dh);
    key_info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&keys.auth), shared)
        .expand(&key_info, &mut ikm)
        .map_err(|_| EncryptError::BadKey)?;

    // RFC 8188 section 2.2 and 2.3: the content encryption key and the nonce from the salt.
    let content = Hkdf::<Sha256>::new(Some(&salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    content
        .expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .and_then(|()| content.expand(b"Content-Encoding: nonce\0", &mut nonce))
        .map_err(|_| EncryptError::BadKey)?;

    // One record, the last: the plaintext, then the 0x02 delimiter (no padding).
    let mut record = Vec::with_capacity(plaintext.len() + 1);
    record.extend_from_slice(plaintext);
    record.push(2);
    let cipher = Aes128Gcm::new_from_slice(&cek).map_err(|_| EncryptError::BadKey)?;
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), record.as_slice())
        .map_err(|_| EncryptError::TooLarge(plaintext.len()))?;

    let mut body = Vec::with_capacity(HEADER_BYTES + sealed.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_public);
    body.extend_from_slice(&sealed);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::super::keys::decode_base64url;
    use super::*;

    fn b64(text: &str) -> Vec<u8> {
        decode_base64url("test", text).expect("base64url")
    }

    /// RFC 8291 section 5: the worked example, byte for byte.
    #[test]
    fn rfc_8291_worked_example() {
        let keys = UserAgentKeys::parse(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "BTBZMqHH6r4Tts7J_aSIgg",
        )
        .expect("the RFC's keys");
        let ephemeral = SecretKey::from_slice(&b64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")).expect("key");
        let salt: [u8; 16] = b64("DGv6ra1nlYgDCS1FRnbzlw").try_into().expect("16 bytes");
        let body = encrypt_with(b"When I grow up, I want to be a watermelon", &keys, &ephemeral, salt).expect("fits");
        let expected = b64(
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK\
             6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
        );
        assert_eq!(body, expected);
    }

    /// What a user agent does on receipt (RustCrypto's agreement from the receiving side): here to check that the
    /// production path (ring's agreement) and the key schedule agree; Python's `http_ece` checks it independently in
    /// the node's integration tests.
    fn open(body: &[u8], ua_secret: &SecretKey, keys: &UserAgentKeys) -> Option<Vec<u8>> {
        let salt: [u8; 16] = body[..16].try_into().ok()?;
        let as_public: [u8; 65] = body[21..86].try_into().ok()?;
        let sender = PublicKey::from_sec1_bytes(&as_public).ok()?;
        let shared = p256::ecdh::diffie_hellman(ua_secret.to_nonzero_scalar(), sender.as_affine());
        let mut key_info = b"WebPush: info\0".to_vec();
        key_info.extend_from_slice(&keys.p256dh);
        key_info.extend_from_slice(&as_public);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&keys.auth), shared.raw_secret_bytes().as_slice())
            .expand(&key_info, &mut ikm)
            .ok()?;
        let content = Hkdf::<Sha256>::new(Some(&salt), &ikm);
        let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
        content.expand(b"Content-Encoding: aes128gcm\0", &mut cek).ok()?;
        content.expand(b"Content-Encoding: nonce\0", &mut nonce).ok()?;
        let mut record = Aes128Gcm::new_from_slice(&cek)
            .ok()?
            .decrypt(Nonce::from_slice(&nonce), &body[86..])
            .ok()?;
        (record.pop()? == 2).then_some(record)
    }

    #[test]
    fn the_production_path_opens_with_the_receivers_key() {
        let ua = SecretKey::from_slice(&[5u8; 32]).expect("scalar");
        let point = ua.public_key().to_encoded_point(false);
        let keys = UserAgentKeys {
            p256dh: point.as_bytes().try_into().expect("65 bytes"),
            auth: [3u8; 16],
        };
        let body = encrypt(b"{\"@type\":\"StateChange\"}", &keys).expect("fits");
        assert_eq!(
            open(&body, &ua, &keys).as_deref(),
            Some(&b"{\"@type\":\"StateChange\"}"[..])
        );
        let wrong_auth = UserAgentKeys {
            auth: [4u8; 16],
            ..keys.clone()
        };
        assert_eq!(open(&body, &ua, &wrong_auth), None, "the auth secret is bound in");
    }

    #[test]
    fn every_message_gets_a_fresh_key_and_salt() {
        let keys = UserAgentKeys::parse(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "BTBZMqHH6r4Tts7J_aSIgg",
        )
        .expect("keys");
        let a = encrypt(b"same", &keys).expect("fits");
        let b = encrypt(b"same", &keys).expect("fits");
        assert_ne!(a[..16], b[..16], "salt");
        assert_ne!(a[21..86], b[21..86], "ephemeral key");
        assert_eq!(a.len(), HEADER_BYTES + 4 + 1 + TAG_BYTES);
        assert_eq!(
            encrypt(&vec![b'x'; MAX_PLAINTEXT + 1], &keys),
            Err(EncryptError::TooLarge(MAX_PLAINTEXT + 1))
        );
        assert_eq!(encrypt(&vec![b'x'; MAX_PLAINTEXT], &keys).map(|b| b.len()), Ok(4096));
    }
}
