//! The PEX messages on [`PEX_CHANNEL`](crate::PEX_CHANNEL): [`GetAddrs`] asks a peer
//! for addresses, [`Addrs`] answers it. Both are MessagePack, like every service
//! message.
//!
//! ```text
//! GetAddrs = []                               (an empty array: nothing to say)
//! Addrs    = [ "ID@IP:PORT", ... ]            (at most MAX_ADDRS strings)
//! ```
//!
//! An [`Addrs`] is checked while it is decoded, so a bad one never becomes a value:
//! more than [`MAX_ADDRS`] entries, an entry longer than [`MAX_ADDR_LEN`] bytes, an
//! entry that is not `ID@IP:PORT`, port 0, or an IP no socket can dial (unspecified,
//! multicast, broadcast) fails the decode. No honest node sends any of these: its
//! own book refuses them. The runtime then closes the sender with
//! `DisconnectReason::Undecodable`, quoting the reason (see
//! the PEX service).
//!
//! ```
//! use switchyard_pex::wire::{Addrs, MAX_ADDRS};
//!
//! let a: switchyard_pex::NetAddr =
//!     "66687aadf862bd776c8fc18b8e9f8e2008971485@20.1.2.3:26656".parse()?;
//! let bytes = rmp_serde::to_vec(&Addrs(vec![a]))?;
//! let back: Addrs = rmp_serde::from_slice(&bytes)?;
//! assert_eq!(back.0, vec![a]);
//!
//! let too_many = vec!["66687aadf862bd776c8fc18b8e9f8e2008971485@20.1.2.3:26656"; MAX_ADDRS + 1];
//! let bytes = rmp_serde::to_vec(&too_many)?;
//! assert!(rmp_serde::from_slice::<Addrs>(&bytes).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::addr::{is_dialable, NetAddr};

/// Most addresses one [`Addrs`] may carry.
pub const MAX_ADDRS: usize = 250;

/// Longest `ID@IP:PORT` accepted, in bytes (40 hex digits, `@`, a bracketed IPv6
/// address with a zone-free form and a port fit in 100).
pub const MAX_ADDR_LEN: usize = 100;

/// Largest encoded PEX message: the channel's `max_message_size`. A full [`Addrs`] of
/// IPv6 addresses stays below it; anything larger is closed by the runtime before it
/// is decoded (`DisconnectReason::MessageTooLarge`).
pub const MAX_PEX_MESSAGE: usize = 32 * 1024;

/// Asks a peer for addresses it knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetAddrs {}

/// Addresses a peer knows: the answer to [`GetAddrs`], at most [`MAX_ADDRS`] of them,
/// each a valid, dialable `ID@IP:PORT` (checked while decoding).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addrs(pub Vec<NetAddr>);

impl Serialize for Addrs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

impl<'de> Deserialize<'de> for Addrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(AddrsVisitor)
    }
}

struct AddrsVisitor;

impl<'de> Visitor<'de> for AddrsVisitor {
    type Value = Addrs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of at most {MAX_ADDRS} ID@IP:PORT strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Addrs, A::Error> {
        if seq.size_hint().is_some_and(|n| n > MAX_ADDRS) {
            return Err(de::Error::custom(format_args!(
                "more than {MAX_ADDRS} addresses"
            )));
        }
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_ADDRS));
        while let Some(WireAddr(a)) = seq.next_element()? {
            if out.len() == MAX_ADDRS {
                return Err(de::Error::custom(format_args!(
                    "more than {MAX_ADDRS} addresses"
                )));
            }
            out.push(a);
        }
        Ok(Addrs(out))
    }
}

/// One address as it travels, checked as it is decoded.
struct WireAddr(NetAddr);

impl<'de> Deserialize<'de> for WireAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(WireAddrVisitor)
    }
}

struct WireAddrVisitor;

impl Visitor<'_> for WireAddrVisitor {
    type Value = WireAddr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an ID@IP:PORT string")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<WireAddr, E> {
        check_addr(s).map(WireAddr).map_err(E::custom)
    }
}

/// Parses and checks one wire address; the error says what is wrong without quoting
/// more than [`MAX_ADDR_LEN`] bytes of it.
fn check_addr(s: &str) -> Result<NetAddr, String> {
    if s.len() > MAX_ADDR_LEN {
        return Err(format!(
            "an address of {} bytes (at most {MAX_ADDR_LEN})",
            s.len()
        ));
    }
    let a: NetAddr = s
        .parse()
        .map_err(|e: crate::addr::ParseNetAddrError| format!("bad address: {}", e.problem))?;
    if a.addr.port() == 0 {
        return Err(format!("address {a} has port 0"));
    }
    if !is_dialable(a.addr.ip()) {
        return Err(format!("address {a} cannot be dialed"));
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "66687aadf862bd776c8fc18b8e9f8e2008971485";

    fn decode(strings: &[String]) -> Result<Addrs, String> {
        let bytes = rmp_serde::to_vec(strings).map_err(|e| e.to_string())?;
        rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())
    }

    #[test]
    fn round_trips_v4_and_v6() {
        let a: NetAddr = format!("{ID}@20.1.2.3:26656").parse().unwrap();
        let b: NetAddr = format!("{ID}@[2a00::1]:9").parse().unwrap();
        let bytes = rmp_serde::to_vec(&Addrs(vec![a, b])).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<Addrs>(&bytes).unwrap(),
            Addrs(vec![a, b])
        );
        let get = rmp_serde::to_vec(&GetAddrs {}).unwrap();
        assert_eq!(get, vec![0x90], "an empty array");
        assert_eq!(
            rmp_serde::from_slice::<GetAddrs>(&get).unwrap(),
            GetAddrs {}
        );
    }

    #[test]
    fn the_bound_is_exact() {
        let full = vec![format!("{ID}@20.1.2.3:26656"); MAX_ADDRS];
        assert_eq!(decode(&full).unwrap().0.len(), MAX_ADDRS);
        let over = vec![format!("{ID}@20.1.2.3:26656"); MAX_ADDRS + 1];
        let err = decode(&over).unwrap_err();
        assert!(err.contains("more than 250 addresses"), "{err}");
    }

    #[test]
    fn a_full_answer_fits_the_channel() {
        let v6 = format!("{ID}@[2a00:1234:5678:9abc:def0:1234:5678:9abc]:65535");
        let full: Vec<NetAddr> = vec![v6.parse().unwrap(); MAX_ADDRS];
        let bytes = rmp_serde::to_vec(&Addrs(full)).unwrap();
        assert!(bytes.len() < MAX_PEX_MESSAGE, "{}", bytes.len());
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for (bad, why) in [
            ("nonsense".to_owned(), "missing ID@"),
            (format!("{ID}@host.example:1"), "not an IP address"),
            (format!("{ID}@20.1.2.3:0"), "port 0"),
            (format!("{ID}@0.0.0.0:5"), "cannot be dialed"),
            (format!("{ID}@224.0.0.1:5"), "cannot be dialed"),
            ("x".repeat(5000), "5000 bytes"),
        ] {
            let err = decode(&[format!("{ID}@20.1.2.3:1"), bad.clone()]).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.len() < 400, "the error quotes too much: {err}");
        }
        // Not an array of strings at all.
        for bytes in [vec![0xc0], vec![0x91, 0x05], vec![0x92, 0xa1]] {
            assert!(rmp_serde::from_slice::<Addrs>(&bytes).is_err());
        }
        // A huge declared length is refused before anything is allocated.
        let mut huge = vec![0xdd, 0xff, 0xff, 0xff, 0xff];
        huge.extend_from_slice(&[0xa1, b'x']);
        let err = rmp_serde::from_slice::<Addrs>(&huge).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
    }
}
