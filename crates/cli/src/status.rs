//! `switchyard status ID@ADDR`: connect as a peer, complete the handshake, and print
//! what the node says about itself.
//!
//! Until the channel-0 introspection lands, this is what the node's `Version`
//! tells: id, network, protocol, services, user agent, listen address, and the
//! round-trip time of one ping.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use switchyard::proto::codec::{Msg, MsgKind, Packet, PacketCodec};
use switchyard::proto::control::{self, Control, CONTROL_CHANNEL};
use switchyard::proto::handshake::{Handshake, Version, PROTOCOL_VERSION};
use switchyard::{NodeKey, PeerAddr};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{Encoder, FramedRead};

/// What `status` learned.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// The node's handshake.
    pub version: Version,
    /// Time from connect to handshake completion.
    pub handshake: Duration,
    /// One ping's round trip.
    pub ping: Option<Duration>,
}

/// An open connection after a completed handshake.
pub struct Session {
    rd: FramedRead<tokio::net::tcp::OwnedReadHalf, PacketCodec>,
    wr: tokio::net::tcp::OwnedWriteHalf,
    version: Version,
    elapsed: Duration,
}

/// Connects to `addr` on `network` and completes the handshake as a light client
/// (no services); the connection stays open while the result is held.
pub async fn connect_light(
    addr: &PeerAddr,
    network: &str,
    timeout: Duration,
) -> Result<Session, String> {
    let t0 = Instant::now();
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr.host_port()))
        .await
        .map_err(|_| format!("{addr}: connect timed out"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    let (rd, mut wr) = stream.into_split();
    let codec = PacketCodec::new(64 * 1024);
    let mut rd = FramedRead::new(rd, codec);
    let key = NodeKey::generate();
    let local = Version {
        protocol: PROTOCOL_VERSION,
        network: network.to_owned(),
        node_id: key.node_id(),
        listen_addr: None,
        services: Vec::new(),
        user_agent: format!("switchyard-status/{}", env!("CARGO_PKG_VERSION")),
        nonce: rand::random(),
    };
    let mut hs = Handshake::new(Instant::now(), local, addr.id, timeout);
    let mut out = BytesMut::new();
    let send = |c: Control, out: &mut BytesMut| {
        let msg = Msg {
            channel: CONTROL_CHANNEL,
            eof: true,
            kind: MsgKind::Plain,
            payload: control::encode(&c),
        };
        codec
            .clone()
            .encode(Packet::Msg(msg), out)
            .map_err(|e| e.to_string())
    };
    while !hs.is_complete() {
        while let Some(c) = hs.poll_transmit() {
            send(c, &mut out)?;
        }
        if !out.is_empty() {
            wr.write_all(&out).await.map_err(|e| e.to_string())?;
            out.clear();
        }
        if hs.is_complete() {
            break;
        }
        let deadline = hs
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + timeout);
        let packet = match tokio::time::timeout_at(deadline.into(), rd.next()).await {
            Err(_) => {
                hs.handle_timeout(Instant::now())
                    .map_err(|e| format!("handshake: {e}"))?;
                continue;
            }
            Ok(None) => return Err(format!("{addr}: connection closed during the handshake")),
            Ok(Some(Err(e))) => return Err(format!("{addr}: {e}")),
            Ok(Some(Ok(p))) => p,
        };
        if let Packet::Msg(m) = &packet {
            if m.channel == CONTROL_CHANNEL {
                if let Ok(Control::Goodbye(reason)) = control::decode(&m.payload) {
                    return Err(format!("{addr} refused us: {reason}"));
                }
            }
        }
        hs.handle_packet(Instant::now(), &packet)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    let version = hs
        .remote()
        .cloned()
        .ok_or("handshake finished without a version")?;
    Ok(Session {
        rd,
        wr,
        version,
        elapsed: t0.elapsed(),
    })
}

/// Connects to `addr` on `network`, runs the handshake as a light client, and times
/// one ping.
pub async fn query(addr: &PeerAddr, network: &str, timeout: Duration) -> Result<Status, String> {
    let Session {
        mut rd,
        mut wr,
        version,
        elapsed: handshake,
    } = connect_light(addr, network, timeout).await?;
    // One ping for the round-trip time.
    let t1 = Instant::now();
    wr.write_all(&[switchyard::proto::codec::TYPE_PING])
        .await
        .map_err(|e| e.to_string())?;
    let mut ping = None;
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(p)) = rd.next().await {
            match p {
                Packet::Pong => {
                    ping = Some(t1.elapsed());
                    break;
                }
                Packet::Ping => {
                    let _ = wr.write_all(&[switchyard::proto::codec::TYPE_PONG]).await;
                }
                _ => {}
            }
        }
    })
    .await;
    Ok(Status {
        version,
        handshake,
        ping,
    })
}

/// Human-readable report.
pub fn render(addr: &PeerAddr, s: &Status) -> String {
    let v = &s.version;
    let services: Vec<String> = v
        .services
        .iter()
        .map(|s| format!("{} v{}", s.name, s.version))
        .collect();
    format!(
        "node        {}\naddress     {}\nnetwork     {}\nprotocol    {}.{}\nuser agent  {}\nlistens on  {}\nservices    {}\nhandshake   {:.2} ms\nping        {}",
        v.node_id,
        addr.host_port(),
        v.network,
        v.protocol.major,
        v.protocol.minor,
        v.user_agent,
        v.listen_addr.as_deref().unwrap_or("-"),
        if services.is_empty() { "-".to_owned() } else { services.join(", ") },
        s.handshake.as_secs_f64() * 1e3,
        s.ping.map_or_else(|| "no answer".to_owned(), |d| format!("{:.3} ms", d.as_secs_f64() * 1e3)),
    )
}
