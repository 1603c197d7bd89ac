//! [`BookConfig`]: the address book's table sizes, limits and secrets.

use std::collections::HashSet;
use std::time::Duration;

use switchyard_proto::NodeId;

/// How the address book is shaped. [`BookConfig::new`] gives the defaults (the sizes
/// of CometBFT's book); tests shrink the tables to see eviction.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BookConfig {
    /// The node's secret for bucket placement (keep it secret and stable across
    /// restarts: an attacker who knows it can aim addresses at chosen buckets).
    pub key: [u8; 32],
    /// Seed of the book's random choices (selection, sampling).
    pub seed: u64,
    /// Buckets of the new table (default 256).
    pub new_buckets: usize,
    /// Buckets of the tried table (default 64).
    pub tried_buckets: usize,
    /// Entries per bucket, both tables (default 64).
    pub bucket_size: usize,
    /// New buckets one source group can reach (default 32): every address gossiped by
    /// sources of one group lands in at most this many of the `new_buckets`.
    pub new_buckets_per_source_group: usize,
    /// Tried buckets the addresses of one group can reach (default 8).
    pub tried_buckets_per_group: usize,
    /// Reject non-routable addresses (private, loopback, link-local, documentation…).
    /// Off for local testnets, which live on loopback.
    pub strict: bool,
    /// Peers that are never stored or shared (config's private peer ids).
    pub private_ids: HashSet<NodeId>,
    /// Failed dial attempts (since the last success) after which an address is bad
    /// (default 10).
    pub max_attempts: u32,
    /// How long a bad address stays (unselected and unshared) before it is forgotten
    /// (default 1 hour).
    pub bad_for: Duration,
    /// Share of the good addresses that [`sample`](super::AddrBook::sample) returns,
    /// in percent (default 23, as CometBFT), so one answer never shows the whole book.
    pub share_percent: usize,
    /// The smallest sample worth sending when the book has that many (default 32).
    pub min_share: usize,
}

impl BookConfig {
    /// The defaults with the node's secret `key` and random `seed`.
    #[must_use]
    pub fn new(key: [u8; 32], seed: u64) -> Self {
        BookConfig {
            key,
            seed,
            new_buckets: 256,
            tried_buckets: 64,
            bucket_size: 64,
            new_buckets_per_source_group: 32,
            tried_buckets_per_group: 8,
            strict: true,
            private_ids: HashSet::new(),
            max_attempts: 10,
            bad_for: Duration::from_secs(3600),
            share_percent: 23,
            min_share: 32,
        }
    }

    /// Non-strict: loopback and private addresses are accepted (local testnets). On one
    /// loopback address every node shares one group, so the new table holds at most
    /// `bucket_size` (64) of them from one source group and the tried table
    /// `tried_buckets_per_group × bucket_size` (512): plenty for a local testnet.
    #[must_use]
    pub fn lenient(mut self) -> Self {
        self.strict = false;
        self
    }

    /// The same with tables of `new_buckets` and `tried_buckets` buckets of
    /// `bucket_size` entries (the per-group spreads are clamped to the table sizes).
    #[must_use]
    pub fn with_tables(
        mut self,
        new_buckets: usize,
        tried_buckets: usize,
        bucket_size: usize,
    ) -> Self {
        self.new_buckets = new_buckets.max(1);
        self.tried_buckets = tried_buckets.max(1);
        self.bucket_size = bucket_size.max(1);
        self
    }

    pub(crate) fn normalized(mut self) -> Self {
        self.new_buckets = self.new_buckets.max(1);
        self.tried_buckets = self.tried_buckets.max(1);
        self.bucket_size = self.bucket_size.max(1);
        self.new_buckets_per_source_group =
            self.new_buckets_per_source_group.clamp(1, self.new_buckets);
        self.tried_buckets_per_group = self.tried_buckets_per_group.clamp(1, self.tried_buckets);
        self.max_attempts = self.max_attempts.max(1);
        self.share_percent = self.share_percent.clamp(1, 100);
        self
    }
}
