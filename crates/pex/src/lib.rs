//! # switchyard-pex: peer discovery for Switchyard
//!
//! * [`book`]: the **address book**, pure like the cores of `switchyard-proto` (time
//!   and randomness come in from the caller; no clock, no I/O): new and tried tables of
//!   buckets chosen by keyed hashes of the address's and its source's groups, so one
//!   source reaches only a few buckets; eviction of the worst entry; selection for
//!   dialing and sampling for sharing; strict mode, private ids, own addresses, dial
//!   attempts, bad addresses forgotten, bans.
//! * [`store`]: the **peer store** on disk (redb): addresses with their source,
//!   attempts, last attempt and success, table, and bans, written in batches of
//!   [`Change`](store::Change)s, one transaction each, and loaded whole at start.
//! * [`seeds`]: the **initial peers file** parser (`ID@HOST:PORT` a line).
//! * [`NetAddr`]: `ID@IP:PORT`, the unit the book holds, and its [`Group`].
//! * [`wire`]: the PEX messages, `GetAddrs` and `Addrs` (bounded, checked while
//!   decoded).
//! * [`exchange`]: the PEX service's decisions, pure: one request per peer per
//!   interval, what to answer, seed mode's one answer, learning attributed to the
//!   source.
//! * [`manager`]: the peer manager's policy, pure: the outbound target filled from the
//!   book with backoff and jitter per address, spread across groups, asking when the
//!   book is thin, crawling in seed mode.
//! * [`service`]: the actor that runs both on a node (the PEX service `"pex"` on
//!   [`PEX_CHANNEL`] and the peer manager), a thin shell over the pure parts.
//! * [`discovery`]: what a node adds: opens the peer store, fills the book (store, or
//!   the initial peers file on first start), flushes it in batches off the network
//!   path, and gives back the service to register and a handle that starts the
//!   manager.
//!
//! Like `switchyard-proto`, the pure parts never read the clock: `clippy.toml` forbids
//! `Instant::now` and `SystemTime::now` here; the actor shell ([`service::now`]) and
//! the start of [`discovery`] are the allowed exceptions.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod addr;
pub mod book;
pub mod discovery;
pub mod exchange;
pub mod manager;
pub mod seeds;
pub mod service;
pub mod store;
pub mod wire;

pub use addr::{Group, NetAddr};
pub use book::{AddrBook, BookConfig};

/// The channel of the PEX service (other services must avoid it).
pub const PEX_CHANNEL: u8 = 0x01;
