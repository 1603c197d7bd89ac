//! The **peer store**: what the node learned about other nodes, on disk in a
//! [redb](https://docs.rs/redb) database, so a restart (or a `kill -9`) loses nothing
//! that was committed.
//!
//! * Writes come in batches: [`PeerStore::apply`] commits a slice of [`Change`]s in one
//!   durable transaction. The runtime collects the book's changes
//!   ([`book_changes`]) and those of the bans and misbehaviour scores
//!   ([`StoredBans::take_changes`], through the [`SharedBans`] the Switch bans and
//!   scores with) and applies them off the network path, every few seconds or every
//!   few hundred changes.
//! * [`PeerStore::load`] returns everything, to rebuild the book with
//!   [`restore_book`] and the bans and scores with [`StoredBans::from_snapshot`].
//! * Times are unix seconds; a [`TimeAnchor`] (read once by the runtime) converts them
//!   to and from the book's `Instant`s. The store itself never reads the clock.
//! * redb commits are atomic and, with its default durability, on disk when
//!   [`apply`](PeerStore::apply) returns; after a crash the database opens at its last
//!   commit (a test kills a writer with SIGKILL mid-churn and checks this).
//!
//! ```
//! use switchyard_pex::store::{AddrRecord, Change, PeerStore, TableKind};
//!
//! let dir = std::env::temp_dir().join(format!("pex-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let store = PeerStore::open(&dir.join("peers.redb"))?;
//! let rec = AddrRecord {
//!     addr: "66687aadf862bd776c8fc18b8e9f8e2008971485@20.1.2.3:26656".parse()?,
//!     src: "31.4.5.6".parse()?,
//!     table: TableKind::New,
//!     attempts: 0,
//!     last_attempt: None,
//!     last_success: None,
//!     bad_until: None,
//!     banned_until: None,
//! };
//! store.apply(&[Change::PutAddr(rec.clone())])?;
//! assert_eq!(store.load()?.addrs, vec![rec]);
//! # drop(store);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bans;
mod record;
mod time;

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use switchyard_proto::switch::BanKey;
use switchyard_proto::NodeId;

pub use bans::{SharedBans, StoredBans};
pub use record::{AddrRecord, TableKind};
pub use time::TimeAnchor;

use crate::book::{AddrBook, Rejected};

const ADDRS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("addrs");
const BANS: TableDefinition<&[u8], u64> = TableDefinition::new("bans");
/// Misbehaviour scores: ban key to (points, unix second they are forgotten).
const SCORES: TableDefinition<&[u8], (u32, u64)> = TableDefinition::new("scores");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const BOOK_KEY: &str = "book_key";

/// One change to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// Insert or replace the record of `record.addr.id`.
    PutAddr(AddrRecord),
    /// Forget a node's address.
    RemoveAddr(NodeId),
    /// Ban `key` until `until` (unix seconds), replacing an earlier ban of the key.
    Ban {
        /// A node id or an IP.
        key: BanKey,
        /// When the ban ends, in unix seconds.
        until: u64,
    },
    /// Lift the ban of `key`.
    Unban(BanKey),
    /// Set the misbehaviour score of `score.key`, replacing an earlier one.
    Score(StoredScore),
    /// Forget the misbehaviour score of `key`.
    Unscore(BanKey),
}

/// A misbehaviour score as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredScore {
    /// A node id or an IP.
    pub key: BanKey,
    /// Points gathered.
    pub points: u32,
    /// When they are forgotten, in unix seconds.
    pub until: u64,
}

/// Everything the store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every address record, ordered by node id.
    pub addrs: Vec<AddrRecord>,
    /// Every ban with its end in unix seconds (expired ones not yet lifted included).
    pub bans: Vec<(BanKey, u64)>,
    /// Every misbehaviour score (expired ones not yet forgotten included).
    pub scores: Vec<StoredScore>,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened or created (missing directory, permissions,
    /// another process holds it): check the node's home directory.
    #[error("cannot open the peer store {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: redb::DatabaseError,
    },
    /// A read or write failed (I/O error, disk full). The batch was not committed;
    /// the caller may retry it later.
    #[error("peer store: {0}")]
    Db(#[from] redb::Error),
    /// A stored value cannot be decoded (written by an incompatible version, or
    /// damaged): delete the store to start over from the initial peers file.
    #[error("peer store: a {table} value cannot be read: {problem}")]
    Corrupt {
        /// Which table.
        table: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The peer store. See the [module docs](self).
#[derive(Debug)]
pub struct PeerStore {
    db: Database,
}

impl PeerStore {
    /// Opens the store at `path`, creating it if it does not exist (its directory must
    /// exist). A store left by a crash opens at its last commit.
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] when the file cannot be opened or created,
    /// [`StoreError::Db`] when its tables cannot be set up.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        let txn = db.begin_write()?;
        {
            txn.open_table(ADDRS)?;
            txn.open_table(BANS)?;
            txn.open_table(SCORES)?;
            txn.open_table(META)?;
        }
        txn.commit()?;
        Ok(PeerStore { db })
    }

    /// Commits `changes`, in order, in one transaction: all or none of them are
    /// stored.
    ///
    /// # Errors
    ///
    /// [`StoreError::Db`]: nothing of the batch was stored.
    pub fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut addrs = txn.open_table(ADDRS)?;
            let mut bans = txn.open_table(BANS)?;
            let mut scores = txn.open_table(SCORES)?;
            for c in changes {
                match c {
                    Change::PutAddr(rec) => {
                        addrs.insert(&rec.addr.id.0[..], &rec.encode()[..])?;
                    }
                    Change::RemoveAddr(id) => {
                        addrs.remove(&id.0[..])?;
                    }
                    Change::Ban { key, until } => {
                        bans.insert(&record::encode_ban_key(key)[..], until)?;
                    }
                    Change::Unban(key) => {
                        bans.remove(&record::encode_ban_key(key)[..])?;
                    }
                    Change::Score(s) => {
                        scores.insert(&record::encode_ban_key(&s.key)[..], (s.points, s.until))?;
                    }
                    Change::Unscore(key) => {
                        scores.remove(&record::encode_ban_key(key)[..])?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Everything the store holds.
    ///
    /// # Errors
    ///
    /// [`StoreError::Db`] when reading fails, [`StoreError::Corrupt`] when a value
    /// cannot be decoded.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read()?;
        let mut snap = Snapshot::default();
        for row in txn.open_table(ADDRS)?.iter()? {
            let (k, v) = row?;
            let rec = AddrRecord::decode(k.value(), v.value()).map_err(|problem| {
                StoreError::Corrupt {
                    table: "addrs",
                    problem,
                }
            })?;
            snap.addrs.push(rec);
        }
        for row in txn.open_table(BANS)?.iter()? {
            let (k, v) = row?;
            let key = record::decode_ban_key(k.value()).map_err(|problem| StoreError::Corrupt {
                table: "bans",
                problem,
            })?;
            snap.bans.push((key, v.value()));
        }
        for row in txn.open_table(SCORES)?.iter()? {
            let (k, v) = row?;
            let key = record::decode_ban_key(k.value()).map_err(|problem| StoreError::Corrupt {
                table: "scores",
                problem,
            })?;
            let (points, until) = v.value();
            snap.scores.push(StoredScore { key, points, until });
        }
        Ok(snap)
    }

    /// The book's secret placement key: the stored one, or `fresh` (stored now) on
    /// first start, so buckets stay where they were across restarts.
    ///
    /// # Errors
    ///
    /// [`StoreError::Db`] when reading or writing fails, [`StoreError::Corrupt`] when
    /// the stored key is not 32 bytes.
    pub fn book_key(&self, fresh: [u8; 32]) -> Result<[u8; 32], StoreError> {
        let txn = self.db.begin_write()?;
        let key = {
            let mut meta = txn.open_table(META)?;
            let stored = meta.get(BOOK_KEY)?.map(|v| v.value().to_vec());
            match stored {
                Some(bytes) => bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt {
                        table: "meta",
                        problem: "the book key is not 32 bytes",
                    })?,
                None => {
                    meta.insert(BOOK_KEY, &fresh[..])?;
                    fresh
                }
            }
        };
        txn.commit()?;
        Ok(key)
    }
}

/// The book's changes since the last call ([`AddrBook::take_dirty`]) as store changes.
pub fn book_changes(book: &mut AddrBook, anchor: &TimeAnchor) -> Vec<Change> {
    book.take_dirty()
        .into_iter()
        .map(|id| match book.get(&id) {
            Some(e) => Change::PutAddr(AddrRecord::from_entry(e, anchor)),
            None => Change::RemoveAddr(id),
        })
        .collect()
}

/// Rebuilds `book` from loaded records (at `anchor`'s instant); returns the records it
/// refused (no longer admissible under the book's config: now strict, now private,
/// our own) with the reason, which the caller may remove from the store.
pub fn restore_book<'a>(
    book: &mut AddrBook,
    anchor: &TimeAnchor,
    addrs: &'a [AddrRecord],
) -> Vec<(&'a AddrRecord, Rejected)> {
    // Tried first, so new entries cannot evict them from the tables' point of view.
    let (tried, rest): (Vec<&AddrRecord>, Vec<&AddrRecord>) =
        addrs.iter().partition(|r| r.table != TableKind::New);
    let mut refused = Vec::new();
    for rec in tried.into_iter().chain(rest) {
        if let Err(why) = book.restore(anchor.instant(), rec.to_entry(anchor)) {
            refused.push((rec, why));
        }
    }
    refused
}
