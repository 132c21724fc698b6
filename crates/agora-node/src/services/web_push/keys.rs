//! The keys a JMAP client registers with a push subscription (RFC 8620 section 7.2, RFC 8291 section 2): checked
//! when the subscription is created, so that the delivery never meets a key it cannot use.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Length of an uncompressed P-256 point: `04 || x || y`.
pub const P256DH_BYTES: usize = 65;

/// Length of the authentication secret (RFC 8291 section 3.2).
pub const AUTH_BYTES: usize = 16;

/// Why a key was refused; the message names the field and never quotes the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64url.
    #[error("{0}: not base64url (RFC 4648 section 5, padding optional)")]
    NotBase64(&'static str),
    /// `p256dh` is not a 65-byte uncompressed point on P-256.
    #[error("keys.p256dh: {0} bytes, not a 65-byte uncompressed P-256 point (04 || x || y)")]
    P256dhLength(usize),
    /// `p256dh` has the right length but is not on the curve.
    #[error("keys.p256dh: not a point on P-256")]
    P256dhNotOnCurve,
    /// `auth` is not 16 bytes.
    #[error("keys.auth: {0} bytes, 16 are required")]
    AuthLength(usize),
}

/// Decodes base64url with or without padding (clients send both).
pub fn decode_base64url(field: &'static str, text: &str) -> Result<Vec<u8>, KeyError> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| KeyError::NotBase64(field))
}

/// Checked subscription keys, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserAgentKeys {
    /// The user agent's public key, uncompressed.
    pub p256dh: [u8; P256DH_BYTES],
    /// The authentication secret.
    pub auth: [u8; AUTH_BYTES],
}

impl UserAgentKeys {
    /// Parses and checks `p256dh` and `auth` as a client sends them.
    pub fn parse(p256dh: &str, auth: &str) -> Result<Self, KeyError> {
        let point = decode_base64url("keys.p256dh", p256dh)?;
        let p256dh: [u8; P256DH_BYTES] = point
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::P256dhLength(point.len()))?;
        if p256dh[0] != 4 {
            return Err(KeyError::P256dhLength(point.len()));
        }
        p256::PublicKey::from_sec1_bytes(&p256dh).map_err(|_| KeyError::P256dhNotOnCurve)?;
        let secret = decode_base64url("keys.auth", auth)?;
        let auth: [u8; AUTH_BYTES] = secret
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::AuthLength(secret.len()))?;
        Ok(UserAgentKeys { p256dh, auth })
    }

    /// The keys as stored and replicated: base64url without padding.
    pub fn to_event_keys(&self) -> agora::event::PushKeys {
        agora::event::PushKeys {
            p256dh: URL_SAFE_NO_PAD.encode(self.p256dh),
            auth: URL_SAFE_NO_PAD.encode(self.auth),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8291 section 5's user agent keys.
    const UA_PUBLIC: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    #[test]
    fn good_keys_parse_with_or_without_padding() {
        let keys = UserAgentKeys::parse(UA_PUBLIC, AUTH).expect("valid");
        assert_eq!(keys.p256dh[0], 4);
        assert_eq!(UserAgentKeys::parse(UA_PUBLIC, &format!("{AUTH}==")), Ok(keys.clone()));
        let stored = keys.to_event_keys();
        assert_eq!((stored.p256dh.as_str(), stored.auth.as_str()), (UA_PUBLIC, AUTH));
    }

    #[test]
    fn bad_keys_name_the_field() {
        let err = |p: &str, a: &str| UserAgentKeys::parse(p, a).expect_err("refused").to_string();
        assert!(err("!!!", AUTH).starts_with("keys.p256dh: not base64url"));
        assert!(err(&UA_PUBLIC[..40], AUTH).starts_with("keys.p256dh: 30 bytes"));
        // Right length, compressed-point prefix.
        let mut compressed = decode_base64url("k", UA_PUBLIC).expect("b64");
        compressed[0] = 2;
        assert!(err(&URL_SAFE_NO_PAD.encode(&compressed), AUTH).starts_with("keys.p256dh: 65 bytes"));
        // Right form, not on the curve.
        let mut off_curve = decode_base64url("k", UA_PUBLIC).expect("b64");
        off_curve[64] ^= 1;
        assert_eq!(
            err(&URL_SAFE_NO_PAD.encode(&off_curve), AUTH),
            "keys.p256dh: not a point on P-256"
        );
        assert_eq!(err(UA_PUBLIC, "AAAA"), "keys.auth: 3 bytes, 16 are required");
        assert!(err(UA_PUBLIC, "a b").starts_with("keys.auth: not base64url"));
    }
}
