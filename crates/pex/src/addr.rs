//! [`NetAddr`]: a node id at a socket address (`ID@IP:PORT`), the unit the address
//! book holds, with its [`group`](NetAddr::group) and the routability checks of strict
//! mode.
//!
//! The runtime's `PeerAddr` (in the `switchyard` crate) also allows host names and a
//! missing id; the book needs both an id (it is keyed by node id) and an IP (its
//! buckets are chosen by the IP's group), so it has this smaller type of its own.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use switchyard_proto::switch::admission::subnet;
use switchyard_proto::NodeId;

/// Prefix length of an IPv4 address group (a /16, as Bitcoin and CometBFT use).
pub const GROUP_V4_PREFIX: u8 = 16;
/// Prefix length of an IPv6 address group (a /32).
pub const GROUP_V6_PREFIX: u8 = 32;

/// A node id at an IP address and port: `ID@IP:PORT` (`ID@[IPv6]:PORT`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetAddr {
    /// The node that must answer there.
    pub id: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// The group an IP belongs to: its /16 (IPv4) or /32 (IPv6) network, with
/// IPv4-mapped IPv6 counted as IPv4. Buckets are chosen per group, and dial selection
/// prefers groups not yet connected, so one operator with one network block reaches
/// only a few buckets and a few outbound slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group(pub IpAddr);

impl Group {
    /// The group of `ip`.
    #[must_use]
    pub fn of(ip: IpAddr) -> Self {
        Group(subnet(ip, GROUP_V4_PREFIX, GROUP_V6_PREFIX))
    }

    /// Bytes that identify the group in the book's keyed hashes.
    pub(crate) fn hash_bytes(&self) -> [u8; 17] {
        let mut out = [0u8; 17];
        match self.0 {
            IpAddr::V4(v4) => {
                out[0] = 4;
                out[1..5].copy_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out[0] = 6;
                out[1..17].copy_from_slice(&v6.octets());
            }
        }
        out
    }
}

impl NetAddr {
    /// `id` at `addr`.
    #[must_use]
    pub fn new(id: NodeId, addr: SocketAddr) -> Self {
        NetAddr { id, addr }
    }

    /// The group of this address's IP.
    #[must_use]
    pub fn group(&self) -> Group {
        Group::of(self.addr.ip())
    }
}

impl fmt::Display for NetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

impl fmt::Debug for NetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id.short(), self.addr)
    }
}

/// A string that is not `ID@IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad address {input:?}: {problem} (expected ID@IP:PORT)")]
pub struct ParseNetAddrError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl FromStr for NetAddr {
    type Err = ParseNetAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |problem| ParseNetAddrError {
            input: s.to_owned(),
            problem,
        };
        let (id, rest) = s.split_once('@').ok_or_else(|| err("missing ID@"))?;
        let id = id
            .parse::<NodeId>()
            .map_err(|_| err("the id is not 40 hex digits"))?;
        let addr = rest
            .parse::<SocketAddr>()
            .map_err(|_| err("IP:PORT is not an IP address and port"))?;
        Ok(NetAddr { id, addr })
    }
}

/// Whether `ip` can be reached over the public internet: not unspecified, loopback,
/// private, shared (CGNAT), link-local, documentation, benchmarking, multicast,
/// broadcast or reserved. Strict books accept only these.
#[must_use]
pub fn is_routable(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => is_routable_v4(v4),
        IpAddr::V6(v6) => is_routable_v6(v6),
    }
}

fn is_routable_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_documentation()
        || ip.is_multicast()
        || ip.is_broadcast()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 shared address space
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24 protocol assignments
        || o[0] >= 240) // 240/4 reserved
}

fn is_routable_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
        || (s[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (s[0] & 0xffc0) == 0xfec0 // fec0::/10 site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // 2001:db8::/32 documentation
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0)) // 100::/64 discard
}

/// Whether a non-strict book (a local testnet) accepts `ip`: anything a socket can
/// connect to, so loopback and private networks too, but not unspecified, multicast
/// or broadcast.
#[must_use]
pub fn is_dialable(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let id = "66687aadf862bd776c8fc18b8e9f8e2008971485";
        let a: NetAddr = format!("{id}@1.2.3.4:26656").parse().unwrap();
        assert_eq!(a.to_string(), format!("{id}@1.2.3.4:26656"));
        let b: NetAddr = format!("{id}@[2a00::1]:9").parse().unwrap();
        assert_eq!(b.to_string(), format!("{id}@[2a00::1]:9"));
        assert!("1.2.3.4:5".parse::<NetAddr>().is_err());
        assert!(format!("{id}@host.example:5").parse::<NetAddr>().is_err());
        assert!("abc@1.2.3.4:5".parse::<NetAddr>().is_err());
    }

    #[test]
    fn groups_are_slash16_and_slash32() {
        let g = |s: &str| Group::of(s.parse().unwrap());
        assert_eq!(g("20.1.2.3"), g("20.1.200.9"));
        assert_ne!(g("20.1.2.3"), g("20.2.2.3"));
        assert_eq!(g("2a00:1:2::1"), g("2a00:1:ffff::9"));
        assert_ne!(g("2a00:1::1"), g("2a00:2::1"));
        assert_eq!(g("::ffff:20.1.2.3"), g("20.1.9.9"));
    }

    #[test]
    fn routability() {
        let r = |s: &str| is_routable(s.parse().unwrap());
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "100.64.0.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fe80::1",
            "2001:db8::1",
            "ff02::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!r(bad), "{bad} must not be routable");
        }
        for good in ["1.1.1.1", "20.1.2.3", "2a00:1450::1", "::ffff:8.8.8.8"] {
            assert!(r(good), "{good} must be routable");
        }
        assert!(is_dialable("127.0.0.1".parse().unwrap()));
        assert!(!is_dialable("0.0.0.0".parse().unwrap()));
    }
}
