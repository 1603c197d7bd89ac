//! The Switchyard side of each scenario: real nodes on loopback, counted at the
//! receiving service actor.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use switchyard::{
    Channel, ChannelConfig, DisconnectReason, Encoded, GetInfo, GetPeers, NodeConfig, PeerAddr,
    PeerDown, PeerHandle, PeerUp, Raw, Received, ReceivedBatch, ReceivedRequest, RequestChannel,
    Service, Shutdown, Switch, SwitchExt,
};
use tokio::sync::{mpsc, Notify};

use super::{baseline, pct_rows, pct_us, BenchOptions, Row};

const DATA: u8 = 1;
const BULK: u8 = 2;
const URGENT: u8 = 3;
const REQUESTS: u8 = 4;
/// First channel of the extra services of the connection-setup run.
const EXTRA: u8 = 0x40;

/// A MessagePack message: a byte string.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Blob(#[serde(with = "serde_bytes")] pub(crate) Vec<u8>);

/// Answers every request with its own payload.
struct Answerer;

impl Actor for Answerer {
    type Context = Context<Self>;
}

impl Handler<ReceivedRequest<Blob, Blob>> for Answerer {
    type Result = ();
    fn handle(&mut self, r: ReceivedRequest<Blob, Blob>, _: &mut Self::Context) {
        let _ = r.responder.respond(&r.msg);
    }
}

/// Counts what arrives; echoes pings; keeps the handles it was given.
pub(crate) struct Counter {
    pub(crate) msgs: Arc<AtomicU64>,
    pub(crate) target: Arc<AtomicU64>,
    pub(crate) done: Arc<Notify>,
    pub(crate) peers: Arc<Mutex<Vec<PeerHandle>>>,
    /// Where pongs go (the driver of a latency run).
    pub(crate) pongs: Option<mpsc::UnboundedSender<()>>,
    pub(crate) echo: bool,
    /// The urgent channel, to echo on (known once registered: see [`UrgentChannel`]).
    pub(crate) urgent: Option<Channel<Blob>>,
}

/// Tells a [`Counter`] started on another arbiter the handle of its urgent channel,
/// before the node starts (so before anything arrives on it).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct UrgentChannel(Channel<Blob>);

impl Handler<UrgentChannel> for Counter {
    type Result = ();
    fn handle(&mut self, m: UrgentChannel, _: &mut Self::Context) {
        self.urgent = Some(m.0);
    }
}

impl Counter {
    fn count(&self, n: u64) {
        let total = self.msgs.fetch_add(n, Ordering::Relaxed) + n;
        if total >= self.target.load(Ordering::Relaxed) {
            self.done.notify_one();
        }
    }
}

impl Actor for Counter {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
    }
}

impl Handler<Received<Blob>> for Counter {
    type Result = ();
    fn handle(&mut self, m: Received<Blob>, _: &mut Self::Context) {
        if m.channel == URGENT {
            if self.echo {
                if let Some(urgent) = &self.urgent {
                    let _ = m.peer.try_send(urgent, &m.msg);
                }
            } else if let Some(p) = &self.pongs {
                let _ = p.send(());
            }
            return;
        }
        self.count(1);
    }
}

impl Handler<ReceivedBatch<Blob>> for Counter {
    type Result = ();
    fn handle(&mut self, m: ReceivedBatch<Blob>, _: &mut Self::Context) {
        self.count(m.msgs.len() as u64);
    }
}

impl Handler<Received<Bytes>> for Counter {
    type Result = ();
    fn handle(&mut self, _: Received<Bytes>, _: &mut Self::Context) {
        self.count(1);
    }
}

impl Handler<ReceivedBatch<Bytes>> for Counter {
    type Result = ();
    fn handle(&mut self, m: ReceivedBatch<Bytes>, _: &mut Self::Context) {
        self.count(m.msgs.len() as u64);
    }
}

impl Handler<PeerUp> for Counter {
    type Result = ();
    fn handle(&mut self, up: PeerUp, _: &mut Self::Context) {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(up.peer);
    }
}

impl Handler<PeerDown> for Counter {
    type Result = ();
    fn handle(&mut self, down: PeerDown, _: &mut Self::Context) {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| p != &down.peer);
    }
}

/// How the data channel delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    PerMessage,
    Batched,
    Raw,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::PerMessage => "throughput msgpack per-message",
            Mode::Batched => "throughput msgpack batched",
            Mode::Raw => "throughput raw Bytes",
        }
    }
}

/// A running node with its counting service.
pub(crate) struct BenchNode {
    pub(crate) switch: Addr<Switch>,
    pub(crate) addr: PeerAddr,
    pub(crate) counter: Arc<AtomicU64>,
    pub(crate) target: Arc<AtomicU64>,
    pub(crate) done: Arc<Notify>,
    /// The data channel, in the MessagePack modes.
    pub(crate) data: Option<Channel<Blob>>,
    /// The data channel, in [`Mode::Raw`].
    pub(crate) data_raw: Option<Channel<Raw>>,
    pub(crate) bulk: Channel<Raw>,
    pub(crate) urgent: Channel<Blob>,
    /// Requests answered with their own payload, priority as `urgent`.
    pub(crate) requests: RequestChannel<Blob, Blob>,
    arbiter: Arbiter,
}

impl BenchNode {
    pub(crate) async fn stop(self) {
        let _ = self.switch.send(Shutdown).await;
        self.arbiter.stop();
    }
}

pub(crate) fn data_channel() -> ChannelConfig {
    ChannelConfig::new(1)
        .send_queue(4096, 64 << 20)
        .max_message_size(4 << 20)
        .recv_capacity(1024)
}

/// Starts a node whose service runs on its own arbiter.
pub(crate) async fn node(
    mode: Mode,
    config: NodeConfig,
    pongs: Option<mpsc::UnboundedSender<()>>,
    echo: bool,
) -> Result<BenchNode, String> {
    node_with(mode, config, pongs, echo, false, 0).await
}

/// A service that takes one message and then never another: its mailbox fills and
/// its channel stalls.
struct Stalled;

impl Actor for Stalled {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16);
    }
}

impl Handler<ReceivedBatch<Bytes>> for Stalled {
    type Result = ();
    fn handle(&mut self, _: ReceivedBatch<Bytes>, ctx: &mut Self::Context) {
        ctx.wait(actix::fut::wrap_future(std::future::pending::<()>()));
    }
}

/// [`node`], with the bulk channel's service stalled when `stall_bulk`, and `extra`
/// more services of one channel each (negotiated on every connection).
pub(crate) async fn node_with(
    mode: Mode,
    config: NodeConfig,
    pongs: Option<mpsc::UnboundedSender<()>>,
    echo: bool,
    stall_bulk: bool,
    extra: u8,
) -> Result<BenchNode, String> {
    let msgs = Arc::new(AtomicU64::new(0));
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let done = Arc::new(Notify::new());
    let peers = Arc::new(Mutex::new(Vec::new()));
    let arbiter = Arbiter::new();
    let counter = {
        let (msgs, target, done, peers) =
            (msgs.clone(), target.clone(), done.clone(), peers.clone());
        Counter::start_in_arbiter(&arbiter.handle(), move |_| Counter {
            msgs,
            target,
            done,
            peers,
            pongs,
            echo,
            urgent: None,
        })
    };
    let mut service = Service::new("bench", 1);
    service.on_peer_up(&counter).on_peer_down(&counter);
    let (data, data_raw) = match mode {
        Mode::PerMessage => (Some(service.channel(DATA, data_channel(), &counter)), None),
        Mode::Batched => (
            Some(service.batched_channel(DATA, data_channel(), &counter)),
            None,
        ),
        Mode::Raw => (
            None,
            Some(service.raw_batched_channel(DATA, data_channel(), &counter)),
        ),
    };
    let bulk = if stall_bulk {
        let stalled = Stalled::start_in_arbiter(&arbiter.handle(), |_| Stalled);
        service.raw_batched_channel(BULK, data_channel(), &stalled)
    } else {
        service.raw_batched_channel(BULK, data_channel(), &counter)
    };
    let urgent = service.channel(URGENT, ChannelConfig::new(100), &counter);
    let answerer = Answerer::start_in_arbiter(&arbiter.handle(), |_| Answerer);
    let small = |p| ChannelConfig::new(p).max_message_size(64 << 10);
    let requests = service.request_channel(REQUESTS, small(100), &answerer);
    let mut extras = Vec::new();
    for i in 0..extra {
        let mut svc = Service::new(format!("extra-{i}"), 1);
        let _ = svc.raw_batched_channel(EXTRA + i, small(1), &counter);
        extras.push(svc);
    }
    counter
        .send(UrgentChannel(urgent))
        .await
        .map_err(|e| e.to_string())?;
    let mut builder = Switch::builder(config).service(service);
    for svc in extras {
        builder = builder.service(svc);
    }
    let switch = builder.start().map_err(|e| e.to_string())?;
    let info = switch.send(GetInfo).await.map_err(|e| e.to_string())?;
    let addr = PeerAddr::new(Some(info.id), info.listen_addr.ok_or("not listening")?);
    Ok(BenchNode {
        switch,
        addr,
        counter: msgs,
        target,
        done,
        data,
        data_raw,
        bulk,
        urgent,
        requests,
        arbiter,
    })
}

/// The config of the plaintext scenarios (the raw-TCP baselines are plaintext too).
pub(crate) fn bench_config() -> NodeConfig {
    let mut c = NodeConfig {
        arbiters: 1,
        insecure_plaintext: true,
        ..NodeConfig::local()
    };
    c.limits.max_inbound = 4096;
    c.limits.max_outbound = 4096;
    c.limits.max_handshakes = 4096;
    c
}

/// [`bench_config`] with the Noise transport: AES-256-GCM offered when `aes`, else
/// ChaCha20-Poly1305 only.
pub(crate) fn encrypted_config(aes: bool) -> NodeConfig {
    NodeConfig {
        insecure_plaintext: false,
        offer_aes_gcm: Some(aes),
        ..bench_config()
    }
}

async fn pair_with(
    mode: Mode,
    config: NodeConfig,
) -> Result<(BenchNode, BenchNode, PeerHandle), String> {
    let a = node(mode, config.clone(), None, false).await?;
    let b = node(mode, config, None, true).await?;
    let to_b = a
        .switch
        .dial(b.addr.clone())
        .await
        .map_err(|e| e.to_string())?;
    Ok((a, b, to_b))
}

async fn wait_count(n: &BenchNode, count: u64, limit: Duration) -> Result<(), String> {
    n.target.store(count, Ordering::Relaxed);
    let deadline = Instant::now() + limit;
    while n.counter.load(Ordering::Relaxed) < count {
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out: {} of {count} messages arrived",
                n.counter.load(Ordering::Relaxed)
            ));
        }
        let _ = tokio::time::timeout(Duration::from_millis(20), n.done.notified()).await;
    }
    Ok(())
}

/// Messages per `send_all` call in the throughput scenarios.
const SEND_BATCH: u64 = 64;

/// Seconds for `count` messages of `size` bytes on a fresh pair of nodes.
async fn sy_throughput(mode: Mode, size: usize, count: u64) -> Result<f64, String> {
    sy_throughput_with(mode, size, count, bench_config()).await
}

/// [`sy_throughput`] between two nodes with `config`.
async fn sy_throughput_with(
    mode: Mode,
    size: usize,
    count: u64,
    config: NodeConfig,
) -> Result<f64, String> {
    let (a, b, to_b) = pair_with(mode, config).await?;
    let (data, data_raw) = (a.data, a.data_raw);
    let t0 = Instant::now();
    // Messages go out 64 per call, the batching opportunity the baseline's sender
    // gets (64 frames per flush).
    let sender = actix::spawn(async move {
        let mut left = count;
        match (data, data_raw) {
            (_, Some(data_raw)) => {
                let payload = Bytes::from(vec![0x5a; size]);
                while left > 0 {
                    let n = left.min(SEND_BATCH);
                    let run = (0..n).map(|_| payload.clone());
                    if to_b.send_all(&data_raw, run).await.is_err() {
                        break;
                    }
                    left -= n;
                }
            }
            (Some(data), None) => {
                let blob = Blob(vec![0x5a; size]);
                while left > 0 {
                    let n = left.min(SEND_BATCH);
                    let run = (0..n).map(|_| &blob);
                    if to_b.send_all(&data, run).await.is_err() {
                        break;
                    }
                    left -= n;
                }
            }
            (None, None) => {}
        }
    });
    let res = wait_count(&b, count, Duration::from_secs(120)).await;
    let secs = t0.elapsed().as_secs_f64();
    let _ = sender.await;
    a.stop().await;
    b.stop().await;
    res.map(|()| secs)
}

fn size_name(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

/// One-way throughput rows for one message size.
pub async fn throughput(opts: &BenchOptions, size: usize) -> Result<Vec<Row>, String> {
    let full = match size {
        64 => 2_000_000,
        1024 => 500_000,
        s if s <= 64 << 10 => 8192,
        _ => 512,
    };
    let count = opts.scale(full);
    let (variant, base_secs) = baseline::throughput(size, count).await;
    let mb = |secs: f64| (size as f64 * count as f64) / secs / 1e6;
    let rate = |secs: f64| count as f64 / secs;
    let mut rows = Vec::new();
    for mode in [Mode::PerMessage, Mode::Batched, Mode::Raw] {
        let secs = sy_throughput(mode, size, count).await?;
        let note = format!(
            "baseline: the fastest raw framed TCP of this run ({}); switchyard: send_all, 64 per call",
            variant.name()
        );
        rows.push(Row::new(
            mode.name(),
            &size_name(size),
            mb(base_secs),
            mb(secs),
            "MB/s",
            &note,
        ));
        rows.push(Row::new(
            mode.name(),
            &size_name(size),
            rate(base_secs),
            rate(secs),
            "msgs/s",
            &note,
        ));
    }
    Ok(rows)
}

async fn ping_loop(
    to_b: &PeerHandle,
    urgent: &Channel<Blob>,
    pongs: &mut mpsc::UnboundedReceiver<()>,
    count: u64,
) -> Result<Vec<Duration>, String> {
    let blob = Blob(vec![1u8; 48]);
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let t0 = Instant::now();
        to_b.send(urgent, &blob).await.map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(5), pongs.recv()).await {
            Ok(Some(())) => out.push(t0.elapsed()),
            _ => return Err("pong missing".into()),
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Socket buffer size of the tuned head-of-line run: small enough that little bulk
/// waits in the kernel ahead of an urgent message (see `limits.socket_buffer`).
const TUNED_SOCKET_BUFFER: usize = 64 << 10;

/// Round trips of one pair of nodes: idle, then under a 1 MiB bulk load on a
/// low-priority channel of the same connection.
struct LoadedRtt {
    idle: Vec<Duration>,
    loaded: Vec<Duration>,
    /// Bulk throughput while the loaded round trips ran, in MB/s.
    bulk_mb_s: f64,
}

async fn loaded_rtt(config: NodeConfig, count: u64) -> Result<LoadedRtt, String> {
    let (tx, mut pongs) = mpsc::unbounded_channel();
    let a = node(Mode::Raw, config.clone(), Some(tx), false).await?;
    let b = node(Mode::Raw, config, None, true).await?;
    let to_b = a
        .switch
        .dial(b.addr.clone())
        .await
        .map_err(|e| e.to_string())?;
    let idle = ping_loop(&to_b, &a.urgent, &mut pongs, count).await?;
    // Saturate the connection with 1 MiB bulk messages on a low-priority channel.
    let running = Arc::new(AtomicBool::new(true));
    let bulk = {
        let (to_b, running, ch) = (to_b.clone(), running.clone(), a.bulk);
        actix::spawn(async move {
            let mb = Bytes::from(vec![0u8; 1 << 20]);
            while running.load(Ordering::Relaxed) {
                if to_b.send(&ch, mb.clone()).await.is_err() {
                    break;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let loaded_count = (count / 4).max(8);
    let before = b.counter.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let loaded = ping_loop(&to_b, &a.urgent, &mut pongs, loaded_count).await;
    let secs = t0.elapsed().as_secs_f64();
    let moved = b.counter.load(Ordering::Relaxed) - before;
    running.store(false, Ordering::Relaxed);
    let _ = bulk.await;
    a.stop().await;
    b.stop().await;
    Ok(LoadedRtt {
        idle,
        loaded: loaded?,
        bulk_mb_s: moved as f64 * (1u64 << 20) as f64 / secs / 1e6,
    })
}

/// Round trips while another channel of the same connection is stalled: the
/// receiver's bulk service never consumes, the sender keeps its bulk queue full.
struct StalledRtt {
    idle: Vec<Duration>,
    stalled: Vec<Duration>,
    /// Bytes the receiver holds for the stalled channel, and that channel's window.
    held: u64,
    window: u64,
}

async fn stalled_rtt(count: u64) -> Result<StalledRtt, String> {
    let (tx, mut pongs) = mpsc::unbounded_channel();
    let a = node(Mode::Raw, bench_config(), Some(tx), false).await?;
    let b = node_with(Mode::Raw, bench_config(), None, true, true, 0).await?;
    let to_b = a
        .switch
        .dial(b.addr.clone())
        .await
        .map_err(|e| e.to_string())?;
    let idle = ping_loop(&to_b, &a.urgent, &mut pongs, count).await?;
    let running = Arc::new(AtomicBool::new(true));
    let bulk = {
        let (to_b, running, ch) = (to_b.clone(), running.clone(), a.bulk);
        actix::spawn(async move {
            let chunk = Bytes::from(vec![0u8; 64 << 10]);
            while running.load(Ordering::Relaxed) {
                match to_b.try_send(&ch, chunk.clone()) {
                    Ok(()) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        })
    };
    // Let the stalled channel fill its window and the sender's queue.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stalled = ping_loop(&to_b, &a.urgent, &mut pongs, (count / 4).max(8)).await;
    running.store(false, Ordering::Relaxed);
    let _ = bulk.await;
    let b_side = b
        .switch
        .send(GetPeers)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("b lost its peer")?;
    let info = b_side.channel_info(BULK).ok_or("no bulk channel")?;
    a.stop().await;
    b.stop().await;
    Ok(StalledRtt {
        idle,
        stalled: stalled?,
        held: info.recv.received - info.recv.consumed,
        window: info.recv.window,
    })
}

/// Idle round trips, and high-priority round trips under a 1 MiB bulk load, once
/// with the defaults and once with small fixed socket buffers; then round trips while
/// another channel is stalled.
pub async fn latency(opts: &BenchOptions) -> Result<Vec<Row>, String> {
    let count = opts.scale(20_000);
    let mut base = baseline::rtt(count).await;
    base.sort_unstable();
    let auto = loaded_rtt(bench_config(), count).await?;
    let mut tuned_config = bench_config();
    tuned_config.limits.socket_buffer = Some(TUNED_SOCKET_BUFFER);
    let tuned = loaded_rtt(tuned_config, count).await?;
    let stall = stalled_rtt(count).await?;
    let note = "baseline: tokio + LengthDelimitedCodec ping-pong";
    let mut rows = Vec::new();
    rows.extend(pct_rows(
        &[("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)],
        |name| format!("idle round trip {name}"),
        "64 B",
        &base,
        &auto.idle,
        note,
    ));
    let tuned_label = format!("socket_buffer {} KiB", TUNED_SOCKET_BUFFER >> 10);
    for (label, run) in [("default settings", &auto), (tuned_label.as_str(), &tuned)] {
        let load_note = format!(
            "baseline: the same nodes idle; bulk moved {:.0} MB/s meanwhile",
            run.bulk_mb_s
        );
        for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
            rows.push(Row::new(
                &format!("high-priority round trip {name} under 1 MiB bulk, {label}"),
                "64 B",
                pct_us(&run.idle, q),
                pct_us(&run.loaded, q),
                "us",
                &load_note,
            ));
        }
    }
    for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
        rows.push(Row::new(
            &format!("high-priority round trip {name} while another channel is stalled"),
            "64 B",
            pct_us(&stall.idle, q),
            pct_us(&stall.stalled, q),
            "us",
            "baseline: the same nodes idle; the stalled service never consumes, its sender keeps trying",
        ));
    }
    rows.push(Row::new(
        "connection memory with one stalled channel",
        "64 KiB msgs",
        stall.window as f64 / 1024.0,
        stall.held as f64 / 1024.0,
        "KiB",
        "baseline: the stalled channel's window; switchyard: bytes the receiver holds for it",
    ));
    Ok(rows)
}

/// One node to 16 peers, 1 KiB messages, encoded once.
pub async fn broadcast(opts: &BenchOptions) -> Result<Vec<Row>, String> {
    const PEERS: usize = 16;
    const SIZE: usize = 1024;
    let count = opts.scale(50_000);
    let base_secs = baseline::broadcast(PEERS, SIZE, count).await;
    let hub = node(Mode::Batched, bench_config(), None, false).await?;
    let mut leaves = Vec::new();
    for _ in 0..PEERS {
        leaves.push(node(Mode::Batched, bench_config(), None, false).await?);
    }
    let mut handles = Vec::new();
    for leaf in &leaves {
        let h = hub
            .switch
            .dial(leaf.addr.clone())
            .await
            .map_err(|e| e.to_string())?;
        handles.push(h);
    }
    // Encoded once, sent to every peer without encoding or copying again.
    let encoded = Encoded::new(&Blob(vec![0x5a; SIZE])).map_err(|e| e.to_string())?;
    let data = hub.data.ok_or("the hub has a MessagePack data channel")?;
    let t0 = Instant::now();
    let sender = actix::spawn(async move {
        for _ in 0..count {
            for h in &handles {
                if h.send(&data, encoded.clone()).await.is_err() {
                    return;
                }
            }
        }
    });
    for leaf in &leaves {
        wait_count(leaf, count, Duration::from_secs(120)).await?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let _ = sender.await;
    hub.stop().await;
    for leaf in leaves {
        leaf.stop().await;
    }
    let total = (PEERS as u64 * count) as f64;
    Ok(vec![Row::new(
        "broadcast to 16 peers (aggregate)",
        "1 KiB",
        total / base_secs,
        total / secs,
        "msgs/s",
        "baseline: one tokio sender writing to 16 framed connections",
    )])
}

/// Dials from `client` to `server` `count` times, each connection closed (and
/// forgotten on both sides) before the next; returns the sorted times from dial to
/// the dial's answer (admitted, services negotiated).
async fn setup_times(
    client: &BenchNode,
    server: &BenchNode,
    count: u64,
) -> Result<Vec<Duration>, String> {
    let mut times = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let t0 = Instant::now();
        let h = client
            .switch
            .dial(server.addr.clone())
            .await
            .map_err(|e| e.to_string())?;
        times.push(t0.elapsed());
        h.disconnect(DisconnectReason::Application("bench".into()));
        // Wait until both sides forgot the connection before the next dial.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let a = client
                .switch
                .send(GetPeers)
                .await
                .map_err(|e| e.to_string())?
                .len();
            let b = server
                .switch
                .send(GetPeers)
                .await
                .map_err(|e| e.to_string())?
                .len();
            if (a == 0 && b == 0) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    times.sort_unstable();
    Ok(times)
}

/// The Noise transport: bulk throughput with each cipher against the strongest raw
/// TCP baseline, small batched messages against our own plaintext rate, connection
/// setup against plaintext setup, and handshakes one node accepts per second.
pub async fn encrypted(opts: &BenchOptions) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for size in [64usize << 10, 1 << 20] {
        let count = opts.scale(if size <= 64 << 10 { 8192 } else { 512 });
        let (variant, base_secs) = baseline::throughput(size, count).await;
        let mb = |secs: f64| (size as f64 * count as f64) / secs / 1e6;
        for (aes, cipher) in [(true, "AES-256-GCM"), (false, "ChaCha20-Poly1305")] {
            let secs = sy_throughput_with(Mode::Raw, size, count, encrypted_config(aes)).await?;
            rows.push(Row::new(
                &format!("encrypted raw Bytes ({cipher})"),
                &size_name(size),
                mb(base_secs),
                mb(secs),
                "MB/s",
                &format!(
                    "baseline: the fastest raw framed TCP of this run ({}, plaintext)",
                    variant.name()
                ),
            ));
        }
    }
    let count = opts.scale(2_000_000);
    let plain = sy_throughput(Mode::Batched, 64, count).await?;
    let rate = |secs: f64| count as f64 / secs;
    for (aes, cipher) in [(true, "AES-256-GCM"), (false, "ChaCha20-Poly1305")] {
        let secs = sy_throughput_with(Mode::Batched, 64, count, encrypted_config(aes)).await?;
        rows.push(Row::new(
            &format!("encrypted msgpack batched ({cipher})"),
            "64 B",
            rate(plain),
            rate(secs),
            "msgs/s",
            "baseline: our own plaintext msgpack batched, same run",
        ));
    }
    let count = opts.scale(300);
    let mut setups = Vec::new();
    for config in [bench_config(), encrypted_config(true)] {
        let server = node_with(Mode::Batched, config.clone(), None, false, false, 0).await?;
        let client = node_with(Mode::Batched, config, None, false, false, 0).await?;
        setups.push(setup_times(&client, &server, count).await?);
        client.stop().await;
        server.stop().await;
    }
    rows.extend(pct_rows(
        &[("p50", 0.5), ("p99", 0.99)],
        |name| format!("connection setup {name} with Noise (dial to answer, 1 service)"),
        "-",
        &setups[0],
        &setups[1],
        "baseline: the same setup in plaintext, same run",
    ));
    let count = opts.scale(2000);
    let mut rates = Vec::new();
    for plaintext in [true, false] {
        rates.push(handshake_rate(plaintext, count).await?);
    }
    rows.push(Row::new(
        "handshakes accepted per second (Noise)",
        "-",
        rates[0],
        rates[1],
        "conn/s",
        "baseline: the same in plaintext; 8 light clients at a time on this machine (both ends share its cores)",
    ));
    Ok(rows)
}

/// Connections one node accepts per second, each a complete handshake (transport,
/// `Version`/`Verack`) by a light client, 8 at a time.
async fn handshake_rate(plaintext: bool, count: u64) -> Result<f64, String> {
    let config = if plaintext {
        bench_config()
    } else {
        encrypted_config(true)
    };
    let server = node(Mode::Batched, config, None, false).await?;
    let addr = server.addr.clone();
    let workers = 8u64;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let addr = addr.clone();
        let n = count / workers + u64::from(w < count % workers);
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                let mut session = crate::status::connect_light(
                    &addr,
                    "switchyard-local",
                    Duration::from_secs(10),
                    plaintext,
                )
                .await?;
                session.say_goodbye("bench").await;
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let rate = count as f64 / t0.elapsed().as_secs_f64();
    server.stop().await;
    Ok(rate)
}

/// Time from dial to its answer (handshake done, peer admitted, services
/// negotiated), with one service and with four more.
pub async fn connect(opts: &BenchOptions) -> Result<Vec<Row>, String> {
    let count = opts.scale(300);
    let mut base = baseline::connect(count).await;
    base.sort_unstable();
    let mut rows = Vec::new();
    for (extra, label) in [(0u8, "1 service"), (4, "5 services")] {
        let server = node_with(Mode::Batched, bench_config(), None, false, false, extra).await?;
        let client = node_with(Mode::Batched, bench_config(), None, false, false, extra).await?;
        let times = setup_times(&client, &server, count).await?;
        client.stop().await;
        server.stop().await;
        rows.extend(pct_rows(
            &[("p50", 0.5), ("p99", 0.99)],
            |name| format!("connection setup {name} (dial to answer, {label})"),
            "-",
            &base,
            &times,
            "baseline: plain TCP connect; switchyard: handshake, admission and channel-0 negotiation",
        ));
    }
    Ok(rows)
}

/// Request round trips against message round trips, on one idle connection.
pub async fn requests(opts: &BenchOptions) -> Result<Vec<Row>, String> {
    let count = opts.scale(20_000);
    let (tx, mut pongs) = mpsc::unbounded_channel();
    let a = node(Mode::Raw, bench_config(), Some(tx), false).await?;
    let b = node(Mode::Raw, bench_config(), None, true).await?;
    let to_b = a
        .switch
        .dial(b.addr.clone())
        .await
        .map_err(|e| e.to_string())?;
    let mut msgs = Vec::with_capacity(count as usize);
    let mut reqs = Vec::with_capacity(count as usize);
    let blob = Blob(vec![1u8; 48]);
    // Interleaved in rounds, so both see the same moments of the machine.
    let round = (count / 10).max(1);
    for _ in 0..10 {
        msgs.extend(ping_loop(&to_b, &a.urgent, &mut pongs, round).await?);
        for _ in 0..round {
            let t0 = Instant::now();
            let _: Blob = to_b
                .request(&a.requests, &blob, Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string())?;
            reqs.push(t0.elapsed());
        }
    }
    msgs.sort_unstable();
    reqs.sort_unstable();
    a.stop().await;
    b.stop().await;
    Ok(pct_rows(
        &[("p50", 0.5), ("p99", 0.99)],
        |name| format!("request round trip {name}, idle"),
        "64 B",
        &msgs,
        &reqs,
        "baseline: a message and its echo on the same connection, same run",
    ))
}
