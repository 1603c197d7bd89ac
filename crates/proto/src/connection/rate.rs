//! Rate limiters: a token bucket for bytes per second, and a counter of events per
//! time window for packets a remote may only send now and then (pings, pongs).
//!
//! Both are plain data taking `now`; neither reads a clock.

use std::time::{Duration, Instant};

/// `rate` bytes per second with bursts of up to `burst` bytes.
///
/// [`take`](Self::take) may drive the bucket into debt (a write larger than what is
/// left still goes out whole); [`ready_at`](Self::ready_at) says when it is out of
/// debt again.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    #[must_use]
    pub fn new(now: Instant, rate: u64, burst: u64) -> Self {
        TokenBucket {
            rate: rate.max(1) as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Whole tokens available at `now` (0 while in debt).
    #[must_use]
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        if self.tokens <= 0.0 {
            0
        } else {
            self.tokens as u64
        }
    }

    /// Takes `n` tokens, going into debt if there are fewer.
    pub fn take(&mut self, now: Instant, n: u64) {
        self.refill(now);
        self.tokens -= n as f64;
    }

    /// When at least `n` tokens (at most the burst) will be available; `now` if they
    /// are already.
    #[must_use]
    pub fn ready_at(&mut self, now: Instant, n: u64) -> Instant {
        self.refill(now);
        let want = (n as f64).min(self.burst);
        if self.tokens >= want {
            return now;
        }
        // Rounded up, and one nanosecond more: at the instant returned the tokens are
        // there even after floating-point rounding. (Rounded to the nearest, a wait
        // could come out a hair short, and a driver arming its timer at it would
        // find no tokens and the same instant again, forever.)
        let wait_s = ((want - self.tokens) / self.rate).min(86_400.0);
        let wait_ns = (wait_s * 1e9).ceil() as u64 + 1;
        now + Duration::from_nanos(wait_ns).min(Duration::from_secs(86_400))
    }
}

/// At most `limit` events in any window of `window` (counted in consecutive fixed
/// windows, so a burst may straddle two of them: at most `2 × limit` in any span of
/// one window length).
#[derive(Debug, Clone)]
pub struct EventLimit {
    window: Duration,
    limit: u32,
    start: Instant,
    count: u32,
}

impl EventLimit {
    /// A limit of `limit` events per `window`, starting at `now`.
    #[must_use]
    pub fn new(now: Instant, limit: u32, window: Duration) -> Self {
        EventLimit {
            window,
            limit,
            start: now,
            count: 0,
        }
    }

    /// Counts one event at `now`; `false` when it is over the limit.
    #[must_use]
    pub fn hit(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.start) >= self.window {
            self.start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count <= self.limit
    }

    /// The limit per window.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The window.
    #[must_use]
    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    proptest::proptest! {
        /// At the instant `ready_at` names, the tokens are there: a driver that arms
        /// its timer at it never wakes to an empty bucket at the same instant.
        #[test]
        fn tokens_are_there_when_ready_at_says(
            // Debt stays well within the one-day cap on waits.
            rate in 10_000u64..10_000_000_000,
            burst in 1u64..100_000_000,
            takes in proptest::collection::vec((1u64..10_000_000, 0u64..5_000_000), 1..40),
        ) {
            let t = t0();
            let mut b = TokenBucket::new(t, rate, burst);
            let mut now = t;
            for (take, want) in takes {
                b.take(now, take);
                let want = want.clamp(1, burst);
                let at = b.ready_at(now, want);
                proptest::prop_assert!(at >= now);
                proptest::prop_assert!(b.available(at) >= want.min(burst));
                now = at;
            }
        }
    }

    #[test]
    fn steady_state_follows_the_rate() {
        let t = t0();
        let mut b = TokenBucket::new(t, 1000, 100);
        assert_eq!(b.available(t), 100, "the burst is free");
        let mut now = t;
        for _ in 0..100 {
            now = b.ready_at(now, 100);
            b.take(now, 100);
        }
        let secs = now.duration_since(t).as_secs_f64();
        assert!(
            (9.7..10.1).contains(&secs),
            "10 000 bytes at 1000/s take ~10 s, took {secs}"
        );
        b.take(now, u64::MAX);
        assert_eq!(b.available(now), 0, "huge values do not overflow");
        assert!(b.ready_at(now, 1) <= now + Duration::from_secs(86_400));
    }

    #[test]
    fn debt_is_paid_before_new_tokens() {
        let t = t0();
        let mut b = TokenBucket::new(t, 100, 100);
        b.take(t, 300);
        let t1 = t + Duration::from_secs(1);
        assert_eq!(b.available(t1), 0);
        let ready = b.ready_at(t1, 1).duration_since(t).as_secs_f64();
        assert!((2.009..2.011).contains(&ready), "{ready}");
        assert_eq!(b.available(t + Duration::from_secs(3)), 100);
    }

    #[test]
    fn events_per_window() {
        let t = t0();
        let mut l = EventLimit::new(t, 3, Duration::from_secs(1));
        assert!((0..3).all(|_| l.hit(t)));
        assert!(!l.hit(t + Duration::from_millis(999)));
        assert!(l.hit(t + Duration::from_secs(1)), "a new window");
    }
}
