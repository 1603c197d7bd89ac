//! The test `Pair`: two `PeerCore`s joined by an in-memory link, with virtual time that
//! jumps to the next thing that can happen.
//!
//! Knobs: one-way `latency`, `bandwidth` (bytes per second each way), `read_size`
//! (most bytes per read), `capacity` (bytes a direction may hold unread: the two
//! socket buffers), a side not `reading`, and per channel a service not consuming.
//! Time never passes while something can still be done now; a test that waits for an
//! event runs in milliseconds of real time whatever the virtual time.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use switchyard_proto::config::{ChannelConfig, Config};
use switchyard_proto::connection::handshake::{ServiceInfo, Version, PROTOCOL_VERSION};
use switchyard_proto::connection::services::ServiceSpec;
use switchyard_proto::connection::{ConnParams, CoreConfig, Event, Message, RecvBudget, Transmit};
use switchyard_proto::secure::{Session, Suite};
use switchyard_proto::wire::codec::{Msg, MsgKind, Packet, PacketCodec};
use switchyard_proto::wire::control::{self, ChannelGrant, Control, ServiceOffer};
use switchyard_proto::{DisconnectReason, NodeId, PeerCore};
use tokio_util::codec::{Decoder, Encoder};

/// The start of every virtual clock.
pub fn t0() -> Instant {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    now
}

pub const BULK: u8 = 1;
pub const OTHER: u8 = 2;
pub const URGENT: u8 = 3;

/// Three channels: two of priority 1 and an urgent one of priority 100.
pub fn channels() -> Vec<(u8, ChannelConfig)> {
    channels_with(&Config::default())
}

/// The three channels with `limits`' defaults (and deep send queues).
pub fn channels_with(limits: &Config) -> Vec<(u8, ChannelConfig)> {
    vec![
        (BULK, limits.channel(1).send_queue(100_000, 1 << 30)),
        (OTHER, limits.channel(1).send_queue(100_000, 1 << 30)),
        (URGENT, limits.channel(100).send_queue(100_000, 1 << 30)),
    ]
}

pub fn version(id: u8) -> Version {
    Version {
        protocol: PROTOCOL_VERSION,
        network: "pair".into(),
        node_id: NodeId([id; 20]),
        listen_addr: None,
        services: vec![ServiceInfo {
            name: "test".into(),
            version: 1,
        }],
        user_agent: format!("side-{id}"),
        nonce: u64::from(id),
    }
}

/// The service every standard core runs: `test` 1.0 on `channels`.
pub fn test_service(channels: Vec<(u8, ChannelConfig)>) -> ServiceSpec {
    service("test", 1, channels)
}

/// A service spec.
pub fn service(name: &str, major: u32, channels: Vec<(u8, ChannelConfig)>) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        major,
        minor: 0,
        channels,
    }
}

/// Parameters of side `id` running `services`.
pub fn params(id: u8, services: Vec<ServiceSpec>) -> ConnParams {
    ConnParams {
        local: version(id),
        expected: None,
        secret: [id; 16],
        services: services.into_iter().map(Arc::new).collect(),
    }
}

/// A core for side `id` with `limits`, running the `test` service on `channels`.
pub fn core(
    now: Instant,
    id: u8,
    limits: &Config,
    channels: Vec<(u8, ChannelConfig)>,
    budget: Arc<RecvBudget>,
) -> PeerCore {
    core_with(
        now,
        limits,
        params(id, vec![test_service(channels)]),
        budget,
    )
}

/// A core with `limits` and `params`.
pub fn core_with(
    now: Instant,
    limits: &Config,
    params: ConnParams,
    budget: Arc<RecvBudget>,
) -> PeerCore {
    let config = Arc::new(CoreConfig::new(limits.clone()).expect("valid config"));
    PeerCore::new(now, config, params, budget)
}

/// One end of the pair.
pub struct Side {
    pub core: PeerCore,
    /// Whether this side reads its socket.
    pub reading: bool,
    /// Channels whose service does not consume.
    pub stalled: Vec<u8>,
    /// What each channel's service took, in order.
    pub received: BTreeMap<u8, Vec<Message>>,
    /// Every event, in order.
    pub events: Vec<Event>,
    /// Whether services answer each request at once with its own payload.
    pub auto_respond: bool,
    /// The pair's virtual time, as of the last drive.
    now: Instant,
    /// Bytes on their way to this side: (arrival, bytes).
    inbound: VecDeque<(Instant, Bytes)>,
    /// Bytes arrived or in flight to this side and not yet read.
    unread: usize,
    /// When the remote's EOF arrives, once it shut its write half.
    eof_at: Option<Instant>,
    eof_seen: bool,
    rbuf: BytesMut,
    transmit: Transmit,
    /// When this side's outgoing link is free again (bandwidth).
    link_free: Instant,
    shut: bool,
    pub bytes_sent: u64,
    /// Bytes read straight into messages the core lent.
    pub direct_bytes: u64,
}

impl Side {
    /// One read straight into the message the core lends, if it lends one and bytes
    /// have arrived; `true` when it read something.
    fn direct_read(&mut self, now: Instant, read_size: usize) -> bool {
        let arrived = self.inbound.front().is_some_and(|(at, _)| *at <= now);
        if !arrived || !self.rbuf.is_empty() {
            return false;
        }
        let Some((mut buf, most)) = self.core.take_read_buffer() else {
            return false;
        };
        let read = self.take_arrived(now, most.min(read_size), &mut buf);
        self.core.handle_direct_read(now, buf);
        self.direct_bytes += read as u64;
        read > 0
    }

    /// Moves up to `most` bytes that have arrived by `now` into `into`; returns how
    /// many.
    fn take_arrived(&mut self, now: Instant, most: usize, into: &mut BytesMut) -> usize {
        let mut read = 0;
        while read < most {
            let Some((at, bytes)) = self.inbound.front_mut() else {
                break;
            };
            if *at > now {
                break;
            }
            let take = bytes.len().min(most - read);
            into.extend_from_slice(&bytes.split_to(take));
            if bytes.is_empty() {
                self.inbound.pop_front();
            }
            self.unread -= take;
            read += take;
        }
        read
    }

    pub fn new(core: PeerCore, now: Instant) -> Self {
        Side {
            core,
            reading: true,
            stalled: Vec::new(),
            received: BTreeMap::new(),
            events: Vec::new(),
            auto_respond: false,
            now,
            inbound: VecDeque::new(),
            unread: 0,
            eof_at: None,
            eof_seen: false,
            rbuf: BytesMut::new(),
            transmit: Transmit::new(),
            link_free: now,
            shut: false,
            bytes_sent: 0,
            direct_bytes: 0,
        }
    }

    /// The reason of the `Closed` event, if there was one.
    pub fn closed(&self) -> Option<&DisconnectReason> {
        self.events.iter().find_map(|e| match e {
            Event::Closed(r) => Some(r),
            _ => None,
        })
    }

    pub fn connected(&self) -> bool {
        self.events.contains(&Event::Connected)
    }

    /// Whether a service came up.
    pub fn service_up(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Event::ServiceUp(_)))
    }

    /// Messages the service of `channel` took.
    pub fn got(&self, channel: u8) -> &[Message] {
        self.received.get(&channel).map_or(&[], Vec::as_slice)
    }

    /// Payloads the service of `channel` took.
    pub fn payloads(&self, channel: u8) -> Vec<Bytes> {
        self.got(channel)
            .iter()
            .map(|m| m.payload.clone())
            .collect()
    }

    /// Stops or restarts the service of `channel`.
    pub fn stall(&mut self, channel: u8, stalled: bool) {
        self.stalled.retain(|c| *c != channel);
        if stalled {
            self.stalled.push(channel);
        }
        self.core.set_consumer_paused(self.now, channel, stalled);
    }

    /// Services take what is waiting on their channels (unless stalled).
    fn consume(&mut self, now: Instant) -> bool {
        let mut progress = false;
        let channels: Vec<u8> = self.core.readable().collect();
        for channel in channels {
            if self.stalled.contains(&channel) {
                continue;
            }
            let mut cost = 0;
            while let Some(m) = self.core.recv(channel) {
                cost += m.cost();
                if let (true, MsgKind::Request(id)) = (self.auto_respond, m.kind) {
                    let _ = self.core.send_response(channel, id, m.payload.clone());
                }
                self.received.entry(channel).or_default().push(m);
            }
            if cost > 0 {
                self.core.handle_consumed(now, channel, cost);
                progress = true;
            }
        }
        progress
    }

    fn drain_events(&mut self) -> bool {
        let mut any = false;
        while let Some(e) = self.core.poll_event() {
            self.events.push(e);
            any = true;
        }
        any
    }
}

/// Two cores and the link between them.
pub struct Pair {
    pub now: Instant,
    pub start: Instant,
    pub a: Side,
    pub b: Side,
    /// One-way delay.
    pub latency: Duration,
    /// Bytes per second each way; `None`: unlimited.
    pub bandwidth: Option<u64>,
    /// Most bytes one read takes.
    pub read_size: usize,
    /// Most bytes one direction holds unread (the socket buffers of both ends).
    pub capacity: usize,
    /// Most bytes handed to one `poll_transmit`.
    pub write_batch: usize,
    /// Read payloads straight into their messages when the core lends their buffers
    /// (as the runtime does), and follow its read hints.
    pub direct_reads: bool,
}

/// Which side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    A,
    B,
}

impl Pair {
    /// A pair with `limits`, the standard channels, its own unlimited budget, 50 µs of
    /// latency and 1 GB/s.
    pub fn new(limits: &Config) -> Pair {
        Self::with_channels(limits, channels_with(limits), channels_with(limits))
    }

    pub fn with_channels(
        limits: &Config,
        a_channels: Vec<(u8, ChannelConfig)>,
        b_channels: Vec<(u8, ChannelConfig)>,
    ) -> Pair {
        let now = t0();
        let budget = Arc::new(RecvBudget::new(u64::MAX / 4));
        Self::from_cores(
            now,
            core(now, 1, limits, a_channels, budget.clone()),
            core(now, 2, limits, b_channels, budget),
        )
    }

    pub fn from_cores(now: Instant, a: PeerCore, b: PeerCore) -> Pair {
        Pair {
            now,
            start: now,
            a: Side::new(a, now),
            b: Side::new(b, now),
            latency: Duration::from_micros(50),
            bandwidth: Some(1_000_000_000),
            read_size: 64 << 10,
            capacity: 256 << 10,
            write_batch: 256 << 10,
            direct_reads: true,
        }
    }

    pub fn side(&mut self, who: Who) -> &mut Side {
        match who {
            Who::A => &mut self.a,
            Who::B => &mut self.b,
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Writes what `from` wants to send into the link, as far as the link has room.
    fn transmit(&mut self, from: Who) -> bool {
        let now = self.now;
        let (capacity, latency, bandwidth, batch) = (
            self.capacity,
            self.latency,
            self.bandwidth,
            self.write_batch,
        );
        let (src, dst) = match from {
            Who::A => (&mut self.a, &mut self.b),
            Who::B => (&mut self.b, &mut self.a),
        };
        let mut progress = false;
        loop {
            if src.transmit.is_empty() && !src.core.poll_transmit(now, &mut src.transmit, batch) {
                break;
            }
            let room = capacity.saturating_sub(dst.unread);
            if room == 0 {
                break;
            }
            // Write as much as the link takes, like a socket taking part of a write.
            let mut bytes = BytesMut::new();
            {
                let mut slices = [IoSlice::new(&[]); 64];
                let n = src.transmit.io_slices(&mut slices);
                for s in &slices[..n] {
                    let take = s.len().min(room - bytes.len());
                    bytes.extend_from_slice(&s[..take]);
                    if bytes.len() == room {
                        break;
                    }
                }
            }
            src.transmit.advance(bytes.len());
            let len = bytes.len();
            let depart = src.link_free.max(now);
            let serialize = bandwidth.map_or(Duration::ZERO, |bw| {
                Duration::from_secs_f64(len as f64 / bw as f64)
            });
            src.link_free = depart + serialize;
            dst.inbound
                .push_back((src.link_free + latency, bytes.freeze()));
            dst.unread += len;
            src.bytes_sent += len as u64;
            progress = true;
            if !src.transmit.is_empty() {
                break;
            }
            src.core.handle_written(now);
        }
        if src.transmit.is_empty() && !src.shut && src.core.poll_shutdown() {
            src.shut = true;
            dst.eof_at = Some(src.link_free.max(now) + latency);
            progress = true;
        }
        progress
    }

    /// `to` reads what has arrived, `read_size` bytes per read.
    fn receive(&mut self, to: Who) -> bool {
        let now = self.now;
        let read_size = self.read_size;
        let direct = self.direct_reads;
        let side = self.side(to);
        if !side.reading {
            return false;
        }
        let mut progress = false;
        loop {
            if direct && side.direct_read(now, read_size) {
                progress = true;
                continue;
            }
            let hint = if direct && side.rbuf.is_empty() {
                side.core.read_hint()
            } else {
                None
            };
            let size = hint.map_or(read_size, |h| h.min(read_size));
            let mut rbuf = std::mem::take(&mut side.rbuf);
            let read = side.take_arrived(now, size, &mut rbuf);
            side.rbuf = rbuf;
            if read == 0 {
                // Nothing more has arrived: this side reads as fast as data comes.
                side.core.handle_drained(now);
                break;
            }
            side.core.handle_read(now, &mut side.rbuf);
            progress = true;
        }
        if side.inbound.is_empty() && !side.eof_seen && side.eof_at.is_some_and(|at| at <= now) {
            side.eof_seen = true;
            side.core.handle_eof(now, &mut side.rbuf);
            progress = true;
        }
        progress
    }

    fn timers(&mut self, who: Who) -> bool {
        let now = self.now;
        let side = self.side(who);
        if side.core.poll_timeout().is_some_and(|t| t <= now) {
            side.core.handle_timeout(now);
            return true;
        }
        false
    }

    /// Does everything that can be done at the current instant.
    pub fn drive_now(&mut self) {
        self.a.now = self.now;
        self.b.now = self.now;
        for _ in 0..100_000 {
            let mut progress = false;
            for who in [Who::A, Who::B] {
                progress |= self.timers(who);
                progress |= self.transmit(who);
                progress |= self.receive(who);
                let now = self.now;
                let side = self.side(who);
                progress |= side.drain_events();
                progress |= side.consume(now);
            }
            if !progress {
                return;
            }
        }
        panic!("no quiescence at {:?}", self.elapsed());
    }

    /// The next instant at which something happens without any other input.
    fn next_instant(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for side in [&self.a, &self.b] {
            consider(side.core.poll_timeout());
            if side.reading {
                consider(side.inbound.front().map(|(at, _)| *at));
                if side.inbound.is_empty() && !side.eof_seen {
                    consider(side.eof_at);
                }
            }
        }
        next.map(|t| t.max(self.now))
    }

    /// Drives until `cond` holds (true) or virtual time passes `limit`, or nothing can
    /// happen any more (false).
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&mut Pair) -> bool) -> bool {
        let deadline = self.now + limit;
        loop {
            self.drive_now();
            if cond(self) {
                return true;
            }
            match self.next_instant() {
                Some(t) if t <= deadline => self.now = t.max(self.now),
                _ => return false,
            }
        }
    }

    /// Drives for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let _ = self.run_until(d, |p| p.now >= end);
        self.now = self.now.max(end);
        self.drive_now();
    }

    /// Runs until both sides are connected and have a service up.
    pub fn connect(&mut self) {
        assert!(
            self.run_until(Duration::from_secs(5), |p| p.a.service_up()
                && p.b.service_up()),
            "handshake did not complete: a {:?}, b {:?}",
            self.a.events,
            self.b.events
        );
    }

    /// A pair with the default limits, past its handshake with its services up.
    pub fn connected() -> Pair {
        let mut p = Pair::new(&Config::default());
        p.connect();
        p
    }

    /// Runs until `who` has a `Closed` event; returns its reason.
    pub fn until_closed(&mut self, who: Who, limit: Duration) -> DisconnectReason {
        let done = self.run_until(limit, |p| p.side(who).closed().is_some());
        assert!(done, "{who:?} not closed within {limit:?}");
        self.side(who)
            .closed()
            .cloned()
            .unwrap_or(DisconnectReason::Shutdown)
    }

    /// Injects raw bytes as if `to`'s remote had written them (arriving now).
    pub fn inject(&mut self, to: Who, bytes: &[u8]) {
        let now = self.now;
        let side = self.side(to);
        side.inbound.push_back((now, Bytes::copy_from_slice(bytes)));
        side.unread += bytes.len();
    }
}

/// Messages 0..n on `channel` of `size` bytes, each starting with its index.
pub fn numbered(n: usize, size: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            let mut v = vec![(i % 251) as u8; size.max(8)];
            v[..8].copy_from_slice(&(i as u64).to_be_bytes());
            Bytes::from(v)
        })
        .collect()
}

/// The index a numbered message starts with.
pub fn index_of(payload: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&payload[..8]);
    u64::from_be_bytes(b)
}

/// One core, and the test playing its remote packet by packet.
pub struct Solo {
    pub core: PeerCore,
    pub now: Instant,
    pub start: Instant,
    pub events: Vec<Event>,
    /// Everything the core wrote, decoded.
    pub written: Vec<Packet>,
    /// Whether services take their messages (and credit goes back).
    pub consuming: bool,
    codec: PacketCodec,
    rbuf: BytesMut,
}

impl Solo {
    pub fn new(limits: &Config) -> Solo {
        let now = t0();
        let budget = Arc::new(RecvBudget::new(u64::MAX / 4));
        Self::with_core(now, core(now, 1, limits, channels_with(limits), budget))
    }

    /// A solo core made at `now` with `core_with` (its own services).
    pub fn with_core(now: Instant, core: PeerCore) -> Solo {
        Solo {
            core,
            now,
            start: now,
            events: Vec::new(),
            written: Vec::new(),
            consuming: true,
            codec: PacketCodec::new(16 << 20),
            rbuf: BytesMut::new(),
        }
    }

    /// Feeds raw bytes as one read, then drains outputs.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.rbuf.extend_from_slice(bytes);
        self.core.handle_read(self.now, &mut self.rbuf);
        self.core.handle_drained(self.now);
        self.drain();
    }

    /// Feeds raw bytes as the runtime reads them: straight into a message the core
    /// lends, else into the read buffer, `read_size` bytes at a time (no more than the
    /// core's read hint). Returns the bytes that went straight into messages.
    pub fn feed_direct(&mut self, bytes: &[u8], read_size: usize) -> usize {
        let mut rest = bytes;
        let mut direct = 0;
        while !rest.is_empty() && !self.core.is_closing() {
            if let Some((mut buf, most)) = self.core.take_read_buffer() {
                let take = most.min(rest.len());
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                direct += take;
                self.core.handle_direct_read(self.now, buf);
                continue;
            }
            let take = self.core.read_hint().unwrap_or(read_size).min(rest.len());
            self.rbuf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            self.core.handle_read(self.now, &mut self.rbuf);
        }
        self.core.handle_drained(self.now);
        self.drain();
        direct
    }

    /// The remote closes its write half.
    pub fn feed_eof(&mut self) {
        self.core.handle_eof(self.now, &mut self.rbuf);
        self.drain();
    }

    /// Encodes packets back to back.
    pub fn encode(&mut self, packets: &[Packet]) -> BytesMut {
        let mut buf = BytesMut::new();
        for p in packets {
            self.codec.encode(p.clone(), &mut buf).expect("encodable");
        }
        buf
    }

    /// Feeds packets (encoded back to back) as one read.
    pub fn feed_packets(&mut self, packets: &[Packet]) {
        let mut buf = BytesMut::new();
        for p in packets {
            self.codec.encode(p.clone(), &mut buf).expect("encodable");
        }
        self.feed(&buf);
    }

    pub fn feed_packet(&mut self, p: Packet) {
        self.feed_packets(&[p]);
    }

    pub fn feed_control(&mut self, c: &Control) {
        self.feed_packet(control_packet(c));
    }

    /// A whole message on `channel`.
    pub fn feed_msg(&mut self, channel: u8, payload: &[u8]) {
        self.feed_packet(Packet::Msg(Msg {
            channel,
            eof: true,
            kind: MsgKind::Plain,
            total: None,
            payload: Bytes::copy_from_slice(payload),
        }));
    }

    /// Writes out and decodes what the core wants to send; collects events; services
    /// take every message.
    pub fn drain(&mut self) {
        loop {
            let mut t = Transmit::new();
            let any = self.core.poll_transmit(self.now, &mut t, 1 << 20);
            let mut bytes = t.take_all();
            while let Ok(Some(p)) = self.codec.decode(&mut bytes) {
                self.written.push(p);
            }
            if any {
                self.core.handle_written(self.now);
            }
            let _ = self.core.poll_shutdown();
            let mut more = false;
            while let Some(e) = self.core.poll_event() {
                self.events.push(e);
                more = true;
            }
            let channels: Vec<u8> = if self.consuming {
                self.core.readable().collect()
            } else {
                Vec::new()
            };
            for c in channels {
                let mut cost = 0;
                while let Some(m) = self.core.recv(c) {
                    cost += m.cost();
                }
                if cost > 0 && self.core.is_active() {
                    self.core.handle_consumed(self.now, c, cost);
                    more = true;
                }
            }
            if !any && !more {
                return;
            }
        }
    }

    /// Advances virtual time by `d`, handling every deadline on the way.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.core.poll_timeout().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            self.core.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
        self.core.handle_timeout(self.now);
        self.drain();
    }

    /// Plays a well-behaved remote through the handshake: its Version, its Verack,
    /// then the `test` service on the standard channels with a credit of `credit` on
    /// each, offered and accepted (the answer to the core's own offer).
    pub fn handshake(&mut self, credit: u32) {
        self.drain();
        self.feed_control(&Control::Version(version(2)));
        let offer = test_offer(credit);
        self.feed_packets(&[
            control_packet(&Control::Verack),
            control_packet(&Control::ServiceConnect(offer.clone())),
            control_packet(&Control::ServiceAccept(offer)),
        ]);
        assert!(self.events.contains(&Event::Connected), "{:?}", self.events);
        assert!(
            self.events.contains(&Event::ServiceUp("test".into())),
            "{:?}",
            self.events
        );
    }

    /// Control messages the core wrote.
    pub fn controls(&self) -> Vec<Control> {
        self.written
            .iter()
            .filter_map(|p| match p {
                Packet::Msg(m) if m.channel == 0 => control::decode(&m.payload).ok(),
                _ => None,
            })
            .collect()
    }

    pub fn closed(&self) -> Option<&DisconnectReason> {
        self.events.iter().find_map(|e| match e {
            Event::Closed(r) => Some(r),
            _ => None,
        })
    }

    /// Credit the core granted on `channel` so far (from what it wrote: its
    /// service offer, then `Credit` packets).
    pub fn granted(&self, channel: u8) -> u64 {
        let initial = self
            .controls()
            .iter()
            .find_map(|c| match c {
                Control::ServiceConnect(o) => o.channels.iter().find(|g| g.id == channel),
                _ => None,
            })
            .map_or(0, |g| u64::from(g.credit));
        initial
            + self
                .written
                .iter()
                .map(|p| match p {
                    Packet::Credit { channel: c, bytes } if *c == channel => u64::from(*bytes),
                    _ => 0,
                })
                .sum::<u64>()
    }

    /// The reason the core is closing or closed for.
    pub fn reason(&self) -> Option<DisconnectReason> {
        self.closed()
            .cloned()
            .or_else(|| self.core.close_reason().cloned())
    }

    /// The reason in the `Goodbye` the core wrote, if it wrote one.
    pub fn goodbye(&self) -> Option<DisconnectReason> {
        self.written.iter().find_map(|p| match p {
            Packet::Msg(m) if m.channel == 0 => match control::decode(&m.payload) {
                Ok(Control::Goodbye(r)) => Some(r),
                _ => None,
            },
            _ => None,
        })
    }
}

/// The `test` service on the standard channel ids, with `credit` on each.
pub fn test_offer(credit: u32) -> ServiceOffer {
    ServiceOffer {
        name: "test".into(),
        major: 1,
        minor: 0,
        channels: channels()
            .iter()
            .map(|(id, _)| ChannelGrant { id: *id, credit })
            .collect(),
    }
}

/// A whole channel-0 message.
pub fn control_packet(c: &Control) -> Packet {
    Packet::Msg(Msg {
        channel: 0,
        eof: true,
        kind: MsgKind::Plain,
        total: None,
        payload: control::encode(c),
    })
}

/// The two ends of one encrypted session with fixed keys (A's first).
pub fn sessions(suite: Suite) -> (Session, Session) {
    let (k1, k2) = ([7u8; 32], [9u8; 32]);
    (Session::new(suite, &k1, &k2), Session::new(suite, &k2, &k1))
}

/// `len` bytes of a pattern that differs by `seed` and along its length.
pub fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}
