//! The keepalive tracker: ping interval, pong timeout and idle timeout as deadlines.
//!
//! Pure: every method takes `now`. After any input, ask [`Keepalive::next_deadline`]
//! and arm one timer; on a tick call [`Keepalive::on_tick`] until it returns `None`.

use std::time::{Duration, Instant};

use crate::reason::DisconnectReason;

/// What the keepalive wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum KeepaliveAction {
    /// Send a `Ping`.
    SendPing,
    /// Close the connection with this reason.
    Close(DisconnectReason),
}

/// Ping, pong and idle deadlines of one connection.
#[derive(Debug, Clone)]
pub struct Keepalive {
    ping_interval: Duration,
    pong_timeout: Duration,
    idle_timeout: Duration,
    next_ping: Instant,
    /// When the outstanding ping was sent.
    ping_sent: Option<Instant>,
    last_recv: Instant,
    paused: bool,
    rtt: Option<Duration>,
}

impl Keepalive {
    /// Starts tracking at `now` (the first ping goes out after `ping_interval`).
    #[must_use]
    pub fn new(
        now: Instant,
        ping_interval: Duration,
        pong_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Keepalive {
            ping_interval,
            pong_timeout,
            idle_timeout,
            next_ping: now + ping_interval,
            ping_sent: None,
            last_recv: now,
            paused: false,
            rtt: None,
        }
    }

    /// Something arrived: the idle deadline starts again.
    pub fn on_receive(&mut self, now: Instant) {
        self.last_recv = self.last_recv.max(now);
    }

    /// A pong arrived: the outstanding ping is answered.
    ///
    /// Call this only for a pong that can answer a ping of ours that has been
    /// written to the socket; any other pong is just traffic
    /// ([`on_receive`](Self::on_receive)). Otherwise a peer that never reads could
    /// keep its connection alive by sending pongs nobody asked for.
    pub fn on_pong(&mut self, now: Instant) {
        self.on_receive(now);
        if let Some(sent) = self.ping_sent.take() {
            self.rtt = Some(now.saturating_duration_since(sent));
        }
    }

    /// Our own reading is paused (a slow service): the pong and idle deadlines are
    /// suspended, since the remote's packets may be sitting unread in our socket.
    pub fn pause(&mut self, _now: Instant) {
        self.paused = true;
    }

    /// Reading resumed: the pong and idle deadlines restart from `now`. (Not merely
    /// shifted by the pause: after a pause our own socket holds a backlog that is
    /// read before the remote's pong, and that time is not the remote's fault. A
    /// remote that keeps us paused is sending data, so it is alive; its rate is
    /// bounded by `recv_rate` and by the services' backpressure.)
    pub fn resume(&mut self, now: Instant) {
        self.paused = false;
        self.last_recv = self.last_recv.max(now);
        if self.ping_sent.is_some() {
            self.ping_sent = Some(now);
        }
    }

    fn pong_deadline(&self) -> Option<Instant> {
        self.ping_sent.map(|t| t + self.pong_timeout)
    }

    /// The earliest instant at which [`Keepalive::on_tick`] has something to do.
    #[must_use]
    pub fn next_deadline(&self) -> Instant {
        let mut next = self.next_ping;
        if !self.paused {
            next = next.min(self.last_recv + self.idle_timeout);
            if let Some(p) = self.pong_deadline() {
                next = next.min(p);
            }
        }
        next
    }

    /// The next due action at `now`, if any; call until `None`.
    #[must_use]
    pub fn on_tick(&mut self, now: Instant) -> Option<KeepaliveAction> {
        if !self.paused {
            if self.pong_deadline().is_some_and(|d| d <= now) {
                return Some(KeepaliveAction::Close(DisconnectReason::PongTimeout));
            }
            if self.last_recv + self.idle_timeout <= now {
                return Some(KeepaliveAction::Close(DisconnectReason::IdleTimeout));
            }
        }
        if self.next_ping <= now {
            self.next_ping = now + self.ping_interval;
            if self.ping_sent.is_none() {
                self.ping_sent = Some(now);
                return Some(KeepaliveAction::SendPing);
            }
        }
        None
    }

    /// Whether a ping of ours is waiting for its pong.
    #[must_use]
    pub fn awaiting_pong(&self) -> bool {
        self.ping_sent.is_some()
    }

    /// Round-trip time of the last answered ping.
    #[must_use]
    pub fn last_rtt(&self) -> Option<Duration> {
        self.rtt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn t0() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    #[test]
    fn pings_on_interval_and_closes_on_missing_pong() {
        let t = t0();
        let mut k = Keepalive::new(t, ms(100), ms(50), ms(1000));
        assert_eq!(k.next_deadline(), t + ms(100));
        assert_eq!(k.on_tick(t + ms(99)), None);
        assert_eq!(k.on_tick(t + ms(100)), Some(KeepaliveAction::SendPing));
        assert_eq!(k.on_tick(t + ms(100)), None);
        assert_eq!(k.next_deadline(), t + ms(150));
        assert_eq!(
            k.on_tick(t + ms(150)),
            Some(KeepaliveAction::Close(DisconnectReason::PongTimeout))
        );
    }

    #[test]
    fn pong_clears_and_measures_rtt() {
        let t = t0();
        let mut k = Keepalive::new(t, ms(100), ms(50), ms(1000));
        assert_eq!(k.on_tick(t + ms(100)), Some(KeepaliveAction::SendPing));
        assert!(k.awaiting_pong());
        k.on_pong(t + ms(120));
        assert!(!k.awaiting_pong());
        assert_eq!(k.last_rtt(), Some(ms(20)));
        assert_eq!(k.on_tick(t + ms(160)), None);
        assert_eq!(k.on_tick(t + ms(200)), Some(KeepaliveAction::SendPing));
    }

    #[test]
    fn idle_closes_without_traffic_and_receive_resets_it() {
        let t = t0();
        let mut k = Keepalive::new(t, ms(1000), ms(500), ms(300));
        k.on_receive(t + ms(200));
        assert_eq!(k.on_tick(t + ms(400)), None);
        assert_eq!(k.next_deadline(), t + ms(500));
        assert_eq!(
            k.on_tick(t + ms(500)),
            Some(KeepaliveAction::Close(DisconnectReason::IdleTimeout))
        );
    }

    #[test]
    fn pause_suspends_pong_and_idle_deadlines() {
        let t = t0();
        let mut k = Keepalive::new(t, ms(100), ms(50), ms(300));
        assert_eq!(k.on_tick(t + ms(100)), Some(KeepaliveAction::SendPing));
        k.pause(t + ms(110));
        assert_eq!(k.on_tick(t + ms(1000)), None, "no close while paused");
        k.resume(t + ms(1000));
        assert_eq!(k.on_tick(t + ms(1049)), None);
        assert_eq!(
            k.on_tick(t + ms(1050)),
            Some(KeepaliveAction::Close(DisconnectReason::PongTimeout))
        );
    }
}
