//! Properties over arbitrary events, records and batches, and the tag table's coverage of every event.

use super::*;

fn arb_network() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32)
            .prop_map(|(a, p)| IpNet::V4(Ipv4Net::new(a.into(), p).expect("valid v4 prefix")).trunc()),
        (any::<[u8; 16]>(), 0u8..=128)
            .prop_map(|(a, p)| IpNet::V6(Ipv6Net::new(a.into(), p).expect("valid v6 prefix")).trunc()),
    ]
}

fn arb_types() -> impl Strategy<Value = DataTypes> {
    prop_oneof![any::<u64>(), 0u64..(1 << 22)].prop_map(DataTypes::from_bits)
}

/// Mostly small numbers (the common one-byte varint case), sometimes anything.
fn arb_u64() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..200, any::<u64>()]
}

fn arb_u32() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..200, any::<u32>()]
}

fn arb_event() -> impl Strategy<Value = Event> {
    let reload = prop::sample::select(ReloadTarget::ALL.iter().map(|(t, _)| *t).collect::<Vec<_>>());
    let cache = prop::sample::select(CacheKind::ALL.iter().map(|(k, _)| *k).collect::<Vec<_>>());
    let small = prop_oneof![
        (arb_u32(), arb_u64(), arb_types()).prop_map(|(account_id, change_id, types)| {
            Event::StateChange {
                account_id,
                change_id,
                types,
            }
        }),
        (arb_u32(), arb_u32(), arb_u64()).prop_map(|(account_id, email_id, change_id)| {
            Event::EmailPush {
                account_id,
                email_id,
                change_id,
            }
        }),
        reload.prop_map(|target| Event::Reload { target }),
        Just(Event::CacheInvalidateAll {}),
        Just(Event::QueuePaused {}),
        Just(Event::QueueResumed {}),
        Just(Event::QueueRefresh {}),
        arb_network().prop_map(|network| Event::UnblockedIp { network }),
    ];
    let large = prop_oneof![
        (arb_u32(), arb_u32(), any::<String>(), prop::option::of(any::<i64>())).prop_map(
            |(account_id, event_id, alert_id, recurrence_id)| {
                Event::CalendarAlert {
                    account_id,
                    event_id,
                    alert_id,
                    recurrence_id,
                }
            }
        ),
        (
            (any::<String>(), arb_u32(), any::<String>(), arb_types()),
            (
                prop::option::of(any::<String>()),
                prop::option::of((any::<String>(), any::<String>())),
                prop::option::of(any::<u64>()),
                prop::option::of(any::<String>()),
                any::<bool>(),
            )
        )
            .prop_map(
                |(
                    (id, account_id, url, types),
                    (device_client_id, keys, expires_at_ms, verification_code, verified),
                )| {
                    Event::PushSubscriptionSet(Box::new(PushSubscription {
                        device_client_id,
                        keys: keys.map(|(p256dh, auth)| PushKeys { p256dh, auth }),
                        expires_at_ms,
                        verification_code,
                        verified,
                        ..PushSubscription::webhook(id, account_id, url, types)
                    }))
                }
            ),
        any::<String>().prop_map(|id| Event::PushSubscriptionRemoved { id }),
        (
            arb_network(),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<String>())
        )
            .prop_map(|(network, expires_at_ms, reason)| Event::BlockedIp {
                network,
                expires_at_ms,
                reason
            }),
        prop::collection::vec(any::<String>(), 0..5).prop_map(|domains| Event::CertificateRenewed { domains }),
        (cache, any::<String>()).prop_map(|(cache, key)| Event::CacheInvalidate { cache, key }),
        (
            prop::collection::vec(arb_u32(), 0..20),
            prop::option::of(any::<String>()),
            arb_u64(),
            arb_u64()
        )
            .prop_map(|(accounts, jti, revoked_at_ms, keep_until_ms)| Event::TokensRevoked {
                accounts,
                jti,
                revoked_at_ms,
                keep_until_ms,
            }),
        (any::<String>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(name, data)| {
            Event::Custom {
                name,
                data: Bytes::from(data),
            }
        }),
    ];
    prop_oneof![small, large]
}

fn arb_control() -> impl Strategy<Value = Control> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u64>(),
            // What a heartbeat may carry: at most 256 bytes (60 characters of up to 4 bytes).
            prop::option::of(".{0,60}"),
            prop::option::of(any::<u16>())
        )
            .prop_map(|(interval_ms, started_at_ms, http, stalwart_node_id)| {
                Control::Heartbeat(Heartbeat {
                    interval_ms,
                    started_at_ms,
                    http,
                    stalwart_node_id,
                })
            }),
        Just(Control::Leave),
    ]
}

fn arb_record() -> impl Strategy<Value = Record> {
    prop_oneof![4 => arb_event().prop_map(Record::Event), 1 => arb_control().prop_map(Record::Control)]
}

/// A batch description: node, instance, first seq, base time, and records with their time offsets.
type BatchSpec = (u16, u64, u64, u64, Vec<(Record, u64)>);

fn arb_batch() -> impl Strategy<Value = BatchSpec> {
    (
        1u16..=u16::MAX,
        any::<u64>(),
        any::<u64>(),
        0u64..=u64::MAX / 2,
        prop::collection::vec((arb_record(), prop_oneof![0u64..1_000_000, 0u64..=u64::MAX / 2]), 0..40),
    )
}

fn encode_spec(spec: &BatchSpec) -> Bytes {
    let (node_id, instance, first_seq, base, records) = spec;
    let mut enc = BatchEncoder::new(node(*node_id), *instance);
    enc.begin(*first_seq, *base);
    for (record, dt) in records {
        match record {
            Record::Event(e) => enc.push_event(e, base + dt),
            Record::Control(c) => enc.push_control(c, base + dt),
        }
    }
    enc.finish()
}

/// Decodes everything and checks the invariants that hold for any input: at most `count` items, consecutive seqs,
/// nothing after a framing error.
fn drain(bytes: &[u8]) {
    let Ok(reader) = decode_batch(bytes) else {
        return;
    };
    let header = *reader.header();
    let mut n = 0u64;
    let mut ended = false;
    for item in reader {
        assert!(!ended, "an item after a truncation");
        let seq = match &item {
            Ok(r) => r.seq,
            Err(e) => {
                ended = e.kind == RecordErrorKind::Truncated || e.kind == RecordErrorKind::Corrupt("record header");
                e.seq
            }
        };
        assert_eq!(seq, header.first_seq.wrapping_add(n));
        n += 1;
    }
    assert!(n <= u64::from(header.count));
}

proptest! {
    #[test]
    fn batches_round_trip(spec in arb_batch()) {
        let bytes = encode_spec(&spec);
        let (node_id, instance, first_seq, base, records) = &spec;
        let reader = decode_batch(&bytes).expect("valid header");
        prop_assert_eq!(
            *reader.header(),
            BatchHeader {
                node_id: node(*node_id),
                instance_id: *instance,
                first_seq: *first_seq,
                base_time_us: *base,
                count: records.len() as u32,
            }
        );
        let got: Vec<_> = reader.collect();
        let expected: Vec<_> = records
            .iter()
            .enumerate()
            .map(|(i, (record, dt))| ok(first_seq.wrapping_add(i as u64), base + dt, record.clone()))
            .collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn encoded_len_bounds_push_event(event in arb_event(), base in any::<u64>(), time in any::<u64>()) {
        let mut enc = BatchEncoder::new(node(1), 0);
        enc.begin(0, base);
        let before = enc.len();
        enc.push_event(&event, time);
        let added = enc.len() - before;
        let bound = encoded_len(&event);
        prop_assert!(added <= bound, "{added} > {bound} for {event:?}");
        prop_assert!(bound - added < varint::MAX_LEN, "bound {bound} not tight for {added}");
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        drain(&bytes);
    }

    #[test]
    fn arbitrary_records_after_a_valid_header_never_panic(
        count in any::<u32>(),
        mac in any::<bool>(),
        tail in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = BytesMut::new();
        bytes.put_u8(VERSION);
        bytes.put_u8(u8::from(mac));
        bytes.put_u16(1);
        bytes.put_u64(2);
        bytes.put_u64(u64::MAX - 3);
        bytes.put_u64(u64::MAX - 10);
        bytes.put_u32(count);
        bytes.extend_from_slice(&tail);
        drain(&bytes);
    }

    #[test]
    fn damaged_batches_never_panic(
        spec in arb_batch(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..8),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = encode_spec(&spec).to_vec();
        for (at, mask) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        drain(&bytes);
    }
}

#[test]
fn every_event_variant_is_covered_by_the_tag_table() {
    let events = [
        state_change(1, 1, 1),
        Event::EmailPush {
            account_id: 1,
            email_id: 1,
            change_id: 1,
        },
        Event::CalendarAlert {
            account_id: 1,
            event_id: 1,
            alert_id: "a".into(),
            recurrence_id: Some(-5),
        },
        Event::PushSubscriptionSet(Box::new(PushSubscription::webhook(
            "s",
            1,
            "https://push.example/1",
            DataTypes::EMPTY,
        ))),
        Event::PushSubscriptionRemoved { id: "s".into() },
        Event::BlockedIp {
            network: "2001:db8::/32".parse().expect("net"),
            expires_at_ms: Some(1),
            reason: Some("r".into()),
        },
        Event::UnblockedIp {
            network: "203.0.113.0/24".parse().expect("net"),
        },
        Event::Reload {
            target: ReloadTarget::SpamFilter,
        },
        Event::CertificateRenewed {
            domains: vec!["a.example".into(), "b.example".into()],
        },
        Event::CacheInvalidate {
            cache: CacheKind::Negative,
            key: "k".into(),
        },
        Event::CacheInvalidateAll {},
        Event::QueuePaused {},
        Event::QueueResumed {},
        Event::QueueRefresh {},
        Event::Custom {
            name: "n".into(),
            data: Bytes::from_static(b"\x00\x01"),
        },
        Event::Stalwart(crate::stalwart::StalwartEvent::RegistryDelete {
            object: crate::stalwart::ObjectType(17),
            id: u64::MAX,
        }),
        Event::TokensRevoked {
            accounts: vec![42, u32::MAX],
            jti: Some("j".into()),
            revoked_at_ms: 1_764_150_000_000,
            keep_until_ms: 1_764_236_400_000,
        },
    ];
    assert_eq!(events.len(), Event::TYPE_NAMES.len());
    let mut enc = BatchEncoder::new(node(1), 0);
    enc.begin(0, 0);
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            usize::from(super::body::event_tag(event)),
            i + 1,
            "{}",
            event.type_name()
        );
        enc.push_event(event, 0);
    }
    let got: Vec<_> = items(&enc.finish()).into_iter().map(|r| r.map(|d| d.record)).collect();
    let expected: Vec<_> = events.into_iter().map(|e| Ok(Record::Event(e))).collect();
    assert_eq!(got, expected);
}

#[test]
fn a_heartbeat_without_the_stalwart_id_is_byte_identical_to_before_and_one_with_it_still_decodes_on_old_terms() {
    let old = Heartbeat {
        interval_ms: 1000,
        started_at_ms: 5,
        http: None,
        stalwart_node_id: None,
    };
    let with_id = Heartbeat {
        stalwart_node_id: Some(65000),
        ..old.clone()
    };
    let mut a = BatchEncoder::new(NodeId::new(1).expect("non-zero"), 1);
    a.begin(0, 0);
    a.push_control(&Control::Heartbeat(old.clone()), 0);
    let without = a.finish();
    // interval 1000 (e8 07), started 5, http absent (0): the layout older nodes send and read.
    assert!(without.ends_with(&[0xe8, 0x07, 0x05, 0x00]), "{without:02x?}");
    a.begin(1, 0);
    a.push_control(&Control::Heartbeat(with_id.clone()), 0);
    let with = a.finish();
    let decoded: Vec<Record> = decode_batch(&with)
        .expect("header")
        .map(|r| r.expect("record").record)
        .collect();
    assert_eq!(decoded, [Record::Control(Control::Heartbeat(with_id))]);
}

#[test]
fn a_heartbeat_with_an_oversized_http_field_is_rejected_and_the_rest_of_the_batch_delivered() {
    let mut enc = BatchEncoder::new(NodeId::new(1).expect("non-zero"), 1);
    enc.begin(0, 0);
    let huge = Heartbeat {
        interval_ms: 1000,
        started_at_ms: 1,
        http: Some("x".repeat(super::body::MAX_HTTP_FIELD + 1)),
        stalwart_node_id: None,
    };
    enc.push_control(&Control::Heartbeat(huge), 0);
    enc.push_event(&Event::QueueRefresh {}, 0);
    let batch = enc.finish();
    let items: Vec<_> = decode_batch(&batch).expect("header").collect();
    assert_eq!(items.len(), 2);
    assert!(
        matches!(
            items[0],
            Err(RecordError {
                kind: RecordErrorKind::Corrupt("http"),
                ..
            })
        ),
        "{:?}",
        items[0]
    );
    assert!(matches!(&items[1], Ok(r) if r.record == Record::Event(Event::QueueRefresh {})));
}
