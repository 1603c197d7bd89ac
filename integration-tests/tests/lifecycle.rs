//! Connection lifecycle: duplicate tie-break, limits, persistent peers, shutdown.

use std::time::Duration;

use switchyard::{
    ChannelConfig, Dial, DialError, Direction, DisconnectReason, GetPeers, NodeKey, Shutdown,
};
use switchyard_integration_tests::*;

fn chans() -> Vec<(u8, ChannelConfig, Mode)> {
    vec![(1, ChannelConfig::new(1), Mode::PerMessage)]
}

#[actix::test]
async fn simultaneous_dials_keep_the_connection_dialed_by_the_lower_id() {
    init_logs();
    for _round in 0..3 {
        let a = start_node(test_config(), &chans()).await;
        let b = start_node(test_config(), &chans()).await;
        let (ra, rb) = tokio::join!(
            a.switch.send(Dial(b.peer_addr())),
            b.switch.send(Dial(a.peer_addr()))
        );
        let _ = (ra.unwrap(), rb.unwrap());
        // Let both sides settle, then check they agree.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pa = a.switch.send(GetPeers).await.unwrap();
        let pb = b.switch.send(GetPeers).await.unwrap();
        assert_eq!((pa.len(), pb.len()), (1, 1), "one connection survives");
        let (low, high, low_peers, high_peers) = if a.id < b.id {
            (&a, &b, &pa, &pb)
        } else {
            (&b, &a, &pb, &pa)
        };
        assert_eq!(low_peers[0].id(), high.id);
        assert_eq!(high_peers[0].id(), low.id);
        assert_eq!(
            low_peers[0].direction(),
            Direction::Outbound,
            "the lower id dialed the survivor"
        );
        assert_eq!(high_peers[0].direction(), Direction::Inbound);
        assert_eq!(low_peers[0].remote_addr().port(), high.addr.port());
        // Services see a consistent story: the last event for the peer is Up.
        for n in [&a, &b] {
            let events = n.log.lock().events.clone();
            assert!(matches!(events.last(), Some(Event::Up(_))), "{events:?}");
            let ups = events.iter().filter(|e| matches!(e, Event::Up(_))).count();
            let downs = events
                .iter()
                .filter(|e| matches!(e, Event::Down(..)))
                .count();
            assert_eq!(ups, downs + 1, "{events:?}");
        }
        a.switch.send(Shutdown).await.unwrap();
        b.switch.send(Shutdown).await.unwrap();
    }
}

#[actix::test]
async fn max_inbound_and_max_outbound_refuse_with_their_reasons() {
    init_logs();
    let mut cfg = test_config();
    cfg.limits.max_inbound = 1;
    let hub = start_node(cfg, &chans()).await;
    let x = start_node(test_config(), &chans()).await;
    let y = start_node(test_config(), &chans()).await;
    x.switch.send(Dial(hub.peer_addr())).await.unwrap().unwrap();
    let refused = y.switch.send(Dial(hub.peer_addr())).await.unwrap();
    assert_eq!(
        refused.unwrap_err(),
        DialError::Closed(DisconnectReason::ByRemote(Box::new(
            DisconnectReason::MaxInbound
        )))
    );

    let mut cfg = test_config();
    cfg.limits.max_outbound = 1;
    let dialer = start_node(cfg, &chans()).await;
    dialer
        .switch
        .send(Dial(x.peer_addr()))
        .await
        .unwrap()
        .unwrap();
    let refused = dialer.switch.send(Dial(y.peer_addr())).await.unwrap();
    assert_eq!(
        refused.unwrap_err(),
        DialError::Closed(DisconnectReason::MaxOutbound)
    );
    for n in [hub, x, y, dialer] {
        n.switch.send(Shutdown).await.unwrap();
    }
}

#[actix::test]
async fn a_persistent_peer_is_redialed_after_its_node_restarts() {
    init_logs();
    let key = NodeKey::generate();
    let b = start_node_keyed(test_config(), key.clone()).await;
    let b_addr = b.addr;
    let mut cfg = test_config();
    cfg.persistent_peers = vec![b.peer_addr()];
    let a = start_node(cfg, &chans()).await;
    assert!(
        a.log
            .wait_for(Duration::from_secs(5), |l| l.events
                == vec![Event::Up(b.id)])
            .await
    );

    // B goes away gracefully; A sees why.
    b.switch.send(Shutdown).await.unwrap();
    assert!(
        a.log
            .wait_for(Duration::from_secs(5), |l| l.events.len() == 2)
            .await
    );
    assert_eq!(
        a.log.lock().events[1],
        Event::Down(
            b.id,
            DisconnectReason::ByRemote(Box::new(DisconnectReason::Shutdown))
        )
    );
    // Let a redial or two fail against the closed port, then bring B back on it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut cfg = test_config();
    cfg.listen = Some(b_addr);
    let b2 = start_node_keyed(cfg, key).await;
    assert!(
        a.log
            .wait_for(Duration::from_secs(10), |l| l.events.len() == 3)
            .await,
        "A reconnects: {:?}",
        a.log.lock().events
    );
    assert_eq!(a.log.lock().events[2], Event::Up(b2.id));
    a.switch.send(Shutdown).await.unwrap();
    b2.switch.send(Shutdown).await.unwrap();
}

async fn start_node_keyed(config: switchyard::NodeConfig, key: NodeKey) -> Node {
    use actix::prelude::*;
    use switchyard::{GetInfo, Service, Switch};
    let log = Shared::default();
    let (recorder, gate) = Recorder::new(log.clone());
    let recorder = recorder.start();
    let mut service = Service::new(SERVICE, 1);
    service.on_peer_up(&recorder).on_peer_down(&recorder);
    let ch = service.channel(1, ChannelConfig::new(1), &recorder);
    let switch = Switch::builder(config)
        .key(key)
        .service(service)
        .start()
        .expect("start");
    let info = switch.send(GetInfo).await.unwrap();
    Node {
        switch,
        id: info.id,
        addr: info.listen_addr.unwrap(),
        log,
        gate,
        msg_channels: vec![ch],
        raw_channels: Vec::new(),
    }
}

#[actix::test]
async fn graceful_shutdown_delivers_everything_queued() {
    init_logs();
    let chans = [(
        1,
        ChannelConfig::new(1).send_queue(20_000, 64 << 20),
        Mode::Batched,
    )];
    let a = start_node(test_config(), &chans).await;
    let b = start_node(test_config(), &chans).await;
    let to_b = a.switch.send(Dial(b.peer_addr())).await.unwrap().unwrap();
    const N: u64 = 10_000;
    for seq in 0..N {
        to_b.try_send(
            &a.ch(1),
            &TestMsg {
                seq,
                body: vec![9; 512],
            },
        )
        .unwrap();
    }
    // Shut A down at once: the queue must still be written before the goodbye.
    a.switch.send(Shutdown).await.unwrap();
    assert!(
        b.log
            .wait_for(Duration::from_secs(10), |l| l.events.len() == 2)
            .await
    );
    {
        let log = b.log.lock();
        assert_eq!(log.msgs.len() as u64, N, "everything queued was delivered");
        assert!(log
            .msgs
            .iter()
            .enumerate()
            .all(|(i, m)| m.2.seq == i as u64));
        assert_eq!(
            log.events[1],
            Event::Down(
                a.id,
                DisconnectReason::ByRemote(Box::new(DisconnectReason::Shutdown))
            )
        );
    }
    assert_eq!(
        a.log.lock().events,
        vec![
            Event::Up(b.id),
            Event::Down(b.id, DisconnectReason::Shutdown)
        ]
    );
    assert!(to_b
        .try_send(
            &a.ch(1),
            &TestMsg {
                seq: 0,
                body: vec![]
            }
        )
        .is_err());
    b.switch.send(Shutdown).await.unwrap();
}

/// A flood of connections beyond the limits: the first ones are told why they are
/// refused, the rest are closed at once, so refusals cannot pile up.
#[actix::test]
async fn a_connection_flood_is_refused_without_piling_up() {
    init_logs();
    let mut cfg = test_config();
    cfg.limits.max_inbound = 1;
    let hub = start_node(cfg, &chans()).await;
    let x = start_node(test_config(), &chans()).await;
    x.switch.send(Dial(hub.peer_addr())).await.unwrap().unwrap();
    // 100 connections that stay open and read nothing until asked.
    let mut raws = Vec::new();
    for _ in 0..100 {
        raws.push(RawPeer::connect(hub.addr).await);
    }
    let (mut told, mut dropped) = (0, 0);
    for raw in &mut raws {
        match raw.closed(Duration::from_secs(5), false).await {
            Closed::Goodbye(DisconnectReason::MaxInbound) => told += 1,
            Closed::Silently => dropped += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!((1..=64).contains(&told), "told {told}");
    assert_eq!(told + dropped, 100);
    // The node still serves its peer.
    let to_hub = x.log.handle_of(hub.id).unwrap();
    to_hub
        .send(
            &x.ch(1),
            &TestMsg {
                seq: 7,
                body: vec![],
            },
        )
        .await
        .unwrap();
    assert!(
        hub.log
            .wait_for(Duration::from_secs(5), |l| l
                .msgs
                .iter()
                .any(|m| m.2.seq == 7))
            .await
    );
    hub.switch.send(Shutdown).await.unwrap();
    x.switch.send(Shutdown).await.unwrap();
}

/// A channel whose messages could never fit the connection's reassembly budget is a
/// start error that names the field, not a node that cannot receive them.
#[actix::test]
async fn a_channel_larger_than_the_reassembly_budget_is_refused_at_start() {
    use actix::prelude::*;
    use switchyard::{Service, StartError, Switch};
    let log = Shared::default();
    let (recorder, _gate) = Recorder::new(log);
    let recorder = recorder.start();
    let mut service = Service::new(SERVICE, 1);
    service.channel::<TestMsg, _>(
        1,
        ChannelConfig::new(1).max_message_size(32 << 20),
        &recorder,
    );
    match Switch::builder(test_config()).service(service).start() {
        Err(StartError::Config(e)) => assert_eq!(e.field, "limits.max_reassembly_bytes", "{e}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("started with a channel the budget cannot hold"),
    }
    // Channels that fit one by one but not together: one partial message per channel
    // must fit at once, or concurrent large messages could wait on each other forever.
    let ten = ChannelConfig::new(1).max_message_size(10 << 20);
    let mut service = Service::new(SERVICE, 1);
    service.channel::<TestMsg, _>(1, ten, &recorder);
    service.channel::<TestMsg, _>(2, ten, &recorder);
    match Switch::builder(test_config()).service(service).start() {
        Err(StartError::Config(e)) => {
            assert_eq!(e.field, "limits.max_reassembly_bytes", "{e}");
            assert!(e.problem.contains("one partial message per channel"), "{e}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("started with channels the budget cannot hold together"),
    }
}

/// Dialing our own address (id unknown) is caught by the handshake's nonce, with the
/// error that tells persistent-peer redialing to give up on it.
#[actix::test]
async fn dialing_ourselves_is_a_self_connection() {
    init_logs();
    let node = start_node(test_config(), &chans()).await;
    let own = switchyard::PeerAddr::new(None, node.addr);
    let res = node.switch.send(Dial(own)).await.unwrap();
    assert!(
        matches!(
            res,
            Err(DialError::Closed(DisconnectReason::Handshake(
                switchyard::proto::connection::handshake::HandshakeError::SelfConnection
            )))
        ),
        "{res:?}"
    );
    node.switch.send(Shutdown).await.unwrap();
}

#[test]
fn starting_outside_a_system_is_an_error_not_a_panic() {
    assert!(matches!(
        switchyard::Switch::builder(test_config()).start(),
        Err(switchyard::StartError::NoSystem)
    ));
}

#[test]
fn a_system_that_ends_before_the_switch_ran_ends_quietly() {
    // The Switch is dropped unstarted when the System goes: nothing may need a
    // reactor then. (Such a panic happens inside the runtime's teardown and does not
    // propagate, so the hook records it.)
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = seen.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut s) = record.lock() {
            s.push(info.to_string());
        }
    }));
    actix::System::new().block_on(async {
        switchyard::Switch::builder(test_config())
            .start()
            .expect("starts");
    });
    std::panic::set_hook(previous);
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(
        !seen.iter().any(|p| p.contains("reactor")),
        "panicked: {seen:?}"
    );
}
