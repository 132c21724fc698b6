//! The Stalwart codec against hand-computed bytes from the reference (never from the encoder), the version gates at
//! their boundaries, hostile input, and properties.

use super::*;
use crate::stalwart::error::Unsupported;
use crate::stalwart::event::CacheInvalidation;
use crate::stalwart::object_type::ObjectType;
use proptest::prelude::*;

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

/// One event of each 0.15-only and each 0.16-only kind.
fn only_in(is_0_15: bool) -> Vec<StalwartEvent> {
    use StalwartEvent as E;
    if is_0_15 {
        vec![
            E::InvalidateAccessTokens(vec![1]),
            E::InvalidateGroupwareCache(vec![]),
            E::ReloadSettings,
            E::ReloadBlockedIps,
            E::ReloadPushServers { account_id: 1 },
            E::ReloadSpamFilter,
        ]
    } else {
        vec![
            E::PushServerUpdate { account_id: 1 },
            E::RegistryInsert {
                object: ObjectType(1),
                id: 1,
            },
            E::RegistryDelete {
                object: ObjectType(1),
                id: 1,
            },
            E::RegistryReload { object: ObjectType(1) },
            E::CacheInvalidate(vec![]),
            E::CacheInvalidateAll,
            E::CacheInvalidateNegative,
            E::MtaQueueStatus { running: true },
            E::MtaQueueStatus { running: false },
            E::QueueRefresh,
        ]
    }
}

#[test]
fn events_of_the_other_catalogue_are_refused() {
    for event in only_in(true) {
        let refused = Unsupported::Only0_15 {
            event: event.kind(),
            version: V16,
        };
        assert_eq!(event.check_supported(V16), Err(refused.clone()));
        assert_eq!(
            encode_batch(V16, 1, &[StalwartEvent::CacheInvalidateAll, event.clone()]),
            Err(EncodeError::Unsupported {
                index: 1,
                source: refused
            })
        );
        assert_eq!(event.check_supported(V15), Ok(()));
    }
    for event in only_in(false) {
        assert_eq!(
            event.check_supported(V15),
            Err(Unsupported::Only0_16 {
                event: event.kind(),
                version: V15
            })
        );
        assert_eq!(event.check_supported(V16), Ok(()));
    }
    assert_eq!(
        StalwartEvent::ReloadSettings
            .check_supported(V16)
            .map_err(|e| e.to_string()),
        Err("ReloadSettings is a Stalwart 0.15-only event; Stalwart 0.16.18 does not have it".into())
    );
}

/// A `CacheInvalidate` holding one item.
fn invalidate(item: CacheInvalidation) -> StalwartEvent {
    StalwartEvent::CacheInvalidate(vec![item])
}

#[test]
fn queue_refresh_needs_0_16_12() {
    let v11 = StalwartVersion::v0_16(11);
    let refused = StalwartEvent::QueueRefresh.check_supported(v11);
    assert_eq!(
        refused,
        Err(Unsupported::EventTooNew {
            event: "QueueRefresh",
            since: StalwartVersion::v0_16(12),
            version: v11
        })
    );
    assert_eq!(
        refused.map_err(|e| e.to_string()),
        Err("QueueRefresh first appeared in Stalwart 0.16.12; Stalwart 0.16.11 cannot decode it".into())
    );
    assert!(encode_batch(v11, 1, &[StalwartEvent::QueueRefresh]).is_err());
    assert_eq!(
        StalwartEvent::QueueRefresh.check_supported(StalwartVersion::v0_16(12)),
        Ok(())
    );
    let bytes = hex("01 08 0c 08");
    let old = decode_batch(v11, &bytes).expect("node id");
    assert_eq!(old.events, vec![StalwartEvent::CacheInvalidateAll]);
    assert_eq!(
        old.error,
        Some(DecodeError {
            offset: 2,
            kind: DecodeErrorKind::UnknownTag(12)
        })
    );
    let new = decode_batch(StalwartVersion::v0_16(12), &bytes).expect("node id");
    assert_eq!(new.error, None);
    assert_eq!(new.events.len(), 3);
}

#[test]
fn email_negative_needs_0_16_10() {
    let event = invalidate(CacheInvalidation::EmailNegative {
        domain_id: 1,
        local_part_hash: 2,
    });
    let v9 = StalwartVersion::v0_16(9);
    assert_eq!(
        event.check_supported(v9),
        Err(Unsupported::MarkerTooNew {
            marker: "EmailNegative",
            since: StalwartVersion::v0_16(10),
            version: v9
        })
    );
    // 0.16.10 and 0.16.11 have marker 10 (the reference's version table), though not tag 12 or marker 11.
    for patch in [10, 11] {
        let version = StalwartVersion::v0_16(patch);
        assert_eq!(event.check_supported(version), Ok(()));
        let bytes = encode_batch(version, 1, std::slice::from_ref(&event)).expect("encodes");
        assert_eq!(bytes, hex("01 07 01 0a 01 02"));
    }
    let bytes = hex("01 07 01 0a 01 02");
    assert_eq!(
        decode_batch(v9, &bytes).map(|b| b.error),
        Ok(Some(DecodeError {
            offset: 3,
            kind: DecodeErrorKind::UnknownMarker(10)
        }))
    );
    assert_eq!(
        decode_batch(StalwartVersion::v0_16(10), &bytes).map(|b| b.events),
        Ok(vec![event])
    );
}

#[test]
fn domain_negative_needs_0_16_18() {
    let event = invalidate(CacheInvalidation::DomainNegative);
    let v17 = StalwartVersion::v0_16(17);
    assert_eq!(
        event.check_supported(v17).map_err(|e| e.to_string()),
        Err(
            "the DomainNegative cache marker first appeared in Stalwart 0.16.18; Stalwart 0.16.17 cannot decode it"
                .into()
        )
    );
    assert!(encode_batch(v17, 1, std::slice::from_ref(&event)).is_err());
    assert!(invalidate(CacheInvalidation::DomainNegative)
        .check_supported(StalwartVersion::v0_16(11))
        .is_err());
    let bytes = hex("01 07 01 0b 00");
    assert_eq!(
        decode_batch(v17, &bytes).map(|b| b.error.map(|e| e.kind)),
        Ok(Some(DecodeErrorKind::UnknownMarker(11)))
    );
    assert_eq!(decode_batch(V16, &bytes).map(|b| b.events), Ok(vec![event]));
    // The u32 after marker 11 is read and discarded, whatever it holds.
    assert_eq!(
        decode_batch(V16, &hex("01 07 01 0b 05")).map(|b| b.events),
        Ok(vec![invalidate(CacheInvalidation::DomainNegative)])
    );
}

#[test]
fn unknown_object_types_are_refused() {
    let event = StalwartEvent::RegistryReload {
        object: ObjectType(117),
    };
    assert_eq!(
        event.check_supported(V16),
        Err(Unsupported::UnknownObjectType {
            event: "RegistryReload",
            object: 117,
            version: V16
        })
    );
    for (bytes, id) in [("01 06 75", 117), ("01 04 ff ff 03 00", u16::MAX), ("01 05 75 00", 117)] {
        assert_eq!(
            decode_batch(V16, &hex(bytes)).map(|b| b.error),
            Ok(Some(DecodeError {
                offset: 2,
                kind: DecodeErrorKind::ObjectTypeOutOfRange(id)
            })),
            "{bytes}"
        );
    }
}

#[test]
fn the_message_that_crashes_stalwart_is_an_error() {
    // CalendarAlert whose uid declares 2^62 bytes: 15 bytes in all.
    let bytes = hex("01 01 00 00 00 80 80 80 80 80 80 80 80 40 00");
    assert_eq!(bytes.len(), 15);
    for version in [V15, V16] {
        let batch = decode_batch(version, &bytes).expect("node id");
        assert_eq!(batch.events, vec![]);
        let error = batch.error.expect("refused");
        assert_eq!(
            error,
            DecodeError {
                offset: 5,
                kind: DecodeErrorKind::LengthBeyondInput {
                    field: "uid",
                    declared: 1 << 62,
                    remaining: 1
                }
            }
        );
        assert_eq!(
            error.to_string(),
            "the uid declares 4611686018427387904 bytes but only 1 remain (at byte 5)"
        );
    }
}

#[test]
fn huge_counts_are_errors() {
    let cases = [
        (V16, format!("01 07 {U64_MAX}"), 0),
        (V16, format!("01 07 {U64_MAX} 00 00"), 2),
        (V15, format!("01 03 {U64_MAX}"), 0),
        (V15, format!("01 04 {U64_MAX} 01"), 1),
    ];
    for (version, bytes, remaining) in cases {
        let batch = decode_batch(version, &hex(&bytes)).expect("node id");
        let field = if version.is_0_15() {
            "account id count"
        } else {
            "cache invalidation count"
        };
        assert_eq!(
            batch.error,
            Some(DecodeError {
                offset: 2,
                kind: DecodeErrorKind::CountBeyondInput {
                    field,
                    declared: u64::MAX,
                    remaining
                }
            }),
            "{bytes}"
        );
    }
    // A cache count just above what two-byte items could fill.
    assert!(matches!(
        decode_batch(V16, &hex("01 07 02 00 00 00")).map(|b| b.error.map(|e| e.kind)),
        Ok(Some(DecodeErrorKind::CountBeyondInput { declared: 2, .. }))
    ));
}

#[test]
fn node_ids_beyond_u16_are_errors() {
    let refuse = |bytes: &str| decode_batch(V16, &hex(bytes)).map_err(|e| e.kind);
    assert_eq!(
        refuse("80 80 04"),
        Err(DecodeErrorKind::TooManyBits { field: "node id" })
    );
    assert_eq!(
        refuse("80 80 04 08"),
        Err(DecodeErrorKind::TooManyBits { field: "node id" })
    );
    assert_eq!(
        refuse("80 80 80 00"),
        Err(DecodeErrorKind::Overlong { field: "node id" })
    );
    assert_eq!(refuse(""), Err(DecodeErrorKind::Truncated { field: "node id" }));
    assert_eq!(refuse("80"), Err(DecodeErrorKind::Truncated { field: "node id" }));
}

#[test]
fn non_minimal_leb128_is_accepted() {
    assert_eq!(
        decode_batch(V16, &hex("80 00 03 80 80 80 80 00 07 80 00")),
        Ok(DecodedBatch {
            node_id: 0,
            events: vec![
                StalwartEvent::PushServerUpdate { account_id: 0 },
                StalwartEvent::CacheInvalidate(vec![])
            ],
            error: None
        })
    );
}

#[test]
fn bad_fields_stop_the_batch_where_they_are() {
    let cases = [
        (V16, "01 08 0d 08", 2, DecodeErrorKind::UnknownTag(13)),
        (V16, "01 0e", 1, DecodeErrorKind::UnknownTag(14)),
        (V16, "01 ff", 1, DecodeErrorKind::UnknownTag(255)),
        (V15, "01 09", 1, DecodeErrorKind::UnknownTag(9)),
        (V15, "01 0c", 1, DecodeErrorKind::UnknownTag(12)),
        (V16, "01 07 01 0c 00", 3, DecodeErrorKind::UnknownMarker(12)),
        (V16, "01 07 02 00 00 ff 00", 5, DecodeErrorKind::UnknownMarker(255)),
        (
            V16,
            "01 01 00 00 00 01 ff 00",
            6,
            DecodeErrorKind::InvalidUtf8 { field: "uid" },
        ),
        (
            V16,
            "01 01 00 00 00 00 02 c3 28",
            7,
            DecodeErrorKind::InvalidUtf8 { field: "alert id" },
        ),
        (
            V16,
            "01 03 ff ff ff ff 1f",
            2,
            DecodeErrorKind::TooManyBits { field: "account id" },
        ),
        (
            V16,
            "01 03 80 80 80 80 80 00",
            2,
            DecodeErrorKind::Overlong { field: "account id" },
        ),
        (
            V16,
            "01 00 00 00 80",
            4,
            DecodeErrorKind::Truncated { field: "account id" },
        ),
    ];
    for (version, bytes, offset, kind) in cases {
        let batch = decode_batch(version, &hex(bytes)).expect("node id");
        assert_eq!(batch.error, Some(DecodeError { offset, kind }), "{version} {bytes}");
        let expected_events = if bytes.starts_with("01 08") {
            vec![StalwartEvent::CacheInvalidateAll]
        } else {
            vec![]
        };
        assert_eq!(batch.events, expected_events, "{bytes}");
    }
}

/// A batch with events of every shape, and the offset where each event ends.
fn mixed_batch() -> (Vec<StalwartEvent>, Vec<u8>, Vec<usize>) {
    use StalwartEvent as E;
    let events = vec![
        E::StateChange {
            account_id: 300,
            change_id: u64::MAX,
            types: 5,
        },
        E::CalendarAlert {
            account_id: 1,
            event_id: 2,
            recurrence_id: Some(-1),
            uid: "uïd".into(),
            alert_id: "a".into(),
        },
        E::CacheInvalidate(vec![
            CacheInvalidation::Account(200),
            CacheInvalidation::EmailNegative {
                domain_id: 1,
                local_part_hash: 2,
            },
            CacheInvalidation::DomainNegative,
        ]),
        E::RegistryInsert {
            object: ObjectType(116),
            id: 1 << 40,
        },
        E::MtaQueueStatus { running: false },
        E::EmailPush {
            account_id: 1,
            email_id: 2,
            change_id: 3,
        },
    ];
    let bytes = encode_batch(V16, 16384, &events).expect("encodes");
    let ends = (1..=events.len())
        .map(|n| {
            encode_batch(V16, 16384, &events[..n])
                .map(|b| b.len())
                .expect("encodes")
        })
        .collect();
    (events, bytes, ends)
}

#[test]
fn every_truncation_keeps_the_events_before_it() {
    let (events, bytes, ends) = mixed_batch();
    assert_eq!(decode_batch(V16, &bytes).map(|b| b.events), Ok(events.clone()));
    for len in 0..bytes.len() {
        let prefix = bytes.get(..len).expect("in range");
        let Ok(batch) = decode_batch(V16, prefix) else {
            assert!(len < 3, "only the node id can fail the whole batch ({len})");
            continue;
        };
        let complete = ends.iter().filter(|&&end| end <= len).count();
        assert_eq!(batch.events, events[..complete], "prefix of {len}");
        let at_boundary = len == 3 || ends.contains(&len);
        assert_eq!(batch.error.is_none(), at_boundary, "prefix of {len}: {:?}", batch.error);
        if let Some(error) = batch.error {
            assert!(
                matches!(
                    error.kind,
                    DecodeErrorKind::Truncated { .. }
                        | DecodeErrorKind::LengthBeyondInput { .. }
                        | DecodeErrorKind::CountBeyondInput { .. }
                ),
                "prefix of {len}: {error}"
            );
            assert!(error.offset <= len);
        }
    }
}

#[test]
fn kinds_are_the_variant_names_and_canonical_codes_their_index() {
    let mut samples = only_in(true);
    samples.extend(only_in(false));
    samples.extend([
        StalwartEvent::StateChange {
            account_id: 1,
            change_id: 2,
            types: 3,
        },
        StalwartEvent::CalendarAlert {
            account_id: 1,
            event_id: 2,
            recurrence_id: None,
            uid: "u".into(),
            alert_id: "a".into(),
        },
        StalwartEvent::EmailPush {
            account_id: 1,
            email_id: 2,
            change_id: 3,
        },
    ]);
    for kind in StalwartEvent::KINDS {
        assert!(samples.iter().any(|e| e.kind() == *kind), "{kind}");
    }
    for event in &samples {
        let mut out = Vec::new();
        encode_canonical(event, &mut out);
        let code = usize::from(out[0]);
        assert_eq!(StalwartEvent::KINDS.get(code), Some(&event.kind()), "{event:?}");
        assert_eq!(decode_canonical(&out).as_ref(), Ok(event));
    }
}

#[test]
fn canonical_bytes_are_fixed() {
    use StalwartEvent as E;
    let cases = [
        (
            E::StateChange {
                account_id: 3,
                change_id: 1,
                types: 1 << 22,
            },
            "00 01 80 80 80 02 03",
        ),
        (
            E::CalendarAlert {
                account_id: 1,
                event_id: 2,
                recurrence_id: Some(-1),
                uid: "é".into(),
                alert_id: String::new(),
            },
            "01 01 02 ff ff ff ff ff ff ff ff ff 01 02 c3 a9 00",
        ),
        (
            E::EmailPush {
                account_id: 1,
                email_id: 2,
                change_id: 3,
            },
            "02 01 02 03",
        ),
        (E::PushServerUpdate { account_id: 128 }, "03 80 01"),
        (
            E::RegistryInsert {
                object: ObjectType(116),
                id: 1,
            },
            "04 74 01",
        ),
        (
            E::RegistryDelete {
                object: ObjectType(60000),
                id: 0,
            },
            "05 e0 d4 03 00",
        ),
        (
            E::RegistryReload {
                object: ObjectType(117),
            },
            "06 75",
        ),
        (
            E::CacheInvalidate(vec![
                CacheInvalidation::TenantLogo(1),
                CacheInvalidation::EmailNegative {
                    domain_id: 2,
                    local_part_hash: 3,
                },
                CacheInvalidation::DomainNegative,
            ]),
            "07 03 09 01 0a 02 03 0b 00",
        ),
        (E::CacheInvalidateAll, "08"),
        (E::CacheInvalidateNegative, "09"),
        (E::MtaQueueStatus { running: true }, "0a 01"),
        (E::MtaQueueStatus { running: false }, "0a 00"),
        (E::QueueRefresh, "0b"),
        (E::InvalidateAccessTokens(vec![1, 128]), "0c 02 01 80 01"),
        (E::InvalidateGroupwareCache(vec![]), "0d 00"),
        (E::ReloadSettings, "0e"),
        (E::ReloadBlockedIps, "0f"),
        (E::ReloadPushServers { account_id: 9 }, "10 09"),
        (E::ReloadSpamFilter, "11"),
    ];
    for (event, bytes) in cases {
        let mut out = Vec::new();
        encode_canonical(&event, &mut out);
        assert_eq!(out, hex(bytes), "{event:?}");
        assert_eq!(decode_canonical(&hex(bytes)), Ok(event));
    }
}

#[test]
fn canonical_refusals() {
    let refuse = |bytes: &str| decode_canonical(&hex(bytes)).map_err(|e| (e.offset, e.kind));
    assert_eq!(refuse(""), Err((0, DecodeErrorKind::Truncated { field: "kind code" })));
    assert_eq!(refuse("12"), Err((0, DecodeErrorKind::UnknownKind(18))));
    assert_eq!(refuse("0a 02"), Err((1, DecodeErrorKind::InvalidBool(2))));
    assert_eq!(refuse("08 00"), Err((1, DecodeErrorKind::TrailingBytes(1))));
    assert_eq!(refuse("07 01 0c 00"), Err((2, DecodeErrorKind::UnknownMarker(12))));
    assert!(matches!(
        refuse("01 00 00 00 80 80 80 80 80 80 80 80 40"),
        Err((4, DecodeErrorKind::LengthBeyondInput { .. }))
    ));
    assert_eq!(decode_canonical_prefix(&hex("0a 01 08")).map(|(_, n)| n), Ok(2));
}

/// Any release agora knows, weighted towards the gate boundaries.
fn arb_version() -> impl Strategy<Value = StalwartVersion> {
    prop_oneof![
        (0u16..=5).prop_map(StalwartVersion::v0_15),
        (0u16..=20).prop_map(StalwartVersion::v0_16),
        prop::sample::select(vec![9u16, 10, 11, 12, 17, 18]).prop_map(StalwartVersion::v0_16),
    ]
}

/// Any cache invalidation.
fn arb_cache_item() -> impl Strategy<Value = CacheInvalidation> {
    use CacheInvalidation as C;
    prop_oneof![
        any::<u32>().prop_map(C::AccessToken),
        any::<u32>().prop_map(C::DavResources),
        any::<u32>().prop_map(C::Domain),
        any::<u32>().prop_map(C::Account),
        any::<u32>().prop_map(C::DkimSignature),
        any::<u32>().prop_map(C::Tenant),
        any::<u32>().prop_map(C::Role),
        any::<u32>().prop_map(C::List),
        any::<u32>().prop_map(C::DomainLogo),
        any::<u32>().prop_map(C::TenantLogo),
        (any::<u32>(), any::<u32>()).prop_map(|(domain_id, local_part_hash)| C::EmailNegative {
            domain_id,
            local_part_hash
        }),
        Just(C::DomainNegative),
    ]
}

/// Any object type id, mostly known ones.
fn arb_object() -> impl Strategy<Value = ObjectType> {
    prop_oneof![4 => 0u16..117, 1 => any::<u16>()].prop_map(ObjectType)
}

/// Any event, of every variant. `Some(0)` recurrence ids are left out: the wire cannot tell them from `None`.
fn arb_event() -> impl Strategy<Value = StalwartEvent> {
    use StalwartEvent as E;
    let recurrence = prop_oneof![
        Just(None),
        any::<i64>().prop_filter("0 is None", |v| *v != 0).prop_map(Some)
    ];
    prop_oneof![
        (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(account_id, change_id, types)| E::StateChange {
            account_id,
            change_id,
            types
        }),
        (any::<u32>(), any::<u32>(), recurrence, "\\PC{0,40}", ".{0,10}").prop_map(
            |(account_id, event_id, recurrence_id, uid, alert_id)| E::CalendarAlert {
                account_id,
                event_id,
                recurrence_id,
                uid,
                alert_id
            }
        ),
        (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(account_id, email_id, change_id)| E::EmailPush {
            account_id,
            email_id,
            change_id
        }),
        any::<u32>().prop_map(|account_id| E::PushServerUpdate { account_id }),
        (arb_object(), any::<u64>()).prop_map(|(object, id)| E::RegistryInsert { object, id }),
        (arb_object(), any::<u64>()).prop_map(|(object, id)| E::RegistryDelete { object, id }),
        arb_object().prop_map(|object| E::RegistryReload { object }),
        prop::collection::vec(arb_cache_item(), 0..6).prop_map(E::CacheInvalidate),
        Just(E::CacheInvalidateAll),
        Just(E::CacheInvalidateNegative),
        any::<bool>().prop_map(|running| E::MtaQueueStatus { running }),
        Just(E::QueueRefresh),
        prop::collection::vec(any::<u32>(), 0..6).prop_map(E::InvalidateAccessTokens),
        prop::collection::vec(any::<u32>(), 0..6).prop_map(E::InvalidateGroupwareCache),
        Just(E::ReloadSettings),
        Just(E::ReloadBlockedIps),
        any::<u32>().prop_map(|account_id| E::ReloadPushServers { account_id }),
        Just(E::ReloadSpamFilter),
    ]
}

proptest! {
    #[test]
    fn supported_events_round_trip_through_batches(
        version in arb_version(),
        node_id in any::<u16>(),
        events in prop::collection::vec(arb_event(), 1..=MAX_BATCH_EVENTS),
    ) {
        let events: Vec<_> = events.into_iter().filter(|e| e.check_supported(version).is_ok()).collect();
        prop_assume!(!events.is_empty());
        let bytes = encode_batch(version, node_id, &events).expect("supported events encode");
        prop_assert_eq!(decode_batch(version, &bytes), Ok(DecodedBatch { node_id, events, error: None }));
    }

    #[test]
    fn unsupported_events_are_never_encoded(version in arb_version(), event in arb_event()) {
        let encoded = encode_batch(version, 1, std::slice::from_ref(&event));
        prop_assert_eq!(encoded.is_ok(), event.check_supported(version).is_ok());
    }

    #[test]
    fn every_event_round_trips_canonically(event in arb_event(), tail in prop::collection::vec(any::<u8>(), 0..4)) {
        let mut out = Vec::new();
        encode_canonical(&event, &mut out);
        let len = out.len();
        prop_assert_eq!(decode_canonical(&out), Ok(event.clone()));
        out.extend(tail);
        prop_assert_eq!(decode_canonical_prefix(&out), Ok((event, len)));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        for version in [V15, StalwartVersion::v0_16(0), StalwartVersion::v0_16(11), V16] {
            if let Ok(batch) = decode_batch(version, &bytes) {
                // Whatever a release decodes, it could have been sent to it: re-encoding reproduces the events.
                for chunk in batch.events.chunks(MAX_BATCH_EVENTS) {
                    let again = encode_batch(version, batch.node_id, chunk).expect("decoded events are supported");
                    prop_assert_eq!(decode_batch(version, &again).map(|b| b.events), Ok(chunk.to_vec()));
                }
            }
        }
        let _ = decode_canonical(&bytes);
    }

    #[test]
    fn arbitrary_tails_after_a_valid_prefix_keep_the_prefix(
        tail in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let (events, mut bytes, _) = mixed_batch();
        bytes.extend(tail);
        let batch = decode_batch(V16, &bytes).expect("node id");
        prop_assert_eq!(batch.events.get(..events.len()), Some(&events[..]));
    }
}
