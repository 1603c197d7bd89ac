//! [`NodeId`]: who a node is, derived from its ed25519 public key.
//!
//! A node id is the first 20 bytes of SHA-256 of the node's ed25519 public key, written
//! as 40 lowercase hex digits. Addresses are written `ID@HOST:PORT`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Length of a node id in bytes.
pub const NODE_ID_LEN: usize = 20;

/// A node's identity: 20 bytes of SHA-256 over its ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub [u8; NODE_ID_LEN]);

impl NodeId {
    /// The id of the node whose ed25519 public key is `public_key`.
    #[must_use]
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        let digest = Sha256::digest(public_key);
        let mut id = [0u8; NODE_ID_LEN];
        id.copy_from_slice(&digest[..NODE_ID_LEN]);
        NodeId(id)
    }

    /// The first 8 hex digits, for compact logs.
    #[must_use]
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

/// A string that is not 40 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a node id is 40 hex digits, got {0:?}")]
pub struct ParseNodeIdError(pub String);

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut id = [0u8; NODE_ID_LEN];
        hex::decode_to_slice(s, &mut id).map_err(|_| ParseNodeIdError(s.to_owned()))?;
        Ok(NodeId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_sha256_prefix_in_hex() {
        // SHA-256 of 32 zero bytes starts with 66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925.
        let id = NodeId::from_public_key(&[0u8; 32]);
        assert_eq!(id.to_string(), "66687aadf862bd776c8fc18b8e9f8e2008971485");
        let back: NodeId = id.to_string().parse().unwrap();
        assert_eq!(back, id);
        assert_eq!(id.short(), "66687aad");
        assert!("xyz".parse::<NodeId>().is_err());
        assert!("66687aadf862bd776c8fc18b8e9f8e200897148"
            .parse::<NodeId>()
            .is_err());
    }
}
