//! The CPU a client token costs at connect: one verification (header, signature, claims) per EventSource connection
//! that presents one, by algorithm; and the revocation check a stream makes at connect and on every revocation.

use std::hint::black_box;

use agora::config::{ClientPublicKey, ClientTokensConfig, Secret};
use agora_node::http::client_tokens::ClientTokens;
use agora_node::services::revocations::{Held, RevocationKey, RevocationRegistry};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

const KEY: &str = "bench-client-key-0123456789abcdef-0123456789";

fn message(alg: &str, now: u64) -> String {
    let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
    let claims = format!(
        r#"{{"exp":{},"iat":{now},"accounts":[42,43],"jti":"bench-1"}}"#,
        now + 600
    );
    format!("{}.{}", B64.encode(header), B64.encode(claims))
}

fn bench(c: &mut Criterion) {
    let now = agora::clock::now_ms() / 1000;
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("key");
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    let ed = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
    let mut ed_public = [0u8; 32];
    ed_public.copy_from_slice(ed.public_key().as_ref());
    let tokens = ClientTokens::new(&ClientTokensConfig {
        hmac_keys: vec![Secret::new(KEY)],
        public_keys: vec![
            ClientPublicKey::P256(ec.public_key().as_ref().to_vec()),
            ClientPublicKey::Ed25519(ed_public),
        ],
        ..ClientTokensConfig::default()
    });
    let hs = {
        let m = message("HS256", now);
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEY.as_bytes()),
            m.as_bytes(),
        );
        format!("{m}.{}", B64.encode(tag.as_ref()))
    };
    let es = {
        let m = message("ES256", now);
        format!(
            "{m}.{}",
            B64.encode(ec.sign(&rng, m.as_bytes()).expect("sign").as_ref())
        )
    };
    let eddsa = {
        let m = message("EdDSA", now);
        format!("{m}.{}", B64.encode(ed.sign(m.as_bytes()).as_ref()))
    };
    for (name, token) in [("HS256", &hs), ("ES256", &es), ("EdDSA", &eddsa)] {
        assert!(tokens.verify(token, now).is_ok(), "{name}");
        c.bench_function(&format!("client_tokens/verify {name}"), |b| {
            b.iter(|| tokens.verify(black_box(token), now).expect("valid"))
        });
    }
    let mut registry = RevocationRegistry::default();
    for i in 0..100_000u32 {
        let key = if i % 2 == 0 {
            RevocationKey::Account(i)
        } else {
            RevocationKey::Jti(format!("t-{i}"))
        };
        registry.revoke(
            key,
            Held {
                revoked_at_ms: 1,
                keep_until_ms: u64::MAX,
            },
        );
    }
    let scope = tokens.verify(&hs, now).expect("valid");
    c.bench_function("client_tokens/revocation check (100,000 held, 2 accounts + jti)", |b| {
        b.iter(|| registry.covers(black_box(&scope)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
