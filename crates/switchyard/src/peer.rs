//! The Peer actor: owns the read half of one connection and drives the proto state
//! machines for it (handshake, keepalive, reassembly).
//!
//! Its handlers only route: bytes come in as packet batches (one per socket read),
//! go through the proto cores, and the outputs are carried out: control packets to
//! the Mux, complete messages to their channel's service, closes to the Switch. All
//! deadlines come from the cores; one timer is armed for the earliest, and deadlines
//! are also checked on every batch, so a busy connection cannot starve them.
//!
//! Delivery to services uses `try_send`, and `send().await` when a mailbox is full.
//! While that wait lasts the reader is paused (a `ReadGate`), so the socket is not
//! read: a slow service slows its peer down through TCP instead of growing memory.
//! The actor itself stays free for `Close`, `MuxDone` and its timers. The keepalive
//! tracker is paused meanwhile (a pong may sit unread in our socket).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use switchyard_proto::admission::{ConnId, Direction};
use switchyard_proto::codec::{Msg, MsgKind, Packet, PacketCodec};
use switchyard_proto::control::{self, Control, CONTROL_CHANNEL};
use switchyard_proto::handshake::{check_after_handshake, Handshake, Version};
use switchyard_proto::keepalive::{Keepalive, KeepaliveAction};
use switchyard_proto::rate::TokenBucket;
use switchyard_proto::reassembly::{Message as Complete, Reassembler};
use switchyard_proto::{CodecError, DisconnectReason, NodeId};
use tokio::sync::oneshot;
use tokio_util::codec::Encoder;

use crate::handle::{PeerHandle, PeerShared};
use crate::mux::{Linger, Mux};
use crate::outbound::Outbound;
use crate::reader::{PacketReader, ReadBatch, ReadGate};
use crate::registry::Registry;
use crate::switch::{PeerClosed, Register, Switch};

/// The answer a dialer waits for: the admitted peer, or why the connection closed.
pub(crate) type AdmitReply = oneshot::Sender<Result<PeerHandle, DisconnectReason>>;

/// Everything the Switch hands a new Peer.
/// Tells the Switch that a connection is gone if its Peer never reports it: the
/// Peer failed to start (its arbiter stopped, or a panic in `Peer::new`) or its actor
/// was dropped without `stopped` running. Without it the connection's admission slot
/// and table entry would stay forever.
pub(crate) struct ClosedGuard {
    switch: Addr<Switch>,
    conn: ConnId,
    armed: bool,
}

impl ClosedGuard {
    pub(crate) fn new(switch: Addr<Switch>, conn: ConnId) -> Self {
        ClosedGuard {
            switch,
            conn,
            armed: true,
        }
    }

    /// The Peer reported its close itself.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for ClosedGuard {
    fn drop(&mut self) {
        if self.armed {
            self.switch.do_send(PeerClosed {
                conn: self.conn,
                reason: DisconnectReason::Io("connection task ended abnormally".into()),
            });
        }
    }
}

pub(crate) struct PeerInit {
    pub(crate) guard: ClosedGuard,
    pub(crate) conn: ConnId,
    pub(crate) direction: Direction,
    pub(crate) stream: std::net::TcpStream,
    pub(crate) remote_addr: SocketAddr,
    pub(crate) expected: Option<NodeId>,
    pub(crate) local: Version,
    pub(crate) registry: Arc<Registry>,
    pub(crate) switch: Addr<Switch>,
    pub(crate) reply: Option<AdmitReply>,
}

enum Phase {
    Handshake(Box<Handshake>),
    Admitting,
    Active(Box<Keepalive>),
    Closing,
}

/// One connection's read side and protocol state (see the [module docs](self)).
pub struct Peer {
    conn: ConnId,
    direction: Direction,
    remote_addr: SocketAddr,
    registry: Arc<Registry>,
    switch: Addr<Switch>,
    out: Arc<Outbound>,
    mux: Option<Addr<Mux>>,
    reader: Option<PacketReader>,
    /// Pauses the reader while a delivery waits for a service or the receive rate.
    gate: Arc<ReadGate>,
    /// The waits that hold the reader paused (a delivery and a rate-limit sleep
    /// may overlap); reading resumes when all have finished.
    paused: Vec<SpawnHandle>,
    /// How many of them are still running.
    pauses_running: usize,
    phase: Phase,
    handle: Option<PeerHandle>,
    reassembler: Reassembler,
    pending: Vec<Packet>,
    timer: Option<(Instant, SpawnHandle)>,
    reason: Option<DisconnectReason>,
    remote_said_goodbye: bool,
    /// When a pong arrived that no written ping of ours could explain yet.
    early_pong: Option<Instant>,
    guard: ClosedGuard,
    reply: Option<AdmitReply>,
    linger_until: Option<Instant>,
    recv_rate: Option<TokenBucket>,
}

impl Peer {
    /// Builds the Peer and its Mux on the current arbiter (called inside
    /// `start_in_arbiter`).
    pub(crate) fn new(init: PeerInit, ctx: &mut Context<Self>) -> Self {
        let limits = init.registry.limits.clone();
        let out = Arc::new(Outbound::new(init.registry.clone()));
        let now = Instant::now();
        let handshake = Handshake::new(now, init.local, init.expected, limits.handshake_timeout);
        let mut peer = Peer {
            conn: init.conn,
            direction: init.direction,
            remote_addr: init.remote_addr,
            reassembler: init.registry.reassembler(),
            registry: init.registry,
            switch: init.switch,
            out: out.clone(),
            mux: None,
            reader: None,
            gate: Arc::default(),
            paused: Vec::new(),
            pauses_running: 0,
            phase: Phase::Handshake(Box::new(handshake)),
            handle: None,
            pending: Vec::new(),
            timer: None,
            reason: None,
            remote_said_goodbye: false,
            early_pong: None,
            reply: init.reply,
            guard: init.guard,
            linger_until: None,
            recv_rate: limits
                .recv_rate
                .map(|r| TokenBucket::new(now, r, (r / 10).max(limits.max_packet_payload as u64))),
        };
        if let Some(size) = limits.socket_buffer {
            let sock = socket2::SockRef::from(&init.stream);
            if let Err(e) = sock
                .set_send_buffer_size(size)
                .and_then(|()| sock.set_recv_buffer_size(size))
            {
                log::debug!("{}: cannot size socket buffers: {e}", init.remote_addr);
            }
        }
        match tokio::net::TcpStream::from_std(init.stream) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                let (rd, wr) = stream.into_split();
                peer.reader = Some(PacketReader::new(
                    rd,
                    PacketCodec::new(limits.max_packet_payload),
                    peer.gate.clone(),
                ));
                let mux = Mux::new(
                    wr,
                    out,
                    ctx.address(),
                    limits.write_batch_bytes,
                    limits.send_rate,
                    limits.linger,
                );
                peer.mux = Some(mux.start());
            }
            Err(e) => peer.reason = Some(DisconnectReason::Io(e.to_string())),
        }
        peer
    }

    fn node_id(&self) -> Option<NodeId> {
        self.handle.as_ref().map(PeerHandle::id)
    }

    fn label(&self) -> String {
        match self.node_id() {
            Some(id) => format!("{}@{}", id.short(), self.remote_addr),
            None => self.remote_addr.to_string(),
        }
    }

    /// Sends whatever the handshake wants to send.
    fn drain_handshake(&mut self) {
        if let Phase::Handshake(hs) = &mut self.phase {
            while let Some(msg) = hs.poll_transmit() {
                // Channel 0 has room for the two handshake messages by construction.
                if let Err(e) =
                    self.out
                        .try_push(CONTROL_CHANNEL, MsgKind::Plain, control::encode(&msg))
                {
                    log::debug!("{}: handshake message not queued: {e}", self.remote_addr);
                }
            }
        }
    }

    /// Closes the connection. `flush`: write what is queued first and keep reading
    /// until the remote closes (or `linger` passes); otherwise stop reading now.
    pub(crate) fn close(&mut self, reason: DisconnectReason, flush: bool, ctx: &mut Context<Self>) {
        if matches!(self.phase, Phase::Closing) {
            return;
        }
        let reason = self.reason.take().unwrap_or(reason);
        match &reason {
            DisconnectReason::Shutdown
            | DisconnectReason::Application(_)
            | DisconnectReason::ByRemote(_)
            | DisconnectReason::ConnectionClosed
            | DisconnectReason::DuplicateConnection => {
                log::info!("peer {} closed: {reason}", self.label());
            }
            _ => log::warn!("peer {} closed: {reason}", self.label()),
        }
        let goodbye = (!self.remote_said_goodbye).then(|| goodbye_packet(&reason, &self.registry));
        self.out.close(goodbye, flush);
        if let Some(mux) = &self.mux {
            mux.do_send(Linger);
        }
        self.reason = Some(reason);
        self.phase = Phase::Closing;
        self.pending.clear();
        self.cancel_pauses(ctx);
        if flush {
            self.linger_until = Some(Instant::now() + self.registry.limits.linger);
            self.check_timers(ctx);
        } else {
            ctx.stop();
        }
    }

    fn on_batch(&mut self, batch: ReadBatch, ctx: &mut Context<Self>) {
        let now = Instant::now();
        if matches!(self.phase, Phase::Closing) {
            // Closing gracefully: read until the remote closes, deliver nothing more.
            self.check_timers(ctx);
            return;
        }
        if let Phase::Active(keepalive) = &mut self.phase {
            keepalive.on_receive(now);
        }
        self.pending.extend(batch.packets);
        self.process(ctx);
        if let Some(until) = self
            .recv_rate
            .as_mut()
            .and_then(|r| r.consume(now, batch.bytes as u64))
        {
            self.pause_reading(ctx, tokio::time::sleep_until(until.into()), |_, _| Ok(()));
        }
        self.check_timers(ctx);
    }

    /// Stops reading the socket until `fut` completes (TCP pushes back on the remote),
    /// while the actor keeps handling its mailbox (`Close`, `MuxDone`) and timers; the
    /// keepalive's pong and idle deadlines are paused meanwhile.
    fn pause_reading<F, T>(
        &mut self,
        ctx: &mut Context<Self>,
        fut: F,
        then: fn(T, &mut Self) -> Result<(), DisconnectReason>,
    ) where
        F: std::future::Future<Output = T> + 'static,
        T: 'static,
    {
        self.gate.pause();
        if let Phase::Active(k) = &mut self.phase {
            k.pause(Instant::now());
        }
        self.pauses_running += 1;
        let handle = ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.pauses_running = act.pauses_running.saturating_sub(1);
            if act.pauses_running == 0 {
                act.paused.clear();
                act.gate.resume();
                if let Phase::Active(k) = &mut act.phase {
                    k.resume(Instant::now());
                }
            }
            if let Err(reason) = then(res, act) {
                act.close(reason, false, ctx);
            }
            act.check_timers(ctx);
        }));
        self.paused.push(handle);
    }

    /// Drops the waits in progress (their undelivered messages with them) and lets
    /// the reader go on: a closing connection delivers nothing more.
    fn cancel_pauses(&mut self, ctx: &mut Context<Self>) {
        for handle in self.paused.drain(..) {
            ctx.cancel_future(handle);
        }
        self.pauses_running = 0;
        self.gate.resume();
    }

    /// Runs the pending packets through the protocol. Messages complete before a
    /// packet that closes the connection are still delivered (a `Goodbye` after a
    /// flush must not lose what preceded it).
    fn process(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let mut deliveries: Vec<(u8, Vec<Bytes>)> = Vec::new();
        let mut close = None;
        let mut packets = std::mem::take(&mut self.pending).into_iter();
        while let Some(packet) = packets.next() {
            match &mut self.phase {
                Phase::Handshake(hs) => {
                    if let Some(reason) = remote_goodbye(&packet) {
                        self.remote_said_goodbye = true;
                        return self.close(
                            DisconnectReason::ByRemote(Box::new(reason)),
                            false,
                            ctx,
                        );
                    }
                    if let Err(e) = hs.handle_packet(now, &packet) {
                        return self.close(e.into(), false, ctx);
                    }
                    self.drain_handshake();
                    if matches!(&self.phase, Phase::Handshake(hs) if hs.is_complete()) {
                        self.pending.extend(packets);
                        return self.on_handshake_complete(ctx);
                    }
                }
                Phase::Admitting => {
                    self.pending.push(packet);
                    self.pending.extend(packets);
                    return;
                }
                Phase::Closing => return,
                Phase::Active(keepalive) => match packet {
                    Packet::Ping => self.out.send_pong(),
                    Packet::Pong => {
                        keepalive.on_receive(now);
                        if self.out.take_written_ping() {
                            keepalive.on_pong(now);
                            self.early_pong = None;
                        } else if keepalive.awaiting_pong() {
                            // Our ping is not reported written yet: this pong answers
                            // it only once the Mux does. (Unasked pongs are ignored.)
                            self.early_pong = Some(now);
                        }
                    }
                    Packet::Msg(m) => match self.reassembler.push(m) {
                        Err(reason) => {
                            close = Some(reason);
                            break;
                        }
                        Ok(None) => {}
                        Ok(Some(msg)) if msg.channel == CONTROL_CHANNEL => {
                            if let Err(reason) = self.on_control(msg) {
                                close = Some(reason);
                                break;
                            }
                        }
                        Ok(Some(msg)) => push_delivery(&mut deliveries, msg),
                    },
                },
            }
        }
        self.deliver(deliveries, close, ctx);
    }

    fn on_control(&mut self, msg: Complete) -> Result<(), DisconnectReason> {
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
                self.remote_said_goodbye = true;
                Err(DisconnectReason::ByRemote(Box::new(reason)))
            }
            other => Err(DisconnectReason::ControlViolation(format!(
                "unexpected control message {}",
                control_name(&other)
            ))),
        }
    }

    /// Hands complete messages to their services, then closes with `close` if given.
    fn deliver(
        &mut self,
        deliveries: Vec<(u8, Vec<Bytes>)>,
        close: Option<DisconnectReason>,
        ctx: &mut Context<Self>,
    ) {
        let Some(handle) = self.handle.clone() else {
            return;
        };
        let mut iter = deliveries.into_iter();
        while let Some((channel, msgs)) = iter.next() {
            let Some(slot) = self.registry.channel(channel) else {
                return self.close(DisconnectReason::UnknownChannel(channel), false, ctx);
            };
            match slot.sink.deliver(&handle, msgs) {
                Ok(None) => {}
                Err(reason) => return self.close(reason, false, ctx),
                Ok(Some(wait)) => {
                    let rest: Vec<_> = iter.collect();
                    let registry = self.registry.clone();
                    let fut = async move {
                        wait.await?;
                        for (channel, msgs) in rest {
                            let Some(slot) = registry.channel(channel) else {
                                return Err(DisconnectReason::UnknownChannel(channel));
                            };
                            if let Some(wait) = slot.sink.deliver(&handle, msgs)? {
                                wait.await?;
                            }
                        }
                        close.map_or(Ok(()), Err)
                    };
                    return self.pause_reading(ctx, fut, |res, _| res);
                }
            }
        }
        if let Some(reason) = close {
            self.close(reason, false, ctx);
        }
    }

    fn on_handshake_complete(&mut self, ctx: &mut Context<Self>) {
        let Phase::Handshake(hs) = std::mem::replace(&mut self.phase, Phase::Admitting) else {
            return;
        };
        let Some(version) = hs.remote().cloned() else {
            return self.close(DisconnectReason::Shutdown, false, ctx);
        };
        let handle = PeerHandle::new(PeerShared {
            id: version.node_id,
            conn: self.conn,
            version,
            remote_addr: self.remote_addr,
            direction: self.direction,
            out: self.out.clone(),
            peer: ctx.address(),
        });
        self.handle = Some(handle.clone());
        let register = self.switch.send(Register {
            conn: self.conn,
            handle: handle.clone(),
        });
        ctx.wait(
            register
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(Ok(())) => {
                        let limits = &act.registry.limits;
                        let now = Instant::now();
                        let mut keepalive = Box::new(Keepalive::new(
                            now,
                            limits.ping_interval,
                            limits.pong_timeout,
                            limits.idle_timeout,
                        ));
                        if act.pauses_running > 0 {
                            // Reading is already paused (the receive rate): so are
                            // the deadlines.
                            keepalive.pause(now);
                        }
                        act.phase = Phase::Active(keepalive);
                        log::debug!("peer {} admitted ({:?})", act.label(), act.direction);
                        if let Some(reply) = act.reply.take() {
                            let _ = reply.send(Ok(handle));
                        }
                        act.process(ctx);
                        act.check_timers(ctx);
                    }
                    Ok(Err(reason)) => act.close(reason, false, ctx),
                    Err(_) => act.close(DisconnectReason::Shutdown, false, ctx),
                }),
        );
    }

    /// Checks every deadline now and arms one timer for the earliest.
    fn check_timers(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let mut close = None;
        let next = match &mut self.phase {
            Phase::Handshake(hs) => {
                if let Err(e) = hs.handle_timeout(now) {
                    close = Some(DisconnectReason::from(e));
                }
                hs.poll_timeout()
            }
            Phase::Active(k) => {
                if let Some(at) = self.early_pong {
                    if self.out.take_written_ping() {
                        self.early_pong = None;
                        k.on_pong(at);
                    }
                }
                while let Some(action) = k.on_tick(now) {
                    match action {
                        KeepaliveAction::SendPing => self.out.send_ping(),
                        KeepaliveAction::Close(reason) => {
                            close = Some(reason);
                            break;
                        }
                    }
                }
                Some(k.next_deadline())
            }
            Phase::Admitting => None,
            Phase::Closing => match self.linger_until {
                Some(until) if until <= now => {
                    ctx.stop();
                    return;
                }
                other => other,
            },
        };
        if let Some(reason) = close {
            return self.close(reason, false, ctx);
        }
        match next {
            Some(at) if self.timer.as_ref().map(|t| t.0) != Some(at) => {
                if let Some((_, old)) = self.timer.take() {
                    ctx.cancel_future(old);
                }
                let delay = at.saturating_duration_since(now) + Duration::from_millis(1);
                let handle = ctx.run_later(delay, |act, ctx| {
                    act.timer = None;
                    act.check_timers(ctx);
                });
                self.timer = Some((at, handle));
            }
            _ => {}
        }
    }
}

fn push_delivery(deliveries: &mut Vec<(u8, Vec<Bytes>)>, msg: Complete) {
    match deliveries.iter_mut().find(|(c, _)| *c == msg.channel) {
        Some((_, msgs)) => msgs.push(msg.payload),
        None => deliveries.push((msg.channel, vec![msg.payload])),
    }
}

/// The remote's reason, when `packet` is a channel-0 `Goodbye` (refusals arrive this
/// way before the handshake completes).
fn remote_goodbye(packet: &Packet) -> Option<DisconnectReason> {
    match packet {
        Packet::Msg(m) if m.channel == CONTROL_CHANNEL && m.eof && m.kind == MsgKind::Plain => {
            match control::decode(&m.payload) {
                Ok(Control::Goodbye(reason)) => Some(reason),
                _ => None,
            }
        }
        _ => None,
    }
}

fn control_name(c: &Control) -> &'static str {
    match c {
        Control::Version(_) => "Version",
        Control::Verack => "Verack",
        Control::Goodbye(_) => "Goodbye",
        _ => "(unknown)",
    }
}

/// The whole `Goodbye` packet for `reason`, ready to write.
pub(crate) fn goodbye_packet(reason: &DisconnectReason, registry: &Registry) -> Bytes {
    let msg = Msg {
        channel: CONTROL_CHANNEL,
        eof: true,
        kind: MsgKind::Plain,
        payload: control::encode(&Control::Goodbye(reason.clone())),
    };
    let mut buf = BytesMut::new();
    match PacketCodec::new(registry.limits.max_packet_payload).encode(Packet::Msg(msg), &mut buf) {
        Ok(()) => buf.freeze(),
        Err(_) => Bytes::new(),
    }
}

impl Actor for Peer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(reason) = self.reason.take() {
            return self.close(reason, false, ctx);
        }
        if let Some(reader) = self.reader.take() {
            ctx.add_stream(reader);
        }
        self.drain_handshake();
        self.check_timers(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let reason = self
            .reason
            .take()
            .unwrap_or(DisconnectReason::ConnectionClosed);
        if !self.out.is_closed() {
            self.out.close(None, false);
        }
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Err(reason.clone()));
        }
        self.switch.do_send(PeerClosed {
            conn: self.conn,
            reason,
        });
        self.guard.disarm();
    }
}

impl StreamHandler<Result<ReadBatch, CodecError>> for Peer {
    fn handle(&mut self, item: Result<ReadBatch, CodecError>, ctx: &mut Self::Context) {
        match item {
            Ok(batch) => self.on_batch(batch, ctx),
            Err(e) if matches!(self.phase, Phase::Closing) => {
                log::debug!("peer {}: read after close: {e}", self.label());
                ctx.stop();
            }
            Err(e) => self.close(e.into(), false, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The remote closed its side.
        if !matches!(self.phase, Phase::Closing) {
            self.close(DisconnectReason::ConnectionClosed, false, ctx);
        }
        ctx.stop();
    }
}

/// Close this connection (from the Switch, or a service through its handle).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Close {
    pub(crate) reason: DisconnectReason,
    pub(crate) flush: bool,
}

impl Handler<Close> for Peer {
    type Result = ();

    fn handle(&mut self, msg: Close, ctx: &mut Self::Context) {
        self.close(msg.reason, msg.flush, ctx);
    }
}

/// The Mux finished (its write loop ended, cleanly or not).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct MuxDone(pub(crate) Result<(), String>);

impl Handler<MuxDone> for Peer {
    type Result = ();

    fn handle(&mut self, msg: MuxDone, ctx: &mut Self::Context) {
        self.mux = None;
        match msg.0 {
            Err(e) if !matches!(self.phase, Phase::Closing) => {
                self.close(DisconnectReason::Io(e), false, ctx);
            }
            Err(e) => {
                log::debug!("peer {}: write side ended: {e}", self.label());
                ctx.stop();
            }
            Ok(()) => {
                if !matches!(self.phase, Phase::Closing) {
                    self.close(DisconnectReason::Shutdown, false, ctx);
                }
            }
        }
    }
}
