//! Admission bookkeeping: the slot each connection holds, the per-IP and per-subnet
//! counts, and the token buckets that bound the rate of new handshakes.
//!
//! A connection is in exactly one [`Slot`] at a time, and every count is changed only
//! by [`Slots::enter`] and [`Slots::leave`], so a count cannot drift from the
//! connections alive:
//!
//! * an inbound connection starts in [`Slot::Handshake`], bounded by
//!   `max_handshakes` and **not** by `max_inbound`: half-open connections cannot take
//!   the slots of established peers;
//! * when its handshake completes it moves to [`Slot::Inbound`] (bounded by
//!   `max_inbound`) or, for a persistent or unconditional peer, [`Slot::Exempt`];
//! * an outbound connection holds [`Slot::Outbound`] (bounded by `max_outbound`) from
//!   the moment its TCP connection opens, or [`Slot::Exempt`] when it is a persistent
//!   or unconditional peer.
//!
//! The per-IP and per-subnet counts cover inbound connections in any slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Identifies one connection for the node's lifetime (chosen by the runtime).
pub type ConnId = u64;

/// Which side opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    /// The remote dialed us.
    Inbound,
    /// We dialed the remote.
    Outbound,
}

/// The kind of slot a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Inbound, handshake in progress.
    Handshake,
    /// Inbound, established, counted against `max_inbound`.
    Inbound,
    /// Outbound (connecting or established), counted against `max_outbound`.
    Outbound,
    /// A persistent or unconditional peer: counted, but against no limit.
    Exempt,
}

/// How many connections hold each kind of slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Inbound connections whose handshake is in progress.
    pub handshakes: usize,
    /// Established inbound connections counted against `max_inbound`.
    pub inbound: usize,
    /// Outbound connections counted against `max_outbound`.
    pub outbound: usize,
    /// Connections of persistent or unconditional peers.
    pub exempt: usize,
}

impl Counts {
    /// Every connection, whatever its slot.
    #[must_use]
    pub fn total(&self) -> usize {
        self.handshakes + self.inbound + self.outbound + self.exempt
    }

    fn of(&mut self, slot: Slot) -> &mut usize {
        match slot {
            Slot::Handshake => &mut self.handshakes,
            Slot::Inbound => &mut self.inbound,
            Slot::Outbound => &mut self.outbound,
            Slot::Exempt => &mut self.exempt,
        }
    }
}

/// The network an address belongs to for the per-subnet limits: IPv4 addresses
/// masked to `v4_prefix` bits, IPv6 to `v6_prefix` (IPv4-mapped IPv6 counts as IPv4).
#[must_use]
pub fn subnet(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = u32::MAX
                .checked_shl(32 - u32::from(v4_prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX
                .checked_shl(128 - u32::from(v6_prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((bits & mask).into())
        }
    }
}

/// The slot counts and the per-IP and per-subnet counts of inbound connections.
#[derive(Debug, Default)]
pub struct Slots {
    counts: Counts,
    per_ip: HashMap<IpAddr, usize>,
    per_subnet: HashMap<IpAddr, usize>,
}

impl Slots {
    /// The current counts.
    #[must_use]
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Inbound connections from `ip`.
    #[must_use]
    pub fn per_ip(&self, ip: &IpAddr) -> usize {
        self.per_ip.get(ip).copied().unwrap_or(0)
    }

    /// Inbound connections from the subnet `net` (see [`subnet`]).
    #[must_use]
    pub fn per_subnet(&self, net: &IpAddr) -> usize {
        self.per_subnet.get(net).copied().unwrap_or(0)
    }

    /// A connection enters `slot`; `inbound_from` is its IP and subnet when inbound.
    pub fn enter(&mut self, slot: Slot, inbound_from: Option<(IpAddr, IpAddr)>) {
        *self.counts.of(slot) += 1;
        if let Some((ip, net)) = inbound_from {
            *self.per_ip.entry(ip).or_default() += 1;
            *self.per_subnet.entry(net).or_default() += 1;
        }
    }

    /// A connection leaves `slot` (closed, or moving to another slot with `enter`).
    pub fn leave(&mut self, slot: Slot, inbound_from: Option<(IpAddr, IpAddr)>) {
        let n = self.counts.of(slot);
        *n = n.saturating_sub(1);
        if let Some((ip, net)) = inbound_from {
            decrement(&mut self.per_ip, ip);
            decrement(&mut self.per_subnet, net);
        }
    }

    /// Moves a connection from one slot to another (its IP counts unchanged).
    pub fn switch(&mut self, from: Slot, to: Slot) {
        self.leave(from, None);
        self.enter(to, None);
    }
}

fn decrement(map: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

/// Token buckets keyed by address: `rate` tokens a second, at most `rate` stored
/// (one second of burst). Full buckets are forgotten, so the table holds only
/// addresses that connected within the last second or so.
#[derive(Debug, Default)]
pub struct RateTable {
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

/// Most buckets kept before full ones are pruned.
const PRUNE_AT: usize = 4096;

impl RateTable {
    fn tokens(&self, now: Instant, key: &IpAddr, rate: u32) -> f64 {
        let burst = f64::from(rate);
        self.buckets.get(key).map_or(burst, |(tokens, at)| {
            let refill = now.saturating_duration_since(*at).as_secs_f64() * burst;
            (tokens + refill).min(burst)
        })
    }

    /// Whether `key` has a token now (nothing is taken).
    #[must_use]
    pub fn has_token(&self, now: Instant, key: &IpAddr, rate: u32) -> bool {
        self.tokens(now, key, rate) >= 1.0
    }

    /// Takes one token of `key` (call after [`has_token`](Self::has_token)).
    pub fn take(&mut self, now: Instant, key: IpAddr, rate: u32) {
        let left = (self.tokens(now, &key, rate) - 1.0).max(0.0);
        self.buckets.insert(key, (left, now));
        if self.buckets.len() > PRUNE_AT {
            let burst = f64::from(rate);
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * burst < burst
            });
        }
    }

    /// Buckets held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no bucket is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    #[test]
    fn subnets_mask_the_configured_prefix() {
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77));
        assert_eq!(subnet(a, 24, 48), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)));
        assert_eq!(subnet(a, 16, 48), IpAddr::V4(Ipv4Addr::new(192, 0, 0, 0)));
        assert_eq!(subnet(a, 0, 48), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let b: IpAddr = "2001:db8:1:2:3::9".parse().unwrap();
        assert_eq!(subnet(b, 24, 48), "2001:db8:1::".parse::<IpAddr>().unwrap());
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 5).to_ipv6_mapped());
        assert_eq!(
            subnet(mapped, 24, 48),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0))
        );
        assert_eq!(
            subnet(IpAddr::V6(Ipv6Addr::LOCALHOST), 24, 128),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
    }

    #[test]
    fn buckets_refill_at_their_rate() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let mut r = RateTable::default();
        for _ in 0..4 {
            assert!(r.has_token(t0, &ip, 4));
            r.take(t0, ip, 4);
        }
        assert!(!r.has_token(t0, &ip, 4));
        assert!(!r.has_token(t0 + Duration::from_millis(200), &ip, 4));
        assert!(r.has_token(t0 + Duration::from_millis(250), &ip, 4));
    }
}
