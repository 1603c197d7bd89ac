//! The `Version`/`Verack` handshake as consuming states.
//!
//! Both sides send their `Version` at once. Each checks the other's (network, major
//! protocol version, self-connection, expected identity, field bounds), then sends
//! `Verack`. Services are negotiated afterwards, on channel 0, each with its own
//! channels and initial credit (see [`services`](super::services)), so services can
//! come and go while the connection lives.
//!
//! ```text
//!  AwaitVersion ──Version ok──▶ AwaitVerack ──Verack──▶ done (the remote's Version)
//!       │                          │
//!       └─ anything else: a typed HandshakeError (Verack before Version, a second
//!          Version, a ping, credit, a message on another channel, a bad or foreign
//!          Version)
//! ```
//!
//! Each state is its own type and `on_control` consumes it, so no message can skip a
//! state. A `Goodbye` is handled by the [`PeerCore`](super::PeerCore) in every phase
//! before it reaches these states; the deadline lives in its timer table.

use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::text::is_unsafe;
use crate::wire::codec::{MsgKind, Packet};
use crate::wire::control::{self, Control, CONTROL_CHANNEL};

/// Protocol version: peers must share the major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolVersion {
    /// Incompatible changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
}

/// The protocol version this crate speaks. Major 4: the transport preamble and Noise
/// `XX` under the packets (see [`secure`](crate::secure)), the `Version`'s id checked
/// against the proven key, new close reasons; major 3: services negotiated on
/// channel 0 (`ServiceConnect` and its answers carry each side's channel ids and
/// initial credit); major 2 brought nonce'd keepalive and per-channel credit.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion { major: 5, minor: 0 };

/// A service a node runs (its twins on other nodes share the name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Name (1..=64 bytes).
    pub name: String,
    /// The service's own version.
    pub version: u32,
}

/// What a node says about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Protocol version.
    pub protocol: ProtocolVersion,
    /// Network name (1..=64 bytes).
    pub network: String,
    /// The node's id.
    pub node_id: NodeId,
    /// Where the node can be dialed (at most 256 bytes).
    pub listen_addr: Option<String>,
    /// Services it ran when it connected (at most 64; informational: services are
    /// negotiated on channel 0 and may come and go).
    pub services: Vec<ServiceInfo>,
    /// Free text (at most 256 bytes).
    pub user_agent: String,
    /// Random per node; equal nonces mean we dialed ourselves.
    pub nonce: u64,
}

/// Largest encoded `Version` accepted.
pub const MAX_VERSION_BYTES: usize = 8 * 1024;
const MAX_NETWORK: usize = 64;
const MAX_TEXT: usize = 256;
const MAX_SERVICES: usize = 64;
const MAX_SERVICE_NAME: usize = 64;

impl Version {
    /// Checks the field bounds.
    pub fn validate(&self) -> Result<(), HandshakeError> {
        let bad = |s: &str| Err(HandshakeError::BadVersion(s.to_owned()));
        if self.network.is_empty() || self.network.len() > MAX_NETWORK {
            return bad("network must be 1 to 64 bytes");
        }
        if self.user_agent.len() > MAX_TEXT {
            return bad("user_agent is longer than 256 bytes");
        }
        if self
            .listen_addr
            .as_ref()
            .is_some_and(|a| a.len() > MAX_TEXT)
        {
            return bad("listen_addr is longer than 256 bytes");
        }
        if self.services.len() > MAX_SERVICES {
            return bad("more than 64 services");
        }
        if self
            .services
            .iter()
            .any(|s| s.name.is_empty() || s.name.len() > MAX_SERVICE_NAME)
        {
            return bad("a service name is not 1 to 64 bytes");
        }
        // These end up in logs and on terminals (`switchyard status`).
        let texts = [&self.network, &self.user_agent]
            .into_iter()
            .chain(&self.listen_addr)
            .chain(self.services.iter().map(|s| &s.name));
        for text in texts {
            if text.chars().any(is_unsafe) {
                return bad("text with control, separator or bidirectional characters");
            }
        }
        Ok(())
    }
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A second `Version` arrived.
    #[error("second Version")]
    DuplicateVersion,
    /// A second `Verack` arrived.
    #[error("second Verack")]
    DuplicateVerack,
    /// `Verack` arrived before the remote's `Version`.
    #[error("Verack before Version")]
    VerackBeforeVersion,
    /// Something other than the handshake arrived before it completed.
    #[error("unexpected before the handshake completed: {0}")]
    UnexpectedPacket(String),
    /// The deadline passed.
    #[error("handshake timed out")]
    Timeout,
    /// The remote is on another network.
    #[error("other network: ours {ours:?}, theirs {theirs:?}")]
    NetworkMismatch {
        /// Our network.
        ours: String,
        /// Theirs.
        theirs: String,
    },
    /// The remote speaks another major protocol version.
    #[error("incompatible protocol: ours {ours}, theirs {theirs}")]
    ProtocolMismatch {
        /// Our major version.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// We connected to ourselves.
    #[error("connected to ourselves")]
    SelfConnection,
    /// We dialed `ID@...` and another node answered.
    #[error("expected node {expected}, got {got}")]
    IdentityMismatch {
        /// The id we dialed.
        expected: NodeId,
        /// The id that answered.
        got: NodeId,
    },
    /// The remote's `Version` claims an id other than the one its key proves.
    #[error("the Version claims node {claimed}, but the remote's key is node {proven}")]
    UnprovenId {
        /// The id of the key the secure transport authenticated.
        proven: NodeId,
        /// The id the `Version` claims.
        claimed: NodeId,
    },
    /// A `Version` field is out of bounds.
    #[error("bad Version: {0}")]
    BadVersion(String),
    /// A channel-0 payload is not a control message.
    #[error("undecodable handshake message: {0}")]
    Undecodable(String),
    /// The remote's `Goodbye` during the handshake could not be honoured: its reason
    /// is too long or holds characters that may not be shown, or quotes another
    /// goodbye.
    #[error("bad Goodbye: {0}")]
    BadGoodbye(String),
}

impl HandshakeError {
    /// Whether the remote broke the protocol (as opposed to a mismatch or a timeout).
    #[must_use]
    pub fn is_misbehavior(&self) -> bool {
        matches!(
            self,
            HandshakeError::DuplicateVersion
                | HandshakeError::DuplicateVerack
                | HandshakeError::VerackBeforeVersion
                | HandshakeError::UnexpectedPacket(_)
                | HandshakeError::UnprovenId { .. }
                | HandshakeError::BadVersion(_)
                | HandshakeError::Undecodable(_)
                | HandshakeError::BadGoodbye(_)
        )
    }
}

/// After completion, a handshake message is a violation.
pub fn check_after_handshake(msg: &Control) -> Result<(), HandshakeError> {
    match msg {
        Control::Version(_) => Err(HandshakeError::DuplicateVersion),
        Control::Verack => Err(HandshakeError::DuplicateVerack),
        _ => Ok(()),
    }
}

/// The control message a packet received during the handshake carries, or why it is
/// not one. Only whole, plain channel-0 messages of at most [`MAX_VERSION_BYTES`] are.
pub fn handshake_message(packet: &Packet) -> Result<Control, HandshakeError> {
    let msg = match packet {
        Packet::Msg(m) if m.channel != CONTROL_CHANNEL => {
            return Err(HandshakeError::UnexpectedPacket(format!(
                "message on channel {:#04x}",
                m.channel
            )))
        }
        Packet::Msg(m) if !m.eof || m.kind != MsgKind::Plain => {
            return Err(HandshakeError::UnexpectedPacket(
                "chunked or request/response control message".into(),
            ))
        }
        Packet::Msg(m) => m,
        other => return Err(HandshakeError::UnexpectedPacket(other.name().into())),
    };
    let decoded = control::decode(&msg.payload).map_err(|e| match e {
        control::ControlError::BadVersion(s) => HandshakeError::BadVersion(s),
        control::ControlError::BadGoodbye(s) => HandshakeError::BadGoodbye(s),
        other => HandshakeError::Undecodable(other.to_string()),
    });
    if msg.payload.len() > MAX_VERSION_BYTES {
        // Too large for the handshake; the label says what it was (a bad goodbye is
        // not a bad Version). Decoding is bounded by `MAX_CONTROL_MESSAGE`.
        let size = format!("{} bytes, limit {MAX_VERSION_BYTES}", msg.payload.len());
        return Err(match decoded {
            Ok(Control::Version(_)) => HandshakeError::BadVersion(size),
            Ok(other) => {
                HandshakeError::UnexpectedPacket(format!("{} of {size}", control_name(&other)))
            }
            Err(e) => e,
        });
    }
    decoded
}

fn control_name(c: &Control) -> &'static str {
    match c {
        Control::Version(_) => "Version",
        Control::Verack => "Verack",
        Control::Goodbye(_) => "Goodbye",
        Control::ServiceConnect(_) => "ServiceConnect",
        Control::ServiceAccept(_) => "ServiceAccept",
        Control::ServiceReject { .. } => "ServiceReject",
        Control::ServiceDisconnect { .. } => "ServiceDisconnect",
        Control::IntrospectRequest => "IntrospectRequest",
        Control::IntrospectResponse(_) => "IntrospectResponse",
    }
}

/// Our `Version` is sent; the remote's is awaited.
#[derive(Debug, Clone)]
pub struct AwaitVersion {
    local: Version,
    expected: Option<NodeId>,
    /// The id the secure transport proved the remote holds the key of.
    proven: Option<NodeId>,
}

/// The remote's `Version` was accepted (our `Verack` is sent); its
/// `Verack` is awaited.
#[derive(Debug, Clone)]
pub struct AwaitVerack {
    remote: Version,
}

/// A handshake in progress.
#[derive(Debug, Clone)]
pub enum Handshake {
    /// See [`AwaitVersion`].
    AwaitVersion(AwaitVersion),
    /// See [`AwaitVerack`].
    AwaitVerack(AwaitVerack),
}

impl AwaitVersion {
    /// The first state: `local` is what we send; `expected` the node we dialed, if we
    /// dialed `ID@HOST:PORT`.
    #[must_use]
    pub fn new(local: Version, expected: Option<NodeId>) -> Self {
        AwaitVersion {
            local,
            expected,
            proven: None,
        }
    }

    /// The secure transport proved that the remote holds the key of `id`: its
    /// `Version` must carry that id, and it must be the node we dialed, if we dialed
    /// `ID@HOST:PORT`.
    pub fn prove(&mut self, id: NodeId) -> Result<(), HandshakeError> {
        if let Some(expected) = self.expected {
            if expected != id {
                return Err(HandshakeError::IdentityMismatch { expected, got: id });
            }
        }
        self.proven = Some(id);
        Ok(())
    }

    /// Our `Version`.
    #[must_use]
    pub fn local(&self) -> &Version {
        &self.local
    }

    /// A control message arrived: only an acceptable `Version` moves on.
    pub fn on_control(self, msg: Control) -> Result<AwaitVerack, HandshakeError> {
        match msg {
            Control::Version(v) => self.on_version(v),
            Control::Verack => Err(HandshakeError::VerackBeforeVersion),
            other => Err(HandshakeError::UnexpectedPacket(
                control_name(&other).into(),
            )),
        }
    }

    fn on_version(self, v: Version) -> Result<AwaitVerack, HandshakeError> {
        v.validate()?;
        let local = &self.local;
        if v.network != local.network {
            return Err(HandshakeError::NetworkMismatch {
                ours: local.network.clone(),
                theirs: v.network,
            });
        }
        if v.protocol.major != local.protocol.major {
            return Err(HandshakeError::ProtocolMismatch {
                ours: local.protocol.major,
                theirs: v.protocol.major,
            });
        }
        if v.nonce == local.nonce || v.node_id == local.node_id {
            return Err(HandshakeError::SelfConnection);
        }
        if let Some(proven) = self.proven {
            if proven != v.node_id {
                return Err(HandshakeError::UnprovenId {
                    proven,
                    claimed: v.node_id,
                });
            }
        }
        if let Some(expected) = self.expected {
            if expected != v.node_id {
                return Err(HandshakeError::IdentityMismatch {
                    expected,
                    got: v.node_id,
                });
            }
        }
        Ok(AwaitVerack { remote: v })
    }
}

impl AwaitVerack {
    /// The remote's accepted `Version`.
    #[must_use]
    pub fn remote(&self) -> &Version {
        &self.remote
    }

    /// A control message arrived: `Verack` completes the handshake with the remote's
    /// `Version`.
    pub fn on_control(self, msg: Control) -> Result<Version, HandshakeError> {
        match msg {
            Control::Verack => Ok(self.remote),
            Control::Version(_) => Err(HandshakeError::DuplicateVersion),
            other => Err(HandshakeError::UnexpectedPacket(
                control_name(&other).into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::DisconnectReason;
    use crate::wire::codec::Msg;

    fn version(id: u8, nonce: u64) -> Version {
        Version {
            protocol: PROTOCOL_VERSION,
            network: "net".into(),
            node_id: NodeId([id; 20]),
            listen_addr: None,
            services: vec![ServiceInfo {
                name: "chat".into(),
                version: 1,
            }],
            user_agent: "test".into(),
            nonce,
        }
    }

    fn fresh() -> AwaitVersion {
        AwaitVersion::new(version(1, 1), None)
    }

    fn packet(c: &Control) -> Packet {
        Packet::Msg(Msg {
            channel: CONTROL_CHANNEL,
            eof: true,
            kind: MsgKind::Plain,
            total: None,
            payload: control::encode(c),
        })
    }

    #[test]
    fn a_pair_completes() {
        let a = AwaitVersion::new(version(1, 1), Some(NodeId([2; 20])));
        let b = AwaitVersion::new(version(2, 2), None);
        let a_local = Control::Version(a.local().clone());
        let b_local = Control::Version(b.local().clone());
        let a = a.on_control(b_local).unwrap();
        let b = b.on_control(a_local).unwrap();
        assert_eq!(a.remote().node_id, NodeId([2; 20]));
        assert_eq!(
            a.on_control(Control::Verack).unwrap().node_id,
            NodeId([2; 20])
        );
        assert_eq!(
            b.on_control(Control::Verack).unwrap().node_id,
            NodeId([1; 20])
        );
    }

    #[test]
    fn every_rejection() {
        assert_eq!(
            fresh().on_control(Control::Verack).unwrap_err(),
            HandshakeError::VerackBeforeVersion
        );
        let waiting = fresh().on_control(Control::Version(version(2, 2))).unwrap();
        assert_eq!(
            waiting
                .on_control(Control::Version(version(2, 2)))
                .unwrap_err(),
            HandshakeError::DuplicateVersion
        );
        let mut v = version(2, 2);
        v.network = "other".into();
        assert!(matches!(
            fresh().on_control(Control::Version(v)),
            Err(HandshakeError::NetworkMismatch { .. })
        ));
        let mut v = version(2, 2);
        v.protocol.major = 9;
        assert_eq!(
            fresh().on_control(Control::Version(v)).unwrap_err(),
            HandshakeError::ProtocolMismatch {
                ours: PROTOCOL_VERSION.major,
                theirs: 9
            }
        );
        let mut v = version(2, 2);
        v.protocol.minor = 9;
        assert!(
            fresh().on_control(Control::Version(v)).is_ok(),
            "minor may differ"
        );
        assert_eq!(
            fresh()
                .on_control(Control::Version(version(2, 1)))
                .unwrap_err(),
            HandshakeError::SelfConnection
        );
        assert_eq!(
            fresh()
                .on_control(Control::Version(version(1, 7)))
                .unwrap_err(),
            HandshakeError::SelfConnection
        );
        let mut v = version(2, 2);
        v.services[0].name = "other".into();
        assert!(
            fresh().on_control(Control::Version(v)).is_ok(),
            "services are negotiated later: none in common is no conflict"
        );
        let expecting = AwaitVersion::new(version(1, 1), Some(NodeId([3; 20])));
        assert!(matches!(
            expecting.on_control(Control::Version(version(2, 2))),
            Err(HandshakeError::IdentityMismatch { .. })
        ));
        let mut v = version(2, 2);
        v.user_agent = "x".repeat(300);
        assert!(matches!(
            fresh().on_control(Control::Version(v)),
            Err(HandshakeError::BadVersion(_))
        ));
        assert_eq!(
            check_after_handshake(&Control::Verack),
            Err(HandshakeError::DuplicateVerack)
        );
    }

    #[test]
    fn only_whole_plain_channel_zero_messages_are_handshake_messages() {
        assert!(matches!(
            handshake_message(&Packet::Ping(1)),
            Err(HandshakeError::UnexpectedPacket(s)) if s == "Ping"
        ));
        assert!(matches!(
            handshake_message(&Packet::Credit {
                channel: 1,
                bytes: 1
            }),
            Err(HandshakeError::UnexpectedPacket(_))
        ));
        let other_channel = Packet::Msg(Msg {
            channel: 5,
            eof: true,
            kind: MsgKind::Plain,
            total: None,
            payload: bytes::Bytes::new(),
        });
        assert!(matches!(
            handshake_message(&other_channel),
            Err(HandshakeError::UnexpectedPacket(_))
        ));
        let garbage = Packet::Msg(Msg {
            channel: CONTROL_CHANNEL,
            eof: true,
            kind: MsgKind::Plain,
            total: None,
            payload: bytes::Bytes::from_static(&[0xc1, 0x00]),
        });
        assert!(matches!(
            handshake_message(&garbage),
            Err(HandshakeError::Undecodable(_))
        ));
        assert_eq!(
            handshake_message(&packet(&Control::Verack)),
            Ok(Control::Verack)
        );
        // An out-of-bounds Version says which field, once.
        let mut v = version(2, 2);
        v.user_agent = "x".repeat(300);
        let err = handshake_message(&packet(&Control::Version(v))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad Version: user_agent is longer than 256 bytes"
        );
        // A bad goodbye before the handshake is not called a bad Version.
        let goodbye = Control::Goodbye(DisconnectReason::Application("a\nb".into()));
        assert!(matches!(
            handshake_message(&packet(&goodbye)),
            Err(HandshakeError::BadGoodbye(_))
        ));
    }
}
