//! Bans and misbehaviour scores.
//!
//! Reports add points to the reported node id and IP address (a [`Score`] each); past
//! the threshold both are banned until a deadline. Bans and scores are kept behind
//! the [`BanList`] trait so a peer store on disk can persist them; [`MemoryBans`]
//! keeps them in memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use crate::id::NodeId;

/// What a ban applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BanKey {
    /// A node id (checked at dial time, once the transport's handshake proves the
    /// remote's key, and once the handshake names the remote).
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

/// A key's misbehaviour points and when they are forgotten (unless it is reported
/// again before then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Score {
    /// Points gathered.
    pub points: u32,
    /// When they are forgotten: `memory` after the last report.
    pub until: Instant,
}

/// Where bans and misbehaviour scores live, so that a peer store can keep both across
/// restarts. Expired bans and scores must read as absent.
pub trait BanList {
    /// Bans `key` until `until` (a later deadline replaces an earlier one).
    fn ban(&mut self, key: BanKey, until: Instant);
    /// Until when `key` is banned, if it is banned at `now`.
    fn banned_until(&self, key: &BanKey, now: Instant) -> Option<Instant>;
    /// Forgets the bans and the scores that ended by `now`.
    fn expire(&mut self, now: Instant);
    /// Bans held (expired ones not yet forgotten included).
    fn len(&self) -> usize;
    /// Whether no ban is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Adds `points` to `key`'s score and keeps it until `until`; a score already
    /// forgotten at `now` starts again from zero. Returns the new total. The list
    /// bounds how many scores it keeps (dropping the expired, then the ones to be
    /// forgotten first).
    fn add_points(&mut self, now: Instant, key: BanKey, points: u32, until: Instant) -> u32;
    /// `key`'s score, if it has one at `now`.
    fn score(&self, key: &BanKey, now: Instant) -> Option<Score>;
    /// Forgets `key`'s points (after it is banned).
    fn clear_points(&mut self, key: &BanKey);
    /// Keys with points (expired ones not yet forgotten included).
    fn scored(&self) -> usize;
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

    fn add_points(&mut self, now: Instant, key: BanKey, points: u32, until: Instant) -> u32 {
        (**self).add_points(now, key, points, until)
    }

    fn score(&self, key: &BanKey, now: Instant) -> Option<Score> {
        (**self).score(key, now)
    }

    fn clear_points(&mut self, key: &BanKey) {
        (**self).clear_points(key);
    }

    fn scored(&self) -> usize {
        (**self).scored()
    }
}

/// Bans and scores kept in memory (lost at restart); at most
/// [`MAX_SCORES`](super::MAX_SCORES) scores.
#[derive(Debug, Clone)]
pub struct MemoryBans {
    bans: HashMap<BanKey, Instant>,
    scores: Scores,
}

impl Default for MemoryBans {
    fn default() -> Self {
        MemoryBans {
            bans: HashMap::new(),
            scores: Scores::new(super::MAX_SCORES),
        }
    }
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
        self.scores.expire(now);
    }

    fn len(&self) -> usize {
        self.bans.len()
    }

    fn add_points(&mut self, now: Instant, key: BanKey, points: u32, until: Instant) -> u32 {
        self.scores.add(now, key, points, until).0.points
    }

    fn score(&self, key: &BanKey, now: Instant) -> Option<Score> {
        self.scores.get(key, now)
    }

    fn clear_points(&mut self, key: &BanKey) {
        self.scores.remove(key);
    }

    fn scored(&self) -> usize {
        self.scores.len()
    }
}

/// Misbehaviour points per node id and IP, each kept until its [`Score::until`]; at
/// most `capacity` keys are kept (the expired go first, then the ones to be
/// forgotten soonest). The building block of a [`BanList`]'s scores: every method
/// that drops keys returns them, so a list that writes through to a store can
/// forget them there too.
#[derive(Debug, Clone)]
pub struct Scores {
    points: HashMap<BanKey, Score>,
    capacity: usize,
}

impl Scores {
    /// No scores; at most `capacity` (at least 1) kept.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Scores {
            points: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds `points` to `key`, kept until `until` (a score already forgotten at
    /// `now` starts from zero). Returns the key's new score and the keys dropped to
    /// make room for it.
    pub fn add(
        &mut self,
        now: Instant,
        key: BanKey,
        points: u32,
        until: Instant,
    ) -> (Score, Vec<BanKey>) {
        let mut dropped = Vec::new();
        if self.points.len() >= self.capacity && !self.points.contains_key(&key) {
            dropped = self.expire(now);
            if self.points.len() >= self.capacity {
                let soonest = self
                    .points
                    .iter()
                    .min_by_key(|(k, s)| (s.until, key_order(k)))
                    .map(|(k, _)| *k);
                if let Some(k) = soonest {
                    self.points.remove(&k);
                    dropped.push(k);
                }
            }
        }
        let e = self.points.entry(key).or_insert(Score { points: 0, until });
        if e.until <= now {
            e.points = 0;
        }
        e.points = e.points.saturating_add(points);
        e.until = e.until.max(until);
        (*e, dropped)
    }

    /// `key`'s score, if it has one at `now`.
    #[must_use]
    pub fn get(&self, key: &BanKey, now: Instant) -> Option<Score> {
        self.points.get(key).copied().filter(|s| s.until > now)
    }

    /// Forgets `key`'s points; whether it had any.
    pub fn remove(&mut self, key: &BanKey) -> bool {
        self.points.remove(key).is_some()
    }

    /// Forgets the scores that ended by `now`; returns their keys.
    pub fn expire(&mut self, now: Instant) -> Vec<BanKey> {
        let mut gone = Vec::new();
        self.points.retain(|k, s| {
            let keep = s.until > now;
            if !keep {
                gone.push(*k);
            }
            keep
        });
        gone
    }

    /// Every key with its score (expired ones not yet forgotten included), in no
    /// particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&BanKey, &Score)> {
        self.points.iter()
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

/// A total order of keys, so that which of two equally old scores is dropped does
/// not depend on the hash map's order.
fn key_order(key: &BanKey) -> (u8, [u8; 20], Option<IpAddr>) {
    match key {
        BanKey::Node(id) => (0, id.0, None),
        BanKey::Ip(ip) => (1, [0; 20], Some(*ip)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

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

        let min = Duration::from_secs(60);
        let mut s = Scores::new(2);
        assert_eq!(s.add(t0, key, 50, t0 + min).0.points, 50);
        let t59 = t0 + Duration::from_secs(59);
        assert_eq!(s.add(t59, key, 10, t59 + min).0.points, 60);
        let t200 = t0 + Duration::from_secs(200);
        assert_eq!(s.add(t200, key, 10, t200 + min).0.points, 10);
        let other = |b| BanKey::Node(NodeId([b; 20]));
        let t201 = t0 + Duration::from_secs(201);
        assert!(s.add(t200, other(1), 1, t200 + min).1.is_empty());
        let (_, dropped) = s.add(t201, other(2), 1, t201 + min);
        assert_eq!(s.len(), 2, "capacity bounds the table");
        assert_eq!(dropped, vec![other(1)], "the soonest forgotten goes first");
        assert!(s.get(&other(2), t201).is_some());
        assert_eq!(s.expire(t200 + min), vec![key]);
        assert_eq!(s.expire(t201 + min), vec![other(2)]);
        assert!(s.is_empty());

        let mut mem = MemoryBans::default();
        assert_eq!(mem.add_points(t0, key, 50, t0 + min), 50);
        assert_eq!(mem.add_points(t59, key, 50, t59 + min), 100);
        assert_eq!(
            mem.score(&key, t59),
            Some(Score {
                points: 100,
                until: t59 + min
            })
        );
        mem.expire(t59 + min);
        assert_eq!(mem.scored(), 0, "expire forgets scores too");
        mem.add_points(t0, key, 1, t0 + min);
        mem.clear_points(&key);
        assert!(mem.score(&key, t0).is_none());
    }
}
