//! [`DisconnectReason`]: the one list of reasons a connection to a peer is closed for.
//!
//! Every layer (codec, handshake, trackers, runtime, discovery) reports a close with one
//! of these values, so a service that sees `PeerDown`, a log line, and the introspection
//! of channel 0 all say the same thing. Each variant has a human-readable message
//! (its `Display`), and reasons travel to the remote side in a `Goodbye` on channel 0.
//!
//! Free text in a reason may come from a peer (its goodbye, or a decoder's message
//! quoting what it sent), so `Display` shows every text field through
//! [`RemoteText`]: escaped and bounded, whatever it holds.

use serde::{Deserialize, Serialize};

use crate::connection::handshake::HandshakeError;
use crate::secure::SecureError;
use crate::text::RemoteText;
use crate::wire::codec::CodecError;

/// Why a connection to a peer was (or is being) closed.
///
/// `Display` gives the message written to logs and shown to users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The local node is shutting down gracefully.
    #[error("node shutting down")]
    Shutdown,
    /// The local application asked to close this peer, with its own words.
    #[error("closed by the application: {}", RemoteText::new(.0))]
    Application(String),
    /// The remote side closed the connection without saying why.
    #[error("connection closed by the remote")]
    ConnectionClosed,
    /// The remote side closed the connection and said why (its `Goodbye`).
    #[error("remote closed the connection: {0}")]
    ByRemote(Box<DisconnectReason>),
    /// Reading or writing the socket failed.
    #[error("i/o error: {}", RemoteText::new(.0))]
    Io(String),
    /// The remote sent bytes that are not a valid packet.
    #[error("bad packet: {0}")]
    Codec(CodecError),
    /// The secure transport failed: its preamble, the Noise handshake, an identity
    /// proof or a frame.
    #[error("secure transport: {0}")]
    Secure(SecureError),
    /// The `Version`/`Verack` handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(HandshakeError),
    /// A ping went unanswered for the pong timeout (the remote did not read it, or
    /// did not answer it).
    #[error("no pong within the pong timeout")]
    PongTimeout,
    /// The remote sent pings faster than the keepalive allows.
    #[error("too many pings: more than {limit} within {window_ms} ms")]
    TooManyPings {
        /// Pings allowed in the window.
        limit: u32,
        /// The window, in milliseconds.
        window_ms: u64,
    },
    /// The remote sent pongs that answer no ping of ours, faster than allowed.
    #[error("too many unsolicited pongs: more than {limit} within {window_ms} ms")]
    TooManyPongs {
        /// Unsolicited pongs allowed in the window.
        limit: u32,
        /// The window, in milliseconds.
        window_ms: u64,
    },
    /// The remote sent more bytes on a channel than the credit it was granted.
    #[error("channel {channel:#04x} over its credit: {received} bytes sent, {granted} granted")]
    CreditExceeded {
        /// The channel.
        channel: u8,
        /// Credit-counted bytes received on it.
        received: u64,
        /// Credit granted on it.
        granted: u64,
    },
    /// The remote broke the credit protocol (a credit packet for channel 0, a
    /// `Release` nobody asked for or larger than asked, ...).
    #[error("flow-control violation: {}", RemoteText::new(.0))]
    FlowControl(String),
    /// Nothing at all was received for the idle timeout.
    #[error("nothing received within the idle timeout")]
    IdleTimeout,
    /// A request got no response within its stall timeout.
    #[error("request {request_id} on channel {channel:#04x} stalled (no response in time)")]
    Stalled {
        /// Channel the request was sent on.
        channel: u8,
        /// Id of the request that got no answer.
        request_id: u32,
    },
    /// The remote answered a request we never made on that channel.
    #[error("unsolicited response {request_id} on channel {channel:#04x}")]
    UnexpectedResponse {
        /// Channel the response came on.
        channel: u8,
        /// Request id it claimed to answer.
        request_id: u32,
    },
    /// The remote answered a request it had answered already.
    #[error("second response to request {request_id} on channel {channel:#04x}")]
    DuplicateResponse {
        /// Channel the response came on.
        channel: u8,
        /// The request id.
        request_id: u32,
    },
    /// The remote answered a request after its stall deadline.
    #[error("response to request {request_id} on channel {channel:#04x} after it stalled")]
    LateResponse {
        /// Channel the response came on.
        channel: u8,
        /// The request id.
        request_id: u32,
    },
    /// The remote sent a request with the id of one of its requests we still hold.
    #[error("request {request_id} on channel {channel:#04x} sent twice")]
    DuplicateRequest {
        /// Channel of the request.
        channel: u8,
        /// The request id.
        request_id: u32,
    },
    /// The remote sent requests beyond what we accept on a channel faster than we
    /// could refuse them.
    #[error("requests on channel {0:#04x} beyond the limit, faster than refused")]
    TooManyRequests(u8),
    /// A packet arrived on a channel this node does not have.
    #[error("message on unknown channel {0:#04x}")]
    UnknownChannel(u8),
    /// A message exceeded its channel's `max_message_size`.
    #[error("message on channel {channel:#04x} too large: {size} bytes or more, limit {max}")]
    MessageTooLarge {
        /// Channel of the message.
        channel: u8,
        /// Bytes seen so far (the message was cut off when it passed the limit).
        size: usize,
        /// The channel's limit.
        max: usize,
    },
    /// The partial messages of all channels of the connection would take more
    /// memory than its reassembly budget (`limits.max_reassembly_bytes`).
    #[error("partial messages over the connection's reassembly budget: {size} bytes, limit {max}")]
    ReassemblyBudget {
        /// Bytes the partial messages would take.
        size: usize,
        /// The budget.
        max: usize,
    },
    /// The chunks of one message do not add up: their kind (plain, request or
    /// response id) changed mid-message, they carry more or fewer bytes than the
    /// declared size, or the declared size is missing or repeated.
    #[error("chunks of one message on channel {0:#04x} do not add up (kind or declared size)")]
    InconsistentChunks(u8),
    /// A complete message could not be decoded as its channel's type.
    #[error("undecodable message on channel {channel:#04x}: {}", RemoteText::new(.error))]
    Undecodable {
        /// Channel of the message.
        channel: u8,
        /// What the decoder said.
        error: String,
    },
    /// A channel-0 (daemon) message broke the control protocol.
    #[error("control protocol violation: {}", RemoteText::new(.0))]
    ControlViolation(String),
    /// A second connection to an already connected node lost the tie-break.
    #[error("duplicate connection to the same node")]
    DuplicateConnection,
    /// The node already has its maximum number of inbound peers.
    #[error("too many inbound peers")]
    MaxInbound,
    /// The node's inbound slots were full and a new inbound peer took this one's
    /// slot: it was the least valuable inbound peer (see `Config::evict_inbound`).
    #[error("evicted: inbound slots full and a new peer took this one's slot")]
    Evicted,
    /// The node already has its maximum number of outbound peers.
    #[error("too many outbound peers")]
    MaxOutbound,
    /// The node already has its maximum number of peers from this IP address.
    #[error("too many peers from one IP address")]
    MaxPerIp,
    /// The node already has its maximum number of peers from this subnet.
    #[error("too many peers from one subnet")]
    MaxPerSubnet,
    /// The node already has its maximum number of inbound handshakes in progress.
    #[error("too many handshakes in progress")]
    MaxHandshakes,
    /// The peer is banned.
    #[error("peer is banned")]
    Banned,
    /// The peer exceeded its send or receive rate.
    #[error("rate limit exceeded")]
    RateLimited,
    /// A service judged the peer's behaviour wrong (e.g. unsolicited PEX answer).
    #[error("misbehaviour: {}", RemoteText::new(.0))]
    Misbehavior(String),
    /// The service was detached on this connection (by the remote, or locally); the
    /// connection and its other services go on. Only ever a service's `PeerDown`
    /// reason, never a connection's.
    #[error("service detached")]
    ServiceDetached,
}

impl From<CodecError> for DisconnectReason {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::Io(msg) => DisconnectReason::Io(msg),
            other => DisconnectReason::Codec(other),
        }
    }
}

impl From<SecureError> for DisconnectReason {
    fn from(e: SecureError) -> Self {
        DisconnectReason::Secure(e)
    }
}

impl From<HandshakeError> for DisconnectReason {
    fn from(e: HandshakeError) -> Self {
        DisconnectReason::Handshake(e)
    }
}

impl DisconnectReason {
    /// A short, fixed name of the variant (`"pong_timeout"`, `"by_remote"`, ...): a
    /// bounded set, for metric labels and counting. The remote's own reason inside
    /// `ByRemote` does not show: a remote cannot grow the set.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::Application(_) => "application",
            DisconnectReason::ConnectionClosed => "connection_closed",
            DisconnectReason::ByRemote(_) => "by_remote",
            DisconnectReason::Io(_) => "io",
            DisconnectReason::Codec(_) => "codec",
            DisconnectReason::Secure(_) => "secure",
            DisconnectReason::Handshake(_) => "handshake",
            DisconnectReason::PongTimeout => "pong_timeout",
            DisconnectReason::TooManyPings { .. } => "too_many_pings",
            DisconnectReason::TooManyPongs { .. } => "too_many_pongs",
            DisconnectReason::CreditExceeded { .. } => "credit_exceeded",
            DisconnectReason::FlowControl(_) => "flow_control",
            DisconnectReason::IdleTimeout => "idle_timeout",
            DisconnectReason::Stalled { .. } => "stalled",
            DisconnectReason::UnexpectedResponse { .. } => "unexpected_response",
            DisconnectReason::DuplicateResponse { .. } => "duplicate_response",
            DisconnectReason::LateResponse { .. } => "late_response",
            DisconnectReason::DuplicateRequest { .. } => "duplicate_request",
            DisconnectReason::TooManyRequests(_) => "too_many_requests",
            DisconnectReason::UnknownChannel(_) => "unknown_channel",
            DisconnectReason::MessageTooLarge { .. } => "message_too_large",
            DisconnectReason::ReassemblyBudget { .. } => "reassembly_budget",
            DisconnectReason::InconsistentChunks(_) => "inconsistent_chunks",
            DisconnectReason::Undecodable { .. } => "undecodable",
            DisconnectReason::ControlViolation(_) => "control_violation",
            DisconnectReason::DuplicateConnection => "duplicate_connection",
            DisconnectReason::MaxInbound => "max_inbound",
            DisconnectReason::Evicted => "evicted",
            DisconnectReason::MaxOutbound => "max_outbound",
            DisconnectReason::MaxPerIp => "max_per_ip",
            DisconnectReason::MaxPerSubnet => "max_per_subnet",
            DisconnectReason::MaxHandshakes => "max_handshakes",
            DisconnectReason::Banned => "banned",
            DisconnectReason::RateLimited => "rate_limited",
            DisconnectReason::Misbehavior(_) => "misbehavior",
            DisconnectReason::ServiceDetached => "service_detached",
        }
    }

    /// The free text this reason holds, as it is sent (not as `Display` shows it):
    /// a remote's goodbye whose text is too long or holds a character that may not
    /// reach a log ([`is_unsafe`](crate::text::is_unsafe)) is refused.
    #[must_use]
    pub fn free_text(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_text(&mut out);
        out
    }

    fn collect_text<'a>(&'a self, out: &mut Vec<&'a str>) {
        let mut bad = |s: &'a String| out.push(s.as_str());
        match self {
            DisconnectReason::Application(s)
            | DisconnectReason::Io(s)
            | DisconnectReason::FlowControl(s)
            | DisconnectReason::ControlViolation(s)
            | DisconnectReason::Misbehavior(s)
            | DisconnectReason::Undecodable { error: s, .. }
            | DisconnectReason::Codec(CodecError::Io(s)) => bad(s),
            DisconnectReason::ByRemote(inner) => inner.collect_text(out),
            DisconnectReason::Handshake(h) => match h {
                HandshakeError::UnexpectedPacket(s)
                | HandshakeError::BadVersion(s)
                | HandshakeError::Undecodable(s)
                | HandshakeError::BadGoodbye(s) => bad(s),
                HandshakeError::NetworkMismatch { ours, theirs } => {
                    bad(ours);
                    bad(theirs);
                }
                // The others hold no text.
                _ => {}
            },
            DisconnectReason::Secure(e) => match e {
                SecureError::BadPreamble(s)
                | SecureError::Noise(s)
                | SecureError::BadIdentityProof(s) => bad(s),
                // The others hold no text.
                _ => {}
            },
            DisconnectReason::Shutdown
            | DisconnectReason::ConnectionClosed
            | DisconnectReason::Codec(_)
            | DisconnectReason::PongTimeout
            | DisconnectReason::TooManyPings { .. }
            | DisconnectReason::TooManyPongs { .. }
            | DisconnectReason::CreditExceeded { .. }
            | DisconnectReason::IdleTimeout
            | DisconnectReason::Stalled { .. }
            | DisconnectReason::UnexpectedResponse { .. }
            | DisconnectReason::DuplicateResponse { .. }
            | DisconnectReason::LateResponse { .. }
            | DisconnectReason::DuplicateRequest { .. }
            | DisconnectReason::TooManyRequests(_)
            | DisconnectReason::UnknownChannel(_)
            | DisconnectReason::MessageTooLarge { .. }
            | DisconnectReason::ReassemblyBudget { .. }
            | DisconnectReason::InconsistentChunks(_)
            | DisconnectReason::DuplicateConnection
            | DisconnectReason::MaxInbound
            | DisconnectReason::Evicted
            | DisconnectReason::MaxOutbound
            | DisconnectReason::MaxPerIp
            | DisconnectReason::MaxPerSubnet
            | DisconnectReason::MaxHandshakes
            | DisconnectReason::Banned
            | DisconnectReason::RateLimited
            | DisconnectReason::ServiceDetached => {}
        }
    }

    /// Whether this is an ordinary end of a connection, one that needs nobody's
    /// attention: asked for by either side (shutdown, the application, the remote's
    /// goodbye), a clean close, or the node's own choice between peers (a duplicate
    /// connection, an eviction). Anything else is worth a warning.
    #[must_use]
    pub fn is_ordinary(&self) -> bool {
        matches!(
            self,
            DisconnectReason::Shutdown
                | DisconnectReason::Application(_)
                | DisconnectReason::ByRemote(_)
                | DisconnectReason::ConnectionClosed
                | DisconnectReason::DuplicateConnection
                | DisconnectReason::Evicted
        )
    }

    /// Whether this close was caused by the remote's misbehaviour (as opposed to local
    /// policy, shutdown, or an ordinary network failure). Discovery uses this to score
    /// and ban addresses.
    #[must_use]
    pub fn is_misbehavior(&self) -> bool {
        matches!(
            self,
            DisconnectReason::Codec(_)
                | DisconnectReason::UnknownChannel(_)
                | DisconnectReason::MessageTooLarge { .. }
                | DisconnectReason::InconsistentChunks(_)
                | DisconnectReason::Undecodable { .. }
                | DisconnectReason::ControlViolation(_)
                | DisconnectReason::UnexpectedResponse { .. }
                | DisconnectReason::DuplicateResponse { .. }
                | DisconnectReason::LateResponse { .. }
                | DisconnectReason::DuplicateRequest { .. }
                | DisconnectReason::TooManyRequests(_)
                | DisconnectReason::RateLimited
                | DisconnectReason::Misbehavior(_)
                | DisconnectReason::TooManyPings { .. }
                | DisconnectReason::TooManyPongs { .. }
                | DisconnectReason::CreditExceeded { .. }
                | DisconnectReason::FlowControl(_)
                | DisconnectReason::ReassemblyBudget { .. }
        ) || matches!(self, DisconnectReason::Handshake(h) if h.is_misbehavior())
            || matches!(self, DisconnectReason::Secure(s) if s.is_misbehavior())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_human_readable() {
        let r = DisconnectReason::MessageTooLarge {
            channel: 0x10,
            size: 2048,
            max: 1024,
        };
        assert_eq!(
            r.to_string(),
            "message on channel 0x10 too large: 2048 bytes or more, limit 1024"
        );
        let r = DisconnectReason::ByRemote(Box::new(DisconnectReason::MaxInbound));
        assert_eq!(
            r.to_string(),
            "remote closed the connection: too many inbound peers"
        );
        assert_eq!(
            DisconnectReason::from(CodecError::UnknownType(9)).to_string(),
            "bad packet: unknown packet type 0x09"
        );
    }

    #[test]
    fn ordinary_ends_are_the_asked_for_and_the_nodes_own_choices() {
        let ordinary = [
            DisconnectReason::Shutdown,
            DisconnectReason::Application("bye".into()),
            DisconnectReason::ByRemote(Box::new(DisconnectReason::MaxInbound)),
            DisconnectReason::ConnectionClosed,
            DisconnectReason::DuplicateConnection,
            DisconnectReason::Evicted,
        ];
        assert!(ordinary.iter().all(DisconnectReason::is_ordinary));
        let not = [
            DisconnectReason::Io("reset".into()),
            DisconnectReason::RateLimited,
            DisconnectReason::MaxInbound,
            DisconnectReason::from(CodecError::UnknownType(9)),
        ];
        assert!(!not.iter().any(DisconnectReason::is_ordinary));
    }

    #[test]
    fn free_text_is_shown_escaped_and_bounded() {
        let r = DisconnectReason::ByRemote(Box::new(DisconnectReason::Application(
            "ok\n[INFO] forged \u{2028}line \u{202E}evil \x1b[2J".into(),
        )));
        assert_eq!(
            r.to_string(),
            "remote closed the connection: closed by the application: \
             ok\\n[INFO] forged \\u{2028}line \\u{202e}evil \\u{1b}[2J"
        );
        let r = DisconnectReason::Undecodable {
            channel: 3,
            error: "z".repeat(100_000),
        };
        assert!(r.to_string().len() < 400, "{}", r.to_string().len());
        assert!(r.to_string().ends_with("…(+99744 bytes)"));
        let r = DisconnectReason::Misbehavior("\u{2066}isolate\u{2069}".into());
        assert_eq!(r.to_string(), "misbehaviour: \\u{2066}isolate\\u{2069}");
    }

    #[test]
    fn kinds_are_short_fixed_names() {
        let remote = DisconnectReason::ByRemote(Box::new(DisconnectReason::Application(
            "anything the remote likes".into(),
        )));
        assert_eq!(remote.kind(), "by_remote");
        assert_eq!(DisconnectReason::PongTimeout.kind(), "pong_timeout");
        assert_eq!(
            DisconnectReason::ControlViolation("x".into()).kind(),
            "control_violation"
        );
    }

    #[test]
    fn io_errors_from_the_codec_are_not_misbehaviour() {
        let r = DisconnectReason::from(CodecError::Io("reset".into()));
        assert_eq!(r, DisconnectReason::Io("reset".into()));
        assert!(!r.is_misbehavior());
        assert!(DisconnectReason::UnknownChannel(3).is_misbehavior());
    }

    #[test]
    fn reasons_round_trip_through_messagepack() {
        let r = DisconnectReason::ByRemote(Box::new(DisconnectReason::Stalled {
            channel: 2,
            request_id: 7,
        }));
        let bytes = rmp_serde::to_vec(&r).unwrap();
        let back: DisconnectReason = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, r);
    }
}
