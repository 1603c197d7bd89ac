//! [`Discovery`]: what a node adds to use peer discovery. It opens the peer store in
//! a directory, fills the address book (from the store, or on first start from the
//! initial peers file), and gives back the PEX [`Service`] to register on the Switch
//! and a [`DiscoveryHandle`] that starts the peer manager once the Switch runs.
//!
//! ```no_run
//! use switchyard::{NodeConfig, Switch};
//! use switchyard_pex::discovery::{Discovery, DiscoveryConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! actix::System::new().block_on(async {
//!     let mut cfg = DiscoveryConfig::default();
//!     cfg.dir = Some("./node-home".into());
//!     cfg.seeds_file = Some("./node-home/seeds.txt".into());
//!     let (service, discovery) = Discovery::new(cfg).start()?;
//!     let switch = Switch::builder(NodeConfig::default())
//!         .service(service)
//!         .bans(discovery.bans())
//!         .start()?;
//!     discovery.start(switch);
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! # }
//! ```
//!
//! The store's commits run on a thread of their own: the actor hands batches of
//! changes (the book's, and the bans' and scores' from [`DiscoveryHandle::bans`]) over every
//! [`flush_interval`](DiscoveryConfig::flush_interval) and never waits for the disk.

use std::collections::HashSet;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use switchyard::{NodeId, Service, Switch};
use tokio::sync::{oneshot, watch};

use crate::addr::NetAddr;
use crate::book::{AddrBook, BookConfig, Entry, Rejected};
use crate::exchange::{Exchange, ExchangeConfig};
use crate::manager::{Manager, ManagerConfig};
use crate::seeds::{read_seeds, SeedsError};
use crate::service::{
    channel_config, now, Entries, Flush, Parts, PexActor, Start, Status, StoreJob,
};
use crate::store::{restore_book, PeerStore, SharedBans, StoreError, StoredBans, TimeAnchor};
use crate::PEX_CHANNEL;

/// The file of the peer store inside [`DiscoveryConfig::dir`].
pub const STORE_FILE: &str = "peers.redb";

/// How discovery runs on a node.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// Where the peer store lives (the node's home); `None` keeps the book in memory
    /// only (tests, throwaway testnets).
    pub dir: Option<PathBuf>,
    /// The initial peers file (`ID@HOST:PORT` a line), read when the store is empty.
    pub seeds_file: Option<PathBuf>,
    /// More initial peers, used like the file's.
    pub seeds: Vec<NetAddr>,
    /// Persistent peers (the Switch redials them): kept out of the manager's dials.
    pub persistent: Vec<NetAddr>,
    /// Reject non-routable addresses (default `true`; `false` for loopback testnets).
    pub strict: bool,
    /// Node ids whose addresses are never stored or shared (the book's
    /// [`private_ids`](BookConfig::private_ids)); default none.
    pub private_ids: HashSet<NodeId>,
    /// The PEX service's behaviour.
    pub exchange: ExchangeConfig,
    /// The peer manager's behaviour.
    pub manager: ManagerConfig,
    /// How often the book's changes go to the store (default 5 s).
    pub flush_interval: Duration,
    /// Seed of the book's and the manager's randomness; `None` draws one.
    pub seed: Option<u64>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            dir: None,
            seeds_file: None,
            seeds: Vec::new(),
            persistent: Vec::new(),
            strict: true,
            private_ids: HashSet::new(),
            exchange: ExchangeConfig::default(),
            manager: ManagerConfig::default(),
            flush_interval: Duration::from_secs(5),
            seed: None,
        }
    }
}

impl DiscoveryConfig {
    /// Seed mode: answer inbound peers once and let them go, crawl instead of keeping
    /// outbound peers.
    #[must_use]
    pub fn seed_mode(mut self) -> Self {
        self.exchange.seed_mode = true;
        self.manager.crawl = true;
        self
    }

    /// Short intervals for local testnets and tests: the manager ticks every
    /// `tick`, asks one peer at most every `4 × tick`, backs off from `tick`, and the
    /// book is flushed every `10 × tick`; loopback addresses are accepted.
    #[must_use]
    pub fn quick(mut self, tick: Duration) -> Self {
        self.strict = false;
        self.manager.tick = tick;
        self.manager.request_interval = tick * 4;
        self.manager.dial_backoff_min = tick;
        self.manager.dial_backoff_max = tick * 20;
        self.manager.crawl_interval = tick * 20;
        self.manager.seed_hold = tick * 20;
        let timeout = self.exchange.request_timeout;
        self.exchange = ExchangeConfig::with_interval(tick * 4);
        self.exchange.request_timeout = timeout;
        self.exchange.seed_mode = self.manager.crawl;
        self.flush_interval = tick * 10;
        self
    }
}

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The peer store could not be opened or read: check the directory.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The initial peers file is unreadable or has a bad line (named in the error).
    #[error(transparent)]
    Seeds(#[from] SeedsError),
    /// The store's directory could not be created.
    #[error("cannot create {}: {source}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// Builds discovery for one node. See the [module docs](self).
#[derive(Debug)]
pub struct Discovery {
    cfg: DiscoveryConfig,
}

/// The running discovery of a node: starts the manager, reports its outbound peers,
/// flushes and stops.
#[derive(Debug, Clone)]
pub struct DiscoveryHandle {
    actor: Addr<PexActor>,
    status: watch::Receiver<Status>,
    bans: SharedBans,
    /// Where the book came from at start.
    pub origin: Origin,
}

/// Where the book came from when discovery started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Restored from the peer store: this many addresses.
    Store(usize),
    /// The store was empty (or there is none): seeded with this many initial peers.
    Seeds(usize),
}

impl Discovery {
    /// Discovery with `cfg`.
    #[must_use]
    pub fn new(cfg: DiscoveryConfig) -> Self {
        Discovery { cfg }
    }

    /// Opens the store, fills the book and starts the PEX actor (in the current actix
    /// system): returns the PEX service to register with `Switch::builder(..).service`
    /// and the handle to [`start`](DiscoveryHandle::start) the manager once the Switch
    /// runs.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError`]: the store or the initial peers file.
    pub fn start(self) -> Result<(Service, DiscoveryHandle), DiscoveryError> {
        let cfg = self.cfg;
        let t0 = now();
        #[allow(clippy::disallowed_methods)]
        let anchor = TimeAnchor::new(t0, SystemTime::now());
        let seed = cfg.seed.unwrap_or_else(rand::random);
        let store = match &cfg.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| DiscoveryError::Dir {
                    dir: dir.clone(),
                    source,
                })?;
                Some(PeerStore::open(&dir.join(STORE_FILE))?)
            }
            None => None,
        };
        let mut fresh = [0u8; 32];
        fresh[..8].copy_from_slice(&rand::random::<u64>().to_le_bytes());
        fresh[8..16].copy_from_slice(&rand::random::<u64>().to_le_bytes());
        fresh[16..24].copy_from_slice(&rand::random::<u64>().to_le_bytes());
        fresh[24..].copy_from_slice(&seed.to_le_bytes());
        let key = match &store {
            Some(s) => s.book_key(fresh)?,
            None => fresh,
        };
        let mut book_cfg = BookConfig::new(key, seed);
        book_cfg.strict = cfg.strict;
        book_cfg.private_ids.clone_from(&cfg.private_ids);
        let mut book = AddrBook::new(book_cfg);
        let snapshot = match &store {
            Some(s) => s.load()?,
            None => Default::default(),
        };
        let origin = if snapshot.addrs.is_empty() {
            let mut seeds = cfg.seeds.clone();
            if let Some(path) = &cfg.seeds_file {
                for s in read_seeds(path)? {
                    match s.net_addr() {
                        Some(a) => seeds.push(a),
                        None => match (s.host.as_str(), s.port).to_socket_addrs() {
                            Ok(mut it) => {
                                if let Some(sa) = it.next() {
                                    seeds.push(NetAddr::new(s.id, sa));
                                }
                            }
                            Err(e) => log::warn!("initial peer {s}: cannot resolve: {e}"),
                        },
                    }
                }
            }
            let mut n = 0;
            for a in seeds {
                match book.add_address(t0, a, a.addr.ip()) {
                    Ok(_) => n += 1,
                    Err(why) => log::warn!("initial peer {a} not taken: {why}"),
                }
            }
            Origin::Seeds(n)
        } else {
            for (rec, why) in restore_book(&mut book, &anchor, &snapshot.addrs) {
                log::info!("stored address {} dropped: {why}", rec.addr);
            }
            Origin::Store(book.len())
        };
        for p in &cfg.persistent {
            match book.add_persistent(*p) {
                Ok(()) => {}
                // Asked for: the Switch still redials it, discovery keeps it to itself.
                Err(Rejected::Private) => log::debug!("persistent peer {p} is private"),
                Err(why) => log::warn!("persistent peer {p} not kept in the book: {why}"),
            }
        }
        let bans = SharedBans::new(StoredBans::from_snapshot(anchor, &snapshot));
        let store_tx = store.map(spawn_writer);
        let mut manager_cfg = cfg.manager.clone();
        manager_cfg.seed = seed ^ 0x5eed;
        let (outbound_tx, status_rx) = watch::channel(Status::default());
        let parts = Parts {
            book,
            exchange: Exchange::new(cfg.exchange.clone()),
            manager: Manager::new(manager_cfg, t0),
            anchor,
            bans: bans.clone(),
            store: store_tx,
            flush_interval: cfg.flush_interval,
            outbound: outbound_tx,
        };
        let mut service = Service::new(crate::service::SERVICE_NAME, 1);
        let actor = PexActor::create(|ctx| {
            let channel = service.request_channel(PEX_CHANNEL, channel_config(), &ctx.address());
            PexActor::new(parts, channel)
        });
        service.on_peer_up(&actor).on_peer_down(&actor);
        Ok((
            service,
            DiscoveryHandle {
                actor,
                status: status_rx,
                bans,
                origin,
            },
        ))
    }
}

/// Runs the store's commits on a thread of their own.
fn spawn_writer(store: PeerStore) -> mpsc::Sender<StoreJob> {
    let (tx, rx) = mpsc::channel::<StoreJob>();
    let spawned = std::thread::Builder::new()
        .name("pex-store".into())
        .spawn(move || {
            for job in rx {
                match job {
                    StoreJob::Apply(changes) => {
                        if let Err(e) = store.apply(&changes) {
                            log::warn!("peer store: {} changes not stored: {e}", changes.len());
                        }
                    }
                    StoreJob::Sync(reply) => {
                        let _ = reply.send(());
                    }
                    StoreJob::Close(reply) => {
                        drop(store);
                        let _ = reply.send(());
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("peer store: no writer thread ({e}); changes will not be stored");
    }
    tx
}

impl DiscoveryHandle {
    /// Starts the peer manager on `switch` (whose builder got the PEX service).
    pub fn start(&self, switch: Addr<Switch>) {
        self.actor.do_send(Start(switch));
    }

    /// The node's peers now, updated as they come and go: wait on it with
    /// `wait_for(|s| s.outbound >= target)`.
    #[must_use]
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// The node's bans and misbehaviour scores, loaded from the store: give them to
    /// the Switch with `Switch::builder(..).bans(discovery.bans())` and they are
    /// written to the store with the book at every flush (and at
    /// [`stop`](Self::stop)), so a ban, and the points towards one, survive a
    /// restart. Without a store directory they are kept in memory only.
    #[must_use]
    pub fn bans(&self) -> SharedBans {
        self.bans.clone()
    }

    /// What the book holds now.
    pub async fn entries(&self) -> Vec<Entry> {
        self.actor.send(Entries).await.unwrap_or_default()
    }

    /// Writes the book's and the bans' pending changes to the store; resolves once
    /// committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.actor.send(Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Flushes, then stops the PEX actor; resolves once the store's writer has
    /// committed the last batch and closed the store (it may be opened again).
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.actor.send(crate::service::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}
