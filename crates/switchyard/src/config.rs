//! [`NodeConfig`]: everything a node needs to start, with defaults for every field.
//!
//! Budgets and timeouts of connections live in [`Limits`]
//! (the `[limits]` table of a TOML file); this struct adds what belongs to the node:
//! its network name, where it listens, whom it keeps connected, and its threads.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use switchyard_proto::{ConfigError, NodeId};

use crate::addr::PeerAddr;

/// Budgets and timeouts of every connection of a node (the `[limits]` table of a
/// TOML file): the protocol core's [`Config`](switchyard_proto::Config), under the one
/// name this crate uses for it. Every field has a default.
pub type Limits = switchyard_proto::Config;

/// Configuration of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Name of the network; nodes of other networks are refused at the handshake.
    /// Default `"switchyard-local"`.
    pub network: String,
    /// Address to listen on (port 0 picks a free port); `None` does not listen.
    /// Default `127.0.0.1:26656`.
    pub listen: Option<SocketAddr>,
    /// Address other nodes should dial to reach us, announced in the handshake.
    /// Default: the bound listen address.
    pub external_addr: Option<String>,
    /// Peers dialed at start and redialed after every disconnect, with backoff.
    pub persistent_peers: Vec<PeerAddr>,
    /// Peers dialed once at start.
    pub peers: Vec<PeerAddr>,
    /// Node ids exempt from the inbound and outbound limits (like persistent peers,
    /// but not dialed): checked once the handshake names the remote, so such a peer
    /// gets in even when the inbound slots are full.
    #[serde(with = "node_ids")]
    pub unconditional_peers: Vec<NodeId>,
    /// Node ids kept private: peer discovery (`switchyard_pex`) never stores their
    /// addresses nor shares them with other peers (a validator behind sentries, say).
    /// The Switch itself connects to them like to any peer.
    #[serde(with = "node_ids")]
    pub private_peer_ids: Vec<NodeId>,
    /// Peer discovery (`switchyard_pex`) keeps at most this many outbound peers in one
    /// group of public addresses (IPv4 /16, IPv6 /32), so that an attacker holding a
    /// few groups cannot take most of a node's outbound slots. Default 1, as Bitcoin
    /// Core. A network of public addresses in fewer groups than `limits.max_outbound`
    /// (a cluster in one provider's /16) should raise it to `limits.max_outbound`.
    /// Loopback and private addresses are never capped.
    pub outbound_per_group: usize,
    /// Free text sent in the handshake. Default `"switchyard/<version>"`.
    pub user_agent: String,
    /// Arbiter threads that run peers; 0 means one per CPU core. Default 0.
    pub arbiters: usize,
    /// Run connections without encryption or authentication (node ids are then
    /// claimed, not proven). Only for benchmarks and tests on trusted networks; both
    /// ends must agree: a plaintext node and an encrypted one fail to connect at once,
    /// each saying why. Default `false`: Noise `XX` with identity proofs.
    pub insecure_plaintext: bool,
    /// Offer AES-256-GCM besides ChaCha20-Poly1305: `None` (the default) offers it
    /// when this CPU accelerates AES; it is used when both ends offer it.
    pub offer_aes_gcm: Option<bool>,
    /// Seed for the node's randomness (nonces, backoff jitter); `None` draws from the OS.
    pub seed: Option<u64>,
    /// Where to serve Prometheus metrics (`GET /metrics`, see the README); `None`
    /// serves none. Default `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// Connection budgets and timeouts.
    pub limits: Limits,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            network: "switchyard-local".into(),
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 26656))),
            external_addr: None,
            persistent_peers: Vec::new(),
            peers: Vec::new(),
            unconditional_peers: Vec::new(),
            private_peer_ids: Vec::new(),
            outbound_per_group: 1,
            user_agent: format!("switchyard/{}", env!("CARGO_PKG_VERSION")),
            arbiters: 0,
            insecure_plaintext: false,
            offer_aes_gcm: None,
            seed: None,
            metrics_addr: None,
            limits: Limits::default(),
        }
    }
}

impl NodeConfig {
    /// A config for tests and local testnets: listens on `127.0.0.1:0`, encrypted like
    /// every default, and the per-IP rules do not apply to loopback
    /// (`limits.limit_loopback` false: every node of a local testnet connects from
    /// 127.0.0.1).
    #[must_use]
    pub fn local() -> Self {
        NodeConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            limits: Limits {
                limit_loopback: false,
                ..Limits::default()
            },
            ..NodeConfig::default()
        }
    }

    /// Checks every field; the error names the offending one (limits fields are
    /// prefixed `limits.`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.network.is_empty() || self.network.len() > 64 {
            return Err(ConfigError {
                field: "network",
                problem: "must be 1 to 64 bytes".into(),
            });
        }
        if self.user_agent.len() > 256 {
            return Err(ConfigError {
                field: "user_agent",
                problem: "must be at most 256 bytes".into(),
            });
        }
        if self.outbound_per_group == 0 {
            return Err(ConfigError {
                field: "outbound_per_group",
                problem: "must be at least 1".into(),
            });
        }
        if self.arbiters > MAX_ARBITERS {
            return Err(ConfigError {
                field: "arbiters",
                problem: format!("must be at most {MAX_ARBITERS} (0 means one per core)"),
            });
        }
        self.limits.validate().map_err(|e| ConfigError {
            field: limits_field(e.field),
            problem: e.problem,
        })
    }

    /// Number of arbiter threads this config asks for.
    #[must_use]
    pub fn arbiter_count(&self) -> usize {
        if self.arbiters == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.arbiters
        }
    }
}

/// Most arbiter threads a config may ask for.
pub const MAX_ARBITERS: usize = 1024;

/// `limits.<field>` as a static string, for error messages.
fn limits_field(field: &'static str) -> &'static str {
    const FIELDS: &[(&str, &str)] = &[
        ("max_packet_payload", "limits.max_packet_payload"),
        ("max_message_size", "limits.max_message_size"),
        ("send_queue_messages", "limits.send_queue_messages"),
        ("send_queue_bytes", "limits.send_queue_bytes"),
        ("recv_capacity", "limits.recv_capacity"),
        ("recv_window", "limits.recv_window"),
        ("max_recv_window", "limits.max_recv_window"),
        ("recv_budget", "limits.recv_budget"),
        ("recv_window_idle", "limits.recv_window_idle"),
        ("notsent_lowat", "limits.notsent_lowat"),
        ("write_batch_bytes", "limits.write_batch_bytes"),
        ("max_reassembly_bytes", "limits.max_reassembly_bytes"),
        ("socket_buffer", "limits.socket_buffer"),
        ("handshake_timeout", "limits.handshake_timeout"),
        ("ping_interval", "limits.ping_interval"),
        ("pong_timeout", "limits.pong_timeout"),
        ("idle_timeout", "limits.idle_timeout"),
        ("stall_timeout", "limits.stall_timeout"),
        ("max_inbound", "limits.max_inbound"),
        ("evict_inbound", "limits.evict_inbound"),
        ("evict_protect_netgroups", "limits.evict_protect_netgroups"),
        ("evict_protect_rtt", "limits.evict_protect_rtt"),
        ("max_outbound", "limits.max_outbound"),
        ("max_per_ip", "limits.max_per_ip"),
        ("max_per_subnet", "limits.max_per_subnet"),
        ("subnet_prefix_v4", "limits.subnet_prefix_v4"),
        ("subnet_prefix_v6", "limits.subnet_prefix_v6"),
        ("max_handshakes", "limits.max_handshakes"),
        ("handshake_rate_per_ip", "limits.handshake_rate_per_ip"),
        (
            "handshake_rate_per_subnet",
            "limits.handshake_rate_per_subnet",
        ),
        ("limit_loopback", "limits.limit_loopback"),
        ("ban_threshold", "limits.ban_threshold"),
        ("max_refusing", "limits.max_refusing"),
        ("recv_rate", "limits.recv_rate"),
        ("send_rate", "limits.send_rate"),
        ("ban_duration", "limits.ban_duration"),
        ("linger", "limits.linger"),
        ("redial_backoff_min", "limits.redial_backoff_min"),
        ("redial_backoff_max", "limits.redial_backoff_max"),
    ];
    FIELDS
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(field, |(_, full)| full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_per_group_must_allow_one() {
        let mut c = NodeConfig::local();
        c.outbound_per_group = 0;
        assert_eq!(c.validate().unwrap_err().field, "outbound_per_group");
    }

    #[test]
    fn local_and_default_configs_are_valid_and_encrypted() {
        NodeConfig::local().validate().unwrap();
        NodeConfig::default().validate().unwrap();
        assert!(!NodeConfig::local().insecure_plaintext);
        assert!(!NodeConfig::default().insecure_plaintext);
        let mut c = NodeConfig::local();
        c.limits.pong_timeout = c.limits.ping_interval;
        assert_eq!(c.validate().unwrap_err().field, "limits.pong_timeout");
    }
}

/// `unconditional_peers` and `private_peer_ids` as hex strings in the config file.
mod node_ids {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use switchyard_proto::NodeId;

    pub fn serialize<S: Serializer>(ids: &[NodeId], s: S) -> Result<S::Ok, S::Error> {
        ids.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NodeId>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}
