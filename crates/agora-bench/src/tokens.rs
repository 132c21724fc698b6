//! What a client token costs at connect: one real `agora node` with `[http] token` and `[http.clients]`, and
//! `GET /v1/eventsource` streams opened as fast as a few client threads can, with the node token (no JWT to check)
//! and with client tokens signed HS256 and ES256 (a fresh token per connection, so nothing can be cached). Each
//! connection is timed from `connect` to the stream's `200`, then closed.
//!
//! The tokens are minted here with ring (HMAC-SHA256, ECDSA P-256 in the JWS fixed format) and base64url: the
//! node's verifier is a different implementation (jsonwebtoken over its own ring provider), and the test suite
//! checks the node against PyJWT's tokens besides.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hdrhistogram::Histogram;
use p256::pkcs8::EncodePublicKey;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

use super::memory::NodeProcess;
use super::report::ScenarioResult;

/// Client threads opening connections at once.
const THREADS: usize = 4;

/// The node token of the scenario's node (not a secret: the node lives for the run only).
const NODE_TOKEN: &str = "bench-node-token-0123456789abcdef";

/// The HS256 key of the scenario's node.
const HMAC_KEY: &str = "bench-client-key-0123456789abcdef0123456789";

/// How a connection authenticates.
#[derive(Clone, Copy, Debug)]
enum Credential {
    /// `[http] token`: a digest comparison.
    NodeToken,
    /// A client JWT signed with the HMAC key.
    Hs256,
    /// A client JWT signed with the P-256 key.
    Es256,
}

impl Credential {
    fn name(self) -> &'static str {
        match self {
            Credential::NodeToken => "node_token",
            Credential::Hs256 => "client_token_hs256",
            Credential::Es256 => "client_token_es256",
        }
    }
}

/// Signs client tokens.
struct Minter {
    hmac: ring::hmac::Key,
    ecdsa: EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl Minter {
    fn new() -> Result<(Self, String), String> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(|e| e.to_string())?;
        let ecdsa = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|e| e.to_string())?;
        let public = p256::PublicKey::from_sec1_bytes(ecdsa.public_key().as_ref()).map_err(|e| e.to_string())?;
        let pem = public
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .map_err(|e| e.to_string())?;
        let hmac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HMAC_KEY.as_bytes());
        Ok((Minter { hmac, ecdsa, rng }, pem))
    }

    /// A token for account 1, valid 10 minutes, with its own `jti`.
    fn mint(&self, credential: Credential, n: usize) -> Result<String, String> {
        let alg = match credential {
            Credential::NodeToken => return Ok(NODE_TOKEN.to_string()),
            Credential::Hs256 => "HS256",
            Credential::Es256 => "ES256",
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
        let claims = json!({"accounts": [1], "iat": now, "exp": now + 600, "jti": format!("bench-{n}")});
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let signature = match credential {
            Credential::Hs256 => ring::hmac::sign(&self.hmac, signing_input.as_bytes()).as_ref().to_vec(),
            _ => self
                .ecdsa
                .sign(&self.rng, signing_input.as_bytes())
                .map_err(|e| e.to_string())?
                .as_ref()
                .to_vec(),
        };
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// Runs the scenario: `connections` connections per credential against a node started from `exe` on `nats_url`.
pub fn run(exe: &Path, nats_url: &str, connections: usize) -> Result<Vec<ScenarioResult>, String> {
    if connections == 0 {
        return Err("tokens: --token-connections must be > 0".into());
    }
    let (minter, pem) = Minter::new()?;
    let dir = std::env::temp_dir().join(format!("agora-bench-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let pem_path = dir.join("issuer.pem");
    std::fs::write(&pem_path, pem).map_err(|e| e.to_string())?;
    let extra = format!(
        "[http]\ntoken = \"{NODE_TOKEN}\"\n[http.clients]\nhmac-keys = [\"{HMAC_KEY}\"]\npublic-key-files = [{:?}]\n",
        pem_path.to_string_lossy()
    );
    let node = NodeProcess::start_with(exe, nats_url, 971, &extra)?;
    let mut rows = Vec::new();
    for credential in [Credential::NodeToken, Credential::Hs256, Credential::Es256] {
        let tokens: Vec<String> = (0..connections)
            .map(|n| minter.mint(credential, n))
            .collect::<Result<_, _>>()?;
        let cpu_before = node.cpu_seconds();
        let started = Instant::now();
        let chunks: Vec<Vec<String>> = tokens
            .chunks(connections.div_ceil(THREADS))
            .map(<[String]>::to_vec)
            .collect();
        let threads: Vec<_> = chunks
            .into_iter()
            .map(|tokens| {
                let addr = node.http.clone();
                std::thread::spawn(move || connect_all(&addr, &tokens))
            })
            .collect();
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("constant, valid bounds");
        let mut failed = 0u64;
        let mut first_error = None;
        for thread in threads {
            let (times, errors) = thread.join().map_err(|_| "a client thread panicked".to_string())?;
            for us in times {
                let _ = histogram.record(us.max(1));
            }
            failed += errors.len() as u64;
            first_error = first_error.or(errors.into_iter().next());
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = node.cpu_seconds() - cpu_before;
        let q = |p: f64| histogram.value_at_quantile(p) as f64;
        let mut details = serde_json::Map::new();
        details.insert("connections".into(), json!(connections));
        details.insert("threads".into(), json!(THREADS));
        details.insert(
            "node_cpu_us_per_connection".into(),
            json!((cpu * 1e6 / connections as f64).round()),
        );
        if let Some(e) = first_error {
            details.insert("first_error".into(), json!(e));
        }
        rows.push(ScenarioResult {
            scenario: "token_connect".into(),
            mode: credential.name().into(),
            events: connections as u64,
            events_per_sec: histogram.len() as f64 / elapsed,
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            lost: failed,
            rss_kib: Some(node.peak_rss_kib()),
            details,
        });
    }
    Ok(rows)
}

/// Opens a stream with each token in turn, waits for its `200`, closes it: each one's time (µs) and the failures.
fn connect_all(addr: &str, tokens: &[String]) -> (Vec<u64>, Vec<String>) {
    let mut times = Vec::with_capacity(tokens.len());
    let mut errors = Vec::new();
    for token in tokens {
        let started = Instant::now();
        match open(addr, token) {
            Ok(()) => times.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)),
            Err(e) => errors.push(e),
        }
    }
    (times, errors)
}

/// One stream: connect, `GET /v1/eventsource` with `token`, read the status line; dropped (closed) after.
fn open(addr: &str, token: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /v1/eventsource?accounts=1&ping=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut status = String::new();
    BufReader::new(&stream)
        .read_line(&mut status)
        .map_err(|e| e.to_string())?;
    if status.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("answered {}", status.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_are_three_base64url_parts_with_the_claims() {
        let (minter, pem) = Minter::new().expect("keys");
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
        for credential in [Credential::Hs256, Credential::Es256] {
            let token = minter.mint(credential, 7).expect("mint");
            let parts: Vec<&str> = token.split('.').collect();
            assert_eq!(parts.len(), 3, "{token}");
            let claims: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url")).expect("JSON");
            assert_eq!(claims["accounts"], json!([1]));
            assert_eq!(claims["jti"], "bench-7");
        }
        let es256 = minter.mint(Credential::Es256, 0).expect("mint");
        let signature = URL_SAFE_NO_PAD
            .decode(es256.rsplit('.').next().expect("part"))
            .expect("base64url");
        assert_eq!(signature.len(), 64, "JWS ES256 is r || s, 64 bytes");
    }
}
