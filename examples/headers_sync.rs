//! Header sync with stall detection (neo-go's `GetHeaders` → `Headers`), three nodes
//! in one process.
//!
//! ```text
//! cargo run --release --example headers_sync -- [HEADERS]
//! ```
//!
//! Node B serves a chain of `HEADERS` (default 20000) headers and answers each
//! `GetHeaders` asynchronously: its handler hands the responder to a task that looks
//! the headers up and answers a moment later. Node C accepts requests and never
//! answers. Node A asks C once and B in batches of 500, printing progress: C is closed
//! as stalled after the 500 ms stall timeout, while the sync goes on with B. Exits 0
//! once A holds the whole chain, each header checked, and C was closed as stalled.

use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use switchyard::{
    ChannelConfig, Dial, DisconnectReason, GetInfo, NodeConfig, NodeId, PeerAddr, PeerDown,
    ReceivedRequest, RequestChannel, RequestError, Responder, Service, Shutdown, Switch,
};
use tokio::sync::mpsc;

const CHANNEL: u8 = 0x30;
const BATCH: u64 = 500;
const STALL: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize, Deserialize)]
struct GetHeaders {
    from: u64,
    count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    height: u64,
    hash: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Headers(Vec<Header>);

/// The header at `height` of the example chain.
fn header(height: u64) -> Header {
    Header {
        height,
        hash: height.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed,
    }
}

/// Serves headers up to `tip`, answering later from a task; or, with `silent`,
/// keeps every request unanswered.
struct Chain {
    tip: u64,
    silent: bool,
    held: Vec<Responder<Headers>>,
}

impl Actor for Chain {
    type Context = Context<Self>;
}

impl Handler<ReceivedRequest<GetHeaders, Headers>> for Chain {
    type Result = ();
    fn handle(&mut self, r: ReceivedRequest<GetHeaders, Headers>, _: &mut Context<Self>) {
        if self.silent {
            self.held.push(r.responder);
            return;
        }
        let end = r.msg.from.saturating_add(r.msg.count).min(self.tip);
        let responder = r.responder;
        let from = r.msg.from;
        // Answer from elsewhere, later: the responder travels.
        actix::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let headers = (from..end).map(header).collect();
            if let Err(e) = responder.respond(&Headers(headers)) {
                log::warn!("answer not sent: {e}");
            }
        });
    }
}

/// Prints the peers A loses, and why, and tells the sync.
struct Watcher(mpsc::UnboundedSender<(NodeId, DisconnectReason)>);

impl Actor for Watcher {
    type Context = Context<Self>;
}

impl Handler<PeerDown> for Watcher {
    type Result = ();
    fn handle(&mut self, down: PeerDown, _: &mut Context<Self>) {
        println!("A: peer {} closed: {}", down.peer.id().short(), down.reason);
        let _ = self.0.send((down.peer.id(), down.reason));
    }
}

/// A node running the headers service; returns its Switch, address and channel.
async fn node(
    tip: u64,
    silent: bool,
    watch: Option<Watcher>,
) -> Result<(Addr<Switch>, PeerAddr, RequestChannel<GetHeaders, Headers>), String> {
    let chain = Chain {
        tip,
        silent,
        held: Vec::new(),
    }
    .start();
    let mut svc = Service::new("headers", 1);
    let ch = svc.request_channel(CHANNEL, ChannelConfig::new(10), &chain);
    if let Some(w) = watch {
        svc.on_peer_down(&w.start());
    }
    let switch = Switch::builder(NodeConfig::local())
        .service(svc)
        .start()
        .map_err(|e| e.to_string())?;
    let info = switch.send(GetInfo).await.map_err(|e| e.to_string())?;
    let addr = info.listen_addr.ok_or("not listening")?;
    Ok((switch, PeerAddr::new(Some(info.id), addr), ch))
}

async fn run(tip: u64) -> Result<(), String> {
    let (downs_tx, mut downs) = mpsc::unbounded_channel();
    let (a, _, ch) = node(0, false, Some(Watcher(downs_tx))).await?;
    let (b, b_addr, _) = node(tip, false, None).await?;
    let (c, c_addr, _) = node(tip, true, None).await?;
    let to_b = a
        .send(Dial(b_addr))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let to_c = a
        .send(Dial(c_addr))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    println!(
        "A: syncing {tip} headers from B ({}), asking C ({}) too",
        to_b.id().short(),
        to_c.id().short()
    );
    // C never answers: the request stalls and C is closed, on its own task.
    let from_c = to_c.try_request(
        &ch,
        &GetHeaders {
            from: 0,
            count: BATCH,
        },
        STALL,
    );
    let stalled = actix::spawn(async move {
        match from_c {
            Ok(pending) => pending.await.err(),
            Err(e) => Some(e),
        }
    });
    let start = Instant::now();
    let mut chain: Vec<Header> = Vec::with_capacity(tip as usize);
    let mut next_report = tip / 5;
    while (chain.len() as u64) < tip {
        let from = chain.len() as u64;
        let Headers(batch) = to_b
            .request(&ch, &GetHeaders { from, count: BATCH }, STALL)
            .await
            .map_err(|e| format!("B: {e}"))?;
        if batch.is_empty() {
            return Err(format!("B sent no headers from {from}"));
        }
        for h in batch {
            if h != header(chain.len() as u64) {
                return Err(format!("bad header at {}", chain.len()));
            }
            chain.push(h);
        }
        if chain.len() as u64 >= next_report {
            println!(
                "A: {:>6}/{tip} headers ({:.0} ms)",
                chain.len(),
                start.elapsed().as_secs_f64() * 1e3
            );
            next_report += tip / 5;
        }
    }
    let c_result = stalled.await.map_err(|e| e.to_string())?;
    println!("A: C's request ended with: {c_result:?}");
    if c_result != Some(RequestError::Stalled) {
        return Err("C's request did not stall".into());
    }
    // C is closed as stalled; B stays.
    let (gone, reason) = tokio::time::timeout(Duration::from_secs(5), downs.recv())
        .await
        .map_err(|_| "C was not closed".to_string())?
        .ok_or("watcher gone")?;
    if gone != to_c.id() || !matches!(reason, DisconnectReason::Stalled { .. }) {
        return Err(format!("unexpected close of {gone}: {reason}"));
    }
    println!(
        "headers_sync: {} headers from B in {:.0} ms; C closed: {reason}",
        chain.len(),
        start.elapsed().as_secs_f64() * 1e3,
    );
    for s in [a, b, c] {
        let _ = s.send(Shutdown).await;
    }
    Ok(())
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let tip = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let result = actix::System::new().block_on(run(tip));
    if let Err(e) = result {
        eprintln!("headers_sync failed: {e}");
        std::process::exit(1);
    }
}
