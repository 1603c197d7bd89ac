//! Introspection of a running node: [`Introspect`] asks the local Switch,
//! [`IntrospectPeer`] asks a connected peer over channel 0.
//!
//! Both answer an [`Introspection`] (the struct of
//! [`switchyard_proto::introspect`], serde-serializable: `serde_json` prints it as
//! `switchyard status --json` does): the node's id, user agent, network, listen
//! address and uptime; its services with their channels' priorities and budgets;
//! its first [`MAX_INTROSPECT_PEERS`] peers (and `peers_total`) with the services
//! up with each, per channel the messages and bytes each way, queue depths, receive
//! window and send credit, requests in flight and the last round-trip time.
//!
//! A remote's `IntrospectRequest` reaches the Peer as an event; the Peer asks its
//! Switch for the node's introspection and hands it to the core, which answers (the
//! core rate-limits requests and bounds the answer).
//!
//! ```no_run
//! use switchyard::{Introspect, NodeConfig, Switch};
//!
//! actix::System::new().block_on(async {
//!     let switch = Switch::builder(NodeConfig::local()).start().expect("start");
//!     let me = switch.send(Introspect).await.expect("mailbox");
//!     println!("{} has {} peers", me.node_id, me.peers_total);
//! });
//! ```

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
pub use switchyard_proto::introspect::{
    ChannelReport, Introspection, PeerReport, ServiceChannel, ServiceReport, MAX_INTROSPECT_PEERS,
};
use switchyard_proto::NodeId;
use tokio::sync::oneshot;

use crate::conn::{Conn, SharedConn};
use crate::handle::PeerHandle;
use crate::registry::Registry;
use crate::switch::Switch;

/// Ask the local node for its [`Introspection`].
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Introspection")]
pub struct Introspect;

/// Ask the connected peer `id` for its node's [`Introspection`] over channel 0,
/// waiting at most `timeout` for the answer.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Introspection, IntrospectFailure>")]
pub struct IntrospectPeer {
    /// The peer.
    pub id: NodeId,
    /// How long to wait for its answer.
    pub timeout: Duration,
}

/// Why [`IntrospectPeer`] got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntrospectFailure {
    /// No admitted peer has that id.
    #[error("peer {0} is not connected")]
    NotConnected(NodeId),
    /// Four requests to that peer are waiting for their answers already: try later.
    #[error("introspection requests to that peer are outstanding already")]
    Busy,
    /// The connection closed before the answer came.
    #[error("the connection closed")]
    Closed,
    /// No answer within the timeout (the request stays counted until it comes).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// The callers of one connection waiting for introspection answers, oldest first
/// (answers come in the order of the requests).
#[derive(Debug, Default)]
pub(crate) struct Waiters(Mutex<VecDeque<oneshot::Sender<Introspection>>>);

impl Conn {
    /// Sends an `IntrospectRequest` and returns where its answer will come.
    fn ask_introspection(&self) -> Result<oneshot::Receiver<Introspection>, IntrospectFailure> {
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.lock();
            inner.core.request_introspection().map_err(|e| match e {
                switchyard_proto::connection::introspect::IntrospectError::Busy => {
                    IntrospectFailure::Busy
                }
                _ => IntrospectFailure::Closed,
            })?;
            // Under the core's lock, so the answer cannot overtake the waiter.
            self.introspect
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back(tx);
        }
        self.wake_driver();
        Ok(rx)
    }

    /// The remote answered our oldest request (a caller that gave up is skipped).
    pub(crate) fn introspection_answered(&self, answer: Introspection) {
        let waiter = self
            .introspect
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        if let Some(tx) = waiter {
            let _ = tx.send(answer);
        }
    }
}

/// The remote asked for our node's introspection: fetch it from the Switch and hand
/// it to the core to answer (from a task: the Peer goes on meanwhile).
pub(crate) fn answer_remote(switch: Addr<Switch>, conn: SharedConn) {
    actix::spawn(async move {
        let Ok(answer) = switch.send(Introspect).await else {
            return;
        };
        let answered = conn.lock().core.answer_introspection(answer);
        if answered {
            conn.wake_driver();
        }
    });
}

/// Asks the peer behind `handle`, waiting at most `timeout`.
pub(crate) async fn ask(
    handle: PeerHandle,
    timeout: Duration,
) -> Result<Introspection, IntrospectFailure> {
    let rx = handle.conn().ask_introspection()?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(IntrospectFailure::Closed),
        Err(_) => Err(IntrospectFailure::Timeout(timeout)),
    }
}

/// The services attached to the node.
pub(crate) fn services(registry: &Registry) -> Vec<ServiceReport> {
    registry
        .specs()
        .iter()
        .map(|s| ServiceReport {
            name: s.name.clone(),
            major: s.major,
            minor: s.minor,
            channels: s
                .channels
                .iter()
                .map(|(id, c)| ServiceChannel {
                    id: *id,
                    priority: c.priority,
                    max_message_size: c.max_message_size as u64,
                    send_queue_messages: c.send_queue_messages as u64,
                    send_queue_bytes: c.send_queue_bytes as u64,
                    recv_window: c.recv_window as u64,
                    max_recv_window: c.max_recv_window as u64,
                })
                .collect(),
        })
        .collect()
}

/// One admitted peer, as of `now`.
pub(crate) fn peer(handle: &PeerHandle, now: Instant) -> Option<PeerReport> {
    handle
        .conn()
        .lock()
        .core
        .peer_report(now, handle.remote_addr().to_string(), handle.direction())
}
