//! The messages between the runtime's actors: what a Peer tells the Switch (the id
//! its transport proved, its registration, round-trip times, its end), what a Peer
//! receives (from the Switch, or a service through its handle), and what the Switch
//! hands a new Peer. They live apart from both actors, so neither module reaches
//! into the other for them, and `peer` and `switch` hold only their actors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use switchyard_proto::admission::{ConnId, Direction};
use switchyard_proto::connection::services::ServiceSpec;
use switchyard_proto::{ConnParams, DisconnectReason, NodeId};
use tokio::sync::oneshot;

use crate::handle::PeerHandle;
use crate::registry::Registry;
use crate::secure::Transport;
use crate::switch::Switch;

/// The answer a dialer waits for: the admitted peer, or why the connection closed.
pub(crate) type AdmitReply = oneshot::Sender<Result<PeerHandle, DisconnectReason>>;

/// Tells the Switch that a connection is gone if its Peer never reports it: the
/// Peer failed to start (its arbiter stopped, or a panic in `Peer::new`) or its actor
/// was dropped without `stopped` running. Without it the connection's admission slot
/// and table entry would stay forever.
pub(crate) struct ClosedGuard {
    switch: Addr<Switch>,
    conn: ConnId,
    armed: bool,
}

impl ClosedGuard {
    pub(crate) fn new(switch: Addr<Switch>, conn: ConnId) -> Self {
        ClosedGuard {
            switch,
            conn,
            armed: true,
        }
    }

    /// The Peer reported the connection gone itself.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for ClosedGuard {
    fn drop(&mut self) {
        if self.armed {
            self.switch.do_send(PeerClosed {
                conn: self.conn,
                reason: DisconnectReason::Io("connection task ended abnormally".into()),
            });
        }
    }
}

/// Everything the Switch hands a new Peer.
pub(crate) struct PeerInit {
    pub(crate) guard: ClosedGuard,
    pub(crate) conn: ConnId,
    pub(crate) direction: Direction,
    pub(crate) stream: std::net::TcpStream,
    pub(crate) remote_addr: SocketAddr,
    /// What the connection's core starts from (with the services attached when the
    /// Switch made this connection).
    pub(crate) params: ConnParams,
    /// How the connection is secured before the core speaks.
    pub(crate) transport: Arc<Transport>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) switch: Addr<Switch>,
    pub(crate) reply: Option<AdmitReply>,
}

/// From a Peer whose handshake completed: may it stay?
#[derive(Message)]
#[rtype(result = "Result<(), DisconnectReason>")]
pub(crate) struct Register {
    pub(crate) conn: ConnId,
    pub(crate) handle: PeerHandle,
    /// The handshake's round-trip time, the first one known (for eviction).
    pub(crate) rtt: Option<Duration>,
}

/// From a Peer: a new round-trip time was measured (sent at most once per ping
/// interval, so its volume is ours to decide, not the remote's).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PeerRtt {
    pub(crate) conn: ConnId,
    pub(crate) rtt: Duration,
}

/// From a Peer that stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PeerClosed {
    pub(crate) conn: ConnId,
    pub(crate) reason: DisconnectReason,
}

/// From a Peer whose transport proved the remote's key, before its core speaks: may
/// this node id go on? (`Err`: the reason to refuse it with, a ban say.) Awaited, one
/// per connection: the Peer's core says nothing until the answer.
#[derive(Message)]
#[rtype(result = "Result<(), DisconnectReason>")]
pub(crate) struct Authenticated {
    pub(crate) conn: ConnId,
    pub(crate) node: NodeId,
}

/// Close this connection (from the Switch, or a service through its handle).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Close {
    pub(crate) reason: DisconnectReason,
    pub(crate) flush: bool,
}

/// Attach a service to this connection (from the Switch).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Attach(pub(crate) Arc<ServiceSpec>);

/// Detach a service from this connection (from the Switch).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Detach(pub(crate) String);
