//! `switchyard status ID@ADDR`: connect as a light peer, complete the handshake, and
//! print what the node says about itself.
//!
//! The light client is the protocol's own [`PeerCore`] driven by a plain loop over a
//! tokio socket (no actors): the core does the handshake, the credit and the ping;
//! this file only moves bytes. Until the channel-0 introspection lands, what it
//! prints is what the node's `Version` tells, and one ping's round-trip time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use switchyard::proto::connection::handshake::{Version, PROTOCOL_VERSION};
use switchyard::proto::{
    Config, ConnParams, CoreConfig, DisconnectReason, Event, PeerCore, RecvBudget, Transmit,
};
use switchyard::{NodeKey, PeerAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// An open connection after a completed handshake, with the core that drives it.
pub struct Session {
    stream: TcpStream,
    core: PeerCore,
    rbuf: BytesMut,
    elapsed: Duration,
    /// The node closed its side: nothing more to read.
    eof: bool,
    /// Our write half is shut.
    shut: bool,
}

impl Session {
    /// Writes everything the core wants to send now.
    async fn flush(&mut self) -> Result<(), String> {
        let mut t = Transmit::new();
        while self.core.poll_transmit(Instant::now(), &mut t, 256 << 10) {
            let bytes = t.take_all();
            self.stream
                .write_all(&bytes)
                .await
                .map_err(|e| e.to_string())?;
            self.core.handle_written(Instant::now());
        }
        // The core closes our side once it has said everything (its goodbye
        // included); without this it would wait out the linger time.
        if !self.shut && self.core.poll_shutdown() {
            self.shut = true;
            let _ = self.stream.shutdown().await;
        }
        Ok(())
    }

    /// Writes what the core wants to send, then reads once (within `until`) and
    /// feeds it. Returns the reason when the connection closed.
    async fn step(&mut self, until: Instant) -> Result<(), String> {
        self.flush().await?;
        let deadline = self.core.poll_timeout().map_or(until, |t| t.min(until));
        self.rbuf.reserve(16 << 10);
        if self.eof {
            // A read would return at once: wait for the core's next deadline.
            tokio::time::sleep_until(deadline.into()).await;
            self.core.handle_timeout(Instant::now());
        } else {
            self.read_once(deadline).await;
        }
        while let Some(event) = self.core.poll_event() {
            if let Event::Closed(reason) = event {
                return Err(describe(&reason));
            }
        }
        Ok(())
    }

    /// Reads once, within `deadline`, and feeds what came to the core.
    async fn read_once(&mut self, deadline: Instant) {
        match tokio::time::timeout_at(deadline.into(), self.stream.read_buf(&mut self.rbuf)).await {
            Err(_) => self.core.handle_timeout(Instant::now()),
            Ok(Ok(0)) => {
                self.eof = true;
                self.core.handle_eof(Instant::now(), &mut self.rbuf);
            }
            Ok(Ok(_)) => self.core.handle_read(Instant::now(), &mut self.rbuf),
            Ok(Err(e)) => self.core.handle_io_error(Instant::now(), &e.to_string()),
        }
    }
}

fn describe(reason: &DisconnectReason) -> String {
    match reason {
        DisconnectReason::ByRemote(r) => format!("the node refused us: {r}"),
        other => other.to_string(),
    }
}

/// Connects to `addr` on `network` and completes the handshake as a light client
/// (no services, no channels); the connection stays open while the result is held.
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
    let _ = stream.set_nodelay(true);
    let limits = Config {
        handshake_timeout: timeout,
        ..Config::default()
    };
    let config = Arc::new(CoreConfig::new(limits).map_err(|e| e.to_string())?);
    let local = Version {
        protocol: PROTOCOL_VERSION,
        network: network.to_owned(),
        node_id: NodeKey::generate().node_id(),
        listen_addr: None,
        services: Vec::new(),
        user_agent: format!("switchyard-status/{}", env!("CARGO_PKG_VERSION")),
        nonce: rand::random(),
    };
    let params = ConnParams {
        local,
        expected: addr.id,
        secret: rand::random(),
        services: Vec::new(),
    };
    let core = PeerCore::new(Instant::now(), config, params, Arc::new(RecvBudget::new(0)));
    let mut session = Session {
        stream,
        core,
        rbuf: BytesMut::new(),
        elapsed: Duration::ZERO,
        eof: false,
        shut: false,
    };
    let until = t0 + timeout;
    while !session.core.is_active() {
        session
            .step(until)
            .await
            .map_err(|e| format!("{addr}: handshake: {e}"))?;
        if Instant::now() >= until && !session.core.is_active() {
            return Err(format!("{addr}: handshake timed out"));
        }
    }
    // Our Verack (queued by the read that completed the handshake) goes out too.
    session.flush().await?;
    session.elapsed = t0.elapsed();
    Ok(session)
}

/// Connects to `addr` on `network`, runs the handshake as a light client, and times
/// one ping.
pub async fn query(addr: &PeerAddr, network: &str, timeout: Duration) -> Result<Status, String> {
    let mut session = connect_light(addr, network, timeout).await?;
    session.core.ping(Instant::now());
    let until = Instant::now() + timeout;
    while session.core.rtt().is_none() && Instant::now() < until {
        if session.step(until).await.is_err() {
            break;
        }
    }
    Ok(Status {
        ping: session.core.rtt(),
        version: session
            .core
            .remote()
            .cloned()
            .ok_or("handshake finished without a version")?,
        handshake: session.elapsed,
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
