//! jsonwebtoken's crypto provider for the node: verification only, with ring (already the node's crypto library), for
//! exactly the three algorithms client tokens may use. Any other algorithm, any signing, and any key of another kind
//! than the algorithm's is an error here, whatever the caller asks.

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519};

/// The provider; installed once per process by [`install`].
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: verifier,
    jwk_utils: JwkUtils::new_unimplemented(),
};

/// Makes [`PROVIDER`] jsonwebtoken's process-wide provider (idempotent; the node uses JWKs nowhere).
pub fn install() {
    // Already installed (by an earlier policy in this process): the same provider.
    let _ = PROVIDER.install_default();
}

fn no_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Err(ErrorKind::InvalidAlgorithm.into())
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    use jsonwebtoken::AlgorithmFamily as F;
    let fits = matches!(
        (algorithm, key.family()),
        (Algorithm::HS256, F::Hmac) | (Algorithm::ES256, F::Ec) | (Algorithm::EdDSA, F::Ed)
    );
    if !fits {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        key: key.as_bytes().to_vec(),
    }))
}

/// One verification: the algorithm, and the key's bytes (the HMAC secret, the uncompressed P-256 point, or the raw
/// Ed25519 key).
struct RingVerifier {
    algorithm: Algorithm,
    key: Vec<u8>,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match self.algorithm {
            // Constant-time comparison of the MAC.
            Algorithm::HS256 => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.key);
                ring::hmac::verify(&key, message, sig).is_ok()
            }
            Algorithm::ES256 => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.key)
                .verify(message, sig)
                .is_ok(),
            Algorithm::EdDSA => UnparsedPublicKey::new(&ED25519, &self.key).verify(message, sig).is_ok(),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}
