//! Choosing from the book: whom to dial ([`AddrBook::pick_address`]) and what to
//! share ([`AddrBook::sample`]).

use std::collections::HashSet;
use std::time::Instant;

use switchyard_proto::NodeId;

use super::{AddrBook, Entry};
use crate::addr::{Group, NetAddr};

/// Random probes of the tables before [`AddrBook::pick_address`] falls back to a scan.
const PROBES: usize = 64;

/// The chance, in percent, that [`AddrBook::pick_address`] should draw from the tried
/// table when the node has `outbound` of its `target` outbound peers: 30 % with none,
/// rising linearly to 90 % at the target. With few peers the node explores the new
/// table to find any; as it fills up it leans on vetted addresses, so gossip (which
/// only reaches new) weighs less in who the node ends up connected to.
#[must_use]
pub fn dial_bias(outbound: usize, target: usize) -> u8 {
    if target == 0 {
        return 90;
    }
    let filled = outbound.min(target);
    (30 + 60 * filled / target) as u8
}

impl AddrBook {
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.rng.next_u64() % n as u64) as usize
        }
    }

    /// An address to dial: from the tried table with `tried_bias` percent chance (use
    /// [`dial_bias`]), else from new (when one table has nothing usable, the other),
    /// never a bad, banned, persistent or own address, and preferring groups not in
    /// `exclude` (pass the groups of the current outbound peers). Addresses with
    /// more failed attempts are less likely. `None` when nothing is usable.
    pub fn pick_address(
        &mut self,
        now: Instant,
        tried_bias: u8,
        exclude: &HashSet<Group>,
    ) -> Option<NetAddr> {
        let tried_first = match (self.tried_count, self.new_count) {
            (0, 0) => return None,
            (0, _) => false,
            (_, 0) => true,
            _ => self.below(100) < usize::from(tried_bias.min(100)),
        };
        for _ in 0..PROBES {
            let table = if tried_first {
                &self.tried_table
            } else {
                &self.new_table
            };
            let b = (self.rng.next_u64() % table.len() as u64) as usize;
            let bucket_len = table[b].len();
            if bucket_len == 0 {
                continue;
            }
            let roll = self.rng.next_u64();
            let table = if tried_first {
                &self.tried_table
            } else {
                &self.new_table
            };
            let id = table[b][(roll % bucket_len as u64) as usize];
            let Some(e) = self.entries.get(&id) else {
                continue;
            };
            if !e.is_usable(now) || exclude.contains(&e.addr.group()) {
                continue;
            }
            // Each failed attempt makes an address less likely: accept with 1/(1+attempts).
            let attempts = u64::from(e.attempts);
            let addr = e.addr;
            if self.rng.next_u64().is_multiple_of(1 + attempts) {
                return Some(addr);
            }
        }
        self.pick_by_scan(now, tried_first, exclude)
    }

    /// The fallback of [`pick_address`](Self::pick_address): every usable candidate
    /// of the preferred table (else the other), outside `exclude` if any is.
    fn pick_by_scan(
        &mut self,
        now: Instant,
        tried_first: bool,
        exclude: &HashSet<Group>,
    ) -> Option<NetAddr> {
        let tables = if tried_first {
            [&self.tried_table, &self.new_table]
        } else {
            [&self.new_table, &self.tried_table]
        };
        let mut fallback: Option<Vec<NetAddr>> = None;
        let mut chosen = None;
        for table in tables {
            let usable: Vec<&Entry> = table
                .iter()
                .flatten()
                .filter_map(|id| self.entries.get(id))
                .filter(|e| e.is_usable(now))
                .collect();
            let preferred: Vec<NetAddr> = usable
                .iter()
                .filter(|e| !exclude.contains(&e.addr.group()))
                .map(|e| e.addr)
                .collect();
            if !preferred.is_empty() {
                chosen = Some(preferred);
                break;
            }
            if fallback.is_none() && !usable.is_empty() {
                fallback = Some(usable.iter().map(|e| e.addr).collect());
            }
        }
        let list = chosen.or(fallback)?;
        let i = self.below(list.len());
        list.get(i).copied()
    }

    /// Addresses to share with a peer that asked: a random sample of the usable ones
    /// (not bad, not banned; own and private addresses are never held), of
    /// [`share_percent`](super::BookConfig::share_percent) of them but at least
    /// [`min_share`](super::BookConfig::min_share) where there are that many, and never
    /// more than `max`.
    pub fn sample(&mut self, now: Instant, max: usize) -> Vec<NetAddr> {
        let mut pool: Vec<NetAddr> = self
            .tried_table
            .iter()
            .chain(self.new_table.iter())
            .flatten()
            .chain(self.persistent.iter())
            .filter_map(|id: &NodeId| self.entries.get(id))
            .filter(|e| e.is_usable(now))
            .map(|e| e.addr)
            .collect();
        let share = (pool.len() * self.cfg.share_percent).div_ceil(100);
        let n = share.max(self.cfg.min_share).min(pool.len()).min(max);
        // A partial Fisher–Yates shuffle: the first n are a uniform sample.
        for i in 0..n {
            let j = i + self.below(pool.len() - i);
            pool.swap(i, j);
        }
        pool.truncate(n);
        pool
    }
}
