//! # switchyard-pex: peer discovery for Switchyard (not built yet)
//!
//! This crate will hold, per `DESIGN.md` ("Discovery and persistence"):
//!
//! * the **address book**: a pure structure with new/old buckets keyed by a secret and
//!   by the source's address group, so one source cannot poison it;
//! * the **peer store**: addresses, scores and bans kept on disk (redb) across
//!   restarts, seeded from an initial peers file on first start;
//! * the **PEX service**: request/response of addresses on its own channel, rate
//!   limited per peer; unsolicited or oversized answers close and ban the sender;
//! * the **peer manager**: keeps the outbound target filled with exponential backoff
//!   and jitter, and a seed mode that crawls and hands out addresses.
//!
//! Until then, nodes are connected with static and persistent peers
//! (`NodeConfig::peers`, `NodeConfig::persistent_peers`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The channel the PEX service will use (reserved now so services avoid it).
pub const PEX_CHANNEL: u8 = 0x01;
