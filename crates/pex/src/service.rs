//! [`PexActor`]: the PEX service and the peer manager on a running node, a thin actix
//! shell around the pure [`AddrBook`], [`Exchange`] and [`Manager`]. It is the one
//! place of this crate that reads the clock ([`now`]).
//!
//! * It is registered as the service `"pex"` with one request channel,
//!   [`PEX_CHANNEL`](crate::PEX_CHANNEL) (`GetAddrs` → `Addrs`), negotiated on channel 0 like any service:
//!   only peers that run PEX see it.
//! * A request is answered or refused by [`Exchange::on_request`]; a request too soon
//!   closes the asker with `DisconnectReason::Misbehavior` quoting the
//!   [`Fault`] (which the Switch counts as a `Major` report). In seed mode an inbound
//!   asker is disconnected once its answer is queued (the answer is written first).
//! * Our requests go out as `PeerHandle::request`: an answer that is oversized or
//!   holds a malformed or undialable address fails to decode, the runtime closes the
//!   sender (`DisconnectReason::Undecodable`, with the decoder's reason) and this
//!   shell reports it once more (`Fault::extra_report`), so it alone reaches the
//!   default ban threshold. An answer larger than [`MAX_PEX_MESSAGE`] bytes is closed
//!   before decoding (`MessageTooLarge`). An answer to no request of ours cannot
//!   reach this code: the runtime closes its sender (`UnexpectedResponse`).
//! * An inbound peer's announced listen address (from its `Version`) is filed in the
//!   book with the peer's IP as source: that is how a seed learns the nodes that
//!   reach it.
//! * Dials go through `SwitchExt::dial`; the manager hears how each ended.
//! * Changes of the book go to the peer store's writer thread in batches every
//!   [`flush_interval`](crate::discovery::DiscoveryConfig::flush_interval), never on
//!   the network path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use switchyard::{
    ChannelConfig, DialError, DisconnectReason, PeerAddr, PeerDown, PeerHandle, PeerUp,
    ReceivedRequest, RequestChannel, RequestError, Switch, SwitchExt,
};
use switchyard_proto::switch::Direction;
use switchyard_proto::NodeId;
use tokio::sync::{oneshot, watch};

use crate::addr::NetAddr;
use crate::book::AddrBook;
use crate::exchange::{Exchange, Fault};
use crate::manager::{Action, DialOutcome, Manager};
use crate::store::{book_changes, SharedBans, TimeAnchor};
use crate::wire::{Addrs, GetAddrs, MAX_PEX_MESSAGE};

/// The service's name, negotiated on channel 0.
pub const SERVICE_NAME: &str = "pex";

/// The channel config of [`PEX_CHANNEL`](crate::PEX_CHANNEL): low priority, messages up to
/// [`MAX_PEX_MESSAGE`], one request of ours in flight per peer and two of theirs held.
#[must_use]
pub fn channel_config() -> ChannelConfig {
    ChannelConfig::new(1)
        .max_message_size(MAX_PEX_MESSAGE)
        .requests(1, 2)
}

/// The clock: the shell feeds it to the pure parts.
#[must_use]
pub fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// The peers of a node, as the PEX service sees them (peers that run PEX).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// Outbound peers (we dialed them; persistent ones included).
    pub outbound: usize,
    /// Peers, both directions.
    pub connected: usize,
}

/// A job for the peer store's writer thread.
pub(crate) enum StoreJob {
    /// Commit these changes in one transaction.
    Apply(Vec<crate::store::Change>),
    /// Answer once everything before is committed.
    Sync(oneshot::Sender<()>),
    /// Close the store (after everything before), then answer.
    Close(oneshot::Sender<()>),
}

/// What the actor is made of (built by [`Discovery`](crate::discovery::Discovery)).
pub(crate) struct Parts {
    pub(crate) book: AddrBook,
    pub(crate) exchange: Exchange,
    pub(crate) manager: Manager,
    pub(crate) anchor: TimeAnchor,
    /// The Switch's bans: their changes go to the store with the book's.
    pub(crate) bans: SharedBans,
    pub(crate) store: Option<mpsc::Sender<StoreJob>>,
    pub(crate) flush_interval: Duration,
    pub(crate) outbound: watch::Sender<Status>,
}

/// The PEX service and peer manager of one node. See the [module docs](self).
pub struct PexActor {
    parts: Parts,
    channel: RequestChannel<GetAddrs, Addrs>,
    switch: Option<Addr<Switch>>,
    peers: HashMap<NodeId, PeerHandle>,
    next_flush: Instant,
    timer: Option<(Instant, SpawnHandle)>,
}

impl std::fmt::Debug for PexActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PexActor")
            .field("book", &self.parts.book.len())
            .field("peers", &self.peers.len())
            .field("outbound", &self.parts.manager.outbound())
            .finish()
    }
}

impl Actor for PexActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.flush();
    }
}

impl PexActor {
    pub(crate) fn new(parts: Parts, channel: RequestChannel<GetAddrs, Addrs>) -> Self {
        PexActor {
            next_flush: now() + parts.flush_interval,
            parts,
            channel,
            switch: None,
            peers: HashMap::new(),
            timer: None,
        }
    }

    /// Hands the book's and the bans' changes to the store's writer, in one batch.
    fn flush(&mut self) {
        let Some(tx) = &self.parts.store else {
            let _ = self.parts.book.take_dirty();
            let _ = self.parts.bans.take_changes();
            return;
        };
        let mut changes = book_changes(&mut self.parts.book, &self.parts.anchor);
        changes.extend(self.parts.bans.take_changes());
        if !changes.is_empty() && tx.send(StoreJob::Apply(changes)).is_err() {
            log::warn!("pex: the peer store writer is gone; changes not stored");
        }
    }

    /// Closes `peer` for `fault`, reporting it once more when the fault asks.
    fn punish(peer: &PeerHandle, fault: &Fault) {
        log::info!("pex: closing {}: {fault}", peer.id());
        if let Some(severity) = fault.extra_report() {
            peer.report(severity, fault.to_string());
        }
        peer.disconnect(DisconnectReason::Misbehavior(fault.to_string()));
    }

    /// Carries out what the manager decided, then arms the one timer.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        let now = now();
        while let Some(action) = self.parts.manager.poll_action() {
            match action {
                Action::Dial(addr) => self.dial(addr, ctx),
                Action::Ask(id) => self.ask(id, ctx),
                Action::Disconnect(id) => {
                    if let Some(p) = self.peers.get(&id) {
                        p.disconnect(DisconnectReason::Application("pex: crawled".into()));
                    }
                }
                Action::LetGo(id) => {
                    if let Some(p) = self.peers.get(&id) {
                        p.disconnect(DisconnectReason::Application(
                            "pex seed: connected too long without asking".into(),
                        ));
                    }
                }
            }
        }
        let status = Status {
            outbound: self.parts.manager.outbound(),
            connected: self.parts.manager.connected(),
        };
        self.parts.outbound.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
        if self.switch.is_none() {
            return;
        }
        let mut at = self.parts.manager.poll_timeout().min(self.next_flush);
        if let Some(t) = self.parts.book.poll_timeout() {
            at = at.min(t);
        }
        if self.timer.as_ref().is_some_and(|(t, _)| *t == at) {
            return;
        }
        if let Some((_, h)) = self.timer.take() {
            ctx.cancel_future(h);
        }
        let h = ctx.run_later(at.saturating_duration_since(now), |act, ctx| {
            act.timer = None;
            act.on_timer(ctx);
        });
        self.timer = Some((at, h));
    }

    fn on_timer(&mut self, ctx: &mut Context<Self>) {
        let now = now();
        self.parts.book.handle_timeout(now);
        self.parts.manager.handle_timeout(now, &mut self.parts.book);
        if now >= self.next_flush {
            self.flush();
            self.next_flush = now + self.parts.flush_interval;
        }
        self.drive(ctx);
    }

    fn dial(&mut self, addr: NetAddr, ctx: &mut Context<Self>) {
        let Some(switch) = self.switch.clone() else {
            return;
        };
        let to = PeerAddr::new(Some(addr.id), addr.addr);
        let fut = async move { switch.dial(to).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            let outcome = match res {
                Ok(_) => DialOutcome::Connected,
                Err(DialError::AlreadyConnected(_))
                | Err(DialError::Closed(DisconnectReason::DuplicateConnection)) => {
                    DialOutcome::AlreadyConnected
                }
                Err(DialError::ShuttingDown) => return,
                Err(DialError::SelfDial) => {
                    act.parts.book.add_our_address(addr);
                    DialOutcome::AlreadyConnected
                }
                Err(e) => {
                    log::debug!("pex: dial {addr} failed: {e}");
                    DialOutcome::Failed
                }
            };
            act.parts
                .manager
                .handle_dialed(now(), &mut act.parts.book, addr, outcome);
            act.drive(ctx);
        }));
    }

    fn ask(&mut self, id: NodeId, ctx: &mut Context<Self>) {
        let Some(peer) = self.peers.get(&id).cloned() else {
            self.parts.manager.handle_answer(now(), id, false);
            return;
        };
        let timeout = self.parts.exchange.config().request_timeout;
        let channel = self.channel;
        let asked = peer.clone();
        let fut = async move { asked.request(&channel, &GetAddrs {}, timeout).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            let now = now();
            let ok = match res {
                Ok(Addrs(addrs)) => {
                    let src = peer.remote_addr().ip();
                    let learned = act
                        .parts
                        .exchange
                        .learn(now, &mut act.parts.book, src, &addrs);
                    log::debug!("pex: {} gave {} addresses: {learned:?}", id, addrs.len());
                    true
                }
                Err(RequestError::Undecodable(e)) => {
                    Self::punish(&peer, &Fault::BadAnswer(e));
                    false
                }
                Err(e) => {
                    log::debug!("pex: asking {id} failed: {e}");
                    false
                }
            };
            act.parts.manager.handle_answer(now, id, ok);
            act.drive(ctx);
        }));
    }
}

/// Starts the manager on `switch` (sent by
/// [`DiscoveryHandle::start`](crate::discovery::DiscoveryHandle::start)).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Start(pub(crate) Addr<Switch>);

impl Handler<Start> for PexActor {
    type Result = ();

    fn handle(&mut self, msg: Start, ctx: &mut Context<Self>) {
        let switch = msg.0.clone();
        self.switch = Some(msg.0);
        let fut = async move { switch.info().await };
        ctx.wait(fut.into_actor(self).map(|info, act, ctx| {
            if let Some(info) = info {
                if let Some(listen) = info.listen_addr {
                    act.parts
                        .book
                        .add_our_address(NetAddr::new(info.id, listen));
                }
            }
            act.drive(ctx);
        }));
    }
}

/// Flush the book to the store and answer once it is committed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Flush(pub(crate) oneshot::Sender<()>);

impl Handler<Flush> for PexActor {
    type Result = ();

    fn handle(&mut self, msg: Flush, _: &mut Context<Self>) {
        self.flush();
        match &self.parts.store {
            Some(tx) => {
                if let Err(mpsc::SendError(StoreJob::Sync(reply))) = tx.send(StoreJob::Sync(msg.0))
                {
                    let _ = reply.send(());
                }
            }
            None => {
                let _ = msg.0.send(());
            }
        }
    }
}

/// Stop: flush, close the store once its writer committed everything (then answer),
/// stop the actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Stop(pub(crate) oneshot::Sender<()>);

impl Handler<Stop> for PexActor {
    type Result = ();

    fn handle(&mut self, msg: Stop, ctx: &mut Context<Self>) {
        self.flush();
        match self.parts.store.take() {
            Some(tx) => {
                if let Err(mpsc::SendError(StoreJob::Close(reply))) =
                    tx.send(StoreJob::Close(msg.0))
                {
                    let _ = reply.send(());
                }
            }
            None => {
                let _ = msg.0.send(());
            }
        }
        self.switch = None;
        ctx.stop();
    }
}

/// A snapshot of the book, for tests and tools.
#[derive(Message)]
#[rtype(result = "Vec<crate::book::Entry>")]
pub(crate) struct Entries;

impl Handler<Entries> for PexActor {
    type Result = MessageResult<Entries>;

    fn handle(&mut self, _: Entries, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.parts.book.iter().cloned().collect())
    }
}

impl Handler<ReceivedRequest<GetAddrs, Addrs>> for PexActor {
    type Result = ();

    fn handle(&mut self, r: ReceivedRequest<GetAddrs, Addrs>, _: &mut Context<Self>) {
        let inbound = r.peer.direction() == Direction::Inbound;
        match self
            .parts
            .exchange
            .on_request(now(), &mut self.parts.book, r.peer.id(), inbound)
        {
            Ok(answer) => {
                if let Err(e) = r.responder.respond(&Addrs(answer.addrs)) {
                    log::debug!("pex: answer to {} not sent: {e}", r.peer.id());
                }
                if answer.then_disconnect {
                    r.peer.disconnect(DisconnectReason::Application(
                        "pex seed: one answer per connection".into(),
                    ));
                }
            }
            Err(fault) => Self::punish(&r.peer, &fault),
        }
    }
}

/// The address an inbound peer says it listens on, with its connection's IP when it
/// announced an unspecified one.
fn announced(peer: &PeerHandle) -> Option<NetAddr> {
    let text = peer.version().listen_addr.as_deref()?;
    let mut addr: SocketAddr = text.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(peer.remote_addr().ip());
    }
    Some(NetAddr::new(peer.id(), addr))
}

impl Handler<PeerUp> for PexActor {
    type Result = ();

    fn handle(&mut self, up: PeerUp, ctx: &mut Context<Self>) {
        let peer = up.peer;
        let now = now();
        let outbound = peer.direction() == Direction::Outbound;
        if !outbound {
            if let Some(addr) = announced(&peer) {
                let _ = self
                    .parts
                    .book
                    .add_address(now, addr, peer.remote_addr().ip());
            }
        }
        self.parts
            .manager
            .handle_peer_up(now, peer.id(), peer.remote_addr(), outbound);
        self.peers.insert(peer.id(), peer);
        self.drive(ctx);
    }
}

impl Handler<PeerDown> for PexActor {
    type Result = ();

    fn handle(&mut self, down: PeerDown, ctx: &mut Context<Self>) {
        // A duplicate connection may have replaced this one: keep the newer handle.
        if self.peers.get(&down.peer.id()) == Some(&down.peer) {
            self.peers.remove(&down.peer.id());
            self.parts.manager.handle_peer_down(now(), down.peer.id());
        }
        self.drive(ctx);
    }
}
