//! VAPID (RFC 8292): every push says which application server sent it, with an ES256 JWT whose audience is the push
//! service's origin, and the public key the user agent was subscribed with (`applicationServerKey`, RFC 9749).
//!
//! Signing costs more than encrypting, and a JWT is valid for hours: one JWT per origin is kept until an hour
//! before it expires ([`VALIDITY`], [`RENEW_BEFORE`]), so a node pushing to one push service signs twice a day,
//! not once per push.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use agora::config::VapidConfig;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::json;

/// How long a JWT is valid: RFC 8292 allows at most 24 hours; half of that leaves room for clock skew.
pub const VALIDITY: Duration = Duration::from_secs(12 * 3600);

/// A cached JWT is replaced this long before it expires.
pub const RENEW_BEFORE: Duration = Duration::from_secs(3600);

/// Origins whose JWT is kept at most (push services are a handful; a flood of origins only costs re-signing).
const MAX_CACHED_ORIGINS: usize = 10_000;

/// One origin's current JWT.
struct Cached {
    header: String,
    expires_at_s: u64,
}

/// Signs pushes for one VAPID key. Its `Debug` never shows the key.
pub struct VapidSigner {
    key: SigningKey,
    /// The public key, base64url (uncompressed point): `k=` and the `applicationServerKey`.
    public_key: String,
    subject: String,
    cache: Mutex<HashMap<String, Cached>>,
}

impl fmt::Debug for VapidSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapidSigner")
            .field("public_key", &self.public_key)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl VapidSigner {
    /// A signer for `[push] vapid-key-file` and `vapid-subject`.
    pub fn new(config: &VapidConfig) -> Self {
        VapidSigner {
            key: SigningKey::from(config.key.secret()),
            public_key: URL_SAFE_NO_PAD.encode(config.key.public_key()),
            subject: config.subject.clone(),
            cache: Mutex::default(),
        }
    }

    /// The `applicationServerKey` a JMAP server puts in its session (base64url, uncompressed P-256 point).
    pub fn application_server_key(&self) -> &str {
        &self.public_key
    }

    /// The `Authorization` header for a push to `origin` (`https://push.example.com`, the push URL's origin) at
    /// `now_s` (Unix seconds): `vapid t=<JWT>, k=<public key>`.
    pub fn authorization(&self, origin: &str, now_s: u64) -> String {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = cache.get(origin) {
            if now_s + RENEW_BEFORE.as_secs() < cached.expires_at_s {
                return cached.header.clone();
            }
        }
        let expires_at_s = now_s + VALIDITY.as_secs();
        let header = format!("vapid t={}, k={}", self.jwt(origin, expires_at_s), self.public_key);
        if cache.len() >= MAX_CACHED_ORIGINS {
            cache.clear();
        }
        cache.insert(
            origin.to_string(),
            Cached {
                header: header.clone(),
                expires_at_s,
            },
        );
        header
    }

    /// An ES256 JWT (RFC 7515 compact form, the signature as `r || s`) for `aud` = `origin`.
    fn jwt(&self, origin: &str, expires_at_s: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = json!({ "aud": origin, "exp": expires_at_s, "sub": self.subject });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let signature: Signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

/// The origin of a push URL as VAPID's `aud` wants it: scheme, host and a non-default port.
pub fn origin_of(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

#[cfg(test)]
mod tests {
    use agora::config::VapidKey;
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::VerifyingKey;
    use serde_json::Value;

    use super::*;

    fn signer() -> VapidSigner {
        let key = p256::SecretKey::from_slice(&[7u8; 32]).expect("scalar");
        let pem = key.to_sec1_pem(p256::pkcs8::LineEnding::LF).expect("pem");
        VapidSigner::new(&VapidConfig {
            key_file: "/etc/agora/vapid.pem".into(),
            key: VapidKey::from_pem(&pem).expect("key"),
            subject: "mailto:ops@example.com".into(),
        })
    }

    fn decode(part: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(part).expect("base64url")
    }

    #[test]
    fn the_jwt_is_es256_for_the_origin_and_verifies_with_k() {
        let signer = signer();
        let now = 1_800_000_000;
        let header = signer.authorization("https://push.example.com", now);
        let (t, k) = header
            .strip_prefix("vapid t=")
            .and_then(|rest| rest.split_once(", k="))
            .expect("vapid t=..., k=...");
        assert_eq!(k, signer.application_server_key());
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let jose: Value = serde_json::from_slice(&decode(parts[0])).expect("json");
        assert_eq!(jose["alg"], "ES256");
        let claims: Value = serde_json::from_slice(&decode(parts[1])).expect("json");
        assert_eq!(claims["aud"], "https://push.example.com");
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        let exp = claims["exp"].as_u64().expect("exp");
        assert!(exp > now && exp <= now + 24 * 3600, "exp at most 24 h ahead");
        let key = VerifyingKey::from_sec1_bytes(&decode(k)).expect("public key");
        let signature = Signature::from_slice(&decode(parts[2])).expect("r || s");
        assert!(key
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .is_ok());
        // A flipped bit fails: the check checks something.
        let mut tampered = decode(parts[2]);
        tampered[5] ^= 1;
        let tampered = Signature::from_slice(&tampered).expect("r || s");
        assert!(key
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &tampered)
            .is_err());
    }

    #[test]
    fn one_jwt_per_origin_until_it_nears_expiry() {
        let signer = signer();
        let now = 1_800_000_000;
        let first = signer.authorization("https://a.example", now);
        assert_eq!(signer.authorization("https://a.example", now + 600), first, "cached");
        assert_ne!(signer.authorization("https://b.example", now), first, "per origin");
        let renewal = now + VALIDITY.as_secs() - RENEW_BEFORE.as_secs();
        assert_ne!(
            signer.authorization("https://a.example", renewal),
            first,
            "renewed before expiry"
        );
        assert!(!format!("{signer:?}").contains("SigningKey"));
    }

    #[test]
    fn origins_keep_non_default_ports_only() {
        let url = |u: &str| reqwest::Url::parse(u).expect("url");
        assert_eq!(
            origin_of(&url("https://Push.Example.com:443/a/b?c")),
            "https://push.example.com"
        );
        assert_eq!(origin_of(&url("http://127.0.0.1:8080/p")), "http://127.0.0.1:8080");
    }
}
