//! Bans and misbehaviour scores.
//!
//! Reports add points to the reported node id and IP address ([`Scores`]); past the
//! threshold both are banned until a deadline. Bans are kept behind the [`BanList`]
//! trait so a peer store on disk can persist them; [`MemoryBans`] keeps them in memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::id::NodeId;

/// What a ban applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BanKey {
    /// A node id (checked at dial time and once the handshake names the remote).
    Node(NodeId),
    /// An IP address (checked when a connection opens, before any work is spent).
    Ip(IpAddr),
}

/// How bad a reported behaviour is; its [`points`](Severity::points) add up towards
/// the ban threshold (default 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Severity {
    /// Wasteful but possibly honest (a duplicate answer, say): 1 point.
    Minor,
    /// Clearly wrong: 10 points.
    Moderate,
    /// A protocol violation (what every close with a misbehaviour reason counts as):
    /// 50 points, so two within the score's memory ban.
    Major,
    /// Unmistakably hostile: 100 points, a ban at the default threshold.
    Severe,
}

impl Severity {
    /// The points this severity adds.
    #[must_use]
    pub fn points(self) -> u32 {
        match self {
            Severity::Minor => 1,
            Severity::Moderate => 10,
            Severity::Major => 50,
            Severity::Severe => 100,
        }
    }
}

/// Where bans live. Expired bans must read as absent.
pub trait BanList {
    /// Bans `key` until `until` (a later deadline replaces an earlier one).
    fn ban(&mut self, key: BanKey, until: Instant);
    /// Until when `key` is banned, if it is banned at `now`.
    fn banned_until(&self, key: &BanKey, now: Instant) -> Option<Instant>;
    /// Forgets the bans that ended by `now`.
    fn expire(&mut self, now: Instant);
    /// Bans held (expired ones not yet forgotten included).
    fn len(&self) -> usize;
    /// Whether no ban is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A boxed ban list is a ban list, so a runtime can hold one chosen at start
/// (`SwitchCore<Box<dyn BanList>>`).
impl<T: BanList + ?Sized> BanList for Box<T> {
    fn ban(&mut self, key: BanKey, until: Instant) {
        (**self).ban(key, until);
    }

    fn banned_until(&self, key: &BanKey, now: Instant) -> Option<Instant> {
        (**self).banned_until(key, now)
    }

    fn expire(&mut self, now: Instant) {
        (**self).expire(now);
    }

    fn len(&self) -> usize {
        (**self).len()
    }

    fn is_empty(&self) -> bool {
        (**self).is_empty()
    }
}

/// Bans kept in memory (lost at restart).
#[derive(Debug, Default, Clone)]
pub struct MemoryBans {
    bans: HashMap<BanKey, Instant>,
}

impl BanList for MemoryBans {
    fn ban(&mut self, key: BanKey, until: Instant) {
        let e = self.bans.entry(key).or_insert(until);
        *e = (*e).max(until);
    }

    fn banned_until(&self, key: &BanKey, now: Instant) -> Option<Instant> {
        self.bans.get(key).copied().filter(|until| *until > now)
    }

    fn expire(&mut self, now: Instant) {
        self.bans.retain(|_, until| *until > now);
    }

    fn len(&self) -> usize {
        self.bans.len()
    }
}

/// Misbehaviour points per node id and IP. A key's points are forgotten `memory`
/// after its last report, and at most `capacity` keys are kept (the oldest go first).
#[derive(Debug)]
pub struct Scores {
    points: HashMap<BanKey, (u32, Instant)>,
    memory: Duration,
    capacity: usize,
}

impl Scores {
    /// Scores remembered for `memory` after the last report.
    #[must_use]
    pub fn new(memory: Duration, capacity: usize) -> Self {
        Scores {
            points: HashMap::new(),
            memory,
            capacity: capacity.max(1),
        }
    }

    /// Adds `points` to `key`; returns its total.
    pub fn add(&mut self, now: Instant, key: BanKey, points: u32) -> u32 {
        if self.points.len() >= self.capacity && !self.points.contains_key(&key) {
            let memory = self.memory;
            self.points
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < memory);
            if self.points.len() >= self.capacity {
                if let Some(oldest) = self.points.iter().min_by_key(|(_, (_, at))| *at) {
                    let oldest = *oldest.0;
                    self.points.remove(&oldest);
                }
            }
        }
        let e = self.points.entry(key).or_insert((0, now));
        if now.saturating_duration_since(e.1) >= self.memory {
            e.0 = 0;
        }
        e.0 = e.0.saturating_add(points);
        e.1 = now;
        e.0
    }

    /// Forgets `key`'s points (after it is banned).
    pub fn clear(&mut self, key: &BanKey) {
        self.points.remove(key);
    }

    /// Keys with points.
    #[must_use]
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no key has points.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn bans_expire_and_scores_are_forgotten() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let key = BanKey::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let mut bans = MemoryBans::default();
        bans.ban(key, t0 + Duration::from_secs(10));
        assert!(bans.banned_until(&key, t0).is_some());
        assert!(bans
            .banned_until(&key, t0 + Duration::from_secs(10))
            .is_none());
        bans.expire(t0 + Duration::from_secs(10));
        assert!(bans.is_empty());

        let mut boxed: Box<dyn BanList> = Box::new(MemoryBans::default());
        boxed.ban(key, t0 + Duration::from_secs(10));
        assert_eq!(boxed.len(), 1);
        assert!(boxed.banned_until(&key, t0).is_some());

        let mut s = Scores::new(Duration::from_secs(60), 2);
        assert_eq!(s.add(t0, key, 50), 50);
        assert_eq!(s.add(t0 + Duration::from_secs(59), key, 10), 60);
        assert_eq!(s.add(t0 + Duration::from_secs(200), key, 10), 10);
        let other = |b| BanKey::Node(NodeId([b; 20]));
        s.add(t0 + Duration::from_secs(200), other(1), 1);
        s.add(t0 + Duration::from_secs(201), other(2), 1);
        assert_eq!(s.len(), 2, "capacity bounds the table");
    }
}
