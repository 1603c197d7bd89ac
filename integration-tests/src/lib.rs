//! Helpers for multi-node tests over real loopback sockets: nodes on `127.0.0.1:0`
//! with short timeouts, a recording service, and a raw peer that speaks the wire
//! protocol by hand (to misbehave on purpose).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use switchyard::proto::connection::handshake::{ServiceInfo, Version, PROTOCOL_VERSION};
use switchyard::proto::secure::{Mode as TransportMode, Preamble, Suites, PREAMBLE_LEN};
use switchyard::proto::wire::codec::{Msg, MsgKind, Packet, PacketCodec};
use switchyard::proto::wire::control::{
    self, ChannelGrant, Control, ServiceOffer, CONTROL_CHANNEL,
};
use switchyard::{
    Channel, ChannelConfig, Dial, DisconnectReason, GetInfo, Limits, NodeConfig, NodeId, PeerDown,
    PeerHandle, PeerUp, Raw, Received, ReceivedBatch, Service, Switch,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::codec::{Encoder, FramedRead};

/// The service name every test node runs.
pub const SERVICE: &str = "test";

/// Starts env_logger once (RUST_LOG controls it).
pub fn init_logs() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Short timeouts so that tests about time finish fast.
pub fn fast_limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_millis(1500),
        ping_interval: Duration::from_millis(400),
        pong_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(3),
        linger: Duration::from_secs(2),
        redial_backoff_min: Duration::from_millis(50),
        redial_backoff_max: Duration::from_millis(400),
        // Every test node and raw peer connects from 127.0.0.1.
        limit_loopback: false,
        ..Limits::default()
    }
}

/// [`test_config`] without encryption: for nodes that raw peers ([`RawPeer`]) talk
/// to in plaintext packets.
pub fn plaintext_config() -> NodeConfig {
    NodeConfig {
        insecure_plaintext: true,
        ..test_config()
    }
}

/// A node config for tests: local, encrypted, short timings, two arbiters.
pub fn test_config() -> NodeConfig {
    NodeConfig {
        limits: fast_limits(),
        arbiters: 2,
        ..NodeConfig::local()
    }
}

/// [`test_config`] with keepalive timings long enough to stay out of a test that is
/// not about the keepalive: one where a receiver stops reading for a while, or where
/// pings wait behind megabytes of flood in the remote's socket.
pub fn relaxed_keepalive_config() -> NodeConfig {
    let mut config = test_config();
    config.limits.ping_interval = Duration::from_secs(60);
    config.limits.pong_timeout = Duration::from_secs(30);
    config.limits.idle_timeout = Duration::from_secs(120);
    config
}

/// A test message: a sequence number and a body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestMsg {
    /// Sequence number (per sender and channel).
    pub seq: u64,
    /// Padding or content.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// A lifecycle event seen by the recording service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `PeerUp` for this node.
    Up(NodeId),
    /// `PeerDown` for this node, with the reason.
    Down(NodeId, DisconnectReason),
}

/// A position-sensitive digest of `bytes` (FNV-1a), to check that a payload arrived
/// with every byte in its place.
#[must_use]
pub fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Everything a [`Recorder`] saw.
#[derive(Debug, Default)]
pub struct Log {
    /// `(channel, from, message)` in arrival order.
    pub msgs: Vec<(u8, NodeId, TestMsg)>,
    /// Raw-channel payload sizes `(channel, from, len)`.
    pub raw: Vec<(u8, NodeId, usize)>,
    /// A digest of each raw-channel payload, in the order of `raw` (see [`digest`]).
    pub raw_digests: Vec<u64>,
    /// Lifecycle events in order.
    pub events: Vec<Event>,
    /// Handles from `PeerUp`, newest last.
    pub peers: Vec<PeerHandle>,
    /// Number of actix messages (batches count once) handled.
    pub deliveries: u64,
}

/// Shared view of a [`Recorder`]'s log.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<Mutex<Log>>);

impl Shared {
    /// Locks the log.
    pub fn lock(&self) -> MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Polls `cond` every 5 ms until it holds or `timeout` passes; returns whether it held.
    pub async fn wait_for(&self, timeout: Duration, cond: impl Fn(&Log) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if cond(&self.lock()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The first handle whose peer is `id`.
    pub fn handle_of(&self, id: NodeId) -> Option<PeerHandle> {
        self.lock()
            .peers
            .iter()
            .rev()
            .find(|p| p.id() == id)
            .cloned()
    }
}

/// A service actor that records everything, and can be made slow or stopped.
pub struct Recorder {
    log: Shared,
    /// While `false`, every delivery waits (the service "stops consuming").
    gate: watch::Receiver<bool>,
    /// Each delivery takes this long (async, the actor is blocked meanwhile).
    delay: Duration,
    /// Mailbox capacity.
    mailbox: usize,
}

impl Recorder {
    /// A recorder with an open gate and no delay.
    pub fn new(log: Shared) -> (Self, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(true);
        (
            Recorder {
                log,
                gate: rx,
                delay: Duration::ZERO,
                mailbox: 64,
            },
            tx,
        )
    }

    /// Every delivery takes `delay`.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the mailbox capacity.
    pub fn with_mailbox(mut self, n: usize) -> Self {
        self.mailbox = n;
        self
    }

    fn after_delivery(&self, ctx: &mut Context<Self>) {
        let mut gate = self.gate.clone();
        let delay = self.delay;
        if delay.is_zero() && *gate.borrow() {
            return;
        }
        ctx.wait(
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let _ = gate.wait_for(|open| *open).await;
            }
            .into_actor(self),
        );
    }
}

impl Actor for Recorder {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox);
    }
}

impl Handler<Received<TestMsg>> for Recorder {
    type Result = ();
    fn handle(&mut self, m: Received<TestMsg>, ctx: &mut Self::Context) {
        {
            let mut log = self.log.lock();
            log.deliveries += 1;
            log.msgs.push((m.channel, m.peer.id(), m.msg));
        }
        self.after_delivery(ctx);
    }
}

impl Handler<ReceivedBatch<TestMsg>> for Recorder {
    type Result = ();
    fn handle(&mut self, m: ReceivedBatch<TestMsg>, ctx: &mut Self::Context) {
        {
            let mut log = self.log.lock();
            log.deliveries += 1;
            let id = m.peer.id();
            log.msgs
                .extend(m.msgs.into_iter().map(|x| (m.channel, id, x)));
        }
        self.after_delivery(ctx);
    }
}

impl Handler<Received<Bytes>> for Recorder {
    type Result = ();
    fn handle(&mut self, m: Received<Bytes>, ctx: &mut Self::Context) {
        {
            let mut log = self.log.lock();
            log.deliveries += 1;
            log.raw.push((m.channel, m.peer.id(), m.msg.len()));
            log.raw_digests.push(digest(&m.msg));
        }
        self.after_delivery(ctx);
    }
}

impl Handler<PeerUp> for Recorder {
    type Result = ();
    fn handle(&mut self, up: PeerUp, _: &mut Self::Context) {
        let mut log = self.log.lock();
        log.events.push(Event::Up(up.peer.id()));
        log.peers.push(up.peer);
    }
}

impl Handler<PeerDown> for Recorder {
    type Result = ();
    fn handle(&mut self, down: PeerDown, _: &mut Self::Context) {
        self.log
            .lock()
            .events
            .push(Event::Down(down.peer.id(), down.reason));
    }
}

/// How a test node's channel delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `Received<TestMsg>` per message.
    PerMessage,
    /// `ReceivedBatch<TestMsg>`.
    Batched,
    /// `Received<Bytes>`.
    Raw,
}

/// A running test node.
pub struct Node {
    /// The Switch.
    pub switch: Addr<Switch>,
    /// Its id.
    pub id: NodeId,
    /// Its bound listen address.
    pub addr: SocketAddr,
    /// What its recording service saw.
    pub log: Shared,
    /// Opens and closes the recorder's gate.
    pub gate: watch::Sender<bool>,
    /// The handles of its MessagePack channels (per-message and batched).
    pub msg_channels: Vec<Channel<TestMsg>>,
    /// The handles of its raw channels.
    pub raw_channels: Vec<Channel<Raw>>,
}

impl Node {
    /// The handle of this node's MessagePack channel `id`.
    ///
    /// # Panics
    /// If the node has no such channel (a bug in the test).
    pub fn ch(&self, id: u8) -> Channel<TestMsg> {
        *self
            .msg_channels
            .iter()
            .find(|c| c.id() == id)
            .unwrap_or_else(|| panic!("node has no MessagePack channel {id}"))
    }

    /// The handle of this node's raw channel `id`.
    ///
    /// # Panics
    /// If the node has no such channel (a bug in the test).
    pub fn raw(&self, id: u8) -> Channel<Raw> {
        *self
            .raw_channels
            .iter()
            .find(|c| c.id() == id)
            .unwrap_or_else(|| panic!("node has no raw channel {id}"))
    }

    /// `ID@127.0.0.1:PORT` of this node.
    pub fn peer_addr(&self) -> switchyard::PeerAddr {
        switchyard::PeerAddr::new(Some(self.id), self.addr)
    }
}

/// Starts a node with one recording service on `channels` (id, config, mode).
pub async fn start_node(config: NodeConfig, channels: &[(u8, ChannelConfig, Mode)]) -> Node {
    start_node_with(config, channels, |r| r).await
}

/// Like [`start_node`], letting the caller adjust the recorder (delay, mailbox).
pub async fn start_node_with(
    config: NodeConfig,
    channels: &[(u8, ChannelConfig, Mode)],
    adjust: impl FnOnce(Recorder) -> Recorder,
) -> Node {
    let log = Shared::default();
    let (recorder, gate) = Recorder::new(log.clone());
    let recorder = adjust(recorder).start();
    let mut service = Service::new(SERVICE, 1);
    service.on_peer_up(&recorder).on_peer_down(&recorder);
    let mut msg_channels = Vec::new();
    let mut raw_channels = Vec::new();
    for (id, cfg, mode) in channels {
        match mode {
            Mode::PerMessage => msg_channels.push(service.channel(*id, *cfg, &recorder)),
            Mode::Batched => msg_channels.push(service.batched_channel(*id, *cfg, &recorder)),
            Mode::Raw => raw_channels.push(service.raw_channel(*id, *cfg, &recorder)),
        }
    }
    let switch = Switch::builder(config)
        .service(service)
        .start()
        .expect("switch starts");
    let info = switch.send(GetInfo).await.expect("switch answers");
    Node {
        switch,
        id: info.id,
        addr: info.listen_addr.expect("listening"),
        log,
        gate,
        msg_channels,
        raw_channels,
    }
}

/// `a` dials `b` and waits until `b`'s service saw `a` come up (its first event);
/// returns `a`'s handle to `b`.
pub async fn connect(a: &Node, b: &Node) -> PeerHandle {
    let to_b = a
        .switch
        .send(Dial(b.peer_addr()))
        .await
        .expect("switch answers")
        .expect("dial succeeds");
    assert_eq!(to_b.id(), b.id);
    let up = b
        .log
        .wait_for(Duration::from_secs(5), |l| {
            l.events == vec![Event::Up(a.id)]
        })
        .await;
    assert!(up, "{:?}", b.log.lock().events);
    to_b
}

/// A hand-driven connection that speaks the wire protocol without the runtime.
pub struct RawPeer {
    rd: FramedRead<tokio::net::tcp::OwnedReadHalf, PacketCodec>,
    wr: tokio::net::tcp::OwnedWriteHalf,
    codec: PacketCodec,
    /// The id this raw peer claims.
    pub id: NodeId,
    /// Credit the node granted, per channel, and not yet used by [`RawPeer::send`].
    pub credit: Vec<u64>,
    /// Credit this raw peer grants on every channel at the handshake.
    pub grant: u32,
}

/// What the node said when it closed a raw peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// A `Goodbye` with this reason, then EOF.
    Goodbye(DisconnectReason),
    /// EOF or reset without a goodbye.
    Silently,
}

impl RawPeer {
    /// Connects to `addr`. Each raw peer claims an id of its own (misbehaviour is
    /// scored per id, so one id reused by every raw peer of a test would be banned).
    pub async fn connect(addr: SocketAddr) -> RawPeer {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::from_stream(stream).await
    }

    /// Connects to `addr` from the local address `from` (another loopback address
    /// such as 127.9.0.1 stands for another host).
    pub async fn connect_from(
        addr: SocketAddr,
        from: std::net::IpAddr,
    ) -> std::io::Result<RawPeer> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        Ok(Self::from_stream(socket.connect(addr).await?).await)
    }

    /// Connects to `addr` from `from` and sends nothing at all (a slowloris): the
    /// node's preamble is read and dropped.
    pub async fn connect_silent_from(
        addr: SocketAddr,
        from: std::net::IpAddr,
    ) -> std::io::Result<RawPeer> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let stream = socket.connect(addr).await?;
        Ok(Self::with_preamble(stream, false).await)
    }

    /// Exchanges the transport preambles as a plaintext node (the node under test
    /// must run with `insecure_plaintext`; see [`plaintext_config`]), then speaks
    /// packets. A node that refused the connection sends its preamble and a goodbye,
    /// which [`RawPeer::closed`] reads.
    async fn from_stream(stream: TcpStream) -> RawPeer {
        Self::with_preamble(stream, true).await
    }

    async fn with_preamble(mut stream: TcpStream, send: bool) -> RawPeer {
        use tokio::io::AsyncReadExt;
        let ours = Preamble {
            mode: TransportMode::Plaintext,
            suites: Suites::CHACHA_ONLY,
        };
        if send {
            let _ = stream.write_all(&ours.encode()).await;
        }
        let mut theirs = [0u8; PREAMBLE_LEN];
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut theirs)).await;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut id = [0xee; 20];
        id[16..].copy_from_slice(&n.to_be_bytes());
        let (rd, wr) = stream.into_split();
        let codec = PacketCodec::new(1 << 20);
        RawPeer {
            rd: FramedRead::new(rd, codec),
            wr,
            codec,
            id: NodeId(id),
            credit: vec![0; 256],
            grant: 16 << 20,
        }
    }

    /// A `Version` as a well-behaved node on `network` would send it.
    pub fn version(&self, network: &str) -> Version {
        Version {
            protocol: PROTOCOL_VERSION,
            network: network.into(),
            node_id: self.id,
            listen_addr: None,
            services: vec![ServiceInfo {
                name: SERVICE.into(),
                version: 1,
            }],
            user_agent: "raw-test-peer".into(),
            nonce: 0x5eed,
        }
    }

    /// Writes raw bytes.
    pub async fn write(&mut self, bytes: &[u8]) {
        let _ = self.wr.write_all(bytes).await;
    }

    /// Closes the write half (the node reads the end of the stream).
    pub async fn shutdown(&mut self) {
        let _ = self.wr.shutdown().await;
    }

    /// Writes one packet (a chunk's cost is taken from the credit it tracks).
    pub async fn send(&mut self, p: Packet) {
        if let Packet::Msg(m) = &p {
            let cost = m.payload.len() as u64 + if m.eof { 32 } else { 0 };
            let c = &mut self.credit[usize::from(m.channel)];
            *c = c.saturating_sub(cost);
        }
        let mut buf = BytesMut::new();
        self.codec.encode(p, &mut buf).expect("encodable");
        self.write(&buf).await;
    }

    /// Writes a whole message on `channel`.
    pub async fn send_msg(&mut self, channel: u8, payload: impl Into<Bytes>) {
        self.send(Packet::Msg(Msg {
            channel,
            eof: true,
            kind: MsgKind::Plain,
            total: None,
            payload: payload.into(),
        }))
        .await;
    }

    /// Writes a control message on channel 0.
    pub async fn send_control(&mut self, c: &Control) {
        self.send_msg(CONTROL_CHANNEL, control::encode(c)).await;
    }

    /// Reads the next packet (None at EOF or error), within `timeout`; credit the node
    /// grants is counted.
    pub async fn next(&mut self, timeout: Duration) -> Option<Packet> {
        match tokio::time::timeout(timeout, self.rd.next()).await {
            Ok(Some(Ok(p))) => {
                if let Packet::Credit { channel, bytes } = &p {
                    self.credit[usize::from(*channel)] += u64::from(*bytes);
                }
                Some(p)
            }
            _ => None,
        }
    }

    /// Reads the next control message, answering pings and skipping other packets.
    pub async fn next_control(&mut self, timeout: Duration) -> Option<Control> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Packet::Ping(nonce) => self.send(Packet::Pong(nonce)).await,
                Packet::Msg(m) if m.channel == CONTROL_CHANNEL => {
                    return control::decode(&m.payload).ok()
                }
                _ => {}
            }
        }
    }

    /// Reads (answering pings) until the node granted at least `bytes` of credit on
    /// `channel`; false if it did not within `timeout`.
    pub async fn wait_credit(&mut self, channel: u8, bytes: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.credit[usize::from(channel)] < bytes {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Packet::Ping(nonce)) => self.send(Packet::Pong(nonce)).await,
                Some(_) => {}
                None => return false,
            }
        }
        true
    }

    /// Full handshake as a well-behaved peer on `network`, then accepts the node's
    /// first service offer on the same channel ids, granting `self.grant` of credit on
    /// each (the node's own grants are counted in `credit`); returns the node's
    /// Version.
    pub async fn handshake(&mut self, network: &str) -> Version {
        let v = self.version(network);
        self.send_control(&Control::Version(v)).await;
        let mut theirs = None;
        let mut verack = false;
        while theirs.is_none() || !verack {
            match self.next_control(Duration::from_secs(5)).await {
                Some(Control::Version(v)) => {
                    theirs = Some(v);
                    self.send_control(&Control::Verack).await;
                }
                Some(Control::Verack) => verack = true,
                other => panic!("unexpected during handshake: {other:?}"),
            }
        }
        match self.next_control(Duration::from_secs(5)).await {
            Some(Control::ServiceConnect(offer)) => {
                for g in &offer.channels {
                    self.credit[usize::from(g.id)] += u64::from(g.credit);
                }
                let grant = self.grant;
                let answer = ServiceOffer {
                    channels: offer
                        .channels
                        .iter()
                        .map(|g| ChannelGrant {
                            id: g.id,
                            credit: grant,
                        })
                        .collect(),
                    ..offer
                };
                self.send_control(&Control::ServiceAccept(answer)).await;
            }
            other => panic!("expected the node's service offer, got {other:?}"),
        }
        theirs.expect("version")
    }

    /// Reads until the node closes; reports its goodbye. `answer_pings`: keep the
    /// keepalive happy meanwhile.
    pub async fn closed(&mut self, timeout: Duration, answer_pings: bool) -> Closed {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                panic!("the node did not close the connection within {timeout:?}");
            }
            match tokio::time::timeout(left, self.rd.next()).await {
                Err(_) => panic!("the node did not close the connection within {timeout:?}"),
                Ok(None) | Ok(Some(Err(_))) => return Closed::Silently,
                Ok(Some(Ok(Packet::Ping(nonce)))) if answer_pings => {
                    self.send(Packet::Pong(nonce)).await
                }
                Ok(Some(Ok(Packet::Msg(m)))) if m.channel == CONTROL_CHANNEL => {
                    if let Ok(Control::Goodbye(reason)) = control::decode(&m.payload) {
                        return Closed::Goodbye(reason);
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Whether the node leaves the connection open (nothing closes it) for `within`.
    pub async fn still_open(&mut self, within: Duration) -> bool {
        loop {
            match tokio::time::timeout(within, self.rd.next()).await {
                Err(_) => return true,
                Ok(None) | Ok(Some(Err(_))) => return false,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// Encodes a test message as its channel would carry it.
pub fn encode(msg: &TestMsg) -> Bytes {
    Bytes::from(rmp_serde::to_vec(msg).expect("encodable"))
}
