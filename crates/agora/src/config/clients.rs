//! The `[http.clients]` section: the keys that sign end clients' scoped tokens (JWTs a mail server mints for one
//! browser or phone), what their claims must say, and the bounds of revocation.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use toml::Value;

use super::keys::quote;
use super::parse::Walker;
use super::types::{ClientPublicKey, ClientTokensConfig, Secret};

/// Keys of `[http.clients]`.
const CLIENT_KEYS: &[&str] = &[
    "hmac-keys",
    "public-key-files",
    "issuer",
    "audience",
    "max-token-lifetime",
    "max-revocations",
];

/// Shortest HS256 key: RFC 7518 section 3.2 requires a key at least as long as the hash (256 bits).
pub const MIN_HMAC_KEY_BYTES: usize = 32;

/// Bounds of `max-token-lifetime`: from a minute to 30 days (revocations are kept that long).
const LIFETIME_RANGE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(30 * 24 * 3600));

/// Bounds of `max-revocations`.
const MAX_REVOCATIONS_RANGE: (i64, i64) = (1, 10_000_000);

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE, AlgorithmIdentifier 1.3.101.112, BIT STRING
/// of 33 bytes (a zero pad byte then the 32-byte key).
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

impl Walker {
    /// `[http.clients]`: `None` when absent (client tokens are then refused: only the node token works).
    pub(super) fn http_clients(&mut self, value: &Value) -> Option<ClientTokensConfig> {
        let table = self.table("http.clients", value)?;
        self.check_keys("http.clients", table, CLIENT_KEYS);
        let mut clients = ClientTokensConfig::default();
        if let Some(v) = table.get("hmac-keys") {
            clients.hmac_keys = self.hmac_keys(v);
        }
        if let Some(v) = table.get("public-key-files") {
            let (files, keys) = self.public_key_files(v);
            clients.public_key_files = files;
            clients.public_keys = keys;
        }
        for (key, slot) in [("issuer", &mut clients.issuer), ("audience", &mut clients.audience)] {
            let full = format!("http.clients.{key}");
            if let Some(text) = table.get(key).and_then(|v| self.string(&full, v)) {
                if text.is_empty() || text.len() > 1024 || text.chars().any(char::is_control) {
                    self.error(
                        &full,
                        format!(
                            "{} must be a non-empty string of at most 1024 characters without control characters \
                             (the token's `{}` claim must equal it)",
                            quote(&text),
                            if key == "issuer" { "iss" } else { "aud" }
                        ),
                    );
                } else {
                    *slot = Some(text);
                }
            }
        }
        if let Some(d) = table.get("max-token-lifetime").and_then(|v| {
            self.duration(
                "http.clients.max-token-lifetime",
                v,
                "24h",
                LIFETIME_RANGE.0,
                Some(LIFETIME_RANGE.1),
            )
        }) {
            clients.max_token_lifetime = d;
        }
        if let Some(n) = table.get("max-revocations").and_then(|v| {
            self.integer_in(
                "http.clients.max-revocations",
                v,
                MAX_REVOCATIONS_RANGE.0,
                MAX_REVOCATIONS_RANGE.1,
            )
        }) {
            clients.max_revocations = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if clients.hmac_keys.is_empty()
            && clients.public_keys.is_empty()
            && !table.contains_key("hmac-keys")
            && !table.contains_key("public-key-files")
        {
            self.error(
                "http.clients",
                "no key: give hmac-keys (HS256 secrets of at least 32 bytes) or public-key-files (PEM ES256 P-256 or \
                 EdDSA Ed25519 public keys), or remove [http.clients]",
            );
        }
        Some(clients)
    }

    /// `hmac-keys`: one or a list (rotation: every listed key is accepted); each at least 32 bytes. Errors never show
    /// a key.
    fn hmac_keys(&mut self, value: &Value) -> Vec<Secret> {
        let Some(items) = self.one_or_list(
            "http.clients.hmac-keys",
            value,
            "give at least one HS256 key, or remove `hmac-keys`",
            "a string or a list of strings",
            false,
        ) else {
            return Vec::new();
        };
        let mut keys = Vec::with_capacity(items.len());
        for (key, item) in items {
            let Some(secret) = self.secret(&key, item) else {
                continue;
            };
            let len = secret.expose().len();
            if len < MIN_HMAC_KEY_BYTES {
                self.error(
                    &key,
                    format!(
                        "an HS256 key must be at least {MIN_HMAC_KEY_BYTES} bytes (RFC 7518 section 3.2), this one is \
                         {len}; generate one with `openssl rand -base64 48`"
                    ),
                );
                continue;
            }
            keys.push(secret);
        }
        keys
    }

    /// `public-key-files`: one path or a list, each a PEM public key (`-----BEGIN PUBLIC KEY-----`) whose kind
    /// decides the algorithm: P-256 for ES256, Ed25519 for EdDSA.
    fn public_key_files(&mut self, value: &Value) -> (Vec<PathBuf>, Vec<ClientPublicKey>) {
        let Some(items) = self.one_or_list(
            "http.clients.public-key-files",
            value,
            "give at least one PEM public key file, or remove `public-key-files`",
            "a path or a list of paths",
            true,
        ) else {
            return (Vec::new(), Vec::new());
        };
        let (mut files, mut keys) = (Vec::new(), Vec::new());
        for (key, item) in items {
            let Some(path) = self.string(&key, item) else {
                continue;
            };
            match read_public_key_file(&path) {
                Ok(public) => {
                    files.push(PathBuf::from(path));
                    keys.push(public);
                }
                Err(why) => self.error(&key, format!("{}: {why}", quote(&path))),
            }
        }
        (files, keys)
    }
}

/// Reads and parses a public key file; the error says what is wrong without quoting the file's contents.
fn read_public_key_file(path: &str) -> Result<ClientPublicKey, String> {
    let text = super::key_file::read_pem(path)?;
    ClientPublicKey::from_pem(&text).map_err(|why| {
        format!(
            "{why}; allowed: an ES256 (P-256, `openssl ec -pubout`) or EdDSA (Ed25519, `openssl pkey -pubout`) public \
             key in PEM"
        )
    })
}

impl ClientPublicKey {
    /// Parses a PEM `PUBLIC KEY` block (SubjectPublicKeyInfo): an Ed25519 key (EdDSA) or a P-256 key (ES256). Any
    /// other kind (RSA, P-384, a private key) is refused; the error never quotes the input.
    pub fn from_pem(pem: &str) -> Result<Self, &'static str> {
        const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
        const END: &str = "-----END PUBLIC KEY-----";
        let Some(start) = pem.find(BEGIN) else {
            return Err(if pem.contains("PRIVATE KEY-----") {
                "it holds a private key: give the public key only (the node verifies, it never signs)"
            } else {
                "it holds no PEM public key (\"-----BEGIN PUBLIC KEY-----\")"
            });
        };
        let body = &pem[start + BEGIN.len()..];
        let stop = body.find(END).ok_or("its PUBLIC KEY block has no END line")?;
        let b64: String = body[..stop].chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| "its PUBLIC KEY block is not base64")?;
        if der.len() == ED25519_SPKI_PREFIX.len() + 32 && der.starts_with(&ED25519_SPKI_PREFIX) {
            let mut key = [0u8; 32];
            key.copy_from_slice(&der[ED25519_SPKI_PREFIX.len()..]);
            return Ok(ClientPublicKey::Ed25519(key));
        }
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::DecodePublicKey;
        p256::PublicKey::from_public_key_der(&der)
            .map(|k| ClientPublicKey::P256(k.to_encoded_point(false).as_bytes().to_vec()))
            .map_err(|_| "it is neither a P-256 nor an Ed25519 public key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl genpkey -algorithm ed25519 | openssl pkey -pubout`
    const ED25519_PEM: &str =
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";

    #[test]
    fn an_ed25519_public_key_is_eddsa_and_a_p256_one_is_es256() {
        match ClientPublicKey::from_pem(ED25519_PEM) {
            Ok(ClientPublicKey::Ed25519(key)) => assert_eq!(key[0], 0x19),
            other => panic!("expected Ed25519, got {other:?}"),
        }
        use p256::pkcs8::EncodePublicKey;
        let secret = p256::SecretKey::from_slice(&[7u8; 32]).expect("scalar");
        let pem = secret
            .public_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .expect("pem");
        match ClientPublicKey::from_pem(&pem) {
            Ok(ClientPublicKey::P256(point)) => assert_eq!(point.len(), 65),
            other => panic!("expected P-256, got {other:?}"),
        }
    }

    #[test]
    fn private_keys_and_garbage_are_refused_without_quoting_them() {
        let err = ClientPublicKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
            .expect_err("private");
        assert!(err.contains("private key"), "{err}");
        let err = ClientPublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VxAyEA\n-----END PUBLIC KEY-----")
            .expect_err("not a key");
        assert!(!err.contains("MCow"), "{err}");
    }

    fn errors_of(toml: &str) -> String {
        crate::config::parse(toml).expect_err("refused").to_string()
    }

    #[test]
    fn keys_claims_and_bounds_are_read_with_their_defaults() {
        let key_file = std::env::temp_dir().join(format!("agora-client-key-{}.pem", std::process::id()));
        std::fs::write(&key_file, ED25519_PEM).expect("write key");
        let config = crate::config::parse(&format!(
            "[http.clients]\nhmac-keys = [\"{a}\", \"{b}\"]\npublic-key-files = [{path:?}]\nissuer = \"https://mail.example.com\"\n",
            a = "k".repeat(32),
            b = "l".repeat(40),
            path = key_file.display().to_string(),
        ))
        .expect("valid");
        let clients = config.http.clients.expect("[http.clients]");
        assert_eq!(clients.hmac_keys.len(), 2);
        assert!(matches!(clients.public_keys.as_slice(), [ClientPublicKey::Ed25519(_)]));
        assert_eq!(clients.issuer.as_deref(), Some("https://mail.example.com"));
        assert_eq!(clients.audience, None);
        assert_eq!(clients.max_token_lifetime, Duration::from_secs(24 * 3600));
        assert_eq!(clients.max_revocations, 100_000);
        // check-config: a count and placeholders, never a key; and the output parses back.
        let rendered = crate::config::parse(&format!(
            "[http.clients]\nhmac-keys = \"{}\"\nmax-token-lifetime = \"1h\"\nmax-revocations = 5\n",
            "s3cr3t-".repeat(6)
        ))
        .expect("valid")
        .to_redacted_toml();
        assert!(!rendered.contains("s3cr3t"), "{rendered}");
        assert!(rendered.contains("# 1 HS256 key (redacted)"), "{rendered}");
        let back = crate::config::parse(&rendered).expect("the output parses back");
        let back = back.http.clients.expect("clients");
        assert_eq!(
            (back.max_token_lifetime, back.max_revocations),
            (Duration::from_secs(3600), 5)
        );
        let _ = std::fs::remove_file(key_file);
    }

    #[test]
    fn bad_values_name_the_key_and_what_is_allowed_without_showing_a_secret() {
        let short =
            errors_of("[http.clients]\nhmac-keys = [\"0123456789abcdef0123456789abcdef\", \"too-short-secret\"]\n");
        assert!(short.contains("http.clients.hmac-keys[1]"), "{short}");
        assert!(short.contains("at least 32 bytes"), "{short}");
        assert!(!short.contains("too-short-secret"), "{short}");
        let none = errors_of("[http.clients]\nissuer = \"x\"\n");
        assert!(none.contains("http.clients") && none.contains("hmac-keys"), "{none}");
        let typo = errors_of("[http.clients]\nhmac-key = [\"0123456789abcdef0123456789abcdef\"]\n");
        assert!(
            typo.contains("http.clients.hmac-key") && typo.contains("hmac-keys"),
            "{typo}"
        );
        let missing = errors_of("[http.clients]\npublic-key-files = [\"/nonexistent/issuer.pem\"]\n");
        assert!(
            missing.contains("http.clients.public-key-files[0]") && missing.contains("cannot be read"),
            "{missing}"
        );
        let lifetime = errors_of(
            "[http.clients]\nhmac-keys = \"0123456789abcdef0123456789abcdef\"\nmax-token-lifetime = \"90d\"\n",
        );
        assert!(lifetime.contains("http.clients.max-token-lifetime"), "{lifetime}");
        let cap = errors_of("[http.clients]\nhmac-keys = \"0123456789abcdef0123456789abcdef\"\nmax-revocations = 0\n");
        assert!(cap.contains("http.clients.max-revocations"), "{cap}");
        let debug = format!(
            "{:?}",
            crate::config::parse("[http.clients]\nhmac-keys = \"0123456789abcdef0123456789abcdef-secret\"\n")
                .expect("valid")
        );
        assert!(!debug.contains("-secret"), "{debug}");
    }
}
