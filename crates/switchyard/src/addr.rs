//! Peer addresses: `ID@HOST:PORT`, or plain `HOST:PORT` when the id is not known yet.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use switchyard_proto::NodeId;

/// Where a peer is, and (when known) who it must be.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PeerAddr {
    /// The node id the remote must prove; `None` accepts whoever answers.
    pub id: Option<NodeId>,
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// A string that is not `ID@HOST:PORT` or `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad peer address {input:?}: {problem} (expected ID@HOST:PORT or HOST:PORT)")]
pub struct ParseAddrError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl PeerAddr {
    /// The address of a node listening at `addr` with id `id`.
    #[must_use]
    pub fn new(id: Option<NodeId>, addr: SocketAddr) -> Self {
        PeerAddr {
            id,
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    /// `HOST:PORT`, the part a socket connects to.
    #[must_use]
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{id}@{}", self.host_port()),
            None => f.write_str(&self.host_port()),
        }
    }
}

impl FromStr for PeerAddr {
    type Err = ParseAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |problem| ParseAddrError {
            input: s.to_owned(),
            problem,
        };
        let (id, rest) = match s.split_once('@') {
            Some((id, rest)) => (
                Some(
                    id.parse::<NodeId>()
                        .map_err(|_| err("the id is not 40 hex digits"))?,
                ),
                rest,
            ),
            None => (None, s),
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| err("missing :PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| err("the port is not a number from 0 to 65535"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err("missing host"));
        }
        Ok(PeerAddr {
            id,
            host: host.to_owned(),
            port,
        })
    }
}

impl TryFrom<String> for PeerAddr {
    type Error = ParseAddrError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PeerAddr> for String {
    fn from(a: PeerAddr) -> String {
        a.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        let id = "66687aadf862bd776c8fc18b8e9f8e2008971485";
        let a: PeerAddr = format!("{id}@127.0.0.1:26656").parse().unwrap();
        assert_eq!(a.id.unwrap().to_string(), id);
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 26656));
        assert_eq!(a.to_string(), format!("{id}@127.0.0.1:26656"));
        let b: PeerAddr = "[::1]:9".parse().unwrap();
        assert_eq!(
            (b.id, b.host.as_str(), b.to_string()),
            (None, "::1", "[::1]:9".to_string())
        );
        assert!("abc@1.2.3.4:5".parse::<PeerAddr>().is_err());
        assert!("1.2.3.4".parse::<PeerAddr>().is_err());
        assert!("1.2.3.4:99999".parse::<PeerAddr>().is_err());
        assert!(":5".parse::<PeerAddr>().is_err());
    }
}
