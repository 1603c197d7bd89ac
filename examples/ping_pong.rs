//! Round trips between two nodes in one process, with latency printed.
//!
//! ```text
//! cargo run --release --example ping_pong -- [COUNT]
//! ```
//!
//! Node B runs an echo service; node A sends `COUNT` (default 10000) pings one at a
//! time and prints the round-trip percentiles.

use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use switchyard::{
    Channel, ChannelConfig, Dial, GetInfo, NodeConfig, PeerAddr, PeerDown, PeerUp, Received,
    Service, Shutdown, Switch,
};
use tokio::sync::mpsc;

const CHANNEL: u8 = 0x20;

#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    Ping(u64),
    Pong(u64),
}

/// Answers every ping with a pong; forwards pongs to the driver.
struct Echo {
    channel: Channel<Msg>,
    pongs: Option<mpsc::UnboundedSender<u64>>,
}

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<Received<Msg>> for Echo {
    type Result = ();
    fn handle(&mut self, m: Received<Msg>, _: &mut Context<Self>) {
        match m.msg {
            Msg::Ping(n) => {
                if let Err(e) = m.peer.try_send(&self.channel, &Msg::Pong(n)) {
                    log::warn!("pong not sent: {e}");
                }
            }
            Msg::Pong(n) => {
                if let Some(tx) = &self.pongs {
                    let _ = tx.send(n);
                }
            }
        }
    }
}

impl Handler<PeerUp> for Echo {
    type Result = ();
    fn handle(&mut self, up: PeerUp, _: &mut Context<Self>) {
        log::info!("peer up: {}", up.peer.id());
    }
}

impl Handler<PeerDown> for Echo {
    type Result = ();
    fn handle(&mut self, down: PeerDown, _: &mut Context<Self>) {
        log::info!("peer down: {} ({})", down.peer.id(), down.reason);
    }
}

/// A node running the echo service; returns its Switch and the echo's channel.
fn node(pongs: Option<mpsc::UnboundedSender<u64>>) -> (Addr<Switch>, Channel<Msg>) {
    let mut service = Service::new("ping", 1);
    let mut channel = None;
    let echo = Echo::create(|ctx| {
        let ch = service.channel(CHANNEL, ChannelConfig::new(5), &ctx.address());
        channel = Some(ch);
        Echo { channel: ch, pongs }
    });
    service.on_peer_up(&echo).on_peer_down(&echo);
    let switch = Switch::builder(NodeConfig {
        arbiters: 1,
        ..NodeConfig::local()
    })
    .service(service)
    .start()
    .expect("node starts");
    (switch, channel.expect("registered in create"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let count: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    actix::System::new().block_on(async move {
        let (b, _) = node(None);
        let (tx, mut pongs) = mpsc::unbounded_channel();
        let (a, channel) = node(Some(tx));
        let info = b.send(GetInfo).await.expect("node b");
        let addr = PeerAddr::new(Some(info.id), info.listen_addr.expect("listening"));
        let peer = a.send(Dial(addr.clone())).await.expect("node a").expect("dial");
        println!("connected to {addr}; sending {count} pings one at a time");
        let mut rtts = Vec::with_capacity(count as usize);
        for n in 0..count {
            let t0 = Instant::now();
            peer.send(&channel, &Msg::Ping(n)).await.expect("ping queued");
            match tokio::time::timeout(Duration::from_secs(5), pongs.recv()).await {
                Ok(Some(got)) if got == n => rtts.push(t0.elapsed()),
                other => panic!("pong {n} missing: {other:?}"),
            }
            if n > 0 && n % (count / 5).max(1) == 0 {
                println!("  {n} round trips, last {:?}", rtts.last().copied().unwrap_or_default());
            }
        }
        rtts.sort_unstable();
        println!(
            "ping_pong: {count} round trips, p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
            percentile(&rtts, 0.50).as_secs_f64() * 1e6,
            percentile(&rtts, 0.99).as_secs_f64() * 1e6,
            percentile(&rtts, 0.999).as_secs_f64() * 1e6,
            rtts.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
        );
        let _ = a.send(Shutdown).await;
        let _ = b.send(Shutdown).await;
    });
}
