//! [`StoredBans`]: the Switch's [`BanList`] kept in memory and written through to the
//! peer store in batches, so bans survive a restart; [`SharedBans`]: the same, shared
//! between the Switch (which bans) and discovery (which writes the changes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use switchyard_proto::switch::{BanKey, BanList};

use super::time::TimeAnchor;
use super::Change;

/// Bans for the `SwitchCore` (`SwitchCore::with_bans`) that the peer store keeps:
/// every ban and every expiry is also queued as a [`Change`], which the runtime takes
/// with [`take_changes`](Self::take_changes) and commits with
/// [`PeerStore::apply`](super::PeerStore::apply) in its next batch.
#[derive(Debug, Clone)]
pub struct StoredBans {
    anchor: TimeAnchor,
    bans: HashMap<BanKey, Instant>,
    pending: Vec<Change>,
}

impl StoredBans {
    /// No bans; times are converted with `anchor`.
    #[must_use]
    pub fn new(anchor: TimeAnchor) -> Self {
        StoredBans {
            anchor,
            bans: HashMap::new(),
            pending: Vec::new(),
        }
    }

    /// The bans loaded from the store ([`Snapshot::bans`](super::Snapshot::bans)); none
    /// is queued to be written again.
    #[must_use]
    pub fn from_loaded(anchor: TimeAnchor, bans: &[(BanKey, u64)]) -> Self {
        let mut me = StoredBans::new(anchor);
        for (key, until) in bans {
            let until = anchor.to_instant(*until).unwrap_or(anchor.instant());
            let e = me.bans.entry(*key).or_insert(until);
            *e = (*e).max(until);
        }
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
    }

    fn len(&self) -> usize {
        self.bans.len()
    }
}

/// [`StoredBans`] shared between the Switch and discovery: give it to the Switch with
/// `Switch::builder(..).bans(..)`; discovery
/// ([`DiscoveryHandle::bans`](crate::discovery::DiscoveryHandle::bans)) takes its
/// queued changes at every flush and writes them in the same batch as the book's, on
/// the store's writer thread, never on the network path.
///
/// Clones share the same bans. The lock is held only for a lookup or an update.
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
}
