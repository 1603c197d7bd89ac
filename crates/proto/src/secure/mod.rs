//! The secure transport under the packet codec: a preamble, a Noise `XX` handshake
//! that proves each node's ed25519 identity, and the encrypted frames that carry the
//! packet stream after it.
//!
//! Pure like the rest of this crate: [`SecureHandshake`] takes the bytes read and
//! hands out the bytes to write; the randomness of its ephemeral key is passed in.
//! The runtime runs it on a fresh connection, then gives the connection's
//! [`PeerCore`](crate::PeerCore) the authenticated id and seals and opens the core's
//! bytes with the [`Session`] it produced. Packet priorities and flow control sit
//! above the frames and do not change.
//!
//! ## The stream
//!
//! ```text
//! both sides, at once:     preamble (8 bytes)
//! both encrypted:          Noise_XX_25519_{AESGCM|ChaChaPoly}_SHA256, prologue bound to
//!                          both preambles, each handshake message framed like a frame:
//!   initiator → responder  e
//!   responder → initiator  e, ee, s, es, identity proof
//!   initiator → responder  s, se, identity proof
//! then frames, each way:   len (u16, big-endian) | ciphertext of len − 16 bytes | tag (16)
//! both plaintext:          the packet codec's bytes, unframed
//! ```
//!
//! ### Preamble
//!
//! ```text
//!  0      4        5      6        7
//! +------+--------+------+--------+----------+
//! | SWYD | version| mode | suites | reserved |
//! +------+--------+------+--------+----------+
//! ```
//! `version` is [`PREAMBLE_VERSION`]; `mode` is 0 plaintext, 1 Noise, 2 refused (a
//! `Goodbye` packet follows and the connection ends: admission refused the dialer
//! before any cryptography); `suites` is a bit set of the ciphers offered (bit 0
//! ChaChaPoly, bit 1 AES-256-GCM); `reserved` is 0 and ignored. A node that offers
//! AES-256-GCM accelerates it in hardware; when both offer it, it is chosen (it is the
//! faster of the two there), else ChaChaPoly. Both preambles are the Noise prologue
//! (initiator's first), so a suite offer changed on the way fails the handshake.
//! Golden vector: a Noise node offering both suites sends `53 57 59 44 01 01 03 00`.
//!
//! A node with encryption meeting one with `insecure_plaintext` (or the reverse) fails
//! as soon as the preamble arrives, on both sides, with a reason that says which.
//!
//! ### Identity proof
//!
//! 96 bytes: the node's ed25519 public key (32) and its signature (64) over
//! [`PROOF_CONTEXT`] followed by the node's Noise static public key. The receiver
//! checks the signature against the static key the handshake authenticated; the
//! remote's [`NodeId`] is derived from the ed25519 key, and the remote's `Version`
//! must then carry that id.

mod handshake;
mod session;

use serde::{Deserialize, Serialize};

pub use handshake::{LocalIdentity, RemoteIdentity, Role, SecureHandshake, Secured};
pub use session::{Opener, Sealer, Session, MAX_FRAME, MAX_FRAME_PLAINTEXT, TAG_LEN};

use crate::text::RemoteText;
use crate::NodeId;

/// The preamble's first four bytes.
pub const PREAMBLE_MAGIC: [u8; 4] = *b"SWYD";
/// The preamble's version this code speaks.
pub const PREAMBLE_VERSION: u8 = 1;
/// Length of the preamble.
pub const PREAMBLE_LEN: usize = 8;
/// What an identity proof's signature covers, before the Noise static key.
pub const PROOF_CONTEXT: &[u8] = b"switchyard noise static key v1:";
/// Length of an identity proof.
pub const PROOF_LEN: usize = 96;

/// A cipher for the frames after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Suite {
    /// ChaCha20-Poly1305: fast everywhere, always offered.
    ChaChaPoly,
    /// AES-256-GCM: offered only where the CPU accelerates it (then the faster).
    AesGcm,
}

impl Suite {
    fn bit(self) -> u8 {
        match self {
            Suite::ChaChaPoly => 1,
            Suite::AesGcm => 2,
        }
    }

    /// The Noise name of the cipher.
    #[must_use]
    pub fn noise_name(self) -> &'static str {
        match self {
            Suite::ChaChaPoly => "ChaChaPoly",
            Suite::AesGcm => "AESGCM",
        }
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Suite::ChaChaPoly => "ChaCha20-Poly1305",
            Suite::AesGcm => "AES-256-GCM",
        })
    }
}

/// The set of suites a node offers (ChaChaPoly is always in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suites(u8);

impl Suites {
    /// ChaChaPoly only.
    pub const CHACHA_ONLY: Suites = Suites(1);
    /// ChaChaPoly and AES-256-GCM.
    pub const BOTH: Suites = Suites(3);

    /// The offer of a node whose CPU does (or does not) accelerate AES-GCM.
    #[must_use]
    pub fn with_aes(accelerated: bool) -> Suites {
        if accelerated {
            Suites::BOTH
        } else {
            Suites::CHACHA_ONLY
        }
    }

    /// Whether `suite` is offered.
    #[must_use]
    pub fn contains(self, suite: Suite) -> bool {
        self.0 & suite.bit() != 0
    }

    /// The suite two offers agree on: AES-256-GCM when both offer it, else ChaChaPoly
    /// when both offer it.
    #[must_use]
    pub fn choose(self, theirs: Suites) -> Option<Suite> {
        [Suite::AesGcm, Suite::ChaChaPoly]
            .into_iter()
            .find(|s| self.contains(*s) && theirs.contains(*s))
    }
}

/// Whether a node encrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `insecure_plaintext`: packets travel as they are, ids are claimed.
    Plaintext,
    /// Noise `XX` with identity proofs.
    Noise,
    /// Admission refused the connection: a `Goodbye` packet follows.
    Refused,
}

/// The first eight bytes each side sends (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    /// What the sender does next.
    pub mode: Mode,
    /// The suites it offers.
    pub suites: Suites,
}

impl Preamble {
    /// The wire form.
    #[must_use]
    pub fn encode(&self) -> [u8; PREAMBLE_LEN] {
        let mode = match self.mode {
            Mode::Plaintext => 0,
            Mode::Noise => 1,
            Mode::Refused => 2,
        };
        let [a, b, c, d] = PREAMBLE_MAGIC;
        [a, b, c, d, PREAMBLE_VERSION, mode, self.suites.0, 0]
    }

    /// Parses a preamble.
    pub fn decode(bytes: &[u8; PREAMBLE_LEN]) -> Result<Preamble, SecureError> {
        if bytes[..4] != PREAMBLE_MAGIC {
            return Err(SecureError::NotSwitchyard);
        }
        if bytes[4] != PREAMBLE_VERSION {
            return Err(SecureError::PreambleVersion {
                ours: PREAMBLE_VERSION,
                theirs: bytes[4],
            });
        }
        let mode = match bytes[5] {
            0 => Mode::Plaintext,
            1 => Mode::Noise,
            2 => Mode::Refused,
            other => return Err(SecureError::BadPreamble(format!("mode {other}"))),
        };
        Ok(Preamble {
            mode,
            suites: Suites(bytes[6] & 3),
        })
    }
}

/// Why the secure transport failed. Every variant says what was wrong; none holds
/// text of the remote's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum SecureError {
    /// The first bytes are not a Switchyard preamble.
    #[error("the remote does not speak Switchyard (no preamble)")]
    NotSwitchyard,
    /// The remote's preamble is of another version.
    #[error("transport preamble version: ours {ours}, theirs {theirs}")]
    PreambleVersion {
        /// Ours.
        ours: u8,
        /// Theirs.
        theirs: u8,
    },
    /// A preamble field is out of range.
    #[error("bad transport preamble: {}", RemoteText::new(.0))]
    BadPreamble(String),
    /// We encrypt and the remote runs with `insecure_plaintext`.
    #[error("the remote runs without encryption (insecure_plaintext) and this node requires it")]
    PlaintextRemote,
    /// We run with `insecure_plaintext` and the remote encrypts.
    #[error("the remote requires encryption and this node runs with insecure_plaintext")]
    EncryptedRemote,
    /// The suite offers have nothing in common.
    #[error("no cipher suite in common")]
    NoCommonSuite,
    /// A handshake message is larger than any handshake message can be.
    #[error("Noise handshake message of {0} bytes")]
    HandshakeTooLarge(usize),
    /// The Noise handshake failed (a message did not authenticate: a wrong key, a
    /// tampered message or preamble).
    #[error("Noise handshake failed: {}", RemoteText::new(.0))]
    Noise(String),
    /// The identity proof is malformed or its signature does not verify.
    #[error("bad identity proof: {}", RemoteText::new(.0))]
    BadIdentityProof(String),
    /// A frame is shorter than its tag.
    #[error("encrypted frame of {0} bytes, shorter than its tag")]
    ShortFrame(usize),
    /// A frame did not decrypt: the stream was changed on the way or is corrupt.
    #[error("decryption failed: an encrypted frame was tampered with or corrupted")]
    Decrypt,
    /// The connection ended inside an encrypted frame.
    #[error("connection closed inside an encrypted frame")]
    TruncatedFrame,
    /// 2^64 − 1 frames went one way (the connection must be rekeyed; it is closed).
    #[error("frame counter exhausted")]
    NonceExhausted,
}

impl SecureError {
    /// Whether the remote broke the protocol (as opposed to a mismatch, a tampering
    /// network or a wrong key).
    ///
    /// Only what the remote alone can have sent counts: an identity proof travels
    /// encrypted and authenticated inside the Noise handshake. The length of a
    /// handshake message or of a frame is not authenticated, so a network that
    /// rewrites one causes [`HandshakeTooLarge`](SecureError::HandshakeTooLarge) or
    /// [`ShortFrame`](SecureError::ShortFrame) as easily as it causes
    /// [`Decrypt`](SecureError::Decrypt); counting them would let whoever sits on the
    /// path get an honest peer banned.
    #[must_use]
    pub fn is_misbehavior(&self) -> bool {
        matches!(self, SecureError::BadIdentityProof(_))
    }
}

/// The id a proven ed25519 public key stands for.
#[must_use]
pub fn node_id_of(public_key: &[u8; 32]) -> NodeId {
    NodeId::from_public_key(public_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_golden_vector_and_round_trip() {
        let p = Preamble {
            mode: Mode::Noise,
            suites: Suites::BOTH,
        };
        assert_eq!(p.encode(), [0x53, 0x57, 0x59, 0x44, 1, 1, 3, 0]);
        assert_eq!(Preamble::decode(&p.encode()), Ok(p));
        let plain = Preamble {
            mode: Mode::Plaintext,
            suites: Suites::CHACHA_ONLY,
        };
        assert_eq!(plain.encode(), [0x53, 0x57, 0x59, 0x44, 1, 0, 1, 0]);
        assert_eq!(
            Preamble::decode(b"GET / HT"),
            Err(SecureError::NotSwitchyard)
        );
        assert!(matches!(
            Preamble::decode(&[0x53, 0x57, 0x59, 0x44, 9, 1, 3, 0]),
            Err(SecureError::PreambleVersion { theirs: 9, .. })
        ));
        assert!(matches!(
            Preamble::decode(&[0x53, 0x57, 0x59, 0x44, 1, 7, 3, 0]),
            Err(SecureError::BadPreamble(_))
        ));
    }

    #[test]
    fn only_what_the_remote_alone_can_send_is_misbehaviour() {
        assert!(SecureError::BadIdentityProof("x".into()).is_misbehavior());
        for network_can_cause in [
            SecureError::HandshakeTooLarge(60_000),
            SecureError::ShortFrame(5),
            SecureError::Decrypt,
            SecureError::Noise("decrypt error".into()),
            SecureError::TruncatedFrame,
        ] {
            assert!(!network_can_cause.is_misbehavior(), "{network_can_cause:?}");
        }
    }

    #[test]
    fn suites_prefer_aes_only_when_both_offer_it() {
        assert_eq!(Suites::BOTH.choose(Suites::BOTH), Some(Suite::AesGcm));
        assert_eq!(
            Suites::BOTH.choose(Suites::CHACHA_ONLY),
            Some(Suite::ChaChaPoly)
        );
        assert_eq!(Suites::BOTH.choose(Suites(0)), None);
        assert_eq!(Suites::BOTH.choose(Suites(2)), Some(Suite::AesGcm));
        assert_eq!(Suites::CHACHA_ONLY.choose(Suites(2)), None);
    }
}
