//! Services: user actors that own channels, and the messages they receive.
//!
//! A service is any actix actor. It is registered on the Switch with a name, a
//! version, and its channels; each channel has an id (1..=255), a
//! [`ChannelConfig`] (priority and budgets), a message type, and a delivery mode:
//!
//! | registration | the actor implements | payload |
//! |---|---|---|
//! | [`Service::channel`] | `Handler<Received<T>>` | MessagePack, decoded once per message |
//! | [`Service::batched_channel`] | `Handler<ReceivedBatch<T>>` | MessagePack, the messages waiting on the channel in one actix message |
//! | [`Service::raw_channel`] | `Handler<Received<Bytes>>` | the reassembled bytes, no decoding, no copy |
//! | [`Service::raw_batched_channel`] | `Handler<ReceivedBatch<Bytes>>` | same, batched |
//!
//! Each registration returns the channel's typed handle, a [`Channel<T>`] (or
//! [`Channel<Raw>`]), which is what [`PeerHandle::send`] takes: a message of another
//! type does not compile. An actor that sends on its own channel can get its handle
//! before it starts with [`Actor::create`], as below.
//!
//! Hearing of peers is optional and separate: [`Service::on_peer_up`] names the actor
//! that gets [`PeerUp`] when a peer that runs a service of the same name connects,
//! [`Service::on_peer_down`] the one that gets [`PeerDown`] when it goes. Delivery
//! respects the service's mailbox: a message is handed over with `try_send`; when the
//! mailbox is full, that channel's messages wait in the connection's receive queue,
//! which the channel's credit window bounds, and the remote stops sending on that
//! channel once its credit is spent. Only that channel waits: the connection keeps
//! reading, its other channels and its keepalive go on.
//!
//! ```
//! use actix::prelude::*;
//! use serde::{Deserialize, Serialize};
//! use switchyard::{Channel, ChannelConfig, PeerUp, Received, Service};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Chat(String);
//!
//! struct ChatService {
//!     chat: Channel<Chat>,
//! }
//! impl Actor for ChatService { type Context = Context<Self>; }
//! impl Handler<Received<Chat>> for ChatService {
//!     type Result = ();
//!     fn handle(&mut self, m: Received<Chat>, _: &mut Context<Self>) {
//!         println!("{}: {}", m.peer.id(), m.msg.0);
//!     }
//! }
//! impl Handler<PeerUp> for ChatService {
//!     type Result = ();
//!     fn handle(&mut self, up: PeerUp, _: &mut Context<Self>) {
//!         let _ = up.peer.try_send(&self.chat, &Chat("hello".into()));
//!     }
//! }
//! // No `Handler<PeerDown>`: this service does not ask for it.
//!
//! actix::System::new().block_on(async {
//!     let mut svc = Service::new("chat", 1);
//!     let chat = ChatService::create(|ctx| ChatService {
//!         chat: svc.channel(0x10, ChannelConfig::new(5), &ctx.address()),
//!     });
//!     svc.on_peer_up(&chat);
//!     // Switch::builder(config).service(svc).start()
//!     # let _ = svc;
//! });
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchyard_proto::connection::delivery::Delivered;
use switchyard_proto::connection::handshake::ServiceInfo;
use switchyard_proto::Message as Complete;
use switchyard_proto::{ChannelConfig, DisconnectReason};

use crate::channel::{Channel, Raw};
use crate::handle::PeerHandle;
use crate::request::{ReceivedRequest, RequestChannel, RequestSink};

/// One message from a peer on a channel.
#[derive(Debug)]
pub struct Received<T> {
    /// The peer it came from (reply through it).
    pub peer: PeerHandle,
    /// The channel it came on.
    pub channel: u8,
    /// The decoded message.
    pub msg: T,
}

impl<T: 'static> Message for Received<T> {
    type Result = ();
}

/// Messages of one channel waiting for the service when it was handed them (up to the
/// channel's `recv_capacity`), in order.
///
/// Under light traffic a batch holds one message (no added latency); under load it
/// holds many, so one actix message carries many network messages.
#[derive(Debug)]
pub struct ReceivedBatch<T> {
    /// The peer they came from.
    pub peer: PeerHandle,
    /// The channel they came on.
    pub channel: u8,
    /// The decoded messages, oldest first.
    pub msgs: Vec<T>,
}

impl<T: 'static> Message for ReceivedBatch<T> {
    type Result = ();
}

/// A peer that runs a service of the same name connected (the handshake completed and
/// the Switch admitted it). Keep the handle to send to it. Sent to the actor given to
/// [`Service::on_peer_up`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct PeerUp {
    /// The peer (send to it through this handle).
    pub peer: PeerHandle,
}

/// A peer this service saw come up is gone, and why. Sent to the actor given to
/// [`Service::on_peer_down`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct PeerDown {
    /// The peer (sending through it now fails with `Closed`).
    pub peer: PeerHandle,
    /// Why it was closed.
    pub reason: DisconnectReason,
}

/// A future that hands over the message (or batch) a full mailbox could not take. It
/// runs on the peer's thread (not `Send`).
pub(crate) type DeliveryFuture = Pin<Box<dyn Future<Output = ()>>>;

/// What became of messages offered to a service (the core's
/// [`Delivered`], with the wait for room a full mailbox leaves).
pub(crate) type Delivery = Delivered<DeliveryFuture>;

/// Decodes payloads of a channel into the type its service receives.
pub(crate) trait WireFormat: Send + Sync + 'static {
    type Item: Send + 'static;
    fn decode(channel: u8, payload: Bytes) -> Result<Self::Item, DisconnectReason>;

    /// Decodes payloads in order, all or none.
    fn decode_all(channel: u8, payloads: Vec<Bytes>) -> Result<Vec<Self::Item>, DisconnectReason> {
        payloads
            .into_iter()
            .map(|p| Self::decode(channel, p))
            .collect()
    }

    /// Makes an item that waits in hand own its memory (a raw slice of the read
    /// buffer would keep the whole buffer alive while the service is slow).
    fn compact(_item: &mut Self::Item) {}
}

/// MessagePack payloads decoded into `T`.
pub(crate) struct MsgPack<T>(PhantomData<fn() -> T>);

impl<T: DeserializeOwned + Send + 'static> WireFormat for MsgPack<T> {
    type Item = T;
    fn decode(channel: u8, payload: Bytes) -> Result<T, DisconnectReason> {
        rmp_serde::from_slice(&payload).map_err(|e| DisconnectReason::Undecodable {
            channel,
            // The decoder may quote what the remote sent: escaped and bounded.
            error: switchyard_proto::text::clean(&e.to_string()),
        })
    }
}

/// Payloads handed over as they are.
impl WireFormat for Raw {
    type Item = Bytes;
    fn decode(_: u8, payload: Bytes) -> Result<Bytes, DisconnectReason> {
        Ok(payload)
    }

    fn decode_all(_: u8, payloads: Vec<Bytes>) -> Result<Vec<Bytes>, DisconnectReason> {
        Ok(payloads)
    }

    fn compact(item: &mut Bytes) {
        if !item.is_unique() {
            *item = Bytes::copy_from_slice(item);
        }
    }
}

/// The type-erased delivery end of one channel.
pub(crate) trait Sink: Send + Sync {
    /// Decodes and hands messages from the front of `msgs` to the service, in order,
    /// until they are all handed over or its mailbox is full. `Err`: a message was
    /// undecodable (the peer is closed).
    fn deliver(
        &self,
        peer: &PeerHandle,
        msgs: &mut VecDeque<Complete>,
    ) -> Result<Delivery, DisconnectReason>;

    /// The sink's side that takes plain payloads straight from the core, in batches
    /// (see [`PayloadSink`]); `None` for sinks that deliver message by message.
    fn payloads(&self) -> Option<&dyn PayloadSink> {
        None
    }
}

/// A sink that takes the payloads of plain messages as they are, in batches: the
/// core hands them over without making a message of each first.
pub(crate) trait PayloadSink {
    /// Decodes `payloads` (at most a batch, costing `held` credit) and hands them to
    /// the service as one batch. `Err`: one was undecodable (the peer is closed).
    fn deliver_payloads(
        &self,
        peer: &PeerHandle,
        payloads: Vec<Bytes>,
        held: u64,
    ) -> Result<Delivery, DisconnectReason>;
}

/// Message channels carry plain messages only: a request there is the remote's
/// error (requests go on request channels).
#[inline]
fn plain(channel: u8, m: &Complete) -> Result<(), DisconnectReason> {
    if m.kind == switchyard_proto::MsgKind::Plain {
        return Ok(());
    }
    Err(DisconnectReason::Misbehavior(format!(
        "a request on message channel {channel:#04x}"
    )))
}

fn stopped_service(
    channel: u8,
    msgs: &mut VecDeque<Complete>,
) -> Result<Delivery, DisconnectReason> {
    log::warn!(
        "service of channel {channel:#04x} is stopped; dropping {} messages",
        msgs.len() + 1
    );
    msgs.clear();
    Ok(Delivered::All)
}

/// What a service's mailbox did with one offered item.
pub(crate) enum Offered {
    /// It took it.
    Taken,
    /// It is full: the future hands the item over once there is room.
    Full(DeliveryFuture),
    /// The service is stopped.
    Stopped,
}

/// Offers `item` to `to` without waiting; when the mailbox is full, `compact` makes
/// the item own its memory before it waits in hand (see [`WireFormat::compact`]).
pub(crate) fn offer<M>(to: &Recipient<M>, item: M, compact: impl FnOnce(&mut M)) -> Offered
where
    M: Message<Result = ()> + Send + 'static,
{
    match to.try_send(item) {
        Ok(()) => Offered::Taken,
        Err(SendError::Full(mut item)) => {
            compact(&mut item);
            let to = to.clone();
            Offered::Full(Box::pin(async move {
                let _ = to.send(item).await;
            }))
        }
        Err(SendError::Closed(_)) => Offered::Stopped,
    }
}

struct PerMessage<F: WireFormat> {
    channel: u8,
    to: Recipient<Received<F::Item>>,
}

impl<F: WireFormat> Sink for PerMessage<F> {
    fn deliver(
        &self,
        peer: &PeerHandle,
        msgs: &mut VecDeque<Complete>,
    ) -> Result<Delivery, DisconnectReason> {
        let channel = self.channel;
        while let Some(m) = msgs.pop_front() {
            plain(channel, &m)?;
            let held = m.cost();
            let msg = F::decode(channel, m.payload)?;
            let item = Received {
                peer: peer.clone(),
                channel,
                msg,
            };
            match offer(&self.to, item, |i| F::compact(&mut i.msg)) {
                Offered::Taken => {}
                Offered::Full(pending) => {
                    return Ok(Delivered::Full {
                        cost: held,
                        wait: pending,
                    })
                }
                Offered::Stopped => return stopped_service(channel, msgs),
            }
        }
        Ok(Delivered::All)
    }
}

struct Batched<F: WireFormat> {
    channel: u8,
    max_batch: usize,
    to: Recipient<ReceivedBatch<F::Item>>,
}

impl<F: WireFormat> Sink for Batched<F> {
    fn deliver(
        &self,
        peer: &PeerHandle,
        msgs: &mut VecDeque<Complete>,
    ) -> Result<Delivery, DisconnectReason> {
        let channel = self.channel;
        while !msgs.is_empty() {
            let take = msgs.len().min(self.max_batch.max(1));
            let mut held = 0;
            for m in msgs.range(..take) {
                plain(channel, m)?;
                held += m.cost();
            }
            let mut batch = Vec::with_capacity(take);
            for m in msgs.drain(..take) {
                batch.push(F::decode(channel, m.payload)?);
            }
            let item = ReceivedBatch {
                peer: peer.clone(),
                channel,
                msgs: batch,
            };
            match offer(&self.to, item, |i| i.msgs.iter_mut().for_each(F::compact)) {
                Offered::Taken => {}
                Offered::Full(pending) => {
                    return Ok(Delivered::Full {
                        cost: held,
                        wait: pending,
                    })
                }
                Offered::Stopped => return stopped_service(channel, msgs),
            }
        }
        Ok(Delivered::All)
    }

    fn payloads(&self) -> Option<&dyn PayloadSink> {
        Some(self)
    }
}

impl<F: WireFormat> PayloadSink for Batched<F> {
    fn deliver_payloads(
        &self,
        peer: &PeerHandle,
        payloads: Vec<Bytes>,
        held: u64,
    ) -> Result<Delivery, DisconnectReason> {
        let channel = self.channel;
        let count = payloads.len();
        let msgs = F::decode_all(channel, payloads)?;
        let item = ReceivedBatch {
            peer: peer.clone(),
            channel,
            msgs,
        };
        match offer(&self.to, item, |i| i.msgs.iter_mut().for_each(F::compact)) {
            Offered::Taken => Ok(Delivered::All),
            Offered::Full(pending) => Ok(Delivered::Full {
                cost: held,
                wait: pending,
            }),
            Offered::Stopped => {
                log::warn!(
                    "service of channel {channel:#04x} is stopped; dropping {count} messages"
                );
                Ok(Delivered::All)
            }
        }
    }
}

/// A channel as registered: its id, budgets, and where its messages go.
pub(crate) struct ChannelEntry {
    pub(crate) id: u8,
    pub(crate) config: ChannelConfig,
    pub(crate) sink: Arc<dyn Sink>,
}

/// A service to register on the Switch: a name, a version, its channels, and
/// optionally who hears of peers coming and going. See the [module docs](self) for an
/// example.
pub struct Service {
    pub(crate) info: ServiceInfo,
    pub(crate) minor: u32,
    pub(crate) up: Option<Recipient<PeerUp>>,
    pub(crate) down: Option<Recipient<PeerDown>>,
    pub(crate) channels: Vec<ChannelEntry>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .field(
                "channels",
                &self.channels.iter().map(|c| c.id).collect::<Vec<_>>(),
            )
            .field("on_peer_up", &self.up.is_some())
            .field("on_peer_down", &self.down.is_some())
            .finish()
    }
}

impl Service {
    /// A service called `name` at major `version`, with no channels yet. Peers
    /// running a service of the same name are its twins: only they are announced
    /// to it.
    #[must_use]
    pub fn new(name: impl Into<String>, version: u32) -> Self {
        Service {
            info: ServiceInfo {
                name: name.into(),
                version,
            },
            minor: 0,
            up: None,
            down: None,
            channels: Vec::new(),
        }
    }

    /// Sets the minor version (0 by default): twins must share the major version
    /// given to [`new`](Self::new), the minor one is only reported.
    pub fn minor(&mut self, minor: u32) -> &mut Self {
        self.minor = minor;
        self
    }

    /// The service's name and version, as announced in the handshake.
    #[must_use]
    pub fn info(&self) -> &ServiceInfo {
        &self.info
    }

    /// `to` gets a [`PeerUp`] for each twin that connects (replacing any actor given
    /// before). Optional: a service that only answers what it receives needs none.
    pub fn on_peer_up<A>(&mut self, to: &Addr<A>) -> &mut Self
    where
        A: Actor + Handler<PeerUp>,
        A::Context: ToEnvelope<A, PeerUp>,
    {
        self.up = Some(to.clone().recipient());
        self
    }

    /// `to` gets a [`PeerDown`] with the reason for each twin that was announced up
    /// and is gone (replacing any actor given before). Optional.
    pub fn on_peer_down<A>(&mut self, to: &Addr<A>) -> &mut Self
    where
        A: Actor + Handler<PeerDown>,
        A::Context: ToEnvelope<A, PeerDown>,
    {
        self.down = Some(to.clone().recipient());
        self
    }

    fn add<T>(&mut self, id: u8, config: ChannelConfig, sink: Arc<dyn Sink>) -> Channel<T> {
        self.channels.push(ChannelEntry { id, config, sink });
        Channel::new(id)
    }

    /// A channel `id` (1..=255) whose MessagePack messages of type `T` reach `to` one
    /// by one as [`Received<T>`]. Send on it with the returned handle.
    ///
    /// A bad or duplicate id is reported when the Switch starts
    /// ([`StartError`](crate::StartError)).
    pub fn channel<T, A>(&mut self, id: u8, config: ChannelConfig, to: &Addr<A>) -> Channel<T>
    where
        T: DeserializeOwned + Send + 'static,
        A: Actor + Handler<Received<T>>,
        A::Context: ToEnvelope<A, Received<T>>,
    {
        let sink = PerMessage::<MsgPack<T>> {
            channel: id,
            to: to.clone().recipient(),
        };
        self.add(id, config, Arc::new(sink))
    }

    /// A channel whose MessagePack messages of type `T` reach `to` as
    /// [`ReceivedBatch<T>`]: the messages waiting on the channel, up to its
    /// `recv_capacity` messages per batch.
    pub fn batched_channel<T, A>(
        &mut self,
        id: u8,
        config: ChannelConfig,
        to: &Addr<A>,
    ) -> Channel<T>
    where
        T: DeserializeOwned + Send + 'static,
        A: Actor + Handler<ReceivedBatch<T>>,
        A::Context: ToEnvelope<A, ReceivedBatch<T>>,
    {
        let sink = Batched::<MsgPack<T>> {
            channel: id,
            max_batch: config.recv_capacity,
            to: to.clone().recipient(),
        };
        self.add(id, config, Arc::new(sink))
    }

    /// A channel that carries raw bytes: each reassembled message reaches `to` as
    /// [`Received<Bytes>`] without decoding or copying. Send [`Bytes`] on the returned
    /// handle.
    ///
    /// A message that arrived in one packet is a slice of the socket's read buffer
    /// (up to 256 KiB), which stays allocated while any slice of it lives: a service
    /// that keeps small messages for long should copy them
    /// (`Bytes::copy_from_slice`).
    pub fn raw_channel<A>(&mut self, id: u8, config: ChannelConfig, to: &Addr<A>) -> Channel<Raw>
    where
        A: Actor + Handler<Received<Bytes>>,
        A::Context: ToEnvelope<A, Received<Bytes>>,
    {
        let sink = PerMessage::<Raw> {
            channel: id,
            to: to.clone().recipient(),
        };
        self.add(id, config, Arc::new(sink))
    }

    /// A raw-bytes channel with batched delivery ([`ReceivedBatch<Bytes>`]).
    pub fn raw_batched_channel<A>(
        &mut self,
        id: u8,
        config: ChannelConfig,
        to: &Addr<A>,
    ) -> Channel<Raw>
    where
        A: Actor + Handler<ReceivedBatch<Bytes>>,
        A::Context: ToEnvelope<A, ReceivedBatch<Bytes>>,
    {
        let sink = Batched::<Raw> {
            channel: id,
            max_batch: config.recv_capacity,
            to: to.clone().recipient(),
        };
        self.add(id, config, Arc::new(sink))
    }

    /// A request channel `id`: requests of type `Req` reach `to` as
    /// [`ReceivedRequest<Req, Resp>`](crate::ReceivedRequest), each with the
    /// [`Responder`](crate::Responder) that answers it with a `Resp`. Ask on it with
    /// [`PeerHandle::request`](crate::PeerHandle::request) and the returned handle.
    /// The channel carries only requests and their answers; its config's
    /// `requests_in_flight`, `inbound_requests` and `close_on_stall` apply (see
    /// [`request`](crate::request)).
    pub fn request_channel<Req, Resp, A>(
        &mut self,
        id: u8,
        config: ChannelConfig,
        to: &Addr<A>,
    ) -> RequestChannel<Req, Resp>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        A: Actor + Handler<ReceivedRequest<Req, Resp>>,
        A::Context: ToEnvelope<A, ReceivedRequest<Req, Resp>>,
    {
        let sink = RequestSink::<Req, Resp> {
            channel: id,
            to: to.clone().recipient(),
        };
        self.channels.push(ChannelEntry {
            id,
            config,
            sink: Arc::new(sink),
        });
        RequestChannel::new(id)
    }
}
