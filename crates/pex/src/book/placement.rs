//! Where an address may sit: the keyed hashes that choose its bucket.
//!
//! All hashes are SHA-256 over the node's secret key, a domain tag and the inputs,
//! truncated to 64 bits; without the key an attacker cannot tell which buckets its
//! addresses land in, and with it fixed the placement is stable across restarts.
//!
//! * **New table** (as Bitcoin's addrman): `slot = H(key, "new1", source group,
//!   address group) mod P`, then `bucket = H(key, "new2", source group, slot) mod N`,
//!   where `P` is `new_buckets_per_source_group`. For a fixed source group the second
//!   hash takes at most `P` distinct inputs, so **every address that sources of one
//!   group tell us lands in at most `P` of the `N` new buckets** (default 32 of 256),
//!   whatever addresses they invent: one source can fill at most `P × bucket_size`
//!   slots (2,048 of 16,384 by default, an eighth), and can only evict entries that
//!   share those buckets.
//! * **Tried table**: `slot = H(key, "tried1", address) mod T`, then
//!   `bucket = H(key, "tried2", address group, slot) mod M`, with `T` the
//!   `tried_buckets_per_group`: one network block reaches at most `T` of the `M` tried
//!   buckets (8 of 64), and only through addresses we connected to ourselves.

use sha2::{Digest, Sha256};

use super::config::BookConfig;
use crate::addr::{Group, NetAddr};

fn keyed(key: &[u8; 32], tag: &[u8], parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    h.update(key);
    h.update(tag);
    for p in parts {
        h.update((p.len() as u32).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_le_bytes(first)
}

/// The new bucket of an address of group `addr_group` told by a source of group
/// `src_group`.
pub(crate) fn new_bucket(cfg: &BookConfig, addr_group: Group, src_group: Group) -> usize {
    let (a, s) = (addr_group.hash_bytes(), src_group.hash_bytes());
    let slot = keyed(&cfg.key, b"new1", &[&s, &a]) % cfg.new_buckets_per_source_group as u64;
    (keyed(&cfg.key, b"new2", &[&s, &slot.to_le_bytes()]) % cfg.new_buckets as u64) as usize
}

/// The tried bucket of `addr`.
pub(crate) fn tried_bucket(cfg: &BookConfig, addr: &NetAddr) -> usize {
    let mut whole = Vec::with_capacity(20 + 18 + 2);
    whole.extend_from_slice(&addr.id.0);
    whole.extend_from_slice(&Group::of(addr.addr.ip()).hash_bytes());
    match addr.addr.ip() {
        std::net::IpAddr::V4(v4) => whole.extend_from_slice(&v4.octets()),
        std::net::IpAddr::V6(v6) => whole.extend_from_slice(&v6.octets()),
    }
    whole.extend_from_slice(&addr.addr.port().to_le_bytes());
    let slot = keyed(&cfg.key, b"tried1", &[&whole]) % cfg.tried_buckets_per_group as u64;
    let g = addr.group().hash_bytes();
    (keyed(&cfg.key, b"tried2", &[&g, &slot.to_le_bytes()]) % cfg.tried_buckets as u64) as usize
}
