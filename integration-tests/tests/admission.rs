//! Admission over real sockets: a slowloris cannot keep an honest peer out, a peer
//! reported past the ban threshold is banned until the ban expires, a banned node id
//! is refused right after the transport's handshake proves it (before any `Version`),
//! a persistent peer is exempt from `max_outbound`, and a new inbound peer evicts one
//! when inbound slots are full.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use switchyard::proto::secure::Role;
use switchyard::proto::wire::codec::{Packet, PacketCodec};
use switchyard::proto::wire::control::{self, Control, CONTROL_CHANNEL};
use switchyard::secure::Transport;
use switchyard::{
    ChannelConfig, Dial, DialError, DisconnectReason, NodeId, NodeKey, PeerAddr, Report, Severity,
    Shutdown,
};
use switchyard_integration_tests::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

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
    // Its reconnect is refused with `Banned` as soon as Noise proved its key: its
    // handshake never completes.
    let ups = |l: &Log| l.events.iter().filter(|e| **e == Event::Up(bad.id)).count();
    let banned_by_node = DisconnectReason::ByRemote(Box::new(DisconnectReason::Banned));
    assert_eq!(
        bad.switch
            .send(Dial(node.peer_addr()))
            .await
            .unwrap()
            .unwrap_err(),
        DialError::Closed(banned_by_node)
    );
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

/// Bans `id` at `node` (a severe report on a node it is not connected to bans the id
/// alone, not the loopback address).
async fn ban(node: &Node, id: NodeId) {
    node.switch
        .send(Report {
            node: id,
            severity: Severity::Severe,
            reason: "banned by the test".into(),
        })
        .await
        .unwrap();
}

/// Completes the Noise handshake with `addr` as `key`, sends nothing, and returns
/// the control messages the node sent until it closed the connection.
async fn controls_after_noise(addr: std::net::SocketAddr, key: &NodeKey) -> Vec<Control> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let transport = Transport::new(key, false, None);
    let (secured, mut sealed) = switchyard::secure::handshake(
        &mut stream,
        transport.start(Role::Initiator),
        Instant::now() + WAIT,
    )
    .await
    .expect("the Noise handshake completes");
    let mut opener = secured.session.expect("encrypted").opener;
    let mut codec = PacketCodec::new(1 << 20);
    let mut plain = BytesMut::new();
    let mut controls = Vec::new();
    loop {
        opener
            .open(&mut sealed, &mut plain)
            .expect("frames decrypt");
        while let Some(packet) = codec.decode(&mut plain).expect("packets decode") {
            if let Packet::Msg(m) = packet {
                if m.channel == CONTROL_CHANNEL {
                    controls.push(control::decode(&m.payload).expect("control decodes"));
                }
            }
        }
        sealed.reserve(16 << 10);
        match tokio::time::timeout(WAIT, stream.read_buf(&mut sealed)).await {
            Ok(Ok(0) | Err(_)) => return controls,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the node did not close the connection; it said {controls:?}"),
        }
    }
}

/// The id is known once Noise proved the remote's key, and a banned one is refused
/// right then: the banned side reads a goodbye saying `Banned` and never the node's
/// `Version` (before, the node sent its `Version` and refused only after the remote's
/// `Version`/`Verack`, so a remote that said nothing was held until the handshake
/// timeout). An honest peer is admitted meanwhile.
#[actix::test]
async fn a_banned_id_is_refused_right_after_noise_before_any_version() {
    init_logs();
    let node = start_node(test_config(), &chans()).await;
    let key = NodeKey::generate();
    ban(&node, key.node_id()).await;

    let t0 = Instant::now();
    let said = controls_after_noise(node.addr, &key).await;
    assert_eq!(said, vec![Control::Goodbye(DisconnectReason::Banned)]);
    assert!(
        t0.elapsed() < test_config().limits.handshake_timeout,
        "refused only at the handshake timeout: {:?}",
        t0.elapsed()
    );

    // Another id gets in.
    let honest = start_node(test_config(), &chans()).await;
    connect(&honest, &node).await;
    for n in [node, honest] {
        n.switch.send(Shutdown).await.unwrap();
    }
}

/// A banned node that dials is refused with `Banned` after Noise, every time, and no
/// service of the node hears of it; the node's own dial of the banned node's bare
/// address (no id to check before connecting) is refused the same way.
#[actix::test]
async fn a_banned_node_is_refused_after_noise_either_way() {
    init_logs();
    let node = start_node(test_config(), &chans()).await;
    let bad = start_node(test_config(), &chans()).await;
    ban(&node, bad.id).await;

    let refused = bad.switch.send(Dial(node.peer_addr())).await.unwrap();
    assert_eq!(
        refused.unwrap_err(),
        DialError::Closed(DisconnectReason::ByRemote(Box::new(
            DisconnectReason::Banned
        )))
    );
    let bare = PeerAddr::new(None, bad.addr);
    let refused = node.switch.send(Dial(bare)).await.unwrap();
    assert_eq!(
        refused.unwrap_err(),
        DialError::Closed(DisconnectReason::Banned)
    );
    assert!(
        node.log.lock().events.is_empty(),
        "{:?}",
        node.log.lock().events
    );
    assert!(
        bad.log.lock().events.is_empty(),
        "{:?}",
        bad.log.lock().events
    );
    for n in [node, bad] {
        n.switch.send(Shutdown).await.unwrap();
    }
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
