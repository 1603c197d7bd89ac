//! The refusal budget and the refusal summary.
//!
//! A refused connection is either told why (a `Goodbye`, which costs the runtime a task
//! and a socket for up to a second) or closed at once. At most `max_refusing` goodbyes
//! are in flight; refusals beyond that, and every [`RateLimited`] refusal (a flood is
//! not worth an answer), are closed cheaply. Refusals are counted per reason and
//! reported once per [`SUMMARY_INTERVAL`] as one [`RefusalSummary`] instead of a log line
//! per attacker connection.
//!
//! [`RateLimited`]: DisconnectReason::RateLimited

use std::time::{Duration, Instant};

use crate::reason::DisconnectReason;

/// How often refusals are summarised (when there were any).
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// A refused connection: why, and whether to tell the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Refusal {
    /// The reason (sent in the goodbye when `goodbye` is true).
    pub reason: DisconnectReason,
    /// Tell the remote with a goodbye, then call
    /// [`SwitchCore::handle_refusal_done`](super::SwitchCore::handle_refusal_done) when
    /// that is over; `false`: close at once.
    pub goodbye: bool,
}

/// Refusals counted over one interval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusalSummary {
    /// Refusals per reason, in the order first seen.
    pub by_reason: Vec<(DisconnectReason, u64)>,
    /// How many of them were closed without a goodbye.
    pub without_goodbye: u64,
}

/// Goodbyes in flight and the counts of the current interval.
#[derive(Debug)]
pub struct Refusals {
    max_refusing: usize,
    refusing: usize,
    current: RefusalSummary,
    deadline: Option<Instant>,
}

impl Refusals {
    /// At most `max_refusing` goodbyes at once.
    #[must_use]
    pub fn new(max_refusing: usize) -> Self {
        Refusals {
            max_refusing,
            refusing: 0,
            current: RefusalSummary::default(),
            deadline: None,
        }
    }

    /// Refuses with `reason`: counts it and decides whether it gets a goodbye.
    pub fn refuse(&mut self, now: Instant, reason: DisconnectReason) -> Refusal {
        let goodbye = reason != DisconnectReason::RateLimited && self.refusing < self.max_refusing;
        if goodbye {
            self.refusing += 1;
        } else {
            self.current.without_goodbye += 1;
        }
        match self
            .current
            .by_reason
            .iter_mut()
            .find(|(r, _)| *r == reason)
        {
            Some((_, n)) => *n += 1,
            None => self.current.by_reason.push((reason.clone(), 1)),
        }
        self.deadline.get_or_insert(now + SUMMARY_INTERVAL);
        Refusal { reason, goodbye }
    }

    /// A goodbye finished (written, or given up).
    pub fn done(&mut self) {
        self.refusing = self.refusing.saturating_sub(1);
    }

    /// Goodbyes in flight.
    #[must_use]
    pub fn refusing(&self) -> usize {
        self.refusing
    }

    /// When the next summary is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The summary, when it is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<RefusalSummary> {
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            return Some(std::mem::take(&mut self.current));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_bounds_goodbyes_and_floods_get_none() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut r = Refusals::new(2);
        assert!(r.refuse(t0, DisconnectReason::MaxInbound).goodbye);
        assert!(!r.refuse(t0, DisconnectReason::RateLimited).goodbye);
        assert!(r.refuse(t0, DisconnectReason::MaxInbound).goodbye);
        assert!(!r.refuse(t0, DisconnectReason::MaxInbound).goodbye);
        r.done();
        assert!(r.refuse(t0, DisconnectReason::MaxPerIp).goodbye);
        assert_eq!(r.handle_timeout(t0), None);
        assert_eq!(r.poll_timeout(), Some(t0 + SUMMARY_INTERVAL));
        let s = r.handle_timeout(t0 + SUMMARY_INTERVAL).unwrap();
        assert_eq!(
            s.by_reason,
            vec![
                (DisconnectReason::MaxInbound, 3),
                (DisconnectReason::RateLimited, 1),
                (DisconnectReason::MaxPerIp, 1)
            ]
        );
        assert_eq!(s.without_goodbye, 2);
        assert_eq!(r.poll_timeout(), None);
    }
}
