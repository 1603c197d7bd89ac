//! Prometheus metrics of a node, served as text at `GET /metrics` on
//! [`NodeConfig::metrics_addr`](crate::NodeConfig::metrics_addr).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `switchyard_connections` | gauge | `direction` (`inbound`, `outbound`) |
//! | `switchyard_channel_messages_total` | counter | `channel` (1..=255), `direction` (`in`, `out`) |
//! | `switchyard_channel_bytes_total` | counter | `channel`, `direction` (payload bytes) |
//! | `switchyard_disconnects_total` | counter | `reason` ([`DisconnectReason::kind`]) |
//! | `switchyard_handshake_seconds` | histogram | |
//! | `switchyard_rtt_seconds` | histogram | |
//! | `switchyard_send_queue_messages`, `switchyard_send_queue_bytes` | gauge | |
//!
//! Every label set is bounded (no per-peer label). Nothing is done per message for
//! them: the cores count messages and bytes per channel anyway (plain additions, see
//! `switchyard_proto::connection::introspect`), and a scrape adds up the live
//! connections' counts plus what closed connections had when they closed. Disconnects
//! and handshake times are counted when they happen (once per connection); a
//! round-trip time is observed at the scrape after it was measured (the latest one
//! per connection and scrape).
//!
//! The server is a few lines of HTTP/1.1 on tokio: one request per connection,
//! requests bounded to [`MAX_REQUEST`] bytes and [`REQUEST_TIMEOUT`], at most
//! [`MAX_CLIENTS`] at once, 404 for any other path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use switchyard_proto::admission::{ConnId, Direction};
use switchyard_proto::connection::introspect::Totals;
use switchyard_proto::DisconnectReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::handle::PeerHandle;

/// Largest request accepted, in bytes (request line and headers).
pub const MAX_REQUEST: usize = 8 << 10;
/// Time a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most scrape connections served at once; more are closed at once.
pub const MAX_CLIENTS: usize = 16;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: u8,
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Received (0) and sent (1) totals per channel id.
type ChannelTotals = Box<[[Totals; 2]; 256]>;

fn zero_totals() -> ChannelTotals {
    Box::new([[Totals::default(); 2]; 256])
}

/// The node's metrics and what a scrape needs to keep them monotonic.
pub(crate) struct Metrics {
    registry: Registry,
    connections: Family<DirectionLabels, Gauge>,
    messages: Family<ChannelLabels, Counter>,
    bytes: Family<ChannelLabels, Counter>,
    disconnects: Family<ReasonLabels, Counter>,
    handshake: Histogram,
    rtt: Histogram,
    queue_messages: Gauge,
    queue_bytes: Gauge,
    /// What closed connections had sent and received when they closed.
    closed: ChannelTotals,
    /// What the counters count so far.
    reported: ChannelTotals,
    /// Per live connection, the round-trip samples already observed.
    rtt_seen: HashMap<ConnId, u64>,
}

/// Ask the Switch for the metrics text (from the HTTP server).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "String")]
pub(crate) struct Scrape;

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let connections = Family::<DirectionLabels, Gauge>::default();
        registry.register(
            "connections",
            "Admitted peers by who dialed",
            connections.clone(),
        );
        let messages = Family::<ChannelLabels, Counter>::default();
        registry.register(
            "channel_messages",
            "Complete messages by channel id, in (received) or out (sent)",
            messages.clone(),
        );
        let bytes = Family::<ChannelLabels, Counter>::default();
        registry.register(
            "channel_bytes",
            "Payload bytes by channel id, in (received) or out (sent)",
            bytes.clone(),
        );
        let disconnects = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "disconnects",
            "Closed connections by kind of reason",
            disconnects.clone(),
        );
        let handshake = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register(
            "handshake_seconds",
            "Time from connect to the end of the Version/Verack handshake",
            handshake.clone(),
        );
        let rtt = Histogram::new(exponential_buckets(0.000_025, 2.0, 20));
        registry.register("rtt_seconds", "Keepalive round-trip times", rtt.clone());
        let queue_messages = Gauge::default();
        registry.register(
            "send_queue_messages",
            "Messages waiting in send queues, all connections",
            queue_messages.clone(),
        );
        let queue_bytes = Gauge::default();
        registry.register(
            "send_queue_bytes",
            "Payload bytes waiting in send queues, all connections",
            queue_bytes.clone(),
        );
        Metrics {
            registry,
            connections,
            messages,
            bytes,
            disconnects,
            handshake,
            rtt,
            queue_messages,
            queue_bytes,
            closed: zero_totals(),
            reported: zero_totals(),
            rtt_seen: HashMap::new(),
        }
    }

    /// A peer's handshake completed.
    pub(crate) fn on_handshake(&self, took: Duration) {
        self.handshake.observe(took.as_secs_f64());
    }

    /// A connection closed (`handle`: the admitted peer it was, with its final counts).
    pub(crate) fn on_closed(
        &mut self,
        conn: ConnId,
        reason: &DisconnectReason,
        handle: Option<&PeerHandle>,
    ) {
        self.disconnects
            .get_or_create(&ReasonLabels {
                reason: reason.kind(),
            })
            .inc();
        self.rtt_seen.remove(&conn);
        if let Some(handle) = handle {
            let inner = handle.conn().lock();
            add_totals(&mut self.closed, |c| inner.core.channel_totals(c));
        }
    }

    /// Brings every metric up to date with the admitted `peers` and encodes them.
    pub(crate) fn scrape<'a>(
        &mut self,
        peers: impl Iterator<Item = (ConnId, &'a PeerHandle)>,
    ) -> String {
        let mut totals = self.closed.clone();
        let (mut inbound, mut outbound) = (0i64, 0i64);
        let (mut queued_messages, mut queued_bytes) = (0u64, 0u64);
        for (conn, handle) in peers {
            match handle.direction() {
                Direction::Inbound => inbound += 1,
                Direction::Outbound => outbound += 1,
            }
            let inner = handle.conn().lock();
            add_totals(&mut totals, |c| inner.core.channel_totals(c));
            for c in inner.core.channel_reports() {
                queued_messages += c.send_queue_messages;
                queued_bytes += c.send_queue_bytes;
            }
            if let Some((rtt, samples)) = inner.core.rtt_sample() {
                let seen = self.rtt_seen.entry(conn).or_insert(0);
                if *seen != samples {
                    *seen = samples;
                    self.rtt.observe(rtt.as_secs_f64());
                }
            }
        }
        self.connections
            .get_or_create(&DirectionLabels {
                direction: "inbound",
            })
            .set(inbound);
        self.connections
            .get_or_create(&DirectionLabels {
                direction: "outbound",
            })
            .set(outbound);
        self.queue_messages
            .set(i64::try_from(queued_messages).unwrap_or(i64::MAX));
        self.queue_bytes
            .set(i64::try_from(queued_bytes).unwrap_or(i64::MAX));
        for channel in 1..=u8::MAX {
            let i = usize::from(channel);
            for (way, direction) in [(0, "in"), (1, "out")] {
                let now = totals[i][way];
                let before = self.reported[i][way];
                if now == Totals::default() {
                    continue;
                }
                let labels = ChannelLabels { channel, direction };
                self.messages
                    .get_or_create(&labels)
                    .inc_by(now.messages.saturating_sub(before.messages));
                self.bytes
                    .get_or_create(&labels)
                    .inc_by(now.bytes.saturating_sub(before.bytes));
                self.reported[i][way] = Totals {
                    messages: now.messages.max(before.messages),
                    bytes: now.bytes.max(before.bytes),
                };
            }
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

fn add_totals(into: &mut ChannelTotals, of: impl Fn(u8) -> (Totals, Totals)) {
    for channel in 1..=u8::MAX {
        let (recv, sent) = of(channel);
        let slot = &mut into[usize::from(channel)];
        for (way, t) in [(0, recv), (1, sent)] {
            slot[way].messages += t.messages;
            slot[way].bytes += t.bytes;
        }
    }
}

/// Serves `GET /metrics` on `listener` until the future is dropped (with the Switch).
pub(crate) async fn serve(listener: TcpListener, scrape: Recipient<Scrape>) {
    let clients = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if clients.fetch_add(1, Ordering::Relaxed) >= MAX_CLIENTS {
            clients.fetch_sub(1, Ordering::Relaxed);
            continue; // dropped: closed at once
        }
        let (clients, scrape) = (clients.clone(), scrape.clone());
        actix::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, scrape)).await;
            clients.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Reads one request and answers it.
async fn answer(mut stream: TcpStream, scrape: Recipient<Scrape>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let complete = loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
        if buf.len() >= MAX_REQUEST {
            break false;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    };
    let (status, body) = if !complete {
        ("431 Request Header Fields Too Large", String::new())
    } else {
        let line = buf.split(|b| *b == b'\r').next().unwrap_or_default();
        let mut parts = line.split(|b| *b == b' ');
        let (method, path) = (parts.next(), parts.next());
        let path = path.map(|p| p.split(|b| *b == b'?').next().unwrap_or_default());
        match (method, path) {
            (Some(b"GET"), Some(b"/metrics")) => match scrape.send(Scrape).await {
                Ok(text) => ("200 OK", text),
                Err(_) => ("503 Service Unavailable", String::new()),
            },
            _ => ("404 Not Found", "not found\n".to_owned()),
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; \
         charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
