//! The stall tracker: per-request deadlines, armed when a request has been fully
//! written (not when it was queued), cleared by its response.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::reason::DisconnectReason;

/// A request that got no response in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled {
    /// Channel of the request.
    pub channel: u8,
    /// Its id.
    pub request_id: u32,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    channel: u8,
    timeout: Duration,
    deadline: Option<Instant>,
}

/// Outstanding requests of one connection.
#[derive(Debug, Default)]
pub struct StallTracker {
    next_id: u32,
    pending: HashMap<u32, Pending>,
    deadlines: BTreeSet<(Instant, u32)>,
}

impl StallTracker {
    /// No requests yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A request was queued on `channel`: returns its id. Not armed until written.
    pub fn register(&mut self, channel: u8, timeout: Duration) -> u32 {
        let mut id = self.next_id;
        while self.pending.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        self.pending.insert(
            id,
            Pending {
                channel,
                timeout,
                deadline: None,
            },
        );
        id
    }

    /// The request's last byte was written: its deadline starts now.
    pub fn on_written(&mut self, now: Instant, request_id: u32) {
        if let Some(p) = self.pending.get_mut(&request_id) {
            if p.deadline.is_none() {
                let d = now + p.timeout;
                p.deadline = Some(d);
                self.deadlines.insert((d, request_id));
            }
        }
    }

    fn remove(&mut self, request_id: u32) -> Option<Pending> {
        let p = self.pending.remove(&request_id)?;
        if let Some(d) = p.deadline {
            self.deadlines.remove(&(d, request_id));
        }
        Some(p)
    }

    /// A response arrived. An unknown id (or one from another channel) is the remote's
    /// fault: [`DisconnectReason::UnexpectedResponse`].
    pub fn on_response(&mut self, channel: u8, request_id: u32) -> Result<(), DisconnectReason> {
        match self.pending.get(&request_id) {
            Some(p) if p.channel == channel => {
                self.remove(request_id);
                Ok(())
            }
            _ => Err(DisconnectReason::UnexpectedResponse {
                channel,
                request_id,
            }),
        }
    }

    /// The caller gave up on the request.
    pub fn cancel(&mut self, request_id: u32) {
        self.remove(request_id);
    }

    /// Earliest armed deadline.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.iter().next().map(|(d, _)| *d)
    }

    /// The next request past its deadline at `now`; call until `None`.
    #[must_use]
    pub fn on_tick(&mut self, now: Instant) -> Option<Stalled> {
        let &(d, id) = self.deadlines.iter().next()?;
        if d > now {
            return None;
        }
        let p = self.remove(id)?;
        Some(Stalled {
            channel: p.channel,
            request_id: id,
        })
    }

    /// Requests outstanding (armed or not).
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }
    const S: Duration = Duration::from_secs(1);

    #[test]
    fn unwritten_requests_never_stall() {
        let t = t0();
        let mut s = StallTracker::new();
        let id = s.register(3, S);
        assert_eq!(s.next_deadline(), None);
        assert_eq!(s.on_tick(t + S * 100), None);
        s.on_written(t + S * 100, id);
        assert_eq!(s.on_tick(t + S * 100 + S / 2), None);
        assert_eq!(
            s.on_tick(t + S * 101),
            Some(Stalled {
                channel: 3,
                request_id: id
            })
        );
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn responses_clear_and_unexpected_ones_are_errors() {
        let t = t0();
        let mut s = StallTracker::new();
        let a = s.register(1, S);
        let b = s.register(1, S);
        s.on_written(t, a);
        s.on_written(t, b);
        assert_eq!(s.on_response(1, a), Ok(()));
        assert_eq!(
            s.on_response(1, a),
            Err(DisconnectReason::UnexpectedResponse {
                channel: 1,
                request_id: a
            })
        );
        assert_eq!(
            s.on_response(2, b),
            Err(DisconnectReason::UnexpectedResponse {
                channel: 2,
                request_id: b
            })
        );
        s.cancel(b);
        assert_eq!(s.on_tick(t + S * 5), None);
    }

    #[test]
    fn ids_wrap_and_skip_pending_ones() {
        let mut s = StallTracker::new();
        s.next_id = u32::MAX;
        let a = s.register(1, S);
        let b = s.register(1, S);
        assert_eq!((a, b), (u32::MAX, 0));
        s.next_id = u32::MAX;
        assert_eq!(s.register(1, S), 1, "skips the two pending ids");
    }
}
