//! [`PeerCore`]: the whole life of one connection as one sans-IO state machine.
//!
//! A core owns the handshake, the keepalive and idle timeout, the stall tracker,
//! reassembly, the send scheduler, flow-control windows, rate limits and the close.
//! It never reads a clock (every input takes `now`), owns no socket and no RNG (the
//! nonce secret comes in [`ConnParams`]), and is driven like quinn-proto's
//! `Connection` or str0m's `Rtc`:
//!
//! * **inputs** `handle_read` (bytes read; complete packets are taken from the
//!   buffer), `handle_written` (the last transmit is in the socket), `handle_eof`,
//!   `handle_io_error`, `handle_timeout`, `handle_consumed` (the service took a
//!   message); **commands** `send`, `send_request`, `send_response`, `close`;
//! * **outputs** [`poll_transmit`](PeerCore::poll_transmit) (bytes to write),
//!   [`poll_shutdown`](PeerCore::poll_shutdown) (close the write half now),
//!   [`poll_event`](PeerCore::poll_event) (connected, a channel readable, queue room,
//!   a stalled request, closed with a reason), [`recv`](PeerCore::recv) (the next
//!   message of a readable channel) and [`poll_timeout`](PeerCore::poll_timeout), the
//!   earliest deadline of its one [`timer`] table.
//!
//! After every input, drain in this order: transmits, shutdown, events, then arm one
//! timer at `poll_timeout`. Deadlines are also checked on every input.
//!
//! # Life of a connection
//!
//! ```text
//! Handshake ──Verack──▶ Active ──close / violation / timeout / remote Goodbye──▶ Closing
//!     │                                                                            │
//!     └──failure: close with a typed reason──────────────────────────────────────▶│
//!                     Closed ◀── goodbye written, write half shut, remote EOF ─────┘
//!                            ◀── or the linger deadline, or an I/O error
//! ```
//!
//! A `Goodbye` from the remote is honoured in every phase. Messages that completed
//! before the connection closed stay readable with `recv` after `Closed`, so nothing
//! that arrived before a goodbye is lost.

pub mod delivery;
pub mod drive;
pub mod flow;
pub mod handshake;
mod inbox;
pub mod inline;
pub mod introspect;
pub mod keepalive;
pub mod lifecycle;
pub mod rate;
pub mod reader;
pub mod reassembly;
pub mod recycle;
pub mod rtt_report;
pub mod scheduler;
pub mod services;
pub mod stall;
pub mod timer;
pub mod transmit;
pub mod writer;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

pub use flow::{message_cost, RecvBudget, WindowStats, MESSAGE_COST};
pub use reassembly::Message;
pub use scheduler::PushError;
pub use stall::Refusal;
pub use transmit::Transmit;

use self::flow::{PartialCost, RecvFlow};
use self::handshake::{check_after_handshake, handshake_message, AwaitVersion, Handshake, Version};
use self::inbox::Inboxes;
use self::introspect::IntrospectState;
use self::keepalive::Keepalive;
use self::rate::TokenBucket;
use self::reassembly::Reassembler;
use self::recycle::BufferPool;
use self::scheduler::{ChannelStats, Next, Scheduler};
use self::services::{ServiceSpec, Services};
use self::stall::{Admit, Answer, InboundRequests, StallTracker};
use self::timer::{Timer, TimerTable};
use crate::config::{ChannelConfig, Config, ConfigError};
use crate::id::NodeId;
use crate::reason::DisconnectReason;
use crate::wire::codec::{
    Batch, CodecError, Msg, MsgKind, Packet, PacketCodec, MSG_HEADER_LEN_WITH_ID,
};
use crate::wire::control::{self, Control, CONTROL_CHANNEL, MAX_CONTROL_MESSAGE};

/// Priority of channel 0 (handshake and daemon messages): above any user channel's
/// usual values, so control traffic is never stuck behind bulk data.
pub const CONTROL_PRIORITY: u16 = 1000;

/// What every connection of a node shares: its limits and the pool of freed message
/// buffers. Built (and validated) once, then handed to each core behind an `Arc`.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    limits: Config,
    control: ChannelConfig,
    recycle: BufferPool,
}

impl CoreConfig {
    /// Checks `limits`.
    pub fn new(limits: Config) -> Result<Self, ConfigError> {
        limits.validate()?;
        let control = ChannelConfig {
            priority: CONTROL_PRIORITY,
            max_message_size: MAX_CONTROL_MESSAGE,
            send_queue_messages: 256,
            send_queue_bytes: 4 * MAX_CONTROL_MESSAGE,
            recv_capacity: 1,
            recv_window: MAX_CONTROL_MESSAGE,
            max_recv_window: MAX_CONTROL_MESSAGE,
            requests_in_flight: 1,
            inbound_requests: 1,
            close_on_stall: true,
        };
        let recycle = BufferPool::new(limits.recycle_bytes);
        Ok(CoreConfig {
            limits,
            control,
            recycle,
        })
    }

    /// The connection limits.
    #[must_use]
    pub fn limits(&self) -> &Config {
        &self.limits
    }
}

/// What one connection needs besides the node's [`CoreConfig`].
#[derive(Debug, Clone)]
pub struct ConnParams {
    /// Our `Version`, sent first.
    pub local: Version,
    /// The node we dialed, when we dialed `ID@HOST:PORT`.
    pub expected: Option<NodeId>,
    /// Random bytes that key the ping nonces (pass a fresh random value per
    /// connection: a remote must not be able to predict them).
    pub secret: [u8; 16],
    /// The services attached when the connection starts (checked together with
    /// [`check_services`](services::check_services)); more can be attached later.
    pub services: Vec<Arc<ServiceSpec>>,
}

/// Something the driver of a core must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake completed; [`PeerCore::remote`] has the remote's `Version`.
    Connected,
    /// A channel's queue went from empty to holding messages: drain it with
    /// [`PeerCore::recv`] (it is not reported again until it was empty).
    Readable(u8),
    /// A channel's send queue, after refusing a message as full, has room again (or
    /// its service went down: a send now says why).
    Room(u8),
    /// A service met its twin on the remote: its channels are open both ways.
    ServiceUp(String),
    /// A service that was up is down on this connection (the connection goes on).
    ServiceDown {
        /// The service.
        service: String,
        /// [`DisconnectReason::ServiceDetached`].
        reason: DisconnectReason,
    },
    /// An offer of a service was refused, by the remote or by us.
    ServiceRefused {
        /// The service.
        service: String,
        /// Why.
        reason: control::RejectReason,
        /// The remote refused our offer (else we refused its).
        by_remote: bool,
    },
    /// A request got no response within its timeout (unless its channel is
    /// report-only, the connection is closed with [`DisconnectReason::Stalled`]).
    RequestStalled {
        /// Channel of the request.
        channel: u8,
        /// Its id.
        request_id: u32,
    },
    /// The response to one of our requests.
    Response {
        /// Channel of the request.
        channel: u8,
        /// Its id.
        request_id: u32,
        /// The response's payload.
        payload: Bytes,
    },
    /// One of our requests will get no response: the remote refused it, or the
    /// service went away.
    RequestRejected {
        /// Channel of the request.
        channel: u8,
        /// Its id.
        request_id: u32,
        /// Why.
        refusal: Refusal,
    },
    /// The connection is over, with the first reason it was closed for. Drop the
    /// socket; messages still queued can be taken with [`PeerCore::recv`].
    Closed(DisconnectReason),
    /// The remote asked for our node's introspection: answer with
    /// [`PeerCore::answer_introspection`] (see [`introspect`]).
    IntrospectRequested,
    /// The remote's answer to our [`PeerCore::request_introspection`] (validated).
    Introspection(Box<crate::introspect::Introspection>),
}

/// Counters and flow-control state of one channel (for tests and introspection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelInfo {
    /// Send side: queue and credit.
    pub send: ChannelStats,
    /// Receive side: window and totals.
    pub recv: WindowStats,
    /// Complete messages waiting for the service.
    pub queued: usize,
}

/// What the last transmits carried that matters once written.
#[derive(Debug, Default)]
struct InFlight {
    ping: bool,
    goodbye: bool,
    requests: Vec<u32>,
}

impl InFlight {
    fn is_empty(&self) -> bool {
        !self.ping && !self.goodbye && self.requests.is_empty()
    }
}

#[derive(Debug)]
struct Closing {
    reason: DisconnectReason,
    /// Write what is queued before the goodbye.
    flush: bool,
    /// We owe the remote a `Goodbye` (not when it said goodbye first).
    goodbye_due: bool,
    /// Our write half is shut down.
    shutdown: bool,
    /// The remote closed its write half.
    read_done: bool,
    deadline: Instant,
}

#[derive(Debug)]
enum Phase {
    /// `None` only while a consuming transition is under way.
    Handshake(Option<Handshake>),
    Active,
    Closing(Closing),
    Closed,
}

/// What [`PeerCore::send_run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSent {
    /// Payloads queued, from the front of the run.
    pub queued: usize,
    /// Why it stopped before the end of the run (`None`: every payload is queued).
    pub stopped: Option<PushError>,
}

impl RunSent {
    /// What the sender does now that `rest` is left of its run: `Ok` when all of it
    /// is queued, `Err(Full)` when it waits for room ([`Event::Room`]) and goes on
    /// with `rest`, any other error when it gives up (that payload's error).
    pub fn outcome<T>(&self, rest: &VecDeque<T>) -> Result<(), PushError> {
        match &self.stopped {
            None | Some(PushError::Full) if rest.is_empty() => Ok(()),
            None => Err(PushError::Full),
            Some(e) => Err(e.clone()),
        }
    }
}

/// One connection's protocol state (see the [module docs](self)).
#[derive(Debug)]
pub struct PeerCore {
    config: Arc<CoreConfig>,
    codec: PacketCodec,
    phase: Phase,
    remote: Option<Box<Version>>,
    secret: [u8; 16],
    keepalive: Option<Keepalive>,
    /// Handshake messages and the goodbye, written before anything else, in order.
    control_out: VecDeque<Packet>,
    sched: Scheduler,
    /// Credit given back per channel in answer to `Reclaim`s, not yet written.
    releases: Vec<(u8, u64)>,
    /// Credit and `Reclaim` packets decided on a timeout, not yet written.
    flow_out: Vec<Packet>,
    flow: RecvFlow,
    reassembly: Reassembler,
    inbox: Inboxes,
    services: Services,
    intro: IntrospectState,
    stall: StallTracker,
    /// The remote's requests our services hold.
    inbound: InboundRequests,
    /// Channels whose sender was told `Full` for lack of request slots.
    request_waiters: Vec<u8>,
    send_rate: Option<TokenBucket>,
    send_rate_wait: Option<Instant>,
    in_flight: InFlight,
    events: VecDeque<Event>,
    timers: TimerTable,
    handshake_deadline: Instant,
    /// The next offers are the ones made as the connection comes up (answered by the
    /// handshake deadline).
    setup_offers: bool,
    /// When the core started (our `Version` was queued).
    started: Instant,
    bytes_read: u64,
    bytes_written: u64,
    /// A `Msg` packet of a message of several chunks whose payload is still arriving:
    /// the next bytes of the stream are its payload (see [`handle_read`](Self::handle_read)).
    direct: Option<Direct>,
    /// The last packet read was a chunk taken in pieces: large messages are coming,
    /// and the next read should stop after a header (see [`read_hint`](Self::read_hint)).
    read_direct: bool,
}

/// Payloads of at least this many bytes still to come are read straight into their
/// message when the runtime asks ([`PeerCore::take_read_buffer`]).
pub const DIRECT_READ_MIN: usize = 4 << 10;

/// Whole messages of at least this many bytes read whole get a buffer of their own
/// rather than a slice of the read buffer (see [`PeerCore::handle_read`]).
pub const COPY_OUT_MIN: usize = 4 << 10;

/// The largest `Msg` header: type, channel, flags, request id, total, length.
pub const MAX_MSG_HEADER: usize = MSG_HEADER_LEN_WITH_ID + 4;

/// A `Msg` packet being taken in pieces as its payload arrives.
#[derive(Debug, Clone, Copy)]
struct Direct {
    channel: u8,
    kind: MsgKind,
    /// The packet ends its message.
    eof: bool,
    /// The packet's `total`, until its first piece was handled.
    total: Option<u32>,
    /// Payload bytes still to come.
    remaining: usize,
}

impl Direct {
    /// The next piece of the packet: `len` more payload bytes, ending the packet when
    /// they are all that remained.
    fn piece(&mut self, payload: Bytes) -> Msg {
        self.remaining -= payload.len().min(self.remaining);
        Msg {
            channel: self.channel,
            eof: self.eof && self.remaining == 0,
            kind: self.kind,
            total: self.total.take(),
            payload,
        }
    }
}

impl PeerCore {
    /// A connection starting at `now`: our `Version` is queued; growth of its receive
    /// windows is leased from `budget` (shared by the node's connections).
    #[must_use]
    pub fn new(
        now: Instant,
        config: Arc<CoreConfig>,
        params: ConnParams,
        budget: Arc<RecvBudget>,
    ) -> Self {
        let limits = &config.limits;
        let mut sched = Scheduler::new(limits.max_packet_payload);
        sched.add_control_channel(CONTROL_CHANNEL, &config.control);
        let mut reassembly =
            Reassembler::with_budget(limits.max_reassembly_bytes).recycling(config.recycle.clone());
        reassembly.add_channel(CONTROL_CHANNEL, MAX_CONTROL_MESSAGE);
        let flow = RecvFlow::new(
            now,
            limits.max_packet_payload,
            &[],
            budget,
            limits.recv_window_idle,
            limits.recv_rate,
        );
        let send_rate = limits
            .send_rate
            .map(|r| TokenBucket::new(now, r, (r / 10).max(limits.write_batch_bytes as u64)));
        let mut control_out = VecDeque::new();
        control_out.push_back(control_packet(&Control::Version(params.local.clone())));
        let handshake_deadline = now + limits.handshake_timeout;
        let mut core = PeerCore {
            codec: PacketCodec::new(limits.max_packet_payload),
            phase: Phase::Handshake(Some(Handshake::AwaitVersion(AwaitVersion::new(
                params.local,
                params.expected,
            )))),
            remote: None,
            secret: params.secret,
            keepalive: None,
            control_out,
            sched,
            releases: Vec::new(),
            flow_out: Vec::new(),
            flow,
            reassembly,
            inbox: Inboxes::default(),
            services: Services::new(now, &params.services),
            intro: IntrospectState::new(now),
            stall: StallTracker::new(),
            inbound: InboundRequests::default(),
            request_waiters: Vec::new(),
            send_rate,
            send_rate_wait: None,
            in_flight: InFlight::default(),
            events: VecDeque::new(),
            timers: TimerTable::default(),
            handshake_deadline,
            setup_offers: true,
            started: now,
            bytes_read: 0,
            bytes_written: 0,
            direct: None,
            read_direct: false,
            config,
        };
        core.refresh_timers();
        core
    }

    // ----- queries -----------------------------------------------------------------

    /// The remote's `Version`, once the handshake completed.
    #[must_use]
    pub fn remote(&self) -> Option<&Version> {
        self.remote.as_deref()
    }

    /// Whether the handshake completed and the connection is not closing.
    #[must_use]
    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Active)
    }

    /// Whether the connection is closing or closed (sends fail).
    #[must_use]
    pub fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing(_) | Phase::Closed)
    }

    /// Whether the connection is over.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The reason the connection is closing or closed for.
    #[must_use]
    pub fn close_reason(&self) -> Option<&DisconnectReason> {
        match &self.phase {
            Phase::Closing(c) => Some(&c.reason),
            _ => None,
        }
    }

    /// The node's connection limits.
    #[must_use]
    pub fn limits(&self) -> &Config {
        &self.config.limits
    }

    /// Counters and windows of one channel.
    #[must_use]
    pub fn channel_info(&self, channel: u8) -> Option<ChannelInfo> {
        let send = self.sched.stats(self.services.send_id(channel)?)?;
        Some(ChannelInfo {
            send,
            recv: self.flow.stats(channel).unwrap_or_default(),
            queued: self.inbox.len(channel),
        })
    }

    /// Whether the remote receives on our `channel` (its service is up here).
    #[must_use]
    pub fn accepts(&self, channel: u8) -> bool {
        self.services.send_id(channel).is_some()
    }

    /// Bytes this connection holds for received data: received and not yet consumed
    /// (complete or partial), and allocated for partial messages.
    #[must_use]
    pub fn buffered_bytes(&self) -> (u64, usize) {
        (self.flow.buffered(), self.reassembly.allocated())
    }

    /// Payload bytes of complete messages waiting for their services.
    #[must_use]
    pub fn queued_bytes(&self) -> usize {
        self.inbox.bytes()
    }

    /// Bytes read and written so far.
    #[must_use]
    pub fn traffic(&self) -> (u64, u64) {
        (self.bytes_read, self.bytes_written)
    }

    /// Round-trip time of the last answered ping.
    #[must_use]
    pub fn rtt(&self) -> Option<Duration> {
        self.keepalive.as_ref().and_then(Keepalive::last_rtt)
    }

    // ----- inputs ------------------------------------------------------------------

    /// Bytes were read into `buf`: every complete packet is taken from its front and
    /// handled; an incomplete one stays for the next read. Payloads of whole messages
    /// under [`COPY_OUT_MIN`] bytes are slices of `buf` (no copy); larger ones are
    /// copied into buffers of their own, so that `buf` can be read into again at once
    /// (a slice would keep all of it from being reused until the service dropped the
    /// message); payloads taken in pieces go straight into their message's buffer.
    ///
    /// A chunk of a message of several chunks whose header has arrived but not its
    /// payload is taken in pieces as the payload arrives, each appended to its message
    /// (for the runtime, these are the bytes it can read straight into the message:
    /// [`take_read_buffer`](Self::take_read_buffer)). Every check of a whole packet
    /// applies to the header when it arrives, and every check of credit and of the
    /// message's size applies to each piece.
    pub fn handle_read(&mut self, now: Instant, buf: &mut BytesMut) {
        self.check_time(now);
        let before = buf.len();
        while !self.is_closed() {
            if let Some(d) = &mut self.direct {
                if buf.is_empty() && d.total.is_none() {
                    break;
                }
                let take = d.remaining.min(buf.len());
                let piece = d.piece(buf.split_to(take).freeze());
                if d.remaining == 0 {
                    self.direct = None;
                }
                self.handle_packet(now, Packet::Msg(piece));
                continue;
            }
            match self.codec.decode(buf) {
                Ok(Some(mut packet)) => {
                    // A message's chunk read whole: large chunks may have stopped
                    // coming (keepalive and credit packets say nothing of it).
                    if let Packet::Msg(msg) = &mut packet {
                        self.read_direct = false;
                        self.copy_out(msg);
                    }
                    self.handle_packet(now, packet);
                }
                Ok(None) => {
                    if !self.start_direct(buf) {
                        break;
                    }
                }
                Err(e) => {
                    buf.clear();
                    self.fail(now, DisconnectReason::from(e));
                    break;
                }
            }
        }
        if self.is_closed() {
            buf.clear();
        }
        self.bytes_read += (before - buf.len()) as u64;
        self.refresh_timers();
    }

    /// Gives the payload of a whole message read whole a buffer of its own when it is
    /// [`COPY_OUT_MIN`] bytes or more (from the node's pool, see
    /// [`recycle`](self::recycle)). As a slice of the read buffer, it would keep the
    /// whole buffer from being read into again until its service dropped it, and
    /// under bulk traffic every read would then take fresh memory, paging it in at
    /// one fault per page: copying it out of a buffer the CPU just wrote is cheaper
    /// (on loopback, 64 KiB messages moved 1.4 times faster).
    fn copy_out(&self, msg: &mut Msg) {
        if !msg.eof || msg.total.is_some() || msg.payload.len() < COPY_OUT_MIN {
            return;
        }
        let pool = &self.config.recycle;
        let mut own = pool.take(msg.payload.len(), usize::MAX);
        own.extend_from_slice(&msg.payload);
        msg.payload = pool.freeze(own);
    }

    /// With a `Msg` header at the front of `buf` whose payload has not all arrived,
    /// takes the header when the packet belongs to a message of several chunks and
    /// enough payload is still to come: the payload is then taken in pieces.
    fn start_direct(&mut self, buf: &mut BytesMut) -> bool {
        if !self.is_active() {
            return false;
        }
        let Ok(Some(head)) = self.codec.decode_msg_head(buf) else {
            return false;
        };
        let here = buf.len().saturating_sub(head.header);
        if head.channel == CONTROL_CHANNEL || head.len.saturating_sub(here) < DIRECT_READ_MIN {
            return false;
        }
        let fits = match self.reassembly.partial_room(head.channel) {
            // The first chunk: its `total` sets up the message (checked as it is taken).
            None => head.total.is_some(),
            // A later chunk that fits its message (else it is refused whole, as usual).
            Some((kind, room)) => head.total.is_none() && kind == head.kind && head.len <= room,
        };
        if !fits {
            return false;
        }
        buf.advance(head.header);
        self.read_direct = true;
        self.direct = Some(Direct {
            channel: head.channel,
            kind: head.kind,
            eof: head.eof,
            total: head.total,
            remaining: head.len,
        });
        true
    }

    /// When the next bytes of the stream are the payload of a message being put
    /// together, lends out that message's buffer so the runtime can read them straight
    /// into it (no copy): the buffer, and the most bytes to read into it. It must come
    /// back through [`handle_direct_read`](Self::handle_direct_read) before the next
    /// [`handle_read`](Self::handle_read). `None`: read into the read buffer as usual.
    pub fn take_read_buffer(&mut self) -> Option<(BytesMut, usize)> {
        let d = self.direct.as_ref()?;
        if d.total.is_some() || d.remaining < DIRECT_READ_MIN || !self.is_active() {
            return None;
        }
        let (channel, remaining) = (d.channel, d.remaining);
        let buf = self.reassembly.lend(channel)?;
        Some((buf, remaining))
    }

    /// The buffer from [`take_read_buffer`](Self::take_read_buffer) comes back, with
    /// what was read appended (maybe nothing).
    pub fn handle_direct_read(&mut self, now: Instant, buf: BytesMut) {
        self.check_time(now);
        let Some(d) = &mut self.direct else {
            return;
        };
        let channel = d.channel;
        let lent = self.reassembly.partial_len(channel);
        let n = buf.len().saturating_sub(lent).min(d.remaining);
        d.remaining -= n;
        let eof = d.eof && d.remaining == 0;
        if d.remaining == 0 {
            self.direct = None;
        }
        self.bytes_read += n as u64;
        let result = if self.is_active() {
            if let Some(k) = &mut self.keepalive {
                k.on_receive(now);
            }
            let cost = n as u64 + if eof { MESSAGE_COST } else { 0 };
            self.flow
                .on_data(now, channel, cost)
                .and_then(|()| self.reassembly.give_back(channel, buf, eof))
                .and_then(|msg| msg.map_or(Ok(()), |m| self.on_message(now, m)))
        } else {
            let _ = self.reassembly.give_back(channel, buf, false);
            Ok(())
        };
        if let Err(reason) = result {
            self.fail(now, reason);
        }
        self.refresh_timers();
    }

    /// The whole size of the packet at the front of `buf` once its header is there
    /// (see [`PacketCodec::frame_len`]): the room a read buffer needs for it.
    #[must_use]
    pub fn frame_len(&self, buf: &[u8]) -> Option<usize> {
        self.codec.frame_len(buf)
    }

    /// The most bytes the next read into the read buffer should take, when a larger
    /// read would copy payload that could go straight into its message: the rest of a
    /// payload too short to lend out plus the next packet's header, or just a header
    /// after a chunk taken in pieces (until a data packet read whole says that large
    /// messages may have stopped coming).
    #[must_use]
    pub fn read_hint(&self) -> Option<usize> {
        match &self.direct {
            Some(d) => Some(d.remaining + MAX_MSG_HEADER),
            None => self.read_direct.then_some(MAX_MSG_HEADER),
        }
    }

    /// The runtime read everything the socket held (a read would block now). A
    /// receiver that never gets here is what limits the transfer, and its windows do
    /// not grow for speed (see [`flow`]).
    pub fn handle_drained(&mut self, now: Instant) {
        let _ = now;
        self.flow.on_drained();
    }

    /// The remote closed its write half; `buf` holds what was left unparsed.
    pub fn handle_eof(&mut self, now: Instant, buf: &mut BytesMut) {
        self.check_time(now);
        self.handle_read(now, buf);
        if let Some(d) = self.direct.take() {
            let have = buf.len();
            buf.clear();
            self.fail(
                now,
                DisconnectReason::from(CodecError::Truncated {
                    have,
                    need: have + d.remaining,
                }),
            );
        }
        match self.codec.decode_eof(buf) {
            Ok(Some(packet)) => self.handle_packet(now, packet),
            Ok(None) => {}
            Err(e) => self.fail(now, DisconnectReason::from(e)),
        }
        buf.clear();
        match &mut self.phase {
            Phase::Closed => {}
            Phase::Closing(c) => {
                c.read_done = true;
                self.maybe_finish();
            }
            _ => {
                self.close(now, DisconnectReason::ConnectionClosed, false);
                if let Phase::Closing(c) = &mut self.phase {
                    c.read_done = true;
                }
                self.maybe_finish();
            }
        }
        self.refresh_timers();
    }

    /// Reading or writing the socket failed: the connection is over at once.
    pub fn handle_io_error(&mut self, now: Instant, error: &str) {
        let _ = now;
        let reason = match &self.phase {
            Phase::Closing(c) => c.reason.clone(),
            _ => DisconnectReason::Io(error.to_owned()),
        };
        self.finish(reason);
    }

    /// The transport under the core failed (a frame did not decrypt, say): the
    /// connection closes with `reason`.
    pub fn handle_transport_error(&mut self, now: Instant, reason: DisconnectReason) {
        self.check_time(now);
        self.fail(now, reason);
    }

    /// The secure transport proved that the remote holds the key of `id` (call it
    /// before feeding any bytes): the remote's `Version` must then carry `id`
    /// ([`HandshakeError::UnprovenId`](handshake::HandshakeError::UnprovenId)
    /// otherwise), and a dial of `ID@HOST:PORT` where another key answered closes at
    /// once with [`IdentityMismatch`](handshake::HandshakeError::IdentityMismatch).
    pub fn handle_authenticated(&mut self, now: Instant, id: NodeId) {
        self.check_time(now);
        let Phase::Handshake(Some(Handshake::AwaitVersion(state))) = &mut self.phase else {
            return;
        };
        if let Err(e) = state.prove(id) {
            self.fail(now, DisconnectReason::Handshake(e));
        }
    }

    /// When the whole handshake must be done: the transport's, `Version`/`Verack`,
    /// and the answers to the services offered when the connection came up.
    #[must_use]
    pub fn handshake_deadline(&self) -> Instant {
        self.handshake_deadline
    }

    /// The deadline from [`poll_timeout`](Self::poll_timeout) passed (or any time:
    /// only what is due is done).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.check_time(now);
        self.refresh_timers();
    }

    /// Everything handed out by `poll_transmit` so far is in the socket.
    pub fn handle_written(&mut self, now: Instant) {
        let flight = std::mem::take(&mut self.in_flight);
        if flight.ping {
            if let Some(k) = &mut self.keepalive {
                k.on_ping_written(now);
            }
        }
        for id in flight.requests {
            self.stall.on_written(now, id);
        }
        if flight.goodbye {
            if let Phase::Closing(c) = &mut self.phase {
                c.goodbye_due = false;
            }
        }
        self.check_time(now);
        self.refresh_timers();
    }

    /// The service of `channel` took messages handed out with [`recv`](Self::recv)
    /// costing `cost` (the sum of their [`Message::cost`]): their credit can go back
    /// to the remote. For a consumer that takes messages one by one; a runtime that
    /// hands batches to a bounded mailbox reports with
    /// [`handle_delivered`](Self::handle_delivered) instead.
    pub fn handle_consumed(&mut self, now: Instant, channel: u8, cost: u64) {
        // What was handed out and not reported stays the service's to take.
        let keep = self.inbox.handed(channel).saturating_sub(cost);
        let taken = self.inbox.settle(channel, keep);
        self.credit_consumed(now, channel, taken);
    }

    /// What the service's mailbox did with the messages of `channel` handed out with
    /// [`recv`](Self::recv): it took all of them except `unsent`, which go back to the
    /// front of the channel's queue in order, and except a hand-over of `waiting` cost
    /// (one message or batch) still waiting for room in the mailbox. Credit goes back
    /// for what it took. While a hand-over waits, the channel's consumer is paused
    /// (its queue is compacted if that lasts, see `inbox`);
    /// [`handle_handover`](Self::handle_handover) reports it taken.
    pub fn handle_delivered(
        &mut self,
        now: Instant,
        channel: u8,
        unsent: impl DoubleEndedIterator<Item = Message>,
        waiting: u64,
    ) {
        for m in unsent.rev() {
            self.inbox.push_front(channel, m);
        }
        let taken = self.inbox.settle(channel, waiting);
        self.inbox.set_waiting(channel, waiting);
        if waiting > 0 {
            self.inbox.set_paused(now, channel, true);
        }
        self.credit_consumed(now, channel, taken);
    }

    /// The hand-over that waited for room in `channel`'s mailbox was taken: its credit
    /// goes back and the consumer resumes.
    pub fn handle_handover(&mut self, now: Instant, channel: u8) {
        let waiting = self.inbox.set_waiting(channel, 0);
        let keep = self.inbox.handed(channel).saturating_sub(waiting);
        let taken = self.inbox.settle(channel, keep);
        self.inbox.set_paused(now, channel, false);
        self.credit_consumed(now, channel, taken);
    }

    /// Whether a hand-over of `channel` waits for room in its service's mailbox
    /// (reported with [`handle_delivered`](Self::handle_delivered), not yet taken with
    /// [`handle_handover`](Self::handle_handover)): until it is taken, the runtime
    /// hands that channel nothing more, so its messages stay in order.
    #[must_use]
    pub fn is_handing_over(&self, channel: u8) -> bool {
        self.inbox.is_waiting(channel)
    }

    /// Whether a hand-over of any channel waits for room (see
    /// [`is_handing_over`](Self::is_handing_over)).
    #[must_use]
    pub fn handing_over(&self) -> bool {
        self.inbox.any_waiting()
    }

    fn credit_consumed(&mut self, now: Instant, channel: u8, cost: u64) {
        if self.is_active() && cost > 0 {
            self.flow.on_consumed(now, channel, cost);
        }
        self.check_time(now);
        self.refresh_timers();
    }

    /// Marks `channel`'s consumer paused (its service cannot take more now) or not.
    /// A queue paused for a while is compacted (see `inbox`).
    pub fn set_consumer_paused(&mut self, now: Instant, channel: u8, paused: bool) {
        self.inbox.set_paused(now, channel, paused);
        self.refresh_timers();
    }

    // ----- commands ----------------------------------------------------------------

    /// Whether a message of `len` bytes would be queued on `channel` now. A `Full`
    /// answer means the caller waits: an [`Event::Room`] follows once there is room.
    ///
    /// `channel` is ours: the message goes out on the remote's id for it. A channel
    /// whose service is not up on this connection fails with
    /// [`PushError::ServiceNotUp`].
    pub fn check_send(&mut self, channel: u8, len: usize) -> Result<(), PushError> {
        let remote = self.send_channel(channel)?;
        let result = self.sched.check(remote, len);
        if result == Err(PushError::Full) {
            self.sched.mark_full(remote);
        }
        result
    }

    /// The remote's id for our `channel`, or why nothing can be sent on it.
    fn send_channel(&self, channel: u8) -> Result<u8, PushError> {
        if !self.is_active() {
            return Err(PushError::Closed);
        }
        if channel == CONTROL_CHANNEL {
            return Err(PushError::UnknownChannel(channel));
        }
        self.services
            .send_id(channel)
            .ok_or(PushError::ServiceNotUp(channel))
    }

    /// Queues a message on `channel`, or says why not (nothing is queued then).
    pub fn send(&mut self, channel: u8, payload: Bytes) -> Result<(), PushError> {
        self.push(channel, MsgKind::Plain, payload)
    }

    /// Queues payloads from the front of `run` on `channel`, in order, while they fit
    /// (for a sender with many messages, under one lock). It stops at the first that
    /// does not: `Full` leaves it at the front of `run` to go on with after
    /// [`Event::Room`]; any other error is that payload's, and those before it stay
    /// queued.
    #[must_use = "a run may stop before its end"]
    pub fn send_run(&mut self, channel: u8, run: &mut VecDeque<Bytes>) -> RunSent {
        let (queued, stopped) = match self.send_channel(channel) {
            Ok(remote) => self.sched.push_run(remote, run),
            Err(e) => (0, Some(e)),
        };
        RunSent { queued, stopped }
    }

    fn push(&mut self, channel: u8, kind: MsgKind, payload: Bytes) -> Result<(), PushError> {
        let remote = self.send_channel(channel)?;
        self.sched.push(remote, kind, payload)
    }

    /// Queues a request; returns its id. Its stall deadline (`timeout`) starts when
    /// its last byte has been written, not now. Its answer comes as
    /// [`Event::Response`] or [`Event::RequestRejected`], or it stalls
    /// ([`Event::RequestStalled`]). With the channel's `requests_in_flight` waiting
    /// for answers it is `Full`, and [`Event::Room`] follows when one ends.
    pub fn send_request(
        &mut self,
        channel: u8,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<u32, PushError> {
        self.check_send(channel, payload.len())?;
        let cap = self
            .services
            .config(channel)
            .map_or(1, |c| c.requests_in_flight);
        if self.stall.in_flight(channel) >= cap {
            if !self.request_waiters.contains(&channel) {
                self.request_waiters.push(channel);
            }
            return Err(PushError::Full);
        }
        let id = self.stall.register(channel, timeout);
        if let Err(e) = self.push(channel, MsgKind::Request(id), payload) {
            self.stall.cancel(id);
            return Err(e);
        }
        Ok(id)
    }

    /// Queues the response to the remote's request `request_id` on `channel`, which
    /// our service holds (else [`PushError::NoSuchRequest`]). Never `Full`: answers
    /// are bounded by the channel's `inbound_requests`.
    pub fn send_response(
        &mut self,
        channel: u8,
        request_id: u32,
        payload: Bytes,
    ) -> Result<(), PushError> {
        if !self.inbound.is_open(channel, request_id) {
            return Err(PushError::NoSuchRequest(request_id));
        }
        let remote = self.send_channel(channel)?;
        self.sched
            .push_answer(remote, MsgKind::Response(request_id), payload)?;
        self.inbound.close(channel, request_id);
        Ok(())
    }

    /// Refuses the remote's request `request_id` on `channel` (our service let it go
    /// unanswered): its caller learns at once instead of waiting for its deadline.
    pub fn refuse_request(&mut self, channel: u8, request_id: u32, refusal: Refusal) {
        if !self.inbound.is_open(channel, request_id) {
            return;
        }
        self.inbound.close(channel, request_id);
        if let Ok(remote) = self.send_channel(channel) {
            let code = Bytes::copy_from_slice(&[refusal.code()]);
            let _ = self
                .sched
                .push_answer(remote, MsgKind::Rejected(request_id), code);
        }
    }

    /// One of our requests on `channel` ended: a sender told `Full` for lack of
    /// request slots hears of room.
    fn request_ended(&mut self, channel: u8) {
        if let Some(i) = self.request_waiters.iter().position(|c| *c == channel) {
            self.request_waiters.swap_remove(i);
            self.events.push_back(Event::Room(channel));
        }
    }

    /// Sends a ping now (unless one is outstanding); its answer updates
    /// [`rtt`](Self::rtt).
    pub fn ping(&mut self, now: Instant) {
        if let Some(k) = &mut self.keepalive {
            k.ping_now(now);
        }
        self.refresh_timers();
    }

    /// Gives up waiting for the response to `request_id` (an answer to it is then
    /// dropped quietly).
    pub fn cancel_request(&mut self, channel: u8, request_id: u32) {
        self.stall.cancel(request_id);
        self.request_ended(channel);
    }

    /// Refuses the remote before the handshake said anything (the node will not have
    /// it, as soon as the transport proved who it is): closes like
    /// [`close`](Self::close) without flush, and while none of our bytes have been
    /// handed out yet, our queued `Version` is dropped, so the remote reads only the
    /// `Goodbye` with `reason`.
    pub fn refuse(&mut self, now: Instant, reason: DisconnectReason) {
        if matches!(self.phase, Phase::Handshake(_)) && self.bytes_written == 0 {
            self.control_out.clear();
        }
        self.close(now, reason, false);
    }

    /// Closes the connection with `reason`. With `flush`, what is queued is written
    /// first (within the credit the remote gives and the `linger` deadline); then a
    /// `Goodbye` tells the remote why, the write half is shut, and the core waits for
    /// the remote to close its side. Only the first reason counts.
    pub fn close(&mut self, now: Instant, reason: DisconnectReason, flush: bool) {
        match &mut self.phase {
            Phase::Closed => return,
            Phase::Closing(c) => {
                if !flush && c.flush {
                    c.flush = false;
                    self.sched.clear();
                }
                return;
            }
            _ => {}
        }
        let goodbye_due = !matches!(reason, DisconnectReason::ByRemote(_));
        if !flush {
            self.sched.clear();
        }
        self.keepalive = None;
        self.phase = Phase::Closing(Closing {
            reason,
            flush,
            goodbye_due,
            shutdown: false,
            read_done: false,
            deadline: now + self.config.limits.linger,
        });
        // Senders waiting for room must learn the connection is closing.
        for id in 1..=u8::MAX {
            if self.services.send_id(id).is_some() {
                self.events.push_back(Event::Room(id));
            }
        }
        self.refresh_timers();
    }

    // ----- outputs -----------------------------------------------------------------

    /// Appends what should be written now to `out`, until it holds at least `limit`
    /// bytes or there is nothing more; returns whether anything was added. Handshake
    /// and goodbye messages come first, then pongs, pings and credit, then message
    /// chunks by priority within their credit.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Transmit, limit: usize) -> bool {
        self.check_time(now);
        let before = out.len();
        if matches!(self.phase, Phase::Closed) {
            return false;
        }
        while let Some(p) = self.control_out.pop_front() {
            push_packet(out, p);
        }
        if let Some(k) = &mut self.keepalive {
            if let Some(nonce) = k.take_pong() {
                out.push_packet(&Packet::Pong(nonce));
            }
            if let Some(nonce) = k.take_ping() {
                // First in the transmit: its bytes reach the socket with the next
                // write. (Waiting for the whole transmit to be written would count a
                // large write's time against the round trip, or worse, end the
                // measurement after the pong had arrived.)
                out.push_packet(&Packet::Ping(nonce));
                k.on_ping_written(now);
                self.in_flight.ping = true;
            }
        }
        for (channel, bytes) in self.releases.drain(..) {
            let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
            out.push_packet(&Packet::Release { channel, bytes });
        }
        for p in self.flow_out.drain(..) {
            out.push_packet(&p);
        }
        if self.is_active() {
            let reassembly = &self.reassembly;
            self.flow
                .poll_grants(now, |c| partial_cost(reassembly, c), &mut |p| {
                    out.push_packet(&p)
                });
        }
        let sending = match &self.phase {
            Phase::Active => true,
            Phase::Closing(c) => c.flush,
            _ => false,
        };
        if sending {
            self.transmit_chunks(now, out, limit);
        }
        if let Phase::Closing(c) = &mut self.phase {
            if c.goodbye_due && !self.in_flight.goodbye && (!c.flush || self.sched.is_empty()) {
                push_packet(out, control_packet(&Control::Goodbye(c.reason.clone())));
                self.in_flight.goodbye = true;
            }
        }
        while let Some(remote) = self.sched.poll_room() {
            if let Some(channel) = self.services.local_of(remote) {
                self.events.push_back(Event::Room(channel));
            }
        }
        let added = out.len() - before;
        self.bytes_written += added as u64;
        if added > 0 {
            if let Some(rate) = &mut self.send_rate {
                rate.take(now, added as u64);
            }
        }
        self.refresh_timers();
        added > 0
    }

    fn transmit_chunks(&mut self, now: Instant, out: &mut Transmit, limit: usize) {
        self.send_rate_wait = None;
        if let Some(rate) = &mut self.send_rate {
            if rate.available(now) == 0 {
                if self.sched.can_send() {
                    self.send_rate_wait = Some(rate.ready_at(now, 1));
                }
                return;
            }
        }
        while out.len() < limit {
            let sched = &mut self.sched;
            let chunk = match out.push_with(|buf| sched.poll_next(buf)) {
                None => break,
                Some(Next::Chunk(chunk)) => chunk,
                Some(Next::Batch {
                    channel,
                    messages,
                    bytes,
                }) => {
                    if let Some(local) = self.services.local_of(channel) {
                        self.intro.on_sent(local, messages as u64, bytes);
                    }
                    continue;
                }
            };
            if let (true, MsgKind::Request(id)) = (chunk.eof, chunk.kind) {
                self.in_flight.requests.push(id);
            }
            if let Some(local) = self.services.local_of(chunk.channel) {
                self.intro
                    .on_sent(local, u64::from(chunk.eof), chunk.payload.len());
            }
            out.push_chunk(chunk);
        }
    }

    /// Whether the write half should be shut down now (once: everything owed,
    /// goodbye included, has been written).
    pub fn poll_shutdown(&mut self) -> bool {
        let Phase::Closing(c) = &mut self.phase else {
            return false;
        };
        let done = !c.shutdown
            && !c.goodbye_due
            && (!c.flush || self.sched.is_empty())
            && self.control_out.is_empty()
            && self.in_flight.is_empty();
        if done {
            c.shutdown = true;
            self.maybe_finish();
        }
        done
    }

    /// Whether an event waits for [`poll_event`](Self::poll_event).
    #[must_use]
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next complete message of `channel`, oldest first, for its service. Its
    /// credit goes back to the remote once [`handle_consumed`](Self::handle_consumed)
    /// or [`handle_delivered`](Self::handle_delivered) reports it taken.
    pub fn recv(&mut self, channel: u8) -> Option<Message> {
        self.inbox.pop(channel)
    }

    /// Moves up to `most` of `channel`'s next messages to the back of `out`, oldest
    /// first, as [`recv`](Self::recv) would one by one; returns how many.
    pub fn recv_many(&mut self, channel: u8, most: usize, out: &mut VecDeque<Message>) -> usize {
        self.inbox.pop_many(channel, most, out)
    }

    /// Moves the payloads of up to `most` of `channel`'s next messages to `out`, as
    /// [`recv`](Self::recv) would one by one, as long as they are plain messages (it
    /// stops before a request or an answer, which [`recv`](Self::recv) hands out);
    /// returns their cost, for [`handle_delivered`](Self::handle_delivered) to report
    /// what of it still waits for room.
    pub fn recv_payloads(&mut self, channel: u8, most: usize, out: &mut Vec<Bytes>) -> u64 {
        self.inbox.pop_payloads(channel, most, out)
    }

    /// Channels with messages waiting.
    pub fn readable(&self) -> impl Iterator<Item = u8> + '_ {
        self.inbox.readable()
    }

    /// Whether anything received is still on its way to a service: a channel is
    /// readable or a hand-over waits for room. A runtime keeps a closed connection
    /// (within its linger time) until this is false, so nothing that arrived before
    /// the close is lost.
    #[must_use]
    pub fn has_undelivered(&self) -> bool {
        self.handing_over() || self.inbox.readable().next().is_some()
    }

    /// The earliest deadline: call [`handle_timeout`](Self::handle_timeout) then.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ----- internals ---------------------------------------------------------------

    fn refresh_timers(&mut self) {
        let t = &mut self.timers;
        t.clear();
        match &self.phase {
            Phase::Handshake(_) => t.set(Timer::Handshake, Some(self.handshake_deadline)),
            Phase::Active => {
                t.set(
                    Timer::Keepalive,
                    self.keepalive.as_ref().map(Keepalive::poll_timeout),
                );
                t.set(Timer::Stall, self.stall.next_deadline());
                t.set(Timer::Flow, self.flow.poll_timeout());
                t.set(Timer::Compact, self.inbox.poll_timeout());
                t.set(Timer::SendRate, self.send_rate_wait);
                t.set(Timer::ServiceOffer, self.services.next_deadline());
            }
            Phase::Closing(c) => {
                t.set(Timer::Linger, Some(c.deadline));
                t.set(Timer::SendRate, self.send_rate_wait);
            }
            Phase::Closed => {}
        }
    }

    /// Acts on every deadline due at `now`.
    fn check_time(&mut self, now: Instant) {
        let due: Vec<Timer> = self.timers.expired(now).collect();
        for timer in due {
            match timer {
                Timer::Handshake => {
                    if matches!(self.phase, Phase::Handshake(_)) && now >= self.handshake_deadline {
                        self.close(
                            now,
                            DisconnectReason::Handshake(handshake::HandshakeError::Timeout),
                            false,
                        );
                    }
                }
                Timer::Keepalive => {
                    if let Some(Err(reason)) =
                        self.keepalive.as_mut().map(|k| k.handle_timeout(now))
                    {
                        self.close(now, reason, false);
                    }
                }
                Timer::Stall => {
                    while let Some(s) = self.stall.on_tick(now) {
                        self.events.push_back(Event::RequestStalled {
                            channel: s.channel,
                            request_id: s.request_id,
                        });
                        self.request_ended(s.channel);
                        let close = self
                            .services
                            .config(s.channel)
                            .is_none_or(|c| c.close_on_stall);
                        if close {
                            self.close(
                                now,
                                DisconnectReason::Stalled {
                                    channel: s.channel,
                                    request_id: s.request_id,
                                },
                                false,
                            );
                            break;
                        }
                    }
                }
                Timer::Flow => {
                    if self.is_active() {
                        let reassembly = &self.reassembly;
                        let out = &mut self.flow_out;
                        self.flow
                            .handle_timeout(now, |c| partial_cost(reassembly, c), &mut |p| {
                                out.push(p)
                            });
                    }
                }
                Timer::Compact => self.inbox.handle_timeout(now),
                Timer::ServiceOffer => {
                    if let Some(name) = self.services.unanswered(now) {
                        let reason = DisconnectReason::ControlViolation(format!(
                            "no answer to our ServiceConnect for {name} by the deadline \
                             (the handshake's, or {:?} for a service attached later)",
                            self.config.limits.handshake_timeout
                        ));
                        self.close(now, reason, false);
                    }
                }
                // The writer may go on: the next poll_transmit sends.
                Timer::SendRate => self.send_rate_wait = None,
                Timer::Linger => {
                    if let Phase::Closing(c) = &self.phase {
                        if now >= c.deadline {
                            let reason = c.reason.clone();
                            self.finish(reason);
                        }
                    }
                }
            }
        }
        self.refresh_timers();
    }

    /// Closes for a fault of the remote (or of the link): no flush.
    fn fail(&mut self, now: Instant, reason: DisconnectReason) {
        self.close(now, reason, false);
    }

    /// A graceful close (with flush) ends when the remote has closed its side too, so
    /// that nothing either side wrote is cut off; any other close ends once our goodbye
    /// is written and our side shut.
    fn maybe_finish(&mut self) {
        if let Phase::Closing(c) = &self.phase {
            if c.shutdown && (c.read_done || !c.flush) {
                let reason = c.reason.clone();
                self.finish(reason);
            }
        }
    }

    /// The connection is over.
    fn finish(&mut self, reason: DisconnectReason) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.phase = Phase::Closed;
        self.keepalive = None;
        self.control_out.clear();
        self.sched.clear();
        self.reassembly.clear();
        self.timers.clear();
        self.events.push_back(Event::Closed(reason));
    }

    /// One packet from the remote.
    pub fn handle_packet(&mut self, now: Instant, packet: Packet) {
        match &self.phase {
            Phase::Handshake(_) => self.handshake_packet(now, packet),
            Phase::Active => {
                if let Some(k) = &mut self.keepalive {
                    k.on_receive(now);
                }
                if let Err(reason) = self.active_packet(now, packet) {
                    self.fail(now, reason);
                }
            }
            Phase::Closing(_) => self.closing_packet(packet),
            Phase::Closed => {}
        }
    }

    fn handshake_packet(&mut self, now: Instant, packet: Packet) {
        let Phase::Handshake(state) = &mut self.phase else {
            return;
        };
        let msg = match handshake_message(&packet) {
            Ok(Control::Goodbye(reason)) => {
                return self.remote_goodbye(now, reason);
            }
            Ok(msg) => msg,
            Err(e) => return self.fail(now, e.into()),
        };
        let Some(current) = state.take() else {
            return;
        };
        let step = match current {
            Handshake::AwaitVersion(s) => s.on_control(msg).map(Handshake::AwaitVerack),
            Handshake::AwaitVerack(s) => match s.on_control(msg) {
                Ok(remote) => return self.connected(now, remote),
                Err(e) => Err(e),
            },
        };
        match step {
            Ok(next) => {
                *state = Some(next);
                self.control_out.push_back(control_packet(&Control::Verack));
            }
            Err(e) => self.fail(now, e.into()),
        }
    }

    fn connected(&mut self, now: Instant, remote: Version) {
        // Our Version was queued when the core started and the remote's Verack answers
        // it: a first round-trip time, generous by the remote's handshake work.
        self.flow
            .on_rtt(now.saturating_duration_since(self.started));
        let limits = &self.config.limits;
        let mut keepalive = Keepalive::new(
            now,
            limits.ping_interval,
            limits.pong_timeout,
            limits.idle_timeout,
            self.secret,
        );
        // The handshake's round trip includes the remote's handshake work; a probe
        // measures the path itself.
        keepalive.probe(now);
        self.keepalive = Some(keepalive);
        self.remote = Some(Box::new(remote));
        self.phase = Phase::Active;
        self.intro.on_connected(now);
        self.events.push_back(Event::Connected);
        self.offer_due(now);
    }

    fn remote_goodbye(&mut self, now: Instant, reason: DisconnectReason) {
        self.close(now, DisconnectReason::ByRemote(Box::new(reason)), false);
    }

    fn active_packet(&mut self, now: Instant, packet: Packet) -> Result<(), DisconnectReason> {
        match packet {
            Packet::Ping(nonce) => self.keepalive_mut()?.on_ping(now, nonce),
            Packet::Pong(nonce) => {
                let keepalive = self.keepalive_mut()?;
                keepalive.on_pong(now, nonce)?;
                if let Some(rtt) = keepalive.last_rtt() {
                    self.flow.on_rtt(rtt);
                }
                Ok(())
            }
            Packet::Msg(m) if m.channel == CONTROL_CHANNEL => self.control_chunk(now, m),
            Packet::Msg(m) => self.data_chunk(now, m),
            Packet::Batch(b) => self.data_batch(now, &b),
            Packet::Credit { channel, bytes } => {
                user_channel(channel, "Credit")?;
                self.sched.add_credit(channel, u64::from(bytes));
                Ok(())
            }
            Packet::Reclaim { channel, bytes } => {
                user_channel(channel, "Reclaim")?;
                let given = self.sched.reclaim(channel, u64::from(bytes));
                match self.releases.iter_mut().find(|(c, _)| *c == channel) {
                    Some((_, total)) => *total = total.saturating_add(given),
                    None => self.releases.push((channel, given)),
                }
                Ok(())
            }
            Packet::Release { channel, bytes } => {
                user_channel(channel, "Release")?;
                self.flow.on_release(channel, bytes)
            }
        }
    }

    fn keepalive_mut(&mut self) -> Result<&mut Keepalive, DisconnectReason> {
        self.keepalive
            .as_mut()
            .ok_or_else(|| DisconnectReason::Io("keepalive missing while active".into()))
    }

    fn control_chunk(&mut self, now: Instant, m: Msg) -> Result<(), DisconnectReason> {
        let Some(msg) = self.reassembly.push(m)? else {
            return Ok(());
        };
        if msg.kind != MsgKind::Plain {
            return Err(DisconnectReason::ControlViolation(
                "request/response on channel 0".into(),
            ));
        }
        let control = control::decode(&msg.payload)
            .map_err(|e| DisconnectReason::ControlViolation(e.to_string()))?;
        check_after_handshake(&control)?;
        match control {
            Control::Goodbye(reason) => {
                self.remote_goodbye(now, reason);
                Ok(())
            }
            Control::IntrospectRequest | Control::IntrospectResponse(_) => {
                self.introspect_control(now, control)
            }
            other => self.service_control(now, other),
        }
    }

    fn data_chunk(&mut self, now: Instant, m: Msg) -> Result<(), DisconnectReason> {
        let cost = m.payload.len() as u64 + if m.eof { MESSAGE_COST } else { 0 };
        self.flow.on_data(now, m.channel, cost)?;
        let Some(msg) = self.reassembly.push(m)? else {
            return Ok(());
        };
        self.on_message(now, msg)
    }

    /// Whole small messages in one packet: counted and queued as if each had come in
    /// a `Msg` of its own.
    fn data_batch(&mut self, now: Instant, b: &Batch) -> Result<(), DisconnectReason> {
        let channel = b.channel();
        if channel == CONTROL_CHANNEL {
            return Err(DisconnectReason::ControlViolation(
                "a Batch on channel 0".into(),
            ));
        }
        let cost = b.payload_len() as u64 + b.count() as u64 * MESSAGE_COST;
        self.flow.on_data(now, channel, cost)?;
        self.reassembly.check_whole(channel, b.sizes())?;
        self.intro
            .on_received(channel, b.count() as u64, b.payload_len());
        if self.services.dropping(channel) {
            return Ok(());
        }
        if self.inbox.push_batch(b) {
            self.events.push_back(Event::Readable(channel));
        }
        Ok(())
    }

    /// A message is complete: it waits for its service, or answers a request of ours,
    /// or is a request refused at once.
    fn on_message(&mut self, now: Instant, msg: Message) -> Result<(), DisconnectReason> {
        let channel = msg.channel;
        self.intro.on_received(channel, 1, msg.payload.len());
        if self.services.dropping(channel) {
            // Its service is detached here and the remote has not answered yet.
            return Ok(());
        }
        match msg.kind {
            MsgKind::Plain => {}
            MsgKind::Request(id) => {
                let cap = self
                    .services
                    .config(channel)
                    .map_or(1, |c| c.inbound_requests);
                if self.inbound.on_request(channel, id, cap)? == Admit::Busy {
                    self.credit_consumed(now, channel, msg.cost());
                    let busy = Bytes::copy_from_slice(&[Refusal::Busy.code()]);
                    return self
                        .push(channel, MsgKind::Rejected(id), busy)
                        .map_err(|_| DisconnectReason::TooManyRequests(channel));
                }
            }
            MsgKind::Response(id) | MsgKind::Rejected(id) => {
                let refusal = match (msg.kind, &msg.payload[..]) {
                    (MsgKind::Response(_), _) => None,
                    (_, [code]) => Some(Refusal::from_code(*code).ok_or_else(|| {
                        DisconnectReason::Undecodable {
                            channel,
                            error: format!("refusal code {code}"),
                        }
                    })?),
                    (_, other) => {
                        return Err(DisconnectReason::Undecodable {
                            channel,
                            error: format!("refusal of {} bytes, not 1", other.len()),
                        })
                    }
                };
                let answer = self.stall.on_answer(channel, id)?;
                // Answers go to their callers, not through the service's queue: their
                // credit goes back at once.
                self.credit_consumed(now, channel, msg.cost());
                self.request_ended(channel);
                if answer == Answer::Expected {
                    self.events.push_back(match refusal {
                        None => Event::Response {
                            channel,
                            request_id: id,
                            payload: msg.payload,
                        },
                        Some(refusal) => Event::RequestRejected {
                            channel,
                            request_id: id,
                            refusal,
                        },
                    });
                }
                return Ok(());
            }
        }
        if self.inbox.push(msg) {
            self.events.push_back(Event::Readable(channel));
        }
        Ok(())
    }

    /// While closing: credit still counts (a flush needs it), reclaims are answered,
    /// the remote's goodbye is noted; data and keepalive are ignored.
    fn closing_packet(&mut self, packet: Packet) {
        match packet {
            Packet::Credit { channel, bytes } if channel != CONTROL_CHANNEL => {
                self.sched.add_credit(channel, u64::from(bytes));
            }
            Packet::Msg(m) if m.channel == CONTROL_CHANNEL && m.eof => {
                if let (Ok(Control::Goodbye(_)), Phase::Closing(c)) =
                    (control::decode(&m.payload), &mut self.phase)
                {
                    // The remote is closing too: it will not read a goodbye of ours.
                    c.goodbye_due = c.goodbye_due && self.in_flight.goodbye;
                }
            }
            _ => {}
        }
    }
}

/// The partial message on `channel`, in credit.
fn partial_cost(reassembly: &Reassembler, channel: u8) -> PartialCost {
    match reassembly.partial_sizes(channel) {
        (_, 0) => PartialCost::default(),
        (held, total) => PartialCost {
            held: held as u64,
            whole: message_cost(total),
        },
    }
}

fn user_channel(channel: u8, packet: &str) -> Result<(), DisconnectReason> {
    if channel == CONTROL_CHANNEL {
        return Err(DisconnectReason::FlowControl(format!(
            "{packet} for channel 0, which has no flow control"
        )));
    }
    Ok(())
}

fn control_packet(msg: &Control) -> Packet {
    Packet::Msg(Msg {
        channel: CONTROL_CHANNEL,
        eof: true,
        kind: MsgKind::Plain,
        total: None,
        payload: control::encode(msg),
    })
}

fn push_packet(out: &mut Transmit, packet: Packet) {
    match packet {
        Packet::Msg(m) => out.push_chunk(scheduler::Chunk {
            channel: m.channel,
            eof: m.eof,
            kind: m.kind,
            total: m.total,
            payload: m.payload,
        }),
        other => out.push_packet(&other),
    }
}

/// The bytes of a `Goodbye` packet for `reason`, for a connection refused before it
/// gets a core (a node over its limits tells the remote why, then closes).
#[must_use]
pub fn goodbye_bytes(reason: &DisconnectReason) -> Bytes {
    let mut out = Transmit::new();
    push_packet(&mut out, control_packet(&Control::Goodbye(reason.clone())));
    out.take_all().freeze()
}
