//! The Stalwart codec against hand-computed bytes from the reference (never from the encoder), the version gates at
//! their boundaries, hostile input, and properties.

use super::*;
use crate::stalwart::error::Unsupported;
use crate::stalwart::event::CacheInvalidation;
use crate::stalwart::object_type::ObjectType;
use proptest::prelude::*;

mod canonical;
mod malformed;
mod versions;

/// 0.15.5, the 0.15 release the reference was read from.
const V15: StalwartVersion = StalwartVersion::v0_15(5);
/// 0.16.18, the newest 0.16 format.
const V16: StalwartVersion = StalwartVersion::v0_16(18);

/// Bytes from whitespace-separated hex pairs.
fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|pair| u8::from_str_radix(pair, 16).expect("hex pair"))
        .collect()
}

/// `parts` concatenated: hex strings, and runs of one repeated byte for long strings.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const U32_MAX: &str = "ff ff ff ff 0f";
const U64_MAX: &str = "ff ff ff ff ff ff ff ff ff 01";
const BIT_63: &str = "80 80 80 80 80 80 80 80 80 01";

/// A calendar alert with a `len`-byte ASCII uid, and its bytes given the hand-computed LEB128 of `len`.
fn long_uid(len: usize, len_hex: &str) -> (StalwartEvent, Vec<u8>) {
    let event = StalwartEvent::CalendarAlert {
        account_id: 0,
        event_id: 0,
        recurrence_id: None,
        uid: "x".repeat(len),
        alert_id: String::new(),
    };
    let bytes = cat(&[&hex("01 01 00 00 00"), &hex(len_hex), &vec![b'x'; len], &hex("00")]);
    (event, bytes)
}

/// Every event of both catalogues with edge values: (release, node id, events, the exact message).
fn corpus() -> Vec<(StalwartVersion, u16, Vec<StalwartEvent>, Vec<u8>)> {
    use CacheInvalidation as C;
    use StalwartEvent as E;
    let mut corpus = Vec::new();
    let mut add =
        |version, node, events: Vec<StalwartEvent>, bytes: Vec<u8>| corpus.push((version, node, events, bytes));
    for version in [V15, V16] {
        add(
            version,
            1,
            vec![E::StateChange {
                account_id: 0,
                change_id: 0,
                types: 0,
            }],
            hex("01 00 00 00 00"),
        );
        add(
            version,
            1,
            vec![E::StateChange {
                account_id: u32::MAX,
                change_id: u64::MAX,
                types: 1 << 63,
            }],
            hex(&format!("01 00 {U64_MAX} {BIT_63} {U32_MAX}")),
        );
        add(
            version,
            1,
            vec![E::StateChange {
                account_id: 1,
                change_id: 2,
                types: 0x7f_ffff,
            }],
            hex("01 00 02 ff ff ff 03 01"),
        );
        add(
            version,
            1,
            vec![E::CalendarAlert {
                account_id: 1,
                event_id: 2,
                recurrence_id: None,
                uid: String::new(),
                alert_id: String::new(),
            }],
            hex("01 01 01 02 00 00 00"),
        );
        add(
            version,
            1,
            vec![E::CalendarAlert {
                account_id: u32::MAX,
                event_id: u32::MAX,
                recurrence_id: Some(1),
                uid: "é".into(),
                alert_id: "a€".into(),
            }],
            hex(&format!("01 01 {U32_MAX} {U32_MAX} 01 02 c3 a9 04 61 e2 82 ac")),
        );
        add(
            version,
            1,
            vec![E::CalendarAlert {
                account_id: 0,
                event_id: 0,
                recurrence_id: Some(-1),
                uid: "u".into(),
                alert_id: "v".into(),
            }],
            hex(&format!("01 01 00 00 {U64_MAX} 01 75 01 76")),
        );
        add(
            version,
            1,
            vec![E::CalendarAlert {
                account_id: 0,
                event_id: 0,
                recurrence_id: Some(i64::MIN),
                uid: String::new(),
                alert_id: String::new(),
            }],
            hex(&format!("01 01 00 00 {BIT_63} 00 00")),
        );
        for (len, len_hex) in [(127, "7f"), (128, "80 01"), (300, "ac 02")] {
            let (event, bytes) = long_uid(len, len_hex);
            add(version, 1, vec![event], bytes);
        }
        add(
            version,
            1,
            vec![E::EmailPush {
                account_id: 0,
                email_id: 0,
                change_id: 0,
            }],
            hex("01 02 00 00 00"),
        );
        add(
            version,
            1,
            vec![E::EmailPush {
                account_id: u32::MAX,
                email_id: u32::MAX,
                change_id: u64::MAX,
            }],
            hex(&format!("01 02 {U32_MAX} {U32_MAX} {U64_MAX}")),
        );
        // Every DataType bit, 0 (Email) to 22 (CalendarAlert).
        let bits = [
            "01",
            "02",
            "04",
            "08",
            "10",
            "20",
            "40",
            "80 01",
            "80 02",
            "80 04",
            "80 08",
            "80 10",
            "80 20",
            "80 40",
            "80 80 01",
            "80 80 02",
            "80 80 04",
            "80 80 08",
            "80 80 10",
            "80 80 20",
            "80 80 40",
            "80 80 80 01",
            "80 80 80 02",
        ];
        for (bit, bytes) in bits.iter().enumerate() {
            add(
                version,
                1,
                vec![E::StateChange {
                    account_id: 3,
                    change_id: 2,
                    types: 1 << bit,
                }],
                hex(&format!("01 00 02 {bytes} 03")),
            );
        }
    }
    // Node ids at the LEB128 boundaries.
    for (node, node_hex) in [
        (0, "00"),
        (127, "7f"),
        (128, "80 01"),
        (16383, "ff 7f"),
        (16384, "80 80 01"),
        (65535, "ff ff 03"),
    ] {
        add(V16, node, vec![E::CacheInvalidateAll], hex(&format!("{node_hex} 08")));
        add(V15, node, vec![E::ReloadSpamFilter], hex(&format!("{node_hex} 08")));
    }
    // The 0.16 catalogue.
    add(
        V16,
        1,
        vec![E::PushServerUpdate { account_id: 128 }],
        hex("01 03 80 01"),
    );
    add(
        V16,
        1,
        vec![E::RegistryInsert {
            object: ObjectType(0),
            id: 0,
        }],
        hex("01 04 00 00"),
    );
    add(
        V16,
        1,
        vec![E::RegistryInsert {
            object: ObjectType(116),
            id: u64::MAX,
        }],
        hex(&format!("01 04 74 {U64_MAX}")),
    );
    add(
        V16,
        1,
        vec![E::RegistryDelete {
            object: ObjectType(116),
            id: 300,
        }],
        hex("01 05 74 ac 02"),
    );
    add(
        V16,
        1,
        vec![E::RegistryDelete {
            object: ObjectType(0),
            id: 0,
        }],
        hex("01 05 00 00"),
    );
    add(
        V16,
        1,
        vec![E::RegistryReload { object: ObjectType(0) }],
        hex("01 06 00"),
    );
    add(
        V16,
        1,
        vec![E::RegistryReload {
            object: ObjectType(116),
        }],
        hex("01 06 74"),
    );
    add(V16, 1, vec![E::CacheInvalidate(vec![])], hex("01 07 00"));
    add(
        V16,
        1,
        vec![E::CacheInvalidate(vec![
            C::AccessToken(0),
            C::DavResources(1),
            C::Domain(127),
            C::Account(128),
            C::DkimSignature(u32::MAX),
            C::Tenant(5),
            C::Role(6),
            C::List(7),
            C::DomainLogo(8),
            C::TenantLogo(9),
            C::EmailNegative {
                domain_id: 10,
                local_part_hash: u32::MAX,
            },
            C::DomainNegative,
        ])],
        hex(&format!(
            "01 07 0c 00 00 01 01 02 7f 03 80 01 04 {U32_MAX} 05 05 06 06 07 07 08 08 09 09 0a 0a {U32_MAX} 0b 00"
        )),
    );
    add(V16, 1, vec![E::CacheInvalidateNegative], hex("01 09"));
    add(V16, 1, vec![E::MtaQueueStatus { running: true }], hex("01 0a"));
    add(V16, 1, vec![E::MtaQueueStatus { running: false }], hex("01 0b"));
    add(V16, 1, vec![E::QueueRefresh], hex("01 0c"));
    add(
        V16,
        1,
        vec![
            E::QueueRefresh,
            E::CacheInvalidateAll,
            E::PushServerUpdate { account_id: 2 },
        ],
        hex("01 0c 08 03 02"),
    );
    // The 0.15 catalogue.
    add(V15, 1, vec![E::InvalidateAccessTokens(vec![])], hex("01 03 00"));
    add(
        V15,
        1,
        vec![E::InvalidateAccessTokens(vec![0, 128, u32::MAX])],
        hex(&format!("01 03 03 00 80 01 {U32_MAX}")),
    );
    add(V15, 1, vec![E::InvalidateGroupwareCache(vec![1])], hex("01 04 01 01"));
    add(V15, 1, vec![E::ReloadSettings], hex("01 05"));
    add(V15, 1, vec![E::ReloadBlockedIps], hex("01 06"));
    add(V15, 1, vec![E::ReloadPushServers { account_id: 7 }], hex("01 07 07"));
    add(
        V15,
        1,
        vec![E::ReloadPushServers { account_id: u32::MAX }],
        hex(&format!("01 07 {U32_MAX}")),
    );
    // Full batches: 100 events.
    let pushes: Vec<_> = (0..100)
        .map(|i| E::EmailPush {
            account_id: i,
            email_id: 1,
            change_id: 2,
        })
        .collect();
    let mut bytes = hex("80 01");
    for i in 0..100u8 {
        bytes.extend([0x02, i, 0x01, 0x02]);
    }
    add(V15, 128, pushes.clone(), bytes.clone());
    add(V16, 128, pushes, bytes);
    add(
        V16,
        5,
        vec![E::CacheInvalidateAll; 100],
        cat(&[&hex("05"), &[0x08; 100]]),
    );
    corpus
}

#[test]
fn corpus_encodes_to_the_reference_bytes_and_back() {
    for (version, node_id, events, bytes) in corpus() {
        let encoded = encode_batch(version, node_id, &events);
        assert_eq!(encoded.as_ref(), Ok(&bytes), "{version} {events:?}");
        assert_eq!(
            decode_batch(version, &bytes),
            Ok(DecodedBatch {
                node_id,
                events: events.clone(),
                error: None
            }),
            "{version} {bytes:02x?}"
        );
    }
}

#[test]
fn corpus_covers_every_kind_and_marker() {
    let corpus = corpus();
    for kind in StalwartEvent::KINDS {
        assert!(
            corpus
                .iter()
                .any(|(_, _, events, _)| events.iter().any(|e| e.kind() == *kind)),
            "{kind} is missing from the corpus"
        );
    }
    for marker in CacheInvalidation::KINDS {
        let found = corpus.iter().flat_map(|(_, _, events, _)| events).any(|e| match e {
            StalwartEvent::CacheInvalidate(items) => items.iter().any(|i| i.kind() == *marker),
            _ => false,
        });
        assert!(found, "{marker} is missing from the corpus");
    }
}

#[test]
fn tags_mean_different_events_across_catalogues() {
    let eight = hex("01 08");
    assert_eq!(
        decode_batch(V15, &eight).map(|b| b.events),
        Ok(vec![StalwartEvent::ReloadSpamFilter])
    );
    assert_eq!(
        decode_batch(V16, &eight).map(|b| b.events),
        Ok(vec![StalwartEvent::CacheInvalidateAll])
    );
}

#[test]
fn some_zero_recurrence_is_none_on_the_wire() {
    let event = StalwartEvent::CalendarAlert {
        account_id: 0,
        event_id: 0,
        recurrence_id: Some(0),
        uid: String::new(),
        alert_id: String::new(),
    };
    let bytes = encode_batch(V16, 1, std::slice::from_ref(&event)).expect("encodes");
    assert_eq!(bytes, hex("01 01 00 00 00 00 00"));
}

#[test]
fn batch_sizes_are_refused_outside_1_to_100() {
    assert_eq!(encode_batch(V16, 1, &[]), Err(EncodeError::Empty));
    let events = vec![StalwartEvent::CacheInvalidateAll; 101];
    assert_eq!(
        encode_batch(V16, 1, &events),
        Err(EncodeError::TooManyEvents { count: 101 })
    );
    assert!(encode_batch(V16, 1, &events[..100]).is_ok());
    // A node id alone is an empty batch: Stalwart never sends one, but its decoder accepts it.
    assert_eq!(
        decode_batch(V16, &hex("07")),
        Ok(DecodedBatch {
            node_id: 7,
            events: vec![],
            error: None
        })
    );
}
