//! [`Exchange`]: the decisions of the PEX service, pure (time comes in, nothing is
//! read from the clock or the network): whether a peer may ask now, what to answer
//! it, whether to let it go after the answer (seed mode), and what to do with the
//! addresses a peer gave us.
//!
//! * **Rate.** A peer may send one [`GetAddrs`](crate::wire::GetAddrs) per
//!   [`min_request_interval`](ExchangeConfig::min_request_interval); one sooner is a
//!   [`Fault::TooSoon`]. The memory of when a node last asked outlives its
//!   connection, so reconnecting does not reset it.
//! * **Answers** are a random sample of the book ([`AddrBook::sample`]), at most
//!   [`max_answer`](ExchangeConfig::max_answer) addresses, never the asker's own.
//!   In [seed mode](ExchangeConfig::seed_mode) an inbound asker is disconnected once
//!   answered.
//! * **Learning.** Each address of an answer goes to the book's new table attributed
//!   to the IP of the peer that gave it. The wire decoder has already refused
//!   oversized and malformed answers ([`wire`](crate::wire)); the book may still
//!   refuse single entries (ours, private, re-pointing a known id, strict mode), which
//!   are counted, not punished: an honest peer's book may hold what ours does not
//!   take.
//! * **Unsolicited answers** cannot reach this code: an answer travels as the
//!   response to one of our requests, and the runtime closes a peer that sends a
//!   response to no request of ours (`DisconnectReason::UnexpectedResponse`), a second
//!   one (`DuplicateResponse`) or a late one (`LateResponse`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use switchyard_proto::NodeId;

use crate::addr::NetAddr;
use crate::book::{Added, AddrBook};
use crate::wire::MAX_ADDRS;

/// How the PEX service behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExchangeConfig {
    /// How often we ask one peer for addresses at most (default 30 s). The peer
    /// manager keeps to it.
    pub request_interval: Duration,
    /// How soon after its last request a peer may ask again (default three quarters
    /// of `request_interval`, so a peer keeping to the same interval is never caught
    /// by jitter or latency).
    pub min_request_interval: Duration,
    /// Most addresses in one answer (default and at most [`MAX_ADDRS`]).
    pub max_answer: usize,
    /// How long we wait for an answer once the request is written (default 10 s);
    /// no answer in time closes the peer as stalled.
    pub request_timeout: Duration,
    /// Seed mode: answer an inbound peer's first request, then disconnect it.
    pub seed_mode: bool,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        ExchangeConfig::with_interval(Duration::from_secs(30))
    }
}

impl ExchangeConfig {
    /// The defaults with `request_interval` (and `min_request_interval` three quarters
    /// of it).
    #[must_use]
    pub fn with_interval(request_interval: Duration) -> Self {
        ExchangeConfig {
            request_interval,
            min_request_interval: request_interval - request_interval / 4,
            max_answer: MAX_ADDRS,
            request_timeout: Duration::from_secs(10),
            seed_mode: false,
        }
    }

    /// The same in seed mode.
    #[must_use]
    pub fn seed(mut self) -> Self {
        self.seed_mode = true;
        self
    }
}

/// A peer broke the PEX protocol; the service closes it with
/// `DisconnectReason::Misbehavior` quoting this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fault {
    /// It asked again sooner than allowed.
    #[error("pex: asked for addresses again after {since:?} (at most once per {min:?})")]
    TooSoon {
        /// Time since its previous request.
        since: Duration,
        /// The allowed interval.
        min: Duration,
    },
    /// Its answer could not be used (oversized, malformed or an undialable address):
    /// the runtime's decoder said why.
    #[error("pex: bad answer: {0}")]
    BadAnswer(String),
}

impl Fault {
    /// Points to report on top of the close: closing with a misbehaviour reason
    /// already counts as `Severity::Major` against the peer; a bad answer (which no
    /// honest node sends: its own book refuses what ours refuses) adds another
    /// `Major`, so it alone reaches the default ban threshold, while a request too
    /// soon (possibly a peer with another interval) does not.
    #[must_use]
    pub fn extra_report(&self) -> Option<switchyard_proto::switch::Severity> {
        match self {
            Fault::TooSoon { .. } => None,
            Fault::BadAnswer(_) => Some(switchyard_proto::switch::Severity::Major),
        }
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The addresses to send.
    pub addrs: Vec<NetAddr>,
    /// Disconnect the peer once the answer is queued (seed mode, inbound peer).
    pub then_disconnect: bool,
}

/// What an answer taught the book.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Learned {
    /// New addresses filed.
    pub added: usize,
    /// Addresses the book knew at that address already.
    pub known: usize,
    /// Addresses the book refused (ours, private, re-pointing, strict mode).
    pub refused: usize,
}

/// Remembered request times beyond which old ones are pruned.
const PRUNE_AT: usize = 4096;

/// The PEX decisions. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Exchange {
    cfg: ExchangeConfig,
    last_request: HashMap<NodeId, Instant>,
}

impl Exchange {
    /// No request seen yet.
    #[must_use]
    pub fn new(cfg: ExchangeConfig) -> Self {
        Exchange {
            cfg,
            last_request: HashMap::new(),
        }
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &ExchangeConfig {
        &self.cfg
    }

    /// `peer` (connected `inbound` or not) asks for addresses at `now`: the answer
    /// from `book`, or the fault that closes it.
    ///
    /// # Errors
    ///
    /// [`Fault::TooSoon`] when it asked within
    /// [`min_request_interval`](ExchangeConfig::min_request_interval).
    pub fn on_request(
        &mut self,
        now: Instant,
        book: &mut AddrBook,
        peer: NodeId,
        inbound: bool,
    ) -> Result<Answer, Fault> {
        let min = self.cfg.min_request_interval;
        if let Some(&last) = self.last_request.get(&peer) {
            let since = now.saturating_duration_since(last);
            if since < min {
                return Err(Fault::TooSoon { since, min });
            }
        }
        if self.last_request.len() >= PRUNE_AT {
            self.last_request
                .retain(|_, t| now.saturating_duration_since(*t) < min);
        }
        self.last_request.insert(peer, now);
        let max = self.cfg.max_answer.min(MAX_ADDRS);
        let mut addrs = book.sample(now, max.saturating_add(1));
        addrs.retain(|a| a.id != peer);
        addrs.truncate(max);
        Ok(Answer {
            addrs,
            then_disconnect: self.cfg.seed_mode && inbound,
        })
    }

    /// Files the addresses of an answer from the peer at `src` in `book`.
    pub fn learn(
        &mut self,
        now: Instant,
        book: &mut AddrBook,
        src: IpAddr,
        addrs: &[NetAddr],
    ) -> Learned {
        let mut out = Learned::default();
        for a in addrs {
            match book.add_address(now, *a, src) {
                Ok(Added::New { .. }) => out.added += 1,
                Ok(Added::Known) => out.known += 1,
                Err(_) => out.refused += 1,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::BookConfig;

    fn id(n: u8) -> NodeId {
        NodeId([n; 20])
    }

    fn addr(n: u8) -> NetAddr {
        NetAddr::new(id(n), format!("20.{n}.0.1:26656").parse().unwrap())
    }

    fn book_with(n: u8, now: Instant) -> AddrBook {
        let mut book = AddrBook::new(BookConfig::new([1; 32], 7));
        for i in 1..=n {
            book.add_address(now, addr(i), "30.0.0.1".parse().unwrap())
                .unwrap();
        }
        book
    }

    #[test]
    fn one_request_per_interval_per_peer() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut book = book_with(5, t0);
        let mut x = Exchange::new(ExchangeConfig::with_interval(Duration::from_secs(8)));
        assert_eq!(x.config().min_request_interval, Duration::from_secs(6));
        assert!(x.on_request(t0, &mut book, id(1), false).is_ok());
        // Another peer is not affected.
        assert!(x.on_request(t0, &mut book, id(2), false).is_ok());
        let err = x
            .on_request(t0 + Duration::from_secs(5), &mut book, id(1), false)
            .unwrap_err();
        assert_eq!(
            err,
            Fault::TooSoon {
                since: Duration::from_secs(5),
                min: Duration::from_secs(6)
            }
        );
        assert!(err.to_string().contains("at most once per 6s"), "{err}");
        assert_eq!(err.extra_report(), None);
        // The refused request does not restart the clock.
        assert!(x
            .on_request(t0 + Duration::from_secs(6), &mut book, id(1), false)
            .is_ok());
    }

    #[test]
    fn answers_never_hold_the_asker_and_are_bounded() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut book = book_with(40, t0);
        let cfg = ExchangeConfig {
            max_answer: 10,
            ..ExchangeConfig::default()
        };
        let mut x = Exchange::new(cfg);
        for i in 1..=40u8 {
            let a = x.on_request(t0, &mut book, id(i), false).unwrap();
            assert!(a.addrs.len() <= 10 && !a.addrs.is_empty());
            assert!(a.addrs.iter().all(|a| a.id != id(i)));
            assert!(!a.then_disconnect);
        }
        // The bound of the wire holds whatever the config says.
        let cfg = ExchangeConfig {
            max_answer: 10_000,
            ..ExchangeConfig::default()
        };
        let mut big = AddrBook::new(BookConfig::new([2; 32], 1).lenient());
        for i in 0..2000u32 {
            let ip = std::net::Ipv4Addr::from(0x1400_0000 + i * 70_000);
            let mut raw = [0u8; 20];
            raw[..4].copy_from_slice(&i.to_be_bytes());
            let _ = big.add_address(
                t0,
                NetAddr::new(NodeId(raw), (ip, 1000).into()),
                IpAddr::V4(ip),
            );
        }
        let mut x = Exchange::new(cfg);
        let a = x.on_request(t0, &mut big, id(1), false).unwrap();
        assert_eq!(a.addrs.len(), MAX_ADDRS);
    }

    #[test]
    fn a_seed_lets_inbound_askers_go_after_one_answer() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut book = book_with(3, t0);
        let mut x = Exchange::new(ExchangeConfig::default().seed());
        assert!(
            x.on_request(t0, &mut book, id(9), true)
                .unwrap()
                .then_disconnect
        );
        // A peer the seed dialed itself (crawling) is not cut off by the answer.
        assert!(
            !x.on_request(t0, &mut book, id(8), false)
                .unwrap()
                .then_disconnect
        );
    }

    #[test]
    fn learned_addresses_are_attributed_to_their_source() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut book = book_with(1, t0);
        let mut x = Exchange::new(ExchangeConfig::default());
        let src: IpAddr = "44.4.4.4".parse().unwrap();
        // addr(1) is known, addr(2) and addr(3) new, addr(1)'s id at another address refused.
        let repoint = NetAddr::new(id(1), "21.0.0.1:1".parse().unwrap());
        let got = x.learn(t0, &mut book, src, &[addr(1), addr(2), addr(3), repoint]);
        assert_eq!(
            got,
            Learned {
                added: 2,
                known: 1,
                refused: 1
            }
        );
        assert_eq!(book.get(&id(2)).unwrap().src, src);
        assert_eq!(
            Fault::BadAnswer("x".into()).extra_report(),
            Some(switchyard_proto::switch::Severity::Major)
        );
    }

    #[test]
    fn old_request_times_are_pruned() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut book = book_with(1, t0);
        let mut x = Exchange::new(ExchangeConfig::with_interval(Duration::from_secs(4)));
        for i in 0..PRUNE_AT as u32 {
            let mut raw = [0u8; 20];
            raw[..4].copy_from_slice(&i.to_be_bytes());
            x.on_request(t0, &mut book, NodeId(raw), false).unwrap();
        }
        x.on_request(t0 + Duration::from_secs(10), &mut book, id(200), false)
            .unwrap();
        assert_eq!(x.last_request.len(), 1);
    }
}
