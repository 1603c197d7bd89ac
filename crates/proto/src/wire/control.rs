//! The MessagePack messages of channel 0 (handshake and daemon control).
//!
//! Channel 0 carries the handshake (`Version`, `Verack`), `Goodbye` (the reason a side
//! closes), and the daemon's service negotiation: `ServiceConnect`, `ServiceAccept`,
//! `ServiceReject` and `ServiceDisconnect` (see [`services`](crate::connection::services)
//! for the rules), and introspection: `IntrospectRequest`, answered by one
//! `IntrospectResponse` (see [`introspect`](crate::introspect); rate-limited per
//! connection, an answer nobody asked for is a violation). Decoding bounds the payload size and the nesting depth before
//! anything else, then validates the content (lengths, names, channel ids), so a
//! hostile control message cannot allocate much or blow the stack.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::connection::handshake::{HandshakeError, Version};
use crate::introspect::Introspection;
use crate::reason::DisconnectReason;
use crate::text;

/// The control channel's id.
pub const CONTROL_CHANNEL: u8 = 0;
/// Largest channel-0 message accepted (checked before decoding).
pub const MAX_CONTROL_MESSAGE: usize = 64 * 1024;
/// Deepest nesting a control message may have.
const MAX_DEPTH: usize = 16;

/// A message on channel 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Control {
    /// Who we are (first message of the handshake, each way).
    Version(Version),
    /// "Your Version is acceptable" (second message of the handshake, each way).
    Verack,
    /// Why this side is closing the connection (its last message).
    Goodbye(DisconnectReason),
    /// "I run this service; here are my channel ids for it and the credit I granted
    /// on each." Sent for each service when the connection comes up, and when one is
    /// attached later.
    ServiceConnect(ServiceOffer),
    /// "I run it too and accept yours; here are my channel ids and credit." The answer
    /// to a compatible `ServiceConnect`.
    ServiceAccept(ServiceOffer),
    /// The answer to a `ServiceConnect` that will not be accepted.
    ServiceReject {
        /// The service offered.
        name: String,
        /// Why not.
        reason: RejectReason,
    },
    /// "I no longer run this service on this connection": nothing more will be sent
    /// on its channels, and what arrives on them is dropped until the remote answers
    /// with its own `ServiceDisconnect`.
    ServiceDisconnect {
        /// The service.
        name: String,
    },
    /// "Tell me about your node": answered by one `IntrospectResponse`. At most
    /// [`INTROSPECT_BURST`](crate::connection::introspect::INTROSPECT_BURST) at once
    /// per connection.
    IntrospectRequest,
    /// The answer to an `IntrospectRequest`: the node's services, peers and
    /// per-channel counters, cut to fit [`MAX_CONTROL_MESSAGE`] (validated on decode).
    IntrospectResponse(Introspection),
}

/// Longest service name, in bytes.
pub const MAX_SERVICE_NAME: usize = 64;
/// Most channels one service may have.
pub const MAX_SERVICE_CHANNELS: usize = 32;

/// One channel of a service, as its owner states it: the id the owner receives on,
/// and the credit it granted there (the sender's initial credit on that channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelGrant {
    /// The owner's channel id (1..=255).
    pub id: u8,
    /// Bytes of credit granted.
    pub credit: u32,
}

/// A service as offered or accepted on channel 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOffer {
    /// Its name (1..=64 bytes of `A-Z a-z 0-9 . _ - / :`); twins share it.
    pub name: String,
    /// Major version: twins must have the same.
    pub major: u32,
    /// Minor version: informational.
    pub minor: u32,
    /// Its channels in the service's order (1..=32, distinct, none 0): the n-th
    /// channel of one side pairs with the n-th of the other.
    pub channels: Vec<ChannelGrant>,
}

/// Why a `ServiceConnect` was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// The node does not run a service of that name.
    #[error("not running there")]
    NotRunning,
    /// It runs another major version.
    #[error("it runs version {major}.{minor}")]
    VersionMismatch {
        /// The rejecter's major version.
        major: u32,
        /// Its minor version.
        minor: u32,
    },
    /// It runs the service with another number of channels.
    #[error("it has {count} channels for it")]
    ChannelMismatch {
        /// The rejecter's channel count.
        count: u8,
    },
}

/// Whether `name` is a valid service name.
#[must_use]
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVICE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:".contains(&b))
}

impl ServiceOffer {
    fn validate(&self) -> Result<(), ControlError> {
        let bad = |s: String| Err(ControlError::Invalid(s));
        if !valid_service_name(&self.name) {
            return bad("service name is not 1 to 64 bytes of A-Z a-z 0-9 . _ - / :".into());
        }
        if self.channels.is_empty() || self.channels.len() > MAX_SERVICE_CHANNELS {
            return bad(format!(
                "service {} has {} channels, not 1 to {MAX_SERVICE_CHANNELS}",
                self.name,
                self.channels.len()
            ));
        }
        let mut seen = [false; 256];
        for c in &self.channels {
            let slot = &mut seen[usize::from(c.id)];
            if c.id == CONTROL_CHANNEL || *slot {
                return bad(format!(
                    "service {} states channel {:#04x} twice or channel 0",
                    self.name, c.id
                ));
            }
            *slot = true;
        }
        Ok(())
    }
}

/// A channel-0 payload that is not a valid control message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Larger than [`MAX_CONTROL_MESSAGE`].
    #[error("control message of {size} bytes exceeds {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not MessagePack of a known control message.
    #[error("undecodable control message: {0}")]
    Undecodable(String),
    /// Decodable, but its content breaks a rule.
    #[error("invalid control message: {0}")]
    Invalid(String),
    /// A `Version` whose fields are out of bounds (the field and the bound).
    #[error("bad Version: {0}")]
    BadVersion(String),
    /// A `Goodbye` whose reason may not be shown (too long, unsafe characters) or
    /// quotes another goodbye.
    #[error("bad Goodbye: {0}")]
    BadGoodbye(String),
}

/// Encodes a control message (MessagePack, compact array form).
#[must_use]
pub fn encode(msg: &Control) -> Bytes {
    // Serializing these types into a Vec cannot fail.
    Bytes::from(rmp_serde::to_vec(msg).unwrap_or_default())
}

/// Longest free text (all its fields together, as sent) of the reason in a remote's
/// `Goodbye`.
pub const MAX_GOODBYE_TEXT: usize = 1024;

/// Characters a remote's text may not carry into logs (see [`text::is_unsafe`]).
pub(crate) fn unprintable(c: char) -> bool {
    text::is_unsafe(c)
}

/// Decodes and validates a control message.
pub fn decode(payload: &[u8]) -> Result<Control, ControlError> {
    if payload.len() > MAX_CONTROL_MESSAGE {
        return Err(ControlError::TooLarge {
            size: payload.len(),
            max: MAX_CONTROL_MESSAGE,
        });
    }
    let mut de = rmp_serde::Deserializer::from_read_ref(payload);
    de.set_max_depth(MAX_DEPTH);
    // The decoder's message may quote what the remote sent (an unknown variant's name,
    // say): it is kept escaped and short, as it ends up in logs and in our goodbye.
    let msg = Control::deserialize(&mut de)
        .map_err(|e| ControlError::Undecodable(text::clean(&e.to_string())))?;
    match &msg {
        Control::Version(v) => v.validate().map_err(|e| match e {
            HandshakeError::BadVersion(s) => ControlError::BadVersion(s),
            other => ControlError::BadVersion(other.to_string()),
        })?,
        Control::Goodbye(DisconnectReason::ByRemote(_)) => {
            return Err(ControlError::BadGoodbye(
                "a goodbye cannot quote another goodbye".into(),
            ))
        }
        Control::ServiceConnect(offer) | Control::ServiceAccept(offer) => offer.validate()?,
        Control::IntrospectResponse(i) => i
            .validate()
            .map_err(|e| ControlError::Invalid(e.to_string()))?,
        Control::ServiceReject { name, .. } | Control::ServiceDisconnect { name }
            if !valid_service_name(name) =>
        {
            return Err(ControlError::Invalid(
                "service name is not 1 to 64 bytes of A-Z a-z 0-9 . _ - / :".into(),
            ))
        }
        Control::Goodbye(reason) => {
            // The remote's words end up in logs and in `PeerDown`: keep them short
            // and on one line.
            // Checked as sent: `Display` would escape and cut it.
            let texts = reason.free_text();
            let len: usize = texts.iter().map(|t| t.len()).sum();
            if len > MAX_GOODBYE_TEXT || texts.iter().any(|t| t.chars().any(unprintable)) {
                return Err(ControlError::BadGoodbye(format!(
                    "reason longer than {MAX_GOODBYE_TEXT} bytes, or with control, \
                     separator or bidirectional characters"
                )));
            }
        }
        _ => {}
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn goodbye_text_is_short_and_printable() {
        let ok = Control::Goodbye(DisconnectReason::Application("maintenance".into()));
        assert_eq!(decode(&encode(&ok)).unwrap(), ok);
        for bad in [
            DisconnectReason::Application("x".repeat(MAX_GOODBYE_TEXT + 1)),
            DisconnectReason::Misbehavior("forged\nlog line".into()),
            DisconnectReason::Io("bell\u{7}".into()),
            DisconnectReason::Application("line\u{2028}separator".into()),
            DisconnectReason::Application("right-to-left \u{202E}override".into()),
            DisconnectReason::Application("zero\u{200B}width".into()),
        ] {
            assert!(
                matches!(
                    decode(&encode(&Control::Goodbye(bad))),
                    Err(ControlError::BadGoodbye(_))
                ),
                "rejected"
            );
        }
    }

    #[test]
    fn round_trip() {
        for c in [
            Control::Verack,
            Control::Goodbye(DisconnectReason::MaxInbound),
            Control::IntrospectRequest,
        ] {
            assert_eq!(decode(&encode(&c)).unwrap(), c);
        }
    }

    #[test]
    fn hostile_inputs_are_errors() {
        assert!(matches!(
            decode(&vec![0u8; MAX_CONTROL_MESSAGE + 1]),
            Err(ControlError::TooLarge { .. })
        ));
        assert!(matches!(decode(&[0xc1]), Err(ControlError::Undecodable(_))));
        // A string claiming 4 GiB inside a 6-byte payload.
        assert!(decode(&[0x81, 0xa7, b'V', 0xdb, 0xff, 0xff]).is_err());
        // Deep nesting of arrays.
        let deep: Vec<u8> = vec![0x91; 10_000];
        assert!(decode(&deep).is_err());
        let nested = Control::Goodbye(DisconnectReason::ByRemote(Box::new(
            DisconnectReason::Shutdown,
        )));
        assert!(matches!(
            decode(&encode(&nested)),
            Err(ControlError::BadGoodbye(_))
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }
    }
}
