//! Malformed input: errors where Stalwart would misread or crash, and batches cut where they fail.

use super::*;

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
pub(super) fn mixed_batch() -> (Vec<StalwartEvent>, Vec<u8>, Vec<usize>) {
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
