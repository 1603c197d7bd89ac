//! [`TimeAnchor`]: the one pairing of monotonic and wall-clock time that converts the
//! book's `Instant`s to the unix seconds the store keeps, and back.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An `Instant` and the wall-clock time it was read at (by the runtime, once, at
/// start): converts between the two so the store can keep times across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeAnchor {
    instant: Instant,
    unix: u64,
}

impl TimeAnchor {
    /// `instant` happened at wall-clock `system` (a clock before 1970 reads as 1970).
    #[must_use]
    pub fn new(instant: Instant, system: SystemTime) -> Self {
        let unix = system.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        TimeAnchor { instant, unix }
    }

    /// `instant` happened at `unix` seconds since 1970.
    #[must_use]
    pub fn from_unix(instant: Instant, unix: u64) -> Self {
        TimeAnchor { instant, unix }
    }

    /// The anchor's `Instant`.
    #[must_use]
    pub fn instant(&self) -> Instant {
        self.instant
    }

    /// The anchor's wall-clock time in unix seconds.
    #[must_use]
    pub fn unix(&self) -> u64 {
        self.unix
    }

    /// Unix seconds of `t` (rounded down).
    #[must_use]
    pub fn to_unix(&self, t: Instant) -> u64 {
        if t >= self.instant {
            self.unix
                .saturating_add(t.duration_since(self.instant).as_secs())
        } else {
            self.unix
                .saturating_sub(self.instant.duration_since(t).as_secs())
        }
    }

    /// The `Instant` of `unix` seconds; `None` when it lies before what this process's
    /// `Instant` can express (long before it started, on some platforms).
    #[must_use]
    pub fn to_instant(&self, unix: u64) -> Option<Instant> {
        if unix >= self.unix {
            self.instant
                .checked_add(Duration::from_secs(unix - self.unix))
        } else {
            self.instant
                .checked_sub(Duration::from_secs(self.unix - unix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_to_the_second() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let a = TimeAnchor::from_unix(t0, 1_000_000);
        let later = t0 + Duration::from_millis(5_900);
        assert_eq!(a.to_unix(later), 1_000_005);
        assert_eq!(a.to_instant(1_000_005), Some(t0 + Duration::from_secs(5)));
        assert_eq!(a.to_unix(t0), 1_000_000);
        let b = TimeAnchor::new(t0, UNIX_EPOCH + Duration::from_secs(77));
        assert_eq!(b.unix(), 77);
    }
}
