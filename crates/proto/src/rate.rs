//! A token bucket for per-peer send and receive rates.
//!
//! Bytes are accounted after (or just before) they move; when the bucket goes into
//! debt, [`TokenBucket::consume`] says until when the caller must pause.

use std::time::{Duration, Instant};

/// `rate` bytes per second with bursts of up to `burst` bytes.
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

    /// Accounts `bytes`. Returns the instant until which the caller must pause when the
    /// bucket went into debt, `None` while within budget.
    #[must_use]
    pub fn consume(&mut self, now: Instant, bytes: u64) -> Option<Instant> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            return None;
        }
        let wait = (-self.tokens / self.rate).min(86_400.0);
        Some(now + Duration::from_secs_f64(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_state_follows_the_rate() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0, 1000, 100);
        assert_eq!(b.consume(t0, 100), None, "the burst is free");
        let mut now = t0;
        for _ in 0..100 {
            if let Some(until) = b.consume(now, 100) {
                now = until;
            }
        }
        let secs = now.duration_since(t0).as_secs_f64();
        assert!(
            (9.9..10.1).contains(&secs),
            "10 000 bytes at 1000/s take ~10 s, took {secs}"
        );
        assert!(
            b.consume(now, u64::MAX).is_some(),
            "huge values do not overflow"
        );
    }
}
