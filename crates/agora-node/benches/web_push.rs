//! The CPU a Web Push costs the node beyond an HTTP POST: RFC 8291 encryption (an ephemeral P-256 key, ECDH, two
//! HKDFs, AES-128-GCM) per push, and a VAPID ES256 signature per push service origin and 11 hours (cached). The
//! portable agreement is measured beside ring's, the one the node uses, as the baseline it was chosen against.

use std::hint::black_box;

use agora::config::{VapidConfig, VapidKey};
use agora_node::services::web_push::encryption::{encrypt, encrypt_with};
use agora_node::services::web_push::keys::UserAgentKeys;
use agora_node::services::web_push::vapid::VapidSigner;
use criterion::{criterion_group, criterion_main, Criterion};
use p256::elliptic_curve::sec1::ToEncodedPoint;

/// A StateChange of a few types: what a push usually carries.
const PAYLOAD: &[u8] = br#"{"@type":"StateChange","changed":{"1042":{"Email":"913","Mailbox":"913","Thread":"913"}}}"#;

fn bench(c: &mut Criterion) {
    let ua = p256::SecretKey::from_slice(&[5u8; 32]).expect("scalar");
    let keys = UserAgentKeys {
        p256dh: ua
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .try_into()
            .expect("65 bytes"),
        auth: [3u8; 16],
    };
    c.bench_function("web_push/encrypt (ring ECDH, as pushed)", |b| {
        b.iter(|| encrypt(black_box(PAYLOAD), &keys).expect("fits"))
    });
    c.bench_function("web_push/encrypt (RustCrypto ECDH, baseline)", |b| {
        b.iter(|| {
            let ephemeral = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()).expect("scalar");
            encrypt_with(black_box(PAYLOAD), &keys, &ephemeral, [7u8; 16]).expect("fits")
        })
    });
    let pem = p256::SecretKey::from_slice(&[9u8; 32])
        .expect("scalar")
        .to_sec1_pem(p256::pkcs8::LineEnding::LF)
        .expect("pem");
    let config = VapidConfig {
        key_file: "/bench/vapid.pem".into(),
        key: VapidKey::from_pem(&pem).expect("key"),
        subject: "mailto:bench@example.com".into(),
    };
    let signer = VapidSigner::new(&config);
    let mut now = 1_800_000_000u64;
    c.bench_function("web_push/vapid signature (uncached: a new origin)", |b| {
        b.iter(|| {
            now += 86_400; // past the cached JWT's renewal: a signature every time
            signer.authorization(black_box("https://push.example.com"), now)
        })
    });
    c.bench_function("web_push/vapid header (cached, as pushed)", |b| {
        b.iter(|| signer.authorization(black_box("https://push.example.com"), now))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
