//! Scheduler throughput: chunks pushed and polled per second.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;
use switchyard_proto::connection::scheduler::Scheduler;
use switchyard_proto::wire::codec::MsgKind;
use switchyard_proto::ChannelConfig;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    // (name, message size, chunk size, messages per channel per iteration)
    for (name, size, chunk, per_channel) in [
        ("4ch-64B", 64usize, 64 << 10, 256usize),
        ("4ch-64KiB-in-16KiB", 64 << 10, 16 << 10, 4),
    ] {
        let payload = Bytes::from(vec![0u8; size]);
        let chunks_per_iter = 4 * per_channel * size.div_ceil(chunk);
        group.throughput(Throughput::Elements(chunks_per_iter as u64));
        let mut s = Scheduler::new(chunk);
        for id in 1..=4u8 {
            let cfg = ChannelConfig::new(u16::from(id)).send_queue(1 << 20, 1 << 30);
            s.add_channel(id, &cfg);
            s.add_credit(id, u64::MAX);
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..per_channel {
                    for id in 1..=4u8 {
                        s.push(id, MsgKind::Plain, payload.clone()).unwrap();
                    }
                }
                let mut n = 0;
                while let Some(c) = s.poll_chunk() {
                    n += c.payload.len();
                }
                n
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
