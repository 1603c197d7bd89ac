//! [`SwitchCore`]: the node-wide decisions of the Switch, as a pure state machine.
//!
//! Which connections a node keeps, which duplicate survives, when persistent peers are
//! redialed, who is banned, which refusals get a goodbye, and when shutdown is over:
//! all decided here, with time passed in as `now` and randomness drawn from a seed the
//! runtime gives ([`SwitchConfig::seed`]). The Switch actor feeds it what happens
//! (`handle_*`) and carries out what it returns and queues ([`poll_action`]), arming one
//! timer at [`poll_timeout`]; deadlines are also checked on every input.
//!
//! ```
//! use std::time::Instant;
//! use switchyard_proto::switch::{Action, Decision, SwitchConfig, SwitchCore};
//! use switchyard_proto::{Config, NodeId};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let mut core = SwitchCore::new(SwitchConfig::new(NodeId([1; 20]), Config::default()));
//! let ip = "192.0.2.7".parse().unwrap();
//! core.handle_accept(now, 1, ip).expect("a free slot");
//! assert_eq!(core.handle_handshake(now, 1, NodeId([2; 20])), Decision::Admit);
//! core.shutdown(now, std::time::Duration::from_secs(5));
//! assert!(matches!(core.poll_action(), Some(Action::Close { conn: 1, .. })));
//! core.handle_closed(now, 1, switchyard_proto::DisconnectReason::Shutdown);
//! assert_eq!(core.poll_action(), Some(Action::ShutdownDone { remaining: 0 }));
//! ```
//!
//! The rules, in the order they are checked:
//!
//! * **Accept** (an inbound TCP connection, before anything is read): shutting down;
//!   banned IP; `max_per_ip`; `max_per_subnet` (IPv4 `/subnet_prefix_v4`, IPv6
//!   `/subnet_prefix_v6`); `max_handshakes` (handshakes in progress have their own
//!   bound, separate from `max_inbound`); `max_inbound` (only when no persistent or
//!   unconditional peer could be the one connecting — otherwise it is checked at the
//!   handshake, so such a peer still gets in); the rate of new handshakes per IP and
//!   per subnet. Per-IP rules (bans of IPs, limits, rates) apply to loopback too
//!   unless `limit_loopback` is false.
//! * **Dial**: shutting down; this node; a banned node id; already connected. When
//!   the TCP connection opens: banned IP; `max_outbound` (persistent and unconditional
//!   peers are exempt).
//! * **Authenticated** (the transport's handshake proved the remote's key, before the
//!   core's handshake says a word, so a refused remote never sees our `Version`):
//!   shutting down; a banned node id. In plaintext no id is proven, and the ban is
//!   checked at the handshake only.
//! * **Handshake** (the remote's node id is known, and checked against its proven key):
//!   banned id (again: a ban may have come meanwhile); the duplicate tie-break (**the connection dialed by the lower node id
//!   survives**; if one node dialed both, the first admitted stays); `max_inbound`
//!   for an inbound peer that is neither persistent nor unconditional (exempt peers
//!   take no slot). When inbound slots are full and `evict_inbound` is on, the new
//!   peer takes the slot of the least valuable inbound peer instead
//!   ([`Decision::Evict`], chosen as [`evict`] says: subnet-diverse, low-latency and
//!   long-lived peers are protected, exempt and outbound peers are never candidates);
//!   `max_inbound` is checked at accept only when no peer could be evicted.
//! * **Reports** and closes with a misbehaviour reason add points to the node id and
//!   IP; past `ban_threshold` both are banned for `ban_duration` and their connections
//!   closed. Points are forgotten `ban_duration` after a key's last report. Scores
//!   and bans live in the [`BanList`], so a peer store keeps both across restarts.
//!
//! [`poll_action`]: SwitchCore::poll_action
//! [`poll_timeout`]: SwitchCore::poll_timeout

pub mod admission;
pub mod backoff;
pub mod bans;
pub mod evict;
pub mod persistent;
pub mod refusals;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub use admission::{ConnId, Counts, Direction, Slot};
pub use bans::{BanKey, BanList, MemoryBans, Score, Severity};
pub use persistent::{DialState, Persistent, PersistentId};
pub use refusals::{Refusal, RefusalSummary};

use crate::config::Config;
use crate::connection::handshake::HandshakeError;
use crate::id::NodeId;
use crate::reason::DisconnectReason;
use admission::{subnet, RateTable, Slots};
use backoff::{Backoff, Jitter};
use evict::{Candidate, Protect};
use refusals::Refusals;

/// Most node ids and IPs whose misbehaviour points a [`MemoryBans`] remembers (a
/// peer store's list keeps the same bound).
pub const MAX_SCORES: usize = 65_536;

/// What a [`SwitchCore`] is built from.
#[derive(Debug, Clone)]
pub struct SwitchConfig {
    /// This node's id.
    pub local: NodeId,
    /// Limits, timeouts and thresholds.
    pub limits: Config,
    /// The persistent peers, by index (a [`PersistentId`]), with their ids when known.
    pub persistent: Vec<Option<NodeId>>,
    /// Node ids exempt from the inbound and outbound limits (they are not dialed).
    pub unconditional: Vec<NodeId>,
    /// Seed of the jitter of redial delays.
    pub seed: u64,
}

impl SwitchConfig {
    /// A config with no persistent or unconditional peers and seed 0.
    #[must_use]
    pub fn new(local: NodeId, limits: Config) -> Self {
        SwitchConfig {
            local,
            limits,
            persistent: Vec::new(),
            unconditional: Vec::new(),
            seed: 0,
        }
    }
}

/// What the runtime must do, drained with [`SwitchCore::poll_action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Dial this persistent peer, then report with [`SwitchCore::handle_connected`] or
    /// [`SwitchCore::handle_dial_failed`].
    Dial(PersistentId),
    /// Close this connection with this reason (shutdown, or its peer was banned).
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: DisconnectReason,
    },
    /// A node id or IP was banned (for the log, and for a store that keeps bans).
    Banned {
        /// What is banned.
        key: BanKey,
        /// Until when.
        until: Instant,
        /// The report that crossed the threshold.
        reason: String,
    },
    /// Refusals since the last summary (log it once).
    RefusalSummary(RefusalSummary),
    /// Shutdown is over: every connection closed (`remaining` 0), or the shutdown
    /// limit passed with `remaining` connections still open.
    ShutdownDone {
        /// Connections still open.
        remaining: usize,
    },
}

/// What to do with a connection whose handshake just completed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// Keep it: it is the only connection to that node.
    Admit,
    /// Keep it, and close the older connection `0` to the same node with
    /// [`DisconnectReason::DuplicateConnection`].
    Replace(ConnId),
    /// Keep it in the inbound slot of the connection `0`, which was the least
    /// valuable inbound peer (`limits.evict_inbound`): close that one with
    /// [`DisconnectReason::Evicted`].
    Evict(ConnId),
    /// Close it with this reason.
    Reject(DisconnectReason),
}

/// Why a dial is refused before any connection is made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialRefusal {
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The address names this node.
    #[error("refusing to dial ourselves")]
    SelfDial,
    /// The node is banned.
    #[error("{0} is banned")]
    Banned(NodeId),
    /// A connection to this node is already admitted.
    #[error("already connected to {0}")]
    AlreadyConnected(NodeId),
}

/// Whether a failed dial of a persistent peer is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Redial after the next backoff delay.
    Later,
    /// Never (the address is this node).
    Never,
}

#[derive(Debug, Clone, Copy)]
struct Conn {
    direction: Direction,
    ip: IpAddr,
    net: IpAddr,
    /// Whether per-IP rules apply to it (`limit_loopback`, or not loopback).
    limited: bool,
    slot: Slot,
    /// The node it is admitted for (`None` while handshaking, or once replaced).
    node: Option<NodeId>,
    persistent: Option<usize>,
    /// Its handshake was decided on once already.
    handshaken: bool,
    closing: bool,
    /// When its handshake completed (admitted).
    since: Option<Instant>,
    /// Its lowest measured round-trip time.
    rtt: Option<Duration>,
}

impl Conn {
    fn inbound_key(&self) -> Option<(IpAddr, IpAddr)> {
        (self.direction == Direction::Inbound).then_some((self.ip, self.net))
    }
}

#[derive(Debug, Clone, Copy)]
struct ShutdownState {
    deadline: Instant,
    done: bool,
}

/// The Switch's decisions (see the [module docs](self)).
#[derive(Debug)]
pub struct SwitchCore<B: BanList = MemoryBans> {
    local: NodeId,
    limits: Config,
    unconditional: HashSet<NodeId>,
    conns: HashMap<ConnId, Conn>,
    by_node: HashMap<NodeId, ConnId>,
    slots: Slots,
    ip_rate: RateTable,
    net_rate: RateTable,
    bans: B,
    refusals: Refusals,
    persistent: Vec<Persistent>,
    jitter: Jitter,
    shutdown: Option<ShutdownState>,
    /// Key of the hash that picks the subnets protected from eviction.
    evict_key: u64,
    actions: VecDeque<Action>,
}

impl SwitchCore<MemoryBans> {
    /// A core with bans kept in memory. Queues a [`Action::Dial`] for every persistent
    /// peer.
    #[must_use]
    pub fn new(config: SwitchConfig) -> Self {
        Self::with_bans(config, MemoryBans::default())
    }
}

impl<B: BanList> SwitchCore<B> {
    /// A core whose bans and misbehaviour scores live in `bans` (a peer store, say).
    #[must_use]
    pub fn with_bans(config: SwitchConfig, bans: B) -> Self {
        let limits = config.limits;
        let persistent: Vec<_> = config
            .persistent
            .iter()
            .map(|id| {
                Persistent::new(
                    *id,
                    Backoff::new(limits.redial_backoff_min, limits.redial_backoff_max),
                )
            })
            .collect();
        let actions = (0..persistent.len())
            .map(|i| Action::Dial(PersistentId(i)))
            .collect();
        SwitchCore {
            local: config.local,
            refusals: Refusals::new(limits.max_refusing),
            limits,
            unconditional: config.unconditional.into_iter().collect(),
            conns: HashMap::new(),
            by_node: HashMap::new(),
            slots: Slots::default(),
            ip_rate: RateTable::default(),
            net_rate: RateTable::default(),
            bans,
            persistent,
            jitter: Jitter::new(config.seed),
            // Drawn from its own generator, so the redial jitter is unchanged by it.
            evict_key: Jitter::new(!config.seed).next_u64(),
            shutdown: None,
            actions,
        }
    }

    // ----- inputs -----

    /// An inbound TCP connection `conn` from `ip` opened. `Ok`: start its handshake.
    /// `Err`: refuse it as the [`Refusal`] says (it is not tracked).
    pub fn handle_accept(&mut self, now: Instant, conn: ConnId, ip: IpAddr) -> Result<(), Refusal> {
        self.tick(now);
        self.forget(conn);
        let limited = self.limited(ip);
        let net = subnet(
            ip,
            self.limits.subnet_prefix_v4,
            self.limits.subnet_prefix_v6,
        );
        let counts = self.slots.counts();
        let reason = if self.shutdown.is_some() {
            DisconnectReason::Shutdown
        } else if limited && self.bans.banned_until(&BanKey::Ip(ip), now).is_some() {
            DisconnectReason::Banned
        } else if limited && self.slots.per_ip(&ip) >= self.limits.max_per_ip {
            DisconnectReason::MaxPerIp
        } else if limited && self.slots.per_subnet(&net) >= self.limits.max_per_subnet {
            DisconnectReason::MaxPerSubnet
        } else if counts.handshakes >= self.limits.max_handshakes {
            DisconnectReason::MaxHandshakes
        } else if counts.inbound >= self.limits.max_inbound
            && !self.has_exemptions()
            && self.victim().is_none()
        {
            DisconnectReason::MaxInbound
        } else if limited
            && !(self
                .ip_rate
                .has_token(now, &ip, self.limits.handshake_rate_per_ip)
                && self
                    .net_rate
                    .has_token(now, &net, self.limits.handshake_rate_per_subnet))
        {
            DisconnectReason::RateLimited
        } else {
            if limited {
                self.ip_rate
                    .take(now, ip, self.limits.handshake_rate_per_ip);
                self.net_rate
                    .take(now, net, self.limits.handshake_rate_per_subnet);
            }
            self.insert(
                conn,
                Conn {
                    direction: Direction::Inbound,
                    ip,
                    net,
                    limited,
                    slot: Slot::Handshake,
                    node: None,
                    persistent: None,
                    handshaken: false,
                    closing: false,
                    since: None,
                    rtt: None,
                },
            );
            return Ok(());
        };
        Err(self.refusals.refuse(now, reason))
    }

    /// May the node dial `expected` (the id in the address, when it names one)?
    /// Asked before connecting.
    pub fn handle_dial(
        &mut self,
        now: Instant,
        expected: Option<NodeId>,
    ) -> Result<(), DialRefusal> {
        self.tick(now);
        if self.shutdown.is_some() {
            return Err(DialRefusal::ShuttingDown);
        }
        let Some(id) = expected else { return Ok(()) };
        if id == self.local {
            Err(DialRefusal::SelfDial)
        } else if self.bans.banned_until(&BanKey::Node(id), now).is_some() {
            Err(DialRefusal::Banned(id))
        } else if self.by_node.contains_key(&id) {
            Err(DialRefusal::AlreadyConnected(id))
        } else {
            Ok(())
        }
    }

    /// Our dial's TCP connection `conn` to `ip` opened (`persistent` when it was an
    /// [`Action::Dial`]). `Ok`: start its handshake; `Err`: close it with the reason.
    pub fn handle_connected(
        &mut self,
        now: Instant,
        conn: ConnId,
        ip: IpAddr,
        expected: Option<NodeId>,
        persistent: Option<PersistentId>,
    ) -> Result<(), DisconnectReason> {
        self.tick(now);
        self.forget(conn);
        let persistent = persistent
            .map(|p| p.0)
            .filter(|&i| i < self.persistent.len());
        let limited = self.limited(ip);
        let exempt = persistent.is_some() || expected.is_some_and(|id| self.is_exempt(&id));
        let refusal = if self.shutdown.is_some() {
            Some(DisconnectReason::Shutdown)
        } else if (limited && self.bans.banned_until(&BanKey::Ip(ip), now).is_some())
            || expected.is_some_and(|id| self.bans.banned_until(&BanKey::Node(id), now).is_some())
        {
            Some(DisconnectReason::Banned)
        } else if !exempt && self.slots.counts().outbound >= self.limits.max_outbound {
            Some(DisconnectReason::MaxOutbound)
        } else {
            None
        };
        if let Some(reason) = refusal {
            if let Some(i) = persistent {
                self.schedule_redial(now, i);
            }
            return Err(reason);
        }
        let net = subnet(
            ip,
            self.limits.subnet_prefix_v4,
            self.limits.subnet_prefix_v6,
        );
        self.insert(
            conn,
            Conn {
                direction: Direction::Outbound,
                ip,
                net,
                limited,
                slot: if exempt { Slot::Exempt } else { Slot::Outbound },
                node: None,
                persistent,
                handshaken: false,
                closing: false,
                since: None,
                rtt: None,
            },
        );
        if let Some(p) = persistent.and_then(|i| self.persistent.get_mut(i)) {
            p.state = DialState::Connected(conn);
        }
        Ok(())
    }

    /// The dial of persistent peer `peer` failed before a connection opened.
    pub fn handle_dial_failed(&mut self, now: Instant, peer: PersistentId, retry: Retry) {
        self.tick(now);
        match retry {
            Retry::Later => self.schedule_redial(now, peer.0),
            Retry::Never => {
                if let Some(p) = self.persistent.get_mut(peer.0) {
                    p.state = DialState::Disabled;
                }
            }
        }
    }

    /// The transport's handshake of `conn` proved that the remote holds the key of
    /// `node`; the core's handshake has not spoken yet. `Ok`: go on with it. `Err`:
    /// close it with the reason (a banned id, or shutdown), telling the remote why
    /// before anything else. Unknown connections are refused with
    /// [`DisconnectReason::Shutdown`], as at the handshake.
    pub fn handle_authenticated(
        &mut self,
        now: Instant,
        conn: ConnId,
        node: NodeId,
    ) -> Result<(), DisconnectReason> {
        self.tick(now);
        let Some(mine) = self.conns.get(&conn) else {
            return Err(DisconnectReason::Shutdown);
        };
        if self.shutdown.is_some() {
            Err(DisconnectReason::Shutdown)
        } else if mine.closing || self.bans.banned_until(&BanKey::Node(node), now).is_some() {
            // A handshaking connection is closing only because its IP was banned.
            Err(DisconnectReason::Banned)
        } else {
            Ok(())
        }
    }

    /// The handshake of `conn` completed: `node` is the remote's **authenticated** node
    /// id (proven by the transport's handshake; the runtime must not pass an id the
    /// remote merely claims). Decides whether the connection stays, and which other
    /// connection goes for it.
    pub fn handle_handshake(&mut self, now: Instant, conn: ConnId, node: NodeId) -> Decision {
        self.tick(now);
        let Some(mine) = self.conns.get(&conn).copied() else {
            return Decision::Reject(DisconnectReason::Shutdown);
        };
        if self.shutdown.is_some() {
            return Decision::Reject(DisconnectReason::Shutdown);
        }
        if mine.handshaken {
            // One handshake per connection: a second one is the remote's fault.
            return Decision::Reject(DisconnectReason::Handshake(
                HandshakeError::DuplicateVersion,
            ));
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.handshaken = true;
        }
        if mine.closing {
            // Closing because its peer was banned.
            return Decision::Reject(DisconnectReason::Banned);
        }
        if self.bans.banned_until(&BanKey::Node(node), now).is_some() {
            return Decision::Reject(DisconnectReason::Banned);
        }
        let decision = match self.by_node.get(&node).copied() {
            None => Decision::Admit,
            Some(old) if old == conn => Decision::Admit,
            Some(old) => {
                let old_dialer = self.conns.get(&old).map_or(node, |c| self.dialer(c, node));
                let new_dialer = self.dialer(&mine, node);
                let winner = old_dialer.min(new_dialer);
                if new_dialer == winner && old_dialer != winner {
                    Decision::Replace(old)
                } else {
                    Decision::Reject(DisconnectReason::DuplicateConnection)
                }
            }
        };
        let replaced = match decision {
            Decision::Reject(_) => return decision,
            Decision::Replace(old) => Some(old),
            Decision::Admit | Decision::Evict(_) => None,
        };
        let mut evicted = None;
        let exempt = mine.persistent.is_some() || self.is_exempt(&node);
        let slot = match (mine.direction, exempt) {
            (_, true) => Slot::Exempt,
            (Direction::Inbound, false) => Slot::Inbound,
            (Direction::Outbound, false) => Slot::Outbound,
        };
        if slot == Slot::Inbound && mine.slot != Slot::Inbound {
            let freed = replaced
                .and_then(|old| self.conns.get(&old))
                .is_some_and(|c| c.slot == Slot::Inbound);
            let taken = self.slots.counts().inbound - usize::from(freed);
            if taken >= self.limits.max_inbound {
                // One connection goes for a new one: a replaced connection that held
                // no inbound slot leaves the new one refused, as without eviction.
                match self.victim() {
                    Some(victim) if replaced.is_none() => evicted = Some(victim),
                    _ => return Decision::Reject(DisconnectReason::MaxInbound),
                }
            }
        }
        if let Some(victim) = evicted.and_then(|v| self.conns.get_mut(&v)) {
            victim.closing = true;
            if let Some(old_node) = victim.node.take() {
                self.by_node.remove(&old_node);
            }
        }
        if let Some(old) = replaced.and_then(|old| self.conns.get_mut(&old)) {
            old.node = None;
            old.closing = true;
        }
        self.by_node.insert(node, conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.node = Some(node);
            c.since = Some(now);
            if c.slot != slot {
                self.slots.switch(c.slot, slot);
                c.slot = slot;
            }
        }
        for (i, p) in self.persistent.iter_mut().enumerate() {
            let dialed_it = mine.persistent == Some(i);
            if dialed_it && p.id.is_none() {
                p.id = Some(node);
            }
            if p.id == Some(node) && p.state != DialState::Disabled {
                p.state = DialState::Connected(conn);
                p.backoff.reset();
            }
        }
        match evicted {
            Some(victim) => Decision::Evict(victim),
            None => decision,
        }
    }

    /// A round-trip time `rtt` was measured on `conn` (the handshake's, or a ping's).
    /// The lowest one counts for eviction: a peer with a low round-trip time is
    /// protected. Unknown connections are ignored.
    pub fn handle_rtt(&mut self, now: Instant, conn: ConnId, rtt: Duration) {
        self.tick(now);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.rtt = Some(c.rtt.map_or(rtt, |old| old.min(rtt)));
        }
    }

    /// `conn` closed (at any stage, for `reason`). A misbehaviour reason counts
    /// against the peer ([`Severity::Major`]).
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId, reason: DisconnectReason) {
        self.tick(now);
        let Some(c) = self.remove(conn) else {
            return;
        };
        if reason.is_misbehavior() {
            self.punish(
                now,
                c.ip,
                c.limited,
                c.node,
                Severity::Major,
                &reason.to_string(),
            );
        }
        for i in 0..self.persistent.len() {
            if self.persistent[i].state == DialState::Connected(conn) {
                let elsewhere = self.persistent[i]
                    .id
                    .and_then(|id| self.by_node.get(&id).copied());
                match elsewhere {
                    Some(other) => self.persistent[i].state = DialState::Connected(other),
                    None => self.schedule_redial(now, i),
                }
            }
        }
        self.check_shutdown_done();
    }

    /// A refusal's goodbye finished (written, or given up).
    pub fn handle_refusal_done(&mut self) {
        self.refusals.done();
    }

    /// A service (or the runtime) reports misbehaviour of the node `node`. Past the
    /// ban threshold its id and IP are banned and its connections closed.
    pub fn handle_report(&mut self, now: Instant, node: NodeId, severity: Severity, reason: &str) {
        self.tick(now);
        let conn = self
            .by_node
            .get(&node)
            .and_then(|c| self.conns.get(c))
            .copied();
        match conn {
            Some(c) => self.punish(now, c.ip, c.limited, Some(node), severity, reason),
            None => self.punish_node(now, node, severity, reason),
        }
    }

    /// Deadlines at `now`: redials due, the refusal summary, the shutdown limit, and
    /// expired bans forgotten.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        self.bans.expire(now);
    }

    /// Starts shutting down: no new connections or dials; every connection is closed
    /// ([`Action::Close`] with [`DisconnectReason::Shutdown`]); [`Action::ShutdownDone`]
    /// when they are all gone, or `grace` after now at the latest.
    pub fn shutdown(&mut self, now: Instant, grace: Duration) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown = Some(ShutdownState {
            deadline: now + grace,
            done: false,
        });
        let mut conns: Vec<_> = self.conns.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            self.close(conn, DisconnectReason::Shutdown);
        }
        self.check_shutdown_done();
    }

    // ----- outputs -----

    /// The next action to carry out.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest deadline: call [`handle_timeout`](Self::handle_timeout) then.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let redials = if self.shutdown.is_some() {
            None
        } else {
            self.persistent
                .iter()
                .filter_map(Persistent::deadline)
                .min()
        };
        let shutdown = self.shutdown.filter(|s| !s.done).map(|s| s.deadline);
        [redials, self.refusals.poll_timeout(), shutdown]
            .into_iter()
            .flatten()
            .min()
    }

    // ----- queries -----

    /// The slot counts.
    #[must_use]
    pub fn counts(&self) -> Counts {
        self.slots.counts()
    }

    /// Inbound connections from `ip`.
    #[must_use]
    pub fn per_ip(&self, ip: &IpAddr) -> usize {
        self.slots.per_ip(ip)
    }

    /// Connections tracked (any stage).
    #[must_use]
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Admitted peers.
    #[must_use]
    pub fn peers(&self) -> usize {
        self.by_node.len()
    }

    /// The connection admitted for `node`, if any.
    #[must_use]
    pub fn conn_of(&self, node: &NodeId) -> Option<ConnId> {
        self.by_node.get(node).copied()
    }

    /// Whether `node` has an admitted connection.
    #[must_use]
    pub fn is_connected(&self, node: &NodeId) -> bool {
        self.by_node.contains_key(node)
    }

    /// Whether `key` is banned at `now`.
    #[must_use]
    pub fn is_banned(&self, now: Instant, key: &BanKey) -> bool {
        self.bans.banned_until(key, now).is_some()
    }

    /// The bans.
    #[must_use]
    pub fn bans(&self) -> &B {
        &self.bans
    }

    /// A persistent peer's state.
    #[must_use]
    pub fn persistent(&self, peer: PersistentId) -> Option<&Persistent> {
        self.persistent.get(peer.0)
    }

    /// Refusal goodbyes in flight.
    #[must_use]
    pub fn refusing(&self) -> usize {
        self.refusals.refusing()
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    // ----- internals -----

    fn limited(&self, ip: IpAddr) -> bool {
        self.limits.limit_loopback || !ip.is_loopback()
    }

    fn is_exempt(&self, id: &NodeId) -> bool {
        self.unconditional.contains(id)
            || self
                .persistent
                .iter()
                .any(|p| p.id.as_ref() == Some(id) && p.state != DialState::Disabled)
    }

    /// The inbound peer to evict for a new one (see [`evict`]), when eviction is on.
    fn victim(&self) -> Option<ConnId> {
        if !self.limits.evict_inbound {
            return None;
        }
        let candidates = self
            .conns
            .iter()
            .filter(|(_, c)| c.slot == Slot::Inbound && !c.closing && c.node.is_some())
            .filter_map(|(&conn, c)| {
                Some(Candidate {
                    conn,
                    net: c.net,
                    since: c.since?,
                    rtt: c.rtt,
                })
            })
            .collect();
        evict::select(
            candidates,
            Protect {
                netgroups: self.limits.evict_protect_netgroups,
                rtt: self.limits.evict_protect_rtt,
                key: self.evict_key,
            },
        )
    }

    /// Whether some inbound connection could turn out to be exempt.
    fn has_exemptions(&self) -> bool {
        !self.unconditional.is_empty() || self.persistent.iter().any(|p| p.id.is_some())
    }

    fn dialer(&self, c: &Conn, remote: NodeId) -> NodeId {
        match c.direction {
            Direction::Outbound => self.local,
            Direction::Inbound => remote,
        }
    }

    fn insert(&mut self, conn: ConnId, c: Conn) {
        self.slots.enter(c.slot, c.inbound_key());
        self.conns.insert(conn, c);
    }

    fn remove(&mut self, conn: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&conn)?;
        self.slots.leave(c.slot, c.inbound_key());
        if let Some(node) = c.node {
            if self.by_node.get(&node) == Some(&conn) {
                self.by_node.remove(&node);
            }
        }
        Some(c)
    }

    /// A conn id reused by the runtime: the old one is gone.
    fn forget(&mut self, conn: ConnId) {
        let _ = self.remove(conn);
    }

    fn close(&mut self, conn: ConnId, reason: DisconnectReason) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.closing {
                c.closing = true;
                self.actions.push_back(Action::Close { conn, reason });
            }
        }
    }

    fn schedule_redial(&mut self, now: Instant, i: usize) {
        let random = self.jitter.next_u64();
        let elsewhere = self
            .persistent
            .get(i)
            .and_then(|p| p.id)
            .and_then(|id| self.by_node.get(&id).copied());
        let Some(p) = self.persistent.get_mut(i) else {
            return;
        };
        if p.state == DialState::Disabled {
            return;
        }
        if let Some(conn) = elsewhere {
            // Already connected (it dialed us, or another dial won): nothing to redial.
            p.state = DialState::Connected(conn);
            return;
        }
        let delay = p.backoff.next_delay(random);
        p.last_delay = Some(delay);
        p.state = DialState::Waiting(now + delay);
    }

    fn punish(
        &mut self,
        now: Instant,
        ip: IpAddr,
        limited: bool,
        node: Option<NodeId>,
        severity: Severity,
        reason: &str,
    ) {
        let points = severity.points();
        let threshold = self.limits.ban_threshold;
        let mut over = false;
        if limited {
            over |= self.add_points(now, BanKey::Ip(ip), points) >= threshold;
        }
        if let Some(n) = node {
            over |= self.add_points(now, BanKey::Node(n), points) >= threshold;
        }
        if !over {
            return;
        }
        let mut keys = Vec::new();
        if let Some(n) = node {
            keys.push(BanKey::Node(n));
        }
        if limited {
            keys.push(BanKey::Ip(ip));
        }
        self.ban(now, &keys, reason);
    }

    fn punish_node(&mut self, now: Instant, node: NodeId, severity: Severity, reason: &str) {
        if self.add_points(now, BanKey::Node(node), severity.points()) >= self.limits.ban_threshold
        {
            self.ban(now, &[BanKey::Node(node)], reason);
        }
    }

    /// Adds `points` to `key` in the ban list, remembered for `ban_duration` after
    /// this report.
    fn add_points(&mut self, now: Instant, key: BanKey, points: u32) -> u32 {
        let until = now + self.limits.ban_duration;
        self.bans.add_points(now, key, points, until)
    }

    fn ban(&mut self, now: Instant, keys: &[BanKey], reason: &str) {
        let until = now + self.limits.ban_duration;
        for key in keys {
            self.bans.ban(*key, until);
            self.bans.clear_points(key);
            self.actions.push_back(Action::Banned {
                key: *key,
                until,
                reason: reason.to_owned(),
            });
        }
        let mut hit: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                keys.iter().any(|k| match k {
                    BanKey::Node(n) => c.node == Some(*n),
                    BanKey::Ip(ip) => c.limited && c.ip == *ip,
                })
            })
            .map(|(id, _)| *id)
            .collect();
        hit.sort_unstable();
        for conn in hit {
            self.close(conn, DisconnectReason::Misbehavior(reason.to_owned()));
        }
    }

    fn check_shutdown_done(&mut self) {
        if let Some(s) = &mut self.shutdown {
            if !s.done && self.conns.is_empty() {
                s.done = true;
                self.actions
                    .push_back(Action::ShutdownDone { remaining: 0 });
            }
        }
    }

    /// Deadlines, checked on every input.
    fn tick(&mut self, now: Instant) {
        if let Some(summary) = self.refusals.handle_timeout(now) {
            self.actions.push_back(Action::RefusalSummary(summary));
        }
        if let Some(s) = &mut self.shutdown {
            if !s.done && s.deadline <= now {
                s.done = true;
                let remaining = self.conns.len();
                self.actions.push_back(Action::ShutdownDone { remaining });
            }
            return;
        }
        for i in 0..self.persistent.len() {
            if self.persistent[i].deadline().is_some_and(|at| at <= now) {
                let elsewhere = self.persistent[i]
                    .id
                    .and_then(|id| self.by_node.get(&id).copied());
                self.persistent[i].state = match elsewhere {
                    Some(conn) => DialState::Connected(conn),
                    None => {
                        self.actions.push_back(Action::Dial(PersistentId(i)));
                        DialState::Dialing
                    }
                };
            }
        }
    }
}
