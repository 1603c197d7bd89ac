//! Property tests over random interleavings: random priorities, message sizes, read
//! sizes, link capacities and latencies, and consumers that pause and resume at
//! random. Every message arrives once and in order on its channel, credit is never
//! exceeded, pings are answered while a channel is stalled, and a receiver never holds
//! more than its windows.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use switchyard_proto::config::{ChannelConfig, Config};
use switchyard_proto::connection::Event;

use crate::pair::*;

#[derive(Debug, Clone)]
struct Scenario {
    prios: [u16; 3],
    sizes: Vec<(u8, usize)>,
    read_size: usize,
    capacity: usize,
    latency_us: u64,
    /// (virtual ms, channel, stall?) toggles of b's consumers.
    pauses: Vec<(u64, u8, bool)>,
    /// Whether payloads are read straight into their messages.
    direct_reads: bool,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        [1u16..=50, 1u16..=50, 1u16..=50],
        proptest::collection::vec(
            (
                1u8..=3,
                prop_oneof![0usize..100, 100usize..5000, 60_000usize..300_000],
            ),
            1..60,
        ),
        prop_oneof![1usize..64, 64usize..4096, 4096usize..200_000],
        prop_oneof![
            Just(16usize << 10),
            Just(256usize << 10),
            Just(4usize << 20)
        ],
        0u64..2000,
        proptest::collection::vec((0u64..30_000, 1u8..=3, any::<bool>()), 0..8),
        any::<bool>(),
    )
        .prop_map(
            |(prios, sizes, read_size, capacity, latency_us, pauses, direct_reads)| Scenario {
                prios,
                sizes,
                read_size,
                capacity,
                latency_us,
                pauses,
                direct_reads,
            },
        )
}

fn config_for(s: &Scenario) -> Vec<(u8, ChannelConfig)> {
    (1..=3u8)
        .map(|c| {
            (
                c,
                ChannelConfig::new(s.prios[usize::from(c - 1)])
                    .send_queue(100_000, 1 << 30)
                    .recv_window(16 << 10, 1 << 20),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_message_arrives_once_in_order_within_credit(s in scenario()) {
        // Small packets and windows, so every interleaving of chunks and credit shows.
        let limits = Config {
            max_packet_payload: 8 << 10,
            ..Config::default()
        };
        let mut p = Pair::with_channels(&limits, config_for(&s), config_for(&s));
        p.read_size = s.read_size;
        p.direct_reads = s.direct_reads;
        p.capacity = s.capacity;
        p.latency = Duration::from_micros(s.latency_us);
        p.connect();
        let mut expected: [Vec<Bytes>; 4] = Default::default();
        for (i, (c, size)) in s.sizes.iter().enumerate() {
            let mut v = vec![*c; (*size).max(8)];
            v[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let m = Bytes::from(v);
            p.a.core.send(*c, m.clone()).unwrap();
            expected[usize::from(*c)].push(m);
        }
        let mut pauses = s.pauses.clone();
        pauses.sort_unstable();
        let windows_max: u64 = 3 * (1 << 20) + 3 * 300_100;
        let start = p.now;
        for (at, channel, stall) in pauses {
            let until = start + Duration::from_millis(at);
            while p.now < until {
                p.run_for(Duration::from_millis(50).min(until - p.now));
                let (buffered, _) = p.b.core.buffered_bytes();
                prop_assert!(buffered <= windows_max, "{buffered}");
            }
            p.b.stall(channel, stall);
        }
        // Stall channel 1 for three pong timeouts: pings must still be answered.
        p.b.stall(1, true);
        p.run_for(limits.pong_timeout * 3);
        prop_assert!(p.a.closed().is_none() && p.b.closed().is_none(),
            "a {:?} / b {:?}", p.a.closed(), p.b.closed());
        // ...and promptly: the last round trip of each side is within the path's own
        // plus a little queueing, not behind the stalled channel.
        let bound = p.latency * 2 + Duration::from_millis(20);
        for (side, rtt) in [("a", p.a.core.rtt()), ("b", p.b.core.rtt())] {
            prop_assert!(rtt.is_some_and(|r| r <= bound), "{side}: rtt {rtt:?} over {bound:?}");
        }
        for c in 1..=3 {
            p.b.stall(c, false);
        }
        let done = p.run_until(Duration::from_secs(120), |p| {
            (1..=3u8).all(|c| p.b.got(c).len() == expected[usize::from(c)].len())
        });
        prop_assert!(done, "not everything arrived: {:?}", (1..=3u8).map(|c| p.b.got(c).len()).collect::<Vec<_>>());
        for c in 1..=3u8 {
            prop_assert_eq!(&p.b.payloads(c), &expected[usize::from(c)]);
        }
        let closes: Vec<&Event> = p.a.events.iter().chain(&p.b.events).filter(|e| matches!(e, Event::Closed(_))).collect();
        prop_assert!(closes.is_empty(), "{closes:?}");
    }
}
