//! [`StoredBans`]: the Switch's [`BanList`] (bans and misbehaviour scores) kept in
//! memory and written through to the peer store in batches, so both survive a
//! restart; [`SharedBans`]: the same, shared between the Switch (which bans and
//! scores) and discovery (which writes the changes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use switchyard_proto::switch::bans::Scores;
use switchyard_proto::switch::{BanKey, BanList, Score, MAX_SCORES};

use super::time::TimeAnchor;
use super::{Change, Snapshot, StoredScore};

/// Bans and misbehaviour scores for the `SwitchCore` (`SwitchCore::with_bans`) that
/// the peer store keeps: every ban, score and expiry is also queued as a [`Change`],
/// which the runtime takes with [`take_changes`](Self::take_changes) and commits with
/// [`PeerStore::apply`](super::PeerStore::apply) in its next batch. At most
/// [`MAX_SCORES`] scores are kept, in memory and so in the store (a score dropped to
/// make room is removed from the store too).
#[derive(Debug, Clone)]
pub struct StoredBans {
    anchor: TimeAnchor,
    bans: HashMap<BanKey, Instant>,
    scores: Scores,
    pending: Vec<Change>,
}

impl StoredBans {
    /// No bans or scores; times are converted with `anchor`.
    #[must_use]
    pub fn new(anchor: TimeAnchor) -> Self {
        Self::with_score_capacity(anchor, MAX_SCORES)
    }

    /// No bans or scores, at most `capacity` scores kept (at least 1).
    #[must_use]
    pub fn with_score_capacity(anchor: TimeAnchor, capacity: usize) -> Self {
        StoredBans {
            anchor,
            bans: HashMap::new(),
            scores: Scores::new(capacity),
            pending: Vec::new(),
        }
    }

    /// The bans and scores of a loaded [`Snapshot`] (see [`load`](Self::load)).
    #[must_use]
    pub fn from_snapshot(anchor: TimeAnchor, snapshot: &Snapshot) -> Self {
        let mut me = StoredBans::new(anchor);
        me.load(snapshot);
        me
    }

    /// Takes the bans and scores of a loaded [`Snapshot`], at the anchor's time.
    /// Scores that ended by then are not taken and are queued to be removed from the
    /// store, as are those beyond the capacity (the soonest to end go); nothing else
    /// is queued.
    pub fn load(&mut self, snapshot: &Snapshot) {
        for (key, until) in &snapshot.bans {
            let until = self
                .anchor
                .to_instant(*until)
                .unwrap_or(self.anchor.instant());
            let e = self.bans.entry(*key).or_insert(until);
            *e = (*e).max(until);
        }
        let now = self.anchor.instant();
        let mut scores: Vec<&StoredScore> = snapshot.scores.iter().collect();
        // Soonest to end first: each one dropped for room is then the soonest held.
        scores.sort_by_key(|s| s.until);
        for s in scores {
            let until = self.anchor.to_instant(s.until).filter(|u| *u > now);
            let Some(until) = until else {
                self.pending.push(Change::Unscore(s.key));
                continue;
            };
            let (_, dropped) = self.scores.add(now, s.key, s.points, until);
            self.pending
                .extend(dropped.into_iter().map(Change::Unscore));
        }
    }

    /// The bans loaded from the store ([`Snapshot::bans`](super::Snapshot::bans)), and no
    /// scores ([`from_snapshot`](Self::from_snapshot) takes both); none is queued to be
    /// written again.
    #[must_use]
    pub fn from_loaded(anchor: TimeAnchor, bans: &[(BanKey, u64)]) -> Self {
        let mut me = StoredBans::new(anchor);
        me.load(&Snapshot {
            bans: bans.to_vec(),
            ..Snapshot::default()
        });
        me
    }

    /// The changes to commit since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.pending)
    }
}

impl BanList for StoredBans {
    fn ban(&mut self, key: BanKey, until: Instant) {
        let e = self.bans.entry(key).or_insert(until);
        *e = (*e).max(until);
        let until = self.anchor.to_unix(*e);
        self.pending.push(Change::Ban { key, until });
    }

    fn banned_until(&self, key: &BanKey, now: Instant) -> Option<Instant> {
        self.bans.get(key).copied().filter(|until| *until > now)
    }

    fn expire(&mut self, now: Instant) {
        let pending = &mut self.pending;
        self.bans.retain(|key, until| {
            let keep = *until > now;
            if !keep {
                pending.push(Change::Unban(*key));
            }
            keep
        });
        let gone = self.scores.expire(now);
        self.pending.extend(gone.into_iter().map(Change::Unscore));
    }

    fn len(&self) -> usize {
        self.bans.len()
    }

    fn add_points(&mut self, now: Instant, key: BanKey, points: u32, until: Instant) -> u32 {
        let (score, dropped) = self.scores.add(now, key, points, until);
        self.pending
            .extend(dropped.into_iter().map(Change::Unscore));
        self.pending.push(Change::Score(StoredScore {
            key,
            points: score.points,
            until: self.anchor.to_unix(score.until),
        }));
        score.points
    }

    fn score(&self, key: &BanKey, now: Instant) -> Option<Score> {
        self.scores.get(key, now)
    }

    fn clear_points(&mut self, key: &BanKey) {
        if self.scores.remove(key) {
            self.pending.push(Change::Unscore(*key));
        }
    }

    fn scored(&self) -> usize {
        self.scores.len()
    }
}

/// [`StoredBans`] (bans and scores) shared between the Switch and discovery: give it to
/// the Switch with `Switch::builder(..).bans(..)`; discovery
/// ([`DiscoveryHandle::bans`](crate::discovery::DiscoveryHandle::bans)) takes its
/// queued changes at every flush and writes them in the same batch as the book's, on
/// the store's writer thread, never on the network path.
///
/// Clones share the same bans and scores. The lock is held only for a lookup or an update.
#[derive(Debug, Clone)]
pub struct SharedBans(Arc<Mutex<StoredBans>>);

impl SharedBans {
    /// Shares `bans`.
    #[must_use]
    pub fn new(bans: StoredBans) -> Self {
        SharedBans(Arc::new(Mutex::new(bans)))
    }

    /// The changes to commit since the last call (of any clone).
    #[must_use]
    pub fn take_changes(&self) -> Vec<Change> {
        self.lock().take_changes()
    }

    /// The bans, locked. A panic while the lock was held leaves the bans as they
    /// were at the panic, which are still bans: the lock is taken anyway.
    fn lock(&self) -> MutexGuard<'_, StoredBans> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl BanList for SharedBans {
    fn ban(&mut self, key: BanKey, until: Instant) {
        self.lock().ban(key, until);
    }

    fn banned_until(&self, key: &BanKey, now: Instant) -> Option<Instant> {
        self.lock().banned_until(key, now)
    }

    fn expire(&mut self, now: Instant) {
        self.lock().expire(now);
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn add_points(&mut self, now: Instant, key: BanKey, points: u32, until: Instant) -> u32 {
        self.lock().add_points(now, key, points, until)
    }

    fn score(&self, key: &BanKey, now: Instant) -> Option<Score> {
        self.lock().score(key, now)
    }

    fn clear_points(&mut self, key: &BanKey) {
        self.lock().clear_points(key);
    }

    fn scored(&self) -> usize {
        self.lock().scored()
    }
}
