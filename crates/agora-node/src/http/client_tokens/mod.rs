//! End clients' scoped tokens (`[http.clients]`, contract section 6.3): JWTs a mail server mints for one browser or
//! phone, accepted on `GET /v1/eventsource` only, for the accounts they name.
//!
//! **What is checked**, in this order, so that nothing an unauthenticated sender controls costs more than a bounded
//! parse before its signature is verified:
//! 1. the token is at most [`MAX_TOKEN_BYTES`];
//! 2. the header's `alg` is HS256, ES256 or EdDSA (`none` and every other algorithm are refused) and a key of that
//!    kind is configured: HS256 is tried with the `hmac-keys` only, ES256 with the P-256 keys only, EdDSA with the
//!    Ed25519 keys only, so an HS256 token "signed" with a public key's PEM never meets that key as a secret;
//! 3. the signature, with every configured key of that kind until one verifies (rotation);
//! 4. the claims: `iss` / `aud` when configured (jsonwebtoken), then `exp` (required), `nbf`, `accounts` (required,
//!    1 to [`MAX_TOKEN_ACCOUNTS`] u32 account ids: a longer list fails while it is read, before it is stored),
//!    `jti` (at most 256 bytes), and the lifetime: `exp - iat` (or `exp - now` without `iat`) at most
//!    `max-token-lifetime`, which bounds how long a revocation must be held.
//!
//! **Time.** No leeway: a token is refused from its `exp` second on and before its `nbf` second, by the node's clock.
//! Mint `nbf` (if at all) a few seconds in the past when the mail server's clock may run ahead.

mod provider;

use std::time::Duration;

use agora::config::{ClientPublicKey, ClientTokensConfig, Secret};
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::services::revocations::{jti_ok, TokenScope, MAX_JTI};

/// Longest token accepted (an EventSource URL with it must stay under the API's 8 KiB request target).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Most accounts one token may name (as many as one EventSource stream may watch).
pub const MAX_TOKEN_ACCOUNTS: usize = 1000;

/// Why a client token was refused. Messages never quote the token or a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientTokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("the client token is {0} bytes; at most {MAX_TOKEN_BYTES} are accepted")]
    TooLong(usize),
    /// Not three base64url parts with a JSON header.
    #[error("the client token is not a JWT (header.claims.signature)")]
    Malformed,
    /// An algorithm other than HS256, ES256, EdDSA (e.g. `none`), or one no configured key has.
    #[error(
        "the client token's algorithm is not accepted: HS256, ES256 or EdDSA, each with a configured key of its kind"
    )]
    Algorithm,
    /// No configured key of the algorithm's kind verifies the signature.
    #[error("the client token's signature does not verify with any configured key")]
    Signature,
    /// `exp` is past.
    #[error("the client token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the client token is not valid yet (nbf)")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the client token's issuer (iss) is not the one configured")]
    Issuer,
    /// `aud` is not the configured audience.
    #[error("the client token's audience (aud) is not the one configured")]
    Audience,
    /// Lives longer than `max-token-lifetime`.
    #[error("the client token lives longer than [http.clients] max-token-lifetime ({0:?}) allows")]
    Lifetime(Duration),
    /// More than [`MAX_TOKEN_ACCOUNTS`] accounts.
    #[error("the client token names more than {MAX_TOKEN_ACCOUNTS} accounts")]
    TooManyAccounts,
    /// Missing or ill-typed claims.
    #[error(
        "the client token's claims are not valid: `exp` (a number) and `accounts` (1 to {MAX_TOKEN_ACCOUNTS} account \
         ids) are required; `iat` and `nbf` are numbers; `jti` is a string of 1 to {MAX_JTI} characters"
    )]
    Claims,
    /// A revocation covers it.
    #[error("the client token was revoked")]
    Revoked,
}

/// The claims the node reads; `iss` and `aud` are checked by jsonwebtoken when configured.
#[derive(Deserialize)]
struct Claims {
    exp: u64,
    #[serde(deserialize_with = "bounded_accounts")]
    accounts: Vec<u32>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    jti: Option<String>,
}

/// What the `accounts` visitor fails with past the bound (recognised in the error it becomes).
const TOO_MANY: &str = "too many accounts";

/// Reads `accounts`, failing at its 1,001st entry: a long list costs the parse, never a large vector.
fn bounded_accounts<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<u32>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_TOKEN_ACCOUNTS} account ids")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u32>, A::Error> {
            let mut accounts = Vec::new();
            while let Some(account) = seq.next_element::<u32>()? {
                if accounts.len() == MAX_TOKEN_ACCOUNTS {
                    return Err(serde::de::Error::custom(TOO_MANY));
                }
                accounts.push(account);
            }
            Ok(accounts)
        }
    }
    d.deserialize_seq(Bounded)
}

/// The configured keys and rules; built once from `[http.clients]`.
pub struct ClientTokens {
    hmac: Vec<DecodingKey>,
    p256: Vec<DecodingKey>,
    ed25519: Vec<DecodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    max_lifetime: Duration,
}

impl std::fmt::Debug for ClientTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTokens")
            .field("hmac_keys", &self.hmac.len())
            .field("p256_keys", &self.p256.len())
            .field("ed25519_keys", &self.ed25519.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("max_lifetime", &self.max_lifetime)
            .finish()
    }
}

impl ClientTokens {
    /// The verifier of `[http.clients]`.
    pub fn new(config: &ClientTokensConfig) -> Self {
        provider::install();
        let mut tokens = ClientTokens {
            hmac: config
                .hmac_keys
                .iter()
                .map(Secret::expose)
                .map(|k| DecodingKey::from_secret(k.as_bytes()))
                .collect(),
            p256: Vec::new(),
            ed25519: Vec::new(),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            max_lifetime: config.max_token_lifetime,
        };
        for key in &config.public_keys {
            match key {
                ClientPublicKey::P256(point) => tokens.p256.push(DecodingKey::from_ec_der(point)),
                ClientPublicKey::Ed25519(raw) => tokens.ed25519.push(DecodingKey::from_ed_der(raw)),
            }
        }
        tokens
    }

    /// `[http.clients] max-token-lifetime`.
    pub fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }

    /// Verifies `token` at `now` (Unix seconds) and returns what it grants.
    pub fn verify(&self, token: &str, now: u64) -> Result<TokenScope, ClientTokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ClientTokenError::TooLong(token.len()));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // An `alg` jsonwebtoken does not know (`none` among them) fails the header's parse as an unknown variant.
            JwtErrorKind::Json(e) if e.to_string().contains("unknown variant") => ClientTokenError::Algorithm,
            _ => ClientTokenError::Malformed,
        })?;
        let keys = match header.alg {
            Algorithm::HS256 => &self.hmac,
            Algorithm::ES256 => &self.p256,
            Algorithm::EdDSA => &self.ed25519,
            _ => return Err(ClientTokenError::Algorithm),
        };
        if keys.is_empty() {
            return Err(ClientTokenError::Algorithm);
        }
        let validation = self.validation(header.alg);
        let mut last = ClientTokenError::Signature;
        for key in keys {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return self.scope(data.claims, now),
                Err(e) => {
                    last = map_error(e.kind());
                    // Only a wrong signature is worth another key: anything else fails with every key.
                    if last != ClientTokenError::Signature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    /// jsonwebtoken's part: the one algorithm, the signature, `iss` and `aud` when configured. Times are checked
    /// here, on the typed claims, without leeway.
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut v = Validation::new(algorithm);
        v.leeway = 0;
        v.validate_exp = false;
        v.validate_nbf = false;
        let mut required = Vec::new();
        match &self.issuer {
            Some(issuer) => {
                v.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => v.iss = None,
        }
        match &self.audience {
            Some(audience) => {
                v.set_audience(&[audience]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        v
    }

    fn scope(&self, claims: Claims, now: u64) -> Result<TokenScope, ClientTokenError> {
        if now >= claims.exp {
            return Err(ClientTokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| now < nbf) {
            return Err(ClientTokenError::NotYetValid);
        }
        let lifetime = claims.exp.saturating_sub(claims.iat.unwrap_or(now));
        if lifetime > self.max_lifetime.as_secs() {
            return Err(ClientTokenError::Lifetime(self.max_lifetime));
        }
        if claims.jti.as_deref().is_some_and(|j| !jti_ok(j)) || claims.accounts.is_empty() {
            return Err(ClientTokenError::Claims);
        }
        let mut accounts = claims.accounts;
        accounts.sort_unstable();
        accounts.dedup();
        Ok(TokenScope {
            accounts,
            iat: claims.iat,
            jti: claims.jti,
            exp: claims.exp,
        })
    }
}

fn map_error(kind: &JwtErrorKind) -> ClientTokenError {
    match kind {
        JwtErrorKind::InvalidSignature => ClientTokenError::Signature,
        JwtErrorKind::InvalidAlgorithm | JwtErrorKind::MissingAlgorithm | JwtErrorKind::InvalidAlgorithmName => {
            ClientTokenError::Algorithm
        }
        JwtErrorKind::ExpiredSignature => ClientTokenError::Expired,
        JwtErrorKind::ImmatureSignature => ClientTokenError::NotYetValid,
        JwtErrorKind::InvalidIssuer => ClientTokenError::Issuer,
        JwtErrorKind::InvalidAudience => ClientTokenError::Audience,
        JwtErrorKind::MissingRequiredClaim(claim) if claim == "iss" => ClientTokenError::Issuer,
        JwtErrorKind::MissingRequiredClaim(claim) if claim == "aud" => ClientTokenError::Audience,
        JwtErrorKind::Json(e) if e.to_string().contains(TOO_MANY) => ClientTokenError::TooManyAccounts,
        JwtErrorKind::Json(_) | JwtErrorKind::MissingRequiredClaim(_) | JwtErrorKind::InvalidClaimFormat(_) => {
            ClientTokenError::Claims
        }
        _ => ClientTokenError::Malformed,
    }
}

/// Narrows an EventSource filter to a client token's accounts (`accounts=` must be a subset of them: 403 naming the
/// others; absent, all of them) and starts watching the token for its end.
pub fn scope_stream(
    state: &super::AppState,
    scope: std::sync::Arc<TokenScope>,
    filter: &mut super::stream_filter::Filter,
) -> Result<StreamEnd, super::error::ApiError> {
    match &filter.accounts {
        Some(asked) => {
            let mut outside: Vec<u32> = asked
                .iter()
                .copied()
                .filter(|a| scope.accounts.binary_search(a).is_err())
                .collect();
            if !outside.is_empty() {
                state.node_metrics.client_tokens_refused.inc();
                outside.sort_unstable();
                let shown: Vec<String> = outside.iter().take(20).map(u32::to_string).collect();
                let more = outside.len().saturating_sub(shown.len());
                return Err(super::error::ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    format!(
                        "accounts outside the client token: {}{}",
                        shown.join(", "),
                        if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
        }
        None => filter.accounts = Some(scope.accounts.iter().copied().collect()),
    }
    Ok(stream_end(scope, state.state.clone(), &state.shutdown))
}

/// How a client's stream ends early: `token` is cancelled at the token's `exp`, when a revocation covers it, or when
/// the node shuts down; dropping `guard` (the stream ended anyway) stops the watch.
pub struct StreamEnd {
    /// Cancelled when the stream must end.
    pub token: tokio_util::sync::CancellationToken,
    /// Held by the stream for as long as it lasts.
    pub guard: tokio_util::sync::DropGuard,
}

/// Watches one client stream's token: one small task per client stream, asleep until `exp` or until the revocation
/// set changes (within milliseconds of a revocation being applied on this node, whichever node took it).
pub fn stream_end(
    scope: std::sync::Arc<TokenScope>,
    state: std::sync::Arc<crate::services::state::NodeState>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> StreamEnd {
    let token = shutdown.child_token();
    let guard = token.clone().drop_guard();
    // Subscribed before the first look, so that a revocation applied in between is seen by one or the other.
    let mut revoked = state.watch_revocations();
    revoked.mark_unchanged();
    let watch = token.clone();
    let left_ms = scope.exp.saturating_mul(1000).saturating_sub(agora::clock::now_ms());
    tokio::spawn(async move {
        let expired = tokio::time::sleep(Duration::from_millis(left_ms));
        tokio::pin!(expired);
        if state.revocations().covers(&scope) {
            watch.cancel();
            return;
        }
        loop {
            tokio::select! {
                () = watch.cancelled() => return,
                () = &mut expired => break,
                changed = revoked.changed() => {
                    if changed.is_err() || state.revocations().covers(&scope) {
                        break;
                    }
                }
            }
        }
        watch.cancel();
    });
    StreamEnd { token, guard }
}

#[cfg(test)]
mod tests;
