//! [`Manager`]: the peer manager's policy, pure (time comes in, randomness from a
//! seed, nothing is dialed here): it keeps the outbound target filled from the
//! address book, backs off per address, asks peers for addresses when the book is
//! thin, and, in seed mode, crawls.
//!
//! Inputs are `handle_*(now, …)`; outputs are drained with [`Manager::poll_action`]
//! until `None`, and [`poll_timeout`](Manager::poll_timeout)
//! says when to call [`handle_timeout`](Manager::handle_timeout) next, like the cores
//! of `switchyard-proto`.
//!
//! * **Filling.** Every [`tick`](ManagerConfig::tick), while outbound peers and dials
//!   in progress are below [`target_outbound`](ManagerConfig::target_outbound), it
//!   picks addresses with [`AddrBook::pick_address`] (biased toward tried as the
//!   outbound set fills, see [`dial_bias`]), excluding the groups of the current
//!   outbound peers so they spread across networks, and never an address that is
//!   connected, being dialed or backing off; at most
//!   [`max_dialing`](ManagerConfig::max_dialing) dials are in flight.
//! * **Backoff.** A failed dial is recorded in the book
//!   ([`AddrBook::mark_attempt`]) and the address waits an exponential delay with
//!   jitter ([`Backoff`]) before it may be dialed again; a success is recorded with
//!   [`AddrBook::mark_good`] (the Noise transport authenticated the id) and clears
//!   the backoff; an address we connected to is not dialed again within the
//!   [`request_interval`](ManagerConfig::request_interval) (a seed lets us go after
//!   one answer). Persistent peers are the Switch's: the book keeps them out of
//!   selection, and they count toward the outbound target when connected.
//!   At most [`max_outbound_per_group`](ManagerConfig::max_outbound_per_group)
//!   outbound peers share a group of routable addresses: when the book holds only
//!   addresses of groups already reached, nothing is dialed and the manager asks
//!   for more addresses instead.
//! * **Asking.** When the book holds fewer than
//!   [`thin_book`](ManagerConfig::thin_book) addresses, or nothing can be dialed, it
//!   asks one connected peer (outbound first) it has not asked within the
//!   [`request_interval`](ManagerConfig::request_interval). What an attacker's
//!   answers put in the book cannot take more than its groups' share of outbound
//!   slots (the cap above): a simulation of 200 nodes with an attacker in two
//!   groups present from the start, gossiping millions of addresses, measured at
//!   most 2 of 10 outbound peers of any node.
//! * **Crawling** (seed mode, [`crawl`](ManagerConfig::crawl)): the target is not
//!   kept; instead every tick it dials addresses not crawled within
//!   [`crawl_interval`](ManagerConfig::crawl_interval), asks each for addresses once
//!   connected, and disconnects it when the answer came (or failed). A crawler asks
//!   no other peer: its inbound peers are let go once they have their answer, or
//!   after [`seed_hold`](ManagerConfig::seed_hold) if they never ask.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchyard_proto::switch::backoff::{Backoff, Jitter};
use switchyard_proto::NodeId;

use crate::addr::{Group, NetAddr};
use crate::book::{dial_bias, AddrBook};

/// How the peer manager behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManagerConfig {
    /// Outbound peers to keep (default 10; keep it at most `limits.max_outbound`).
    pub target_outbound: usize,
    /// How often the manager looks at its peers (default 5 s).
    pub tick: Duration,
    /// Dials in flight at most (default 3).
    pub max_dialing: usize,
    /// First delay after a failed dial of an address (default 1 s), doubling per
    /// failure up to `dial_backoff_max`, each drawn in `[d/2, d]`.
    pub dial_backoff_min: Duration,
    /// Longest delay between dials of one address (default 5 min).
    pub dial_backoff_max: Duration,
    /// Below this many addresses the book is thin: ask peers for more (default 100).
    pub thin_book: usize,
    /// Most outbound peers (connected or being dialed) in one group of routable
    /// addresses (IPv4 /16, IPv6 /32; default 1, as Bitcoin Core keeps them). A node
    /// whose book holds only addresses of groups it already reaches dials none of
    /// them and asks for more addresses instead, so an attacker in a few groups gets
    /// at most this many outbound slots per group, whatever it gossips. Loopback and
    /// private addresses (local testnets) are not capped, nor is a crawler. A network
    /// of public addresses in fewer groups than `target_outbound` (a cluster in one
    /// provider's /16, say) keeps each node below its target unless this is raised:
    /// there, set it to `target_outbound`. Persistent peers dialed by the Switch count
    /// toward their group.
    pub max_outbound_per_group: usize,
    /// How often one peer is asked at most (default 30 s: the PEX service's
    /// `ExchangeConfig::request_interval`).
    pub request_interval: Duration,
    /// Seed mode: crawl instead of keeping outbound peers.
    pub crawl: bool,
    /// Seed mode: how long before an address is crawled again (default 10 min).
    pub crawl_interval: Duration,
    /// Seed mode: how long an inbound peer may stay without being answered and let
    /// go (default 1 min): a peer that connects to a seed and never asks does not
    /// hold its slot.
    pub seed_hold: Duration,
    /// Seed of the jitter.
    pub seed: u64,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            target_outbound: 10,
            tick: Duration::from_secs(5),
            max_dialing: 3,
            dial_backoff_min: Duration::from_secs(1),
            dial_backoff_max: Duration::from_secs(300),
            thin_book: 100,
            max_outbound_per_group: 1,
            request_interval: Duration::from_secs(30),
            crawl: false,
            crawl_interval: Duration::from_secs(600),
            seed_hold: Duration::from_secs(60),
            seed: 0,
        }
    }
}

/// What the manager wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Dial this address; report with [`Manager::handle_dialed`].
    Dial(NetAddr),
    /// Ask this connected peer for addresses; report with [`Manager::handle_answer`].
    Ask(NodeId),
    /// Disconnect this peer (crawled).
    Disconnect(NodeId),
    /// Seed mode: disconnect this inbound peer, connected for `seed_hold` without
    /// being let go after an answer.
    LetGo(NodeId),
}

/// How a dial ended, as far as the manager cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialOutcome {
    /// Connected, and the remote proved the id.
    Connected,
    /// Already connected to that node (not a failure of the address).
    AlreadyConnected,
    /// Refused, unreachable, or another node answered: counts against the address.
    Failed,
}

#[derive(Debug, Clone)]
struct Connected {
    outbound: bool,
    group: Group,
    since: Instant,
}

/// The peer manager's policy. See the [module docs](self).
#[derive(Debug)]
pub struct Manager {
    cfg: ManagerConfig,
    rng: Jitter,
    peers: HashMap<NodeId, Connected>,
    dialing: HashMap<NodeId, NetAddr>,
    backoff: HashMap<NodeId, (Backoff, Instant)>,
    connected_at: HashMap<NodeId, Instant>,
    asked: HashMap<NodeId, Instant>,
    asking: HashSet<NodeId>,
    crawled: HashMap<NodeId, Instant>,
    crawling: HashSet<NodeId>,
    next_tick: Instant,
    actions: VecDeque<Action>,
}

impl Manager {
    /// A manager that ticks first at `now`.
    #[must_use]
    pub fn new(cfg: ManagerConfig, now: Instant) -> Self {
        Manager {
            rng: Jitter::new(cfg.seed),
            cfg,
            peers: HashMap::new(),
            dialing: HashMap::new(),
            backoff: HashMap::new(),
            connected_at: HashMap::new(),
            asked: HashMap::new(),
            asking: HashSet::new(),
            crawled: HashMap::new(),
            crawling: HashSet::new(),
            next_tick: now,
            actions: VecDeque::new(),
        }
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &ManagerConfig {
        &self.cfg
    }

    /// Outbound peers connected now (persistent ones included).
    #[must_use]
    pub fn outbound(&self) -> usize {
        self.peers.values().filter(|p| p.outbound).count()
    }

    /// Peers connected now, both directions.
    #[must_use]
    pub fn connected(&self) -> usize {
        self.peers.len()
    }

    /// Dials in flight.
    #[must_use]
    pub fn dialing(&self) -> usize {
        self.dialing.len()
    }

    /// A peer connected (`outbound`: we dialed it) from `remote`. The next tick comes
    /// at once, so a thin book is refilled from a new peer without waiting.
    pub fn handle_peer_up(&mut self, now: Instant, id: NodeId, remote: SocketAddr, outbound: bool) {
        self.next_tick = self.next_tick.min(now);
        self.peers.insert(
            id,
            Connected {
                outbound,
                group: Group::of(remote.ip()),
                since: now,
            },
        );
    }

    /// A peer is gone.
    pub fn handle_peer_down(&mut self, _now: Instant, id: NodeId) {
        self.peers.remove(&id);
        self.asking.remove(&id);
    }

    /// A dial of `addr` ended; the book records it.
    pub fn handle_dialed(
        &mut self,
        now: Instant,
        book: &mut AddrBook,
        addr: NetAddr,
        outcome: DialOutcome,
    ) {
        self.dialing.remove(&addr.id);
        let crawl = self.cfg.crawl;
        match outcome {
            DialOutcome::Connected => {
                self.backoff.remove(&addr.id);
                self.connected_at.insert(addr.id, now);
                let _ = book.mark_good(now, addr);
                if crawl {
                    self.crawling.insert(addr.id);
                    // Asked already (its PeerUp may have come first): the answer to
                    // that request lets it go.
                    if self.asking.insert(addr.id) {
                        self.asked.insert(addr.id, now);
                        self.actions.push_back(Action::Ask(addr.id));
                    }
                }
            }
            DialOutcome::AlreadyConnected => {}
            DialOutcome::Failed => {
                let _ = book.mark_attempt(now, &addr.id);
                let (min, max) = (self.cfg.dial_backoff_min, self.cfg.dial_backoff_max);
                let roll = self.rng.next_u64();
                let entry = self
                    .backoff
                    .entry(addr.id)
                    .or_insert_with(|| (Backoff::new(min, max), now));
                entry.1 = now + entry.0.next_delay(roll);
            }
        }
    }

    /// An answer from `peer` came (or the request failed: `ok` false).
    pub fn handle_answer(&mut self, _now: Instant, peer: NodeId, _ok: bool) {
        self.asking.remove(&peer);
        if self.crawling.remove(&peer) {
            self.actions.push_back(Action::Disconnect(peer));
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) has work next.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick
    }

    /// Does what is due at `now`: a tick fills the outbound set (or crawls) and asks
    /// for addresses when the book is thin.
    pub fn handle_timeout(&mut self, now: Instant, book: &mut AddrBook) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + self.cfg.tick;
        // Backoffs last until a success, or until the book forgets the address.
        self.backoff.retain(|id, _| book.get(id).is_some());
        let every = self.cfg.request_interval;
        self.connected_at
            .retain(|_, t| now.saturating_duration_since(*t) < every);
        let dialed = if self.cfg.crawl {
            self.crawl(now, book)
        } else {
            self.fill(now, book)
        };
        // A crawler asks the peers it dials, and only those: its inbound peers are
        // let go once answered.
        if self.cfg.crawl {
            self.let_go_idle(now);
            return;
        }
        let short = self.outbound() + self.dialing.len() < self.cfg.target_outbound;
        if book.len() < self.cfg.thin_book || (short && dialed == 0) {
            self.ask_someone(now);
        }
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether `addr` may be dialed now: not connected or being dialed, not backing
    /// off, and not connected by us within the `request_interval` (a peer that lets us
    /// go at once, like a seed, is not redialed in a loop).
    fn dialable(&self, now: Instant, addr: &NetAddr) -> bool {
        !self.peers.contains_key(&addr.id)
            && !self.dialing.contains_key(&addr.id)
            && self.backoff.get(&addr.id).is_none_or(|(_, t)| *t <= now)
            && self
                .connected_at
                .get(&addr.id)
                .is_none_or(|t| now.saturating_duration_since(*t) >= self.cfg.request_interval)
    }

    /// Whether `addr`'s group already has its share of outbound peers and dials
    /// ([`max_outbound_per_group`](ManagerConfig::max_outbound_per_group); routable
    /// addresses only, and not when crawling: a crawler's connections are brief and
    /// choose nobody's view of the network).
    fn group_full(&self, addr: &NetAddr) -> bool {
        if self.cfg.crawl || !crate::addr::is_routable(addr.addr.ip()) {
            return false;
        }
        let group = addr.group();
        let outbound = self
            .peers
            .values()
            .filter(|p| p.outbound && p.group == group)
            .count();
        let dialing = self.dialing.values().filter(|a| a.group() == group).count();
        outbound + dialing >= self.cfg.max_outbound_per_group
    }

    /// Picks up to `n` addresses to dial; how many.
    fn pick(
        &mut self,
        now: Instant,
        book: &mut AddrBook,
        n: usize,
        mut ok: impl FnMut(&Self, &NetAddr) -> bool,
    ) -> usize {
        let target = self.cfg.target_outbound;
        let mut exclude: HashSet<Group> = self
            .peers
            .values()
            .filter(|p| p.outbound)
            .map(|p| p.group)
            .collect();
        exclude.extend(self.dialing.values().map(NetAddr::group));
        let mut chosen = 0;
        // A few draws per slot: a draw may hit a connected or backing-off address.
        // Every other draw after a miss goes to the new table, so a tried table of
        // connected peers cannot use up the draws.
        let mut missed = false;
        for i in 0..n.saturating_mul(8) {
            if chosen == n {
                break;
            }
            let bias = if missed && i % 2 == 1 {
                0
            } else {
                dial_bias(self.outbound(), target)
            };
            let Some(addr) = book.pick_address(now, bias, &exclude) else {
                break;
            };
            if !self.dialable(now, &addr) || !ok(self, &addr) || self.group_full(&addr) {
                missed = true;
                continue;
            }
            exclude.insert(addr.group());
            self.dialing.insert(addr.id, addr);
            self.actions.push_back(Action::Dial(addr));
            chosen += 1;
        }
        chosen
    }

    fn fill(&mut self, now: Instant, book: &mut AddrBook) -> usize {
        let have = self.outbound() + self.dialing.len();
        let want = self
            .cfg
            .target_outbound
            .saturating_sub(have)
            .min(self.cfg.max_dialing.saturating_sub(self.dialing.len()));
        if want == 0 {
            return 0;
        }
        self.pick(now, book, want, |_, _| true)
    }

    fn crawl(&mut self, now: Instant, book: &mut AddrBook) -> usize {
        let want = self.cfg.max_dialing.saturating_sub(self.dialing.len());
        let every = self.cfg.crawl_interval;
        self.crawled
            .retain(|_, t| now.saturating_duration_since(*t) < every);
        let n = self.pick(now, book, want, |me, a| !me.crawled.contains_key(&a.id));
        let dialing: Vec<NodeId> = self.dialing.keys().copied().collect();
        for id in dialing {
            self.crawled.entry(id).or_insert(now);
        }
        n
    }

    /// Seed mode: inbound peers connected longer than `seed_hold` are let go.
    fn let_go_idle(&mut self, now: Instant) {
        let hold = self.cfg.seed_hold;
        let mut idle: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.outbound && now.saturating_duration_since(p.since) >= hold)
            .map(|(id, _)| *id)
            .collect();
        idle.sort_unstable();
        for id in idle {
            // Once: its PeerDown removes it; until then it is not told twice.
            if let Some(p) = self.peers.get_mut(&id) {
                p.since = now;
            }
            self.actions.push_back(Action::LetGo(id));
        }
    }

    fn ask_someone(&mut self, now: Instant) {
        let every = self.cfg.request_interval;
        let mut candidates: Vec<(bool, NodeId)> = self
            .peers
            .iter()
            .filter(|(id, _)| !self.asking.contains(*id))
            .filter(|(id, _)| {
                self.asked
                    .get(*id)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= every)
            })
            .map(|(id, p)| (!p.outbound, *id))
            .collect();
        if candidates.is_empty() {
            return;
        }
        candidates.sort_unstable();
        // Outbound peers first (we chose them); a random one of the best kind.
        let best = candidates[0].0;
        let same: Vec<NodeId> = candidates
            .iter()
            .filter(|(k, _)| *k == best)
            .map(|(_, id)| *id)
            .collect();
        let id = same[(self.rng.next_u64() % same.len() as u64) as usize];
        self.asked.insert(id, now);
        self.asking.insert(id);
        self.asked
            .retain(|_, t| now.saturating_duration_since(*t) < every);
        self.asked.insert(id, now);
        self.actions.push_back(Action::Ask(id));
    }
}
