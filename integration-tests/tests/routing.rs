//! Messages reach the right service by channel, in order, exactly once.

use std::time::{Duration, Instant};

use switchyard::{ChannelConfig, Dial, Shutdown};
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
    let to_b = a.switch.send(Dial(b.peer_addr())).await.unwrap().unwrap();
    assert_eq!(to_b.id(), b.id);
    assert!(
        b.log
            .wait_for(Duration::from_secs(5), |l| l.events
                == vec![Event::Up(a.id)])
            .await
    );

    for seq in 0..2000u64 {
        let msg = TestMsg {
            seq,
            body: vec![seq as u8; (seq % 50) as usize],
        };
        let channel = if seq % 2 == 0 { 1 } else { 2 };
        to_b.send(channel, &msg).await.unwrap();
        if seq % 200 == 0 {
            to_b.send_raw(3, bytes::Bytes::from(vec![7u8; 100_000 + seq as usize]))
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
    let a = start_node(test_config(), &chans).await;
    let b = start_node(test_config(), &chans).await;
    let to_b = a.switch.send(Dial(b.peer_addr())).await.unwrap().unwrap();
    let started = Instant::now();
    let sender = actix::spawn(async move {
        for seq in 0..N {
            to_b.send(
                1,
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
