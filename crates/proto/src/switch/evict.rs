//! Which inbound peer makes room for a new one when inbound slots are full: the
//! choice of Bitcoin Core's `SelectNodeToEvict`, on our own inputs.
//!
//! An attacker can open many connections cheaply, but cannot cheaply be in many
//! subnets, be close to us, or have been connected for long. So, from the
//! established inbound peers that are neither persistent nor unconditional
//! (outbound peers are never candidates):
//!
//! 1. one peer (the longest connected) from each of `protect_netgroups` distinct
//!    subnets is protected; which subnets is decided by a keyed hash, so an attacker
//!    cannot pick subnets that are sure to be protected;
//! 2. the `protect_rtt` peers with the lowest round-trip times are protected (a peer
//!    not yet measured counts as the slowest);
//! 3. half of the rest, the longest connected, are protected;
//! 4. of the peers left, the subnet with the most connections loses its youngest
//!    peer (a tie between subnets goes against the one with the youngest peer).
//!
//! No peer left: nobody is evicted, and the new peer is refused.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::admission::ConnId;

/// An inbound peer that could be evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Its connection.
    pub conn: ConnId,
    /// Its subnet (see [`subnet`](super::admission::subnet)).
    pub net: IpAddr,
    /// When its handshake completed.
    pub since: Instant,
    /// Its lowest measured round-trip time, if any was measured.
    pub rtt: Option<Duration>,
}

/// How many peers each rule protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protect {
    /// Distinct subnets with one peer each protected.
    pub netgroups: usize,
    /// Peers with the lowest round-trip times protected.
    pub rtt: usize,
    /// Key of the hash that picks the protected subnets.
    pub key: u64,
}

/// The peer to evict among `candidates` (see the [module docs](self)), or `None`
/// when every one is protected.
#[must_use]
pub fn select(mut candidates: Vec<Candidate>, protect: Protect) -> Option<ConnId> {
    // Oldest first, ties by connection id: every step below is deterministic.
    candidates.sort_by_key(|c| (c.since, c.conn));

    // 1. Subnet diversity: the oldest peer of each of the first subnets by keyed hash.
    let mut nets: Vec<IpAddr> = Vec::new();
    for c in &candidates {
        if !nets.contains(&c.net) {
            nets.push(c.net);
        }
    }
    nets.sort_by_key(|net| (keyed(protect.key, net), *net));
    for net in nets.iter().take(protect.netgroups) {
        if let Some(i) = candidates.iter().position(|c| c.net == *net) {
            candidates.remove(i);
        }
    }

    // 2. Lowest round-trip times (unmeasured ones last, then the oldest first).
    candidates.sort_by_key(|c| (c.rtt.is_none(), c.rtt, c.since, c.conn));
    candidates.drain(..protect.rtt.min(candidates.len()));

    // 3. Half of the rest, the longest connected.
    candidates.sort_by_key(|c| (c.since, c.conn));
    candidates.drain(..candidates.len() / 2);

    // 4. The youngest of the subnet with the most connections.
    let mut groups: HashMap<IpAddr, (usize, Candidate)> = HashMap::new();
    for c in &candidates {
        let entry = groups.entry(c.net).or_insert((0, *c));
        entry.0 += 1;
        if (c.since, c.conn) > (entry.1.since, entry.1.conn) {
            entry.1 = *c;
        }
    }
    groups
        .into_values()
        .max_by_key(|(count, youngest)| (*count, youngest.since, youngest.conn))
        .map(|(_, youngest)| youngest.conn)
}

fn keyed(key: u64, net: &IpAddr) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    net.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    fn cand(t0: Instant, conn: ConnId, net: u8, since: u64, rtt_ms: Option<u64>) -> Candidate {
        Candidate {
            conn,
            net: IpAddr::V4(Ipv4Addr::new(10, net, 0, 0)),
            since: at(t0, since),
            rtt: rtt_ms.map(Duration::from_millis),
        }
    }

    const NONE: Protect = Protect {
        netgroups: 0,
        rtt: 0,
        key: 0,
    };

    #[test]
    fn nothing_to_evict_among_nothing_or_one() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        assert_eq!(select(Vec::new(), NONE), None);
        // One candidate: half of one is zero protected, so it can go.
        assert_eq!(select(vec![cand(t0, 1, 1, 0, None)], NONE), Some(1));
        let one_net = Protect {
            netgroups: 1,
            ..NONE
        };
        assert_eq!(select(vec![cand(t0, 1, 1, 0, None)], one_net), None);
    }

    #[test]
    fn the_youngest_of_the_biggest_subnet_goes() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let peers = vec![
            cand(t0, 1, 1, 0, None),
            cand(t0, 2, 2, 1, None),
            cand(t0, 3, 2, 2, None),
            cand(t0, 4, 2, 3, None),
            cand(t0, 5, 3, 4, None),
            cand(t0, 6, 2, 5, None),
            cand(t0, 7, 3, 6, None),
            cand(t0, 8, 4, 7, None),
        ];
        // Half (1..=4) protected by age; of 5..=8, subnet 3 has two: 7 is its youngest.
        assert_eq!(select(peers, NONE), Some(7));
    }

    #[test]
    fn the_subnet_choice_depends_on_the_key_only() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let peers: Vec<_> = (0..8).map(|i| cand(t0, i, i as u8, i, None)).collect();
        let p = Protect {
            netgroups: 4,
            rtt: 0,
            key: 7,
        };
        let a = select(peers.clone(), p);
        let mut reversed = peers;
        reversed.reverse();
        assert_eq!(select(reversed, p), a);
        assert!(a.is_some());
    }

    proptest! {
        /// Somebody goes exactly when a peer is left after the subnet and round-trip
        /// protections (half of one is none), and it is one of the candidates.
        #[test]
        fn a_victim_exactly_when_one_is_left_unprotected(
            peers in proptest::collection::vec((0u8..5, 0u64..100, proptest::option::of(0u64..100)), 0..30),
            netgroups in 0usize..6,
            rtt in 0usize..10,
            key in any::<u64>(),
        ) {
            #[allow(clippy::disallowed_methods)]
            let t0 = Instant::now();
            let candidates: Vec<_> = peers
                .iter()
                .enumerate()
                .map(|(i, &(net, since, rtt_ms))| cand(t0, i as ConnId, net, since, rtt_ms))
                .collect();
            let mut nets: Vec<_> = candidates.iter().map(|c| c.net).collect();
            nets.sort_unstable();
            nets.dedup();
            let after_nets = candidates.len() - netgroups.min(nets.len());
            let left = after_nets - rtt.min(after_nets);
            let victim = select(candidates.clone(), Protect { netgroups, rtt, key });
            prop_assert_eq!(victim.is_some(), left >= 1);
            if let Some(v) = victim {
                prop_assert!(candidates.iter().any(|c| c.conn == v));
            }
        }
    }
}
