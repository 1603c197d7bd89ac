//! The one timer table of a connection.
//!
//! Every deadline of a [`PeerCore`](super::PeerCore) lives here under a [`Timer`]
//! name; the core reports the earliest through `poll_timeout`, so its driver arms one
//! timer. The core also checks the table on every input, so a driver whose timer
//! fires late (a busy thread) cannot make a deadline be missed, only noticed late.

use std::time::Instant;

/// The deadlines a connection keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The handshake must complete by then.
    Handshake,
    /// The keepalive's next action: a ping to send, a pong or idle deadline.
    Keepalive,
    /// The earliest request waiting for its response.
    Stall,
    /// Flow control: a window to shrink, or credit the receive rate held back.
    Flow,
    /// A paused channel's queue is due for compaction.
    Compact,
    /// The send rate allows the next write.
    SendRate,
    /// A closing connection is cut if it has not finished by then.
    Linger,
    /// The earliest service offer of ours must be answered by then.
    ServiceOffer,
}

const COUNT: usize = 8;

impl Timer {
    const ALL: [Timer; COUNT] = [
        Timer::Handshake,
        Timer::Keepalive,
        Timer::Stall,
        Timer::Flow,
        Timer::Compact,
        Timer::SendRate,
        Timer::Linger,
        Timer::ServiceOffer,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Deadlines by [`Timer`].
#[derive(Debug, Clone, Default)]
pub struct TimerTable {
    at: [Option<Instant>; COUNT],
}

impl TimerTable {
    /// Sets (or, with `None`, clears) one timer.
    pub fn set(&mut self, timer: Timer, at: Option<Instant>) {
        if let Some(slot) = self.at.get_mut(timer.index()) {
            *slot = at;
        }
    }

    /// The deadline of one timer.
    #[must_use]
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.at.get(timer.index()).copied().flatten()
    }

    /// Clears every timer.
    pub fn clear(&mut self) {
        self.at = [None; COUNT];
    }

    /// The earliest deadline.
    #[must_use]
    pub fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// The timers due at `now`, in table order.
    pub fn expired(&self, now: Instant) -> impl Iterator<Item = Timer> + '_ {
        Timer::ALL
            .into_iter()
            .filter(move |t| self.get(*t).is_some_and(|at| at <= now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_and_expired() {
        #[allow(clippy::disallowed_methods)]
        let t = Instant::now();
        let mut table = TimerTable::default();
        assert_eq!(table.next(), None);
        table.set(Timer::Linger, Some(t + Duration::from_secs(5)));
        table.set(Timer::Keepalive, Some(t + Duration::from_secs(1)));
        assert_eq!(table.next(), Some(t + Duration::from_secs(1)));
        let due: Vec<Timer> = table.expired(t + Duration::from_secs(2)).collect();
        assert_eq!(due, vec![Timer::Keepalive]);
        table.set(Timer::Keepalive, None);
        assert_eq!(table.next(), Some(t + Duration::from_secs(5)));
        table.clear();
        assert_eq!(table.next(), None);
    }
}
