//! Codec throughput: encoding and decoding `Msg` packets of 64 B and 64 KiB payloads.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::time::Duration;
use switchyard_proto::wire::codec::{Msg, MsgKind, Packet, PacketCodec};
use tokio_util::codec::{Decoder, Encoder};

fn packets(size: usize, count: usize) -> Vec<Packet> {
    let payload = Bytes::from(vec![0xa5u8; size]);
    (0..count)
        .map(|i| {
            Packet::Msg(Msg {
                channel: (i % 4) as u8 + 1,
                eof: true,
                kind: MsgKind::Plain,
                total: None,
                payload: payload.clone(),
            })
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for (name, size, count) in [("64B", 64usize, 4096usize), ("64KiB", 64 << 10, 16)] {
        let batch = packets(size, count);
        let mut wire = BytesMut::new();
        let mut codec = PacketCodec::new(64 << 10);
        for p in &batch {
            codec.encode(p.clone(), &mut wire).unwrap();
        }
        let wire = wire.freeze();
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(format!("encode/{name}"), |b| {
            let mut out = BytesMut::with_capacity(wire.len());
            b.iter(|| {
                out.clear();
                for p in &batch {
                    codec.encode(p.clone(), &mut out).unwrap();
                }
                out.len()
            })
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                |mut buf| {
                    let mut n = 0;
                    while let Some(p) = codec.decode(&mut buf).unwrap() {
                        if let Packet::Msg(m) = p {
                            n += m.payload.len();
                        }
                    }
                    n
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
