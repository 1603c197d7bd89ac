//! `PeerCore` throughput with no I/O at all: two connected cores, one queueing
//! messages, the other reading the bytes and handing the messages to a "service" that
//! takes them at once. This is the protocol's own cost per message (scheduling,
//! framing, credit, decoding, reassembly, delivery), without sockets or actors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard_proto::connection::handshake::{ServiceInfo, Version, PROTOCOL_VERSION};
use switchyard_proto::connection::services::ServiceSpec;
use switchyard_proto::{Config, ConnParams, CoreConfig, NodeId, PeerCore, RecvBudget, Transmit};

const CH: u8 = 1;

fn core(now: Instant, id: u8) -> PeerCore {
    let limits = Config::default();
    let channels = vec![(CH, limits.channel(1).send_queue(1 << 20, 1 << 30))];
    let service = Arc::new(ServiceSpec {
        name: "bench".into(),
        major: 1,
        minor: 0,
        channels,
    });
    let config = Arc::new(CoreConfig::new(limits).expect("config"));
    let local = Version {
        protocol: PROTOCOL_VERSION,
        network: "bench".into(),
        node_id: NodeId([id; 20]),
        listen_addr: None,
        services: vec![ServiceInfo {
            name: "bench".into(),
            version: 1,
        }],
        user_agent: "bench".into(),
        nonce: u64::from(id),
    };
    let params = ConnParams {
        local,
        expected: None,
        secret: [id; 16],
        services: vec![service],
    };
    PeerCore::new(now, config, params, Arc::new(RecvBudget::new(1 << 30)))
}

/// Moves everything `from` wants to send into `to`; returns the messages `to`'s
/// service took.
fn pump(now: Instant, from: &mut PeerCore, to: &mut PeerCore, buf: &mut BytesMut) -> usize {
    let mut t = Transmit::new();
    let mut taken = 0;
    while from.poll_transmit(now, &mut t, 256 << 10) {
        buf.extend_from_slice(&t.take_all());
        from.handle_written(now);
        to.handle_read(now, buf);
        while to.poll_event().is_some() {}
        let mut cost = 0;
        while let Some(m) = to.recv(CH) {
            cost += m.cost();
            taken += 1;
        }
        if cost > 0 {
            to.handle_consumed(now, CH, cost);
        }
    }
    taken
}

fn connected(now: Instant) -> (PeerCore, PeerCore) {
    let (mut a, mut b) = (core(now, 1), core(now, 2));
    let mut buf = BytesMut::new();
    for _ in 0..4 {
        pump(now, &mut a, &mut b, &mut buf);
        pump(now, &mut b, &mut a, &mut buf);
    }
    assert!(a.accepts(CH) && b.accepts(CH), "handshake and service");
    (a, b)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("peer_core");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    for (name, size, count) in [("64B", 64usize, 4096usize), ("64KiB", 64 << 10, 64)] {
        let (mut a, mut b) = connected(now);
        let payload = Bytes::from(vec![7u8; size]);
        let mut buf = BytesMut::new();
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function(name, |bench| {
            bench.iter(|| {
                let mut got = 0;
                let mut queued = 0;
                while got < count {
                    while queued < count && a.send(CH, payload.clone()).is_ok() {
                        queued += 1;
                    }
                    got += pump(now, &mut a, &mut b, &mut buf);
                    pump(now, &mut b, &mut a, &mut buf);
                }
                got
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
