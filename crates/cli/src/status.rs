//! `switchyard status ID@ADDR`: connect as a light peer, complete the handshake, ask
//! the node for its introspection over channel 0, and print it.
//!
//! The light client is the protocol's own [`PeerCore`] driven by a plain loop over a
//! tokio socket (no actors): the core does the handshake, the credit, the ping and
//! the `IntrospectRequest`; this file only moves bytes and prints tables: the node,
//! its services with their channels, its peers with a row per channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use switchyard::proto::connection::handshake::{Version, PROTOCOL_VERSION};
use switchyard::proto::introspect::Introspection;
use switchyard::proto::secure::{Opener, Role, Sealer};
use switchyard::proto::{
    Config, ConnParams, CoreConfig, DisconnectReason, Event, PeerCore, RecvBudget, Transmit,
};
use switchyard::secure::Transport;
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
    /// What the node answered to our `IntrospectRequest` (`None`: no answer in time).
    pub introspection: Option<Introspection>,
}

/// `status` as pretty JSON, node ids written in hex as everywhere else.
pub fn to_json(s: &Status) -> serde_json::Result<String> {
    let mut value = serde_json::to_value(s)?;
    if let Some(id) = value.pointer_mut("/version/node_id") {
        *id = serde_json::Value::String(s.version.node_id.to_string());
    }
    serde_json::to_string_pretty(&value)
}

/// An open connection after a completed handshake, with the core that drives it.
pub struct Session {
    stream: TcpStream,
    core: PeerCore,
    rbuf: BytesMut,
    /// Ciphertext read and not opened yet (encrypted connections).
    cbuf: BytesMut,
    sealer: Option<Sealer>,
    opener: Option<Opener>,
    elapsed: Duration,
    /// The node closed its side: nothing more to read.
    eof: bool,
    /// Our write half is shut.
    shut: bool,
    /// The node's answer to our `IntrospectRequest`, once it came.
    introspection: Option<Introspection>,
}

impl Session {
    /// Closes with a goodbye rather than vanishing: the node logs a clean close.
    pub async fn say_goodbye(&mut self, why: &str) {
        self.core.close(
            Instant::now(),
            DisconnectReason::Application(why.into()),
            false,
        );
        let _ = self.flush().await;
    }

    /// Writes everything the core wants to send now.
    async fn flush(&mut self) -> Result<(), String> {
        let mut t = Transmit::new();
        while self.core.poll_transmit(Instant::now(), &mut t, 256 << 10) {
            let bytes = match &mut self.sealer {
                Some(sealer) => {
                    let mut frames = BytesMut::new();
                    sealer
                        .seal(&mut t, &mut frames)
                        .map_err(|e| e.to_string())?;
                    frames
                }
                None => t.take_all(),
            };
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
            match event {
                Event::Closed(reason) => return Err(describe(&reason)),
                Event::Introspection(answer) => self.introspection = Some(*answer),
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads once, within `deadline`, and feeds what came to the core.
    async fn read_once(&mut self, deadline: Instant) {
        let into = if self.opener.is_some() {
            &mut self.cbuf
        } else {
            &mut self.rbuf
        };
        match tokio::time::timeout_at(deadline.into(), self.stream.read_buf(into)).await {
            Err(_) => self.core.handle_timeout(Instant::now()),
            Ok(Ok(0)) => {
                self.eof = true;
                self.core.handle_eof(Instant::now(), &mut self.rbuf);
            }
            Ok(Ok(_)) => {
                if let Some(opener) = &mut self.opener {
                    if let Err(e) = opener.open(&mut self.cbuf, &mut self.rbuf) {
                        self.core.handle_transport_error(Instant::now(), e.into());
                        return;
                    }
                }
                self.core.handle_read(Instant::now(), &mut self.rbuf);
            }
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
///
/// `plaintext` must match the node's `insecure_plaintext`; encrypted, the light
/// client proves a throwaway identity of its own and checks the node's.
pub async fn connect_light(
    addr: &PeerAddr,
    network: &str,
    timeout: Duration,
    plaintext: bool,
) -> Result<Session, String> {
    let t0 = Instant::now();
    let mut stream = tokio::time::timeout(timeout, TcpStream::connect(addr.host_port()))
        .await
        .map_err(|_| format!("{addr}: connect timed out"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let key = NodeKey::generate();
    let transport = Transport::new(&key, plaintext, None);
    let (secured, rest) =
        switchyard::secure::handshake(&mut stream, transport.start(Role::Initiator), t0 + timeout)
            .await
            .map_err(|e| format!("{addr}: {}", describe(&e)))?;
    let limits = Config {
        handshake_timeout: timeout,
        ..Config::default()
    };
    let config = Arc::new(CoreConfig::new(limits).map_err(|e| e.to_string())?);
    let local = Version {
        protocol: PROTOCOL_VERSION,
        network: network.to_owned(),
        node_id: key.node_id(),
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
    let mut core = PeerCore::new(t0, config, params, Arc::new(RecvBudget::new(0)));
    if let Some(remote) = &secured.remote {
        core.handle_authenticated(Instant::now(), remote.node_id);
    }
    let (sealer, opener, rbuf, cbuf) = match secured.session {
        Some(s) => (Some(s.sealer), Some(s.opener), BytesMut::new(), rest),
        None => (None, None, rest, BytesMut::new()),
    };
    let mut session = Session {
        stream,
        core,
        rbuf,
        cbuf,
        sealer,
        opener,
        elapsed: Duration::ZERO,
        eof: false,
        shut: false,
        introspection: None,
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

/// Connects to `addr` on `network`, runs the handshake as a light client, times one
/// ping and asks for the node's introspection.
pub async fn query(
    addr: &PeerAddr,
    network: &str,
    timeout: Duration,
    plaintext: bool,
) -> Result<Status, String> {
    let mut session = connect_light(addr, network, timeout, plaintext).await?;
    session.core.ping(Instant::now());
    session
        .core
        .request_introspection()
        .map_err(|e| format!("{addr}: {e}"))?;
    let until = Instant::now() + timeout;
    while (session.core.rtt().is_none() || session.introspection.is_none())
        && Instant::now() < until
    {
        if let Err(e) = session.step(until).await {
            if session.introspection.is_none() {
                return Err(format!("{addr}: {e}"));
            }
            break;
        }
    }
    let ping = session.core.rtt();
    session.say_goodbye("status done").await;
    Ok(Status {
        introspection: session.introspection.take(),
        ping,
        version: session
            .core
            .remote()
            .cloned()
            .ok_or("handshake finished without a version")?,
        handshake: session.elapsed,
    })
}

/// Human-readable report: the node, then its services and peers as tables.
pub fn render(addr: &PeerAddr, s: &Status) -> String {
    let v = &s.version;
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{k:<12}{v}\n"));
    kv("node", v.node_id.to_string());
    kv("address", addr.host_port());
    kv("network", v.network.clone());
    kv(
        "protocol",
        format!("{}.{}", v.protocol.major, v.protocol.minor),
    );
    kv("user agent", v.user_agent.clone());
    kv(
        "listens on",
        v.listen_addr.clone().unwrap_or_else(|| "-".into()),
    );
    kv("handshake", ms(s.handshake));
    kv("ping", s.ping.map_or_else(|| "no answer".to_owned(), ms));
    let Some(n) = &s.introspection else {
        kv("introspect", "no answer".into());
        return out.trim_end().to_owned();
    };
    kv("uptime", human(Duration::from_millis(n.uptime_ms)));
    out.push_str(&format!("\nSERVICES ({})\n", n.services.len()));
    let rows = n
        .services
        .iter()
        .flat_map(|svc| {
            svc.channels.iter().enumerate().map(move |(i, c)| {
                let (name, version) = if i == 0 {
                    (svc.name.clone(), format!("{}.{}", svc.major, svc.minor))
                } else {
                    (String::new(), String::new())
                };
                vec![
                    name,
                    version,
                    format!("{:#04x}", c.id),
                    c.priority.to_string(),
                    bytes(c.max_message_size),
                    format!("{} / {}", c.send_queue_messages, bytes(c.send_queue_bytes)),
                    format!("{} .. {}", bytes(c.recv_window), bytes(c.max_recv_window)),
                ]
            })
        })
        .collect();
    out.push_str(&table(
        &[
            "service",
            "version",
            "channel",
            "priority",
            "max message",
            "send queue",
            "recv window",
        ],
        rows,
    ));
    let cut = if n.truncated { ", list cut to fit" } else { "" };
    out.push_str(&format!(
        "\nPEERS ({} of {}{cut})\n",
        n.peers.len(),
        n.peers_total
    ));
    let rows = n
        .peers
        .iter()
        .map(|p| {
            vec![
                p.node_id.clone(),
                p.remote_addr.clone(),
                format!("{:?}", p.direction).to_lowercase(),
                human(Duration::from_millis(p.connected_ms)),
                p.rtt_us
                    .map_or_else(|| "-".to_owned(), |us| ms(Duration::from_micros(us))),
                p.requests_in_flight.to_string(),
                bytes(p.bytes_read),
                bytes(p.bytes_written),
                if p.services.is_empty() {
                    "-".to_owned()
                } else {
                    p.services.join(",")
                },
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "peer",
            "address",
            "direction",
            "connected",
            "rtt",
            "in flight",
            "read",
            "written",
            "services",
        ],
        rows,
    ));
    for p in n.peers.iter().filter(|p| !p.channels.is_empty()) {
        out.push_str(&format!("\nchannels with {}\n", p.node_id));
        let rows = p
            .channels
            .iter()
            .map(|c| {
                vec![
                    format!("{:#04x}", c.id),
                    format!("{:#04x}", c.remote_id),
                    c.sent_messages.to_string(),
                    bytes(c.sent_bytes),
                    c.recv_messages.to_string(),
                    bytes(c.recv_bytes),
                    format!("{} / {}", c.send_queue_messages, bytes(c.send_queue_bytes)),
                    c.recv_queue_messages.to_string(),
                    bytes(c.recv_window),
                    bytes(c.send_credit),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "channel",
                "remote",
                "msgs out",
                "bytes out",
                "msgs in",
                "bytes in",
                "send queue",
                "recv queue",
                "window",
                "credit",
            ],
            rows,
        ));
    }
    out.trim_end().to_owned()
}

/// Columns padded to their widest cell.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// `1h 2m 3s`, `4m 5s`, `6.7s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{:.1}s", d.as_secs_f64()),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m {}s", s / 3600, s % 3600 / 60, s % 60),
    }
}

/// `512 B`, `4.0 KiB`, `8.0 MiB` (`unlimited` for the control channel's credit).
fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    match n {
        u64::MAX => "unlimited".to_owned(),
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", f / KIB),
        1_048_576..=1_073_741_823 => format!("{:.1} MiB", f / KIB / KIB),
        _ => format!("{:.1} GiB", f / KIB / KIB / KIB),
    }
}
