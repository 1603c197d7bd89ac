//! [`SwitchExt`]: the Switch's messages as methods on its address, with one result
//! each instead of actix's `Result<Result<_, _>, MailboxError>`.
//!
//! A mailbox error only means the Switch is gone (stopped, or its System ended); the
//! methods fold it into each answer: [`DialError::ShuttingDown`],
//! [`SendFailure::Closed`], an empty list, `None`.
//!
//! ```no_run
//! use switchyard::{NodeConfig, Switch, SwitchExt};
//!
//! # async fn demo(addr: switchyard::PeerAddr) -> Result<(), Box<dyn std::error::Error>> {
//! let switch = Switch::builder(NodeConfig::local()).start()?;
//! let peer = switch.dial(addr).await?; // not `send(Dial(addr)).await??`
//! println!("connected to {}; {} peers", peer.id(), switch.peers().await.len());
//! switch.shutdown().await;
//! # Ok(()) }
//! ```

use std::future::Future;

use actix::Addr;
use bytes::Bytes;
use serde::Serialize;
use switchyard_proto::switch::Severity;
use switchyard_proto::NodeId;

use crate::addr::PeerAddr;
use crate::channel::{Channel, Raw};
use crate::error::{DialError, SendFailure, StartError};
use crate::handle::PeerHandle;
use crate::service::Service;
use crate::switch::{
    AttachService, Broadcast, BroadcastRaw, BroadcastReport, DetachService, Dial, GetInfo, GetPeer,
    GetPeers, NodeInfo, Report, Shutdown, Switch, TryBroadcast,
};

/// The Switch's messages as methods on `Addr<Switch>` (see the [module docs](self)).
pub trait SwitchExt {
    /// [`Dial`]: connects, resolving once the peer is admitted and the services are
    /// negotiated.
    fn dial(&self, addr: PeerAddr) -> impl Future<Output = Result<PeerHandle, DialError>>;

    /// [`GetInfo`]; `None` once the Switch is gone.
    fn info(&self) -> impl Future<Output = Option<NodeInfo>>;

    /// [`GetPeers`]: the admitted peers.
    fn peers(&self) -> impl Future<Output = Vec<PeerHandle>>;

    /// [`GetPeer`]: the admitted peer with this id.
    fn peer(&self, id: NodeId) -> impl Future<Output = Option<PeerHandle>>;

    /// [`AttachService`]: adds a service to the running node.
    fn attach(&self, service: Service) -> impl Future<Output = Result<(), StartError>>;

    /// [`DetachService`]: removes a service; whether it was attached.
    fn detach(&self, name: &str) -> impl Future<Output = bool>;

    /// [`Broadcast`]: queues `msg` to every peer of the channel's service, waiting for
    /// room; how many peers it was queued to.
    fn broadcast<T: Serialize + Send + 'static>(
        &self,
        channel: Channel<T>,
        msg: T,
    ) -> impl Future<Output = Result<usize, SendFailure>>;

    /// [`BroadcastRaw`]: the same with bytes on a raw channel.
    fn broadcast_raw(
        &self,
        channel: Channel<Raw>,
        payload: Bytes,
    ) -> impl Future<Output = Result<usize, SendFailure>>;

    /// [`TryBroadcast`]: never waits; reports the peers whose queue was full.
    fn try_broadcast<T: Serialize + Send + 'static>(
        &self,
        channel: Channel<T>,
        msg: T,
    ) -> impl Future<Output = Result<BroadcastReport, SendFailure>>;

    /// [`Report`]: a peer's misbehaviour, scored toward a ban.
    fn report(&self, node: NodeId, severity: Severity, reason: &str) -> impl Future<Output = ()>;

    /// [`Shutdown`]: closes every peer gracefully and stops the node.
    fn shutdown(&self) -> impl Future<Output = ()>;
}

impl SwitchExt for Addr<Switch> {
    async fn dial(&self, addr: PeerAddr) -> Result<PeerHandle, DialError> {
        self.send(Dial(addr))
            .await
            .unwrap_or(Err(DialError::ShuttingDown))
    }

    async fn info(&self) -> Option<NodeInfo> {
        self.send(GetInfo).await.ok()
    }

    async fn peers(&self) -> Vec<PeerHandle> {
        self.send(GetPeers).await.unwrap_or_default()
    }

    async fn peer(&self, id: NodeId) -> Option<PeerHandle> {
        self.send(GetPeer(id)).await.ok().flatten()
    }

    async fn attach(&self, service: Service) -> Result<(), StartError> {
        self.send(AttachService(service))
            .await
            .unwrap_or(Err(StartError::NotRunning))
    }

    async fn detach(&self, name: &str) -> bool {
        self.send(DetachService(name.to_owned()))
            .await
            .unwrap_or(false)
    }

    async fn broadcast<T: Serialize + Send + 'static>(
        &self,
        channel: Channel<T>,
        msg: T,
    ) -> Result<usize, SendFailure> {
        self.send(Broadcast { channel, msg })
            .await
            .unwrap_or(Err(SendFailure::Closed))
    }

    async fn broadcast_raw(
        &self,
        channel: Channel<Raw>,
        payload: Bytes,
    ) -> Result<usize, SendFailure> {
        self.send(BroadcastRaw { channel, payload })
            .await
            .unwrap_or(Err(SendFailure::Closed))
    }

    async fn try_broadcast<T: Serialize + Send + 'static>(
        &self,
        channel: Channel<T>,
        msg: T,
    ) -> Result<BroadcastReport, SendFailure> {
        self.send(TryBroadcast { channel, msg })
            .await
            .unwrap_or(Err(SendFailure::Closed))
    }

    async fn report(&self, node: NodeId, severity: Severity, reason: &str) {
        let _ = self
            .send(Report {
                node,
                severity,
                reason: reason.to_owned(),
            })
            .await;
    }

    async fn shutdown(&self) {
        let _ = self.send(Shutdown).await;
    }
}
