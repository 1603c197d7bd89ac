//! [`Drive`]: the choices of the runtime's driver loop that are neither the
//! [`Reader`](super::reader::Reader)'s nor the [`Writer`]'s: when to re-arm its one
//! timer, and when to give its thread back.
//!
//! The runtime's driver polls the socket's read and write sides and its one timer in
//! passes, then carries out the core's events, and goes on while a pass did something.
//!
//! * **One timer, re-armed only when the deadline moves.** After each pass the core's
//!   earliest deadline ([`PeerCore::poll_timeout`]) is compared with the one armed
//!   ([`Drive::arm`], which tells the writer too); a timer that fired is not armed until the next deadline
//!   ([`Drive::fire`]), so a stale one never fires twice.
//! * **A turn for the others.** After a streak of [`STREAK_LIMIT`] bytes moved in one
//!   poll, the driver gives its thread back once ([`AfterPass::Yield`]), so other
//!   connections on the thread, and the readiness of its own socket (a pong, an urgent
//!   message), get their turn.

use std::time::Instant;

use super::writer::Writer;
use super::PeerCore;

/// Bytes moved in a row after which the driver gives its thread back (at a few GB/s,
/// every ~100 µs).
pub const STREAK_LIMIT: usize = 256 << 10;

/// What the driver does after one pass (from [`Drive::after_pass`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum AfterPass {
    /// Another pass: something happened.
    Again,
    /// Sleep until the socket, the timer or a sender wakes it: nothing happened.
    Sleep,
    /// Give the thread back once, and come back after the runtime has polled its I/O.
    Yield,
}

/// The driver loop's timer and streak (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct Drive {
    /// The deadline the runtime's timer is armed for.
    armed: Option<Instant>,
    /// Bytes moved since the poll began.
    streak: usize,
}

impl Drive {
    /// A driver with no timer armed.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// After a pass: the instant to re-arm the runtime's timer for, when the core's
    /// earliest deadline is not the one armed already. The `writer` learns the
    /// deadline too ([`Writer::set_armed`]).
    #[must_use]
    pub fn arm(&mut self, core: &PeerCore, writer: &mut Writer) -> Option<Instant> {
        let next = core.poll_timeout();
        writer.set_armed(next);
        self.rearm(next)
    }

    /// The runtime's timer is to be armed for `next`: the instant to re-arm it for,
    /// when it is not armed for it already.
    #[must_use]
    pub fn rearm(&mut self, next: Option<Instant>) -> Option<Instant> {
        if next == self.armed {
            return None;
        }
        self.armed = next;
        next
    }

    /// Whether the runtime's timer is armed (worth polling).
    #[must_use]
    pub fn is_armed(&self) -> bool {
        self.armed.is_some()
    }

    /// The runtime's timer fired at `now`: the core handles its deadlines, and the
    /// timer is not armed until [`arm`](Self::arm) says so again.
    pub fn fire(&mut self, core: &mut PeerCore, now: Instant) {
        self.armed = None;
        core.handle_timeout(now);
    }

    /// A poll of the driver begins: no streak yet.
    pub fn begin(&mut self) {
        self.streak = 0;
    }

    /// A pass read and wrote these bytes (`None`: that side did nothing) and fired
    /// the timer or not: what the driver does next.
    pub fn after_pass(
        &mut self,
        read: Option<usize>,
        wrote: Option<usize>,
        fired: bool,
    ) -> AfterPass {
        if read.is_none() && wrote.is_none() && !fired {
            return AfterPass::Sleep;
        }
        self.streak += read.unwrap_or(0) + wrote.unwrap_or(0);
        if self.streak >= STREAK_LIMIT {
            return AfterPass::Yield;
        }
        AfterPass::Again
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn the_timer_is_re_armed_only_when_the_deadline_moves() {
        let t = t0();
        let mut drive = Drive::new();
        assert!(!drive.is_armed());
        assert_eq!(drive.rearm(None), None, "nothing to arm");
        assert_eq!(drive.rearm(Some(t)), Some(t));
        assert!(drive.is_armed());
        assert_eq!(drive.rearm(Some(t)), None, "armed for it already");
        let later = t + std::time::Duration::from_secs(1);
        assert_eq!(drive.rearm(Some(later)), Some(later));
        // No deadline left: nothing to re-arm, and the stale timer is not polled.
        assert_eq!(drive.rearm(None), None);
        assert!(!drive.is_armed());
    }

    #[test]
    fn a_pass_that_did_nothing_sleeps_and_a_long_streak_yields() {
        let mut drive = Drive::new();
        drive.begin();
        assert_eq!(drive.after_pass(None, None, false), AfterPass::Sleep);
        assert_eq!(drive.after_pass(None, None, true), AfterPass::Again);
        // A read of 0 bytes (the stream ended) is something.
        assert_eq!(drive.after_pass(Some(0), None, false), AfterPass::Again);
        assert_eq!(
            drive.after_pass(Some(STREAK_LIMIT / 2), Some(STREAK_LIMIT / 2 - 1), false),
            AfterPass::Again
        );
        assert_eq!(drive.after_pass(None, Some(1), false), AfterPass::Yield);
        // A new poll starts a new streak.
        drive.begin();
        assert_eq!(drive.after_pass(Some(1), None, false), AfterPass::Again);
    }
}
