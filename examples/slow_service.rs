//! A slow service stalls only its own channel.
//!
//! ```text
//! cargo run --release --example slow_service -- [SECONDS]
//! ```
//!
//! Two nodes in one process run the same service with two channels: `bulk` (16 KiB
//! messages, priority 1) and `chat` (small pings, priority 10). On node B the bulk
//! handler is slow: it sleeps 20 ms per message. Node A floods bulk messages (each
//! send waits for room) while it pings B on the chat channel every 10 ms. Every
//! second it prints how many bulk messages B took and the chat round trips of that
//! second: the chat channel keeps its pace while bulk moves at the slow service's
//! rate, because each channel has its own flow-control window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use switchyard::{
    Bytes, Channel, ChannelConfig, Dial, GetInfo, NodeConfig, PeerAddr, PeerDown, PeerUp, Raw,
    Received, Service, Shutdown, Switch,
};
use tokio::sync::mpsc;

const BULK: u8 = 0x10;
const CHAT: u8 = 0x11;

/// A chat message: a ping carries the sender's clock reading, the pong echoes it.
#[derive(Debug, Serialize, Deserialize)]
enum Chat {
    Ping(u64),
    Pong(u64),
}

/// Handles bulk messages, taking `delay` for each one; counts them.
struct Bulk {
    delay: Duration,
    taken: Arc<AtomicU64>,
}

impl Actor for Bulk {
    type Context = Context<Self>;
}

impl Handler<Received<Bytes>> for Bulk {
    type Result = ();
    fn handle(&mut self, _: Received<Bytes>, _: &mut Context<Self>) {
        // A slow service: this blocks only the arbiter it runs on.
        std::thread::sleep(self.delay);
        self.taken.fetch_add(1, Ordering::Relaxed);
    }
}

/// Answers pings, and reports the round trip of each pong it gets.
struct Talk {
    chat: Channel<Chat>,
    epoch: Instant,
    rtts: Option<mpsc::UnboundedSender<Duration>>,
}

impl Actor for Talk {
    type Context = Context<Self>;
}

impl Handler<Received<Chat>> for Talk {
    type Result = ();
    fn handle(&mut self, m: Received<Chat>, _: &mut Context<Self>) {
        match m.msg {
            Chat::Ping(t) => {
                if let Err(e) = m.peer.try_send(&self.chat, &Chat::Pong(t)) {
                    log::warn!("pong not sent: {e}");
                }
            }
            Chat::Pong(t) => {
                let rtt = self.epoch.elapsed() - Duration::from_micros(t);
                if let Some(tx) = &self.rtts {
                    let _ = tx.send(rtt);
                }
            }
        }
    }
}

impl Handler<PeerUp> for Talk {
    type Result = ();
    fn handle(&mut self, up: PeerUp, _: &mut Context<Self>) {
        log::info!("peer up: {}", up.peer.id());
    }
}

impl Handler<PeerDown> for Talk {
    type Result = ();
    fn handle(&mut self, down: PeerDown, _: &mut Context<Self>) {
        log::info!("peer down: {} ({})", down.peer.id(), down.reason);
    }
}

/// A running demo node.
struct Node {
    switch: Addr<Switch>,
    addr: PeerAddr,
    /// Bulk messages its service took.
    taken: Arc<AtomicU64>,
    bulk: Channel<Raw>,
    chat: Channel<Chat>,
}

/// Starts a node running the demo service; its bulk handler on its own arbiter.
async fn node(
    bulk_delay: Duration,
    epoch: Instant,
    rtts: Option<mpsc::UnboundedSender<Duration>>,
) -> Node {
    let taken = Arc::new(AtomicU64::new(0));
    let bulk = {
        let taken = taken.clone();
        Bulk::start_in_arbiter(&Arbiter::new().handle(), move |_| Bulk {
            delay: bulk_delay,
            taken,
        })
    };
    // Talk sends on its own channel: its address exists before it starts.
    let ctx = Context::<Talk>::new();
    let talk_addr = ctx.address();
    let mut service = Service::new("demo", 1);
    let bulk = service.raw_channel(
        BULK,
        ChannelConfig::new(1).max_message_size(64 << 10),
        &bulk,
    );
    let chat = service.channel(CHAT, ChannelConfig::new(10), &talk_addr);
    ctx.run(Talk { chat, epoch, rtts });
    service.on_peer_up(&talk_addr).on_peer_down(&talk_addr);
    let switch = Switch::builder(NodeConfig::local())
        .service(service)
        .start()
        .expect("the node starts");
    let info = switch.send(GetInfo).await.expect("the switch answers");
    let addr = PeerAddr::new(Some(info.id), info.listen_addr.expect("listening"));
    Node {
        switch,
        addr,
        taken,
        bulk,
        chat,
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    actix::System::new().block_on(async move {
        let epoch = Instant::now();
        let (rtt_tx, mut rtts) = mpsc::unbounded_channel();
        let a = node(Duration::ZERO, epoch, Some(rtt_tx)).await;
        let b = node(Duration::from_millis(20), epoch, None).await;
        let to_b = match a.switch.send(Dial(b.addr.clone())).await {
            Ok(Ok(handle)) => handle,
            other => {
                eprintln!("dial failed: {other:?}");
                return;
            }
        };
        // Flood the bulk channel: each send waits for room in its queue.
        let flood = {
            let to_b = to_b.clone();
            let bulk = a.bulk;
            actix::spawn(async move {
                let payload = Bytes::from(vec![0u8; 16 << 10]);
                while to_b.send(&bulk, payload.clone()).await.is_ok() {}
            })
        };
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut second: Vec<Duration> = Vec::new();
        let mut next_report = Instant::now() + Duration::from_secs(1);
        let end = Instant::now() + Duration::from_secs(seconds);
        println!("B's bulk handler takes 20 ms a message; A floods it and pings B on chat");
        while Instant::now() < end {
            tick.tick().await;
            let t = epoch.elapsed().as_micros() as u64;
            if let Err(e) = to_b.try_send(&a.chat, &Chat::Ping(t)) {
                println!("chat ping not sent: {e}");
            }
            while let Ok(rtt) = rtts.try_recv() {
                second.push(rtt);
            }
            if Instant::now() >= next_report {
                next_report += Duration::from_secs(1);
                second.sort_unstable();
                let pct = |p: f64| {
                    second
                        .get(((second.len() as f64 - 1.0) * p) as usize)
                        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
                };
                println!(
                    "bulk taken by B: {:4}   chat: {:3} round trips, p50 {:.2} ms, max {:.2} ms",
                    b.taken.load(Ordering::Relaxed),
                    second.len(),
                    pct(0.5),
                    pct(1.0),
                );
                second.clear();
            }
        }
        flood.abort();
        let _ = a.switch.send(Shutdown).await;
        let _ = b.switch.send(Shutdown).await;
    });
}
