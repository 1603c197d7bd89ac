//! Node identity: an ed25519 key pair, its [`NodeId`], and its file on disk.

use std::path::Path;

use ed25519_dalek::SigningKey;
use switchyard_proto::NodeId;

/// Failure to load or save a node key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The key file does not hold 64 hex digits (a 32-byte ed25519 secret).
    #[error("key file {path}: expected 64 hex digits of an ed25519 secret key")]
    Malformed {
        /// The file.
        path: String,
    },
}

/// A node's ed25519 identity key.
#[derive(Clone)]
pub struct NodeKey {
    signing: SigningKey,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.node_id())
    }
}

impl NodeKey {
    /// A fresh random key from the operating system's generator.
    #[must_use]
    pub fn generate() -> Self {
        NodeKey {
            signing: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// A key made from a 32-byte secret (tests and reproducible testnets).
    #[must_use]
    pub fn from_secret(secret: [u8; 32]) -> Self {
        NodeKey {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    /// The 32-byte secret (for the transport's identity proof; never leaves the node).
    pub(crate) fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The ed25519 public key.
    #[must_use]
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The node id derived from the public key.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.public_key())
    }

    /// Reads a key written by [`NodeKey::save`].
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut secret = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut secret).map_err(|_| KeyError::Malformed {
            path: path.display().to_string(),
        })?;
        Ok(Self::from_secret(secret))
    }

    /// Writes the secret key as hex (readable only by the owner on Unix).
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::write(path, format!("{}\n", hex::encode(self.signing.to_bytes()))).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_keep_the_identity() {
        let dir = std::env::temp_dir().join(format!("switchyard-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node_key");
        let key = NodeKey::generate();
        key.save(&path).unwrap();
        assert_eq!(NodeKey::load(&path).unwrap().node_id(), key.node_id());
        std::fs::write(&path, "nothex").unwrap();
        assert!(matches!(
            NodeKey::load(&path),
            Err(KeyError::Malformed { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
