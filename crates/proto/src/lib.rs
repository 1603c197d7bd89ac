//! # switchyard-proto: the sans-IO protocol core of Switchyard
//!
//! Everything that decides what a byte on the wire means, and when a peer must be
//! pinged, answered or closed, lives here as plain data structures:
//!
//! * [`codec`]: the packet codec (`Ping`, `Pong`, `Msg`) with its byte layout;
//! * [`reassembly`]: chunks back into whole messages, per channel, size-checked;
//! * [`scheduler`]: per-channel bounded send queues and the priority-weighted choice of
//!   the next chunk;
//! * [`handshake`]: the `Version`/`Verack` exchange as a state machine;
//! * [`control`]: the MessagePack messages of channel 0;
//! * [`keepalive`], [`stall`], [`backoff`] and [`rate`]: deadline trackers and limiters;
//! * [`id`]: [`NodeId`], derived from a node's ed25519 key;
//! * [`admission`]: which connections a node keeps (limits, bans, duplicate tie-break);
//! * [`config`]: every budget and timeout, with defaults and validation;
//! * [`reason`]: [`DisconnectReason`], the one list of reasons a peer is closed for.
//!
//! ## The contract
//!
//! * **No I/O, no clock, no actix, no spawning.** Every input that depends on time takes
//!   an explicit [`std::time::Instant`]; `Instant::now` is banned in this crate by
//!   `clippy.toml`. The runtime (`switchyard`) feeds bytes and instants in and carries
//!   out the outputs.
//! * **Outputs are `#[must_use]`.** A tracker that says "send a ping" or "close with this
//!   reason" is ignored only on purpose.
//! * **Drain order.** After every input, a caller drains the outputs of the state
//!   machines it drives (transmits first, then events), then asks for the earliest
//!   deadline (`poll_timeout` / `next_deadline`) and arms one timer for it. Deadlines are
//!   also checked on every input, so a busy caller cannot starve them.
//! * **Hostile input never panics**: every length is bounded before anything is
//!   allocated, and every fault maps to a typed error and to a [`DisconnectReason`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod backoff;
pub mod codec;
pub mod config;
pub mod control;
pub mod handshake;
pub mod id;
pub mod keepalive;
pub mod rate;
pub mod reason;
pub mod reassembly;
pub mod scheduler;
pub mod stall;

pub use codec::{CodecError, Msg, MsgKind, Packet, PacketCodec};
pub use config::{ChannelConfig, Config, ConfigError};
pub use id::NodeId;
pub use reason::DisconnectReason;
