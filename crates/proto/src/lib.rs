//! # switchyard-proto: the sans-IO protocol core of Switchyard
//!
//! Everything that decides what a byte on the wire means, and when a peer must be
//! pinged, answered, credited or closed, lives here as plain data structures:
//!
//! * [`wire`]: the packet codec ([`wire::codec`]: `Ping`, `Pong`, `Msg`, `Credit`,
//!   `Reclaim`, `Release`) and the MessagePack messages of channel 0
//!   ([`wire::control`]), each with its byte layout and golden vectors;
//! * [`connection`]: [`PeerCore`], one connection's whole life as one state machine
//!   (handshake, keepalive, flow control, reassembly, scheduler, stall tracker, rate
//!   limits, close), built from one module per concept;
//! * [`switch`]: [`SwitchCore`](switch::SwitchCore), the node-wide decisions
//!   (admission, duplicate tie-break, persistent redials, bans, refusal budget,
//!   shutdown), one module per concept;
//! * [`id`]: [`NodeId`], derived from a node's ed25519 key;
//! * [`introspect`]: what a node tells about itself, locally and over channel 0;
//! * [`config`]: every budget and timeout, with defaults and validation;
//! * [`reason`]: [`DisconnectReason`], the one list of reasons a peer is closed for;
//! * [`fuzz`]: the harnesses the fuzz targets run, replayed by the test suite.
//!
//! ## The contract
//!
//! * **No I/O, no clock, no actix, no spawning.** Every input that depends on time takes
//!   an explicit [`std::time::Instant`]; `Instant::now` is banned in this crate by
//!   `clippy.toml`. Randomness comes in as values (the ping-nonce secret of
//!   [`connection::ConnParams`], the jitter seed of [`switch::SwitchConfig`]). The
//!   runtime (`switchyard`) feeds bytes and instants in and carries out the outputs.
//! * **Outputs are `#[must_use]` or drained.** A tracker that says "send a ping" or
//!   "close with this reason" is ignored only on purpose.
//! * **Drain order.** After every input, a driver drains `poll_transmit` (and writes
//!   it), `poll_shutdown`, then `poll_event`, then asks `poll_timeout` for the earliest
//!   deadline and arms one timer for it. The Switch drives its
//!   [`SwitchCore`](switch::SwitchCore) the same way: `poll_action` until empty, then
//!   `poll_timeout`. Deadlines are also checked on every input, so a busy driver cannot
//!   starve them.
//! * **Hostile input never panics**: every length is bounded before anything is
//!   allocated, and every fault maps to a typed error and to a [`DisconnectReason`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod connection;
pub mod fuzz;
pub mod id;
pub mod introspect;
pub mod reason;
pub mod secure;
pub mod switch;
pub mod text;

/// The connection identifiers of the [`switch`] module, under their former path.
pub mod admission {
    pub use crate::switch::{ConnId, Direction};
}
pub mod wire;

pub use config::{ChannelConfig, Config, ConfigError};
pub use connection::{
    ConnParams, CoreConfig, Event, Message, PeerCore, PushError, RecvBudget, Transmit,
};
pub use id::NodeId;
pub use reason::DisconnectReason;
pub use wire::codec::{CodecError, Msg, MsgKind, Packet, PacketCodec};
