//! Priorities end to end: a high-priority channel keeps flowing while a bulk channel
//! saturates the connection with 1 MiB messages.

use std::time::Duration;

use bytes::Bytes;
use switchyard::{ChannelConfig, Dial, Shutdown};
use switchyard_integration_tests::*;

const BULK: u8 = 1;
const URGENT: u8 = 2;

#[actix::test]
async fn high_priority_overtakes_a_bulk_backlog() {
    init_logs();
    // 512 MiB of bulk (one shared 1 MiB buffer, so the sender's memory stays small),
    // sent at most at 256 MB/s: the backlog lasts two seconds whatever the machine,
    // well beyond the 5 ms polls of `wait_for` (on a busy machine, a backlog sent at
    // full speed could drain between two polls of a starved test thread).
    const BULK_MSGS: usize = 512;
    let chans = [
        (
            BULK,
            ChannelConfig::new(1)
                .send_queue(BULK_MSGS, BULK_MSGS << 20)
                .max_message_size(2 << 20),
            Mode::Raw,
        ),
        (URGENT, ChannelConfig::new(100), Mode::Raw),
    ];
    let mut config = test_config();
    config.limits.send_rate = Some(256_000_000);
    let a = start_node(config, &chans).await;
    let b = start_node(test_config(), &chans).await;
    let to_b = a.switch.send(Dial(b.peer_addr())).await.unwrap().unwrap();
    let mb = Bytes::from(vec![0x42u8; 1 << 20]);
    for _ in 0..BULK_MSGS {
        to_b.try_send(&a.raw(BULK), mb.clone()).unwrap();
    }
    // Wave 1: queued behind the whole backlog.
    for i in 0..5u8 {
        to_b.try_send(&a.raw(URGENT), Bytes::from(vec![i; 64]))
            .unwrap();
    }
    // Wave 2: while the bulk channel is busy.
    assert!(
        b.log
            .wait_for(Duration::from_secs(60), |l| l
                .raw
                .iter()
                .filter(|r| r.0 == BULK)
                .count()
                >= 16)
            .await
    );
    for i in 5..10u8 {
        to_b.try_send(&a.raw(URGENT), Bytes::from(vec![i; 64]))
            .unwrap();
    }
    let seen_at_wave2 = b.log.lock().raw.iter().filter(|r| r.0 == BULK).count();
    assert!(
        b.log
            .wait_for(Duration::from_secs(120), |l| l.raw.len() == BULK_MSGS + 10)
            .await
    );
    {
        let log = b.log.lock();
        let order: Vec<u8> = log.raw.iter().map(|r| r.0).collect();
        let bulk_before = |nth: usize| {
            let pos = order
                .iter()
                .enumerate()
                .filter(|(_, &c)| c == URGENT)
                .nth(nth)
                .map(|(i, _)| i)
                .unwrap();
            order[..pos].iter().filter(|&&c| c == BULK).count()
        };
        let wave1 = bulk_before(4);
        let wave2 = bulk_before(9);
        eprintln!(
        "bulk messages delivered before urgent wave 1: {wave1}; before wave 2: {wave2}, of which {} after it was queued (of {BULK_MSGS})",
        wave2 - seen_at_wave2.min(wave2)
    );
        // Only what was already in flight (socket buffers, the chunk being written) may
        // precede an urgent message: a few MiB, far from the whole backlog.
        assert!(wave1 < 16, "wave 1 waited for {wave1} bulk messages");
        assert!(
            wave2.saturating_sub(seen_at_wave2) < 16,
            "wave 2 waited for {} bulk messages",
            wave2.saturating_sub(seen_at_wave2)
        );
        assert!(
            wave2 < BULK_MSGS,
            "urgent messages arrived before the backlog drained"
        );
        assert_eq!(order.iter().filter(|&&c| c == URGENT).count(), 10);
    }
    a.switch.send(Shutdown).await.unwrap();
    b.switch.send(Shutdown).await.unwrap();
}
