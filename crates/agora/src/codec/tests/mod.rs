//! Codec tests: varints, header checks, the documented example, error isolation, and property tests (round trip,
//! size bound, no panics on hostile input).

use bytes::{BufMut, Bytes, BytesMut};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

use super::varint::{self, Reader, VarintError};
use super::*;
use crate::event::{CacheKind, DataTypes, PushKeys, PushSubscription, ReloadTarget};

mod properties;

fn node(n: u16) -> NodeId {
    NodeId::new(n).expect("non-zero node id")
}

fn state_change(account_id: u32, change_id: u64, bits: u64) -> Event {
    Event::StateChange {
        account_id,
        change_id,
        types: DataTypes::from_bits(bits),
    }
}

/// Decodes and collects every item, asserting the batch header is accepted.
fn items(bytes: &[u8]) -> Vec<Result<DecodedRecord, RecordError>> {
    decode_batch(bytes).expect("valid header").collect()
}

fn ok(seq: u64, time_us: u64, record: Record) -> Result<DecodedRecord, RecordError> {
    Ok(DecodedRecord { seq, time_us, record })
}

fn err(seq: u64, tag: u16, kind: RecordErrorKind) -> Result<DecodedRecord, RecordError> {
    Err(RecordError { seq, tag, kind })
}

fn unhex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).expect("ascii"), 16).expect("hex digit"))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------------
// Varints

fn encode_varint(v: u64) -> Vec<u8> {
    let mut buf = BytesMut::new();
    varint::write(&mut buf, v);
    buf.to_vec()
}

fn decode_varint(bytes: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut reader = Reader::new(bytes);
    let v = reader.varint()?;
    let mut left = 0;
    while reader.byte().is_some() {
        left += 1;
    }
    Ok((v, bytes.len() - left))
}

#[test]
fn varint_edge_cases() {
    let cases: &[(u64, &[u8])] = &[
        (0, &[0x00]),
        (1, &[0x01]),
        (127, &[0x7f]),
        (128, &[0x80, 0x01]),
        (300, &[0xac, 0x02]),
        (16_383, &[0xff, 0x7f]),
        (16_384, &[0x80, 0x80, 0x01]),
        (u64::from(u32::MAX), &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        (u64::MAX, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
    ];
    for &(value, bytes) in cases {
        assert_eq!(encode_varint(value), bytes, "encoding {value}");
        assert_eq!(varint::len(value), bytes.len(), "length of {value}");
        assert_eq!(decode_varint(bytes), Ok((value, bytes.len())), "decoding {value}");
        // A following byte is left alone.
        let mut longer = bytes.to_vec();
        longer.push(0x55);
        assert_eq!(
            decode_varint(&longer),
            Ok((value, bytes.len())),
            "decoding {value} with a trailer"
        );
    }
}

#[test]
fn varint_rejects_overlong_and_unterminated() {
    assert_eq!(decode_varint(&[]), Err(VarintError::Unterminated));
    assert_eq!(decode_varint(&[0x80]), Err(VarintError::Unterminated));
    assert_eq!(decode_varint(&[0xff; 9]), Err(VarintError::Unterminated));
    // 10th byte above 1: the value exceeds u64::MAX.
    let mut too_big = vec![0xff; 9];
    too_big.push(0x02);
    assert_eq!(decode_varint(&too_big), Err(VarintError::Overflow));
    // 11 bytes.
    let mut eleven = vec![0x80; 10];
    eleven.push(0x00);
    assert_eq!(decode_varint(&eleven), Err(VarintError::Overflow));
    assert_eq!(decode_varint(&[0xff; 10]), Err(VarintError::Overflow));
    // Non-minimal but within 10 bytes: accepted.
    assert_eq!(decode_varint(&[0x80, 0x00]), Ok((0, 2)));
}

#[test]
fn zigzag_round_trips() {
    for v in [0, -1, 1, -2, 2, i64::MIN, i64::MAX, 1_700_000_000] {
        assert_eq!(varint::unzigzag(varint::zigzag(v)), v);
    }
    assert_eq!(varint::zigzag(-1), 1);
    assert_eq!(varint::zigzag(1), 2);
}

// ---------------------------------------------------------------------------------------------------------------------
// Header

fn empty_batch() -> Vec<u8> {
    let mut enc = BatchEncoder::new(node(7), 99);
    enc.begin(1, 2);
    enc.finish().to_vec()
}

#[test]
fn header_rejects() {
    let good = empty_batch();
    assert_eq!(good.len(), HEADER_LEN);
    assert!(decode_batch(&good).is_ok());

    assert_eq!(decode_batch(&[]).err(), Some(DecodeError::TooShort { len: 0 }));
    assert_eq!(decode_batch(&good[..31]).err(), Some(DecodeError::TooShort { len: 31 }));

    let mut v2 = good.clone();
    v2[0] = 2;
    assert_eq!(decode_batch(&v2).err(), Some(DecodeError::UnsupportedVersion(2)));

    let mut flags = good.clone();
    flags[1] = 0x02;
    assert_eq!(decode_batch(&flags).err(), Some(DecodeError::UnsupportedFlags(0x02)));
    flags[1] = 0x81;
    assert_eq!(decode_batch(&flags).err(), Some(DecodeError::UnsupportedFlags(0x81)));

    let mut node0 = good.clone();
    node0[2] = 0;
    node0[3] = 0;
    assert_eq!(decode_batch(&node0).err(), Some(DecodeError::InvalidNodeId));

    // The MAC flag needs room for the trailer.
    let mut mac = good;
    mac[1] = FLAG_MAC;
    assert_eq!(decode_batch(&mac).err(), Some(DecodeError::TooShort { len: 32 }));

    // Errors read as sentences.
    assert_eq!(
        DecodeError::UnsupportedVersion(2).to_string(),
        "unsupported wire format version 2 (this node reads version 1); upgrade this node"
    );
    let e = RecordError {
        seq: 5,
        tag: 9,
        kind: RecordErrorKind::UnknownValue("target"),
    };
    assert_eq!(
        e.to_string(),
        "record seq 5 (tag 9): unknown target value (sent by a newer node?)"
    );
}

#[test]
fn header_fields_round_trip() {
    let mut enc = BatchEncoder::new(node(65_535), u64::MAX - 1);
    assert!(enc.is_empty());
    assert_eq!(enc.len(), 0);
    enc.begin(u64::MAX, 123_456);
    assert_eq!(enc.len(), HEADER_LEN);
    enc.push_control(&Control::Leave, 123_456);
    assert!(!enc.is_empty());
    assert_eq!(enc.count(), 1);
    let bytes = enc.finish();
    assert_eq!(enc.count(), 0);
    let reader = decode_batch(&bytes).expect("valid");
    assert_eq!(
        *reader.header(),
        BatchHeader {
            node_id: node(65_535),
            instance_id: u64::MAX - 1,
            first_seq: u64::MAX,
            base_time_us: 123_456,
            count: 1
        }
    );
    assert_eq!(reader.mac(), None);
    assert_eq!(reader.signed_bytes(), &bytes[..]);
    // Sequence numbers wrap rather than panic.
    assert_eq!(
        reader.collect::<Vec<_>>(),
        vec![ok(u64::MAX, 123_456, Record::Control(Control::Leave))]
    );
}

#[test]
fn mac_trailer_is_split_off() {
    let mut enc = BatchEncoder::new(node(3), 4);
    enc.begin(10, 1_000);
    enc.push_event(&state_change(1, 2, 3), 1_000);
    let mut bytes = enc.finish().to_vec();
    bytes[1] = FLAG_MAC;
    let signed = bytes.clone();
    bytes.extend_from_slice(&[0xaa; MAC_LEN]);
    let reader = decode_batch(&bytes).expect("valid");
    assert_eq!(reader.mac(), Some(&[0xaa; MAC_LEN][..]));
    assert_eq!(reader.signed_bytes(), &signed[..]);
    assert_eq!(
        reader.collect::<Vec<_>>(),
        vec![ok(10, 1_000, Record::Event(state_change(1, 2, 3)))]
    );
}

// ---------------------------------------------------------------------------------------------------------------------
// The example of docs/wire-format.md

const DOC_EXAMPLE: &str = "
    01 00 00 01
    01 23 45 67 89 ab cd ef
    00 00 00 00 00 00 00 01
    00 06 44 7c 2e 14 9c 00
    00 00 00 01
    01 fa 01 04 2a ac 02 09
";

#[test]
fn documented_example_is_byte_exact() {
    let event = Event::StateChange {
        account_id: 42,
        change_id: 300,
        types: DataTypes::from_names(["Email", "Mailbox"]).expect("known types"),
    };
    let base = 1_764_150_000_000_000;
    let mut enc = BatchEncoder::new(node(1), 0x0123_4567_89ab_cdef);
    enc.begin(1, base);
    enc.push_event(&event, base + 250);
    let bytes = enc.finish();
    let expected = unhex(DOC_EXAMPLE);
    assert_eq!(bytes.len(), 40);
    assert_eq!(&bytes[..], &expected[..]);
    assert_eq!(items(&expected), vec![ok(1, base + 250, Record::Event(event))]);
}

// ---------------------------------------------------------------------------------------------------------------------
// Error isolation

#[test]
fn bad_records_are_skipped_and_the_rest_delivered() {
    let mut enc = BatchEncoder::new(node(2), 1);
    enc.begin(100, 1_000);
    let a = state_change(1, 2, 3);
    let b = Event::EmailPush {
        account_id: 4,
        email_id: 5,
        change_id: 6,
    };
    enc.push_event(&a, 1_000);
    enc.push_raw(9_999, 1_001, b"from the future");
    enc.push_event(&b, 1_002);
    enc.push_raw(u64::from(tags::RELOAD), 1_003, &[0xc8, 0x01]); // code 200
    enc.push_raw(u64::from(tags::CALENDAR_ALERT), 1_004, &[1, 2, 2, 0xff, 0xfe, 0]); // invalid UTF-8
    enc.push_raw(u64::from(tags::STATE_CHANGE), 1_005, &[1, 2]); // too short
    enc.push_raw(
        u64::from(tags::STATE_CHANGE),
        1_006,
        &[0x80, 0x80, 0x80, 0x80, 0x10, 2, 3],
    ); // > u32::MAX
    enc.push_raw(u64::from(tags::BLOCKED_IP), 1_007, &[4, 33, 10, 0, 0, 0, 0, 0]); // prefix > 32
    enc.push_raw(u64::from(tags::BLOCKED_IP), 1_008, &[5, 8, 10, 0, 0, 0, 0, 0]); // family 5
    enc.push_raw(u64::from(tags::BLOCKED_IP), 1_009, &[4, 8, 10, 0, 0, 0, 2, 0]); // option byte 2
    enc.push_raw(u64::from(tags::CACHE_INVALIDATE), 1_010, &[99, 0]); // unknown cache
    enc.push_raw(0, 1_011, &[]); // tag 0
    enc.push_raw(1 << 20, 1_012, &[]); // tag beyond u16
    enc.push_event(&Event::QueueRefresh {}, 1_013);
    let bytes = enc.finish();
    assert_eq!(
        items(&bytes),
        vec![
            ok(100, 1_000, Record::Event(a)),
            err(101, 9_999, RecordErrorKind::UnknownTag),
            ok(102, 1_002, Record::Event(b)),
            err(103, tags::RELOAD, RecordErrorKind::UnknownValue("target")),
            err(104, tags::CALENDAR_ALERT, RecordErrorKind::Corrupt("alert_id")),
            err(105, tags::STATE_CHANGE, RecordErrorKind::Corrupt("types")),
            err(106, tags::STATE_CHANGE, RecordErrorKind::Corrupt("account_id")),
            err(107, tags::BLOCKED_IP, RecordErrorKind::Corrupt("network")),
            err(108, tags::BLOCKED_IP, RecordErrorKind::Corrupt("network")),
            err(109, tags::BLOCKED_IP, RecordErrorKind::Corrupt("expires_at_ms")),
            err(110, tags::CACHE_INVALIDATE, RecordErrorKind::UnknownValue("cache")),
            err(111, 0, RecordErrorKind::Corrupt("tag")),
            err(112, 0, RecordErrorKind::Corrupt("tag")),
            ok(113, 1_013, Record::Event(Event::QueueRefresh {})),
        ]
    );
}

#[test]
fn trailing_body_bytes_are_ignored() {
    let mut enc = BatchEncoder::new(node(2), 1);
    enc.begin(0, 0);
    enc.push_raw(u64::from(tags::STATE_CHANGE), 5, &[42, 7, 9, 0xde, 0xad, 0xbe, 0xef]);
    enc.push_raw(u64::from(tags::LEAVE), 6, &[1, 2, 3]);
    enc.push_raw(u64::from(tags::QUEUE_PAUSED), 7, &[0xff]);
    let bytes = enc.finish();
    assert_eq!(
        items(&bytes),
        vec![
            ok(0, 5, Record::Event(state_change(42, 7, 9))),
            ok(1, 6, Record::Control(Control::Leave)),
            ok(2, 7, Record::Event(Event::QueuePaused {})),
        ]
    );
}

#[test]
fn truncated_batch_delivers_what_precedes_the_cut() {
    let mut enc = BatchEncoder::new(node(2), 1);
    enc.begin(50, 0);
    let mut ends = Vec::new();
    for i in 0..5 {
        enc.push_event(&state_change(i, u64::from(i) * 1_000, 1), u64::from(i));
        ends.push(enc.len());
    }
    let bytes = enc.finish();
    // Cut in the middle of record 2 (its length prefix runs past the end).
    let cut = &bytes[..ends[1] + 4];
    assert_eq!(
        items(cut),
        vec![
            ok(50, 0, Record::Event(state_change(0, 0, 1))),
            ok(51, 1, Record::Event(state_change(1, 1_000, 1))),
            err(52, tags::STATE_CHANGE, RecordErrorKind::Truncated),
        ]
    );
    // Cut exactly between records: the first missing record is reported, with an unknown tag.
    let cut = &bytes[..ends[2]];
    let got = items(cut);
    assert_eq!(got.len(), 4);
    assert_eq!(got[3], err(53, 0, RecordErrorKind::Truncated));
    // Cut inside a record's header (after its tag).
    let cut = &bytes[..ends[0] + 1];
    assert_eq!(items(cut)[1], err(51, tags::STATE_CHANGE, RecordErrorKind::Truncated));
}

#[test]
fn count_beyond_the_records_ends_with_truncated_and_extra_bytes_are_ignored() {
    let mut enc = BatchEncoder::new(node(2), 1);
    enc.begin(7, 0);
    enc.push_event(&Event::QueuePaused {}, 0);
    enc.push_event(&Event::QueueResumed {}, 0);
    let mut bytes = enc.finish().to_vec();
    bytes[28..32].copy_from_slice(&5u32.to_be_bytes());
    assert_eq!(
        items(&bytes),
        vec![
            ok(7, 0, Record::Event(Event::QueuePaused {})),
            ok(8, 0, Record::Event(Event::QueueResumed {})),
            err(9, 0, RecordErrorKind::Truncated),
        ]
    );
    bytes[28..32].copy_from_slice(&1u32.to_be_bytes());
    assert_eq!(items(&bytes), vec![ok(7, 0, Record::Event(Event::QueuePaused {}))]);
}

#[test]
fn times_before_the_base_are_stored_as_the_base() {
    let mut enc = BatchEncoder::new(node(2), 1);
    enc.begin(0, 1_000);
    enc.push_event(&Event::QueuePaused {}, 10);
    assert_eq!(
        items(&enc.finish()),
        vec![ok(0, 1_000, Record::Event(Event::QueuePaused {}))]
    );
}

#[test]
fn encoder_is_reusable_and_begins_implicitly() {
    let mut enc = BatchEncoder::new(node(2), 1);
    enc.push_event(&Event::QueuePaused {}, 77);
    let first = enc.finish();
    assert_eq!(items(&first), vec![ok(0, 77, Record::Event(Event::QueuePaused {}))]);
    assert_eq!(enc.len(), 0);
    enc.begin(1, 100);
    enc.push_event(&Event::QueueResumed {}, 100);
    enc.begin(2, 200); // discards the unfinished batch
    enc.push_event(&Event::QueueRefresh {}, 201);
    let second = enc.finish();
    assert_eq!(items(&second), vec![ok(2, 201, Record::Event(Event::QueueRefresh {}))]);
    assert_eq!(items(&first), vec![ok(0, 77, Record::Event(Event::QueuePaused {}))]);
    let empty = enc.finish();
    assert_eq!(empty.len(), HEADER_LEN);
    assert_eq!(items(&empty), vec![]);
}

/// A push subscription written by a node of an earlier release (no RFC 8620 fields after `types`) decodes as the
/// webhook it was, and one of this release round-trips with every field.
#[test]
fn push_subscriptions_of_older_nodes_decode_as_webhooks() {
    let webhook = PushSubscription::webhook("s", 7, "https://push.example/7", DataTypes::EMPTY);
    let mut body = BytesMut::new();
    super::body::write_event_body_for_tests(&mut body, &Event::PushSubscriptionSet(Box::new(webhook.clone())));
    // The five trailing markers (device, keys, expiry, code, verified) are what this release appends.
    assert_eq!(&body[body.len() - 5..], &[0, 0, 0, 0, 0]);
    let old = &body[..body.len() - 5];
    match super::body::decode_body(super::tags::PUSH_SUBSCRIPTION_SET, old) {
        Ok(Record::Event(Event::PushSubscriptionSet(decoded))) => assert_eq!(*decoded, webhook),
        other => panic!("an old record did not decode as a webhook: {other:?}"),
    }
    let jmap = PushSubscription {
        device_client_id: Some("phone".into()),
        keys: Some(PushKeys {
            p256dh: "p".into(),
            auth: "a".into(),
        }),
        expires_at_ms: Some(5),
        verification_code: Some("code".into()),
        verified: true,
        ..webhook
    };
    let mut body = BytesMut::new();
    super::body::write_event_body_for_tests(&mut body, &Event::PushSubscriptionSet(Box::new(jmap.clone())));
    match super::body::decode_body(super::tags::PUSH_SUBSCRIPTION_SET, &body) {
        Ok(Record::Event(Event::PushSubscriptionSet(decoded))) => assert_eq!(*decoded, jmap),
        other => panic!("did not round-trip: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// Property tests
