//! The cost of the wire codec on the hot path: encoding and decoding a
//! single-message PUBLISH frame, a PUBLISH_BATCH of 64 messages, and the
//! EVENT_BATCH that carries them to a subscriber; and `Frame::to_bytes`
//! (a new buffer per frame, as the client library encodes each request),
//! for those and for a 64 KiB PUBLISH; and a PUBLISH_BATCH made from
//! payloads, through the message or straight into the frame
//! (`encode_publish_batch`, the client library's fire-and-forget path).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rampart_proto::{
    encode_publish_batch, AckMode, EntriesBuilder, EventBatch, Frame, FrameDecoder, Message,
    NamespaceName, Publish, PublishBatch, StreamName, TenantId, DEFAULT_MAX_FRAME,
};

fn frames() -> Vec<(&'static str, u64, Frame)> {
    let (tenant, ns, stream) = (
        TenantId::parse("acme").expect("tenant"),
        NamespaceName::parse("orders").expect("namespace"),
        StreamName::parse("created").expect("stream"),
    );
    let payload = vec![0xab; 128];
    let large = Frame::new(
        9,
        Message::Publish(Publish {
            ack: AckMode::Message,
            tenant: tenant.clone(),
            namespace: ns.clone(),
            stream: stream.clone(),
            payload: Bytes::from(vec![0xcd; 64 * 1024]),
        }),
    );
    let publish = Frame::new(
        7,
        Message::Publish(Publish {
            ack: AckMode::None,
            tenant: tenant.clone(),
            namespace: ns.clone(),
            stream: stream.clone(),
            payload: Bytes::from(payload.clone()),
        }),
    );
    let batch = Frame::new(
        8,
        Message::PublishBatch(PublishBatch::from_payloads(
            AckMode::None,
            tenant,
            ns,
            stream,
            std::iter::repeat_n(&payload[..], 64),
        )),
    );
    let mut entries = EntriesBuilder::new();
    for _ in 0..64 {
        entries.push(&payload);
    }
    let (count, entries) = entries.finish();
    let events = Frame::new(
        0,
        Message::EventBatch(EventBatch {
            subscription_id: 3,
            missed: 0,
            first_seq: 1000,
            count,
            entries,
        }),
    );
    vec![
        ("PUBLISH 128 B", 1, publish),
        ("PUBLISH_BATCH 64 x 128 B", 64, batch),
        ("EVENT_BATCH 64 x 128 B", 64, events),
        ("PUBLISH 64 KiB", 1, large),
    ]
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    for (name, messages, frame) in frames() {
        g.throughput(Throughput::Elements(messages));
        let mut out = BytesMut::with_capacity(16 * 1024);
        g.bench_function(format!("encode {name}"), |b| {
            b.iter(|| {
                out.clear();
                black_box(&frame).encode(&mut out);
                black_box(out.len())
            })
        });
        g.bench_function(format!("to_bytes {name}"), |b| {
            b.iter(|| black_box(black_box(&frame).to_bytes()))
        });
        let encoded = frame.to_bytes();
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        g.bench_function(format!("decode {name}"), |b| {
            b.iter_batched_ref(
                || BytesMut::from(&encoded[..]),
                |buf| {
                    let d = decoder.decode(buf).expect("valid").expect("whole frame");
                    black_box(d.frame.expect("valid body"))
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// A PUBLISH_BATCH of 64 payloads, from the payloads to the encoded frame.
fn batch_from_payloads(c: &mut Criterion) {
    let (tenant, ns, stream) = (
        TenantId::parse("acme").expect("tenant"),
        NamespaceName::parse("orders").expect("namespace"),
        StreamName::parse("created").expect("stream"),
    );
    let mut g = c.benchmark_group("publish_batch");
    for size in [128, 4096] {
        let payloads: Vec<Bytes> = (0..64).map(|_| Bytes::from(vec![0xab; size])).collect();
        g.throughput(Throughput::Bytes((64 * size) as u64));
        g.bench_function(format!("64 x {size} B through the message"), |b| {
            b.iter(|| {
                let mut e = EntriesBuilder::new();
                for p in &payloads {
                    e.push(p);
                }
                let (count, entries) = e.finish();
                let batch = PublishBatch {
                    ack: AckMode::None,
                    tenant: tenant.clone(),
                    namespace: ns.clone(),
                    stream: stream.clone(),
                    count,
                    entries,
                };
                black_box(Frame::new(1, Message::PublishBatch(batch)).to_bytes())
            })
        });
        g.bench_function(format!("64 x {size} B straight into the frame"), |b| {
            b.iter(|| {
                black_box(encode_publish_batch(
                    1,
                    AckMode::None,
                    &tenant,
                    &ns,
                    &stream,
                    &payloads,
                ))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codec, batch_from_payloads);
criterion_main!(benches);
