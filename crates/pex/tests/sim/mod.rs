//! A simulated network for the pure discovery parts: many nodes, each with its own
//! [`AddrBook`], [`Exchange`] and [`Manager`], joined by a network of virtual
//! connections, with virtual time advanced event by event and every random choice
//! drawn from one seed, so a run replays exactly.
//!
//! Each node is driven the way the PEX actor (`src/service.rs`) drives it, by the same
//! calls in the same order:
//!
//! * start: the book learns the node's own address (`add_our_address`), the initial
//!   peers are filed with their own IP as source (as `Discovery::start` does), and the
//!   manager starts ticking;
//! * timer: `book.handle_timeout`, then `manager.handle_timeout`, then drain;
//! * every input is followed by draining `manager.poll_action()` and re-arming the
//!   one timer at the earlier of `manager.poll_timeout()` and `book.poll_timeout()`;
//! * `Action::Dial`: the virtual Switch dials (below); the outcome goes to
//!   `manager.handle_dialed` after `handle_peer_up`, as in the runtime;
//! * `Action::Ask`: a `GetAddrs` travels to the peer, which answers with
//!   `exchange.on_request` (a fault closes the asker; seed mode's `then_disconnect`
//!   closes it right after the answer); the answer travels back, encoded and decoded
//!   with the wire's `Addrs`, is filed with `exchange.learn` attributed to the
//!   answering peer's IP, and `manager.handle_answer` hears how it went (an asker
//!   whose peer is gone hears `false`, as the service's `ask` does);
//! * `Action::Disconnect` / `Action::LetGo`: the connection closes and both sides get
//!   `handle_peer_down`;
//! * an inbound peer's announced listen address is filed with its IP as source
//!   (the service's `PeerUp` handler).
//!
//! The virtual Switch: a dial reaches the node listening at the address if it is up,
//! answers with the expected id, has inbound room (`max_inbound`) and is not already
//! connected to the dialer; a node that is down does not answer and the dial fails after
//! `dial_timeout`. Connections are symmetric (one link, seen outbound by the dialer and
//! inbound by the dialed node).
//!
//! An optional attacker owns thousands of addresses in two /16 groups: every one of
//! them accepts any dial, answers every `GetAddrs` with a full answer of its own
//! addresses, and it opens a few inbound connections to every honest node (announcing
//! its address) so that it is asked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use switchyard_pex::book::{AddrBook, BookConfig};
use switchyard_pex::exchange::{Exchange, ExchangeConfig};
use switchyard_pex::manager::{Action, DialOutcome, Manager, ManagerConfig};
use switchyard_pex::wire::{Addrs, MAX_ADDRS};
use switchyard_pex::{Group, NetAddr};
use switchyard_proto::switch::backoff::Jitter;
use switchyard_proto::NodeId;

/// The port every simulated node listens on.
pub const PORT: u16 = 26656;

/// The attacker: addresses in two /16 groups.
#[derive(Debug, Clone)]
pub struct Attack {
    /// First octets of its two groups (`A.1.0.0/16`).
    pub groups: [u8; 2],
    /// Addresses it owns in each group.
    pub per_group: usize,
    /// Inbound connections it opens to every honest node and seed at their start.
    pub inbound_per_node: usize,
    /// Answers of its addresses each honest node is taken to have received from those
    /// peers when they connect (a book already full of its gossip); on top of the
    /// answers it gets when it asks them during the run.
    pub flood_answers: usize,
    /// When it connects to the nodes (virtual time since the run began; a node that
    /// starts later is connected at its start).
    pub starts_at: Duration,
}

/// How the simulated network is made.
#[derive(Debug, Clone)]
pub struct Params {
    /// Honest nodes.
    pub honest: usize,
    /// Seed nodes (seed mode: crawl, answer inbound peers once and let them go).
    pub seeds: usize,
    /// /16 groups the honest nodes are spread over (at random).
    pub groups: usize,
    /// The seed of everything random in the run.
    pub rng_seed: u64,
    /// Honest nodes start at random instants within this span.
    pub start_spread: Duration,
    /// One-way latency of every message.
    pub latency: Duration,
    /// How long a dial to a node that is down waits before it fails.
    pub dial_timeout: Duration,
    /// Inbound connections a node accepts (the Switch's `max_inbound`).
    pub max_inbound: usize,
    /// Outbound connections a node may hold (the Switch's `max_outbound`).
    pub max_outbound: usize,
    /// The managers' config (seeds get `crawl` on top).
    pub manager: ManagerConfig,
    /// The PEX services' config (seeds get `seed_mode` on top).
    pub exchange: ExchangeConfig,
    /// The attacker, if any.
    pub attack: Option<Attack>,
}

impl Params {
    /// `honest` nodes over `groups` /16 groups, `seeds` seeds, the runtime's defaults
    /// (outbound target 10, max inbound 40, tick 5 s, requests every 30 s).
    pub fn new(honest: usize, seeds: usize, groups: usize, rng_seed: u64) -> Self {
        Params {
            honest,
            seeds,
            groups,
            rng_seed,
            start_spread: Duration::from_secs(10),
            latency: Duration::from_millis(50),
            dial_timeout: Duration::from_secs(3),
            max_inbound: 40,
            max_outbound: 10,
            manager: ManagerConfig::default(),
            exchange: ExchangeConfig::default(),
            attack: None,
        }
    }
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Keeps its outbound target.
    Honest,
    /// Seed mode.
    Seed,
}

/// One end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// This node dialed it.
    pub outbound: bool,
    /// When it came up.
    pub since: Instant,
}

/// A simulated node: the pure parts and its connections.
#[derive(Debug)]
pub struct Node {
    /// Honest or seed.
    pub role: Role,
    /// Where it listens.
    pub addr: NetAddr,
    /// Up (started and not taken down).
    pub up: bool,
    /// Taken down by [`Sim::take_down`].
    pub gone: bool,
    /// Its address book.
    pub book: AddrBook,
    /// Its PEX decisions.
    pub exchange: Exchange,
    /// Its peer manager.
    pub manager: Manager,
    /// Its connections by peer id.
    pub conns: BTreeMap<NodeId, Link>,
    /// When it starts (virtual time since the run began).
    pub starts_at: Duration,
    /// When it first held its outbound target (virtual time since the run began).
    pub reached_target: Option<Duration>,
    /// The instant the one timer is armed for.
    timer: Option<Instant>,
    /// `book.poll_timeout()`, refreshed at every timer (see [`Sim::drive`]).
    book_deadline: Option<Instant>,
}

impl Node {
    /// Inbound connections.
    pub fn inbound(&self) -> usize {
        self.conns.values().filter(|l| !l.outbound).count()
    }

    /// Outbound connections.
    pub fn outbound(&self) -> usize {
        self.conns.values().filter(|l| l.outbound).count()
    }
}

#[derive(Debug, Clone, Copy)]
enum Who {
    Node(usize),
    Attacker(usize),
}

#[derive(Debug)]
enum Ev {
    Start(usize),
    Attack(usize),
    Timer(usize, Instant),
    Dialed {
        from: usize,
        addr: NetAddr,
    },
    DialFailed {
        from: usize,
        addr: NetAddr,
    },
    Request {
        from: usize,
        to: NodeId,
    },
    Answer {
        to: usize,
        from: NodeId,
        bytes: Option<Vec<u8>>,
    },
    Close {
        node: usize,
        peer: NodeId,
    },
}

/// Counters of a run.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Events handled.
    pub events: u64,
    /// Dials started.
    pub dials: u64,
    /// Dials that failed.
    pub dial_failures: u64,
    /// Requests sent.
    pub requests: u64,
    /// Answers filed.
    pub answers: u64,
    /// Requests refused as faults (too soon): none in an honest network.
    pub faults: u64,
    /// Longest a seed held an inbound peer.
    pub seed_max_hold: Duration,
    /// Most outbound peers in the attacker's groups any honest node held at any time.
    pub attacker_outbound_max: usize,
    /// Addresses of its own the attacker handed out.
    pub attacker_addrs_sent: u64,
}

/// The simulated network. See the [module docs](self).
pub struct Sim {
    /// How it was made.
    pub p: Params,
    /// The start of virtual time.
    pub t0: Instant,
    /// Virtual time now.
    pub now: Instant,
    /// Seeds first, then honest nodes.
    pub nodes: Vec<Node>,
    /// The attacker's addresses.
    pub attackers: Vec<NetAddr>,
    who: HashMap<NodeId, Who>,
    at: HashMap<SocketAddr, Who>,
    queue: BTreeMap<(Instant, u64), Ev>,
    seq: u64,
    rng: Jitter,
    /// Counters.
    pub stats: Stats,
}

fn node_id(kind: u8, n: usize) -> NodeId {
    let mut raw = [0u8; 20];
    raw[0] = kind;
    raw[1..9].copy_from_slice(&(n as u64).to_be_bytes());
    raw[19] = 0x5a;
    NodeId(raw)
}

fn key(rng: &mut Jitter) -> [u8; 32] {
    let mut k = [0u8; 32];
    for chunk in k.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    k
}

impl Sim {
    /// Builds the network; nothing has started yet.
    pub fn new(p: Params) -> Sim {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut rng = Jitter::new(p.rng_seed);
        let mut nodes = Vec::new();
        let mut hosts_in_group: HashMap<usize, u32> = HashMap::new();
        for i in 0..p.seeds + p.honest {
            let (role, ip) = if i < p.seeds {
                (Role::Seed, Ipv4Addr::new(5 + i as u8, 1, 0, 1))
            } else {
                // 30.1/16 .. (30+groups-1).1/16: routable, one /16 each.
                let g = (rng.next_u64() % p.groups as u64) as usize;
                let h = hosts_in_group.entry(g).or_insert(0);
                *h += 1;
                let [_, _, hi, lo] = h.to_be_bytes();
                (Role::Honest, Ipv4Addr::new(30 + g as u8, 1, hi, lo))
            };
            let addr = NetAddr::new(node_id(1, i), SocketAddr::new(IpAddr::V4(ip), PORT));
            let seed = rng.next_u64();
            let book = AddrBook::new(BookConfig::new(key(&mut rng), seed));
            let mut mc = p.manager.clone();
            mc.seed = seed ^ 0x5eed;
            let mut xc = p.exchange.clone();
            if role == Role::Seed {
                mc.crawl = true;
                xc.seed_mode = true;
            }
            let starts_at = if role == Role::Seed || p.start_spread.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_millis(rng.next_u64() % p.start_spread.as_millis() as u64)
            };
            nodes.push(Node {
                role,
                addr,
                up: false,
                gone: false,
                book,
                exchange: Exchange::new(xc),
                manager: Manager::new(mc, t0 + starts_at),
                conns: BTreeMap::new(),
                starts_at,
                reached_target: None,
                timer: None,
                book_deadline: None,
            });
        }
        let mut attackers = Vec::new();
        if let Some(a) = &p.attack {
            for (gi, first) in a.groups.iter().enumerate() {
                for h in 0..a.per_group {
                    let [_, _, hi, lo] = (h as u32 + 1).to_be_bytes();
                    let ip = Ipv4Addr::new(*first, 1, hi, lo);
                    let id = node_id(2, gi * a.per_group + h);
                    attackers.push(NetAddr::new(id, SocketAddr::new(IpAddr::V4(ip), PORT)));
                }
            }
        }
        let mut who = HashMap::new();
        let mut at = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            who.insert(n.addr.id, Who::Node(i));
            at.insert(n.addr.addr, Who::Node(i));
        }
        for (i, a) in attackers.iter().enumerate() {
            who.insert(a.id, Who::Attacker(i));
            at.insert(a.addr, Who::Attacker(i));
        }
        let mut sim = Sim {
            p,
            t0,
            now: t0,
            nodes,
            attackers,
            who,
            at,
            queue: BTreeMap::new(),
            seq: 0,
            rng,
            stats: Stats::default(),
        };
        for i in 0..sim.nodes.len() {
            let at = t0 + sim.nodes[i].starts_at;
            sim.push(at, Ev::Start(i));
        }
        sim
    }

    /// Virtual time since the run began.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// The outbound target.
    pub fn target(&self) -> usize {
        self.p.manager.target_outbound
    }

    /// Indices of the honest nodes that are up.
    pub fn honest_up(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].role == Role::Honest && self.nodes[i].up)
    }

    /// Whether every honest node not taken down has started and holds its outbound
    /// target.
    pub fn all_at_target(&self) -> bool {
        let target = self.target();
        self.nodes
            .iter()
            .filter(|n| n.role == Role::Honest && !n.gone)
            .all(|n| n.up && n.manager.outbound() >= target)
    }

    /// Whether `id` is one of the attacker's.
    pub fn is_attacker(&self, id: &NodeId) -> bool {
        matches!(self.who.get(id), Some(Who::Attacker(_)))
    }

    /// The listen address of `id`.
    pub fn addr_of(&self, id: &NodeId) -> NetAddr {
        match self.who[id] {
            Who::Node(i) => self.nodes[i].addr,
            Who::Attacker(a) => self.attackers[a],
        }
    }

    /// Connected components of the honest nodes that are up (their links to each
    /// other only).
    pub fn honest_components(&self) -> usize {
        let up: Vec<usize> = self.honest_up().collect();
        let mut parent: HashMap<usize, usize> = up.iter().map(|&i| (i, i)).collect();
        fn find(parent: &mut HashMap<usize, usize>, mut x: usize) -> usize {
            while parent[&x] != x {
                let gp = parent[&parent[&x]];
                parent.insert(x, gp);
                x = gp;
            }
            x
        }
        for &i in &up {
            for id in self.nodes[i].conns.keys() {
                if let Some(Who::Node(j)) = self.who.get(id) {
                    if parent.contains_key(j) {
                        let (a, b) = (find(&mut parent, i), find(&mut parent, *j));
                        parent.insert(a, b);
                    }
                }
            }
        }
        let roots: HashSet<usize> = up.iter().map(|&i| find(&mut parent, i)).collect();
        roots.len()
    }

    /// The most outbound peers any honest node that is up holds in one /16 group.
    pub fn max_outbound_per_group(&self) -> usize {
        self.honest_up()
            .map(|i| {
                let mut per: HashMap<Group, usize> = HashMap::new();
                for (id, l) in &self.nodes[i].conns {
                    if l.outbound {
                        *per.entry(self.addr_of(id).group()).or_default() += 1;
                    }
                }
                per.into_values().max().unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    }

    /// Outbound peers of node `i` that are the attacker's.
    pub fn attacker_outbound(&self, i: usize) -> usize {
        self.nodes[i]
            .conns
            .iter()
            .filter(|(id, l)| l.outbound && self.is_attacker(id))
            .count()
    }

    /// Takes node `i` down: its connections close, it answers nothing more.
    pub fn take_down(&mut self, i: usize) {
        self.nodes[i].up = false;
        self.nodes[i].gone = true;
        let peers: Vec<NodeId> = self.nodes[i].conns.keys().copied().collect();
        for p in peers {
            self.close(i, p);
        }
    }

    /// A random number below `n` from the run's generator.
    pub fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n as u64) as usize
    }

    /// Runs events until `done` holds (checked every `step` of virtual time, after all
    /// events up to then) or `limit` of virtual time has passed; the virtual time at
    /// which it held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        step: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let end = self.now + limit;
        let mut check = self.now;
        loop {
            let next = self.queue.first_key_value().map(|(k, _)| k.0);
            if next.is_none_or(|t| t > check) {
                if check > end {
                    return None;
                }
                self.now = self.now.max(check);
                if done(self) {
                    return Some(self.elapsed());
                }
                check += step;
                continue;
            }
            let ((t, _), ev) = self.queue.pop_first().expect("an event");
            self.now = t;
            self.stats.events += 1;
            self.handle(ev);
        }
    }

    /// Runs every event up to `d` of virtual time from now.
    pub fn run_for(&mut self, d: Duration) {
        let _ = self.run_until(d, d, |_| false);
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Start(i) => self.start(i),
            Ev::Attack(i) => {
                if let Some(a) = self.p.attack.clone() {
                    if self.nodes[i].up {
                        self.attacker_connects(i, &a);
                        self.drive(i);
                    }
                }
            }
            Ev::Timer(i, at) => {
                let n = &mut self.nodes[i];
                if !n.up || n.timer != Some(at) {
                    return;
                }
                n.timer = None;
                n.book.handle_timeout(now);
                n.manager.handle_timeout(now, &mut n.book);
                n.book_deadline = n.book.poll_timeout();
                self.drive(i);
            }
            Ev::Dialed { from, addr } => self.dialed(from, addr),
            Ev::DialFailed { from, addr } => self.dial_outcome(from, addr, DialOutcome::Failed),
            Ev::Request { from, to } => self.request(from, to),
            Ev::Answer { to, from, bytes } => self.answer(to, from, bytes),
            Ev::Close { node, peer } => self.close(node, peer),
        }
    }

    fn start(&mut self, i: usize) {
        let now = self.now;
        let seeds: Vec<NetAddr> = self.nodes[..self.p.seeds].iter().map(|n| n.addr).collect();
        let n = &mut self.nodes[i];
        n.up = true;
        // Discovery::start: the initial peers, each its own source.
        for s in seeds {
            if s != n.addr {
                let _ = n.book.add_address(now, s, s.addr.ip());
            }
        }
        // Start: our own listen address.
        n.book.add_our_address(n.addr);
        if let Some(a) = &self.p.attack {
            let at = self.t0 + a.starts_at.max(self.nodes[i].starts_at);
            self.push(at, Ev::Attack(i));
        }
        self.drive(i);
    }

    /// The attacker opens inbound connections to node `i` (alternating its groups)
    /// and, for an honest node, floods its book with answers from them.
    fn attacker_connects(&mut self, i: usize, a: &Attack) {
        let now = self.now;
        let mut peers = Vec::new();
        for k in 0..a.inbound_per_node {
            let g = k % 2;
            let h = self.below(a.per_group);
            peers.push(self.attackers[g * a.per_group + h]);
        }
        for att in &peers {
            let n = &mut self.nodes[i];
            if n.inbound() >= self.p.max_inbound || n.conns.contains_key(&att.id) {
                continue;
            }
            n.conns.insert(
                att.id,
                Link {
                    outbound: false,
                    since: now,
                },
            );
            let _ = n.book.add_address(now, *att, att.addr.ip());
            n.manager.handle_peer_up(now, att.id, att.addr, false);
        }
        if self.nodes[i].role == Role::Honest {
            for k in 0..a.flood_answers {
                let src = peers[k % peers.len()].addr.ip();
                let addrs = self.attacker_answer();
                self.stats.attacker_addrs_sent += addrs.len() as u64;
                let n = &mut self.nodes[i];
                n.exchange.learn(now, &mut n.book, src, &addrs);
            }
        }
    }

    fn attacker_answer(&mut self) -> Vec<NetAddr> {
        (0..MAX_ADDRS)
            .map(|_| {
                let k = self.below(self.attackers.len());
                self.attackers[k]
            })
            .collect()
    }

    /// Carries out what node `i`'s manager decided and arms its one timer, as the
    /// service's `drive` does.
    fn drive(&mut self, i: usize) {
        let now = self.now;
        let lat = self.p.latency;
        while let Some(action) = self.nodes[i].manager.poll_action() {
            match action {
                Action::Dial(addr) => {
                    self.stats.dials += 1;
                    // TCP, Noise and the Version exchange: three one-way trips.
                    self.push(now + lat * 3, Ev::Dialed { from: i, addr });
                }
                Action::Ask(id) => {
                    if self.nodes[i].conns.contains_key(&id) {
                        self.stats.requests += 1;
                        self.push(now + lat, Ev::Request { from: i, to: id });
                    } else {
                        self.nodes[i].manager.handle_answer(now, id, false);
                    }
                }
                Action::Disconnect(id) | Action::LetGo(id) => {
                    self.push(now, Ev::Close { node: i, peer: id });
                }
            }
        }
        let target = self.target();
        let n = &mut self.nodes[i];
        if n.role == Role::Honest && n.reached_target.is_none() && n.manager.outbound() >= target {
            n.reached_target = Some(now - self.t0);
        }
        // The book's deadlines (bad addresses forgotten after `bad_for`, bans lifted)
        // are refreshed at every timer rather than at every input: between two ticks a
        // book only gains deadlines `bad_for` (an hour) ahead, far past the next tick.
        let mut at = n.manager.poll_timeout();
        if let Some(t) = n.book_deadline {
            at = at.min(t);
        }
        if n.timer != Some(at) {
            n.timer = Some(at);
            self.push(at.max(now), Ev::Timer(i, at));
        }
    }

    fn dial_outcome(&mut self, from: usize, addr: NetAddr, outcome: DialOutcome) {
        if !self.nodes[from].up {
            return;
        }
        if outcome == DialOutcome::Failed {
            self.stats.dial_failures += 1;
        }
        let now = self.now;
        let n = &mut self.nodes[from];
        n.manager.handle_dialed(now, &mut n.book, addr, outcome);
        self.drive(from);
    }

    /// The virtual Switch's answer to a dial of `addr` by `from`.
    fn dialed(&mut self, from: usize, addr: NetAddr) {
        if !self.nodes[from].up {
            return;
        }
        let timeout = self.p.dial_timeout.saturating_sub(self.p.latency * 3);
        let me = self.nodes[from].addr.id;
        let target = match self.at.get(&addr.addr).copied() {
            None => {
                self.push(self.now + timeout, Ev::DialFailed { from, addr });
                return;
            }
            Some(Who::Node(t)) if !self.nodes[t].up => {
                self.push(self.now + timeout, Ev::DialFailed { from, addr });
                return;
            }
            Some(w) => w,
        };
        let (id, room) = match target {
            Who::Node(t) => (
                self.nodes[t].addr.id,
                self.nodes[t].inbound() < self.p.max_inbound,
            ),
            Who::Attacker(a) => (self.attackers[a].id, true),
        };
        if id == me {
            // SelfDial: the service learns its own address.
            self.nodes[from].book.add_our_address(addr);
            return self.dial_outcome(from, addr, DialOutcome::AlreadyConnected);
        }
        if id != addr.id || !room || self.nodes[from].outbound() >= self.p.max_outbound {
            return self.dial_outcome(from, addr, DialOutcome::Failed);
        }
        if self.nodes[from].conns.contains_key(&id) {
            return self.dial_outcome(from, addr, DialOutcome::AlreadyConnected);
        }
        let now = self.now;
        // The dialed side: its PeerUp (inbound) files the announced listen address.
        if let Who::Node(t) = target {
            let dialer = self.nodes[from].addr;
            let n = &mut self.nodes[t];
            n.conns.insert(
                dialer.id,
                Link {
                    outbound: false,
                    since: now,
                },
            );
            let _ = n.book.add_address(now, dialer, dialer.addr.ip());
            n.manager.handle_peer_up(now, dialer.id, dialer.addr, false);
            self.drive(t);
        }
        // The dialer: PeerUp, then the dial's result.
        let n = &mut self.nodes[from];
        n.conns.insert(
            id,
            Link {
                outbound: true,
                since: now,
            },
        );
        n.manager.handle_peer_up(now, id, addr.addr, true);
        n.manager
            .handle_dialed(now, &mut n.book, addr, DialOutcome::Connected);
        if n.role == Role::Honest {
            let held = self.attacker_outbound(from);
            self.stats.attacker_outbound_max = self.stats.attacker_outbound_max.max(held);
        }
        self.drive(from);
    }

    /// A `GetAddrs` from `from` reaches `to`.
    fn request(&mut self, from: usize, to: NodeId) {
        let now = self.now;
        let lat = self.p.latency;
        let asker = self.nodes[from].addr.id;
        if !self.nodes[from].up {
            return;
        }
        let fail = Ev::Answer {
            to: from,
            from: to,
            bytes: None,
        };
        if !self.nodes[from].conns.contains_key(&to) {
            return self.push(now, fail);
        }
        let mut then_close = None;
        let addrs = match self.who[&to] {
            Who::Attacker(_) => {
                let addrs = self.attacker_answer();
                self.stats.attacker_addrs_sent += addrs.len() as u64;
                addrs
            }
            Who::Node(t) => {
                let n = &mut self.nodes[t];
                let Some(link) = n.conns.get(&asker).copied() else {
                    return self.push(now, fail);
                };
                match n
                    .exchange
                    .on_request(now, &mut n.book, asker, !link.outbound)
                {
                    Ok(answer) => {
                        if answer.then_disconnect {
                            then_close = Some(t);
                        }
                        answer.addrs
                    }
                    Err(_fault) => {
                        self.stats.faults += 1;
                        self.push(
                            now,
                            Ev::Close {
                                node: t,
                                peer: asker,
                            },
                        );
                        return self.push(now, fail);
                    }
                }
            }
        };
        let bytes = rmp_serde::to_vec(&Addrs(addrs)).expect("Addrs encodes");
        let ev = Ev::Answer {
            to: from,
            from: to,
            bytes: Some(bytes),
        };
        self.push(now + lat, ev);
        if let Some(t) = then_close {
            // Seed mode: closed once the answer is written, so it arrives first.
            self.push(
                now + lat,
                Ev::Close {
                    node: t,
                    peer: asker,
                },
            );
        }
    }

    /// An answer (or the failure of a request) from `from` reaches `to`.
    fn answer(&mut self, to: usize, from: NodeId, bytes: Option<Vec<u8>>) {
        let now = self.now;
        if !self.nodes[to].up {
            return;
        }
        let src = self.addr_of(&from).addr.ip();
        let n = &mut self.nodes[to];
        let ok = match bytes {
            Some(b) if n.conns.contains_key(&from) => {
                let Addrs(addrs) = rmp_serde::from_slice(&b).expect("an honest answer decodes");
                n.exchange.learn(now, &mut n.book, src, &addrs);
                self.stats.answers += 1;
                true
            }
            _ => false,
        };
        n.manager.handle_answer(now, from, ok);
        self.drive(to);
    }

    /// Closes the connection between node `i` and `peer`, both sides.
    fn close(&mut self, i: usize, peer: NodeId) {
        let me = self.nodes[i].addr.id;
        self.close_one(i, peer);
        if let Some(Who::Node(j)) = self.who.get(&peer).copied() {
            self.close_one(j, me);
        }
    }

    fn close_one(&mut self, i: usize, peer: NodeId) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let Some(link) = n.conns.remove(&peer) else {
            return;
        };
        if n.role == Role::Seed && !link.outbound {
            let held = now - link.since;
            self.stats.seed_max_hold = self.stats.seed_max_hold.max(held);
        }
        n.manager.handle_peer_down(now, peer);
        if n.up {
            self.drive(i);
        }
    }
}
