//! Errors of the runtime's public API, by phase: starting a node, dialing, sending.

use switchyard_proto::{ConfigError, DisconnectReason, NodeId, PushError};

/// Why a Switch could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A config field has a bad value.
    #[error("configuration: {0}")]
    Config(ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Two services registered the same channel id.
    #[error("channel {0:#04x} is registered twice")]
    DuplicateChannel(u8),
    /// Channel 0 belongs to the daemon; services use 1..=255.
    #[error("channel 0 is reserved for the daemon; use 1..=255")]
    ReservedChannel,
    /// Two services have the same name.
    #[error("service {0:?} is registered twice")]
    DuplicateService(String),
    /// `start` was called outside a running actix `System` (start it inside
    /// `System::new().block_on(async { ... })` or an `#[actix::main]` function).
    #[error("the Switch must be started inside a running actix System")]
    NoSystem,
    /// The Switch a service was to be attached to has stopped.
    #[error("the Switch is not running")]
    NotRunning,
}

/// Why a dial failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The address could not be resolved or connected to.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// The address dialed.
        addr: String,
        /// What failed.
        error: String,
    },
    /// The address names this node.
    #[error("refusing to dial ourselves")]
    SelfDial,
    /// A connection to this node already exists.
    #[error("already connected to {0}")]
    AlreadyConnected(NodeId),
    /// The connection was opened but closed before it was admitted (handshake failure,
    /// limits, the remote refusing us, a duplicate...).
    #[error("connection closed before admission: {0}")]
    Closed(DisconnectReason),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// Why a message could not be queued to a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendFailure {
    /// The channel's send queue is at its budget (only from `try_send`).
    #[error("send queue of channel {0:#04x} is full")]
    Full(u8),
    /// The connection is closed or closing.
    #[error("peer connection is closed")]
    Closed,
    /// This node has no such channel.
    #[error("no channel {0:#04x} on this node")]
    UnknownChannel(u8),
    /// The channel's service is not up with this peer: the peer does not run its
    /// twin (or not yet, or no longer). The message never reaches the wire.
    #[error("the peer does not run the service of channel {0:#04x}")]
    NotAccepted(u8),
    /// The message is above the channel's `max_message_size`.
    #[error("message of {size} bytes is above channel {channel:#04x}'s limit of {max}")]
    TooLarge {
        /// Channel.
        channel: u8,
        /// Encoded size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// The message could not be encoded as MessagePack.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

impl SendFailure {
    /// The error for a message the core would not queue on `channel`.
    pub(crate) fn from_push(channel: u8, e: PushError) -> Self {
        match e {
            PushError::Full => SendFailure::Full(channel),
            PushError::UnknownChannel(c) => SendFailure::UnknownChannel(c),
            PushError::NotAccepted(c) | PushError::ServiceNotUp(c) => SendFailure::NotAccepted(c),
            PushError::TooLarge { size, max } => SendFailure::TooLarge { channel, size, max },
            _ => SendFailure::Closed,
        }
    }
}
