//! The MessagePack messages of channel 0 (handshake and daemon control).
//!
//! Channel 0 carries `Version`, `Verack` and `Goodbye` (the reason a side closes).
//! Decoding bounds the payload size and the nesting depth before anything else, then
//! validates the content, so a hostile control message cannot allocate much or blow
//! the stack.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::connection::handshake::{HandshakeError, Version};
use crate::reason::DisconnectReason;

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
}

/// Encodes a control message (MessagePack, compact array form).
#[must_use]
pub fn encode(msg: &Control) -> Bytes {
    // Serializing these types into a Vec cannot fail.
    Bytes::from(rmp_serde::to_vec(msg).unwrap_or_default())
}

/// Longest text (as displayed) of the reason in a remote's `Goodbye`.
pub const MAX_GOODBYE_TEXT: usize = 1024;

/// Characters a remote's text may not carry into logs: control characters, line and
/// paragraph separators, and the invisible formatting characters (zero-width ones and
/// bidirectional overrides, which can make a log line read differently from what it
/// holds).
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
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
    let msg =
        Control::deserialize(&mut de).map_err(|e| ControlError::Undecodable(e.to_string()))?;
    match &msg {
        Control::Version(v) => v.validate().map_err(|e| match e {
            HandshakeError::BadVersion(s) => ControlError::BadVersion(s),
            other => ControlError::BadVersion(other.to_string()),
        })?,
        Control::Goodbye(DisconnectReason::ByRemote(_)) => {
            return Err(ControlError::Invalid(
                "a goodbye cannot quote another goodbye".into(),
            ))
        }
        Control::Goodbye(reason) => {
            // The remote's words end up in logs and in `PeerDown`: keep them short
            // and on one line.
            let text = reason.to_string();
            if text.len() > MAX_GOODBYE_TEXT || text.chars().any(unprintable) {
                return Err(ControlError::Invalid(format!(
                    "goodbye reason longer than {MAX_GOODBYE_TEXT} bytes or unprintable"
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
            DisconnectReason::Application("x".repeat(MAX_GOODBYE_TEXT)),
            DisconnectReason::Misbehavior("forged\nlog line".into()),
            DisconnectReason::Io("bell\u{7}".into()),
            DisconnectReason::Application("line\u{2028}separator".into()),
            DisconnectReason::Application("right-to-left \u{202E}override".into()),
            DisconnectReason::Application("zero\u{200B}width".into()),
        ] {
            assert!(
                matches!(
                    decode(&encode(&Control::Goodbye(bad))),
                    Err(ControlError::Invalid(_))
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
            Err(ControlError::Invalid(_))
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }
    }
}
