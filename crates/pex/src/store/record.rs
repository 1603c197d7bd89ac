//! What the store keeps per address ([`AddrRecord`]) and per ban, and their bytes.
//!
//! An address record, keyed by the 20 bytes of its node id:
//!
//! ```text
//! +---------+-------+----------+-------+------------+------------+-----------+--------------+
//! | version | table | attempts | flags | last_att.  | last_succ. | bad_until | banned_until |
//! |  u8 = 1 |  u8   |  u32 LE  |  u8   |   u64 LE   |   u64 LE   |  u64 LE   |    u64 LE    |
//! +---------+-------+----------+-------+------------+------------+-----------+--------------+
//! | address: ip (4 = v4 + 4 bytes | 6 = v6 + 16 bytes), port u16 LE | source ip (same) |
//! +---------------------------------------------------------------------------------------+
//! ```
//!
//! Times are unix seconds; bit `i` of `flags` says whether the `i`-th time is present
//! (an absent one is written as 0). `table` is 0 new, 1 tried, 2 persistent.
//!
//! A ban is keyed by `0 + 20 id bytes` (node), `4 + 4 bytes` or `6 + 16 bytes` (IP),
//! and its value is the unix second it ends, `u64 LE`. A misbehaviour score is keyed
//! the same way; its value is redb's `(u32, u64)`: the points and the unix second
//! they are forgotten.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use switchyard_proto::switch::BanKey;
use switchyard_proto::{id::NODE_ID_LEN, NodeId};

use super::time::TimeAnchor;
use crate::addr::NetAddr;
use crate::book::{Entry, Place};

/// Which part of the book an address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// Heard of, never connected by us.
    New,
    /// Connected and authenticated.
    Tried,
    /// A persistent peer from config.
    Persistent,
}

/// One address as the store keeps it: an [`Entry`] with its times in unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrRecord {
    /// The node and where it listens.
    pub addr: NetAddr,
    /// The IP of the peer that told us.
    pub src: IpAddr,
    /// New, tried or persistent.
    pub table: TableKind,
    /// Failed dial attempts since the last success.
    pub attempts: u32,
    /// The last dial attempt.
    pub last_attempt: Option<u64>,
    /// The last authenticated connection.
    pub last_success: Option<u64>,
    /// Until when the address is bad (then forgotten).
    pub bad_until: Option<u64>,
    /// Until when the node is banned.
    pub banned_until: Option<u64>,
}

impl AddrRecord {
    /// The record of a book entry.
    #[must_use]
    pub fn from_entry(e: &Entry, anchor: &TimeAnchor) -> Self {
        let unix = |t: Option<std::time::Instant>| t.map(|t| anchor.to_unix(t));
        AddrRecord {
            addr: e.addr,
            src: e.src,
            table: match e.place {
                Place::New(_) => TableKind::New,
                Place::Tried(_) => TableKind::Tried,
                Place::Persistent => TableKind::Persistent,
            },
            attempts: e.attempts,
            last_attempt: unix(e.last_attempt),
            last_success: unix(e.last_success),
            bad_until: unix(e.bad_until),
            banned_until: unix(e.banned_until),
        }
    }

    /// The book entry of this record, for [`AddrBook::restore`](crate::AddrBook::restore).
    /// Times too old for this process's `Instant` read as absent (and deadlines that
    /// old as already passed).
    #[must_use]
    pub fn to_entry(&self, anchor: &TimeAnchor) -> Entry {
        let past = |t: Option<u64>| t.and_then(|t| anchor.to_instant(t));
        let deadline = |t: Option<u64>| t.map(|t| anchor.to_instant(t).unwrap_or(anchor.instant()));
        let place = match self.table {
            TableKind::New => Place::New(0),
            TableKind::Tried => Place::Tried(0),
            TableKind::Persistent => Place::Persistent,
        };
        let mut e = Entry::new(self.addr, self.src, place);
        e.attempts = self.attempts;
        e.last_attempt = past(self.last_attempt);
        e.last_success = past(self.last_success);
        e.bad_until = deadline(self.bad_until);
        e.banned_until = deadline(self.banned_until);
        e
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(80);
        out.push(1);
        out.push(match self.table {
            TableKind::New => 0,
            TableKind::Tried => 1,
            TableKind::Persistent => 2,
        });
        out.extend_from_slice(&self.attempts.to_le_bytes());
        let times = [
            self.last_attempt,
            self.last_success,
            self.bad_until,
            self.banned_until,
        ];
        let flags = times
            .iter()
            .enumerate()
            .fold(0u8, |f, (i, t)| f | (u8::from(t.is_some()) << i));
        out.push(flags);
        for t in times {
            out.extend_from_slice(&t.unwrap_or(0).to_le_bytes());
        }
        put_ip(&mut out, self.addr.addr.ip());
        out.extend_from_slice(&self.addr.addr.port().to_le_bytes());
        put_ip(&mut out, self.src);
        out
    }

    pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<Self, &'static str> {
        let id: [u8; NODE_ID_LEN] = key.try_into().map_err(|_| "a key is not 20 bytes")?;
        let mut r = Reader(bytes);
        if r.u8()? != 1 {
            return Err("unknown record version");
        }
        let table = match r.u8()? {
            0 => TableKind::New,
            1 => TableKind::Tried,
            2 => TableKind::Persistent,
            _ => return Err("unknown table"),
        };
        let attempts = u32::from_le_bytes(r.array()?);
        let flags = r.u8()?;
        let mut times = [None; 4];
        for (i, t) in times.iter_mut().enumerate() {
            let v = u64::from_le_bytes(r.array()?);
            *t = (flags & (1 << i) != 0).then_some(v);
        }
        let ip = r.ip()?;
        let port = u16::from_le_bytes(r.array()?);
        let src = r.ip()?;
        if !r.0.is_empty() {
            return Err("trailing bytes");
        }
        Ok(AddrRecord {
            addr: NetAddr::new(NodeId(id), SocketAddr::new(ip, port)),
            src,
            table,
            attempts,
            last_attempt: times[0],
            last_success: times[1],
            bad_until: times[2],
            banned_until: times[3],
        })
    }
}

fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        if self.0.len() < N {
            return Err("record too short");
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().map_err(|_| "record too short")
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.array::<1>()?[0])
    }

    fn ip(&mut self) -> Result<IpAddr, &'static str> {
        match self.u8()? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            _ => Err("unknown IP kind"),
        }
    }
}

pub(crate) fn encode_ban_key(key: &BanKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(21);
    match key {
        BanKey::Node(id) => {
            out.push(0);
            out.extend_from_slice(&id.0);
        }
        BanKey::Ip(ip) => put_ip(&mut out, *ip),
    }
    out
}

pub(crate) fn decode_ban_key(bytes: &[u8]) -> Result<BanKey, &'static str> {
    match bytes.split_first() {
        Some((0, id)) => Ok(BanKey::Node(NodeId(
            id.try_into()
                .map_err(|_| "a node ban key is not 21 bytes")?,
        ))),
        Some(_) => {
            let mut r = Reader(bytes);
            let ip = r.ip()?;
            if r.0.is_empty() {
                Ok(BanKey::Ip(ip))
            } else {
                Err("trailing bytes in an IP ban key")
            }
        }
        None => Err("empty ban key"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_ban_keys_round_trip() {
        let rec = AddrRecord {
            addr: "66687aadf862bd776c8fc18b8e9f8e2008971485@[2a00::5]:26656"
                .parse()
                .unwrap(),
            src: "20.1.2.3".parse().unwrap(),
            table: TableKind::Tried,
            attempts: 3,
            last_attempt: Some(17),
            last_success: None,
            bad_until: Some(0),
            banned_until: None,
        };
        let bytes = rec.encode();
        assert_eq!(AddrRecord::decode(&rec.addr.id.0, &bytes), Ok(rec.clone()));
        assert!(AddrRecord::decode(&rec.addr.id.0, &bytes[..bytes.len() - 1]).is_err());
        assert!(AddrRecord::decode(&[1, 2], &bytes).is_err());
        for key in [
            BanKey::Node(NodeId([9; 20])),
            BanKey::Ip("1.2.3.4".parse().unwrap()),
            BanKey::Ip("2a00::1".parse().unwrap()),
        ] {
            assert_eq!(decode_ban_key(&encode_ban_key(&key)), Ok(key));
        }
        assert!(decode_ban_key(&[]).is_err());
        assert!(decode_ban_key(&[4, 1]).is_err());
    }
}
