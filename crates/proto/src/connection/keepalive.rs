//! The keepalive: pings with unpredictable nonces, pong matching, the pong and idle
//! deadlines, and limits on the pings and pongs a remote may send.
//!
//! * Every `ping_interval` a `Ping` goes out carrying a nonce derived from a
//!   per-connection secret (SHA-256 of the secret and a counter). Only a `Pong` that
//!   echoes that nonce answers it, so a remote that never reads our pings cannot keep
//!   the connection alive by sending pongs: it is closed with `PongTimeout` at most
//!   `ping_interval + pong_timeout` after its last answered ping, whatever it sends.
//! * The pong deadline runs from the moment the ping is queued, not written: a remote
//!   that stops reading fills our socket so the ping never leaves, and that must not
//!   stop the clock.
//! * A remote's pings are answered with a `Pong` echoing the newest nonce; pings that
//!   arrive before the pong is written collapse into one answer. More than
//!   [`MAX_PINGS`] pings in a [`FLOOD_WINDOW`] close the peer with `TooManyPings`; more
//!   than [`MAX_UNSOLICITED_PONGS`] pongs that answer nothing close it with
//!   `TooManyPongs`. A node following this protocol sends at most one ping per
//!   `ping_interval` (at least 100 ms) and a pong only to answer a ping.
//! * Anything received restarts the idle deadline (`IdleTimeout`).
//! * Right after the handshake one *probe* ping measures the round-trip time of the
//!   idle path (flow control paces window growth by it, see
//!   [`flow`](super::flow)). A probe has no pong deadline: a remote that does not
//!   answer it is closed by the first regular ping, as it would be without a probe.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::rate::EventLimit;
use crate::reason::DisconnectReason;

/// Most pings a remote may send in one [`FLOOD_WINDOW`].
pub const MAX_PINGS: u32 = 20;
/// Most pongs answering no ping of ours a remote may send in one [`FLOOD_WINDOW`].
pub const MAX_UNSOLICITED_PONGS: u32 = 20;
/// The window of the ping and pong limits.
pub const FLOOD_WINDOW: Duration = Duration::from_secs(1);

/// Ping, pong and idle deadlines of one connection (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Keepalive {
    ping_interval: Duration,
    pong_timeout: Duration,
    idle_timeout: Duration,
    secret: [u8; 16],
    counter: u64,
    next_ping: Instant,
    /// Nonce of our unanswered ping and when it was queued.
    outstanding: Option<(u64, Instant)>,
    /// The outstanding ping is a probe (no pong deadline).
    probe: bool,
    /// When the outstanding ping was written (for the round-trip time).
    written: Option<Instant>,
    /// A ping of ours to hand to the writer.
    ping_due: Option<u64>,
    /// The nonce to echo in our next pong.
    pong_due: Option<u64>,
    last_recv: Instant,
    rtt: Option<Duration>,
    /// Round trips measured so far.
    rtt_samples: u64,
    pings: EventLimit,
    pongs: EventLimit,
}

impl Keepalive {
    /// Starts at `now` (the first ping goes out after `ping_interval`). `secret` keys
    /// the ping nonces: pass random bytes.
    #[must_use]
    pub fn new(
        now: Instant,
        ping_interval: Duration,
        pong_timeout: Duration,
        idle_timeout: Duration,
        secret: [u8; 16],
    ) -> Self {
        Keepalive {
            ping_interval,
            pong_timeout,
            idle_timeout,
            secret,
            counter: 0,
            next_ping: now + ping_interval,
            outstanding: None,
            probe: false,
            written: None,
            ping_due: None,
            pong_due: None,
            last_recv: now,
            rtt: None,
            rtt_samples: 0,
            pings: EventLimit::new(now, MAX_PINGS, FLOOD_WINDOW),
            pongs: EventLimit::new(now, MAX_UNSOLICITED_PONGS, FLOOD_WINDOW),
        }
    }

    fn nonce(&mut self) -> u64 {
        self.counter += 1;
        let digest = Sha256::new()
            .chain_update(self.secret)
            .chain_update(self.counter.to_be_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }

    /// Something arrived: the idle deadline starts again.
    pub fn on_receive(&mut self, now: Instant) {
        self.last_recv = self.last_recv.max(now);
    }

    /// The remote pinged us: answer with its nonce (replacing an unwritten answer).
    pub fn on_ping(&mut self, now: Instant, nonce: u64) -> Result<(), DisconnectReason> {
        if !self.pings.hit(now) {
            return Err(DisconnectReason::TooManyPings {
                limit: self.pings.limit(),
                window_ms: duration_ms(self.pings.window()),
            });
        }
        self.pong_due = Some(nonce);
        Ok(())
    }

    /// A pong arrived: it answers our ping only if it echoes its nonce.
    pub fn on_pong(&mut self, now: Instant, nonce: u64) -> Result<(), DisconnectReason> {
        match self.outstanding {
            Some((expected, queued)) if expected == nonce => {
                self.outstanding = None;
                self.probe = false;
                let sent = self.written.take().unwrap_or(queued);
                self.rtt = Some(now.saturating_duration_since(sent));
                self.rtt_samples += 1;
                Ok(())
            }
            _ if self.pongs.hit(now) => Ok(()),
            _ => Err(DisconnectReason::TooManyPongs {
                limit: self.pongs.limit(),
                window_ms: duration_ms(self.pongs.window()),
            }),
        }
    }

    /// Our ping was written to the socket at `now` (refines the round-trip time).
    pub fn on_ping_written(&mut self, now: Instant) {
        if self.outstanding.is_some() && self.written.is_none() {
            self.written = Some(now);
        }
    }

    /// A ping for the writer, once per interval.
    pub fn take_ping(&mut self) -> Option<u64> {
        self.ping_due.take()
    }

    /// A pong for the writer.
    pub fn take_pong(&mut self) -> Option<u64> {
        self.pong_due.take()
    }

    /// Whether a ping or a pong waits for the writer.
    #[must_use]
    pub fn has_transmit(&self) -> bool {
        self.ping_due.is_some() || self.pong_due.is_some()
    }

    fn pong_deadline(&self) -> Option<Instant> {
        self.outstanding
            .filter(|_| !self.probe)
            .map(|(_, queued)| queued + self.pong_timeout)
    }

    /// Queues a new ping of ours (replacing an unanswered probe).
    fn start_ping(&mut self, now: Instant, probe: bool) {
        let nonce = self.nonce();
        self.outstanding = Some((nonce, now));
        self.probe = probe;
        self.written = None;
        self.ping_due = Some(nonce);
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout) has
    /// something to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        let mut next = self.next_ping.min(self.last_recv + self.idle_timeout);
        if let Some(p) = self.pong_deadline() {
            next = next.min(p);
        }
        next
    }

    /// Acts on the deadlines due at `now`: queues a ping, or says why to close.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), DisconnectReason> {
        if self.pong_deadline().is_some_and(|d| d <= now) {
            return Err(DisconnectReason::PongTimeout);
        }
        if self.last_recv + self.idle_timeout <= now {
            return Err(DisconnectReason::IdleTimeout);
        }
        if self.next_ping <= now {
            self.next_ping = now + self.ping_interval;
            if self.outstanding.is_none() || self.probe {
                self.start_ping(now, false);
            }
        }
        Ok(())
    }

    /// Queues a ping now (to measure the round trip), unless one is outstanding.
    pub fn ping_now(&mut self, now: Instant) {
        if self.outstanding.is_none() || self.probe {
            self.start_ping(now, false);
            self.next_ping = now + self.ping_interval;
        }
    }

    /// Queues a probe ping now, unless a ping is outstanding: its pong gives a
    /// round-trip time, and no pong deadline runs for it (see the [module
    /// docs](self)).
    pub fn probe(&mut self, now: Instant) {
        if self.outstanding.is_none() {
            self.start_ping(now, true);
        }
    }

    /// Whether a ping of ours waits for its pong.
    #[must_use]
    pub fn awaiting_pong(&self) -> bool {
        self.outstanding.is_some()
    }

    /// Round-trip time of the last answered ping (from when it was written).
    #[must_use]
    pub fn last_rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// How many round trips were measured so far (a new [`last_rtt`](Self::last_rtt)
    /// each).
    #[must_use]
    pub fn rtt_samples(&self) -> u64 {
        self.rtt_samples
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

    fn keepalive(t: Instant) -> Keepalive {
        Keepalive::new(t, ms(100), ms(50), ms(1000), [7; 16])
    }

    #[test]
    fn pings_on_interval_and_closes_on_missing_pong() {
        let t = t0();
        let mut k = keepalive(t);
        assert_eq!(k.poll_timeout(), t + ms(100));
        k.handle_timeout(t + ms(99)).unwrap();
        assert_eq!(k.take_ping(), None);
        k.handle_timeout(t + ms(100)).unwrap();
        assert!(k.take_ping().is_some());
        assert_eq!(k.poll_timeout(), t + ms(150));
        assert_eq!(
            k.handle_timeout(t + ms(150)),
            Err(DisconnectReason::PongTimeout)
        );
    }

    #[test]
    fn a_probe_measures_the_round_trip_and_has_no_deadline() {
        let t = t0();
        // Answered: the round trip is known, and the regular ping comes on time.
        let mut k = keepalive(t);
        k.probe(t);
        let nonce = k.take_ping().expect("the probe goes out");
        k.on_ping_written(t + ms(1));
        assert_eq!(
            k.poll_timeout(),
            t + ms(100),
            "no pong deadline for a probe"
        );
        k.on_pong(t + ms(3), nonce).unwrap();
        assert_eq!(k.last_rtt(), Some(ms(2)));
        assert!(!k.awaiting_pong());
        // Unanswered: nothing closes until the first regular ping goes unanswered,
        // and a late answer to the probe then answers nothing.
        let mut k = keepalive(t);
        k.probe(t);
        let probe = k.take_ping().expect("the probe goes out");
        k.handle_timeout(t + ms(99)).unwrap();
        k.handle_timeout(t + ms(100)).unwrap();
        let ping = k.take_ping().expect("the regular ping replaces the probe");
        assert_ne!(ping, probe);
        k.on_pong(t + ms(120), probe).unwrap();
        assert!(
            k.awaiting_pong(),
            "the probe's pong does not answer the ping"
        );
        assert_eq!(
            k.handle_timeout(t + ms(150)),
            Err(DisconnectReason::PongTimeout)
        );
    }

    #[test]
    fn only_the_echoed_nonce_answers() {
        let t = t0();
        let mut k = keepalive(t);
        k.handle_timeout(t + ms(100)).unwrap();
        let nonce = k.take_ping().unwrap();
        k.on_ping_written(t + ms(101));
        k.on_pong(t + ms(110), nonce ^ 1).unwrap();
        k.on_pong(t + ms(110), 0).unwrap();
        assert!(k.awaiting_pong(), "a wrong nonce answers nothing");
        k.on_pong(t + ms(121), nonce).unwrap();
        assert!(!k.awaiting_pong());
        assert_eq!(k.last_rtt(), Some(ms(20)), "from when it was written");
        k.handle_timeout(t + ms(200)).unwrap();
        let next = k.take_ping().unwrap();
        assert_ne!(next, nonce, "every ping has its own nonce");
        let mut other = Keepalive::new(t, ms(100), ms(50), ms(1000), [8; 16]);
        other.handle_timeout(t + ms(100)).unwrap();
        assert_ne!(
            other.take_ping(),
            Some(nonce),
            "nonces depend on the secret"
        );
    }

    #[test]
    fn pings_coalesce_and_floods_close() {
        let t = t0();
        let mut k = keepalive(t);
        k.on_ping(t, 1).unwrap();
        k.on_ping(t, 2).unwrap();
        assert_eq!(k.take_pong(), Some(2), "one answer, the newest nonce");
        assert_eq!(k.take_pong(), None);
        for i in 2..MAX_PINGS {
            k.on_ping(t, u64::from(i)).unwrap();
        }
        assert!(matches!(
            k.on_ping(t, 99),
            Err(DisconnectReason::TooManyPings { limit: 20, .. })
        ));
        let mut k = keepalive(t);
        for _ in 0..MAX_UNSOLICITED_PONGS {
            k.on_pong(t, 5).unwrap();
        }
        assert!(matches!(
            k.on_pong(t, 5),
            Err(DisconnectReason::TooManyPongs { .. })
        ));
        // The next window starts afresh.
        let mut k = keepalive(t);
        for i in 0..MAX_PINGS * 5 {
            k.on_ping(t + FLOOD_WINDOW * i / MAX_PINGS, 1).unwrap();
        }
    }

    #[test]
    fn idle_closes_without_traffic_and_receive_resets_it() {
        let t = t0();
        let mut k = Keepalive::new(t, ms(1000), ms(500), ms(300), [0; 16]);
        k.on_receive(t + ms(200));
        k.handle_timeout(t + ms(400)).unwrap();
        assert_eq!(k.poll_timeout(), t + ms(500));
        assert_eq!(
            k.handle_timeout(t + ms(500)),
            Err(DisconnectReason::IdleTimeout)
        );
    }
}
