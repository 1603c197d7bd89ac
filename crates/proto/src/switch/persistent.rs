//! Persistent peers: dialed at start and redialed, with backoff and jitter, whenever
//! they are not connected. Never given up (except a peer that turns out to be this
//! node).

use std::time::{Duration, Instant};

use super::admission::ConnId;
use super::backoff::Backoff;
use crate::id::NodeId;

/// Index of a persistent peer in the list given to the
/// [`SwitchCore`](super::SwitchCore) (the runtime keeps the addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersistentId(pub usize);

/// Where a persistent peer is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialState {
    /// A [`Dial`](super::Action::Dial) was handed out; its result is awaited.
    Dialing,
    /// Connected through this connection: our dial's (handshake in progress, or
    /// up), or the admitted connection of its id, whichever side opened it.
    Connected(ConnId),
    /// Redial at this instant.
    Waiting(Instant),
    /// Given up: the address is this node.
    Disabled,
}

/// One persistent peer.
#[derive(Debug, Clone)]
pub struct Persistent {
    /// Its node id, when the address names it or a handshake told it.
    pub id: Option<NodeId>,
    /// Its state.
    pub state: DialState,
    /// The delays between its redials.
    pub backoff: Backoff,
    /// The last redial delay drawn (for tests and logs).
    pub last_delay: Option<Duration>,
}

impl Persistent {
    /// A peer with maybe a known id, whose first dial is being handed out.
    #[must_use]
    pub fn new(id: Option<NodeId>, backoff: Backoff) -> Self {
        Persistent {
            id,
            state: DialState::Dialing,
            backoff,
            last_delay: None,
        }
    }

    /// When it is due for a redial.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            DialState::Waiting(at) => Some(at),
            _ => None,
        }
    }
}
