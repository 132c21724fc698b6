//! Which events each Stalwart release can carry, and the refusals of the others.

use super::*;

/// One event of each 0.15-only and each 0.16-only kind.
pub(super) fn only_in(is_0_15: bool) -> Vec<StalwartEvent> {
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
