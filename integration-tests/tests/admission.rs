//! Admission over real sockets: a slowloris cannot keep an honest peer out, a peer
//! reported past the ban threshold is banned until the ban expires, a persistent
//! peer is exempt from `max_outbound`, and a new inbound peer evicts one when inbound
//! slots are full.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use switchyard::{ChannelConfig, Dial, DialError, DisconnectReason, Severity, Shutdown};
use switchyard_integration_tests::*;

const WAIT: Duration = Duration::from_secs(5);

fn chans() -> Vec<(u8, ChannelConfig, Mode)> {
    vec![(1, ChannelConfig::new(1), Mode::PerMessage)]
}

/// 200 connections from one other "host" (127.9.0.x, another /24 than the honest
/// peer's 127.0.0.1) that never speak, held open while an honest node connects and
/// exchanges messages. Before `SwitchCore`, 40 such connections filled every inbound
/// slot for the whole handshake timeout.
#[actix::test]
async fn an_honest_peer_gets_in_while_a_slowloris_holds_200_connections() {
    init_logs();
    let mut cfg = test_config();
    cfg.limits.limit_loopback = true;
    // The half-open connections stay for the whole test.
    cfg.limits.handshake_timeout = Duration::from_secs(60);
    let node = start_node(cfg, &chans()).await;
    let mut held = Vec::new();
    for i in 0..200u32 {
        let from = IpAddr::V4(Ipv4Addr::new(127, 9, 0, 1 + (i % 50) as u8));
        match RawPeer::connect_silent_from(node.addr, from).await {
            Ok(raw) => held.push(raw),
            Err(e) => {
                // The machine allows fewer sockets: go on with what we have.
                log::warn!("slowloris stopped at {i} connections: {e}");
                break;
            }
        }
    }
    assert!(held.len() >= 50, "only {} connections", held.len());
    // The honest peer connects after all of them (the listener accepts in order).
    let honest = start_node(test_config(), &chans()).await;
    let to_node = honest
        .switch
        .send(Dial(node.peer_addr()))
        .await
        .unwrap()
        .expect("the honest peer is admitted");
    for seq in 0..20 {
        to_node
            .send(&honest.ch(1), &TestMsg { seq, body: vec![7] })
            .await
            .unwrap();
    }
    assert!(
        node.log
            .wait_for(WAIT, |l| l.msgs.iter().filter(|m| m.1 == honest.id).count()
                == 20)
            .await
    );
    // The node kept some of the slowloris connections open (they are in their
    // handshake, within the per-subnet bound): the honest peer got in beside them.
    let mut still_open = 0;
    for raw in &mut held {
        if raw.still_open(Duration::from_millis(1)).await {
            still_open += 1;
        }
    }
    assert!(still_open >= 1, "the slowloris was refused outright");
    node.switch.send(Shutdown).await.unwrap();
    honest.switch.send(Shutdown).await.unwrap();
}

#[actix::test]
async fn a_peer_reported_past_the_threshold_is_banned_until_the_ban_expires() {
    init_logs();
    let ban = Duration::from_millis(800);
    let mut cfg = test_config();
    cfg.limits.ban_duration = ban;
    let node = start_node(cfg, &chans()).await;
    let bad = start_node(test_config(), &chans()).await;
    connect(&bad, &node).await;

    let reported = Instant::now();
    // The service that saw it reports through the peer's handle.
    let handle = node.log.handle_of(bad.id).expect("bad is up at the node");
    handle.report(Severity::Severe, "sent nonsense");
    let closed = DisconnectReason::ByRemote(Box::new(DisconnectReason::Misbehavior(
        "sent nonsense".into(),
    )));
    assert!(
        bad.log
            .wait_for(WAIT, |l| l
                .events
                .contains(&Event::Down(node.id, closed.clone())))
            .await,
        "{:?}",
        bad.log.lock().events
    );
    // Its reconnect is refused with `Banned`: at once, or (when its side finished
    // the handshake first) right after.
    let ups = |l: &Log| l.events.iter().filter(|e| **e == Event::Up(bad.id)).count();
    let banned_by_node = DisconnectReason::ByRemote(Box::new(DisconnectReason::Banned));
    match bad.switch.send(Dial(node.peer_addr())).await.unwrap() {
        Err(e) => assert_eq!(e, DialError::Closed(banned_by_node.clone())),
        Ok(_) => assert!(
            bad.log
                .wait_for(WAIT, |l| l
                    .events
                    .contains(&Event::Down(node.id, banned_by_node.clone())))
                .await
        ),
    }
    // The node does not dial it either.
    let out = node.switch.send(Dial(bad.peer_addr())).await.unwrap();
    assert_eq!(
        out.unwrap_err(),
        DialError::Closed(DisconnectReason::Banned)
    );
    assert_eq!(ups(&node.log.lock()), 1, "admitted while banned");
    // After the ban it gets in again: redial until the node admits it.
    let deadline = Instant::now() + ban + WAIT;
    while ups(&node.log.lock()) < 2 {
        assert!(Instant::now() < deadline, "still banned");
        let _ = bad.switch.send(Dial(node.peer_addr())).await.unwrap();
        node.log
            .wait_for(Duration::from_millis(50), |l| ups(l) == 2)
            .await;
    }
    assert!(reported.elapsed() >= ban, "admitted before the ban ended");
    node.switch.send(Shutdown).await.unwrap();
    bad.switch.send(Shutdown).await.unwrap();
}

#[actix::test]
async fn a_persistent_peer_is_exempt_from_max_outbound() {
    init_logs();
    let ordinary = start_node(test_config(), &chans()).await;
    let persistent = start_node(test_config(), &chans()).await;
    let other = start_node(test_config(), &chans()).await;
    let mut cfg = test_config();
    cfg.limits.max_outbound = 1;
    cfg.persistent_peers = vec![persistent.peer_addr()];
    let node = start_node(cfg, &chans()).await;
    // The ordinary peer and the persistent one, in whatever order: both get in.
    node.switch
        .send(Dial(ordinary.peer_addr()))
        .await
        .unwrap()
        .expect("the one ordinary outbound slot");
    assert!(
        node.log
            .wait_for(WAIT, |l| {
                l.events.contains(&Event::Up(persistent.id))
                    && l.events.contains(&Event::Up(ordinary.id))
            })
            .await,
        "{:?}",
        node.log.lock().events
    );
    // The limit still holds for ordinary peers.
    let refused = node.switch.send(Dial(other.peer_addr())).await.unwrap();
    assert_eq!(
        refused.unwrap_err(),
        DialError::Closed(DisconnectReason::MaxOutbound)
    );
    for n in [node, ordinary, persistent, other] {
        n.switch.send(Shutdown).await.unwrap();
    }
}

/// With `max_inbound = 2` and no subnet or round-trip protection, a third inbound peer
/// gets in by evicting the younger of the two (the older half is protected by its
/// connection time), and the evicted peer hears why.
#[actix::test]
async fn a_third_inbound_peer_gets_in_by_evicting_the_youngest() {
    init_logs();
    let mut cfg = test_config();
    cfg.limits.max_inbound = 2;
    cfg.limits.evict_protect_netgroups = 0;
    cfg.limits.evict_protect_rtt = 0;
    let node = start_node(cfg, &chans()).await;
    let old = start_node(test_config(), &chans()).await;
    let young = start_node(test_config(), &chans()).await;
    let new = start_node(test_config(), &chans()).await;
    for peer in [&old, &young, &new] {
        peer.switch
            .send(Dial(node.peer_addr()))
            .await
            .unwrap()
            .expect("admitted");
        assert!(
            node.log
                .wait_for(WAIT, |l| l.events.contains(&Event::Up(peer.id)))
                .await,
            "{:?}",
            node.log.lock().events
        );
    }
    let evicted = DisconnectReason::ByRemote(Box::new(DisconnectReason::Evicted));
    assert!(
        young
            .log
            .wait_for(WAIT, |l| l
                .events
                .contains(&Event::Down(node.id, evicted.clone())))
            .await,
        "{:?}",
        young.log.lock().events
    );
    assert!(
        node.log
            .wait_for(WAIT, |l| l
                .events
                .contains(&Event::Down(young.id, DisconnectReason::Evicted)))
            .await,
        "{:?}",
        node.log.lock().events
    );
    let events = node.log.lock().events.clone();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Down(id, _) if *id != young.id)),
        "only the youngest goes: {events:?}"
    );
    for n in [node, old, young, new] {
        n.switch.send(Shutdown).await.unwrap();
    }
}
