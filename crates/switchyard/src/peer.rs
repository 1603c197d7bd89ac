//! The Peer actor: one connection. A thin shell around its
//! [`PeerCore`](switchyard_proto::PeerCore) and its
//! [`Lifecycle`](switchyard_proto::connection::lifecycle::Lifecycle): the [`Driver`]
//! moves bytes and time, the lifecycle turns the core's events and the Switch's
//! answers into steps (when the Switch vets the id the transport proved, when to
//! register, what may reach a service, when to answer the dialer, when to stop), and
//! this actor carries them out.
//!
//! Delivery to a service uses `try_send`; when its mailbox is full, the one message
//! (or batch) in hand waits on `send().await` and only its channel pauses (the core
//! chooses each handout, see [`delivery`](switchyard_proto::connection::delivery)).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::BytesMut;
use switchyard_proto::admission::{ConnId, Direction};
use switchyard_proto::connection::delivery::{AfterHandout, Handout};
use switchyard_proto::connection::lifecycle::{
    AfterSecured, Lifecycle, Outcome, Registration, Step,
};
use switchyard_proto::secure::{Role, Secured};
use switchyard_proto::{DisconnectReason, PeerCore};
use tokio::net::TcpStream;

use crate::conn::{Conn, SharedConn};
use crate::driver::Driver;
use crate::handle::{PeerHandle, PeerShared};
use crate::msg::{
    AdmitReply, Attach, Authenticated, Close, ClosedGuard, Detach, PeerClosed, PeerInit, PeerRtt,
    Register,
};
use crate::registry::Registry;
use crate::secure::Transport;
use crate::switch::Switch;

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
    /// The transport handshake under way (before the core speaks).
    securing: Option<SpawnHandle>,
    handle: Option<PeerHandle>,
    /// What the node said of this connection, and what may reach its services.
    life: Lifecycle,
    guard: ClosedGuard,
    reply: Option<AdmitReply>,
}

impl Peer {
    pub(crate) fn new(init: PeerInit) -> Self {
        let limits = init.registry.core.limits();
        crate::socket::tune(&init.stream, limits, &init.remote_addr);
        let core = PeerCore::new(
            Instant::now(),
            init.registry.core.clone(),
            init.params,
            init.registry.budget.clone(),
        );
        Peer {
            life: Lifecycle::new(limits, init.reply.is_some()),
            id: init.conn,
            direction: init.direction,
            remote_addr: init.remote_addr,
            conn: Arc::new(Conn::new(core)),
            registry: init.registry,
            switch: init.switch,
            stream: Some(init.stream),
            transport: init.transport,
            securing: None,
            handle: None,
            guard: init.guard,
            reply: init.reply,
        }
    }

    fn label(&self) -> String {
        match &self.handle {
            Some(h) => format!("{}@{}", h.id().short(), self.remote_addr),
            None => self.remote_addr.to_string(),
        }
    }

    /// Carries out the steps of the [`Lifecycle`], which turns the core's events into
    /// them; `true` once the connection is over (the driver then ends and the socket is
    /// dropped).
    pub(crate) fn on_core_events(&mut self, ctx: &mut Context<Self>) -> bool {
        // (Read before the lock; the lifecycle times only its reports to the Switch.)
        let now = Instant::now();
        loop {
            // (The guard goes with this statement: no step is carried out under it.)
            let Some(step) = self.life.poll_step(now, &mut self.conn.lock().core) else {
                return self.life.closed().is_some();
            };
            log::trace!("peer {}: {step:?}", self.label());
            self.carry_out(step, ctx);
        }
    }

    /// Carries out one step of the [`Lifecycle`].
    fn carry_out(&mut self, step: Step, ctx: &mut Context<Self>) {
        match step {
            Step::Nothing => {}
            Step::Register(registration) => self.register(*registration, ctx),
            Step::Deliver(channel) => {
                self.deliver(channel, ctx);
                self.maybe_stop(ctx);
            }
            Step::Room(channel) => self.conn.room_freed(channel),
            Step::ServiceUp(name) => {
                if let (Some(handle), Some(slot)) = (&self.handle, self.registry.service(&name)) {
                    handle.service_up(slot);
                }
            }
            Step::ServiceDown { service, reason } => {
                if let Some(h) = &self.handle {
                    h.service_down(Some(&service), &reason);
                }
            }
            Step::ServiceRefused {
                service,
                reason,
                by_remote,
            } => log::info!(
                "peer {}: service {service} refused{}: {reason}",
                self.label(),
                if by_remote { " by the peer" } else { "" }
            ),
            Step::Answer {
                channel,
                request_id,
                outcome,
            } => {
                if outcome == Outcome::Stalled {
                    log::debug!(
                        "peer {}: request {request_id} on {channel:#04x} stalled",
                        self.label()
                    );
                }
                self.conn.answer(request_id, outcome);
            }
            Step::Introspect => {
                crate::introspect::answer_remote(self.switch.clone(), self.conn.clone())
            }
            Step::Introspection(answer) => self.conn.introspection_answered(*answer),
            Step::Reply => {
                if let (Some(reply), Some(handle)) = (self.reply.take(), self.handle.clone()) {
                    let _ = reply.send(Ok(handle));
                }
            }
            Step::Rtt(rtt) => self.switch.do_send(PeerRtt { conn: self.id, rtt }),
            Step::Closed { reason, linger } => self.on_closed(reason, linger, ctx),
        }
    }

    /// The handshake completed: ask the Switch to admit the peer.
    fn register(&mut self, reg: Registration, ctx: &mut Context<Self>) {
        let handle = PeerHandle::new(PeerShared {
            up: std::sync::Mutex::default(),
            id: reg.version.node_id,
            conn_id: self.id,
            version: reg.version,
            remote_addr: self.remote_addr,
            direction: self.direction,
            suite: reg.suite,
            conn: self.conn.clone(),
            peer: ctx.address(),
            switch: self.switch.clone(),
        });
        self.handle = Some(handle.clone());
        let (conn, rtt) = (self.id, reg.rtt);
        let register = self.switch.send(Register { conn, handle, rtt });
        // The Switch answered whether the peer may stay: the [`Lifecycle`] replays what
        // waited for the admission (or the core closes), carried out at once.
        ctx.spawn(register.into_actor(self).map(|answer, act, ctx| {
            let answer = answer.unwrap_or(Err(DisconnectReason::Shutdown));
            let admit = |core: &mut PeerCore, now| act.life.handle_admission(now, answer, core);
            if act.conn.update(admit) {
                log::debug!("peer {} admitted ({:?})", act.label(), act.direction);
            }
            act.on_core_events(ctx);
            act.maybe_stop(ctx);
        }));
    }

    /// Hands `channel`'s waiting messages to its service, until the queue is empty or
    /// the service's mailbox is full.
    fn deliver(&mut self, channel: u8, ctx: &mut Context<Self>) {
        let (Some((config, sink)), Some(handle)) =
            (self.registry.channel(channel), self.handle.clone())
        else {
            return;
        };
        let (batch, fast) = (config.delivery_batch(), sink.payloads());
        let mut msgs = VecDeque::new();
        let pending = loop {
            let mut inner = self.conn.lock();
            let handout = inner.core.handout(channel, batch, fast, &mut msgs);
            drop(inner); // (The sink decodes outside the lock.)
            let delivered = match handout {
                Handout::Nothing => return,
                Handout::Payloads { to, payloads, cost } => {
                    to.deliver_payloads(&handle, payloads, cost)
                }
                Handout::Messages => sink.deliver(&handle, &mut msgs),
            };
            match self
                .conn
                .update(|core, now| core.handle_handout(now, channel, &mut msgs, delivered))
            {
                AfterHandout::More => {}
                AfterHandout::Stop => return,
                AfterHandout::Wait(pending) => break pending,
            }
        };
        // The mailbox is full: this channel waits for it, the others go on.
        ctx.spawn(pending.into_actor(self).map(move |(), act, ctx| {
            act.conn
                .update(|core, now| core.handle_handover(now, channel));
            act.carry_out(Step::Deliver(channel), ctx);
        }));
    }

    /// Carries out [`Step::Closed`].
    fn on_closed(&mut self, reason: DisconnectReason, linger: Duration, ctx: &mut Context<Self>) {
        if reason.is_ordinary() {
            log::info!("peer {} closed: {reason}", self.label());
        } else {
            log::warn!("peer {} closed: {reason}", self.label());
        }
        self.conn.fail_answers(&reason);
        ctx.run_later(linger, |_, ctx| ctx.stop());
        self.maybe_stop(ctx);
    }

    /// Stops once [`Lifecycle::may_stop`] says so.
    fn maybe_stop(&mut self, ctx: &mut Context<Self>) {
        let undelivered = || self.conn.lock().core.has_undelivered();
        if self.life.may_stop(undelivered) {
            ctx.stop();
        }
    }

    /// The transport's handshake ended: carries out
    /// [`Lifecycle::handle_secured`], and once the core speaks the [`Driver`] takes
    /// the socket.
    fn secured(
        &mut self,
        result: Result<(TcpStream, Secured, BytesMut), DisconnectReason>,
        ctx: &mut Context<Self>,
    ) {
        self.securing = None;
        let (io, secured, rest) = match result {
            Ok(done) => done,
            Err(reason) => {
                log::debug!(
                    "peer {}: transport handshake failed: {reason}",
                    self.label()
                );
                self.life.handle_failed(reason);
                ctx.stop();
                return;
            }
        };
        let secure = |core: &mut PeerCore, now| self.life.handle_secured(now, core, &secured);
        let next = self.conn.update(secure);
        let session = secured.session;
        let AfterSecured::Vet(node) = next else {
            ctx.spawn(Driver::new(self.conn.clone(), io, session, rest));
            return;
        };
        let ask = self.switch.send(Authenticated {
            conn: self.id,
            node,
        });
        let vetted = ask.into_actor(self).map(move |answer, act, ctx| {
            act.securing = None;
            let answer = answer.unwrap_or(Err(DisconnectReason::Shutdown));
            let vet = |core: &mut PeerCore, now| act.life.handle_vetted(now, answer, core);
            if act.conn.update(vet) {
                ctx.spawn(Driver::new(act.conn.clone(), io, session, rest));
            }
        });
        self.securing = Some(ctx.spawn(vetted));
    }
}

impl Actor for Peer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        // The transport's handshake first, within the connection's one deadline.
        let hs = self.transport.start(Role::from(self.direction));
        let deadline = self.conn.lock().core.handshake_deadline();
        let secure = async move {
            let io = TcpStream::from_std(stream);
            let mut io = io.map_err(|e| DisconnectReason::Io(e.to_string()))?;
            let (secured, rest) = crate::secure::handshake(&mut io, hs, deadline).await?;
            Ok((io, secured, rest))
        };
        let securing = secure
            .into_actor(self)
            .map(|r, act, ctx| act.secured(r, ctx));
        self.securing = Some(ctx.spawn(securing));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let reason = self.life.finish();
        self.conn.shut(&reason);
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
        self.guard.disarm();
    }
}

impl Handler<Close> for Peer {
    type Result = ();

    fn handle(&mut self, msg: Close, ctx: &mut Self::Context) {
        let (life, Close { reason, flush }) = (&mut self.life, msg);
        let close = |core: &mut PeerCore, now| life.handle_close(now, reason, flush, core);
        if self.conn.update(close) {
            if let Some(securing) = self.securing.take() {
                ctx.cancel_future(securing);
            }
            ctx.stop();
        }
    }
}

impl Handler<Attach> for Peer {
    type Result = ();

    fn handle(&mut self, msg: Attach, _: &mut Self::Context) {
        let name = msg.0.name.clone();
        if let Err(e) = self.conn.update(|core, now| core.attach(now, msg.0)) {
            log::warn!("peer {}: cannot attach {name}: {e}", self.label());
        }
    }
}

impl Handler<Detach> for Peer {
    type Result = ();

    fn handle(&mut self, msg: Detach, _: &mut Self::Context) {
        self.conn.update(|core, now| core.detach(now, &msg.0));
    }
}
