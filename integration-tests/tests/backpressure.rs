//! Slow and stopped services over real sockets, with short keepalive timings: a
//! stalled service stalls only its own channel, memory stays within its window and
//! queue, the keepalive and the other channels go on, and nothing is lost.

use std::time::Duration;

use actix::prelude::*;
use switchyard::{
    ChannelConfig, Dial, DisconnectReason, GetInfo, SendFailure, Service, Shutdown, Switch,
};
use switchyard_integration_tests::*;

#[actix::test]
async fn a_service_slower_than_the_pong_timeout_keeps_its_peer() {
    init_logs();
    let chans = [(1, ChannelConfig::new(1), Mode::PerMessage)];
    let a = start_node(test_config(), &chans).await;
    // Each delivery at B takes 4 pong timeouts.
    let slow = fast_limits().pong_timeout * 4;
    let b = start_node_with(test_config(), &chans, |r| r.with_delay(slow)).await;
    let to_b = a.switch.send(Dial(b.peer_addr())).await.unwrap().unwrap();
    for seq in 0..3 {
        to_b.send(&a.ch(1), &TestMsg { seq, body: vec![] })
            .await
            .unwrap();
    }
    assert!(b.log.wait_for(slow * 5, |l| l.msgs.len() == 3).await);
    // Several ping intervals later, still connected on both sides.
    tokio::time::sleep(fast_limits().ping_interval * 3).await;
    assert!(!to_b.is_closed());
    assert_eq!(a.log.lock().events, vec![Event::Up(b.id)]);
    assert_eq!(b.log.lock().events, vec![Event::Up(a.id)]);
    a.switch.send(Shutdown).await.unwrap();
    b.switch.send(Shutdown).await.unwrap();
}

/// A node whose channel 1 goes to one recorder and channel 2 to another, so that one
/// service can stop while the other goes on.
async fn two_service_node() -> (Node, Shared, tokio::sync::watch::Sender<bool>) {
    let stalled_log = Shared::default();
    let (stalled, gate) = Recorder::new(stalled_log.clone());
    let stalled = stalled.with_mailbox(4).start();
    let log = Shared::default();
    let (other, other_gate) = Recorder::new(log.clone());
    let other = other.start();
    let mut service = Service::new(SERVICE, 1);
    service.on_peer_up(&other).on_peer_down(&other);
    let msg_channels = vec![
        service.channel(1, ChannelConfig::new(1), &stalled),
        service.channel(2, ChannelConfig::new(1), &other),
    ];
    let switch = Switch::builder(test_config())
        .service(service)
        .start()
        .unwrap();
    let info = switch.send(GetInfo).await.unwrap();
    let node = Node {
        switch,
        id: info.id,
        addr: info.listen_addr.unwrap(),
        log,
        gate: other_gate,
        msg_channels,
        raw_channels: Vec::new(),
    };
    (node, stalled_log, gate)
}

#[actix::test]
async fn a_stalled_service_stalls_only_its_channel_and_the_keepalive_goes_on() {
    init_logs();
    let chans = [
        (1, ChannelConfig::new(1), Mode::PerMessage),
        (2, ChannelConfig::new(1), Mode::PerMessage),
    ];
    let a = start_node(test_config(), &chans).await;
    let (b, stalled_log, gate) = two_service_node().await;
    gate.send(false).unwrap();
    let to_b = a.switch.send(Dial(b.peer_addr())).await.unwrap().unwrap();
    let body = vec![0x5a; 1000];
    // Fill channel 1 as far as it goes (B's window for it, then A's queue) until it
    // stays full.
    let mut stalled_sent = 0u64;
    loop {
        let msg = TestMsg {
            seq: stalled_sent,
            body: body.clone(),
        };
        if to_b.try_send(&a.ch(1), &msg).is_ok() {
            stalled_sent += 1;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if to_b.try_send(&a.ch(1), &msg).is_err() {
            break;
        }
        stalled_sent += 1;
    }
    // For over three pong timeouts, channel 2 keeps delivering every message.
    let stall = fast_limits().pong_timeout * 3 + fast_limits().ping_interval;
    let until = tokio::time::Instant::now() + stall;
    let mut other_sent = 0u64;
    while tokio::time::Instant::now() < until {
        for _ in 0..10 {
            to_b.send(
                &a.ch(2),
                &TestMsg {
                    seq: other_sent,
                    body: vec![1],
                },
            )
            .await
            .unwrap();
            other_sent += 1;
        }
        assert!(
            b.log
                .wait_for(Duration::from_secs(2), |l| l.msgs.len() as u64
                    == other_sent)
                .await,
            "channel 2 waits behind the stalled channel 1"
        );
        // More for channel 1 keeps being refused: it is still stalled.
        assert_eq!(
            to_b.try_send(
                &a.ch(1),
                &TestMsg {
                    seq: 0,
                    body: vec![]
                }
            ),
            Err(SendFailure::Full(1))
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!to_b.is_closed(), "the keepalive did not close the peer");
    assert!(a.log.lock().events == vec![Event::Up(b.id)]);
    // B holds no more for channel 1 than its window (plus the service's mailbox).
    let b_side = b.log.handle_of(a.id).unwrap();
    let info = b_side.channel_info(1).unwrap();
    let held = info.recv.received - info.recv.consumed;
    assert!(
        held <= info.recv.window,
        "{held} held, window {}",
        info.recv.window
    );
    // What the sender could queue: its send queue, B's window, the mailbox.
    let cfg = ChannelConfig::new(1);
    let bound = cfg.send_queue_messages as u64 + cfg.recv_window as u64 / 1000 + 8;
    assert!(
        stalled_sent <= bound,
        "queue and window bound the sender: {stalled_sent} messages, bound {bound}"
    );
    // Resume: everything sent on channel 1 arrives, in order, exactly once.
    gate.send(true).unwrap();
    assert!(
        stalled_log
            .wait_for(Duration::from_secs(10), |l| l.msgs.len() as u64
                == stalled_sent)
            .await
    );
    let seqs: Vec<u64> = stalled_log.lock().msgs.iter().map(|m| m.2.seq).collect();
    assert_eq!(seqs, (0..stalled_sent).collect::<Vec<_>>());
    a.switch.send(Shutdown).await.unwrap();
    b.switch.send(Shutdown).await.unwrap();
}

#[actix::test]
async fn a_stopped_service_bounds_memory_and_the_sender_sees_full() {
    init_logs();
    let chans = [(
        1,
        ChannelConfig::new(1).send_queue(64, 64 << 10),
        Mode::PerMessage,
    )];
    let a = start_node(test_config(), &chans).await;
    let b = start_node_with(test_config(), &chans, |r| r.with_mailbox(4)).await;
    b.gate.send(false).unwrap();
    let to_b = a.switch.send(Dial(b.peer_addr())).await.unwrap().unwrap();

    let body = vec![0x5a; 1024];
    let mut accepted = 0u64;
    // Without backpressure this loop would queue everything; with it, `Full` comes
    // once B's window for the channel and A's queue are full.
    let full = loop {
        match to_b.try_send(
            &a.ch(1),
            &TestMsg {
                seq: accepted,
                body: body.clone(),
            },
        ) {
            Ok(()) => accepted += 1,
            Err(SendFailure::Full(1)) => {
                // Let the credit that is due come back; then it must stay full.
                tokio::time::sleep(Duration::from_millis(200)).await;
                match to_b.try_send(
                    &a.ch(1),
                    &TestMsg {
                        seq: accepted,
                        body: body.clone(),
                    },
                ) {
                    Ok(()) => accepted += 1,
                    Err(_) => break true,
                }
            }
            Err(e) => panic!("unexpected {e}"),
        }
        if accepted > 10_000 {
            break false;
        }
    };
    assert!(full, "the sender must see Full (accepted {accepted})");
    // A's queue (64 messages) + B's window + the mailbox.
    let bound = 64 + ChannelConfig::new(1).recv_window as u64 / 1024 + 8;
    assert!(
        accepted <= bound,
        "memory is bounded by queue and window ({accepted} KiB accepted, bound {bound})"
    );
    assert!(
        b.log.lock().msgs.len() <= 8,
        "the stopped service got at most its mailbox"
    );
    // Three pong timeouts later the peer is still up: the reader never stopped.
    tokio::time::sleep(fast_limits().pong_timeout * 3).await;
    assert!(!to_b.is_closed());

    // Open the gate: everything accepted arrives, in order, exactly once.
    b.gate.send(true).unwrap();
    assert!(
        b.log
            .wait_for(Duration::from_secs(20), |l| l.msgs.len() as u64 == accepted)
            .await
    );
    assert!(b
        .log
        .lock()
        .msgs
        .iter()
        .enumerate()
        .all(|(i, m)| m.2.seq == i as u64));
    a.switch.send(Shutdown).await.unwrap();
    b.switch.send(Shutdown).await.unwrap();
}

#[actix::test]
async fn shutdown_completes_even_when_a_service_never_consumes() {
    init_logs();
    let mut config = test_config();
    config.limits.linger = Duration::from_millis(500);
    let chans = [(1, ChannelConfig::new(1), Mode::PerMessage)];
    let a = start_node(config.clone(), &chans).await;
    let b = start_node_with(config, &chans, |r| r.with_mailbox(2)).await;
    b.gate.send(false).unwrap();
    let to_b = a.switch.send(Dial(b.peer_addr())).await.unwrap().unwrap();
    for seq in 0..64 {
        let _ = to_b.try_send(
            &a.ch(1),
            &TestMsg {
                seq,
                body: vec![0; 64],
            },
        );
    }
    assert!(
        b.log
            .wait_for(Duration::from_secs(5), |l| !l.msgs.is_empty())
            .await
    );
    // B has messages its stuck service will never take; shutting B down must not hang.
    let done = tokio::time::timeout(Duration::from_secs(20), b.switch.send(Shutdown)).await;
    assert!(done.is_ok(), "shutdown finished");
    a.switch.send(Shutdown).await.unwrap();
}

/// While a service does not consume, its peer can still be closed and its remote
/// hears why at once.
#[actix::test]
async fn a_peer_with_a_stopped_service_can_still_be_closed() {
    init_logs();
    let chans = [(1, ChannelConfig::new(1), Mode::PerMessage)];
    let a = start_node(test_config(), &chans).await;
    let b = start_node_with(test_config(), &chans, |r| r.with_mailbox(2)).await;
    let to_b = connect(&a, &b).await;
    let b_to_a = b.log.handle_of(a.id).unwrap();
    b.gate.send(false).unwrap();
    for seq in 0..50 {
        to_b.try_send(&a.ch(1), &TestMsg { seq, body: vec![] })
            .unwrap();
    }
    assert!(
        b.log
            .wait_for(Duration::from_secs(5), |l| !l.msgs.is_empty())
            .await
    );
    b_to_a.disconnect(DisconnectReason::Application("maintenance".into()));
    assert!(
        a.log
            .wait_for(Duration::from_secs(3), |l| l.events.contains(&Event::Down(
                b.id,
                DisconnectReason::ByRemote(Box::new(DisconnectReason::Application(
                    "maintenance".into()
                )))
            )))
            .await,
        "A saw the close while B's service was still stopped: {:?}",
        a.log.lock().events
    );
    b.gate.send(true).unwrap();
    a.switch.send(Shutdown).await.unwrap();
    b.switch.send(Shutdown).await.unwrap();
}

/// `recv_rate` paces a sender that would go faster: the bytes the receiving service
/// counts over a few seconds come within 20% of the limit (the credit the receiver
/// grants back is what paces it; nothing is dropped).
#[actix::test]
async fn a_sender_above_the_receive_rate_is_paced_to_it() {
    init_logs();
    const RATE: u64 = 2_000_000;
    let chans = [(
        1,
        ChannelConfig::new(1).max_message_size(1 << 20),
        Mode::Raw,
    )];
    let mut cfg = relaxed_keepalive_config();
    cfg.limits.recv_rate = Some(RATE);
    let b = start_node(cfg, &chans).await;
    let a = start_node(relaxed_keepalive_config(), &chans).await;
    let to_b = connect(&a, &b).await;
    let ch = a.raw(1);
    let payload = bytes::Bytes::from(vec![7u8; 16 << 10]);
    // Far more than the test measures, sent as fast as the credit allows.
    let total = 16usize << 20;
    let sender = actix::spawn(async move {
        for _ in 0..total / payload.len() {
            if to_b.send(&ch, payload.clone()).await.is_err() {
                break;
            }
        }
    });
    let received = |l: &Log| l.raw.iter().map(|r| r.2).sum::<usize>();
    // The window opens once the first burst (the initial credit) is through.
    assert!(
        b.log
            .wait_for(Duration::from_secs(10), |l| received(l) >= 1 << 20)
            .await
    );
    let (t1, b1) = (std::time::Instant::now(), received(&b.log.lock()));
    // A measurement window, not a wait for something to settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (t2, b2) = (std::time::Instant::now(), received(&b.log.lock()));
    let rate = (b2 - b1) as f64 / (t2 - t1).as_secs_f64();
    assert!(
        (RATE as f64 * 0.8..=RATE as f64 * 1.2).contains(&rate),
        "received {rate:.0} B/s against a limit of {RATE} B/s"
    );
    log::info!("paced at {rate:.0} B/s (limit {RATE})");
    sender.abort();
}
