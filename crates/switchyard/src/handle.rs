//! [`PeerHandle`]: what a service holds to talk to one connected peer.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use actix::Addr;
use bytes::{Bytes, BytesMut};
use switchyard_proto::admission::{ConnId, Direction};
use switchyard_proto::connection::handshake::Version;
use switchyard_proto::secure::Suite;
use switchyard_proto::wire::control::CONTROL_CHANNEL;
use switchyard_proto::{DisconnectReason, NodeId};

use crate::channel::sealed::Encode;
use crate::channel::{encode_one, Channel, Payload};
use crate::conn::SharedConn;
use crate::error::SendFailure;
use crate::msg::Close;
use crate::peer::Peer;
use crate::registry::ServiceSlot;
use crate::service::{PeerDown, PeerUp};
use crate::switch::{Report, Switch};
use switchyard_proto::switch::Severity;

/// Which services heard `PeerUp` for a connection.
#[derive(Default)]
pub(crate) struct Lifecycle {
    up: Vec<Arc<ServiceSlot>>,
    /// The connection is down for every service (closed, or replaced by a duplicate):
    /// no `PeerUp` any more, even for a service whose negotiation ends later.
    over: bool,
}

pub(crate) struct PeerShared {
    /// Services that got `PeerUp` for this peer and are owed a `PeerDown`: whoever
    /// takes one from here (the Peer when the service or the connection goes down,
    /// the Switch when a duplicate connection replaces this one) sends it.
    pub(crate) up: std::sync::Mutex<Lifecycle>,
    pub(crate) id: NodeId,
    pub(crate) conn_id: ConnId,
    pub(crate) version: Version,
    pub(crate) remote_addr: SocketAddr,
    pub(crate) direction: Direction,
    /// The cipher of the connection (`None` in plaintext).
    pub(crate) suite: Option<Suite>,
    pub(crate) conn: SharedConn,
    pub(crate) peer: Addr<Peer>,
    /// The node's Switch (reports go there).
    pub(crate) switch: Addr<Switch>,
}

/// A connected peer, as seen by services: cheap to clone (one `Arc`), usable from any
/// thread.
///
/// `send` waits for room in the channel's send queue; `try_send` answers at once.
/// Both resolve when the message is queued, not when it is written. Messages on one
/// channel go out in the order they were queued, each within the credit the remote
/// grants on that channel: a remote whose service is slow on one channel holds only
/// that channel's queue back. A channel the remote does not receive on fails at once
/// with [`SendFailure::NotAccepted`].
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

/// Encoded bytes gathered before a run of `send_all` is queued: large enough that a
/// run of small messages shares one allocation, small enough that a long iterator is
/// encoded as the queue drains rather than all at once.
const ENCODE_RUN_BYTES: usize = 64 << 10;

/// Most raw payloads taken from the caller's iterator per run (the iterator runs
/// outside the send lock, a run at a time).
const RAW_RUN_MESSAGES: usize = 256;

/// Takes the next run of `send_all` from `msgs`: MessagePack messages are encoded into
/// one buffer until it holds `ENCODE_RUN_BYTES`, and each gets a zero-copy slice of it
/// (one allocation for the run instead of one per message: the writer frees them on
/// another thread, where each free costs more than the encoding); raw payloads are
/// taken as they are, up to `RAW_RUN_MESSAGES`. When a message fails to encode, the
/// run holds the messages before it and the error comes with it.
fn next_run<T, P, I>(msgs: &mut I) -> (Vec<Bytes>, Option<SendFailure>)
where
    P: Payload<T>,
    I: Iterator<Item = P>,
{
    let mut buf = BytesMut::new();
    let mut run = Vec::new();
    // (index in `run`, end in `buf`) of each message encoded into `buf`.
    let mut slices = Vec::new();
    let mut failure = None;
    while buf.len() < ENCODE_RUN_BYTES && run.len() - slices.len() < RAW_RUN_MESSAGES {
        let Some(msg) = msgs.next() else {
            break;
        };
        match Encode::encode(msg, &mut buf) {
            Ok(Some(whole)) => run.push(whole),
            Ok(None) => {
                slices.push((run.len(), buf.len()));
                run.push(Bytes::new());
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let all = buf.freeze();
    let mut start = 0;
    for (i, end) in slices {
        if let Some(slot) = run.get_mut(i) {
            *slot = all.slice(start..end);
        }
        start = end;
    }
    (run, failure)
}

fn user_channel(channel: u8) -> Result<(), SendFailure> {
    if channel == CONTROL_CHANNEL {
        return Err(SendFailure::UnknownChannel(channel));
    }
    Ok(())
}

impl PeerHandle {
    pub(crate) fn new(shared: PeerShared) -> Self {
        PeerHandle {
            inner: Arc::new(shared),
        }
    }

    /// The connection's shared state.
    pub(crate) fn conn(&self) -> &SharedConn {
        &self.inner.conn
    }

    /// Tells `service` this peer is up for it (once), and notes it owes a `PeerDown`.
    pub(crate) fn service_up(&self, service: Arc<ServiceSlot>) {
        let mut life = self.lifecycle();
        if life.over || life.up.iter().any(|s| Arc::ptr_eq(s, &service)) {
            return;
        }
        if let Some(up) = &service.up {
            up.do_send(PeerUp { peer: self.clone() });
        }
        life.up.push(service);
    }

    /// Tells the service called `name` (or, with `None`, every service that saw this
    /// peer up, and no service ever again) that it is down, once.
    pub(crate) fn service_down(&self, name: Option<&str>, reason: &DisconnectReason) {
        let gone: Vec<Arc<ServiceSlot>> = {
            let mut life = self.lifecycle();
            life.over |= name.is_none();
            let (gone, stay) = std::mem::take(&mut life.up)
                .into_iter()
                .partition(|s| name.is_none_or(|n| s.spec.name == n));
            life.up = stay;
            gone
        };
        for down in gone.iter().filter_map(|s| s.down.as_ref()) {
            down.do_send(PeerDown {
                peer: self.clone(),
                reason: reason.clone(),
            });
        }
    }

    fn lifecycle(&self) -> std::sync::MutexGuard<'_, Lifecycle> {
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

    /// The cipher this connection's frames use; `None` when it runs in plaintext
    /// (`insecure_plaintext`: the remote's id is then claimed, not proven).
    #[must_use]
    pub fn encryption(&self) -> Option<Suite> {
        self.inner.suite
    }

    /// What the remote said about itself in the handshake.
    #[must_use]
    pub fn version(&self) -> &Version {
        &self.inner.version
    }

    /// Whether the connection is closed or closing (sends fail with `Closed`).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner.conn.lock().core.is_closing()
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

    /// Queues `msg` on `channel`, waiting for room in the channel's send queue.
    ///
    /// `msg` is `&T` on a [`Channel<T>`] (encoded as MessagePack) or [`Bytes`] on a
    /// [`Channel<Raw>`](crate::Raw) (queued as they are, without a copy). Resolves
    /// when the message is queued, not when it is written.
    pub async fn send<T, P: Payload<T>>(
        &self,
        channel: &Channel<T>,
        msg: P,
    ) -> Result<(), SendFailure> {
        let id = channel.id();
        user_channel(id)?;
        let payload = encode_one(msg)?;
        self.inner.conn.push(id, payload).await
    }

    /// Queues `msg` on `channel` if there is room now, or fails at once with
    /// [`SendFailure::Full`]. Takes what [`send`](Self::send) takes.
    pub fn try_send<T, P: Payload<T>>(
        &self,
        channel: &Channel<T>,
        msg: P,
    ) -> Result<(), SendFailure> {
        let id = channel.id();
        user_channel(id)?;
        let payload = encode_one(msg)?;
        self.inner.conn.try_push(id, payload)
    }

    /// Queues each message of `msgs` on `channel` in order, waiting for room whenever
    /// the queue is full.
    ///
    /// The same as calling [`send`](Self::send) for each, but every run that fits is
    /// queued under one lock with one wake-up of the writer, and runs of small
    /// MessagePack messages are encoded into one buffer: for small messages this is
    /// several times the rate of single sends. Messages are encoded as the queue takes
    /// them (64 KiB, or 256 raw payloads, at a time), so a long iterator does not sit
    /// encoded in memory, and the iterator runs outside the send lock. Raw payloads
    /// are queued without a copy. On error, the messages before the failing one stay
    /// queued.
    pub async fn send_all<T, P, I>(&self, channel: &Channel<T>, msgs: I) -> Result<(), SendFailure>
    where
        P: Payload<T>,
        I: IntoIterator<Item = P>,
    {
        let id = channel.id();
        user_channel(id)?;
        let mut msgs = msgs.into_iter();
        loop {
            let (run, failure) = next_run(&mut msgs);
            if run.is_empty() && failure.is_none() {
                return Ok(());
            }
            self.inner.conn.push_all(id, run).await?;
            if let Some(e) = failure {
                return Err(e);
            }
        }
    }

    /// Queues bytes already encoded for `channel` (one message of a broadcast), waiting
    /// for room.
    pub(crate) async fn push(&self, channel: u8, payload: Bytes) -> Result<(), SendFailure> {
        user_channel(channel)?;
        self.inner.conn.push(channel, payload).await
    }

    /// Queues bytes already encoded for `channel` if there is room now.
    pub(crate) fn try_push(&self, channel: u8, payload: Bytes) -> Result<(), SendFailure> {
        user_channel(channel)?;
        self.inner.conn.try_push(channel, payload)
    }

    /// Reports this peer's misbehaviour to the node (an unsolicited answer, a
    /// malformed request...): points add up by `severity`, and past
    /// `limits.ban_threshold` the peer is closed and banned (see
    /// [`Report`]). Never waits; a report the Switch has no room for
    /// is dropped with a warning.
    pub fn report(&self, severity: Severity, reason: impl Into<String>) {
        let report = Report {
            node: self.id(),
            severity,
            reason: reason.into(),
        };
        if let Err(e) = self.inner.switch.try_send(report) {
            log::warn!("report on {} dropped: {e}", self.id());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Raw;

    /// Serializes as the number 7, or fails when told to.
    struct Flaky(bool);

    impl serde::Serialize for Flaky {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if self.0 {
                Err(serde::ser::Error::custom("refused"))
            } else {
                s.serialize_u64(7)
            }
        }
    }

    #[test]
    fn a_run_keeps_what_encoded_before_a_failure_and_stops_there() {
        let msgs = [
            Flaky(false),
            Flaky(false),
            Flaky(false),
            Flaky(true),
            Flaky(false),
        ];
        let mut iter = msgs.iter();
        let (run, failure) = next_run::<Flaky, _, _>(&mut iter);
        assert!(
            matches!(failure, Some(SendFailure::Encode(_))),
            "{failure:?}"
        );
        assert_eq!(run, vec![Bytes::from_static(&[7]); 3]);
        // The three share one buffer.
        assert_eq!(run[1].as_ptr(), run[0].as_ptr().wrapping_add(1));
        assert_eq!(
            iter.count(),
            1,
            "the message after the failure is not taken"
        );
    }

    #[test]
    fn a_messagepack_run_ends_after_64_kib() {
        let msgs = vec!["x".repeat(1000); 200];
        let mut iter = msgs.iter();
        let (run, failure) = next_run::<String, _, _>(&mut iter);
        assert!(failure.is_none());
        let bytes: usize = run.iter().map(Bytes::len).sum();
        assert!(
            (ENCODE_RUN_BYTES..ENCODE_RUN_BYTES + 1100).contains(&bytes),
            "{bytes}"
        );
        assert_eq!(run.len() + iter.count(), 200);
    }

    #[test]
    fn a_raw_run_takes_256_payloads_without_copying_them() {
        let payloads: Vec<Bytes> = (0..300).map(|i| Bytes::from(vec![1u8; i + 1])).collect();
        let mut iter = payloads.iter().cloned();
        let (run, failure) = next_run::<Raw, _, _>(&mut iter);
        assert!(failure.is_none());
        assert_eq!(run.len(), RAW_RUN_MESSAGES);
        assert!(run
            .iter()
            .zip(&payloads)
            .all(|(a, b)| a.as_ptr() == b.as_ptr()));
        let (rest, _) = next_run::<Raw, _, _>(&mut iter);
        assert_eq!(rest.len(), 300 - RAW_RUN_MESSAGES);
        assert!(next_run::<Raw, _, _>(&mut iter).0.is_empty());
    }
}
