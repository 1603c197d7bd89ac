//! [`Entry`]: what the book knows about one address, and which table holds it.

use std::net::IpAddr;
use std::time::Instant;

use crate::addr::NetAddr;

/// Where an entry sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    /// In this bucket of the new table (heard of, never connected by us).
    New(usize),
    /// In this bucket of the tried table (we connected and the id was authenticated).
    Tried(usize),
    /// A persistent peer (config): outside both tables, never evicted or forgotten.
    Persistent,
}

impl Place {
    /// Whether the entry is in the tried table.
    #[must_use]
    pub fn is_tried(self) -> bool {
        matches!(self, Place::Tried(_))
    }
}

/// One known address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The node and where it listens.
    pub addr: NetAddr,
    /// The IP of the peer that told us (the address's own IP when it came from config
    /// or the initial peers file).
    pub src: IpAddr,
    /// Which table and bucket.
    pub place: Place,
    /// Failed dial attempts since the last success.
    pub attempts: u32,
    /// The last dial attempt.
    pub last_attempt: Option<Instant>,
    /// The last successful, authenticated connection.
    pub last_success: Option<Instant>,
    /// Until when the address is bad (too many failures): not selected, not shared,
    /// forgotten at that instant.
    pub bad_until: Option<Instant>,
    /// Until when the node is banned: not selected, not shared.
    pub banned_until: Option<Instant>,
}

impl Entry {
    pub(crate) fn new(addr: NetAddr, src: IpAddr, place: Place) -> Self {
        Entry {
            addr,
            src,
            place,
            attempts: 0,
            last_attempt: None,
            last_success: None,
            bad_until: None,
            banned_until: None,
        }
    }

    /// Whether the entry is banned at `now`.
    #[must_use]
    pub fn is_banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|t| t > now)
    }

    /// Whether the entry is marked bad (still held, no longer used).
    #[must_use]
    pub fn is_bad(&self) -> bool {
        self.bad_until.is_some()
    }

    /// Whether the entry may be dialed or shared at `now`.
    #[must_use]
    pub fn is_usable(&self, now: Instant) -> bool {
        !self.is_bad() && !self.is_banned(now)
    }

    /// How much worse this entry is than others for eviction: bad or banned first,
    /// then more failed attempts, then no success (or an older one), then an older
    /// last attempt. Larger is worse.
    pub(crate) fn badness(
        &self,
        now: Instant,
    ) -> (bool, u32, bool, std::cmp::Reverse<Option<Instant>>) {
        (
            !self.is_usable(now),
            self.attempts,
            self.last_success.is_none(),
            std::cmp::Reverse(self.last_success.or(self.last_attempt)),
        )
    }
}
