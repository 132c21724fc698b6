//! Codec throughput: encoding and decoding a batch of 1000 records, per record family.
//!
//! Run with `cargo bench -p agora --bench codec`; filter with e.g. `-- state_change`.

use std::hint::black_box;

use agora::codec::{decode_batch, BatchEncoder, Control, Heartbeat};
use agora::{DataTypes, Event, NodeId};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BATCH: usize = 1000;
const BASE_US: u64 = 1_764_150_000_000_000;

/// One record to encode: an event or a control record.
enum Item {
    Event(Event),
    Control(Control),
}

fn state_changes() -> Vec<Item> {
    (0..BATCH as u64)
        .map(|i| {
            Item::Event(Event::StateChange {
                account_id: (i % 5_000) as u32,
                change_id: 1_000_000 + i,
                types: DataTypes::from_bits(1 | (1 << 3)),
            })
        })
        .collect()
}

fn blocked_ips() -> Vec<Item> {
    (0..BATCH as u32)
        .map(|i| {
            let network = if i % 4 == 0 {
                format!("2001:db8:{:x}::/48", i).parse()
            } else {
                format!("198.51.{}.{}/32", (i >> 8) & 0xff, i & 0xff).parse()
            };
            Item::Event(Event::BlockedIp {
                network: network.unwrap_or_default(),
                expires_at_ms: Some(1_764_150_000_000 + u64::from(i)),
                reason: Some("too many authentication failures".to_owned()),
            })
        })
        .collect()
}

fn customs() -> Vec<Item> {
    let data = Bytes::from(vec![0x5a; 64]);
    (0..BATCH)
        .map(|_| {
            Item::Event(Event::Custom {
                name: "app.cache.flush".to_owned(),
                data: data.clone(),
            })
        })
        .collect()
}

fn heartbeats() -> Vec<Item> {
    (0..BATCH as u64)
        .map(|i| {
            Item::Control(Control::Heartbeat(Heartbeat {
                interval_ms: 1_000,
                started_at_ms: 1_764_150_000_000 + i,
                http: Some("10.0.0.7:8080".to_owned()),
                stalwart_node_id: None,
            }))
        })
        .collect()
}

fn encode(enc: &mut BatchEncoder, items: &[Item]) -> Bytes {
    enc.begin(1, BASE_US);
    for (i, item) in items.iter().enumerate() {
        let time = BASE_US + i as u64 * 37;
        match item {
            Item::Event(e) => enc.push_event(e, time),
            Item::Control(c) => enc.push_control(c, time),
        }
    }
    enc.finish()
}

fn decode(bytes: &[u8]) -> usize {
    let Ok(reader) = decode_batch(bytes) else {
        return 0;
    };
    reader.map(|r| black_box(r).is_ok() as usize).sum()
}

fn family(c: &mut Criterion, name: &str, items: &[Item]) {
    let node = NodeId::new(1).unwrap_or_else(NodeId::random);
    let mut enc = BatchEncoder::new(node, 42);
    let batch = encode(&mut enc, items);
    assert_eq!(decode(&batch), items.len(), "{name}: every record decodes");

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(items.len() as u64));
    group.bench_function("encode", |b| b.iter(|| black_box(encode(&mut enc, black_box(items)))));
    group.bench_function("decode", |b| b.iter(|| decode(black_box(&batch))));
    group.bench_function("encode+decode", |b| {
        b.iter(|| decode(&encode(&mut enc, black_box(items))))
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    family(c, "state_change", &state_changes());
    family(c, "blocked_ip", &blocked_ips());
    family(c, "custom", &customs());
    family(c, "heartbeat", &heartbeats());
}

criterion_group!(codec, benches);
criterion_main!(codec);
