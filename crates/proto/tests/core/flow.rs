//! Per-channel flow control: a stalled service stops only its own channel, memory is
//! bounded by the windows, windows autotune, the node budget bounds growth, a sender
//! over its credit is closed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard_proto::config::Config;
use switchyard_proto::wire::codec::{Msg, MsgKind, Packet};
use switchyard_proto::{DisconnectReason, RecvBudget};

use crate::pair::*;

/// With default timings, a service that consumes nothing for over 3× the pong
/// timeout stalls only its channel; pings and another channel go on at full rate;
/// its channel holds no more than its window; when it resumes it gets everything,
/// in order, exactly once.
#[test]
fn a_stalled_service_stalls_only_its_own_channel() {
    let limits = Config::default();
    let mut p = Pair::new(&limits);
    p.connect();
    p.b.stall(BULK, true);
    let bulk = numbered(2_000, 1024);
    for m in &bulk {
        p.a.core.send(BULK, m.clone()).unwrap();
    }
    let stall_for = limits.pong_timeout * 3 + limits.ping_interval;
    let tick = Duration::from_millis(10);
    let mut sent_other = 0u64;
    let mut worst_other = Duration::ZERO;
    let mut most_buffered = 0;
    let end = p.now + stall_for;
    while p.now < end {
        // Ten small messages every 10 ms on the other channel, each timed.
        let before = p.b.got(OTHER).len();
        for _ in 0..10 {
            p.a.core
                .send(OTHER, Bytes::from(sent_other.to_be_bytes().to_vec()))
                .unwrap();
            sent_other += 1;
        }
        let t = p.now;
        assert!(p.run_until(Duration::from_secs(1), |p| p.b.got(OTHER).len()
            >= before + 10));
        worst_other = worst_other.max(p.now - t);
        most_buffered = most_buffered.max(p.b.core.buffered_bytes().0);
        p.run_for(tick);
    }
    assert!(
        p.a.closed().is_none() && p.b.closed().is_none(),
        "{:?}",
        p.b.events
    );
    assert_eq!(p.b.got(OTHER).len() as u64, sent_other);
    assert!(
        worst_other < Duration::from_millis(1),
        "other channel waited {worst_other:?}"
    );
    assert!(p.b.got(BULK).is_empty());
    // Pings kept flowing: both sides measured a round trip during the stall.
    assert!(p.a.core.rtt().is_some() && p.b.core.rtt().is_some());
    // The stalled channel holds no more than its (initial) window.
    let window = p.b.core.channel_info(BULK).unwrap().recv.window;
    assert_eq!(window, limits.recv_window as u64, "no growth while stalled");
    assert!(most_buffered <= window, "{most_buffered} > {window}");
    assert!(p.b.core.queued_bytes() as u64 <= window);
    // Resume: everything arrives, in order, exactly once.
    p.b.stall(BULK, false);
    assert!(p.run_until(Duration::from_secs(10), |p| p.b.got(BULK).len()
        == bulk.len()));
    assert_eq!(p.b.payloads(BULK), bulk);
}

/// While one channel is stalled with its sender's queue full, another channel still
/// runs at the link's full rate.
#[test]
fn another_channel_runs_at_the_link_rate_beside_a_stalled_one() {
    let limits = Config::default();
    let mut p = Pair::new(&limits);
    p.capacity = 8 << 20;
    p.connect();
    p.b.stall(BULK, true);
    for m in numbered(1_000, 64 << 10) {
        p.a.core.send(BULK, m).unwrap();
    }
    p.run_for(Duration::from_millis(50));
    assert!(p.b.got(BULK).is_empty());
    let other = numbered(1_000, 64 << 10);
    let start = p.now;
    for m in &other {
        p.a.core.send(OTHER, m.clone()).unwrap();
    }
    assert!(
        p.run_until(Duration::from_secs(10), |p| p.b.got(OTHER).len()
            == other.len())
    );
    let took = p.now - start;
    let bandwidth = p.bandwidth.expect("the pair has a bandwidth");
    let line = Duration::from_secs_f64((other.len() * (64 << 10)) as f64 / bandwidth as f64);
    assert!(
        took < line * 11 / 10,
        "{took:?} for what the link moves in {line:?}"
    );
    assert_eq!(p.b.payloads(OTHER), other);
    assert!(p.b.got(BULK).is_empty());
}

#[test]
fn a_sender_over_its_credit_is_closed() {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    s.consuming = false;
    let window = Config::default().recv_window;
    let msg = vec![7u8; 4000];
    let mut sent = 0;
    while s.reason().is_none() {
        s.feed_msg(BULK, &msg);
        sent += msg.len() + 32;
        assert!(sent < 4 * window, "never closed");
    }
    assert!(matches!(
        s.reason(),
        Some(DisconnectReason::CreditExceeded { channel: BULK, granted, .. }) if granted == window as u64
    ));
}

#[test]
fn a_partial_message_counts_against_the_window() {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    // One unfinished message: its bytes use the credit like any other. The window
    // grows for it (so it can complete), but only as credit the remote is granted.
    let limit = Config::default().max_message_size as u32;
    let chunk = |n: usize, sent: u64| {
        Packet::Msg(Msg {
            channel: BULK,
            eof: false,
            kind: MsgKind::Plain,
            total: (sent == 0).then_some(limit),
            payload: Bytes::from(vec![1u8; n]),
        })
    };
    let mut sent = 0u64;
    for _ in 0..8 {
        let room = (s.granted(BULK) - sent).min(64 << 10);
        s.feed_packet(chunk(room as usize, sent));
        sent += room;
        assert_eq!(s.reason(), None, "within its credit");
    }
    assert!(
        sent > Config::default().recv_window as u64,
        "it grew: {sent}"
    );
    // One byte past the credit, in chunks fed without a chance to grant more.
    let mut over = s.granted(BULK) - sent + 1;
    let mut burst = Vec::new();
    while over > 0 {
        let n = over.min(60_000);
        burst.push(chunk(n as usize, sent));
        over -= n;
    }
    s.feed_packets(&burst);
    assert!(matches!(
        s.reason(),
        Some(DisconnectReason::CreditExceeded { channel: BULK, .. })
    ));
}

#[test]
fn partial_messages_on_every_channel_at_once_fit_the_reassembly_budget() {
    let limits = Config {
        max_message_size: 1 << 20,
        max_reassembly_bytes: (3 << 20) + (64 << 10),
        ..Config::default()
    };
    let mut s = Solo::new(&limits);
    s.handshake(65_536);
    s.consuming = false;
    let chunk = |channel: u8, n: usize, sent: u64| {
        Packet::Msg(Msg {
            channel,
            eof: false,
            kind: MsgKind::Plain,
            total: (sent == 0).then_some(1 << 20),
            payload: Bytes::from(vec![1u8; n]),
        })
    };
    // Every channel parks a partial message as large as it may be, within its credit.
    let mut sent = [0u64; 3];
    for _ in 0..200 {
        for (i, c) in [BULK, OTHER, URGENT].into_iter().enumerate() {
            let room = (s.granted(c) - sent[i])
                .min(64 << 10)
                .min((1 << 20) - 1 - sent[i]);
            if room > 0 {
                s.feed_packet(chunk(c, room as usize, sent[i]));
                sent[i] += room;
            }
        }
        s.advance(Duration::from_millis(60));
    }
    assert_eq!(
        sent,
        [(1 << 20) - 1; 3],
        "each got the credit for its message"
    );
    assert_eq!(
        s.reason(),
        None,
        "an honest sender within its credit is never closed"
    );
    let (_, allocated) = s.core.buffered_bytes();
    assert!(allocated <= limits.max_reassembly_bytes, "{allocated}");
    // A budget that cannot hold one partial message per channel is refused.
    let tight = Config {
        max_message_size: 1 << 20,
        max_reassembly_bytes: 2 << 20,
        ..Config::default()
    };
    let spec = test_service(channels_with(&tight));
    let err = switchyard_proto::connection::services::check_services(&tight, [&spec]).unwrap_err();
    assert_eq!(err.field, "max_reassembly_bytes");
}

#[test]
fn a_message_much_larger_than_the_window_arrives() {
    let mut p = Pair::new(&Config::default());
    p.connect();
    let big = Bytes::from(
        (0..4 << 20)
            .map(|i: u32| (i % 253) as u8)
            .collect::<Vec<u8>>(),
    );
    p.a.core.send(BULK, big.clone()).unwrap();
    assert!(p.run_until(Duration::from_secs(5), |p| !p.b.got(BULK).is_empty()));
    assert_eq!(p.b.payloads(BULK), vec![big]);
}

#[test]
fn windows_grow_for_a_fast_transfer_and_shrink_back_when_idle() {
    let limits = Config::default();
    let now = t0();
    let budget = Arc::new(RecvBudget::new(256 << 20));
    let a = core(now, 1, &limits, channels(), budget.clone());
    let b = core(now, 2, &limits, channels(), budget.clone());
    let mut p = Pair::from_cores(now, a, b);
    p.bandwidth = Some(1_000_000_000);
    p.latency = Duration::from_micros(100);
    p.capacity = 8 << 20;
    p.connect();
    let total: usize = 128 << 20;
    let msgs = numbered(total >> 20, 1 << 20);
    let start = p.now;
    for m in &msgs {
        p.a.core.send(BULK, m.clone()).unwrap();
    }
    assert!(p.run_until(Duration::from_secs(30), |p| p.b.got(BULK).len()
        == msgs.len()));
    let took = p.now - start;
    let line = Duration::from_secs_f64(total as f64 / 1e9);
    assert!(
        took < line * 2,
        "{took:?} for what the link moves in {line:?}"
    );
    let grown = p.b.core.channel_info(BULK).unwrap().recv;
    assert!(grown.window > limits.recv_window as u64, "{grown:?}");
    assert!(budget.remaining() < budget.capacity());
    // Idle: back to the initial window, the growth returned to the budget.
    p.run_for(limits.recv_window_idle + Duration::from_millis(10));
    let idle = p.b.core.channel_info(BULK).unwrap();
    assert_eq!(idle.recv.window, limits.recv_window as u64);
    assert_eq!(idle.recv.leased, 0);
    assert_eq!(
        idle.recv.granted - idle.recv.consumed,
        limits.recv_window as u64,
        "the remote gave back what it did not use"
    );
    assert_eq!(
        p.a.core.channel_info(BULK).unwrap().send.credit,
        limits.recv_window as u64
    );
    assert_eq!(budget.remaining(), budget.capacity());
    assert!(p.a.closed().is_none() && p.b.closed().is_none());
}

/// On a link slower than the window allows (100 MB/s, 200 µs round trip: 20 KB in
/// flight fill it), the window is not the bottleneck, so it does not grow: growing it
/// would only park bulk in buffers ahead of other channels' messages. The transfer
/// still runs at the link's rate.
#[test]
fn a_window_that_is_not_the_bottleneck_does_not_grow() {
    let limits = Config::default();
    let mut p = Pair::new(&limits);
    p.bandwidth = Some(100_000_000);
    p.latency = Duration::from_micros(100);
    p.capacity = 8 << 20;
    p.connect();
    let msgs = numbered(512, 64 << 10);
    let start = p.now;
    for m in &msgs {
        p.a.core.send(BULK, m.clone()).unwrap();
    }
    assert!(p.run_until(Duration::from_secs(30), |p| p.b.got(BULK).len()
        == msgs.len()));
    let took = p.now - start;
    let line = Duration::from_secs_f64((512 * (64 << 10)) as f64 / 1e8);
    assert!(
        took < line * 5 / 4,
        "{took:?} for what the link moves in {line:?}"
    );
    let w = p.b.core.channel_info(BULK).unwrap().recv;
    assert_eq!(w.window, limits.recv_window as u64, "{w:?}");
    assert_eq!(w.leased, 0);
}

#[test]
fn the_node_budget_bounds_growth_across_connections() {
    let limits = Config::default();
    let now = t0();
    let budget = Arc::new(RecvBudget::new(2 << 20));
    let mut pairs: Vec<Pair> = (0..3)
        .map(|i| {
            let a = core(
                now,
                10 + i,
                &limits,
                channels(),
                Arc::new(RecvBudget::new(0)),
            );
            let b = core(now, 20 + i, &limits, channels(), budget.clone());
            let mut p = Pair::from_cores(now, a, b);
            p.capacity = 8 << 20;
            p
        })
        .collect();
    let msgs = numbered(64, 256 << 10);
    for p in &mut pairs {
        p.connect();
        for m in &msgs {
            p.a.core.send(BULK, m.clone()).unwrap();
        }
    }
    let mut done = false;
    for _ in 0..100_000 {
        for p in &mut pairs {
            p.run_for(Duration::from_micros(200));
        }
        let leased: u64 = pairs
            .iter()
            .map(|p| p.b.core.channel_info(BULK).unwrap().recv.leased)
            .sum();
        assert!(leased <= 2 << 20, "{leased}");
        if pairs.iter().all(|p| p.b.got(BULK).len() == msgs.len()) {
            done = true;
            break;
        }
    }
    assert!(done, "every transfer completes within the shared budget");
    for p in &pairs {
        assert_eq!(p.b.payloads(BULK), msgs);
    }
}

/// Thirty peers each sending a message of the largest size to a service that never
/// consumes: what the node holds for all of them together stays within the default
/// node budget plus one initial window each, whatever they send.
#[test]
fn peers_parking_large_messages_hold_at_most_the_node_budget() {
    let limits = Config::default();
    let now = t0();
    let budget = Arc::new(RecvBudget::new(limits.recv_budget as u64));
    let peers = 30u8;
    let mut pairs: Vec<Pair> = (0..peers)
        .map(|i| {
            let a = core(
                now,
                100 + i,
                &limits,
                channels(),
                Arc::new(RecvBudget::new(0)),
            );
            let b = core(now, i, &limits, channels(), budget.clone());
            let mut p = Pair::from_cores(now, a, b);
            p.capacity = 8 << 20;
            p.connect();
            p.b.stall(BULK, true);
            p.a.core
                .send(BULK, Bytes::from(vec![7u8; limits.max_message_size]))
                .unwrap();
            p
        })
        .collect();
    let bound = limits.recv_budget as u64 + u64::from(peers) * limits.recv_window as u64;
    let mut most = 0u64;
    for _ in 0..400 {
        for p in &mut pairs {
            p.run_for(Duration::from_millis(5));
        }
        let held: u64 = pairs.iter().map(|p| p.b.core.buffered_bytes().0).sum();
        most = most.max(held);
        assert!(held <= bound, "{held} > {bound}");
    }
    // The budget was used, not merely unreached.
    assert!(most > bound / 2, "{most}");
    assert!(pairs
        .iter()
        .all(|p| p.a.closed().is_none() && p.b.closed().is_none()));
}

/// However tight the node budget, a message as large as a channel allows completes:
/// growth takes what is left rather than waiting for a whole doubling.
#[test]
fn a_tight_budget_cannot_deadlock_a_large_message() {
    let limits = Config {
        max_message_size: 1 << 20,
        ..Config::default()
    };
    let now = t0();
    let budget = Arc::new(RecvBudget::new((1 << 20) - (64 << 10) + 100));
    let a = core(now, 1, &limits, channels(), Arc::new(RecvBudget::new(0)));
    let b = core(now, 2, &limits, channels(), budget);
    let mut p = Pair::from_cores(now, a, b);
    p.connect();
    let big = Bytes::from(vec![3u8; 1 << 20]);
    p.a.core.send(BULK, big.clone()).unwrap();
    assert!(p.run_until(Duration::from_secs(5), |p| !p.b.got(BULK).is_empty()));
    assert_eq!(p.b.payloads(BULK), vec![big]);
}

#[test]
fn an_honest_peer_answers_a_reclaim_with_a_release() {
    let mut s = Solo::new(&Config::default());
    s.handshake(100_000);
    s.feed_packet(Packet::Reclaim {
        channel: BULK,
        bytes: 30_000,
    });
    s.feed_packet(Packet::Reclaim {
        channel: BULK,
        bytes: 90_000,
    });
    let released: Vec<u32> = s
        .written
        .iter()
        .filter_map(|p| match p {
            Packet::Release {
                channel: BULK,
                bytes,
            } => Some(*bytes),
            _ => None,
        })
        .collect();
    assert_eq!(released, vec![30_000, 70_000], "never more than it had");
    assert_eq!(s.core.channel_info(BULK).unwrap().send.credit, 0);
    assert_eq!(
        s.core.send(BULK, Bytes::from_static(b"x")),
        Ok(()),
        "queued: it waits for credit"
    );
    assert_eq!(s.reason(), None);
}

/// A sender told `Full` (by `send` or by `check_send`) waits for `Room`: the core must
/// report it once the queue drains, or that sender would wait forever.
#[test]
fn a_full_queue_reports_room_to_whoever_found_it_full() {
    let limits = Config::default();
    let small = |p| limits.channel(p).send_queue(4, 1 << 20);
    let chans = vec![(BULK, small(1)), (OTHER, small(1)), (URGENT, small(100))];
    let mut p = Pair::with_channels(&limits, chans.clone(), chans);
    p.connect();
    for _ in 0..4 {
        p.a.core.send(BULK, Bytes::from_static(b"x")).unwrap();
    }
    assert_eq!(
        p.a.core.check_send(BULK, 1),
        Err(switchyard_proto::PushError::Full)
    );
    p.run_for(Duration::from_millis(1));
    assert!(
        p.a.events.contains(&switchyard_proto::Event::Room(BULK)),
        "{:?}",
        p.a.events
    );
    assert_eq!(p.b.got(BULK).len(), 4);
}

/// A run of messages is queued as far as it fits, in order; the rest waits at the
/// front of the run for `Room`; an error stops the run at the payload it is about.
#[test]
fn a_run_is_queued_as_far_as_it_fits_and_goes_on_after_room() {
    let limits = Config::default();
    let small = |p| limits.channel(p).send_queue(4, 1 << 20);
    let chans = vec![(BULK, small(1)), (OTHER, small(1)), (URGENT, small(100))];
    let mut p = Pair::with_channels(&limits, chans.clone(), chans);
    p.connect();
    let msgs = numbered(6, 100);
    let mut run: std::collections::VecDeque<Bytes> = msgs.iter().cloned().collect();
    let sent = p.a.core.send_run(BULK, &mut run);
    assert_eq!(sent.queued, 4);
    assert_eq!(sent.stopped, Some(switchyard_proto::PushError::Full));
    assert_eq!(run, msgs[4..].to_vec());
    assert_eq!(
        sent.outcome(&run),
        Err(switchyard_proto::PushError::Full),
        "wait"
    );
    p.run_for(Duration::from_millis(1));
    assert!(p.a.events.contains(&switchyard_proto::Event::Room(BULK)));
    let sent = p.a.core.send_run(BULK, &mut run);
    assert_eq!((sent.queued, sent.stopped.clone()), (2, None));
    assert!(run.is_empty());
    assert_eq!(sent.outcome(&run), Ok(()));
    p.run_for(Duration::from_millis(1));
    assert_eq!(p.b.payloads(BULK), msgs);
    // A channel with no service up: nothing is queued, the run is left as it was.
    let mut run: std::collections::VecDeque<Bytes> = msgs.iter().cloned().collect();
    let sent = p.a.core.send_run(0x30, &mut run);
    assert_eq!(sent.queued, 0);
    assert!(sent
        .stopped
        .as_ref()
        .is_some_and(|e| *e != switchyard_proto::PushError::Full));
    assert_eq!(run.len(), msgs.len());
    assert!(matches!(sent.outcome(&run), Err(e) if e != switchyard_proto::PushError::Full));
}

/// Runs one 64 KiB-message transfer of `total` bytes from A to B, with `a_limits`
/// on A and `b_limits` on B; returns how long it took.
fn paced_transfer(a_limits: &Config, b_limits: &Config, total: usize) -> Duration {
    let now = t0();
    let budget = || Arc::new(RecvBudget::new(64 << 20));
    let a = core(now, 1, a_limits, channels_with(a_limits), budget());
    let b = core(now, 2, b_limits, channels_with(b_limits), budget());
    let mut p = Pair::from_cores(now, a, b);
    p.capacity = 8 << 20;
    p.connect();
    let msgs = numbered(total >> 16, 64 << 10);
    let start = p.now;
    for m in &msgs {
        p.a.core.send(BULK, m.clone()).unwrap();
    }
    assert!(p.run_until(Duration::from_secs(60), |p| p.b.got(BULK).len()
        == msgs.len()));
    assert_eq!(p.b.payloads(BULK), msgs);
    assert!(p.a.closed().is_none() && p.b.closed().is_none());
    p.now - start
}

/// `send_rate` paces what we write to a peer: 4 MiB at 1 MB/s takes about 4 s (less
/// the initial burst), not the milliseconds the link would need.
#[test]
fn the_send_rate_paces_our_writes() {
    let fast = Config::default();
    let paced = Config {
        send_rate: Some(1_000_000),
        ..Config::default()
    };
    let total = 4 << 20;
    let unpaced = paced_transfer(&fast, &fast, total);
    let took = paced_transfer(&paced, &fast, total);
    assert!(unpaced < Duration::from_millis(100), "{unpaced:?}");
    let ideal = Duration::from_secs_f64(total as f64 / 1e6);
    assert!(
        took > ideal * 8 / 10 && took < ideal * 11 / 10,
        "{took:?} for {ideal:?} at the rate"
    );
}

/// `recv_rate` paces what a peer may send us, through the credit we grant back: past
/// the initial window, 4 MiB at 1 MB/s takes about 4 s.
#[test]
fn the_recv_rate_paces_the_remote_through_credit() {
    let fast = Config::default();
    let paced = Config {
        recv_rate: Some(1_000_000),
        ..Config::default()
    };
    let total = 4 << 20;
    let took = paced_transfer(&fast, &paced, total);
    let ideal = Duration::from_secs_f64((total - paced.recv_window) as f64 / 1e6);
    assert!(
        took > ideal * 8 / 10 && took < ideal * 12 / 10,
        "{took:?} for {ideal:?} at the rate"
    );
}

/// A runtime hands a batch to a bounded mailbox: what the mailbox took has its credit
/// back at once; what it could not take goes back to the front of the queue, in
/// order; a hand-over waiting for room keeps its credit until it is taken.
#[test]
fn a_mailbox_hand_over_keeps_its_credit_until_taken() {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    s.consuming = false;
    for i in 0..4u8 {
        s.feed_msg(BULK, &[i; 100]);
    }
    let batch: Vec<_> = std::iter::from_fn(|| s.core.recv(BULK)).collect();
    assert_eq!(batch.len(), 4);
    let consumed = |s: &Solo| s.core.channel_info(BULK).unwrap().recv.consumed;
    assert_eq!(consumed(&s), 0);
    // Message 0 taken, 1 waits for room in the mailbox, 2 and 3 were not tried.
    let now = s.now;
    assert!(!s.core.is_handing_over(BULK) && !s.core.handing_over());
    s.core
        .handle_delivered(now, BULK, batch[2..].iter().cloned(), batch[1].cost());
    assert_eq!(consumed(&s), batch[0].cost());
    assert!(s.core.is_handing_over(BULK) && s.core.handing_over());
    assert!(!s.core.is_handing_over(OTHER));
    assert!(s.core.has_undelivered());
    // The unsent ones are back at the front, in order; taking them again does not
    // release the hand-over's credit.
    let again: Vec<_> = std::iter::from_fn(|| s.core.recv(BULK)).collect();
    assert_eq!(again, batch[2..].to_vec());
    assert_eq!(consumed(&s), batch[0].cost());
    s.core.handle_handover(now, BULK);
    assert_eq!(consumed(&s), batch[0].cost() + batch[1].cost());
    assert!(!s.core.is_handing_over(BULK) && !s.core.handing_over());
    // Messages 2 and 3 were taken again: nothing is left on its way.
    assert!(!s.core.has_undelivered());
    s.core.handle_delivered(now, BULK, std::iter::empty(), 0);
    let all: u64 = batch.iter().map(|m| m.cost()).sum();
    assert_eq!(consumed(&s), all);
    assert!(s.closed().is_none());
}
