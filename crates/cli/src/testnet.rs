//! `switchyard testnet`: a local testnet in one process. N nodes on loopback connect
//! in a full mesh (static peers), each runs a gossip service that floods its own
//! messages to every peer, and the run ends with one summary line:
//!
//! ```text
//! testnet: 5 nodes, 10 connections, 5000 messages delivered, 0 lost, 0 duplicated
//! ```
//!
//! `lost` counts messages some node never received; `duplicated` counts messages a
//! node received more than once (the transport promises exactly once per connection).
//! The exit status is 0 only when nothing was lost or duplicated.
//!
//! With `--discovery` (what `make run` runs) there is no mesh wired by hand: a seed
//! (PEX in seed mode) starts first, and each node runs PEX with the seed as its only
//! initial peer and a peer manager keeping `--target` outbound peers. Once every node
//! has its target (or is connected to every other node, when they all dialed it
//! first), the run prints
//!
//! ```text
//! discovery: 8 nodes reached their outbound target in 0.31 s
//! ```
//!
//! and the nodes flood their messages to the peers they found; every message queued
//! to a peer must arrive there once.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use switchyard::{
    Broadcast, ChannelConfig, Dial, Direction, GetInfo, GetPeers, NodeConfig, NodeId, PeerDown,
    PeerUp, ReceivedBatch, Service, Shutdown, Switch,
};
use switchyard_pex::discovery::{Discovery, DiscoveryConfig};
use switchyard_pex::NetAddr;

/// Channel of the gossip service.
pub const GOSSIP_CHANNEL: u8 = 0x10;

/// Options of a testnet run.
#[derive(Debug, Clone)]
pub struct TestnetOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Messages each node floods.
    pub messages: u32,
    /// Payload bytes per message.
    pub size: usize,
    /// The longest the run may take.
    pub duration: Duration,
    /// Where to write the topology as Graphviz DOT.
    pub dot: Option<PathBuf>,
    /// Find peers through a seed and PEX instead of a full mesh.
    pub discovery: Option<DiscoveryOptions>,
}

/// Options of a discovery testnet.
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// Outbound peers each node keeps.
    pub target: usize,
    /// The peer manager's tick (see `DiscoveryConfig::quick`).
    pub tick: Duration,
}

/// One gossip message.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Gossip {
    origin: u16,
    seq: u32,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

#[derive(Default)]
struct Tally {
    /// (receiver, origin, seq) seen.
    seen: HashSet<(u16, u16, u32)>,
    duplicated: u64,
    /// Connections as (low index, high index).
    links: HashSet<(u16, u16)>,
    /// Connection ends that are up, as (this node, the other): a connection is ready
    /// for broadcasts from both sides only when both of its ends are here.
    ends: HashSet<(u16, u16)>,
    /// Connection ends up now, as (this node, the other) → how many (a duplicate
    /// connection may overlap the one it replaces), and those this node dialed.
    live: HashMap<(u16, u16), u32>,
    live_out: HashMap<(u16, u16), u32>,
    downs: u64,
}

impl Tally {
    /// Whether `node` has `target` outbound peers, or is connected to all `others`.
    fn full(&self, node: u16, target: usize, others: usize) -> bool {
        let count = |m: &HashMap<(u16, u16), u32>| {
            m.iter().filter(|((a, _), n)| *a == node && **n > 0).count()
        };
        count(&self.live_out) >= target || count(&self.live) >= others
    }

    /// Connections whose both ends are up, as (low, high).
    fn both_ends(&self) -> Vec<(u16, u16)> {
        let mut v: Vec<(u16, u16)> = self
            .live
            .iter()
            .filter(|((a, b), n)| {
                a < b && **n > 0 && self.live.get(&(*b, *a)).is_some_and(|m| *m > 0)
            })
            .map(|(k, _)| *k)
            .collect();
        v.sort_unstable();
        v
    }

    /// Whether every connection end up has its other end up too.
    fn settled(&self) -> bool {
        self.live
            .iter()
            .all(|((a, b), n)| *n == 0 || self.live.get(&(*b, *a)).is_some_and(|m| *m > 0))
    }
}

fn bump(m: &mut HashMap<(u16, u16), u32>, k: (u16, u16), up: bool) {
    let e = m.entry(k).or_insert(0);
    if up {
        *e += 1;
    } else {
        *e = e.saturating_sub(1);
    }
}

struct GossipService {
    index: u16,
    names: Arc<HashMap<NodeId, u16>>,
    tally: Arc<Mutex<Tally>>,
}

impl Actor for GossipService {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
    }
}

impl GossipService {
    fn name_of(&self, id: &NodeId) -> String {
        self.names
            .get(id)
            .map_or_else(|| id.short(), |i| format!("node{i}"))
    }
}

impl Handler<PeerUp> for GossipService {
    type Result = ();
    fn handle(&mut self, up: PeerUp, _: &mut Self::Context) {
        let Some(&other) = self.names.get(&up.peer.id()) else {
            return;
        };
        let link = (self.index.min(other), self.index.max(other));
        let mut t = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        t.ends.insert((self.index, other));
        bump(&mut t.live, (self.index, other), true);
        if up.peer.direction() == Direction::Outbound {
            bump(&mut t.live_out, (self.index, other), true);
        }
        if t.links.insert(link) {
            let how = match up.peer.direction() {
                Direction::Outbound => "dialed",
                Direction::Inbound => "accepted from",
            };
            let cipher = up
                .peer
                .encryption()
                .map_or_else(|| "plaintext".to_owned(), |s| format!("Noise, {s}"));
            println!(
                "connected: node{} <-> node{} (node{} {how} {}; {cipher})",
                link.0,
                link.1,
                self.index,
                up.peer.remote_addr()
            );
        }
    }
}

impl Handler<PeerDown> for GossipService {
    type Result = ();
    fn handle(&mut self, down: PeerDown, _: &mut Self::Context) {
        log::info!(
            "node{}: {} down: {}",
            self.index,
            self.name_of(&down.peer.id()),
            down.reason
        );
        let mut t = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        t.downs += 1;
        if let Some(&other) = self.names.get(&down.peer.id()) {
            bump(&mut t.live, (self.index, other), false);
            if down.peer.direction() == Direction::Outbound {
                bump(&mut t.live_out, (self.index, other), false);
            }
        }
    }
}

impl Handler<ReceivedBatch<Gossip>> for GossipService {
    type Result = ();
    fn handle(&mut self, batch: ReceivedBatch<Gossip>, _: &mut Self::Context) {
        let mut t = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        for g in batch.msgs {
            if !t.seen.insert((self.index, g.origin, g.seq)) {
                t.duplicated += 1;
            }
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Nodes started.
    pub nodes: usize,
    /// Connections formed (each counted once).
    pub connections: usize,
    /// Distinct (receiver, message) pairs delivered.
    pub delivered: u64,
    /// Expected deliveries that never happened.
    pub lost: u64,
    /// Deliveries of a message a node already had.
    pub duplicated: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "testnet: {} nodes, {} connections, {} messages delivered, {} lost, {} duplicated",
            self.nodes, self.connections, self.delivered, self.lost, self.duplicated
        )
    }
}

/// Starts the seed of a discovery testnet: PEX only, in seed mode.
async fn start_seed(d: &DiscoveryOptions) -> Result<(Addr<Switch>, NetAddr), String> {
    let cfg = DiscoveryConfig::default().seed_mode().quick(d.tick);
    let (pex, handle) = Discovery::new(cfg)
        .start()
        .map_err(|e| format!("seed: {e}"))?;
    let config = NodeConfig {
        arbiters: 1,
        ..NodeConfig::local()
    };
    let switch = Switch::builder(config)
        .service(pex)
        .start()
        .map_err(|e| format!("seed: {e}"))?;
    handle.start(switch.clone());
    let info = switch.send(GetInfo).await.map_err(|e| e.to_string())?;
    let listen = info.listen_addr.ok_or("seed not listening")?;
    println!("seed: {} listening on {listen}", info.id);
    Ok((switch, NetAddr::new(info.id, listen)))
}

/// Runs a testnet inside the current actix system.
pub async fn run(opts: TestnetOptions) -> Result<Summary, String> {
    let n = opts.nodes;
    if !(2..=64).contains(&n) {
        return Err(format!("--nodes must be between 2 and 64, got {n}"));
    }
    let started = Instant::now();
    let deadline = started + opts.duration;
    let keys: Vec<_> = (0..n).map(|_| switchyard::NodeKey::generate()).collect();
    let names: Arc<HashMap<NodeId, u16>> = Arc::new(
        keys.iter()
            .enumerate()
            .map(|(i, k)| (k.node_id(), i as u16))
            .collect(),
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut switches = Vec::new();
    let mut channels = Vec::new();
    let mut addrs = Vec::new();
    let seed = match &opts.discovery {
        Some(d) => Some(start_seed(d).await?),
        None => None,
    };
    for (i, key) in keys.into_iter().enumerate() {
        let service = GossipService {
            index: i as u16,
            names: names.clone(),
            tally: tally.clone(),
        }
        .start();
        let config = NodeConfig {
            arbiters: 1,
            ..NodeConfig::local()
        };
        let mut gossip = Service::new("gossip", 1);
        let channel = gossip.batched_channel::<Gossip, _>(
            GOSSIP_CHANNEL,
            ChannelConfig::new(1).send_queue(4096, 16 << 20),
            &service,
        );
        gossip.on_peer_up(&service).on_peer_down(&service);
        let mut builder = Switch::builder(config).key(key).service(gossip);
        let mut discovery = None;
        if let (Some(d), Some((_, seed_addr))) = (&opts.discovery, &seed) {
            let mut cfg = DiscoveryConfig::default().quick(d.tick);
            cfg.manager.target_outbound = d.target;
            cfg.seeds = vec![*seed_addr];
            let (pex, handle) = Discovery::new(cfg)
                .start()
                .map_err(|e| format!("node{i}: {e}"))?;
            builder = builder.service(pex);
            discovery = Some(handle);
        }
        let switch = builder.start().map_err(|e| format!("node{i}: {e}"))?;
        if let Some(handle) = discovery {
            handle.start(switch.clone());
        }
        channels.push(channel);
        let info = switch.send(GetInfo).await.map_err(|e| e.to_string())?;
        let addr =
            switchyard::PeerAddr::new(Some(info.id), info.listen_addr.ok_or("node not listening")?);
        println!("node{i}: {} listening on {}", info.id, addr.host_port());
        addrs.push(addr);
        switches.push(switch);
    }
    if let Some(d) = &opts.discovery {
        // Every node finds its peers through the seed; wait until each has its
        // target and both ends of every connection are up.
        let ready = || {
            let t = tally.lock().unwrap_or_else(|e| e.into_inner());
            (0..n as u16).all(|i| t.full(i, d.target, n - 1)) && t.settled()
        };
        while !ready() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "discovery: not every node reached {} outbound peers within {:?}",
                    d.target, opts.duration
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!(
            "discovery: {n} nodes reached their outbound target in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    } else {
        // Full mesh: every node dials the ones started before it.
        let mut dials = Vec::new();
        for (i, s) in switches.iter().enumerate() {
            for addr in addrs.iter().take(i) {
                dials.push(s.send(Dial(addr.clone())));
            }
        }
        for d in futures_util::future::join_all(dials).await {
            if let Err(e) = d.map_err(|e| e.to_string())? {
                log::warn!("dial failed: {e}");
            }
        }
        // Both ends of every connection: a Switch broadcasts only to peers it has
        // registered, and the accepting side registers a moment after the dialer.
        let expected_ends = n * (n - 1);
        while tally.lock().map_or(0, |t| t.ends.len()) < expected_ends && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Each node floods its messages to all of its peers; each broadcast waits for room
    // in every peer's queue, so none is dropped when a queue is full.
    let payload = vec![0x5au8; opts.size];
    let mut sent = 0u64;
    for (i, (s, &channel)) in switches.iter().zip(&channels).enumerate() {
        for seq in 0..opts.messages {
            let msg = Gossip {
                origin: i as u16,
                seq,
                payload: payload.clone(),
            };
            let accepted = s
                .send(Broadcast { channel, msg })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            sent += accepted as u64;
        }
    }
    // A full mesh delivers every message to every other node; a discovered topology
    // to the peers each broadcast reached.
    let expected = if opts.discovery.is_some() {
        sent
    } else {
        (n * (n - 1)) as u64 * u64::from(opts.messages)
    };
    let mut last_print = Instant::now();
    loop {
        let (delivered, links) = {
            let t = tally.lock().unwrap_or_else(|e| e.into_inner());
            (t.seen.len() as u64, t.links.len())
        };
        if delivered >= expected || Instant::now() >= deadline {
            break;
        }
        if last_print.elapsed() >= Duration::from_millis(250) {
            println!(
                "progress: {delivered}/{expected} delivered over {links} connections ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut peer_total = 0;
    for s in &switches {
        peer_total += s.send(GetPeers).await.map_err(|e| e.to_string())?.len();
    }
    if opts.discovery.is_some() {
        // Nodes may also be connected to the seed: count the connections among them.
        let t = tally.lock().unwrap_or_else(|e| e.into_inner());
        peer_total = 2 * t.both_ends().len();
    }
    let (delivered, duplicated, links) = {
        let t = tally.lock().unwrap_or_else(|e| e.into_inner());
        // A discovered topology is drawn as it stands (connections replaced by a
        // duplicate or closed along the way are not).
        let links: HashSet<(u16, u16)> = if opts.discovery.is_some() {
            t.both_ends().into_iter().collect()
        } else {
            t.links.clone()
        };
        (t.seen.len() as u64, t.duplicated, links)
    };
    println!(
        "progress: {delivered}/{expected} delivered, {sent} sends queued ({:.2} s)",
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &opts.dot {
        let mut dot = String::from("graph testnet {\n");
        for i in 0..n {
            dot.push_str(&format!("  node{i};\n"));
        }
        let mut links: Vec<_> = links.into_iter().collect();
        links.sort_unstable();
        for (a, b) in links {
            dot.push_str(&format!("  node{a} -- node{b};\n"));
        }
        dot.push_str("}\n");
        std::fs::write(path, dot).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    for s in switches.iter().chain(seed.as_ref().map(|(s, _)| s)) {
        let _ = s.send(Shutdown).await;
    }
    Ok(Summary {
        nodes: n,
        connections: peer_total / 2,
        delivered,
        lost: expected.saturating_sub(delivered),
        duplicated,
    })
}
