//! Slow and stopped services: keepalive survives slowness, queues bound memory.

use std::time::Duration;

use switchyard::{ChannelConfig, Dial, DisconnectReason, SendError, Shutdown};
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
        to_b.send(1, &TestMsg { seq, body: vec![] }).await.unwrap();
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

#[actix::test]
async fn a_stopped_service_bounds_memory_and_the_sender_sees_full() {
    init_logs();
    // The receiver will not read for a while: keep the keepalive out of this test.
    let config = relaxed_keepalive_config();
    let chans = [(
        1,
        ChannelConfig::new(1).send_queue(64, 64 << 10),
        Mode::PerMessage,
    )];
    let a = start_node(config.clone(), &chans).await;
    let b = start_node_with(config, &chans, |r| r.with_mailbox(4)).await;
    b.gate.send(false).unwrap();
    let to_b = a.switch.send(Dial(b.peer_addr())).await.unwrap().unwrap();

    let body = vec![0x5a; 1024];
    let mut accepted = 0u64;
    let mut full = false;
    // Without backpressure this loop would queue everything; with it, `Full` comes
    // once the queue, both socket buffers and the service's mailbox are full.
    for _round in 0..200_000 {
        match to_b.try_send(
            1,
            &TestMsg {
                seq: accepted,
                body: body.clone(),
            },
        ) {
            Ok(()) => accepted += 1,
            Err(SendError::Full(1)) => {
                // Give the writer a moment: the queue may drain into the socket.
                tokio::time::sleep(Duration::from_millis(5)).await;
                if to_b
                    .try_send(
                        1,
                        &TestMsg {
                            seq: accepted,
                            body: body.clone(),
                        },
                    )
                    .is_err()
                {
                    full = true;
                    break;
                }
                accepted += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
        if accepted.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    }
    assert!(full, "the sender must see Full (accepted {accepted})");
    // Queue (64 KiB) + kernel socket buffers + reader and mailbox: a few MiB at most.
    eprintln!("accepted before Full: {accepted} messages of 1 KiB");
    assert!(
        accepted < 50_000,
        "memory is bounded ({accepted} KiB accepted of 200 000 tried)"
    );
    assert!(
        b.log.lock().msgs.len() <= 8,
        "the stopped service got at most its mailbox"
    );

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
    let mut config = relaxed_keepalive_config();
    config.limits.linger = Duration::from_millis(500);
    let chans = [(1, ChannelConfig::new(1), Mode::PerMessage)];
    let a = start_node(config.clone(), &chans).await;
    let b = start_node_with(config, &chans, |r| r.with_mailbox(2)).await;
    b.gate.send(false).unwrap();
    let to_b = a.switch.send(Dial(b.peer_addr())).await.unwrap().unwrap();
    for seq in 0..64 {
        let _ = to_b.try_send(
            1,
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
    // B's peer is blocked delivering to its stuck service; shutting B down must not hang.
    let done = tokio::time::timeout(Duration::from_secs(20), b.switch.send(Shutdown)).await;
    assert!(done.is_ok(), "shutdown finished");
    a.switch.send(Shutdown).await.unwrap();
}

/// While a peer's reader waits on a service that does not consume, the peer can still
/// be closed (its actor keeps handling messages; only reading is paused).
#[actix::test]
async fn a_peer_waiting_on_a_stopped_service_can_still_be_closed() {
    init_logs();
    // B will not read while its service is stopped: keep A's keepalive out of it.
    let config = relaxed_keepalive_config();
    let chans = [(1, ChannelConfig::new(1), Mode::PerMessage)];
    let a = start_node(config.clone(), &chans).await;
    let b = start_node_with(config, &chans, |r| r.with_mailbox(2)).await;
    let to_b = a.switch.send(Dial(b.peer_addr())).await.unwrap().unwrap();
    assert!(
        b.log
            .wait_for(Duration::from_secs(5), |l| l.events
                == vec![Event::Up(a.id)])
            .await
    );
    let b_to_a = b.log.handle_of(a.id).unwrap();
    b.gate.send(false).unwrap();
    for seq in 0..50 {
        to_b.try_send(1, &TestMsg { seq, body: vec![] }).unwrap();
    }
    // B's service took one message and stopped; its mailbox is full; B's reader waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.log.lock().msgs.len() <= 3);

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
