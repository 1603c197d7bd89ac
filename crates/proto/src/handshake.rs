//! The `Version`/`Verack` handshake as a state machine.
//!
//! Both sides send their `Version` at once. Each checks the other's (network, major
//! protocol version, self-connection, expected identity, common service, field
//! bounds) and answers `Verack`. The handshake is complete when the remote's valid
//! `Version` and its `Verack` have arrived and ours were both handed out. Anything
//! else before that is a typed rejection; so is the deadline passing.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::codec::{MsgKind, Packet};
use crate::control::{self, Control, CONTROL_CHANNEL};
use crate::id::NodeId;

/// Protocol version: peers must share the major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolVersion {
    /// Incompatible changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
}

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };

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
    /// Services it runs (at most 64).
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
    /// Both sides list services and share none.
    #[error("no common service")]
    NoCommonService,
    /// We dialed `ID@...` and another node answered.
    #[error("expected node {expected}, got {got}")]
    IdentityMismatch {
        /// The id we dialed.
        expected: NodeId,
        /// The id that answered.
        got: NodeId,
    },
    /// A `Version` field is out of bounds.
    #[error("bad Version: {0}")]
    BadVersion(String),
    /// A channel-0 payload is not a control message.
    #[error("undecodable handshake message: {0}")]
    Undecodable(String),
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
                | HandshakeError::BadVersion(_)
                | HandshakeError::Undecodable(_)
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

/// One side of a handshake (see the [module docs](self)).
#[derive(Debug)]
pub struct Handshake {
    local: Version,
    expected: Option<NodeId>,
    deadline: Instant,
    version_sent: bool,
    remote: Option<Version>,
    verack_due: bool,
    verack_sent: bool,
    verack_received: bool,
}

impl Handshake {
    /// Starts a handshake at `now`; our `Version` is queued.
    #[must_use]
    pub fn new(
        now: Instant,
        local: Version,
        expected_remote: Option<NodeId>,
        timeout: Duration,
    ) -> Self {
        Handshake {
            local,
            expected: expected_remote,
            deadline: now + timeout,
            version_sent: false,
            remote: None,
            verack_due: false,
            verack_sent: false,
            verack_received: false,
        }
    }

    /// The next control message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Control> {
        if !self.version_sent {
            self.version_sent = true;
            return Some(Control::Version(self.local.clone()));
        }
        if self.verack_due && !self.verack_sent {
            self.verack_sent = true;
            return Some(Control::Verack);
        }
        None
    }

    /// Checks the deadline.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), HandshakeError> {
        if !self.is_complete() && now >= self.deadline {
            return Err(HandshakeError::Timeout);
        }
        Ok(())
    }

    /// The deadline, while not complete.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.is_complete()).then_some(self.deadline)
    }

    /// Whether both sides' `Version` and `Verack` went through.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.remote.is_some() && self.verack_received && self.version_sent && self.verack_sent
    }

    /// The remote's `Version`, once accepted.
    #[must_use]
    pub fn remote(&self) -> Option<&Version> {
        self.remote.as_ref()
    }

    /// Feeds one packet received before completion.
    pub fn handle_packet(&mut self, now: Instant, packet: &Packet) -> Result<(), HandshakeError> {
        self.handle_timeout(now)?;
        let msg = match packet {
            Packet::Ping => return Err(HandshakeError::UnexpectedPacket("ping".into())),
            Packet::Pong => return Err(HandshakeError::UnexpectedPacket("pong".into())),
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
        };
        if msg.payload.len() > MAX_VERSION_BYTES {
            return Err(HandshakeError::BadVersion(format!(
                "{} bytes, limit {MAX_VERSION_BYTES}",
                msg.payload.len()
            )));
        }
        let control = control::decode(&msg.payload).map_err(|e| match e {
            control::ControlError::Invalid(s) => HandshakeError::BadVersion(s),
            other => HandshakeError::Undecodable(other.to_string()),
        })?;
        match control {
            Control::Version(v) => self.on_version(v),
            Control::Verack => {
                if self.remote.is_none() {
                    return Err(HandshakeError::VerackBeforeVersion);
                }
                if std::mem::replace(&mut self.verack_received, true) {
                    return Err(HandshakeError::DuplicateVerack);
                }
                Ok(())
            }
            Control::Goodbye(reason) => Err(HandshakeError::UnexpectedPacket(format!(
                "goodbye: {reason}"
            ))),
        }
    }

    fn on_version(&mut self, v: Version) -> Result<(), HandshakeError> {
        if self.remote.is_some() {
            return Err(HandshakeError::DuplicateVersion);
        }
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
        if let Some(expected) = self.expected {
            if expected != v.node_id {
                return Err(HandshakeError::IdentityMismatch {
                    expected,
                    got: v.node_id,
                });
            }
        }
        if !local.services.is_empty()
            && !v.services.is_empty()
            && !v
                .services
                .iter()
                .any(|s| local.services.iter().any(|l| l.name == s.name))
        {
            return Err(HandshakeError::NoCommonService);
        }
        self.remote = Some(v);
        self.verack_due = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Msg;

    fn t0() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

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

    fn packet(c: &Control) -> Packet {
        Packet::Msg(Msg {
            channel: CONTROL_CHANNEL,
            eof: true,
            kind: MsgKind::Plain,
            payload: control::encode(c),
        })
    }

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn a_pair_completes() {
        let t = t0();
        let mut a = Handshake::new(t, version(1, 1), Some(NodeId([2; 20])), T);
        let mut b = Handshake::new(t, version(2, 2), None, T);
        for _ in 0..3 {
            while let Some(m) = a.poll_transmit() {
                b.handle_packet(t, &packet(&m)).unwrap();
            }
            while let Some(m) = b.poll_transmit() {
                a.handle_packet(t, &packet(&m)).unwrap();
            }
        }
        assert!(a.is_complete() && b.is_complete());
        assert_eq!(a.remote().unwrap().node_id, NodeId([2; 20]));
        assert_eq!(a.poll_timeout(), None);
    }

    fn fresh() -> Handshake {
        let mut h = Handshake::new(t0(), version(1, 1), None, T);
        let _ = h.poll_transmit();
        h
    }

    #[test]
    fn every_rejection() {
        let t = t0();
        let mut h = fresh();
        assert_eq!(
            h.handle_packet(t, &packet(&Control::Verack)),
            Err(HandshakeError::VerackBeforeVersion)
        );
        let mut h = fresh();
        h.handle_packet(t, &packet(&Control::Version(version(2, 2))))
            .unwrap();
        assert_eq!(
            h.handle_packet(t, &packet(&Control::Version(version(2, 2)))),
            Err(HandshakeError::DuplicateVersion)
        );
        let mut h = fresh();
        h.handle_packet(t, &packet(&Control::Version(version(2, 2))))
            .unwrap();
        h.handle_packet(t, &packet(&Control::Verack)).unwrap();
        assert_eq!(
            h.handle_packet(t, &packet(&Control::Verack)),
            Err(HandshakeError::DuplicateVerack)
        );
        assert!(matches!(
            fresh().handle_packet(t, &Packet::Ping),
            Err(HandshakeError::UnexpectedPacket(_))
        ));
        let other_channel = Packet::Msg(Msg {
            channel: 5,
            eof: true,
            kind: MsgKind::Plain,
            payload: bytes::Bytes::new(),
        });
        assert!(matches!(
            fresh().handle_packet(t, &other_channel),
            Err(HandshakeError::UnexpectedPacket(_))
        ));
        assert_eq!(
            fresh().handle_packet(t + T * 2, &packet(&Control::Verack)),
            Err(HandshakeError::Timeout)
        );
        assert_eq!(
            fresh().handle_timeout(t + T * 2),
            Err(HandshakeError::Timeout)
        );
        let mut v = version(2, 2);
        v.network = "other".into();
        assert!(matches!(
            fresh().handle_packet(t, &packet(&Control::Version(v))),
            Err(HandshakeError::NetworkMismatch { .. })
        ));
        let mut v = version(2, 2);
        v.protocol.major = 9;
        assert_eq!(
            fresh().handle_packet(t, &packet(&Control::Version(v))),
            Err(HandshakeError::ProtocolMismatch { ours: 1, theirs: 9 })
        );
        let mut v = version(2, 2);
        v.protocol.minor = 9;
        assert_eq!(
            fresh().handle_packet(t, &packet(&Control::Version(v))),
            Ok(()),
            "minor may differ"
        );
        assert_eq!(
            fresh().handle_packet(t, &packet(&Control::Version(version(2, 1)))),
            Err(HandshakeError::SelfConnection)
        );
        assert_eq!(
            fresh().handle_packet(t, &packet(&Control::Version(version(1, 7)))),
            Err(HandshakeError::SelfConnection)
        );
        let mut v = version(2, 2);
        v.services[0].name = "other".into();
        assert_eq!(
            fresh().handle_packet(t, &packet(&Control::Version(v.clone()))),
            Err(HandshakeError::NoCommonService)
        );
        v.services.clear();
        assert_eq!(
            fresh().handle_packet(t, &packet(&Control::Version(v))),
            Ok(()),
            "an empty list is no conflict"
        );
        let mut h = Handshake::new(t, version(1, 1), Some(NodeId([3; 20])), T);
        assert!(matches!(
            h.handle_packet(t, &packet(&Control::Version(version(2, 2)))),
            Err(HandshakeError::IdentityMismatch { .. })
        ));
        let mut v = version(2, 2);
        v.user_agent = "x".repeat(300);
        assert!(matches!(
            fresh().handle_packet(t, &packet(&Control::Version(v))),
            Err(HandshakeError::BadVersion(_))
        ));
        let garbage = Packet::Msg(Msg {
            channel: CONTROL_CHANNEL,
            eof: true,
            kind: MsgKind::Plain,
            payload: bytes::Bytes::from_static(&[0xc1, 0x00]),
        });
        assert!(matches!(
            fresh().handle_packet(t, &garbage),
            Err(HandshakeError::Undecodable(_))
        ));
        assert_eq!(
            check_after_handshake(&Control::Verack),
            Err(HandshakeError::DuplicateVerack)
        );
    }
}
