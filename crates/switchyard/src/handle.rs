//! [`PeerHandle`]: what a service holds to talk to one connected peer.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use actix::Addr;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use switchyard_proto::admission::{ConnId, Direction};
use switchyard_proto::connection::handshake::Version;
use switchyard_proto::wire::control::CONTROL_CHANNEL;
use switchyard_proto::{DisconnectReason, NodeId};

use crate::conn::SharedConn;
use crate::error::SendError;
use crate::peer::{Close, Peer};
use crate::registry::ServiceSlot;
use crate::service::{PeerDown, PeerUp};

pub(crate) struct PeerShared {
    /// Services that got `PeerUp` for this peer and are owed a `PeerDown`: whoever
    /// takes one from here (the Peer when the service or the connection goes down,
    /// the Switch when a duplicate connection replaces this one) sends it.
    pub(crate) up: std::sync::Mutex<Vec<Arc<ServiceSlot>>>,
    pub(crate) id: NodeId,
    pub(crate) conn_id: ConnId,
    pub(crate) version: Version,
    pub(crate) remote_addr: SocketAddr,
    pub(crate) direction: Direction,
    pub(crate) conn: SharedConn,
    pub(crate) peer: Addr<Peer>,
}

/// A connected peer, as seen by services: cheap to clone (one `Arc`), usable from any
/// thread.
///
/// `send` waits for room in the channel's send queue; `try_send` answers at once.
/// Both resolve when the message is queued, not when it is written. Messages on one
/// channel go out in the order they were queued, each within the credit the remote
/// grants on that channel: a remote whose service is slow on one channel holds only
/// that channel's queue back. A channel the remote does not receive on fails at once
/// with [`SendError::NotAccepted`].
#[derive(Clone)]
pub struct PeerHandle {
    inner: Arc<PeerShared>,
}

impl fmt::Debug for PeerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Peer({}@{}#{})",
            self.inner.id.short(),
            self.inner.remote_addr,
            self.inner.conn_id
        )
    }
}

impl PartialEq for PeerHandle {
    fn eq(&self, other: &Self) -> bool {
        self.inner.conn_id == other.inner.conn_id
    }
}

impl Eq for PeerHandle {}

fn encode<T: Serialize + ?Sized>(msg: &T) -> Result<Bytes, SendError> {
    // One allocation for typical small messages instead of a growth series.
    let mut buf = Vec::with_capacity(128);
    rmp_serde::encode::write(&mut buf, msg).map_err(|e| SendError::Encode(e.to_string()))?;
    Ok(Bytes::from(buf))
}

/// Encoded bytes gathered before a run of `send_all` is queued: large enough that a
/// run of small messages shares one allocation, small enough that a long iterator is
/// encoded as the queue drains rather than all at once.
const ENCODE_RUN_BYTES: usize = 64 << 10;

/// Most payloads of `send_all_raw` taken from the caller's iterator per run (the
/// iterator runs outside the send lock, a run at a time).
const RAW_RUN_MESSAGES: usize = 256;

/// Encodes messages from `msgs` into one buffer until it holds `ENCODE_RUN_BYTES` or
/// the iterator ends, and hands out a zero-copy slice per message: one allocation for
/// the run instead of one per message (the writer frees them on another thread, where
/// each free costs more than the encoding). When a message fails to encode, the run
/// holds the messages before it and the error comes with it.
fn encode_run<'a, T, I>(msgs: &mut I) -> (Vec<Bytes>, Option<SendError>)
where
    T: Serialize + ?Sized + 'a,
    I: Iterator<Item = &'a T>,
{
    let mut buf = BytesMut::new();
    let mut ends = Vec::new();
    let mut failure = None;
    while buf.len() < ENCODE_RUN_BYTES {
        let Some(msg) = msgs.next() else {
            break;
        };
        if let Err(e) = rmp_serde::encode::write(&mut (&mut buf).writer(), msg) {
            // Drop whatever the failed message wrote before it failed.
            buf.truncate(ends.last().copied().unwrap_or(0));
            failure = Some(SendError::Encode(e.to_string()));
            break;
        }
        ends.push(buf.len());
    }
    let all = buf.freeze();
    let mut start = 0;
    let run = ends
        .into_iter()
        .map(|end| {
            let payload = all.slice(start..end);
            start = end;
            payload
        })
        .collect();
    (run, failure)
}

fn user_channel(channel: u8) -> Result<(), SendError> {
    if channel == CONTROL_CHANNEL {
        return Err(SendError::UnknownChannel(channel));
    }
    Ok(())
}

impl PeerHandle {
    pub(crate) fn new(shared: PeerShared) -> Self {
        PeerHandle {
            inner: Arc::new(shared),
        }
    }

    /// Tells `service` this peer is up for it (once), and notes it owes a `PeerDown`.
    pub(crate) fn service_up(&self, service: Arc<ServiceSlot>) {
        let mut up = self.up_list();
        if up.iter().any(|s| Arc::ptr_eq(s, &service)) {
            return;
        }
        service.up.do_send(PeerUp { peer: self.clone() });
        up.push(service);
    }

    /// Tells the service called `name` (or, with `None`, every service that saw this
    /// peer up) that it is down, once.
    pub(crate) fn service_down(&self, name: Option<&str>, reason: &DisconnectReason) {
        let gone: Vec<Arc<ServiceSlot>> = {
            let mut up = self.up_list();
            let (gone, stay) = std::mem::take(&mut *up)
                .into_iter()
                .partition(|s| name.is_none_or(|n| s.spec.name == n));
            *up = stay;
            gone
        };
        for s in gone {
            s.down.do_send(PeerDown {
                peer: self.clone(),
                reason: reason.clone(),
            });
        }
    }

    fn up_list(&self) -> std::sync::MutexGuard<'_, Vec<Arc<ServiceSlot>>> {
        self.inner
            .up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The remote node's id.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The remote socket address of this connection.
    #[must_use]
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.remote_addr
    }

    /// Who dialed this connection.
    #[must_use]
    pub fn direction(&self) -> Direction {
        self.inner.direction
    }

    /// What the remote said about itself in the handshake.
    #[must_use]
    pub fn version(&self) -> &Version {
        &self.inner.version
    }

    /// Whether the connection is closed or closing (sends fail with `Closed`).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner.conn.is_closing()
    }

    /// Queue, credit and window of one channel of this connection (both directions).
    #[must_use]
    pub fn channel_info(&self, channel: u8) -> Option<switchyard_proto::connection::ChannelInfo> {
        self.inner.conn.lock().core.channel_info(channel)
    }

    /// Round-trip time of the last answered keepalive ping, if one was answered.
    #[must_use]
    pub fn rtt(&self) -> Option<std::time::Duration> {
        self.inner.conn.lock().core.rtt()
    }

    /// Encodes `msg` as MessagePack and queues it on `channel`, waiting for room.
    pub async fn send<T: Serialize + ?Sized>(&self, channel: u8, msg: &T) -> Result<(), SendError> {
        user_channel(channel)?;
        let payload = encode(msg)?;
        self.inner.conn.push(channel, payload).await
    }

    /// Encodes `msg` as MessagePack and queues it on `channel` if there is room now.
    pub fn try_send<T: Serialize + ?Sized>(&self, channel: u8, msg: &T) -> Result<(), SendError> {
        user_channel(channel)?;
        let payload = encode(msg)?;
        self.inner.conn.try_push(channel, payload)
    }

    /// Queues already-encoded bytes on `channel` (raw channels, or a broadcast encoded
    /// once), waiting for room. No copy is made.
    pub async fn send_raw(&self, channel: u8, payload: Bytes) -> Result<(), SendError> {
        user_channel(channel)?;
        self.inner.conn.push(channel, payload).await
    }

    /// Encodes each message of `msgs` and queues them on `channel` in order, waiting
    /// for room whenever the queue is full.
    ///
    /// The same as calling [`send`](Self::send) for each, but every run that fits is
    /// queued under one lock with one wake-up of the writer, and runs of small messages
    /// are encoded into one buffer: for small messages this is several times the rate
    /// of single sends. Messages are encoded as the queue takes them (64 KiB at a
    /// time), so a long iterator does not sit encoded in memory. On error, the
    /// messages before the failing one stay queued.
    pub async fn send_all<'a, T, I>(&self, channel: u8, msgs: I) -> Result<(), SendError>
    where
        T: Serialize + ?Sized + 'a,
        I: IntoIterator<Item = &'a T>,
    {
        user_channel(channel)?;
        let mut msgs = msgs.into_iter();
        loop {
            let (run, failure) = encode_run(&mut msgs);
            if run.is_empty() && failure.is_none() {
                return Ok(());
            }
            self.inner.conn.push_all(channel, run).await?;
            if let Some(e) = failure {
                return Err(e);
            }
        }
    }

    /// Queues already-encoded payloads on `channel` in order, waiting for room
    /// whenever the queue is full: [`send_all`](Self::send_all) for raw bytes.
    pub async fn send_all_raw<I>(&self, channel: u8, payloads: I) -> Result<(), SendError>
    where
        I: IntoIterator<Item = Bytes>,
    {
        user_channel(channel)?;
        let mut payloads = payloads.into_iter();
        loop {
            let run: Vec<Bytes> = payloads.by_ref().take(RAW_RUN_MESSAGES).collect();
            if run.is_empty() {
                return Ok(());
            }
            self.inner.conn.push_all(channel, run).await?;
        }
    }

    /// Queues already-encoded bytes on `channel` if there is room now.
    pub fn try_send_raw(&self, channel: u8, payload: Bytes) -> Result<(), SendError> {
        user_channel(channel)?;
        self.inner.conn.try_push(channel, payload)
    }

    /// Closes the connection with `reason`; what is already queued is still written
    /// (within the `linger` budget). Services see `PeerDown` with this reason.
    pub fn disconnect(&self, reason: DisconnectReason) {
        self.inner.peer.do_send(Close {
            reason,
            flush: true,
        });
    }
}
