//! Chat between processes: every line typed on stdin goes to every connected peer.
//!
//! ```text
//! # terminal 1
//! cargo run --example chat -- --name alice --listen 127.0.0.1:7001
//! # (it prints its address as ID@127.0.0.1:7001)
//! # terminal 2
//! cargo run --example chat -- --name bob --listen 127.0.0.1:7002 --peer ID@127.0.0.1:7001
//! ```
//!
//! Type a line and press enter; `/peers` lists the peers, `/quit` (or end of input)
//! leaves gracefully.

use std::collections::HashMap;
use std::net::SocketAddr;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use switchyard::{
    Broadcast, ChannelConfig, Dial, GetInfo, GetPeers, NodeConfig, NodeId, PeerAddr, PeerDown,
    PeerUp, Received, Service, Shutdown, Switch,
};
use tokio::io::AsyncBufReadExt;

const CHAT: u8 = 0x10;

/// A chat line as it travels (MessagePack).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    from: String,
    text: String,
}

struct Chat {
    names: HashMap<NodeId, String>,
}

impl Actor for Chat {
    type Context = Context<Self>;
}

impl Handler<Received<Line>> for Chat {
    type Result = ();
    fn handle(&mut self, m: Received<Line>, _: &mut Context<Self>) {
        self.names.insert(m.peer.id(), m.msg.from.clone());
        println!("<{}> {}", m.msg.from, m.msg.text);
    }
}

impl Handler<PeerUp> for Chat {
    type Result = ();
    fn handle(&mut self, up: PeerUp, _: &mut Context<Self>) {
        println!("* {} joined from {}", up.peer.id(), up.peer.remote_addr());
    }
}

impl Handler<PeerDown> for Chat {
    type Result = ();
    fn handle(&mut self, down: PeerDown, _: &mut Context<Self>) {
        let who = self
            .names
            .get(&down.peer.id())
            .cloned()
            .unwrap_or_else(|| down.peer.id().to_string());
        println!("* {who} left ({})", down.reason);
    }
}

struct Args {
    name: String,
    listen: SocketAddr,
    peers: Vec<PeerAddr>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        name: "anon".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        peers: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--name" => args.name = value()?,
            "--listen" => args.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--peer" => args
                .peers
                .push(value()?.parse().map_err(|e| format!("--peer: {e}"))?),
            other => {
                return Err(format!(
                    "unknown argument {other}; use --name N --listen ADDR --peer ID@HOST:PORT"
                ))
            }
        }
    }
    Ok(args)
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chat: {e}");
            std::process::exit(2);
        }
    };
    actix::System::new().block_on(async move {
        let chat = Chat {
            names: HashMap::new(),
        }
        .start();
        let config = NodeConfig {
            listen: Some(args.listen),
            ..NodeConfig::local()
        };
        let mut service = Service::new("chat", 1);
        let channel = service.channel::<Line, _>(CHAT, ChannelConfig::new(5), &chat);
        service.on_peer_up(&chat).on_peer_down(&chat);
        let switch = match Switch::builder(config).service(service).start() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("chat: {e}");
                std::process::exit(1);
            }
        };
        let info = switch.send(GetInfo).await.expect("switch");
        if let Some(addr) = info.listen_addr {
            println!(
                "* you are {} at {}",
                args.name,
                PeerAddr::new(Some(info.id), addr)
            );
        }
        for peer in args.peers {
            match switch.send(Dial(peer.clone())).await.expect("switch") {
                Ok(h) => println!("* connected to {}", h.id()),
                Err(e) => eprintln!("* cannot connect to {peer}: {e}"),
            }
        }
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(text)) = lines.next_line().await {
            match text.trim() {
                "" => {}
                "/quit" => break,
                "/peers" => {
                    for p in switch.send(GetPeers).await.expect("switch") {
                        println!("* {} at {}", p.id(), p.remote_addr());
                    }
                }
                _ => {
                    let line = Line {
                        from: args.name.clone(),
                        text,
                    };
                    match switch
                        .send(Broadcast { channel, msg: line })
                        .await
                        .expect("switch")
                    {
                        Ok(0) => println!("* nobody is connected"),
                        Ok(_) => {}
                        Err(e) => eprintln!("* not sent: {e}"),
                    }
                }
            }
        }
        let _ = switch.send(Shutdown).await;
    });
}
