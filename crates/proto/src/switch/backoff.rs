//! Exponential backoff with jitter for redials; the caller injects the randomness.
//!
//! [`Jitter`] is the small deterministic generator the [`SwitchCore`](super::SwitchCore)
//! draws from: seeded by the runtime, so a test (or a simulation) replays a run.

use std::time::Duration;

/// Delays that double from `min` up to `max`, each drawn in `[d/2, d]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff from `min` to `max`.
    #[must_use]
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay: `min * 2^attempt` capped at `max`, with "equal jitter" (uniform
    /// in `[d/2, d]`, chosen by `random`).
    #[must_use]
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        let d = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = d / 2;
        let span = (d - half).as_nanos() as u64;
        let jitter = if span == 0 { 0 } else { random % (span + 1) };
        half + Duration::from_nanos(jitter)
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Delays handed out since the last reset.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// SplitMix64: a tiny deterministic generator for jitter, seeded by the caller (not
/// cryptographic; it only spreads redials in time).
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator starting from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Jitter(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_then_caps_then_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let maxes: Vec<_> = (0..6).map(|_| b.next_delay(u64::MAX)).collect();
        assert!(maxes[0] <= Duration::from_millis(100) && maxes[0] >= Duration::from_millis(50));
        assert!(maxes[3] <= Duration::from_millis(800));
        assert!(maxes[5] <= Duration::from_secs(1));
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert!(b.next_delay(0) == Duration::from_millis(50));
    }

    proptest! {
        #[test]
        fn always_within_bounds(min_ms in 1u64..1000, extra in 0u64..100_000, rolls in proptest::collection::vec(any::<u64>(), 1..100)) {
            let (min, max) = (Duration::from_millis(min_ms), Duration::from_millis(min_ms + extra));
            let mut b = Backoff::new(min, max);
            for r in rolls {
                let d = b.next_delay(r);
                prop_assert!(d >= min / 2 && d <= max);
            }
        }
    }
}
