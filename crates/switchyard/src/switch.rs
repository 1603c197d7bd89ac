//! The Switch actor: one per node. It listens, dials, admits and supervises peers,
//! keeps persistent peers connected, broadcasts, and shuts the node down gracefully.
//!
//! ```no_run
//! use switchyard::{NodeConfig, Switch, Dial, GetInfo};
//!
//! actix::System::new().block_on(async {
//!     let switch = Switch::builder(NodeConfig::local()).start().expect("start");
//!     let info = switch.send(GetInfo).await.expect("mailbox");
//!     println!("listening on {:?} as {}", info.listen_addr, info.id);
//!     let peer = switch.send(Dial("127.0.0.1:26656".parse().unwrap())).await;
//!     println!("{peer:?}");
//! });
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use futures_util::future::join_all;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use switchyard_proto::connection::goodbye_bytes;
use switchyard_proto::connection::handshake::{HandshakeError, Version, PROTOCOL_VERSION};
use switchyard_proto::secure::SecureHandshake;
use switchyard_proto::switch::refusals::SUMMARY_INTERVAL;
use switchyard_proto::switch::{
    Action, BanKey, BanList, ConnId, Decision, DialRefusal, Direction, MemoryBans, PersistentId,
    Refusal, Retry, Severity, SwitchConfig, SwitchCore,
};
use switchyard_proto::text::RemoteText;
use switchyard_proto::{ConnParams, DisconnectReason, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::secure::Transport;
use tokio::sync::oneshot;

use crate::addr::PeerAddr;
use crate::channel::{encode_one, Channel, Raw};
use crate::config::NodeConfig;
use crate::error::{DialError, SendFailure, StartError};
use crate::handle::PeerHandle;
use crate::identity::NodeKey;
use crate::introspect::{self, Introspect, IntrospectFailure, IntrospectPeer, Introspection};
use crate::metrics::{Metrics, Scrape};
use crate::msg::{
    Attach, Authenticated, Close, ClosedGuard, Detach, PeerClosed, PeerInit, PeerRtt, Register,
};
use crate::peer::Peer;
use crate::pool::ArbiterPool;
use crate::registry::Registry;
use crate::service::Service;

/// Builds and starts a [`Switch`].
pub struct SwitchBuilder {
    config: NodeConfig,
    key: Option<NodeKey>,
    services: Vec<Service>,
    bans: Option<Box<dyn BanList>>,
}

impl SwitchBuilder {
    /// Registers a service (its name, version and channels).
    #[must_use]
    pub fn service(mut self, service: Service) -> Self {
        self.services.push(service);
        self
    }

    /// Uses this identity key (default: a fresh random one).
    #[must_use]
    pub fn key(mut self, key: NodeKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Where bans and misbehaviour scores are kept; default in memory
    /// ([`MemoryBans`], lost at restart). A peer store's list (`switchyard_pex`'s
    /// `DiscoveryHandle::bans`) keeps them across restarts: the bans and points it
    /// holds apply from the start.
    #[must_use]
    pub fn bans(mut self, bans: impl BanList + 'static) -> Self {
        self.bans = Some(Box::new(bans));
        self
    }

    /// Validates the config, binds the listen address, starts the arbiter pool and
    /// the Switch in the current actix system, and dials the configured peers.
    pub fn start(self) -> Result<Addr<Switch>, StartError> {
        self.config.validate().map_err(StartError::Config)?;
        let registry = Arc::new(Registry::build(self.services, &self.config.limits)?);
        let listener = match self.config.listen {
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .map_err(|source| StartError::Bind { addr, source })?;
                l.set_nonblocking(true)
                    .map_err(|source| StartError::Bind { addr, source })?;
                Some(l)
            }
            None => None,
        };
        let listen_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let metrics_listener = match self.config.metrics_addr {
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .map_err(|source| StartError::Bind { addr, source })?;
                l.set_nonblocking(true)
                    .map_err(|source| StartError::Bind { addr, source })?;
                Some(l)
            }
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
        // Registered with the runtime now, in the caller's System: nothing the actor
        // does when it starts (or is dropped unstarted, when the System ends first)
        // needs a reactor.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StartError::NoSystem);
        }
        let unbound = || ([0, 0, 0, 0], 0).into();
        let listener = match listener.map(TcpListener::from_std).transpose() {
            Ok(l) => l,
            Err(source) => {
                return Err(StartError::Bind {
                    addr: listen_addr.unwrap_or_else(unbound),
                    source,
                })
            }
        };
        let metrics_listener = match metrics_listener.map(TcpListener::from_std).transpose() {
            Ok(l) => l,
            Err(source) => {
                return Err(StartError::Bind {
                    addr: metrics_addr.unwrap_or_else(unbound),
                    source,
                })
            }
        };
        let key = self.key.unwrap_or_else(NodeKey::generate);
        let mut rng = match self.config.seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_entropy(),
        };
        let id = key.node_id();
        let bans = self.bans.unwrap_or_else(|| Box::new(MemoryBans::default()));
        let core = SwitchCore::with_bans(
            SwitchConfig {
                local: id,
                limits: self.config.limits.clone(),
                persistent: self.config.persistent_peers.iter().map(|a| a.id).collect(),
                unconditional: self.config.unconditional_peers.clone(),
                seed: rng.gen(),
            },
            bans,
        );
        let nonce = rng.gen();
        let transport = Arc::new(Transport::new(
            &key,
            self.config.insecure_plaintext,
            self.config.offer_aes_gcm,
        ));
        let switch = Switch {
            transport,
            pool: ArbiterPool::new(self.config.arbiter_count()),
            persistent: self.config.persistent_peers.clone(),
            config: self.config,
            id,
            nonce,
            registry,
            core,
            peers: HashMap::new(),
            next_conn: 0,
            listener,
            listen_addr,
            listener_task: None,
            timer: None,
            rng,
            shutdown_done: false,
            shutdown_waiters: Vec::new(),
            started: Instant::now(),
            metrics: metrics_listener.as_ref().map(|_| Metrics::new()),
            metrics_listener,
            metrics_addr,
            accept_errors: AcceptErrors::default(),
        };
        Ok(switch.start())
    }
}

/// A connection about to get its Peer.
struct NewConn {
    conn: ConnId,
    direction: Direction,
    remote_addr: SocketAddr,
    expected: Option<NodeId>,
    reply: Option<crate::msg::AdmitReply>,
}

struct PeerEntry {
    addr: Addr<Peer>,
    handle: Option<PeerHandle>,
}

/// Failed `accept()` calls (out of descriptors, say), reported once per interval.
#[derive(Default)]
struct AcceptErrors {
    since_report: u64,
    last_report: Option<Instant>,
}

/// Shortest time between two reports of failing `accept()` calls.
const ACCEPT_ERROR_REPORT: Duration = Duration::from_secs(10);

/// The node's supervisor (see the [module docs](self)): a shell around a
/// [`SwitchCore`], which makes every admission, redial, ban and shutdown decision.
pub struct Switch {
    config: NodeConfig,
    /// How connections are secured (identity proof, encryption, suites).
    transport: Arc<Transport>,
    id: NodeId,
    nonce: u64,
    registry: Arc<Registry>,
    pool: ArbiterPool,
    /// Decisions; bans kept where the builder said.
    core: SwitchCore<Box<dyn BanList>>,
    peers: HashMap<ConnId, PeerEntry>,
    next_conn: ConnId,
    listener: Option<TcpListener>,
    listen_addr: Option<SocketAddr>,
    listener_task: Option<SpawnHandle>,
    /// The one timer, armed at the core's `poll_timeout`.
    timer: Option<SpawnHandle>,
    /// Addresses of the persistent peers, indexed by [`PersistentId`].
    persistent: Vec<PeerAddr>,
    rng: rand::rngs::StdRng,
    shutdown_done: bool,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    /// When the node started (for its uptime).
    started: Instant,
    /// The metrics, when served.
    metrics: Option<Metrics>,
    /// The metrics listener, until the Switch starts serving on it.
    metrics_listener: Option<TcpListener>,
    metrics_addr: Option<SocketAddr>,
    accept_errors: AcceptErrors,
}

impl Switch {
    /// Starts building a node with `config`.
    #[must_use]
    pub fn builder(config: NodeConfig) -> SwitchBuilder {
        SwitchBuilder {
            config,
            key: None,
            services: Vec::new(),
            bans: None,
        }
    }

    fn local_version(&self) -> Version {
        Version {
            protocol: PROTOCOL_VERSION,
            network: self.config.network.clone(),
            node_id: self.id,
            listen_addr: self
                .config
                .external_addr
                .clone()
                .or_else(|| self.listen_addr.map(|a| a.to_string())),
            services: self.registry.service_infos(),
            user_agent: self.config.user_agent.clone(),
            nonce: self.nonce,
        }
    }

    fn next_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        self.next_conn
    }

    /// Carries out what the core decided, then arms the one timer at its deadline.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Dial(p) => self.dial_persistent(p, ctx),
                Action::Close { conn, reason } => {
                    if let Some(entry) = self.peers.get(&conn) {
                        let flush = reason == DisconnectReason::Shutdown;
                        entry.addr.do_send(Close { reason, flush });
                    }
                }
                Action::Banned { key, until, reason } => {
                    let left = until.saturating_duration_since(Instant::now());
                    match key {
                        BanKey::Node(id) => {
                            log::warn!(
                                "banned node {id} for {left:?}: {}",
                                RemoteText::new(&reason)
                            );
                        }
                        BanKey::Ip(ip) => {
                            log::warn!("banned IP {ip} for {left:?}: {}", RemoteText::new(&reason));
                        }
                    }
                }
                Action::RefusalSummary(s) => {
                    let counts: Vec<String> = s
                        .by_reason
                        .iter()
                        .map(|(r, n)| format!("{n} × {r}"))
                        .collect();
                    log::info!(
                        "refused connections in the last {:?}: {} ({} closed without a goodbye)",
                        SUMMARY_INTERVAL,
                        counts.join(", "),
                        s.without_goodbye
                    );
                }
                Action::ShutdownDone { remaining } => {
                    if remaining > 0 {
                        log::warn!(
                            "{remaining} peers did not close within the shutdown limit; stopping anyway"
                        );
                    }
                    self.shutdown_done = true;
                    for w in self.shutdown_waiters.drain(..) {
                        let _ = w.send(());
                    }
                }
            }
        }
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        if let Some(at) = self.core.poll_timeout() {
            let delay = at.saturating_duration_since(Instant::now());
            self.timer = Some(ctx.run_later(delay, |act, ctx| {
                act.timer = None;
                act.core.handle_timeout(Instant::now());
                act.drive(ctx);
            }));
        }
    }

    fn spawn_peer(&mut self, stream: TcpStream, conn: NewConn, ctx: &mut Context<Self>) {
        let NewConn {
            conn,
            direction,
            remote_addr,
            expected,
            reply,
        } = conn;
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("cannot hand over connection from {remote_addr}: {e}");
                let reason = DisconnectReason::Io(e.to_string());
                self.core
                    .handle_closed(Instant::now(), conn, reason.clone());
                if let Some(reply) = reply {
                    let _ = reply.send(Err(reason));
                }
                return;
            }
        };
        let init = PeerInit {
            guard: ClosedGuard::new(ctx.address(), conn),
            conn,
            direction,
            stream,
            remote_addr,
            params: ConnParams {
                local: self.local_version(),
                expected,
                secret: self.rng.gen(),
                services: self.registry.specs(),
            },
            transport: self.transport.clone(),
            registry: self.registry.clone(),
            switch: ctx.address(),
            reply,
        };
        let arbiter = self.pool.next();
        let addr = Peer::start_in_arbiter(&arbiter, move |_| Peer::new(init));
        self.peers.insert(conn, PeerEntry { addr, handle: None });
    }

    /// Refuses an inbound connection as the core decided: tells it why, then closes
    /// once it has read that; or closes it at once.
    fn refuse(&self, mut stream: TcpStream, refusal: Refusal, ctx: &mut Context<Self>) {
        log::debug!(
            "refusing connection from {}: {}",
            stream
                .peer_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string()),
            refusal.reason
        );
        if !refusal.goodbye {
            return; // dropped: closed at once, without a goodbye
        }
        let goodbye = SecureHandshake::refusal(&goodbye_bytes(&refusal.reason));
        let linger = self.config.limits.linger.min(Duration::from_secs(1));
        let switch = ctx.address();
        actix::spawn(async move {
            let _ = tokio::time::timeout(linger, async {
                stream.write_all(&goodbye).await?;
                stream.shutdown().await?;
                let mut sink = [0u8; 1024];
                while stream.read(&mut sink).await? > 0 {}
                Ok::<_, std::io::Error>(())
            })
            .await;
            switch.do_send(RefusalDone);
        });
    }

    fn dial(
        &mut self,
        addr: PeerAddr,
        persistent: Option<PersistentId>,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<PeerHandle, DialError>> {
        if let Err(refusal) = self.core.handle_dial(Instant::now(), addr.id) {
            let error = match refusal {
                DialRefusal::ShuttingDown => DialError::ShuttingDown,
                DialRefusal::SelfDial => DialError::SelfDial,
                DialRefusal::AlreadyConnected(id) => DialError::AlreadyConnected(id),
                _ => DialError::Closed(DisconnectReason::Banned),
            };
            if let Some(p) = persistent {
                let retry = match refusal {
                    DialRefusal::SelfDial => Retry::Never,
                    _ => Retry::Later,
                };
                if refusal != DialRefusal::ShuttingDown {
                    self.core.handle_dial_failed(Instant::now(), p, retry);
                    self.drive(ctx);
                }
            }
            return Box::pin(fut::ready(Err(error)));
        }
        let target = addr.host_port();
        let timeout = self.config.limits.handshake_timeout;
        let connect = async move {
            let stream = match tokio::time::timeout(timeout, TcpStream::connect(&target)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Err(DialError::Connect {
                        addr: target,
                        error: e.to_string(),
                    })
                }
                Err(_) => {
                    return Err(DialError::Connect {
                        addr: target,
                        error: "timed out".into(),
                    })
                }
            };
            let remote = stream.peer_addr().map_err(|e| DialError::Connect {
                addr: target,
                error: e.to_string(),
            })?;
            Ok((stream, remote))
        };
        Box::pin(connect.into_actor(self).then(move |res, act, ctx| {
            let now = Instant::now();
            let waiting = match res {
                Err(e) => {
                    if let Some(p) = persistent {
                        act.core.handle_dial_failed(now, p, Retry::Later);
                    }
                    Err(e)
                }
                Ok((stream, remote)) => {
                    let conn = act.next_conn();
                    match act
                        .core
                        .handle_connected(now, conn, remote.ip(), addr.id, persistent)
                    {
                        // Connected after Shutdown began: no new Peer may delay it.
                        Err(DisconnectReason::Shutdown) => Err(DialError::ShuttingDown),
                        Err(reason) => Err(DialError::Closed(reason)),
                        Ok(()) => {
                            let (tx, rx) = oneshot::channel();
                            let new = NewConn {
                                conn,
                                direction: Direction::Outbound,
                                remote_addr: remote,
                                expected: addr.id,
                                reply: Some(tx),
                            };
                            act.spawn_peer(stream, new, ctx);
                            Ok(rx)
                        }
                    }
                }
            };
            act.drive(ctx);
            async move {
                let rx = waiting?;
                match rx.await {
                    Ok(Ok(handle)) => Ok(handle),
                    Ok(Err(reason)) => Err(DialError::Closed(reason)),
                    Err(_) => Err(DialError::Closed(DisconnectReason::Shutdown)),
                }
            }
            .into_actor(act)
        }))
    }

    /// Dials a persistent peer; its redials are the core's (on every close and
    /// failed dial).
    fn dial_persistent(&mut self, p: PersistentId, ctx: &mut Context<Self>) {
        let Some(addr) = self.persistent.get(p.0).cloned() else {
            return;
        };
        let dial = self.dial(addr.clone(), Some(p), ctx);
        ctx.spawn(dial.map(move |res, act, ctx| match res {
            Ok(_) | Err(DialError::ShuttingDown | DialError::AlreadyConnected(_)) => {}
            Err(DialError::SelfDial) => {
                log::warn!("persistent peer {addr} is this node; not dialing it");
            }
            Err(DialError::Closed(DisconnectReason::Handshake(HandshakeError::SelfConnection))) => {
                // Redialing ourselves would never succeed.
                log::warn!("persistent peer {addr} is this node; not dialing it");
                act.core.handle_dial_failed(Instant::now(), p, Retry::Never);
                act.drive(ctx);
            }
            Err(e) => {
                let delay = act
                    .core
                    .persistent(p)
                    .and_then(|s| s.deadline())
                    .map(|at| at.saturating_duration_since(Instant::now()));
                log::debug!("persistent peer {addr}: {e}; redial in {delay:?}");
            }
        }));
    }
}

impl Actor for Switch {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        if let Some(listener) = self.listener.take() {
            let accepts = futures_util::stream::unfold(listener, |l| async move {
                let res = l.accept().await;
                if res.is_err() {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Some((res, l))
            });
            self.listener_task = Some(ctx.add_stream(accepts));
        }
        log::info!(
            "node {} up on {} ({} arbiters, services: {:?})",
            self.id,
            self.listen_addr
                .map_or_else(|| "no listener".into(), |a| a.to_string()),
            self.pool.len(),
            self.registry
                .service_infos()
                .iter()
                .map(|s| &s.name)
                .collect::<Vec<_>>()
        );
        if let Some(listener) = self.metrics_listener.take() {
            if let Some(addr) = self.metrics_addr {
                log::info!("metrics on http://{addr}/metrics");
            }
            let serve = crate::metrics::serve(listener, ctx.address().recipient());
            ctx.spawn(fut::wrap_future(serve));
        }
        // The core queued a dial of every persistent peer.
        self.drive(ctx);
        for addr in self.config.peers.clone() {
            let dial = self.dial(addr.clone(), None, ctx);
            ctx.spawn(dial.map(move |res, _, _| {
                if let Err(e) = res {
                    log::warn!("dial {addr}: {e}");
                }
            }));
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.pool.stop();
        log::info!("node {} stopped", self.id);
    }
}

impl StreamHandler<std::io::Result<(TcpStream, SocketAddr)>> for Switch {
    fn handle(&mut self, item: std::io::Result<(TcpStream, SocketAddr)>, ctx: &mut Self::Context) {
        let now = Instant::now();
        let (stream, remote) = match item {
            Ok(x) => x,
            Err(e) => {
                let errors = &mut self.accept_errors;
                errors.since_report += 1;
                if errors
                    .last_report
                    .is_none_or(|at| now.saturating_duration_since(at) >= ACCEPT_ERROR_REPORT)
                {
                    log::warn!(
                        "accept failed {} times since the last report: {e}",
                        errors.since_report
                    );
                    errors.since_report = 0;
                    errors.last_report = Some(now);
                }
                return;
            }
        };
        let conn = self.next_conn();
        match self.core.handle_accept(now, conn, remote.ip()) {
            Ok(()) => {
                let new = NewConn {
                    conn,
                    direction: Direction::Inbound,
                    remote_addr: remote,
                    expected: None,
                    reply: None,
                };
                self.spawn_peer(stream, new, ctx);
            }
            Err(refusal) => self.refuse(stream, refusal, ctx),
        }
        self.drive(ctx);
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

/// Connect to a peer. Resolves when the peer is admitted (handshake done), or fails.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<PeerHandle, DialError>")]
pub struct Dial(pub PeerAddr);

impl Handler<Dial> for Switch {
    type Result = ResponseActFuture<Self, Result<PeerHandle, DialError>>;

    fn handle(&mut self, msg: Dial, ctx: &mut Self::Context) -> Self::Result {
        self.dial(msg.0, None, ctx)
    }
}

/// What a node is: its id, where it listens, how many peers it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
    /// The bound listen address (with the real port when 0 was asked for).
    pub listen_addr: Option<SocketAddr>,
    /// The network name.
    pub network: String,
    /// Admitted peers.
    pub peers: usize,
    /// Where metrics are served (the bound address), if they are.
    pub metrics_addr: Option<SocketAddr>,
}

/// Ask the node who it is.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "NodeInfo")]
pub struct GetInfo;

impl Handler<GetInfo> for Switch {
    type Result = MessageResult<GetInfo>;

    fn handle(&mut self, _: GetInfo, _: &mut Self::Context) -> Self::Result {
        MessageResult(NodeInfo {
            id: self.id,
            listen_addr: self.listen_addr,
            network: self.config.network.clone(),
            peers: self.core.peers(),
            metrics_addr: self.metrics_addr,
        })
    }
}

/// The handles of every admitted peer.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<PeerHandle>")]
pub struct GetPeers;

impl Handler<GetPeers> for Switch {
    type Result = MessageResult<GetPeers>;

    fn handle(&mut self, _: GetPeers, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.peers
                .values()
                .filter_map(|e| e.handle.clone())
                .collect(),
        )
    }
}

/// The handle of the admitted peer `id`, if it is connected.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<PeerHandle>")]
pub struct GetPeer(pub NodeId);

impl Handler<GetPeer> for Switch {
    type Result = MessageResult<GetPeer>;

    fn handle(&mut self, msg: GetPeer, _: &mut Self::Context) -> Self::Result {
        // While a duplicate connection replaces an older one, both are here: the
        // newer is the one that stays.
        MessageResult(
            self.peers
                .iter()
                .filter_map(|(conn, e)| Some((conn, e.handle.as_ref()?)))
                .filter(|(_, h)| h.id() == msg.0)
                .max_by_key(|(conn, _)| **conn)
                .map(|(_, h)| h.clone()),
        )
    }
}

/// Send `msg` on `channel` to every admitted peer, waiting for room in each: encoded
/// once, queued to all peers at once (the Switch goes on meanwhile). Resolves to the
/// number of peers it was queued to; peers that closed meanwhile, or whose twin does
/// not receive on `channel`, are not counted. Nothing it counts is dropped by the
/// sender, but a peer whose service never consumes holds the answer back as
/// [`PeerHandle::send`] would; [`TryBroadcast`] never waits.
///
/// Fails, queuing nothing, when `msg` cannot be encoded, and with that error when it
/// is above the channel's `max_message_size`.
#[derive(Debug, Clone)]
pub struct Broadcast<T> {
    /// Channel to send on.
    pub channel: Channel<T>,
    /// The message.
    pub msg: T,
}

impl<T: Serialize + Send + 'static> Message for Broadcast<T> {
    type Result = Result<usize, SendFailure>;
}

impl<T: Serialize + Send + 'static> Handler<Broadcast<T>> for Switch {
    type Result = ResponseFuture<Result<usize, SendFailure>>;

    fn handle(&mut self, msg: Broadcast<T>, _: &mut Self::Context) -> Self::Result {
        match encode_one(&msg.msg) {
            Ok(payload) => self.broadcast(msg.channel.id(), payload),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

/// [`Broadcast`] of raw bytes on a [`Channel<Raw>`]: queued to every peer without a
/// copy, waiting for room in each.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<usize, SendFailure>")]
pub struct BroadcastRaw {
    /// Channel to send on.
    pub channel: Channel<Raw>,
    /// The bytes.
    pub payload: Bytes,
}

impl Handler<BroadcastRaw> for Switch {
    type Result = ResponseFuture<Result<usize, SendFailure>>;

    fn handle(&mut self, msg: BroadcastRaw, _: &mut Self::Context) -> Self::Result {
        self.broadcast(msg.channel.id(), msg.payload)
    }
}

/// What a [`TryBroadcast`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BroadcastReport {
    /// Peers the message was queued to.
    pub sent: usize,
    /// Peers skipped because their send queue on the channel was full.
    pub full: Vec<NodeId>,
}

/// Send `msg` on `channel` to every admitted peer that has room for it now: encoded
/// once, never waits. The report lists the peers skipped because their queue was
/// full (send to them again, or use [`Broadcast`]); peers that are closing or whose
/// twin does not receive on `channel` are in neither count.
///
/// Fails, queuing nothing, when `msg` cannot be encoded, and with that error when it
/// is above the channel's `max_message_size`.
#[derive(Debug, Clone)]
pub struct TryBroadcast<T> {
    /// Channel to send on.
    pub channel: Channel<T>,
    /// The message.
    pub msg: T,
}

impl<T: Serialize + Send + 'static> Message for TryBroadcast<T> {
    type Result = Result<BroadcastReport, SendFailure>;
}

impl<T: Serialize + Send + 'static> Handler<TryBroadcast<T>> for Switch {
    type Result = Result<BroadcastReport, SendFailure>;

    fn handle(&mut self, msg: TryBroadcast<T>, _: &mut Self::Context) -> Self::Result {
        let payload = encode_one(&msg.msg)?;
        self.try_broadcast(msg.channel.id(), &payload)
    }
}

/// [`TryBroadcast`] of raw bytes on a [`Channel<Raw>`], without a copy.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<BroadcastReport, SendFailure>")]
pub struct TryBroadcastRaw {
    /// Channel to send on.
    pub channel: Channel<Raw>,
    /// The bytes.
    pub payload: Bytes,
}

impl Handler<TryBroadcastRaw> for Switch {
    type Result = Result<BroadcastReport, SendFailure>;

    fn handle(&mut self, msg: TryBroadcastRaw, _: &mut Self::Context) -> Self::Result {
        self.try_broadcast(msg.channel.id(), &msg.payload)
    }
}

/// Whether a failed send to one peer of a broadcast is about that peer only (it is
/// closing, or does not receive on the channel) rather than the message.
fn only_that_peer(e: &SendFailure) -> bool {
    matches!(e, SendFailure::Closed | SendFailure::NotAccepted(_))
}

impl Switch {
    fn admitted(&self) -> impl Iterator<Item = &PeerHandle> {
        self.peers.values().filter_map(|e| e.handle.as_ref())
    }

    fn broadcast(&self, channel: u8, payload: Bytes) -> ResponseFuture<Result<usize, SendFailure>> {
        let sends: Vec<_> = self
            .admitted()
            .cloned()
            .map(|peer| {
                let payload = payload.clone();
                async move { peer.push(channel, payload).await }
            })
            .collect();
        Box::pin(async move {
            let mut sent = 0;
            for res in join_all(sends).await {
                match res {
                    Ok(()) => sent += 1,
                    Err(e) if only_that_peer(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(sent)
        })
    }

    fn try_broadcast(&self, channel: u8, payload: &Bytes) -> Result<BroadcastReport, SendFailure> {
        let mut report = BroadcastReport::default();
        for peer in self.admitted() {
            match peer.try_push(channel, payload.clone()) {
                Ok(()) => report.sent += 1,
                Err(SendFailure::Full(_)) => report.full.push(peer.id()),
                Err(e) if only_that_peer(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}

/// Close every peer gracefully (queued messages are written, peers are told
/// `Shutdown`, services see `PeerDown`), stop listening, then stop the Switch and its
/// arbiters. Resolves when every peer is closed.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for Switch {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        if !self.core.is_shutting_down() {
            log::info!(
                "node {} shutting down ({} connections)",
                self.id,
                self.peers.len()
            );
            if let Some(task) = self.listener_task.take() {
                ctx.cancel_future(task);
            }
            // A peer stuck delivering to a service that never consumes cannot close
            // itself; do not let it hold the node forever.
            let grace = self.config.limits.linger * 2 + Duration::from_secs(1);
            self.core.shutdown(Instant::now(), grace);
        }
        let (tx, rx) = oneshot::channel();
        if self.shutdown_done {
            let _ = tx.send(());
        } else {
            self.shutdown_waiters.push(tx);
        }
        self.drive(ctx);
        Box::pin(
            async move {
                let _ = rx.await;
            }
            .into_actor(self)
            .map(|(), _, ctx| ctx.stop()),
        )
    }
}

/// Attach a service to the running node: it is offered to every connected peer (and
/// to every later one), and gets [`PeerUp`](crate::PeerUp) for each peer whose twin
/// accepts. Fails like [`SwitchBuilder::service`] would at start (a name or channel
/// id in use, a bad channel config, a reassembly budget too small for its channels).
#[derive(Message)]
#[rtype(result = "Result<(), StartError>")]
pub struct AttachService(pub Service);

impl Handler<AttachService> for Switch {
    type Result = Result<(), StartError>;

    fn handle(&mut self, msg: AttachService, _: &mut Self::Context) -> Self::Result {
        let slot = self.registry.attach(msg.0)?;
        log::info!("service {} attached", slot.spec.name);
        for entry in self.peers.values() {
            entry.addr.do_send(Attach(slot.spec.clone()));
        }
        Ok(())
    }
}

/// Detach the service called by this name from the running node: its twins are told
/// (they see [`PeerDown`](crate::PeerDown) with
/// [`DisconnectReason::ServiceDetached`]), it gets `PeerDown` with that reason for
/// each of its peers, and the connections and other services go on. Answers whether
/// it was attached.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct DetachService(pub String);

impl Handler<DetachService> for Switch {
    type Result = bool;

    fn handle(&mut self, msg: DetachService, _: &mut Self::Context) -> bool {
        let Some(slot) = self.registry.detach(&msg.0) else {
            return false;
        };
        log::info!("service {} detached", slot.spec.name);
        for entry in self.peers.values() {
            entry.addr.do_send(Detach(slot.spec.name.clone()));
        }
        true
    }
}

impl Switch {
    /// Closes the connection `old` because a new one takes its place: services hear
    /// it is gone before the new one is up (the new Peer tells them `PeerUp` once the
    /// answer to its `Register` reaches it).
    fn close_for(&mut self, old: ConnId, reason: DisconnectReason) {
        if let Some(entry) = self.peers.get_mut(&old) {
            if let Some(old_handle) = &entry.handle {
                old_handle.service_down(None, &reason);
            }
            entry.addr.do_send(Close {
                reason,
                flush: false,
            });
        }
    }
}

impl Handler<Authenticated> for Switch {
    type Result = Result<(), DisconnectReason>;

    fn handle(&mut self, msg: Authenticated, ctx: &mut Self::Context) -> Self::Result {
        let answer = self
            .core
            .handle_authenticated(Instant::now(), msg.conn, msg.node);
        if let Err(reason) = &answer {
            log::debug!("refusing node {} after the transport: {reason}", msg.node);
        }
        self.drive(ctx);
        answer
    }
}

impl Handler<PeerRtt> for Switch {
    type Result = ();

    fn handle(&mut self, msg: PeerRtt, ctx: &mut Self::Context) {
        self.core.handle_rtt(Instant::now(), msg.conn, msg.rtt);
        self.drive(ctx);
    }
}

impl Handler<Register> for Switch {
    type Result = Result<(), DisconnectReason>;

    fn handle(&mut self, msg: Register, ctx: &mut Self::Context) -> Self::Result {
        let handle = msg.handle;
        // The Version's id, which the core checked against the key the Noise
        // handshake proved (in plaintext it is only claimed).
        let id = handle.id();
        let now = Instant::now();
        if let Some(rtt) = msg.rtt {
            self.core.handle_rtt(now, msg.conn, rtt);
        }
        let decision = self.core.handle_handshake(now, msg.conn, id);
        let result = match decision {
            Decision::Admit => Ok(()),
            Decision::Replace(old) => {
                self.close_for(old, DisconnectReason::DuplicateConnection);
                Ok(())
            }
            Decision::Evict(old) => {
                if let Some(h) = self.peers.get(&old).and_then(|e| e.handle.as_ref()) {
                    log::info!("evicting {}@{} for {id}", h.id(), h.remote_addr());
                }
                self.close_for(old, DisconnectReason::Evicted);
                Ok(())
            }
            Decision::Reject(reason) => Err(reason),
        };
        if result.is_ok() {
            log::info!(
                "peer up: {}@{} ({:?}, {})",
                id,
                handle.remote_addr(),
                handle.direction(),
                RemoteText::new(&handle.version().user_agent)
            );
            if let (Some(metrics), Some(took)) =
                (&self.metrics, handle.conn().lock().core.handshake_time())
            {
                metrics.on_handshake(took);
            }
            if let Some(entry) = self.peers.get_mut(&msg.conn) {
                entry.handle = Some(handle);
            }
        }
        self.drive(ctx);
        result
    }
}

impl Handler<PeerClosed> for Switch {
    type Result = ();

    fn handle(&mut self, msg: PeerClosed, ctx: &mut Self::Context) {
        let entry = self.peers.remove(&msg.conn);
        let handle = entry.and_then(|e| e.handle);
        if let Some(metrics) = &mut self.metrics {
            metrics.on_closed(msg.conn, &msg.reason, handle.as_ref());
        }
        if let Some(handle) = handle {
            log::info!("peer down: {} ({})", handle.id(), msg.reason);
        }
        self.core
            .handle_closed(Instant::now(), msg.conn, msg.reason);
        self.drive(ctx);
    }
}

/// From a refusal's goodbye task: it is over.
#[derive(Message)]
#[rtype(result = "()")]
struct RefusalDone;

impl Handler<RefusalDone> for Switch {
    type Result = ();

    fn handle(&mut self, _: RefusalDone, _: &mut Self::Context) {
        self.core.handle_refusal_done();
    }
}

/// Report a peer's misbehaviour (from a service, say: an unsolicited answer, a
/// malformed request). Points add up by [`Severity`]; past `limits.ban_threshold` the
/// peer's node id and IP are banned for `limits.ban_duration`, its connections are
/// closed with [`DisconnectReason::Misbehavior`], and dials and accepts of it are
/// refused with [`DisconnectReason::Banned`] until the ban ends.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Report {
    /// The peer.
    pub node: NodeId,
    /// How bad it was.
    pub severity: Severity,
    /// What it did (logged, and the reason its connection is closed with).
    pub reason: String,
}

impl Handler<Report> for Switch {
    type Result = ();

    fn handle(&mut self, msg: Report, ctx: &mut Self::Context) {
        log::debug!(
            "report on {}: {:?} {}",
            msg.node,
            msg.severity,
            RemoteText::new(&msg.reason)
        );
        self.core
            .handle_report(Instant::now(), msg.node, msg.severity, &msg.reason);
        self.drive(ctx);
    }
}

impl Switch {
    /// The node as [`Introspect`] answers it: the first peers by connection order.
    fn introspection(&self) -> Introspection {
        let now = Instant::now();
        let mut admitted: Vec<(&ConnId, &PeerHandle)> = self
            .peers
            .iter()
            .filter_map(|(conn, e)| Some((conn, e.handle.as_ref()?)))
            .collect();
        admitted.sort_by_key(|(conn, _)| **conn);
        let peers_total = u32::try_from(admitted.len()).unwrap_or(u32::MAX);
        let peers: Vec<_> = admitted
            .iter()
            .take(introspect::MAX_INTROSPECT_PEERS)
            .filter_map(|(_, h)| introspect::peer(h, now))
            .collect();
        let version = self.local_version();
        Introspection {
            node_id: self.id.to_string(),
            user_agent: version.user_agent,
            network: version.network,
            listen_addr: version.listen_addr,
            uptime_ms: switchyard_proto::connection::introspect::millis(
                now.saturating_duration_since(self.started),
            ),
            services: introspect::services(&self.registry),
            truncated: admitted.len() > peers.len(),
            peers,
            peers_total,
        }
    }
}

impl Handler<Introspect> for Switch {
    type Result = MessageResult<Introspect>;

    fn handle(&mut self, _: Introspect, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.introspection())
    }
}

impl Handler<IntrospectPeer> for Switch {
    type Result = ResponseFuture<Result<Introspection, IntrospectFailure>>;

    fn handle(&mut self, msg: IntrospectPeer, ctx: &mut Self::Context) -> Self::Result {
        let peer = <Self as Handler<GetPeer>>::handle(self, GetPeer(msg.id), ctx).0;
        let Some(handle) = peer else {
            return Box::pin(std::future::ready(Err(IntrospectFailure::NotConnected(
                msg.id,
            ))));
        };
        Box::pin(introspect::ask(handle, msg.timeout))
    }
}

impl Handler<Scrape> for Switch {
    type Result = String;

    fn handle(&mut self, _: Scrape, _: &mut Self::Context) -> String {
        let Some(metrics) = &mut self.metrics else {
            return String::new();
        };
        let peers = self
            .peers
            .iter()
            .filter_map(|(conn, e)| Some((*conn, e.handle.as_ref()?)));
        metrics.scrape(peers)
    }
}
