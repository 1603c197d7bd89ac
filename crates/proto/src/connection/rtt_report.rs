//! [`RttReport`]: which of a connection's round-trip times the runtime passes on to
//! the node-wide side (the Switch keeps low-latency peers from eviction with them).
//!
//! The core measures a round trip per answered ping
//! ([`PeerCore::rtt_sample`](super::PeerCore::rtt_sample)). Passing each one on would
//! cost a message per ping per peer for nothing: the report keeps the lowest time
//! measured since the last one it passed on, and passes one on at most once per
//! interval (the ping interval). A time that waits is not lost: it goes with the next
//! report, unless a lower one came after it.

use std::time::{Duration, Instant};

/// Round-trip times not yet passed on (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct RttReport {
    /// Shortest time between two reports.
    interval: Duration,
    /// Samples the core had measured when last looked at.
    seen: u64,
    /// The lowest sample since the last report.
    lowest: Option<Duration>,
    /// When the last report went.
    sent_at: Option<Instant>,
}

impl RttReport {
    /// Reports at most once per `interval`.
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        RttReport {
            interval,
            seen: 0,
            lowest: None,
            sent_at: None,
        }
    }

    /// Looks at the core's latest `sample` (the last time and how many were measured
    /// so far, as `rtt_sample` gives them) at `now`: the time to pass on now, if any.
    #[must_use]
    pub fn poll(&mut self, now: Instant, sample: Option<(Duration, u64)>) -> Option<Duration> {
        let (rtt, samples) = sample?;
        if samples == self.seen {
            return None;
        }
        self.seen = samples;
        let lowest = self.lowest.map_or(rtt, |l| l.min(rtt));
        if self
            .sent_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.interval)
        {
            self.lowest = Some(lowest);
            return None;
        }
        self.lowest = None;
        self.sent_at = Some(now);
        Some(lowest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn the_first_sample_goes_at_once_and_nothing_without_a_new_one() {
        let t = t0();
        let mut r = RttReport::new(10 * SEC);
        assert_eq!(r.poll(t, None), None);
        assert_eq!(r.poll(t, Some((ms(5), 1))), Some(ms(5)));
        // The same sample again (no new round trip): nothing, even much later.
        assert_eq!(r.poll(t + 60 * SEC, Some((ms(5), 1))), None);
    }

    #[test]
    fn at_most_one_report_per_interval_with_the_lowest_time_since_the_last() {
        let t = t0();
        let mut r = RttReport::new(10 * SEC);
        assert_eq!(r.poll(t, Some((ms(9), 1))), Some(ms(9)));
        // Within the interval: held back, the lowest kept.
        assert_eq!(r.poll(t + SEC, Some((ms(7), 2))), None);
        assert_eq!(r.poll(t + 2 * SEC, Some((ms(3), 3))), None);
        assert_eq!(r.poll(t + 3 * SEC, Some((ms(8), 4))), None);
        // The interval is over: the next new sample brings the lowest with it.
        assert_eq!(r.poll(t + 10 * SEC, Some((ms(6), 5))), Some(ms(3)));
        // And the lowest starts over.
        assert_eq!(r.poll(t + 21 * SEC, Some((ms(12), 6))), Some(ms(12)));
    }

    #[test]
    fn a_clock_that_goes_backwards_holds_reports_back() {
        let t = t0() + 60 * SEC;
        let mut r = RttReport::new(10 * SEC);
        assert_eq!(r.poll(t, Some((ms(4), 1))), Some(ms(4)));
        assert_eq!(r.poll(t - SEC, Some((ms(2), 2))), None);
        assert_eq!(r.poll(t + 10 * SEC, Some((ms(5), 3))), Some(ms(2)));
    }
}
