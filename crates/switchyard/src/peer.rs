//! The Peer actor: one connection. A thin shell around its
//! [`PeerCore`](switchyard_proto::PeerCore): the [`Driver`] moves bytes and time, and
//! this actor carries out the core's events — ask the Switch to admit the peer when
//! the handshake completes, tell a service `PeerUp` when its twin accepted it (once
//! admitted) and `PeerDown` when it goes, hand readable messages to their services,
//! wake senders waiting for room, stop when the connection is over.
//!
//! Delivery to a service uses `try_send`. When its mailbox is full, the one message
//! (or batch) in hand waits on `send().await`, the rest go back to the core's queue for
//! that channel, and the core notes the hand-over, which pauses that channel; only it
//! waits. Credit for
//! a message goes back to the remote once the service's mailbox has accepted it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use switchyard_proto::admission::{ConnId, Direction};
use switchyard_proto::connection::handshake::Version;
use switchyard_proto::connection::rtt_report::RttReport;
use switchyard_proto::connection::services::ServiceSpec;
use switchyard_proto::secure::{Role, Suite};
use switchyard_proto::{ConnParams, DisconnectReason, Event, Message, NodeId, PeerCore};
use tokio::sync::oneshot;

use crate::conn::{Conn, SharedConn};
use crate::driver::Driver;
use crate::handle::{PeerHandle, PeerShared};
use crate::registry::Registry;
use crate::request::Outcome;
use crate::secure::Transport;
use crate::service::Delivery;
use crate::switch::{PeerClosed, PeerRtt, Register, Switch};

/// The answer a dialer waits for: the admitted peer, or why the connection closed.
pub(crate) type AdmitReply = oneshot::Sender<Result<PeerHandle, DisconnectReason>>;

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

/// Everything the Switch hands a new Peer.
pub(crate) struct PeerInit {
    pub(crate) guard: ClosedGuard,
    pub(crate) conn: ConnId,
    pub(crate) direction: Direction,
    pub(crate) stream: std::net::TcpStream,
    pub(crate) remote_addr: SocketAddr,
    pub(crate) expected: Option<NodeId>,
    pub(crate) local: Version,
    pub(crate) secret: [u8; 16],
    /// How the connection is secured before the core speaks.
    pub(crate) transport: Arc<Transport>,
    /// The services attached when the Switch made this connection.
    pub(crate) services: Vec<Arc<ServiceSpec>>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) switch: Addr<Switch>,
    pub(crate) reply: Option<AdmitReply>,
}

/// One connection (see the [module docs](self)).
pub struct Peer {
    id: ConnId,
    direction: Direction,
    remote_addr: SocketAddr,
    registry: Arc<Registry>,
    switch: Addr<Switch>,
    conn: SharedConn,
    stream: Option<std::net::TcpStream>,
    transport: Arc<Transport>,
    /// The cipher the transport agreed on (`None` in plaintext).
    suite: Option<Suite>,
    /// The transport handshake under way (before the core speaks).
    securing: Option<SpawnHandle>,
    handle: Option<PeerHandle>,
    admitted: bool,
    /// Why the connection ended, once it has.
    closed: Option<DisconnectReason>,
    guard: ClosedGuard,
    reply: Option<AdmitReply>,
    /// Round-trip times on their way to the Switch.
    rtt: RttReport,
}

impl Peer {
    pub(crate) fn new(init: PeerInit) -> Self {
        let limits = init.registry.core.limits();
        crate::socket::tune(&init.stream, limits, &init.remote_addr);
        let rtt = RttReport::new(limits.ping_interval);
        let params = ConnParams {
            local: init.local,
            expected: init.expected,
            secret: init.secret,
            services: init.services,
        };
        let core = PeerCore::new(
            Instant::now(),
            init.registry.core.clone(),
            params,
            init.registry.budget.clone(),
        );
        Peer {
            id: init.conn,
            direction: init.direction,
            remote_addr: init.remote_addr,
            conn: Arc::new(Conn::new(core)),
            registry: init.registry,
            switch: init.switch,
            stream: Some(init.stream),
            transport: init.transport,
            suite: None,
            securing: None,
            handle: None,
            admitted: false,
            closed: None,
            guard: init.guard,
            reply: init.reply,
            rtt,
        }
    }

    fn label(&self) -> String {
        match &self.handle {
            Some(h) => format!("{}@{}", h.id().short(), self.remote_addr),
            None => self.remote_addr.to_string(),
        }
    }

    /// Closes the connection through the core (which tells the remote why).
    fn close(&mut self, reason: DisconnectReason, flush: bool) {
        self.conn.lock().core.close(Instant::now(), reason, flush);
        self.conn.wake_driver();
    }

    /// Carries out the core's events; `true` once the connection is over (the driver
    /// then ends and the socket is dropped).
    pub(crate) fn on_core_events(&mut self, ctx: &mut Context<Self>) -> bool {
        let mut over = false;
        loop {
            let Some(event) = self.conn.lock().core.poll_event() else {
                self.maybe_reply();
                self.report_rtt();
                return over;
            };
            log::trace!("peer {}: {event:?}", self.label());
            match event {
                Event::Connected => self.on_connected(ctx),
                Event::Readable(channel) => self.deliver(channel, ctx),
                Event::Room(channel) => self.conn.room_freed(channel),
                Event::ServiceUp(name) => self.service_up(&name),
                Event::ServiceDown { service, reason } => {
                    if let Some(h) = &self.handle {
                        h.service_down(Some(&service), &reason);
                    }
                }
                Event::ServiceRefused {
                    service,
                    reason,
                    by_remote,
                } => log::info!(
                    "peer {}: service {service} {}: {reason}",
                    self.label(),
                    if by_remote {
                        "refused by the peer"
                    } else {
                        "refused"
                    }
                ),
                Event::RequestStalled {
                    channel,
                    request_id,
                } => {
                    log::debug!(
                        "peer {}: request {request_id} on {channel:#04x} stalled",
                        self.label()
                    );
                    self.conn.answer(request_id, Outcome::Stalled);
                }
                Event::Response {
                    request_id,
                    payload,
                    ..
                } => self.conn.answer(request_id, Outcome::Response(payload)),
                Event::RequestRejected {
                    request_id,
                    refusal,
                    ..
                } => self.conn.answer(request_id, Outcome::Refused(refusal)),
                Event::IntrospectRequested => {
                    crate::introspect::answer_remote(self.switch.clone(), self.conn.clone());
                }
                Event::Introspection(answer) => self.conn.introspection_answered(*answer),
                Event::Closed(reason) => {
                    over = true;
                    self.conn.fail_answers(&reason);
                    self.on_closed(reason, ctx);
                }
                other => log::debug!("peer {}: {other:?}", self.label()),
            }
        }
    }

    /// Answers the dialer once the peer is admitted and the services offered when the
    /// connection came up are answered: every service both nodes run is up then, so
    /// the dialer can send on it at once.
    fn maybe_reply(&mut self) {
        if !self.admitted || self.reply.is_none() || self.conn.lock().core.offers_pending() {
            return;
        }
        if let (Some(reply), Some(handle)) = (self.reply.take(), self.handle.clone()) {
            let _ = reply.send(Ok(handle));
        }
    }

    /// Tells the Switch the round-trip times the [`RttReport`] passes on (it protects
    /// low-latency peers from eviction).
    fn report_rtt(&mut self) {
        if !self.admitted || self.closed.is_some() {
            return;
        }
        let sample = self.conn.lock().core.rtt_sample();
        if let Some(rtt) = self.rtt.poll(Instant::now(), sample) {
            self.switch.do_send(PeerRtt { conn: self.id, rtt });
        }
    }

    /// A service met its twin: once the peer is admitted, the service hears of it.
    fn service_up(&mut self, name: &str) {
        if !self.admitted || self.closed.is_some() {
            return;
        }
        if let (Some(handle), Some(slot)) = (&self.handle, self.registry.service(name)) {
            handle.service_up(slot);
        }
    }

    /// The handshake completed: ask the Switch to admit the peer.
    fn on_connected(&mut self, ctx: &mut Context<Self>) {
        let Some(version) = self.conn.lock().core.remote().cloned() else {
            return;
        };
        let handle = PeerHandle::new(PeerShared {
            up: std::sync::Mutex::default(),
            id: version.node_id,
            conn_id: self.id,
            version,
            remote_addr: self.remote_addr,
            direction: self.direction,
            suite: self.suite,
            conn: self.conn.clone(),
            peer: ctx.address(),
            switch: self.switch.clone(),
        });
        self.handle = Some(handle.clone());
        let rtt = self.conn.lock().core.handshake_time();
        let register = self.switch.send(Register {
            conn: self.id,
            handle: handle.clone(),
            rtt,
        });
        ctx.spawn(register.into_actor(self).map(move |res, act, ctx| {
            let res = res.unwrap_or(Err(DisconnectReason::Shutdown));
            match res {
                Ok(()) if act.closed.is_none() => {
                    act.admitted = true;
                    log::debug!("peer {} admitted ({:?})", act.label(), act.direction);
                    act.maybe_reply();
                    let up: Vec<String> = act
                        .conn
                        .lock()
                        .core
                        .services_up()
                        .map(String::from)
                        .collect();
                    for name in up {
                        act.service_up(&name);
                    }
                    let readable: Vec<u8> = act.conn.lock().core.readable().collect();
                    for channel in readable {
                        act.deliver(channel, ctx);
                    }
                }
                Ok(()) => {}
                Err(reason) => act.close(reason, false),
            }
            act.maybe_stop(ctx);
        }));
    }

    /// Hands `channel`'s waiting messages to its service, until the queue is empty or
    /// the service's mailbox is full.
    fn deliver(&mut self, channel: u8, ctx: &mut Context<Self>) {
        if !self.admitted || self.conn.lock().core.is_handing_over(channel) {
            return;
        }
        let (Some((config, sink)), Some(handle)) =
            (self.registry.channel(channel), self.handle.clone())
        else {
            return;
        };
        let batch = config.delivery_batch();
        let mut msgs: VecDeque<Message> = VecDeque::new();
        loop {
            {
                let most = batch.saturating_sub(msgs.len());
                self.conn.lock().core.recv_many(channel, most, &mut msgs);
            }
            if msgs.is_empty() {
                return;
            }
            let delivery = sink.deliver(&handle, &mut msgs);
            let now = Instant::now();
            let mut inner = self.conn.lock();
            let pending = match delivery {
                Err(reason) => {
                    inner.core.close(now, reason, false);
                    drop(inner);
                    self.conn.wake_driver();
                    return;
                }
                Ok(Delivery::Done) => {
                    inner.core.handle_delivered(now, channel, msgs.drain(..), 0);
                    None
                }
                Ok(Delivery::Full { held, pending }) => {
                    inner
                        .core
                        .handle_delivered(now, channel, msgs.drain(..), held);
                    Some(pending)
                }
            };
            drop(inner);
            self.conn.wake_driver();
            let Some(pending) = pending else {
                continue;
            };
            // The mailbox is full: this channel waits for it (the core knows it is
            // handing over), the others go on.
            ctx.spawn(pending.into_actor(self).map(move |(), act, ctx| {
                act.conn
                    .lock()
                    .core
                    .handle_handover(Instant::now(), channel);
                act.conn.wake_driver();
                act.deliver(channel, ctx);
                act.maybe_stop(ctx);
            }));
            return;
        }
    }

    fn on_closed(&mut self, reason: DisconnectReason, ctx: &mut Context<Self>) {
        if reason.is_ordinary() {
            log::info!("peer {} closed: {reason}", self.label());
        } else {
            log::warn!("peer {} closed: {reason}", self.label());
        }
        self.closed = Some(reason);
        // What arrived before the close still reaches its services (a goodbye after a
        // flush must not lose what preceded it), within the linger time.
        let readable: Vec<u8> = self.conn.lock().core.readable().collect();
        for channel in readable {
            self.deliver(channel, ctx);
        }
        let linger = self.registry.core.limits().linger;
        ctx.run_later(linger, |_, ctx| ctx.stop());
        self.maybe_stop(ctx);
    }

    /// Stops once the connection is over and nothing is left to deliver.
    fn maybe_stop(&mut self, ctx: &mut Context<Self>) {
        if self.closed.is_none() {
            return;
        }
        if !self.admitted || !self.conn.lock().core.has_undelivered() {
            ctx.stop();
        }
    }
}

impl Actor for Peer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let mut io = match tokio::net::TcpStream::from_std(stream) {
            Ok(io) => io,
            Err(e) => {
                self.closed = Some(DisconnectReason::Io(e.to_string()));
                ctx.stop();
                return;
            }
        };
        // The transport's handshake first, within the connection's one deadline;
        // then the core speaks, through the session it made.
        let role = match self.direction {
            Direction::Outbound => Role::Initiator,
            Direction::Inbound => Role::Responder,
        };
        let hs = self.transport.start(role);
        let deadline = self.conn.lock().core.handshake_deadline();
        let secure = async move {
            let result = crate::secure::handshake(&mut io, hs, deadline).await;
            (io, result)
        };
        let handle = ctx.spawn(secure.into_actor(self).map(|(io, result), act, ctx| {
            act.securing = None;
            match result {
                Ok((secured, rest)) => {
                    if let Some(remote) = secured.remote {
                        act.conn
                            .lock()
                            .core
                            .handle_authenticated(Instant::now(), remote.node_id);
                    }
                    act.suite = secured.session.as_ref().map(|s| s.suite);
                    let batch = act.registry.core.limits().write_batch_bytes;
                    let driver = Driver::new(act.conn.clone(), io, batch, secured.session, rest);
                    ctx.spawn(driver);
                }
                Err(reason) => {
                    log::debug!("peer {}: transport handshake failed: {reason}", act.label());
                    act.closed = Some(reason);
                    ctx.stop();
                }
            }
        }));
        self.securing = Some(handle);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let reason = self
            .closed
            .take()
            .unwrap_or(DisconnectReason::ConnectionClosed);
        {
            // Senders must see the connection closed from now on.
            let mut inner = self.conn.lock();
            inner.core.close(Instant::now(), reason.clone(), false);
        }
        self.conn.room_freed_all();
        self.conn.fail_answers(&reason);
        if let Some(handle) = &self.handle {
            handle.service_down(None, &reason);
        }
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Err(reason.clone()));
        }
        self.switch.do_send(PeerClosed {
            conn: self.id,
            reason,
        });
        self.guard.armed = false;
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
        if let Some(securing) = self.securing.take() {
            // Nothing was said yet: the socket just closes.
            ctx.cancel_future(securing);
            self.closed = Some(msg.reason);
            ctx.stop();
            return;
        }
        if self.closed.is_some() {
            // Over already; a Switch that gives up waiting stops the delivery too.
            if !msg.flush {
                ctx.stop();
            }
            return;
        }
        self.close(msg.reason, msg.flush);
    }
}

/// Attach a service to this connection (from the Switch).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Attach(pub(crate) Arc<ServiceSpec>);

impl Handler<Attach> for Peer {
    type Result = ();

    fn handle(&mut self, msg: Attach, _: &mut Self::Context) {
        let name = msg.0.name.clone();
        if let Err(e) = self.conn.lock().core.attach(Instant::now(), msg.0) {
            log::warn!("peer {}: cannot attach {name}: {e}", self.label());
        }
        self.conn.wake_driver();
    }
}

/// Detach a service from this connection (from the Switch).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Detach(pub(crate) String);

impl Handler<Detach> for Peer {
    type Result = ();

    fn handle(&mut self, msg: Detach, _: &mut Self::Context) {
        self.conn.lock().core.detach(Instant::now(), &msg.0);
        self.conn.wake_driver();
    }
}
