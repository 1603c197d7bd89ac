//! Messages reach the right service by channel, in order, exactly once.

use std::time::{Duration, Instant};

use switchyard::{ChannelConfig, Dial, SendFailure, Shutdown};
use switchyard_integration_tests::*;

fn channels() -> Vec<(u8, ChannelConfig, Mode)> {
    vec![
        (1, ChannelConfig::new(1), Mode::PerMessage),
        (2, ChannelConfig::new(1), Mode::Batched),
        (3, ChannelConfig::new(1), Mode::Raw),
    ]
}

#[actix::test]
async fn each_channel_delivers_in_order_exactly_once() {
    init_logs();
    let a = start_node(test_config(), &channels()).await;
    let b = start_node(test_config(), &channels()).await;
    let to_b = connect(&a, &b).await;

    for seq in 0..2000u64 {
        let msg = TestMsg {
            seq,
            body: vec![seq as u8; (seq % 50) as usize],
        };
        let channel = if seq % 2 == 0 { 1 } else { 2 };
        to_b.send(&a.ch(channel), &msg).await.unwrap();
        if seq % 200 == 0 {
            to_b.send(
                &a.raw(3),
                bytes::Bytes::from(vec![7u8; 100_000 + seq as usize]),
            )
            .await
            .unwrap();
        }
    }
    assert!(
        b.log
            .wait_for(Duration::from_secs(20), |l| l.msgs.len() == 2000
                && l.raw.len() == 10)
            .await
    );
    {
        let log = b.log.lock();
        for channel in [1u8, 2] {
            let seqs: Vec<u64> = log
                .msgs
                .iter()
                .filter(|m| m.0 == channel)
                .map(|m| m.2.seq)
                .collect();
            let expected: Vec<u64> = (0..2000)
                .filter(|s| (s % 2 == 0) == (channel == 1))
                .collect();
            assert_eq!(seqs, expected, "channel {channel} in order, exactly once");
            assert!(log
                .msgs
                .iter()
                .filter(|m| m.0 == channel)
                .all(|m| m.1 == a.id));
            assert!(log
                .msgs
                .iter()
                .all(|(_, _, m)| m.body == vec![m.seq as u8; (m.seq % 50) as usize]));
        }
        let raw: Vec<usize> = log.raw.iter().map(|r| r.2).collect();
        assert_eq!(raw, (0..10).map(|i| 100_000 + i * 200).collect::<Vec<_>>());
    }
    assert!(a.log.lock().msgs.is_empty(), "nothing echoed back to A");
    a.switch.send(Shutdown).await.unwrap();
    b.switch.send(Shutdown).await.unwrap();
}

#[actix::test]
async fn a_million_small_messages_arrive_complete_and_ordered() {
    init_logs();
    const N: u64 = 1_000_000;
    let chans = [(
        1,
        ChannelConfig::new(1).send_queue(4096, 1 << 20),
        Mode::Batched,
    )];
    // Not a keepalive test: A's pings wait behind megabytes of its own flood in B's
    // socket, which a slow (debug) receiver may take longer than the 300 ms pong
    // timeout of the fast test limits to reach.
    let config = relaxed_keepalive_config();
    let a = start_node(config.clone(), &chans).await;
    let b = start_node(config, &chans).await;
    let to_b = a.switch.send(Dial(b.peer_addr())).await.unwrap().unwrap();
    let started = Instant::now();
    let ch = a.ch(1);
    let sender = actix::spawn(async move {
        for seq in 0..N {
            to_b.send(
                &ch,
                &TestMsg {
                    seq,
                    body: vec![0xab; 16],
                },
            )
            .await
            .unwrap();
        }
    });
    assert!(
        b.log
            .wait_for(Duration::from_secs(240), |l| l.msgs.len() as u64 >= N)
            .await,
        "all messages arrive"
    );
    let elapsed = started.elapsed();
    sender.await.unwrap();
    {
        let log = b.log.lock();
        assert_eq!(log.msgs.len() as u64, N, "exactly once");
        assert!(
            log.msgs
                .iter()
                .enumerate()
                .all(|(i, m)| m.2.seq == i as u64),
            "in order"
        );
        eprintln!(
            "1M messages: {:.2} s, {:.0} msgs/s, {} deliveries (avg batch {:.1})",
            elapsed.as_secs_f64(),
            N as f64 / elapsed.as_secs_f64(),
            log.deliveries,
            N as f64 / log.deliveries as f64
        );
    }
    a.switch.send(Shutdown).await.unwrap();
    b.switch.send(Shutdown).await.unwrap();
}

#[actix::test]
async fn send_all_queues_runs_in_order_waiting_for_room() {
    init_logs();
    // Queues far smaller than the runs, so send_all must wait for room repeatedly.
    let chans = [
        (
            1,
            ChannelConfig::new(1)
                .send_queue(16, 4096)
                .max_message_size(2048),
            Mode::Batched,
        ),
        (3, ChannelConfig::new(1).send_queue(4, 1 << 20), Mode::Raw),
    ];
    let a = start_node(test_config(), &chans).await;
    let b = start_node(test_config(), &chans).await;
    let to_b = a.switch.send(Dial(b.peer_addr())).await.unwrap().unwrap();

    // About 500 KB in all: several encode runs, each waiting for room.
    let msgs: Vec<TestMsg> = (0..1000u64)
        .map(|seq| TestMsg {
            seq,
            body: vec![seq as u8; (seq % 40) as usize * 25],
        })
        .collect();
    to_b.send_all(&a.ch(1), &msgs).await.unwrap();
    let raw = (0..50usize).map(|i| bytes::Bytes::from(vec![1u8; 1000 + i]));
    to_b.send_all(&a.raw(3), raw).await.unwrap();

    // An oversized message in the middle of a run: the messages before it stay
    // queued, the rest are not sent. (A channel this node does not have cannot be
    // named: only registering one gives its handle.)
    let tail = [
        TestMsg {
            seq: 1000,
            body: vec![],
        },
        TestMsg {
            seq: 1001,
            body: vec![0; 4096],
        },
        TestMsg {
            seq: 1002,
            body: vec![],
        },
    ];
    assert!(matches!(
        to_b.send_all(&a.ch(1), &tail).await,
        Err(SendFailure::TooLarge { channel: 1, .. })
    ));

    assert!(
        b.log
            .wait_for(Duration::from_secs(20), |l| l.msgs.len() == 1001
                && l.raw.len() == 50)
            .await
    );
    // Nothing more arrives after the failed run's first message.
    tokio::time::sleep(Duration::from_millis(100)).await;
    {
        let log = b.log.lock();
        let seqs: Vec<u64> = log.msgs.iter().map(|m| m.2.seq).collect();
        assert_eq!(seqs, (0..=1000).collect::<Vec<_>>());
        assert!(log
            .msgs
            .iter()
            .take(1000)
            .all(|(_, _, m)| m.body == vec![m.seq as u8; (m.seq % 40) as usize * 25]));
        let sizes: Vec<usize> = log.raw.iter().map(|r| r.2).collect();
        assert_eq!(sizes, (0..50).map(|i| 1000 + i).collect::<Vec<_>>());
    }
    a.switch.send(Shutdown).await.unwrap();
    b.switch.send(Shutdown).await.unwrap();
}

#[actix::test]
async fn send_all_runs_caller_code_outside_the_lock() {
    init_logs();
    let chans = [(3, ChannelConfig::new(1), Mode::Raw)];
    let a = start_node(test_config(), &chans).await;
    let b = start_node(test_config(), &chans).await;
    let to_b = a.switch.send(Dial(b.peer_addr())).await.unwrap().unwrap();

    // An iterator that uses the same handle while it is being drained must not
    // deadlock on the send lock.
    let inner = to_b.clone();
    let raw = a.raw(3);
    let reentrant = (0..3usize).map(move |i| {
        inner
            .try_send(&raw, bytes::Bytes::from(vec![2u8; 100]))
            .unwrap();
        bytes::Bytes::from(vec![1u8; 10 + i])
    });
    tokio::time::timeout(Duration::from_secs(5), to_b.send_all(&a.raw(3), reentrant))
        .await
        .expect("send_all returns")
        .unwrap();
    assert!(
        b.log
            .wait_for(Duration::from_secs(5), |l| l.raw.len() == 6)
            .await
    );

    {
        let log = b.log.lock();
        let mut sizes: Vec<usize> = log.raw.iter().map(|r| r.2).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![10, 11, 12, 100, 100, 100]);
    }
    a.switch.send(Shutdown).await.unwrap();
    b.switch.send(Shutdown).await.unwrap();
}

/// A run of large messages queued at once goes out whole on its own: nothing else
/// (credit coming back, a ping, another send) has to wake the writer. The window
/// holds the whole run and the keepalive is minutes away, so before the writer took
/// over from a sender's inline write, only the first 64 KiB left.
#[actix::test]
async fn a_run_of_large_messages_needs_nothing_else_to_go_out() {
    init_logs();
    let big = ChannelConfig::new(1)
        .max_message_size(1 << 20)
        .send_queue(64, 64 << 20)
        .recv_window(16 << 20, 16 << 20);
    let channels = [(3, big, Mode::Raw)];
    let config = relaxed_keepalive_config();
    let a = start_node(config.clone(), &channels).await;
    let b = start_node(config, &channels).await;
    let to_b = connect(&a, &b).await;
    // Every byte differs from its neighbours, so a byte out of place shows.
    let run: Vec<bytes::Bytes> = (0..8u32)
        .map(|i| {
            (0..1u32 << 20)
                .map(|j| (j.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i as u8)
                .collect::<Vec<u8>>()
                .into()
        })
        .collect();
    let digests: Vec<u64> = run.iter().map(|m| digest(m)).collect();
    to_b.send_all(&a.raw(3), run).await.unwrap();
    assert!(
        b.log
            .wait_for(Duration::from_secs(20), |l| l.raw.len() == 8)
            .await,
        "delivered {} of 8",
        b.log.lock().raw.len()
    );
    assert_eq!(b.log.lock().raw_digests, digests, "every byte in its place");
    a.switch.send(Shutdown).await.unwrap();
    b.switch.send(Shutdown).await.unwrap();
}

/// The waiting broadcast queues to every peer even when their queues are far smaller
/// than the burst (nothing dropped); the trying one reports whom it skipped; GetPeer
/// finds a peer by id.
#[actix::test]
async fn broadcast_waits_for_room_and_try_broadcast_reports_full_peers() {
    use switchyard::{Broadcast, GetPeer, TryBroadcast};
    init_logs();
    let chans = [(
        1,
        ChannelConfig::new(1).send_queue(4, 1 << 20),
        Mode::PerMessage,
    )];
    let hub = start_node(test_config(), &chans).await;
    let x = start_node(test_config(), &chans).await;
    let y = start_node(test_config(), &chans).await;
    connect(&hub, &x).await;
    connect(&hub, &y).await;
    let to_x = hub
        .switch
        .send(GetPeer(x.id))
        .await
        .unwrap()
        .expect("x is a peer");
    assert_eq!(to_x.id(), x.id);
    assert!(hub.switch.send(GetPeer(hub.id)).await.unwrap().is_none());

    const N: u64 = 500;
    for seq in 0..N {
        let sent = hub
            .switch
            .send(Broadcast {
                channel: hub.ch(1),
                msg: TestMsg { seq, body: vec![] },
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sent, 2);
    }
    for n in [&x, &y] {
        assert!(
            n.log
                .wait_for(Duration::from_secs(10), |l| l.msgs.len() as u64 == N)
                .await
        );
        let seqs: Vec<u64> = n.log.lock().msgs.iter().map(|m| m.2.seq).collect();
        assert_eq!(seqs, (0..N).collect::<Vec<_>>());
    }

    // X stops consuming: once its window and hub's queue to it are full, X is
    // reported full while Y still gets every message.
    x.gate.send(false).unwrap();
    let mut reported_full = false;
    for seq in N..N + 10_000 {
        let report = hub
            .switch
            .send(TryBroadcast {
                channel: hub.ch(1),
                msg: TestMsg {
                    seq,
                    body: vec![0; 1000],
                },
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(report.sent + report.full.len(), 2, "{report:?}");
        assert!(
            !report.full.contains(&y.id) || report.sent == 0,
            "{report:?}"
        );
        if report.full == vec![x.id] {
            reported_full = true;
            break;
        }
        // Y keeps up: wait until it has what was sent so far before the next.
        let want = seq + 1;
        assert!(
            y.log
                .wait_for(Duration::from_secs(10), |l| l.msgs.len() as u64 == want)
                .await
        );
    }
    assert!(reported_full, "the stalled peer was never reported full");
    x.gate.send(true).unwrap();
    for n in [&hub, &x, &y] {
        n.switch.send(Shutdown).await.unwrap();
    }
}
