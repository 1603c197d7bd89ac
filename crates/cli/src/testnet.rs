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
    downs: u64,
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
        self.tally.lock().unwrap_or_else(|e| e.into_inner()).downs += 1;
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
        let switch = Switch::builder(config)
            .key(key)
            .service(gossip)
            .start()
            .map_err(|e| format!("node{i}: {e}"))?;
        channels.push(channel);
        let info = switch.send(GetInfo).await.map_err(|e| e.to_string())?;
        let addr =
            switchyard::PeerAddr::new(Some(info.id), info.listen_addr.ok_or("node not listening")?);
        println!("node{i}: {} listening on {}", info.id, addr.host_port());
        addrs.push(addr);
        switches.push(switch);
    }
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
    while tally.lock().map_or(0, |t| t.ends.len()) < expected_ends && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
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
    let expected = (n * (n - 1)) as u64 * u64::from(opts.messages);
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
    let (delivered, duplicated, links) = {
        let t = tally.lock().unwrap_or_else(|e| e.into_inner());
        (t.seen.len() as u64, t.duplicated, t.links.clone())
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
    for s in &switches {
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
