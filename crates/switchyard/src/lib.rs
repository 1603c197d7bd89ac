//! # Switchyard: an actor-model peer-to-peer networking runtime on actix
//!
//! A node runs one [`Switch`] actor. The Switch supervises one Peer actor per
//! connection, a thin shell around the connection's sans-IO
//! [`PeerCore`](switchyard_proto::PeerCore); each connection multiplexes many
//! channels, each a byte id with a priority and its own flow-control window. **Services** are your actors: they own
//! channels, get [`PeerUp`] / [`PeerDown`], receive [`Received<T>`] (or
//! [`ReceivedBatch<T>`]), and send through the [`PeerHandle`] they were given.
//!
//! ```no_run
//! use actix::prelude::*;
//! use serde::{Deserialize, Serialize};
//! use switchyard::{ChannelConfig, NodeConfig, PeerDown, PeerUp, Received, Service, Switch, Dial};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Hello(String);
//!
//! struct Greeter;
//! impl Actor for Greeter { type Context = Context<Self>; }
//! impl Handler<PeerUp> for Greeter {
//!     type Result = ();
//!     fn handle(&mut self, up: PeerUp, _: &mut Context<Self>) {
//!         let _ = up.0.try_send(0x10, &Hello("hi".into()));
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
//!     let greeter = Greeter.start();
//!     let switch = Switch::builder(NodeConfig::local())
//!         .service(Service::new("greeter", 1, &greeter).channel::<Hello, _>(0x10, ChannelConfig::new(5), &greeter))
//!         .start()
//!         .expect("start");
//!     let _ = switch.send(Dial("127.0.0.1:26656".parse().unwrap())).await;
//! });
//! ```
//!
//! The protocol itself (codec, handshake, keepalive, flow control, scheduler,
//! limits) lives in the sans-IO crate [`switchyard_proto`]; this crate is the thin
//! actor shell around it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod addr;
pub mod config;
mod conn;
mod driver;
pub mod error;
pub mod handle;
pub mod identity;
mod peer;
mod pool;
mod registry;
pub mod service;
mod socket;
pub mod switch;

pub use addr::PeerAddr;
pub use bytes::Bytes;
pub use config::NodeConfig;
pub use error::{DialError, SendError, StartError};
pub use handle::PeerHandle;
pub use identity::NodeKey;
pub use service::{PeerDown, PeerUp, Received, ReceivedBatch, Service};
pub use switch::{
    AttachService, Broadcast, BroadcastRaw, DetachService, Dial, GetInfo, GetPeers, NodeInfo,
    Shutdown, Switch, SwitchBuilder,
};
pub use switchyard_proto as proto;
pub use switchyard_proto::admission::Direction;
pub use switchyard_proto::{ChannelConfig, Config as Limits, DisconnectReason, NodeId};
