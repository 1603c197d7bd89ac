//! Discovery over loopback: nodes that know only a seed find each other through PEX
//! and reach their outbound targets; a restarted node reconnects from its peer store
//! without the seed; a ban and misbehaviour points kept in the peer store survive a
//! restart; a private peer id is never shared; abusive PEX
//! peers are closed with their reasons.

use std::time::Duration;

use actix::prelude::*;
use switchyard::{
    BanKey, BanList, DialError, DisconnectReason, NodeConfig, NodeKey, PeerDown, PeerHandle,
    PeerUp, ReceivedRequest, RequestChannel, Service, Severity, Switch, SwitchExt,
};
use switchyard_integration_tests::{init_logs, test_config};
use switchyard_pex::discovery::{Discovery, DiscoveryConfig, DiscoveryHandle, Origin};
use switchyard_pex::service::{channel_config, Status, SERVICE_NAME};
use switchyard_pex::wire::GetAddrs;
use switchyard_pex::{NetAddr, PEX_CHANNEL};
use tokio::sync::mpsc;

const TICK: Duration = Duration::from_millis(50);
/// Nodes that start from one seed (the 20).
const NODES: usize = 20;
/// Generous: the nodes get there in well under a second on an idle machine.
const BOUND: Duration = Duration::from_secs(30);

fn config() -> NodeConfig {
    NodeConfig {
        arbiters: 1,
        ..test_config()
    }
}

fn discovery(target: usize, seeds: Vec<NetAddr>) -> DiscoveryConfig {
    let mut cfg = DiscoveryConfig::default().quick(TICK);
    cfg.manager.target_outbound = target;
    cfg.seeds = seeds;
    cfg
}

struct DNode {
    switch: Addr<Switch>,
    addr: NetAddr,
    discovery: DiscoveryHandle,
}

async fn start(cfg: DiscoveryConfig, key: Option<NodeKey>) -> DNode {
    let (service, discovery) = Discovery::new(cfg).start().unwrap();
    let mut builder = Switch::builder(config()).service(service);
    if let Some(k) = key {
        builder = builder.key(k);
    }
    let switch = builder.start().unwrap();
    discovery.start(switch.clone());
    let info = switch.info().await.unwrap();
    DNode {
        addr: NetAddr::new(info.id, info.listen_addr.unwrap()),
        switch,
        discovery,
    }
}

/// Waits until `node` has `target` outbound peers.
async fn reached(node: &DNode, target: usize) {
    let mut rx = node.discovery.status();
    tokio::time::timeout(BOUND, rx.wait_for(|s| s.outbound >= target))
        .await
        .expect("outbound target not reached in time")
        .expect("discovery stopped");
}

#[actix::test]
async fn twenty_nodes_from_one_seed_reach_their_outbound_targets() {
    init_logs();
    let seed = start(DiscoveryConfig::default().seed_mode().quick(TICK), None).await;
    let target = 4;
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(start(discovery(target, vec![seed.addr]), None).await);
    }
    let t0 = std::time::Instant::now();
    // A node every other one dialed has nobody left to dial: its peer set is full
    // too.
    let others = nodes.len() - 1;
    for (i, n) in nodes.iter().enumerate() {
        let mut rx = n.discovery.status();
        let full = |s: &Status| s.outbound >= target || s.connected >= others;
        if tokio::time::timeout(BOUND, rx.wait_for(full))
            .await
            .is_err()
        {
            for (j, m) in nodes.iter().enumerate() {
                eprintln!(
                    "node{j}: {:?} book {} peers {}",
                    *m.discovery.status().borrow(),
                    m.discovery.entries().await.len(),
                    m.switch.peers().await.len()
                );
            }
            panic!("node{i} did not reach {target} outbound peers");
        }
    }
    println!(
        "{NODES} nodes reached {target} outbound peers in {:?}",
        t0.elapsed()
    );
    // They found each other, not only the seed: each knows several others.
    for n in &nodes {
        let known = n.discovery.entries().await.len();
        assert!(known >= target, "{known} addresses known");
    }
    for n in nodes.iter().chain([&seed]) {
        n.switch.shutdown().await;
    }
}

#[actix::test]
async fn a_restarted_node_reconnects_from_its_store_without_the_seed() {
    init_logs();
    let home = std::env::temp_dir().join(format!("pex-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    // b and c dial nobody (target 0); the seed knows them from its initial peers.
    let b = start(discovery(0, vec![]), None).await;
    let c = start(discovery(0, vec![]), None).await;
    let mut seed_cfg = DiscoveryConfig::default().seed_mode().quick(TICK);
    seed_cfg.seeds = vec![b.addr, c.addr];
    let seed = start(seed_cfg, None).await;

    let key = NodeKey::generate();
    let mut cfg = discovery(2, vec![seed.addr]);
    cfg.dir = Some(home.clone());
    let a = start(cfg.clone(), Some(key.clone())).await;
    assert_eq!(a.discovery.origin, Origin::Seeds(1));
    // Two outbound peers other than the seed (it lets its askers go).
    let mut rx = a.discovery.status();
    tokio::time::timeout(BOUND, async {
        loop {
            rx.changed().await.unwrap();
            let peers = a.switch.peers().await;
            let others = peers
                .iter()
                .filter(|p| {
                    p.id() != seed.addr.id && p.direction() == switchyard::Direction::Outbound
                })
                .count();
            if others >= 2 {
                break;
            }
        }
    })
    .await
    .expect("a never had two outbound peers besides the seed");
    a.discovery.stop().await;
    a.switch.shutdown().await;
    seed.switch.shutdown().await;

    // Restart without the seed: the store has b and c.
    cfg.seeds.clear();
    let a = start(cfg, Some(key)).await;
    match a.discovery.origin {
        Origin::Store(n) => assert!(n >= 3, "stored {n}"),
        other => panic!("restored from {other:?}"),
    }
    reached(&a, 2).await;
    let ids: Vec<_> = a.switch.peers().await.iter().map(PeerHandle::id).collect();
    assert!(
        ids.contains(&b.addr.id) && ids.contains(&c.addr.id),
        "{ids:?}"
    );
    a.discovery.stop().await;
    for n in [&a, &b, &c] {
        n.switch.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&home);
}

/// Starts a node whose bans live in the peer store in `home`, under `key`.
async fn start_keeping_bans(home: &std::path::Path, key: NodeKey) -> DNode {
    let mut cfg = discovery(0, vec![]);
    cfg.dir = Some(home.to_path_buf());
    let (service, discovery) = Discovery::new(cfg).start().unwrap();
    let switch = Switch::builder(config())
        .service(service)
        .key(key)
        .bans(discovery.bans())
        .start()
        .unwrap();
    discovery.start(switch.clone());
    let info = switch.info().await.unwrap();
    DNode {
        addr: NetAddr::new(info.id, info.listen_addr.unwrap()),
        switch,
        discovery,
    }
}

#[actix::test]
async fn a_ban_and_a_score_kept_in_the_peer_store_survive_a_restart() {
    init_logs();
    let home = std::env::temp_dir().join(format!("pex-bans-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let key = NodeKey::generate();
    let a = start_keeping_bans(&home, key.clone()).await;
    // b speaks PEX (answering with nothing) and tells how its peers went.
    let (b, _, mut b_events) = abuser(vec![]).await;
    let b_info = b.info().await.unwrap();
    let b_addr = switchyard::PeerAddr::new(Some(b_info.id), b_info.listen_addr.unwrap());
    let a_addr = |a: &DNode| switchyard::PeerAddr::new(Some(a.addr.id), a.addr.addr);
    b.dial(a_addr(&a)).await.expect("b gets in before the ban");
    a.switch
        .report(b_info.id, Severity::Severe, "sent nonsense")
        .await;
    // a closes b (or refuses it, had its side not admitted b yet).
    let reason = remote_reason(next_down(&mut b_events).await);
    assert!(
        matches!(
            reason,
            DisconnectReason::Misbehavior(_) | DisconnectReason::Banned
        ),
        "{reason}"
    );
    // c misbehaves once, a protocol violation: 50 points, half the threshold.
    let (c, _, _c_events) = abuser(vec![]).await;
    let c_info = c.info().await.unwrap();
    let c_addr = switchyard::PeerAddr::new(Some(c_info.id), c_info.listen_addr.unwrap());
    a.switch
        .report(c_info.id, Severity::Major, "bad answer")
        .await;
    let c_key = BanKey::Node(c_info.id);
    let now = std::time::Instant::now;
    assert_eq!(
        a.discovery.bans().score(&c_key, now()).map(|s| s.points),
        Some(50)
    );
    // Shut down: the switch, then discovery, which writes the ban and the score with
    // the book.
    a.switch.shutdown().await;
    a.discovery.stop().await;

    let a = start_keeping_bans(&home, key).await;
    assert_eq!(
        a.discovery.bans().len(),
        1,
        "the ban came back from the store"
    );
    assert_eq!(
        a.discovery.bans().score(&c_key, now()).map(|s| s.points),
        Some(50),
        "c's points came back from the store"
    );
    assert!(a.discovery.bans().banned_until(&c_key, now()).is_none());
    // Once more after the restart: 50 + 50 reach the threshold.
    a.switch
        .report(c_info.id, Severity::Major, "bad answer again")
        .await;
    assert!(
        a.discovery.bans().banned_until(&c_key, now()).is_some(),
        "c is banned by points earned across the restart"
    );
    assert_eq!(
        a.switch.dial(c_addr).await.unwrap_err(),
        DialError::Closed(DisconnectReason::Banned)
    );
    let banned_by_a = DisconnectReason::ByRemote(Box::new(DisconnectReason::Banned));
    match b.dial(a_addr(&a)).await {
        Err(e) => assert_eq!(e, DialError::Closed(banned_by_a)),
        // Its side finished the handshake first: closed right after.
        Ok(_) => assert_eq!(next_down(&mut b_events).await, banned_by_a),
    }
    assert_eq!(
        a.switch.dial(b_addr).await.unwrap_err(),
        DialError::Closed(DisconnectReason::Banned)
    );
    assert!(
        a.switch.peer(b_info.id).await.is_none(),
        "b admitted while banned"
    );
    a.switch.shutdown().await;
    a.discovery.stop().await;
    b.shutdown().await;
    c.shutdown().await;
    let _ = std::fs::remove_dir_all(&home);
}

/// A PEX twin that misbehaves: answers with whatever strings it is given, asks when
/// told, and reports how its peers went.
struct Abuser {
    answer: Vec<String>,
    events: mpsc::UnboundedSender<Event>,
}

#[derive(Debug)]
enum Event {
    Up,
    /// The peer asked us for addresses.
    Asked,
    Down(DisconnectReason),
}

impl Actor for Abuser {
    type Context = Context<Self>;
}

impl Handler<ReceivedRequest<GetAddrs, Vec<String>>> for Abuser {
    type Result = ();
    fn handle(&mut self, r: ReceivedRequest<GetAddrs, Vec<String>>, _: &mut Context<Self>) {
        let _ = r.responder.respond(&self.answer);
        let _ = self.events.send(Event::Asked);
    }
}

impl Handler<PeerUp> for Abuser {
    type Result = ();
    fn handle(&mut self, up: PeerUp, _: &mut Context<Self>) {
        let _ = (up, self.events.send(Event::Up));
    }
}

impl Handler<PeerDown> for Abuser {
    type Result = ();
    fn handle(&mut self, down: PeerDown, _: &mut Context<Self>) {
        let _ = self.events.send(Event::Down(down.reason));
    }
}

/// An abuser node answering `answer`; its channel and its events.
async fn abuser(
    answer: Vec<String>,
) -> (
    Addr<Switch>,
    RequestChannel<GetAddrs, Vec<String>>,
    mpsc::UnboundedReceiver<Event>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let actor = Abuser { answer, events: tx }.start();
    let mut svc = Service::new(SERVICE_NAME, 1);
    let ch = svc.request_channel(PEX_CHANNEL, channel_config(), &actor);
    svc.on_peer_up(&actor).on_peer_down(&actor);
    let switch = Switch::builder(config()).service(svc).start().unwrap();
    (switch, ch, rx)
}

async fn next_down(rx: &mut mpsc::UnboundedReceiver<Event>) -> DisconnectReason {
    tokio::time::timeout(BOUND, async {
        loop {
            match rx.recv().await {
                Some(Event::Down(reason)) => return reason,
                Some(Event::Up | Event::Asked) => {}
                None => panic!("abuser stopped"),
            }
        }
    })
    .await
    .expect("the abuser was not closed")
}

fn remote_reason(reason: DisconnectReason) -> DisconnectReason {
    match reason {
        DisconnectReason::ByRemote(r) => *r,
        other => panic!("closed locally, not by the victim: {other}"),
    }
}

#[actix::test]
async fn a_peer_asking_too_often_is_closed_with_its_reason() {
    init_logs();
    let victim = start(discovery(1, vec![]), None).await;
    let (abuser, ch, mut events) = abuser(vec![]).await;
    let peer = abuser
        .dial(switchyard::PeerAddr::new(
            Some(victim.addr.id),
            victim.addr.addr,
        ))
        .await
        .unwrap();
    let first = peer.request(&ch, &GetAddrs {}, BOUND).await;
    assert!(first.is_ok(), "{first:?}");
    let _ = peer.request(&ch, &GetAddrs {}, BOUND).await;
    let reason = remote_reason(next_down(&mut events).await);
    assert!(
        matches!(&reason, DisconnectReason::Misbehavior(m) if m.contains("asked for addresses again")),
        "{reason}"
    );
    victim.switch.shutdown().await;
    abuser.shutdown().await;
}

#[actix::test]
async fn oversized_and_garbage_answers_close_their_sender_with_the_reason() {
    init_logs();
    let id = "66687aadf862bd776c8fc18b8e9f8e2008971485";
    let cases = [
        (
            vec![format!("{id}@10.1.2.3:26656"); 251],
            "more than 250 addresses",
        ),
        (vec!["nonsense".to_owned()], "missing ID@"),
        (vec![format!("{id}@0.0.0.0:26656")], "cannot be dialed"),
        (vec![format!("{id}@10.1.2.3:0")], "port 0"),
    ];
    let victim = start(discovery(1, vec![]), None).await;
    for (answer, why) in cases {
        let (abuser, _, mut events) = abuser(answer).await;
        // The victim's book is thin: it asks the abuser as soon as it is up.
        let _ = abuser
            .dial(switchyard::PeerAddr::new(
                Some(victim.addr.id),
                victim.addr.addr,
            ))
            .await
            .unwrap();
        let reason = remote_reason(next_down(&mut events).await);
        assert!(
            matches!(&reason, DisconnectReason::Undecodable { channel: PEX_CHANNEL, error } if error.contains(why)),
            "{why}: {reason}"
        );
        abuser.shutdown().await;
    }
    victim.switch.shutdown().await;
}

#[actix::test]
async fn a_seed_answers_an_inbound_peer_once_then_lets_it_go() {
    init_logs();
    let mut cfg = DiscoveryConfig::default().seed_mode().quick(TICK);
    let known: NetAddr = "66687aadf862bd776c8fc18b8e9f8e2008971485@10.1.2.3:26656"
        .parse()
        .unwrap();
    cfg.seeds = vec![known];
    let seed = start(cfg, None).await;
    let (client, ch, mut events) = abuser(vec![]).await;
    let peer = client
        .dial(switchyard::PeerAddr::new(
            Some(seed.addr.id),
            seed.addr.addr,
        ))
        .await
        .unwrap();
    let answer = peer.request(&ch, &GetAddrs {}, BOUND).await.unwrap();
    assert!(answer.contains(&known.to_string()), "{answer:?}");
    let reason = remote_reason(next_down(&mut events).await);
    assert_eq!(
        reason,
        DisconnectReason::Application("pex seed: one answer per connection".into())
    );
    seed.switch.shutdown().await;
    client.shutdown().await;
}

#[actix::test]
async fn a_private_peer_id_is_never_shared() {
    init_logs();
    // p is private to the node: it is in the node's initial peers and connects to it,
    // yet no asker ever hears of it.
    let (p, _, mut p_events) = abuser(vec![]).await;
    let p_info = p.info().await.unwrap();
    let p_addr = NetAddr::new(p_info.id, p_info.listen_addr.unwrap());
    let known: NetAddr = "66687aadf862bd776c8fc18b8e9f8e2008971485@10.1.2.3:26656"
        .parse()
        .unwrap();
    let mut cfg = discovery(1, vec![known, p_addr]);
    cfg.private_ids.insert(p_info.id);
    let node = start(cfg, None).await;
    let _ = p
        .dial(switchyard::PeerAddr::new(
            Some(node.addr.id),
            node.addr.addr,
        ))
        .await
        .unwrap();
    // The node's book is thin: it asks p once p is up, so it has seen p by then.
    tokio::time::timeout(BOUND, async {
        loop {
            match p_events.recv().await {
                Some(Event::Asked) => return,
                Some(_) => {}
                None => panic!("p stopped"),
            }
        }
    })
    .await
    .expect("the node never asked p");
    let entries = node.discovery.entries().await;
    assert!(entries.iter().any(|e| e.addr == known), "{entries:?}");
    assert!(
        !entries.iter().any(|e| e.addr.id == p_info.id),
        "a private id was stored: {entries:?}"
    );

    let (asker, ch, _events) = abuser(vec![]).await;
    let peer = asker
        .dial(switchyard::PeerAddr::new(
            Some(node.addr.id),
            node.addr.addr,
        ))
        .await
        .unwrap();
    let answer = peer.request(&ch, &GetAddrs {}, BOUND).await.unwrap();
    assert!(answer.contains(&known.to_string()), "{answer:?}");
    let private = p_info.id.to_string();
    assert!(
        !answer.iter().any(|a| a.contains(&private)),
        "the private id was shared: {answer:?}"
    );
    node.switch.shutdown().await;
    p.shutdown().await;
    asker.shutdown().await;
}
