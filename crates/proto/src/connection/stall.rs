//! Requests both ways. [`StallTracker`]: our requests, each with a deadline armed
//! when it has been fully written (not when it was queued), cleared by its answer;
//! the ids of the last answered, stalled and given-up requests are remembered, so a
//! duplicate answer, a late one and one that answers nothing are told apart.
//! [`InboundRequests`]: the remote's requests our services hold, bounded per channel.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
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

/// Why a request will get no response (the one-byte payload of a `Rejected` message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Refusal {
    /// The responder holds as many of our requests on that channel as it accepts.
    Busy = 1,
    /// The responder's service let the request go unanswered (or went away).
    Dropped = 2,
}

impl Refusal {
    /// The wire byte.
    #[must_use]
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The refusal a wire byte stands for.
    #[must_use]
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Refusal::Busy),
            2 => Some(Refusal::Dropped),
            _ => None,
        }
    }
}

/// How a request of ours ended, remembered for a while to judge answers to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Answered,
    Stalled,
    GivenUp,
}

/// Requests remembered after they ended.
const RECENT: usize = 1024;

/// What an answer (response or refusal) to one of our requests means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The answer to a request waiting for it.
    Expected,
    /// An answer to a request its caller gave up on: dropped quietly.
    Ignored,
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
    recent: VecDeque<(u32, Ended)>,
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

    fn remove(&mut self, request_id: u32, how: Ended) -> Option<Pending> {
        let p = self.pending.remove(&request_id)?;
        if let Some(d) = p.deadline {
            self.deadlines.remove(&(d, request_id));
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((request_id, how));
        Some(p)
    }

    /// An answer (response or refusal) arrived on `channel` for `request_id`. The
    /// remote's faults: an answer to a request already answered
    /// ([`DisconnectReason::DuplicateResponse`]), to one that stalled
    /// ([`DisconnectReason::LateResponse`]), or to nothing we asked on that channel
    /// ([`DisconnectReason::UnexpectedResponse`]).
    pub fn on_answer(&mut self, channel: u8, request_id: u32) -> Result<Answer, DisconnectReason> {
        match self.pending.get(&request_id) {
            Some(p) if p.channel == channel => {
                self.remove(request_id, Ended::Answered);
                return Ok(Answer::Expected);
            }
            Some(_) => {}
            None => match self.recent.iter().rev().find(|(id, _)| *id == request_id) {
                Some((_, Ended::GivenUp)) => return Ok(Answer::Ignored),
                Some((_, Ended::Answered)) => {
                    return Err(DisconnectReason::DuplicateResponse {
                        channel,
                        request_id,
                    })
                }
                Some((_, Ended::Stalled)) => {
                    return Err(DisconnectReason::LateResponse {
                        channel,
                        request_id,
                    })
                }
                None => {}
            },
        }
        Err(DisconnectReason::UnexpectedResponse {
            channel,
            request_id,
        })
    }

    /// The caller gave up on the request (an answer to it is then dropped quietly).
    pub fn cancel(&mut self, request_id: u32) {
        self.remove(request_id, Ended::GivenUp);
    }

    /// Our requests waiting for an answer on `channel`.
    #[must_use]
    pub fn in_flight(&self, channel: u8) -> usize {
        self.pending
            .values()
            .filter(|p| p.channel == channel)
            .count()
    }

    /// Gives up every request on `channel` (its service went away); returns their ids.
    pub fn cancel_channel(&mut self, channel: u8) -> Vec<u32> {
        let ids: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.channel == channel)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.remove(*id, Ended::GivenUp);
        }
        ids
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
        let p = self.remove(id, Ended::Stalled)?;
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

/// The remote's requests our services hold, per channel.
#[derive(Debug, Default)]
pub struct InboundRequests {
    open: HashSet<(u8, u32)>,
}

/// What to do with a request from the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Hand it to the service.
    Deliver,
    /// Refuse it at once: the service holds `cap` requests of that channel.
    Busy,
}

impl InboundRequests {
    /// A request arrived on `channel`; our service holds at most `cap` there. A
    /// request id already held is the remote's fault
    /// ([`DisconnectReason::DuplicateRequest`]).
    pub fn on_request(
        &mut self,
        channel: u8,
        request_id: u32,
        cap: usize,
    ) -> Result<Admit, DisconnectReason> {
        if self.open.contains(&(channel, request_id)) {
            return Err(DisconnectReason::DuplicateRequest {
                channel,
                request_id,
            });
        }
        if self.open.iter().filter(|(c, _)| *c == channel).count() >= cap {
            return Ok(Admit::Busy);
        }
        self.open.insert((channel, request_id));
        Ok(Admit::Deliver)
    }

    /// Whether the request is held (and may be answered).
    #[must_use]
    pub fn is_open(&self, channel: u8, request_id: u32) -> bool {
        self.open.contains(&(channel, request_id))
    }

    /// The request was answered (or refused): no longer held.
    pub fn close(&mut self, channel: u8, request_id: u32) {
        self.open.remove(&(channel, request_id));
    }

    /// Forgets every request held on `channel` (its service went away).
    pub fn clear_channel(&mut self, channel: u8) {
        self.open.retain(|(c, _)| *c != channel);
    }

    /// Requests held, all channels.
    #[must_use]
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether none is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
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
        assert_eq!(s.on_answer(1, a), Ok(Answer::Expected));
        assert_eq!(
            s.on_answer(1, a),
            Err(DisconnectReason::DuplicateResponse {
                channel: 1,
                request_id: a
            })
        );
        assert_eq!(
            s.on_answer(2, b),
            Err(DisconnectReason::UnexpectedResponse {
                channel: 2,
                request_id: b
            })
        );
        assert_eq!(s.in_flight(1), 1);
        s.cancel(b);
        assert_eq!(s.on_answer(1, b), Ok(Answer::Ignored), "given up: dropped");
        assert_eq!(s.on_tick(t + S * 5), None);
        let c = s.register(1, S);
        s.on_written(t, c);
        assert!(s.on_tick(t + S * 2).is_some());
        assert_eq!(
            s.on_answer(1, c),
            Err(DisconnectReason::LateResponse {
                channel: 1,
                request_id: c
            })
        );
        assert_eq!(
            s.on_answer(1, 5000),
            Err(DisconnectReason::UnexpectedResponse {
                channel: 1,
                request_id: 5000
            })
        );
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

    #[test]
    fn inbound_requests_are_bounded_per_channel_and_never_held_twice() {
        let mut r = InboundRequests::default();
        assert_eq!(r.on_request(1, 10, 2), Ok(Admit::Deliver));
        assert_eq!(r.on_request(1, 11, 2), Ok(Admit::Deliver));
        assert_eq!(r.on_request(1, 12, 2), Ok(Admit::Busy));
        assert_eq!(
            r.on_request(2, 12, 2),
            Ok(Admit::Deliver),
            "another channel"
        );
        assert!(matches!(
            r.on_request(1, 10, 2),
            Err(DisconnectReason::DuplicateRequest { .. })
        ));
        r.close(1, 10);
        assert!(!r.is_open(1, 10) && r.is_open(1, 11));
        assert_eq!(r.on_request(1, 12, 2), Ok(Admit::Deliver));
        r.clear_channel(1);
        assert_eq!(r.len(), 1);
    }
}
