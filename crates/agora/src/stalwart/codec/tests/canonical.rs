//! The canonical form of every event, and properties over arbitrary events and bytes.

use super::malformed::mixed_batch;
use super::versions::only_in;
use super::*;

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
