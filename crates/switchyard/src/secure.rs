//! The secure transport on a socket: runs the protocol's
//! `SecureHandshake` (`switchyard_proto::secure`) over a fresh
//! connection, within the connection's handshake deadline, and hands back who the
//! remote proved to be and the session that encrypts the rest of the stream.
//!
//! A node's [`Transport`] is made once, at start: its ed25519 identity signs a fresh
//! Noise static key, so a handshake costs the Diffie-Hellman operations and one
//! signature check, never a signature. Light clients (such as `switchyard status`)
//! use [`Transport`] and [`handshake`] the same way the node does.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use rand::RngCore;
use switchyard_proto::connection::handshake::HandshakeError;
use switchyard_proto::secure::{LocalIdentity, Mode, Role, SecureHandshake, Secured, Suites};
use switchyard_proto::DisconnectReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::identity::NodeKey;

/// How a node secures its connections: its proven identity, encryption on or off,
/// and the cipher suites it offers.
#[derive(Debug, Clone)]
pub struct Transport {
    identity: Arc<LocalIdentity>,
    mode: Mode,
    suites: Suites,
}

impl Transport {
    /// The transport of the node with `key`: Noise unless `plaintext`; AES-256-GCM
    /// offered when `aes_gcm` says so, or (`None`) when this CPU accelerates it.
    #[must_use]
    pub fn new(key: &NodeKey, plaintext: bool, aes_gcm: Option<bool>) -> Transport {
        let mut static_secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut static_secret);
        Transport {
            identity: Arc::new(LocalIdentity::new(&key.secret_bytes(), static_secret)),
            mode: if plaintext {
                Mode::Plaintext
            } else {
                Mode::Noise
            },
            suites: Suites::with_aes(aes_gcm.unwrap_or_else(aes_accelerated)),
        }
    }

    /// Whether connections are encrypted.
    #[must_use]
    pub fn encrypted(&self) -> bool {
        self.mode == Mode::Noise
    }

    /// A handshake for one new connection.
    #[must_use]
    pub fn start(&self, role: Role) -> SecureHandshake {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        SecureHandshake::new(role, self.mode, self.suites, self.identity.clone(), seed)
    }
}

/// Whether this CPU has the instructions that make AES-GCM fast (AES-NI and
/// carry-less multiply on x86-64, the AES and PMULL extensions on AArch64).
#[must_use]
pub fn aes_accelerated() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Runs `hs` over `stream` until it is done, fails, or `deadline` passes. Returns
/// the outcome and the bytes read past the handshake (the start of the stream after
/// it: ciphertext when encrypted).
pub async fn handshake(
    stream: &mut TcpStream,
    mut hs: SecureHandshake,
    deadline: Instant,
) -> Result<(Secured, BytesMut), DisconnectReason> {
    let run = async {
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            while let Some(bytes) = hs.poll_transmit() {
                stream
                    .write_all(&bytes)
                    .await
                    .map_err(|e| DisconnectReason::Io(e.to_string()))?;
            }
            if let Some(done) = hs.poll_done() {
                return Ok((done, buf));
            }
            let n = stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| DisconnectReason::Io(e.to_string()))?;
            if n == 0 {
                return Err(DisconnectReason::ConnectionClosed);
            }
            // Each step consumes what it can: the buffer holds at most one partial
            // handshake message (bounded by the handshake) plus one read.
            hs.handle_read(&mut buf)?;
        }
    };
    match tokio::time::timeout_at(deadline.into(), run).await {
        Ok(result) => result,
        Err(_) => Err(DisconnectReason::Handshake(HandshakeError::Timeout)),
    }
}
