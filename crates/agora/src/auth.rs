//! Authenticated mode (`[cluster] key`): every message between nodes carries an HMAC-SHA256 made with a shared secret,
//! so a process that can reach the NATS subject but does not know the key cannot inject events, appear in membership
//! or feed a joining node a forged snapshot.
//!
//! - **Batches** carry the MAC in the wire format's trailer (header flag bit 0, `docs/wire-format.md`): the
//!   [`BatchEncoder`](crate::codec::BatchEncoder) signs each batch once in `finish` when it was given a [`Keyring`],
//!   and the receiver checks the trailer with [`Keyring::verify_batch`] before it reads a single record.
//! - **Request/reply** payloads (state snapshots) have no header to put a flag in, so when a key is set they travel
//!   in a small envelope: a request is `payload || nonce (16 bytes) || MAC`, a reply `payload || MAC`, and the reply's
//!   MAC also covers the request's MAC, so an old reply cannot be replayed as the answer to a new request.
//!
//! Rotation: a [`Keyring`] holds one or more keys; it signs with the first and accepts a MAC made with any of them.
//! To replace `old` by `new` without losing a message, restart the nodes one by one with `[old, new]` (everyone
//! learns `new`), then with `[new, old]` (everyone signs with `new`), then with `[new]`.
//!
//! Without a key nothing is checked: unsigned batches are accepted as before, and a batch that carries a MAC is
//! accepted too, its trailer ignored (a node cannot check a MAC without the key, and refusing signed traffic would
//! only make a partial rollout lose events on the nodes that are not yet configured).
//!
//! The keys never appear in `Debug` output, logs or errors. MACs are computed by `ring` and compared in constant time.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use ring::hmac;

use crate::config::Secret;

/// Size of the random nonce a sealed request carries, so that every request (and therefore the reply bound to it)
/// is unique even when the payload repeats.
pub const NONCE_LEN: usize = 16;

/// Size of a MAC (HMAC-SHA256): the batch trailer and the request/reply envelopes carry one. Defined here, with the
/// keys that make it, so that the wire format ([`crate::codec::MAC_LEN`]) depends on authentication and not the
/// other way round.
pub const MAC_LEN: usize = 32;

/// Domain separation: request/reply MAC inputs start with these labels, batch MAC inputs with the version byte (1),
/// so a MAC made for one kind of message is never valid for another.
const REQUEST_LABEL: &[u8] = b"agora request v1\0";
const REPLY_LABEL: &[u8] = b"agora reply v1\0";

/// Why a message failed authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// A key is configured but the message carries no MAC (it comes from a node without the key, or is forged).
    #[error("the message carries no MAC")]
    Missing,
    /// The MAC matches none of the configured keys (another key, a forgery, or corruption).
    #[error("the message's MAC matches none of the cluster keys")]
    Mismatch,
}

/// The cluster keys, ready to use: HMAC-SHA256 keys derived once at start, so signing a batch costs one HMAC and no
/// key setup. Signs with the first key, verifies against all (rotation).
pub struct Keyring {
    /// Never empty.
    keys: Vec<hmac::Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({} key(s), <redacted>)", self.keys.len())
    }
}

impl Keyring {
    /// A keyring from raw secrets, the first one signing; `None` when there is none (authentication off). Any length
    /// is accepted here; the configuration requires at least 16 bytes.
    pub fn new<I>(secrets: I) -> Option<Keyring>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let keys: Vec<hmac::Key> = secrets
            .into_iter()
            .map(|secret| hmac::Key::new(hmac::HMAC_SHA256, secret.as_ref()))
            .collect();
        (!keys.is_empty()).then_some(Keyring { keys })
    }

    /// The keyring for `[cluster] key` (a string or a list), `None` when the key is not set.
    pub fn from_config(keys: &[Secret]) -> Option<Keyring> {
        Keyring::new(keys.iter().map(|k| k.expose().as_bytes()))
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a keyring holds at least one key (clippy wants the pair).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The MAC of `bytes` with the signing (first) key.
    pub fn sign(&self, bytes: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = [0; MAC_LEN];
        if let Some(key) = self.keys.first() {
            mac.copy_from_slice(hmac::sign(key, bytes).as_ref());
        }
        mac
    }

    /// Checks `mac` against `bytes` with every key, in constant time per key.
    pub fn verify(&self, bytes: &[u8], mac: &[u8]) -> Result<(), MacError> {
        if self.keys.iter().any(|key| hmac::verify(key, bytes, mac).is_ok()) {
            Ok(())
        } else {
            Err(MacError::Mismatch)
        }
    }

    /// Seals a request: `payload || nonce || MAC`. Returns the sealed bytes and the request's MAC, which the reply
    /// must be bound to ([`Keyring::open_reply`]).
    pub fn seal_request(&self, name: &str, payload: &[u8]) -> (Bytes, [u8; MAC_LEN]) {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut sealed = BytesMut::with_capacity(payload.len() + NONCE_LEN + MAC_LEN);
        sealed.put_slice(payload);
        sealed.put_slice(&nonce);
        let mac = self.sign(&mac_input(REQUEST_LABEL, name, &[], &sealed));
        sealed.put_slice(&mac);
        (sealed.freeze(), mac)
    }

    /// Opens a sealed request: returns the payload and the request's MAC (to seal the reply with).
    pub fn open_request(&self, name: &str, sealed: &Bytes) -> Result<(Bytes, [u8; MAC_LEN]), MacError> {
        let signed_len = sealed.len().checked_sub(MAC_LEN).ok_or(MacError::Missing)?;
        let payload_len = signed_len.checked_sub(NONCE_LEN).ok_or(MacError::Missing)?;
        let (signed, mac) = sealed.split_at(signed_len);
        self.verify(&mac_input(REQUEST_LABEL, name, &[], signed), mac)?;
        let mut request_mac = [0; MAC_LEN];
        request_mac.copy_from_slice(mac);
        Ok((sealed.slice(..payload_len), request_mac))
    }

    /// Seals a reply to the request whose MAC is `request_mac`: `payload || MAC`.
    pub fn seal_reply(&self, name: &str, request_mac: &[u8; MAC_LEN], payload: &[u8]) -> Bytes {
        let mac = self.sign(&mac_input(REPLY_LABEL, name, request_mac, payload));
        let mut sealed = BytesMut::with_capacity(payload.len() + MAC_LEN);
        sealed.put_slice(payload);
        sealed.put_slice(&mac);
        sealed.freeze()
    }

    /// Opens a sealed reply to the request whose MAC is `request_mac`, returning its payload.
    pub fn open_reply(&self, name: &str, request_mac: &[u8; MAC_LEN], sealed: &Bytes) -> Result<Bytes, MacError> {
        let payload_len = sealed.len().checked_sub(MAC_LEN).ok_or(MacError::Missing)?;
        let (payload, mac) = sealed.split_at(payload_len);
        self.verify(&mac_input(REPLY_LABEL, name, request_mac, payload), mac)?;
        Ok(sealed.slice(..payload_len))
    }
}

/// `label || len(name) as u32 BE || name || bound || body`: the length prefix keeps `name` and `body` from running
/// into each other. Request/reply payloads are small and rare, so one copy is fine.
fn mac_input(label: &[u8], name: &str, bound: &[u8], body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(label.len() + 4 + name.len() + bound.len() + body.len());
    input.extend_from_slice(label);
    input.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_be_bytes());
    input.extend_from_slice(name.as_bytes());
    input.extend_from_slice(bound);
    input.extend_from_slice(body);
    input
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_batch, BatchEncoder, FLAG_MAC, HEADER_LEN};
    use crate::event::{Event, NodeId};
    use proptest::prelude::*;
    use std::sync::Arc;

    const K1: &[u8] = b"first cluster key, 32 bytes long";
    const K2: &[u8] = b"second cluster key";

    fn ring(keys: &[&[u8]]) -> Arc<Keyring> {
        Arc::new(Keyring::new(keys).expect("at least one key"))
    }

    fn signed_batch(keyring: &Arc<Keyring>, first_seq: u64, base: u64, events: &[(String, Vec<u8>)]) -> Bytes {
        let node = NodeId::new(7).expect("non-zero");
        let mut enc = BatchEncoder::new(node, 0xfeed).with_keyring(Some(keyring.clone()));
        enc.begin(first_seq, base);
        for (i, (name, data)) in events.iter().enumerate() {
            let event = Event::Custom {
                name: name.clone(),
                data: Bytes::from(data.clone()),
            };
            enc.push_event(&event, base + i as u64);
        }
        enc.finish()
    }

    /// Whether a receiver with `keyring` would read these bytes.
    fn accepted(keyring: &Keyring, bytes: &[u8]) -> bool {
        decode_batch(bytes).is_ok_and(|reader| keyring.verify_batch(&reader).is_ok())
    }

    fn arb_events() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
        prop::collection::vec((".{0,12}", prop::collection::vec(any::<u8>(), 0..40)), 0..6)
    }

    #[test]
    fn a_signed_batch_has_the_flag_and_a_trailer_and_decodes_as_before() {
        let k = ring(&[K1]);
        let events = vec![("x".to_string(), vec![1, 2, 3])];
        let signed = signed_batch(&k, 5, 1_000, &events);
        let mut plain = BatchEncoder::new(NodeId::new(7).expect("non-zero"), 0xfeed);
        plain.begin(5, 1_000);
        plain.push_event(
            &Event::Custom {
                name: "x".into(),
                data: Bytes::from_static(&[1, 2, 3]),
            },
            1_000,
        );
        let plain = plain.finish();
        assert_eq!(signed.len(), plain.len() + MAC_LEN, "the overhead is the trailer alone");
        assert_eq!(signed[1], FLAG_MAC);
        assert_eq!(signed[HEADER_LEN..signed.len() - MAC_LEN], plain[HEADER_LEN..]);
        let reader = decode_batch(&signed).expect("decodes");
        assert_eq!(reader.mac(), Some(&k.sign(&signed[..signed.len() - MAC_LEN])[..]));
        assert_eq!(k.verify_batch(&reader), Ok(()));
        assert_eq!(reader.count(), 1);
        // Without the flag there is no MAC to check.
        assert_eq!(
            k.verify_batch(&decode_batch(&plain).expect("decodes")),
            Err(MacError::Missing)
        );
    }

    #[test]
    fn the_encoder_budgets_for_the_trailer() {
        let k = ring(&[K1]);
        let mut enc = BatchEncoder::new(NodeId::new(1).expect("non-zero"), 1).with_keyring(Some(k));
        enc.begin(0, 0);
        assert_eq!(enc.len(), HEADER_LEN + MAC_LEN);
        let event = Event::Custom {
            name: "n".into(),
            data: Bytes::from(vec![0; 10]),
        };
        assert!(enc.push_event_within(&event, 0, 1_000));
        let max = enc.len();
        assert!(
            !enc.push_event_within(&event, 0, max + 10),
            "would not fit with the trailer"
        );
        let batch = enc.finish();
        assert_eq!(batch.len(), max, "len() announced the final size");
    }

    #[test]
    fn keys_never_show_in_debug() {
        let k = Keyring::new([K1, K2]).expect("keys");
        let shown = format!("{k:?}");
        assert!(!shown.contains("cluster key"), "{shown}");
        assert!(shown.contains("2 key"), "{shown}");
        let enc = BatchEncoder::new(NodeId::new(1).expect("non-zero"), 1).with_keyring(Some(Arc::new(k)));
        assert!(!format!("{enc:?}").contains("cluster key"));
        assert!(
            Keyring::new(Vec::<Vec<u8>>::new()).is_none(),
            "no key: authentication off"
        );
    }

    #[test]
    fn rotation_signs_with_the_first_key_and_accepts_any() {
        let old = ring(&[K1]);
        let both = ring(&[K2, K1]);
        let new = ring(&[K2]);
        let from_old = signed_batch(&old, 0, 1, &[]);
        let from_both = signed_batch(&both, 0, 1, &[]);
        assert!(accepted(&both, &from_old));
        assert!(!accepted(&old, &from_both), "signed with k2, which [k1] does not know");
        assert!(accepted(&new, &from_both));
        assert!(!accepted(&new, &from_old));
    }

    #[test]
    fn request_reply_envelopes_bind_the_reply_to_its_request() {
        let k = ring(&[K1]);
        let (request, mac) = k.seal_request("snapshot", b"me");
        assert_eq!(request.len(), 2 + NONCE_LEN + MAC_LEN);
        let (payload, got_mac) = k.open_request("snapshot", &request).expect("opens");
        assert_eq!((&payload[..], got_mac), (&b"me"[..], mac));
        assert_eq!(
            k.open_request("other", &request),
            Err(MacError::Mismatch),
            "bound to the handler"
        );
        let (again, _) = k.seal_request("snapshot", b"me");
        assert_ne!(again, request, "a fresh nonce every time");

        let reply = k.seal_reply("snapshot", &mac, b"state");
        assert_eq!(&k.open_reply("snapshot", &mac, &reply).expect("opens")[..], b"state");
        let (_, other_mac) = k.seal_request("snapshot", b"me");
        assert_eq!(
            k.open_reply("snapshot", &other_mac, &reply),
            Err(MacError::Mismatch),
            "an old reply does not answer a new request"
        );
        assert_eq!(
            k.open_reply("snapshot", &mac, &Bytes::from_static(b"short")),
            Err(MacError::Missing)
        );
        assert_eq!(
            ring(&[K2]).open_reply("snapshot", &mac, &reply),
            Err(MacError::Mismatch),
            "another key"
        );
        // A signed batch is never a valid request or reply (domain separation).
        let batch = signed_batch(&k, 0, 1, &[]);
        assert!(k.open_request("snapshot", &batch).is_err());
    }

    proptest! {
        #[test]
        fn signed_batches_verify(seq in any::<u64>(), base in any::<u64>(), events in arb_events()) {
            let k = ring(&[K1]);
            let batch = signed_batch(&k, seq, base, &events);
            prop_assert!(accepted(&k, &batch));
            prop_assert!(accepted(&ring(&[K2, K1]), &batch), "any key of the ring verifies");
            let mut reader = decode_batch(&batch).expect("decodes");
            prop_assert_eq!(reader.header().count as usize, events.len());
            prop_assert!(reader.all(|r| r.is_ok()));
        }

        #[test]
        fn any_flipped_bit_is_rejected(events in arb_events(), bit in any::<prop::sample::Index>()) {
            let k = ring(&[K1]);
            let mut batch = signed_batch(&k, 1, 2, &events).to_vec();
            let bit = bit.index(batch.len() * 8);
            batch[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(!accepted(&k, &batch));
        }

        #[test]
        fn any_truncation_is_rejected(events in arb_events(), cut in any::<prop::sample::Index>()) {
            let k = ring(&[K1]);
            let batch = signed_batch(&k, 1, 2, &events);
            let len = cut.index(batch.len());
            prop_assert!(!accepted(&k, &batch[..len]));
        }

        #[test]
        fn another_key_is_rejected(events in arb_events(), other in prop::collection::vec(any::<u8>(), 16..64)) {
            prop_assume!(other != K1);
            let batch = signed_batch(&ring(&[K1]), 1, 2, &events);
            let reader = decode_batch(&batch).expect("decodes");
            prop_assert_eq!(ring(&[&other]).verify_batch(&reader), Err(MacError::Mismatch));
        }

        #[test]
        fn sealed_requests_and_replies_reject_any_flipped_bit(
            payload in prop::collection::vec(any::<u8>(), 0..64),
            bit in any::<prop::sample::Index>(),
        ) {
            let k = ring(&[K1]);
            let (request, mac) = k.seal_request("snapshot", &payload);
            let (opened, _) = k.open_request("snapshot", &request).expect("opens");
            prop_assert_eq!(&opened[..], &payload[..]);
            let mut bad = request.to_vec();
            let at = bit.index(bad.len() * 8);
            bad[at / 8] ^= 1 << (at % 8);
            prop_assert!(k.open_request("snapshot", &Bytes::from(bad)).is_err());

            let reply = k.seal_reply("snapshot", &mac, &payload);
            let mut bad = reply.to_vec();
            let at = bit.index(bad.len() * 8);
            bad[at / 8] ^= 1 << (at % 8);
            prop_assert!(k.open_reply("snapshot", &mac, &Bytes::from(bad)).is_err());
        }
    }
}
