//! Claims validation, with tokens minted here by hand (ring signs; the integration tests mint with PyJWT).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use super::*;

const NOW: u64 = 1_800_000_000;
const KEY_A: &str = "0123456789abcdef0123456789abcdef-key-a";
const KEY_B: &str = "0123456789abcdef0123456789abcdef-key-b";

fn config() -> ClientTokensConfig {
    ClientTokensConfig {
        hmac_keys: vec![Secret::new(KEY_A), Secret::new(KEY_B)],
        ..ClientTokensConfig::default()
    }
}

fn unsigned(alg: &str, claims: &Value) -> String {
    let header = json!({"alg": alg, "typ": "JWT"});
    format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()))
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    let message = unsigned("HS256", claims);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, message.as_bytes());
    format!("{message}.{}", B64.encode(tag.as_ref()))
}

fn claims() -> Value {
    json!({"exp": NOW + 600, "iat": NOW, "accounts": [42, 7, 42]})
}

fn verify(tokens: &ClientTokens, token: &str) -> Result<TokenScope, ClientTokenError> {
    tokens.verify(token, NOW)
}

#[test]
fn an_hs256_token_grants_its_accounts_with_either_listed_key() {
    let tokens = ClientTokens::new(&config());
    for key in [KEY_A, KEY_B] {
        let scope = verify(&tokens, &hs256(key.as_bytes(), &claims())).expect("accepted");
        assert_eq!(scope.accounts, [7, 42]);
        assert_eq!((scope.iat, scope.exp), (Some(NOW), NOW + 600));
    }
    let other = hs256(b"0123456789abcdef0123456789abcdef-key-c", &claims());
    assert_eq!(verify(&tokens, &other), Err(ClientTokenError::Signature));
}

#[test]
fn es256_and_eddsa_tokens_verify_with_their_public_keys_only() {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("key");
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    let ed = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
    let mut ed_key = [0u8; 32];
    ed_key.copy_from_slice(ed.public_key().as_ref());
    let tokens = ClientTokens::new(&ClientTokensConfig {
        public_keys: vec![
            ClientPublicKey::P256(ec.public_key().as_ref().to_vec()),
            ClientPublicKey::Ed25519(ed_key),
        ],
        ..ClientTokensConfig::default()
    });
    let message = unsigned("ES256", &claims());
    let sig = ec.sign(&rng, message.as_bytes()).expect("sign");
    let es256 = format!("{message}.{}", B64.encode(sig.as_ref()));
    assert_eq!(verify(&tokens, &es256).expect("ES256").accounts, [7, 42]);
    let message = unsigned("EdDSA", &claims());
    let eddsa = format!("{message}.{}", B64.encode(ed.sign(message.as_bytes()).as_ref()));
    assert_eq!(verify(&tokens, &eddsa).expect("EdDSA").accounts, [7, 42]);
    // The ES256 signature under an EdDSA header: refused (the alg picks the keys).
    let message = unsigned("EdDSA", &claims());
    let swapped = format!(
        "{message}.{}",
        B64.encode(ec.sign(&rng, message.as_bytes()).expect("sign").as_ref())
    );
    assert_eq!(verify(&tokens, &swapped), Err(ClientTokenError::Signature));
    // HS256 "signed" with the public key as the secret: no HMAC key is configured, and the public key is never one.
    let confused = hs256(ec.public_key().as_ref(), &claims());
    assert_eq!(verify(&tokens, &confused), Err(ClientTokenError::Algorithm));
}

#[test]
fn alg_none_other_algorithms_and_garbage_are_refused() {
    let tokens = ClientTokens::new(&config());
    let none = format!("{}.", unsigned("none", &claims()));
    assert_eq!(verify(&tokens, &none), Err(ClientTokenError::Algorithm));
    let hs512 = format!("{}.{}", unsigned("HS512", &claims()), B64.encode([0u8; 64]));
    assert_eq!(verify(&tokens, &hs512), Err(ClientTokenError::Algorithm));
    let es256 = format!("{}.{}", unsigned("ES256", &claims()), B64.encode([0u8; 64]));
    assert_eq!(
        verify(&tokens, &es256),
        Err(ClientTokenError::Algorithm),
        "no P-256 key configured"
    );
    assert_eq!(verify(&tokens, "not-a-jwt"), Err(ClientTokenError::Malformed));
    let long = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(
        verify(&tokens, &long),
        Err(ClientTokenError::TooLong(MAX_TOKEN_BYTES + 1))
    );
}

#[test]
fn a_flipped_signature_bit_is_refused() {
    let tokens = ClientTokens::new(&config());
    let token = hs256(KEY_A.as_bytes(), &claims());
    let (message, sig) = token.rsplit_once('.').expect("three parts");
    let mut raw = B64.decode(sig).expect("base64");
    raw[5] ^= 0x10;
    let flipped = format!("{message}.{}", B64.encode(raw));
    assert_eq!(verify(&tokens, &flipped), Err(ClientTokenError::Signature));
}

#[test]
fn times_are_exact_and_the_lifetime_is_bounded() {
    let tokens = ClientTokens::new(&config());
    let at = |c: Value| verify(&tokens, &hs256(KEY_A.as_bytes(), &c));
    assert_eq!(at(json!({"exp": NOW, "accounts": [1]})), Err(ClientTokenError::Expired));
    assert!(
        at(json!({"exp": NOW + 1, "accounts": [1]})).is_ok(),
        "no iat: exp - now is the lifetime"
    );
    assert_eq!(
        at(json!({"exp": NOW + 60, "nbf": NOW + 1, "accounts": [1]})),
        Err(ClientTokenError::NotYetValid)
    );
    assert!(at(json!({"exp": NOW + 60, "nbf": NOW, "accounts": [1]})).is_ok());
    let day = 24 * 3600;
    assert!(at(json!({"exp": NOW + 10, "iat": NOW + 10 - day, "accounts": [1]})).is_ok());
    assert_eq!(
        at(json!({"exp": NOW + 10, "iat": NOW + 9 - day, "accounts": [1]})),
        Err(ClientTokenError::Lifetime(Duration::from_secs(day)))
    );
    assert_eq!(
        at(json!({"exp": NOW + day + 1, "accounts": [1]})),
        Err(ClientTokenError::Lifetime(Duration::from_secs(day)))
    );
    // Type confusion (CVE-2026-25537): a string time is not a missing one.
    assert_eq!(
        at(json!({"exp": "never", "accounts": [1]})),
        Err(ClientTokenError::Claims)
    );
    assert_eq!(
        at(json!({"exp": NOW + 60, "nbf": "99999999999", "accounts": [1]})),
        Err(ClientTokenError::Claims)
    );
}

#[test]
fn accounts_are_required_non_empty_u32s_and_at_most_a_thousand() {
    let tokens = ClientTokens::new(&config());
    let with = |accounts: Value| {
        verify(
            &tokens,
            &hs256(KEY_A.as_bytes(), &json!({"exp": NOW + 60, "accounts": accounts})),
        )
    };
    let thousand: Vec<u32> = (0..1000).collect();
    assert_eq!(with(json!(thousand)).expect("1000 accounts").accounts.len(), 1000);
    let more: Vec<u32> = (0..1001).collect();
    assert_eq!(with(json!(more)), Err(ClientTokenError::TooManyAccounts));
    assert_eq!(with(json!([])), Err(ClientTokenError::Claims));
    assert_eq!(with(json!([-1])), Err(ClientTokenError::Claims));
    assert_eq!(with(json!([4_294_967_296u64])), Err(ClientTokenError::Claims));
    assert_eq!(with(json!("42")), Err(ClientTokenError::Claims));
    let missing = hs256(KEY_A.as_bytes(), &json!({"exp": NOW + 60}));
    assert_eq!(verify(&tokens, &missing), Err(ClientTokenError::Claims));
    let no_exp = hs256(KEY_A.as_bytes(), &json!({"accounts": [1]}));
    assert_eq!(verify(&tokens, &no_exp), Err(ClientTokenError::Claims));
    let long_jti = hs256(
        KEY_A.as_bytes(),
        &json!({"exp": NOW + 60, "accounts": [1], "jti": "j".repeat(MAX_JTI + 1)}),
    );
    assert_eq!(verify(&tokens, &long_jti), Err(ClientTokenError::Claims));
}

#[test]
fn issuer_and_audience_are_checked_when_configured_and_ignored_otherwise() {
    let open = ClientTokens::new(&config());
    let strict = ClientTokens::new(&ClientTokensConfig {
        issuer: Some("https://mail.example.com".into()),
        audience: Some("agora".into()),
        ..config()
    });
    let token = |extra: Value| {
        let mut c = json!({"exp": NOW + 60, "accounts": [1]});
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        hs256(KEY_A.as_bytes(), &c)
    };
    let good = token(json!({"iss": "https://mail.example.com", "aud": "agora"}));
    assert!(verify(&strict, &good).is_ok());
    assert!(verify(&open, &good).is_ok(), "aud is not checked without audience");
    let in_list = token(json!({"iss": "https://mail.example.com", "aud": ["other", "agora"]}));
    assert!(verify(&strict, &in_list).is_ok());
    let wrong_iss = token(json!({"iss": "https://evil.example", "aud": "agora"}));
    assert_eq!(verify(&strict, &wrong_iss), Err(ClientTokenError::Issuer));
    let wrong_aud = token(json!({"iss": "https://mail.example.com", "aud": "other"}));
    assert_eq!(verify(&strict, &wrong_aud), Err(ClientTokenError::Audience));
    let missing = token(json!({}));
    assert!(matches!(
        verify(&strict, &missing),
        Err(ClientTokenError::Issuer | ClientTokenError::Audience)
    ));
}

#[test]
fn debug_output_and_errors_name_no_key() {
    let tokens = ClientTokens::new(&config());
    let debug = format!("{tokens:?}");
    assert!(!debug.contains("0123456789abcdef"), "{debug}");
    let err = verify(&tokens, &hs256(b"0123456789abcdef0123456789abcdef-key-c", &claims())).expect_err("refused");
    assert!(!err.to_string().contains("key-"), "{err}");
}
