//! [`InlineTurn`]: how often one thread may write a connection's bytes itself.
//!
//! While a connection's writer sleeps, a sender that queued a message may write it
//! inline, from its own thread, instead of waking the writer's thread: one thread
//! hand-off less on the path of an urgent message (see
//! [`Writer::after_push`](super::writer::Writer::after_push)). A thread writes inline at
//! most once every [`INLINE_GAP`], whatever the connection: a service answering a
//! request now and then writes its answer itself, while a burst of sends, or a loop
//! sending to many peers, only queues and lets the connections' writers gather its
//! messages into large writes on their own threads. A syscall per small message from
//! one thread would make that thread the bottleneck (a broadcast to 16 peers ran at
//! 1/20 of its rate).
//!
//! The runtime keeps one turn per thread (a thread-local) and asks it before each
//! inline write.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Shortest time between two inline writes of one thread.
pub const INLINE_GAP: Duration = Duration::from_micros(50);

/// When a thread last wrote inline (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InlineTurn {
    last: Option<Instant>,
}

impl InlineTurn {
    /// A thread that has not written inline yet.
    #[must_use]
    pub const fn new() -> Self {
        InlineTurn { last: None }
    }

    /// Whether the thread may write inline at `now`; if so, the write is counted.
    #[must_use]
    pub fn take(&mut self, now: Instant) -> bool {
        let free = self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= INLINE_GAP);
        if free {
            self.last = Some(now);
        }
        free
    }

    /// [`take`](Self::take) on a turn kept in a `Cell` (a runtime keeps one per
    /// thread, in a thread-local).
    #[must_use]
    pub fn take_in(cell: &Cell<InlineTurn>, now: Instant) -> bool {
        let mut turn = cell.get();
        let free = turn.take(now);
        cell.set(turn);
        free
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
    fn the_first_write_is_free_then_one_per_gap() {
        let t = t0();
        let mut turn = InlineTurn::new();
        assert!(turn.take(t));
        assert!(!turn.take(t));
        assert!(!turn.take(t + INLINE_GAP / 2));
        assert!(turn.take(t + INLINE_GAP));
        assert!(!turn.take(t + INLINE_GAP + Duration::from_micros(1)));
    }

    #[test]
    fn a_refused_turn_does_not_push_the_next_one_back() {
        let t = t0();
        let mut turn = InlineTurn::new();
        assert!(turn.take(t));
        for i in 1..10 {
            assert!(!turn.take(t + INLINE_GAP * i / 10));
        }
        assert!(turn.take(t + INLINE_GAP), "counted from the last write");
    }

    #[test]
    fn a_turn_in_a_cell_is_taken_and_kept_there() {
        let t = t0();
        let cell = Cell::new(InlineTurn::new());
        assert!(InlineTurn::take_in(&cell, t));
        assert!(!InlineTurn::take_in(&cell, t + INLINE_GAP / 2));
        assert!(InlineTurn::take_in(&cell, t + INLINE_GAP));
        assert_eq!(cell.get().last, Some(t + INLINE_GAP));
    }

    #[test]
    fn a_clock_that_goes_backwards_waits_for_the_gap() {
        let t = t0() + Duration::from_secs(1);
        let mut turn = InlineTurn::new();
        assert!(turn.take(t));
        assert!(!turn.take(t - Duration::from_millis(1)));
    }
}
