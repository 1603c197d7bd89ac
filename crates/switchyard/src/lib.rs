//! # Switchyard: an actor-model peer-to-peer networking runtime on actix
//!
//! A node runs one [`Switch`] actor. The Switch supervises one Peer actor per
//! connection, a thin shell around the connection's sans-IO
//! [`PeerCore`](switchyard_proto::PeerCore); each connection multiplexes many
//! channels, each a byte id with a priority and its own flow-control window.
//! **Services** are your actors: registering a channel on a [`Service`] gives its
//! typed handle, a [`Channel<T>`]; the actor receives [`Received<T>`] (or
//! [`ReceivedBatch<T>`]) and sends through the [`PeerHandle`] it was given, and may
//! ask for [`PeerUp`] / [`PeerDown`].
//!
//! ```no_run
//! use actix::prelude::*;
//! use serde::{Deserialize, Serialize};
//! use switchyard::*;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Hello(String);
//!
//! struct Greeter {
//!     hello: Channel<Hello>,
//! }
//! impl Actor for Greeter { type Context = Context<Self>; }
//! impl Handler<PeerUp> for Greeter {
//!     type Result = ();
//!     fn handle(&mut self, up: PeerUp, _: &mut Context<Self>) {
//!         let _ = up.peer.try_send(&self.hello, &Hello("hi".into()));
//!     }
//! }
//! impl Handler<PeerDown> for Greeter {
//!     type Result = ();
//!     fn handle(&mut self, down: PeerDown, _: &mut Context<Self>) {
//!         println!("{} left: {}", down.peer.id(), down.reason);
//!     }
//! }
//! impl Handler<Received<Hello>> for Greeter {
//!     type Result = ();
//!     fn handle(&mut self, m: Received<Hello>, _: &mut Context<Self>) {
//!         println!("{} says {}", m.peer.id(), m.msg.0);
//!     }
//! }
//!
//! actix::System::new().block_on(async {
//!     let mut svc = Service::new("greeter", 1);
//!     let greeter = Greeter::create(|ctx| Greeter {
//!         hello: svc.channel(0x10, ChannelConfig::new(5), &ctx.address()),
//!     });
//!     svc.on_peer_up(&greeter).on_peer_down(&greeter);
//!     let switch = Switch::builder(NodeConfig::local()).service(svc).start().expect("start");
//!     let _ = switch.send(Dial("127.0.0.1:26656".parse().unwrap())).await;
//! });
//! ```
//!
//! `use actix::prelude::*;` and `use switchyard::*;` go together without a clash.
//!
//! The protocol itself (codec, handshake, keepalive, flow control, scheduler,
//! limits) lives in the sans-IO crate [`switchyard_proto`]; this crate is the thin
//! actor shell around it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod addr;
pub mod channel;
pub mod config;
mod conn;
mod driver;
pub mod error;
pub mod ext;
pub mod handle;
pub mod identity;
pub mod introspect;
mod metrics;
mod msg;
mod peer;
mod pool;
mod registry;
pub mod request;
pub mod secure;
pub mod service;
mod socket;
pub mod switch;

pub use addr::PeerAddr;
pub use bytes::Bytes;
pub use channel::{Channel, Encoded, Payload, Raw};
pub use config::{Limits, NodeConfig};
pub use error::{DialError, SendFailure, StartError};
pub use ext::SwitchExt;
pub use handle::PeerHandle;
pub use identity::NodeKey;
pub use introspect::{Introspect, IntrospectFailure, IntrospectPeer, Introspection};
pub use request::{PendingResponse, ReceivedRequest, RequestChannel, RequestError, Responder};
pub use service::{PeerDown, PeerUp, Received, ReceivedBatch, Service};
pub use switch::{
    AttachService, Broadcast, BroadcastRaw, BroadcastReport, DetachService, Dial, GetInfo, GetPeer,
    GetPeers, NodeInfo, Report, Shutdown, Switch, SwitchBuilder, TryBroadcast, TryBroadcastRaw,
};
pub use switchyard_proto as proto;
pub use switchyard_proto::switch::{BanKey, BanList, Direction, MemoryBans, Score, Severity};
pub use switchyard_proto::{ChannelConfig, DisconnectReason, NodeId};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
