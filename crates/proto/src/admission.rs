//! Admission: which connections a node keeps, decided without sockets.
//!
//! The Switch asks this table twice per connection: when the TCP connection opens
//! ([`Admission::on_connecting`]: direction limits, per-IP limit, bans) and when the
//! handshake has told who the remote is ([`Admission::on_handshake`]: one connection
//! per node). Duplicate connections are resolved by a rule both ends compute the same
//! way: **the connection dialed by the lower node id survives**. If both connections
//! were dialed by the same node (it dialed twice), the one already admitted stays.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::id::NodeId;
use crate::reason::DisconnectReason;

/// Which side opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    /// The remote dialed us.
    Inbound,
    /// We dialed the remote.
    Outbound,
}

/// Identifies one connection for the node's lifetime.
pub type ConnId = u64;

/// What to do with a connection whose handshake just completed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// Keep it: it is the only connection to that node.
    Admit,
    /// Keep it, and close the older connection `0` to the same node with
    /// [`DisconnectReason::DuplicateConnection`].
    Replace(ConnId),
    /// Close it with this reason.
    Reject(DisconnectReason),
}

#[derive(Debug, Clone, Copy)]
struct Conn {
    direction: Direction,
    ip: IpAddr,
    node: Option<NodeId>,
}

/// Limits and bookkeeping of the node's connections.
#[derive(Debug)]
pub struct Admission {
    local: NodeId,
    max_inbound: usize,
    max_outbound: usize,
    max_per_ip: usize,
    conns: HashMap<ConnId, Conn>,
    by_node: HashMap<NodeId, ConnId>,
    bans: HashMap<IpAddr, Instant>,
}

impl Admission {
    /// A table for the node `local` with these limits.
    #[must_use]
    pub fn new(local: NodeId, max_inbound: usize, max_outbound: usize, max_per_ip: usize) -> Self {
        Admission {
            local,
            max_inbound,
            max_outbound,
            max_per_ip,
            conns: HashMap::new(),
            by_node: HashMap::new(),
            bans: HashMap::new(),
        }
    }

    /// Number of open connections (handshaking ones included) in `direction`.
    #[must_use]
    pub fn count(&self, direction: Direction) -> usize {
        self.conns
            .values()
            .filter(|c| c.direction == direction)
            .count()
    }

    /// Number of admitted peers.
    #[must_use]
    pub fn peers(&self) -> usize {
        self.by_node.len()
    }

    /// The connection admitted for `node`, if any.
    #[must_use]
    pub fn conn_of(&self, node: &NodeId) -> Option<ConnId> {
        self.by_node.get(node).copied()
    }

    /// Whether a dial to `node` would duplicate an admitted connection.
    #[must_use]
    pub fn is_connected(&self, node: &NodeId) -> bool {
        self.by_node.contains_key(node)
    }

    /// Bans `ip` until `now + duration`.
    pub fn ban(&mut self, ip: IpAddr, now: Instant, duration: Duration) {
        self.bans.insert(ip, now + duration);
    }

    /// A connection opens (before its handshake). On `Err` the caller closes it at once.
    pub fn on_connecting(
        &mut self,
        now: Instant,
        conn: ConnId,
        direction: Direction,
        ip: IpAddr,
    ) -> Result<(), DisconnectReason> {
        self.bans.retain(|_, until| *until > now);
        if self.bans.contains_key(&ip) {
            return Err(DisconnectReason::Banned);
        }
        let (limit, reason) = match direction {
            Direction::Inbound => (self.max_inbound, DisconnectReason::MaxInbound),
            Direction::Outbound => (self.max_outbound, DisconnectReason::MaxOutbound),
        };
        if self.count(direction) >= limit {
            return Err(reason);
        }
        if self.conns.values().filter(|c| c.ip == ip).count() >= self.max_per_ip
            && !ip.is_loopback()
        {
            return Err(DisconnectReason::MaxPerIp);
        }
        self.conns.insert(
            conn,
            Conn {
                direction,
                ip,
                node: None,
            },
        );
        Ok(())
    }

    fn dialer(&self, c: &Conn, remote: NodeId) -> NodeId {
        match c.direction {
            Direction::Outbound => self.local,
            Direction::Inbound => remote,
        }
    }

    /// The handshake of `conn` completed with the node `remote`.
    pub fn on_handshake(&mut self, conn: ConnId, remote: NodeId) -> Decision {
        let Some(mine) = self.conns.get(&conn).copied() else {
            return Decision::Reject(DisconnectReason::Shutdown);
        };
        let decision = match self.by_node.get(&remote).copied() {
            None => Decision::Admit,
            Some(old) if old == conn => Decision::Admit,
            Some(old) => {
                let old_dialer = self
                    .conns
                    .get(&old)
                    .map_or(remote, |c| self.dialer(c, remote));
                let new_dialer = self.dialer(&mine, remote);
                let winner = old_dialer.min(new_dialer);
                if new_dialer == winner && old_dialer != winner {
                    Decision::Replace(old)
                } else {
                    Decision::Reject(DisconnectReason::DuplicateConnection)
                }
            }
        };
        match &decision {
            Decision::Admit | Decision::Replace(_) => {
                if let Decision::Replace(old) = decision {
                    if let Some(c) = self.conns.get_mut(&old) {
                        c.node = None;
                    }
                }
                self.by_node.insert(remote, conn);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.node = Some(remote);
                }
            }
            Decision::Reject(_) => {}
        }
        decision
    }

    /// `conn` closed (at any stage). Returns the node it was admitted for, if it was.
    pub fn on_closed(&mut self, conn: ConnId) -> Option<NodeId> {
        let c = self.conns.remove(&conn)?;
        let node = c.node?;
        if self.by_node.get(&node) == Some(&conn) {
            self.by_node.remove(&node);
            Some(node)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn id(b: u8) -> NodeId {
        NodeId([b; 20])
    }
    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const EXT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

    fn base() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    #[test]
    fn direction_limits_count_handshaking_connections() {
        let now = base();
        let mut a = Admission::new(id(5), 1, 1, 8);
        a.on_connecting(now, 1, Direction::Inbound, LO).unwrap();
        assert_eq!(
            a.on_connecting(now, 2, Direction::Inbound, LO),
            Err(DisconnectReason::MaxInbound)
        );
        a.on_connecting(now, 3, Direction::Outbound, LO).unwrap();
        assert_eq!(
            a.on_connecting(now, 4, Direction::Outbound, LO),
            Err(DisconnectReason::MaxOutbound)
        );
        assert_eq!(a.on_closed(1), None);
        a.on_connecting(now, 5, Direction::Inbound, LO).unwrap();
    }

    #[test]
    fn per_ip_limit_and_bans() {
        let now = base();
        let mut a = Admission::new(id(5), 10, 10, 1);
        a.on_connecting(now, 1, Direction::Inbound, EXT).unwrap();
        assert_eq!(
            a.on_connecting(now, 2, Direction::Inbound, EXT),
            Err(DisconnectReason::MaxPerIp)
        );
        a.ban(LO, now, Duration::from_secs(10));
        assert_eq!(
            a.on_connecting(now, 3, Direction::Inbound, LO),
            Err(DisconnectReason::Banned)
        );
        a.on_connecting(now + Duration::from_secs(11), 4, Direction::Inbound, LO)
            .unwrap();
    }

    /// Both ends see the same two connections (in either order) and keep the same one.
    #[test]
    fn duplicate_tie_break_agrees_on_both_ends() {
        let now = base();
        let (low, high) = (id(1), id(9));
        for low_first in [true, false] {
            // Connection A: dialed by `low`. Connection B: dialed by `high`.
            // On `low`'s side, A is outbound (conn 10) and B inbound (conn 11).
            let mut at_low = Admission::new(low, 8, 8, 8);
            at_low
                .on_connecting(now, 10, Direction::Outbound, LO)
                .unwrap();
            at_low
                .on_connecting(now, 11, Direction::Inbound, LO)
                .unwrap();
            // On `high`'s side, A is inbound (conn 20) and B outbound (conn 21).
            let mut at_high = Admission::new(high, 8, 8, 8);
            at_high
                .on_connecting(now, 20, Direction::Inbound, LO)
                .unwrap();
            at_high
                .on_connecting(now, 21, Direction::Outbound, LO)
                .unwrap();
            let (l1, l2, h1, h2) = if low_first {
                (
                    at_low.on_handshake(10, high),
                    at_low.on_handshake(11, high),
                    at_high.on_handshake(20, low),
                    at_high.on_handshake(21, low),
                )
            } else {
                (
                    at_low.on_handshake(11, high),
                    at_low.on_handshake(10, high),
                    at_high.on_handshake(21, low),
                    at_high.on_handshake(20, low),
                )
            };
            if low_first {
                assert_eq!(
                    (l1, l2),
                    (
                        Decision::Admit,
                        Decision::Reject(DisconnectReason::DuplicateConnection)
                    )
                );
                assert_eq!(
                    (h1, h2),
                    (
                        Decision::Admit,
                        Decision::Reject(DisconnectReason::DuplicateConnection)
                    )
                );
            } else {
                assert_eq!((l1, l2), (Decision::Admit, Decision::Replace(11)));
                assert_eq!((h1, h2), (Decision::Admit, Decision::Replace(21)));
            }
            assert_eq!(at_low.conn_of(&high), Some(10), "A survives at low");
            assert_eq!(at_high.conn_of(&low), Some(20), "A survives at high");
            // The loser closing does not remove the winner.
            assert_eq!(at_low.on_closed(11), None);
            assert!(at_low.is_connected(&high));
            assert_eq!(at_low.on_closed(10), Some(high));
            assert!(!at_low.is_connected(&high));
        }
    }

    #[test]
    fn same_dialer_twice_keeps_the_first() {
        let now = base();
        let mut a = Admission::new(id(1), 8, 8, 8);
        a.on_connecting(now, 1, Direction::Outbound, LO).unwrap();
        a.on_connecting(now, 2, Direction::Outbound, LO).unwrap();
        assert_eq!(a.on_handshake(1, id(2)), Decision::Admit);
        assert_eq!(
            a.on_handshake(2, id(2)),
            Decision::Reject(DisconnectReason::DuplicateConnection)
        );
        assert_eq!(a.peers(), 1);
    }
}
