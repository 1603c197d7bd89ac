//! Two services on two nodes, negotiated on channel 0, then each node's
//! introspection: A's asked locally, B's asked over channel 0.
//!
//! ```text
//! cargo run --example two_services
//! ```
//!
//! What it shows:
//!
//! * node A starts with the `chat` service only, and attaches `telemetry` while it
//!   runs ([`AttachService`]): the service is offered to the peer already connected
//!   and comes up with it ([`PeerUp`]);
//! * node B runs both services on *other* channel ids than A (chat on 0x30 instead of
//!   0x10, telemetry on 0x40 instead of 0x20): each side states its own ids on
//!   channel 0, so the two never have to agree on numbers;
//! * messages go both ways on both services;
//! * then A's own [`Introspect`] and B's introspection asked over channel 0
//!   ([`IntrospectPeer`]) are printed as JSON: services with their channels, the peer
//!   with the services up with it and the messages and bytes on each channel.
//!
//! It exits 0 once every message arrived and both introspections show them.

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use switchyard::{
    AttachService, Channel, ChannelConfig, Dial, GetInfo, Introspect, IntrospectPeer,
    Introspection, NodeConfig, PeerAddr, PeerHandle, PeerUp, Received, Service, Shutdown, Switch,
};
use tokio::sync::mpsc;

/// A line of chat.
#[derive(Debug, Serialize, Deserialize)]
struct Chat(String);

/// A sensor reading.
#[derive(Debug, Serialize, Deserialize)]
struct Reading {
    sensor: u32,
    value: u64,
}

/// What a node's services saw, for `main` to wait on.
#[derive(Debug)]
enum Seen {
    Up(&'static str, PeerHandle),
    Chat(String),
    Reading(u64),
}

/// One actor per service: it reports what arrives.
struct Reporter {
    service: &'static str,
    tx: mpsc::UnboundedSender<Seen>,
}

impl Actor for Reporter {
    type Context = Context<Self>;
}

impl Handler<PeerUp> for Reporter {
    type Result = ();
    fn handle(&mut self, up: PeerUp, _: &mut Context<Self>) {
        let _ = self.tx.send(Seen::Up(self.service, up.peer));
    }
}

impl Handler<Received<Chat>> for Reporter {
    type Result = ();
    fn handle(&mut self, m: Received<Chat>, _: &mut Context<Self>) {
        let _ = self.tx.send(Seen::Chat(m.msg.0));
    }
}

impl Handler<Received<Reading>> for Reporter {
    type Result = ();
    fn handle(&mut self, m: Received<Reading>, _: &mut Context<Self>) {
        let _ = self.tx.send(Seen::Reading(m.msg.value));
    }
}

/// The `chat` service on channel `id`.
fn chat(id: u8, tx: &mpsc::UnboundedSender<Seen>) -> (Service, Channel<Chat>) {
    let mut svc = Service::new("chat", 1);
    let actor = Reporter {
        service: "chat",
        tx: tx.clone(),
    }
    .start();
    let ch = svc.channel(id, ChannelConfig::new(5), &actor);
    svc.on_peer_up(&actor);
    (svc, ch)
}

/// The `telemetry` service on channel `id` (lower priority than chat).
fn telemetry(id: u8, tx: &mpsc::UnboundedSender<Seen>) -> (Service, Channel<Reading>) {
    let mut svc = Service::new("telemetry", 1);
    let actor = Reporter {
        service: "telemetry",
        tx: tx.clone(),
    }
    .start();
    let ch = svc.channel(id, ChannelConfig::new(1), &actor);
    svc.on_peer_up(&actor);
    (svc, ch)
}

/// Waits for the next thing a node saw that `pick` keeps.
async fn next<T>(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    mut pick: impl FnMut(Seen) -> Option<T>,
) -> Result<T, String> {
    loop {
        let seen = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .map_err(|_| "timed out".to_owned())?
            .ok_or("node stopped")?;
        if let Some(t) = pick(seen) {
            return Ok(t);
        }
    }
}

/// Messages each way on each service.
const COUNT: u64 = 3;

async fn run() -> Result<(Introspection, Introspection), String> {
    let config = || NodeConfig {
        arbiters: 1,
        ..NodeConfig::local()
    };
    let (a_tx, mut a_rx) = mpsc::unbounded_channel();
    let (b_tx, mut b_rx) = mpsc::unbounded_channel();

    // B: both services, on channels 0x30 and 0x40.
    let (b_chat_svc, b_chat) = chat(0x30, &b_tx);
    let (b_tel_svc, b_tel) = telemetry(0x40, &b_tx);
    let b = Switch::builder(config())
        .service(b_chat_svc)
        .service(b_tel_svc)
        .start()
        .map_err(|e| e.to_string())?;
    // A: chat on 0x10 now, telemetry on 0x20 later.
    let (a_chat_svc, a_chat) = chat(0x10, &a_tx);
    let a = Switch::builder(config())
        .service(a_chat_svc)
        .start()
        .map_err(|e| e.to_string())?;

    let info = b.send(GetInfo).await.map_err(|e| e.to_string())?;
    let b_addr = PeerAddr::new(Some(info.id), info.listen_addr.ok_or("B not listening")?);
    let to_b = a
        .send(Dial(b_addr))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let to_a = next(&mut b_rx, |s| match s {
        Seen::Up("chat", peer) => Some(peer),
        _ => None,
    })
    .await?;
    println!("chat is up between A and B");

    let (a_tel_svc, a_tel) = telemetry(0x20, &a_tx);
    a.send(AttachService(a_tel_svc))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    next(&mut a_rx, |s| {
        matches!(s, Seen::Up("telemetry", _)).then_some(())
    })
    .await?;
    println!("telemetry attached on A and up with B");

    for i in 0..COUNT {
        let fail = |e: switchyard::SendFailure| e.to_string();
        to_b.send(&a_chat, &Chat(format!("hello {i} from A")))
            .await
            .map_err(fail)?;
        to_b.send(
            &a_tel,
            &Reading {
                sensor: 1,
                value: i,
            },
        )
        .await
        .map_err(fail)?;
        to_a.send(&b_chat, &Chat(format!("hello {i} from B")))
            .await
            .map_err(fail)?;
        to_a.send(
            &b_tel,
            &Reading {
                sensor: 2,
                value: 100 + i,
            },
        )
        .await
        .map_err(fail)?;
    }
    for (name, rx) in [("A", &mut a_rx), ("B", &mut b_rx)] {
        let (mut chats, mut readings) = (0, 0);
        while chats < COUNT || readings < COUNT {
            match next(rx, Some).await? {
                Seen::Chat(text) => {
                    println!("{name} got chat: {text}");
                    chats += 1;
                }
                Seen::Reading(v) => {
                    println!("{name} got reading {v}");
                    readings += 1;
                }
                Seen::Up(..) => {}
            }
        }
    }

    let local = a.send(Introspect).await.map_err(|e| e.to_string())?;
    let remote = a
        .send(IntrospectPeer {
            id: info.id,
            timeout: Duration::from_secs(5),
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let _ = a.send(Shutdown).await;
    let _ = b.send(Shutdown).await;
    Ok((local, remote))
}

/// Whether `node`'s one peer shows `COUNT` messages in on each of `channels`.
fn received_all(node: &Introspection, channels: &[u8]) -> bool {
    node.peers.first().is_some_and(|p| {
        channels.iter().all(|id| {
            p.channels
                .iter()
                .any(|c| c.id == *id && c.recv_messages == COUNT && c.sent_messages == COUNT)
        })
    })
}

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = actix::System::new().block_on(run());
    let (local, remote) = match result {
        Ok(both) => both,
        Err(e) => {
            eprintln!("two_services: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    for (title, node) in [("A (local)", &local), ("B (over channel 0)", &remote)] {
        println!("\nintrospection of {title}:");
        println!(
            "{}",
            serde_json::to_string_pretty(node).unwrap_or_else(|e| e.to_string())
        );
    }
    if received_all(&local, &[0x10, 0x20]) && received_all(&remote, &[0x30, 0x40]) {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("two_services: the introspections do not show every message");
        std::process::ExitCode::FAILURE
    }
}
