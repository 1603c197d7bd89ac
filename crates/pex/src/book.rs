//! The **address book**: every address the node knows, in a new and a tried table of
//! buckets, pure (time and randomness come in from the caller, nothing is read from
//! the clock or the disk).
//!
//! * [`add_address`](AddrBook::add_address) files gossip in the **new** table, in a
//!   bucket chosen by a keyed hash of the address's group and its source's group
//!   (see [`placement`](self#placement)), so one source reaches only a few buckets.
//! * [`mark_good`](AddrBook::mark_good) (after an outbound connection succeeded and the
//!   node id was authenticated) moves the address to the **tried** table. A node id in
//!   tried is never re-pointed to another address by gossip, only by another
//!   authenticated connection.
//! * A full bucket evicts its worst entry (bad or banned first, then most failures,
//!   then never connected, then the stalest); a tried entry evicted goes back to new.
//! * [`mark_attempt`](AddrBook::mark_attempt) counts failed dials; past
//!   [`max_attempts`](BookConfig::max_attempts) the address is bad: kept but unused for
//!   [`bad_for`](BookConfig::bad_for), then forgotten by
//!   [`handle_timeout`](AddrBook::handle_timeout). Persistent addresses
//!   ([`add_persistent`](AddrBook::add_persistent)) sit outside the tables and are
//!   never evicted, marked bad or forgotten.
//! * [`pick_address`](AddrBook::pick_address) chooses whom to dial,
//!   [`sample`](AddrBook::sample) what to share.
//! * Changes to persist are reported by [`take_dirty`](AddrBook::take_dirty); a book is
//!   rebuilt from the store with [`restore`](AddrBook::restore).
//!
//! One address sits in exactly one bucket (Bitcoin and CometBFT let a new address sit
//! in up to four or eight; one place keeps the accounting simple and the bound on a
//! source's reach exact). A node id has one address: gossip of a known id at another
//! address is refused, and so is a second id at a known address.
//!
//! # Placement
//!
//! Every hash is SHA-256 over the node's secret [`key`](BookConfig::key), a domain tag
//! and its inputs, truncated to 64 bits, so without the key nobody can aim addresses at
//! chosen buckets, and with the key kept (the peer store keeps it) buckets stay put
//! across restarts.
//!
//! * New: `slot = H(key, src_group, addr_group) mod P`, then
//!   `bucket = H(key, src_group, slot) mod N`, with `P` =
//!   [`new_buckets_per_source_group`](BookConfig::new_buckets_per_source_group) and
//!   `N` = [`new_buckets`](BookConfig::new_buckets). For a fixed source group the
//!   second hash sees at most `P` inputs, so **whatever sources of one group gossip
//!   lands in at most `P` of the `N` new buckets** (default 32 of 256), holding at most
//!   `P × bucket_size` addresses (2,048 of 16,384), and can evict only entries that
//!   share those buckets.
//! * Tried: `slot = H(key, address) mod T`, then `bucket = H(key, addr_group, slot) mod
//!   M`, with `T` = [`tried_buckets_per_group`](BookConfig::tried_buckets_per_group):
//!   one network block reaches at most `T` of the `M` tried buckets (8 of 64), and
//!   only through addresses we connected to ourselves.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use switchyard_pex::book::{AddrBook, BookConfig};
//! use switchyard_pex::NetAddr;
//!
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let mut book = AddrBook::new(BookConfig::new([7; 32], 1));
//! let addr: NetAddr = "66687aadf862bd776c8fc18b8e9f8e2008971485@20.1.2.3:26656".parse()?;
//! book.add_address(now, addr, "31.4.5.6".parse()?)?;
//! assert_eq!(book.pick_address(now, 50, &Default::default()), Some(addr));
//! book.mark_good(now + Duration::from_secs(1), addr)?;
//! assert_eq!(book.tried_count(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod entry;
mod placement;
mod select;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use switchyard_proto::switch::backoff::Jitter;
use switchyard_proto::NodeId;

pub use config::BookConfig;
pub use entry::{Entry, Place};
pub use select::dial_bias;

use crate::addr::{is_dialable, is_routable, NetAddr};

/// Why an address was not taken. None of these is an error of the book: the caller
/// may count them against the source (garbage addresses in gossip) or ignore them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// The address or node id is our own.
    #[error("the address is our own")]
    Ours,
    /// The node id is a private peer (config): never stored or shared.
    #[error("the node id is a private peer")]
    Private,
    /// Strict mode and the IP is not publicly routable, or the IP cannot be dialed at
    /// all (unspecified, multicast, broadcast).
    #[error("the IP address is not routable")]
    NotRoutable,
    /// Port 0.
    #[error("port 0 cannot be dialed")]
    PortZero,
    /// The node id is known at another address; gossip does not move it (when `tried`,
    /// it was authenticated there).
    #[error("the node id is known at another address (tried: {tried})")]
    Repoint {
        /// Whether the known address is in the tried table.
        tried: bool,
    },
    /// Another node id is known at this address.
    #[error("another node id is known at this address")]
    AddressTaken,
    /// [`mark_attempt`](AddrBook::mark_attempt), [`ban`](AddrBook::ban): the node id is
    /// not in the book.
    #[error("the node id is not in the book")]
    Unknown,
}

/// What [`add_address`](AddrBook::add_address) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Filed in the new table; `evicted` is the entry a full bucket gave up for it.
    New {
        /// The entry forgotten to make room.
        evicted: Option<NetAddr>,
    },
    /// Already known at this address; nothing changed.
    Known,
}

/// The address book. See the [module docs](self).
#[derive(Debug)]
pub struct AddrBook {
    cfg: BookConfig,
    rng: Jitter,
    entries: HashMap<NodeId, Entry>,
    by_addr: HashMap<SocketAddr, NodeId>,
    new_table: Vec<Vec<NodeId>>,
    tried_table: Vec<Vec<NodeId>>,
    new_count: usize,
    tried_count: usize,
    persistent: BTreeSet<NodeId>,
    our_addrs: HashSet<SocketAddr>,
    our_ids: HashSet<NodeId>,
    dirty: BTreeSet<NodeId>,
}

impl AddrBook {
    /// An empty book shaped by `cfg`.
    #[must_use]
    pub fn new(cfg: BookConfig) -> Self {
        let cfg = cfg.normalized();
        AddrBook {
            rng: Jitter::new(cfg.seed),
            entries: HashMap::new(),
            by_addr: HashMap::new(),
            new_table: vec![Vec::new(); cfg.new_buckets],
            tried_table: vec![Vec::new(); cfg.tried_buckets],
            new_count: 0,
            tried_count: 0,
            persistent: BTreeSet::new(),
            our_addrs: HashSet::new(),
            our_ids: HashSet::new(),
            dirty: BTreeSet::new(),
            cfg,
        }
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &BookConfig {
        &self.cfg
    }

    /// Addresses held (both tables and persistent).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the book holds no address.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Addresses in the new table.
    #[must_use]
    pub fn new_count(&self) -> usize {
        self.new_count
    }

    /// Addresses in the tried table.
    #[must_use]
    pub fn tried_count(&self) -> usize {
        self.tried_count
    }

    /// What the book knows about `id`.
    #[must_use]
    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Whether `addr` is one of our own (learned with
    /// [`add_our_address`](Self::add_our_address)).
    #[must_use]
    pub fn is_ours(&self, addr: &SocketAddr) -> bool {
        self.our_addrs.contains(addr)
    }

    /// Learns one of our own addresses (our listen address, or one we reached by
    /// dialing ourselves): it, and our node id, are dropped from the book and never
    /// stored, dialed or shared again.
    pub fn add_our_address(&mut self, addr: NetAddr) {
        self.our_addrs.insert(addr.addr);
        self.our_ids.insert(addr.id);
        self.remove(&addr.id);
        if let Some(other) = self.by_addr.get(&addr.addr).copied() {
            self.remove(&other);
        }
    }

    /// Checks what every insertion checks: ours, private, port, routability.
    fn admissible(&self, addr: &NetAddr) -> Result<(), Rejected> {
        if self.our_ids.contains(&addr.id) || self.our_addrs.contains(&addr.addr) {
            return Err(Rejected::Ours);
        }
        if self.cfg.private_ids.contains(&addr.id) {
            return Err(Rejected::Private);
        }
        if addr.addr.port() == 0 {
            return Err(Rejected::PortZero);
        }
        let ip = addr.addr.ip();
        let ok = if self.cfg.strict {
            is_routable(ip)
        } else {
            is_dialable(ip)
        };
        if ok {
            Ok(())
        } else {
            Err(Rejected::NotRoutable)
        }
    }

    /// Files `addr`, told by the peer at `src` (or from config / the initial peers
    /// file: pass the address's own IP), in the new table.
    ///
    /// # Errors
    ///
    /// [`Rejected`] says why the address was not taken.
    pub fn add_address(
        &mut self,
        now: Instant,
        addr: NetAddr,
        src: IpAddr,
    ) -> Result<Added, Rejected> {
        self.admissible(&addr)?;
        if let Some(e) = self.entries.get(&addr.id) {
            if e.addr == addr {
                return Ok(Added::Known);
            }
            return Err(Rejected::Repoint {
                tried: e.place.is_tried(),
            });
        }
        if self.by_addr.contains_key(&addr.addr) {
            return Err(Rejected::AddressTaken);
        }
        let evicted = self.insert_new(now, Entry::new(addr, src, Place::New(0)));
        Ok(Added::New { evicted })
    }

    /// Adds a persistent peer (config): kept outside the tables, never evicted, marked
    /// bad or forgotten, and not offered by [`pick_address`](Self::pick_address) (the
    /// peer manager redials persistent peers on its own schedule). An entry already
    /// known for the id (at any address) or at the address is replaced.
    ///
    /// # Errors
    ///
    /// [`Rejected`]: ours, private or not routable.
    pub fn add_persistent(&mut self, addr: NetAddr) -> Result<(), Rejected> {
        self.admissible(&addr)?;
        let mut entry = self
            .take(&addr.id)
            .unwrap_or_else(|| Entry::new(addr, addr.addr.ip(), Place::Persistent));
        if let Some(other) = self.by_addr.get(&addr.addr).copied() {
            self.remove(&other);
        }
        entry.addr = addr;
        entry.place = Place::Persistent;
        entry.bad_until = None;
        self.link(entry);
        Ok(())
    }

    /// Records a dial attempt to `id` that has not (yet) succeeded. Past
    /// [`max_attempts`](BookConfig::max_attempts) the address is bad until `now +`
    /// [`bad_for`](BookConfig::bad_for), then forgotten (persistent ones never are).
    ///
    /// # Errors
    ///
    /// [`Rejected::Unknown`] when `id` is not in the book.
    pub fn mark_attempt(&mut self, now: Instant, id: &NodeId) -> Result<(), Rejected> {
        let (max, bad_for) = (self.cfg.max_attempts, self.cfg.bad_for);
        let e = self.entries.get_mut(id).ok_or(Rejected::Unknown)?;
        e.attempts = e.attempts.saturating_add(1);
        e.last_attempt = Some(now);
        if e.attempts >= max && e.place != Place::Persistent && e.bad_until.is_none() {
            e.bad_until = Some(now + bad_for);
        }
        self.dirty.insert(*id);
        Ok(())
    }

    /// Records that an outbound connection to `addr` succeeded and the remote proved
    /// `addr.id`: the address moves to the tried table (or stays persistent), its
    /// failures are cleared. This is the only way an id is re-pointed to another
    /// address; an entry of another id at this address is dropped.
    ///
    /// # Errors
    ///
    /// [`Rejected`]: ours, private or not routable.
    pub fn mark_good(&mut self, now: Instant, addr: NetAddr) -> Result<(), Rejected> {
        self.admissible(&addr)?;
        if let Some(other) = self.by_addr.get(&addr.addr).copied() {
            if other != addr.id {
                self.remove(&other);
            }
        }
        let mut entry = self
            .take(&addr.id)
            .unwrap_or_else(|| Entry::new(addr, addr.addr.ip(), Place::New(0)));
        entry.addr = addr;
        entry.attempts = 0;
        entry.last_attempt = Some(now);
        entry.last_success = Some(now);
        entry.bad_until = None;
        if entry.place == Place::Persistent {
            self.link(entry);
        } else {
            self.insert_tried(now, entry);
        }
        Ok(())
    }

    /// Bans `id` until `until` (a later deadline replaces an earlier one): it is
    /// neither selected nor shared until then.
    ///
    /// # Errors
    ///
    /// [`Rejected::Unknown`] when `id` is not in the book.
    pub fn ban(&mut self, id: &NodeId, until: Instant) -> Result<(), Rejected> {
        let e = self.entries.get_mut(id).ok_or(Rejected::Unknown)?;
        e.banned_until = Some(e.banned_until.map_or(until, |t| t.max(until)));
        self.dirty.insert(*id);
        Ok(())
    }

    /// Forgets `id`; returns what was known.
    pub fn remove(&mut self, id: &NodeId) -> Option<Entry> {
        let e = self.take(id)?;
        self.dirty.insert(*id);
        Some(e)
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout) has work: a
    /// bad address to forget or a ban to lift.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .values()
            .flat_map(|e| [e.bad_until, e.banned_until])
            .flatten()
            .min()
    }

    /// Forgets the bad addresses whose time is up and lifts the bans that ended.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut forget = Vec::new();
        for (id, e) in &mut self.entries {
            if e.bad_until.is_some_and(|t| t <= now) {
                forget.push(*id);
            } else if e.banned_until.is_some_and(|t| t <= now) {
                e.banned_until = None;
                self.dirty.insert(*id);
            }
        }
        for id in forget {
            self.remove(&id);
        }
    }

    /// The ids changed since the last call (added, updated or forgotten), in order;
    /// [`get`](Self::get) tells which: `None` means forgotten. The runtime turns them
    /// into a batch for the peer store.
    pub fn take_dirty(&mut self) -> Vec<NodeId> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// Puts back an entry loaded from the peer store. Its place says only which table
    /// (the bucket is recomputed: the key may have changed); a tried entry whose bucket
    /// is full goes to new, a new entry evicts as [`add_address`](Self::add_address)
    /// does. Restoring does not mark the entry dirty.
    ///
    /// # Errors
    ///
    /// [`Rejected`]: the entry is no longer admissible (ours, private, strict mode), or
    /// its id or address is already held.
    pub fn restore(&mut self, now: Instant, entry: Entry) -> Result<(), Rejected> {
        self.admissible(&entry.addr)?;
        if self.entries.contains_key(&entry.addr.id) {
            return Err(Rejected::Repoint { tried: false });
        }
        if self.by_addr.contains_key(&entry.addr.addr) {
            return Err(Rejected::AddressTaken);
        }
        let id = entry.addr.id;
        match entry.place {
            Place::Persistent => self.link(entry),
            Place::Tried(_) => self.insert_tried(now, entry),
            Place::New(_) => {
                self.insert_new(now, entry);
            }
        }
        self.dirty.remove(&id);
        Ok(())
    }

    /// Files `entry` in its new bucket, evicting the worst entry of a full bucket;
    /// returns the evicted address.
    fn insert_new(&mut self, now: Instant, mut entry: Entry) -> Option<NetAddr> {
        let b = placement::new_bucket(&self.cfg, entry.addr.group(), crate::Group::of(entry.src));
        let evicted = if self.new_table[b].len() >= self.cfg.bucket_size {
            self.worst_in(&self.new_table[b], now)
                .and_then(|worst| self.remove(&worst))
                .map(|e| e.addr)
        } else {
            None
        };
        entry.place = Place::New(b);
        self.link(entry);
        evicted
    }

    /// Files `entry` in its tried bucket; a full bucket sends its worst entry back to
    /// new.
    fn insert_tried(&mut self, now: Instant, mut entry: Entry) {
        let b = placement::tried_bucket(&self.cfg, &entry.addr);
        if self.tried_table[b].len() >= self.cfg.bucket_size {
            if let Some(worst) = self.worst_in(&self.tried_table[b], now) {
                if let Some(demoted) = self.take(&worst) {
                    self.dirty.insert(worst);
                    self.insert_new(now, demoted);
                }
            }
        }
        entry.place = Place::Tried(b);
        self.link(entry);
    }

    fn worst_in(&self, bucket: &[NodeId], now: Instant) -> Option<NodeId> {
        bucket
            .iter()
            .filter_map(|id| self.entries.get(id))
            .max_by_key(|e| e.badness(now))
            .map(|e| e.addr.id)
    }

    /// Puts `entry` in the maps and in the bucket its place names.
    fn link(&mut self, entry: Entry) {
        let id = entry.addr.id;
        match entry.place {
            Place::New(b) => {
                self.new_table[b].push(id);
                self.new_count += 1;
            }
            Place::Tried(b) => {
                self.tried_table[b].push(id);
                self.tried_count += 1;
            }
            Place::Persistent => {
                self.persistent.insert(id);
            }
        }
        self.by_addr.insert(entry.addr.addr, id);
        self.entries.insert(id, entry);
        self.dirty.insert(id);
    }

    /// Takes `id` out of the maps and its bucket (without marking it dirty).
    fn take(&mut self, id: &NodeId) -> Option<Entry> {
        let e = self.entries.remove(id)?;
        self.by_addr.remove(&e.addr.addr);
        let unlink = |bucket: &mut Vec<NodeId>| {
            if let Some(i) = bucket.iter().position(|x| x == id) {
                bucket.swap_remove(i);
            }
        };
        match e.place {
            Place::New(b) => {
                unlink(&mut self.new_table[b]);
                self.new_count -= 1;
            }
            Place::Tried(b) => {
                unlink(&mut self.tried_table[b]);
                self.tried_count -= 1;
            }
            Place::Persistent => {
                self.persistent.remove(id);
            }
        }
        Some(e)
    }

    /// The bucket index of every new-table entry whose source is in `src_group`
    /// (tests and diagnostics: how far one source reached).
    #[must_use]
    pub fn new_buckets_of_source(&self, src_group: crate::Group) -> BTreeSet<usize> {
        self.entries
            .values()
            .filter(|e| crate::Group::of(e.src) == src_group)
            .filter_map(|e| match e.place {
                Place::New(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    /// Checks the book's internal accounting; `Err` names the first inconsistency.
    /// Cheap enough for tests, not for the hot path.
    ///
    /// # Errors
    ///
    /// A description of what is inconsistent.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        for (table, buckets, count) in [
            ("new", &self.new_table, self.new_count),
            ("tried", &self.tried_table, self.tried_count),
        ] {
            let mut n = 0;
            for (b, bucket) in buckets.iter().enumerate() {
                if bucket.len() > self.cfg.bucket_size {
                    return Err(format!(
                        "{table} bucket {b} holds {} > {}",
                        bucket.len(),
                        self.cfg.bucket_size
                    ));
                }
                for id in bucket {
                    n += 1;
                    if !seen.insert(*id) {
                        return Err(format!("{id:?} is in two buckets"));
                    }
                    let want = if table == "new" {
                        Place::New(b)
                    } else {
                        Place::Tried(b)
                    };
                    match self.entries.get(id) {
                        Some(e) if e.place == want => {}
                        other => {
                            return Err(format!("{id:?} in {table} {b} but entry is {other:?}"))
                        }
                    }
                }
            }
            if n != count {
                return Err(format!("{table} count {count} but {n} in buckets"));
            }
        }
        for id in &self.persistent {
            if !seen.insert(*id) {
                return Err(format!("{id:?} persistent and in a bucket"));
            }
        }
        if seen.len() != self.entries.len() || self.by_addr.len() != self.entries.len() {
            return Err(format!(
                "{} placed, {} entries, {} addresses",
                seen.len(),
                self.entries.len(),
                self.by_addr.len()
            ));
        }
        for (addr, id) in &self.by_addr {
            if self.entries.get(id).map(|e| e.addr.addr) != Some(*addr) {
                return Err(format!("address index {addr} -> {id:?} is stale"));
            }
        }
        Ok(())
    }
}
