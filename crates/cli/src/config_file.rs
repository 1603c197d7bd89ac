//! The node's TOML config file: the commented default that `keygen` writes, and
//! loading with errors that name the file and the field.

use std::path::Path;

use switchyard::NodeConfig;

/// The default config file, every field commented. Kept in sync with
/// `NodeConfig::default()` by a test.
pub const DEFAULT_CONFIG: &str = r#"# Switchyard node configuration (TOML).
# Every field is optional; the values below are the defaults.

# Name of the network. Nodes of other networks are refused at the handshake.
network = "switchyard-local"

# Address to listen on. Port 0 picks a free port. Remove the line to not listen.
listen = "127.0.0.1:26656"

# Address other nodes should dial to reach this one (announced in the handshake).
# Default: the bound listen address.
# external_addr = "203.0.113.7:26656"

# Peers dialed at start and redialed with backoff after every disconnect.
# Written ID@HOST:PORT (or HOST:PORT when the id is not known).
persistent_peers = []

# Peers dialed once at start.
peers = []

# Node ids (hex) exempt from max_inbound and max_outbound, like persistent peers
# but not dialed; checked once the handshake names the remote.
unconditional_peers = []

# Node ids (hex) kept private: with discovery on (`--seeds`, `--discovery`,
# `--seed-mode`) their addresses are never stored in the peer store nor shared
# with other peers, even when they connect or are persistent peers (a validator
# behind sentries, say). `--private-peer-ids` on the command line adds more.
private_peer_ids = []

# With discovery on: most outbound peers in one group of public addresses (IPv4
# /16, IPv6 /32), so an attacker in a few groups cannot take most outbound slots.
# Loopback and private addresses are not capped. A network of public addresses
# in fewer groups than limits.max_outbound should set it to limits.max_outbound.
outbound_per_group = 1

# Free text sent in the handshake.
user_agent = "switchyard/0.1.0"

# Threads (actix arbiters) that run peer connections; 0 = one per CPU core.
arbiters = 0

# Run connections without encryption or authentication (node ids claimed, not
# proven). Only for benchmarks and trusted networks; both ends must agree.
# Default: Noise XX, each node proving its ed25519 identity.
insecure_plaintext = false

# Offer AES-256-GCM besides ChaCha20-Poly1305; unset = when this CPU accelerates AES.
# offer_aes_gcm = true

# Seed for the node's randomness (nonces, backoff jitter); unset = from the OS.
# seed = 42

# Address to serve Prometheus metrics on (GET /metrics); unset = no metrics.
# metrics_addr = "127.0.0.1:9100"

[limits]
# Largest payload of one packet (one chunk of a message), in bytes. Bigger messages
# are cut into chunks; this bounds how long urgent data waits behind bulk data.
max_packet_payload = 65536
# Default largest message on a channel, in bytes.
max_message_size = 4194304
# Default send queue of a channel: messages, and bytes.
send_queue_messages = 1024
send_queue_bytes = 4194304
# Most messages handed to a service in one ReceivedBatch (batched channels).
recv_capacity = 256
# Bytes gathered into one socket write (writes also happen whenever queues run dry).
write_batch_bytes = 262144
# Memory for the partial (not yet complete) messages of one connection, all
# channels together; it must hold one message of the largest size on every
# channel at once (the sum of the channels' max_message_size, plus 64 KiB).
max_reassembly_bytes = 16777216
# Freed buffers of large received messages the node keeps for the next ones, all
# connections together (bulk channels then reuse memory); 0 = none.
recycle_bytes = 8388608
# Flow control, per channel: how many bytes a peer may send on a channel before
# the service has taken them. Windows start at recv_window (at least one full
# packet), grow while the service keeps up and the link is fast, up to
# max_recv_window, and shrink back after recv_window_idle without traffic.
recv_window = 262144
max_recv_window = 8388608
recv_window_idle = "5s"
# Window growth beyond recv_window that all connections of the node may hold
# together, in bytes (this also bounds what peers parking unfinished large
# messages can hold).
recv_budget = 67108864
# TCP_NOTSENT_LOWAT of peer sockets: the most bytes waiting unsent in the kernel,
# so that the scheduler, not the kernel, decides what goes next. 0 = OS default.
notsent_lowat = 131072
# SO_SNDBUF/SO_RCVBUF of peer sockets in bytes; unset = the OS's autotuning.
# Smaller buffers keep more of what waits in user space, where priorities apply,
# at some cost in throughput on long, fast links.
# socket_buffer = 65536
# Time allowed for the Version/Verack handshake.
handshake_timeout = "10s"
# Interval between pings (at least 100ms: peers close a faster pinger).
ping_interval = "15s"
# Time a ping may go unanswered; must be below ping_interval.
pong_timeout = "10s"
# Time without receiving anything before the peer is closed; above pong_timeout.
idle_timeout = "1m"
# Time a request may wait for its response, from when it was written.
stall_timeout = "30s"
# Most established inbound peers and outbound connections (persistent and
# unconditional peers are exempt), and inbound connections from one IP address
# and from one subnet (IPv4 /subnet_prefix_v4, IPv6 /subnet_prefix_v6).
max_inbound = 40
max_outbound = 10
max_per_ip = 8
max_per_subnet = 16
subnet_prefix_v4 = 24
subnet_prefix_v6 = 48
# When inbound is full, a new peer may evict the least valuable inbound peer:
# one peer from each of evict_protect_netgroups subnets, the evict_protect_rtt
# fastest, and half of the rest by connection time are protected; persistent,
# unconditional and outbound peers never are. Off: the new peer is refused.
evict_inbound = true
evict_protect_netgroups = 4
evict_protect_rtt = 8
# Inbound handshakes in progress: a bound of their own, so half-open connections
# cannot take the slots of established peers.
max_handshakes = 32
# New inbound handshakes per second from one IP address, and from one subnet.
handshake_rate_per_ip = 10
handshake_rate_per_subnet = 40
# Whether the per-IP rules (limits, rates, IP bans) apply to loopback addresses.
limit_loopback = true
# Misbehaviour points at which a peer's id and IP are banned for ban_duration
# (a protocol violation counts 50).
ban_threshold = 100
# Most refused connections told why at once; beyond it they are closed at once.
max_refusing = 64
# Bytes per second a peer may send us / we send one peer. Unset = unlimited.
# recv_rate = 10485760
# send_rate = 10485760
# How long a banned address stays banned.
ban_duration = "1h"
# How long a closing connection may spend writing what is still queued.
linger = "5s"
# Delays between redials of a persistent peer (exponential, with jitter).
redial_backoff_min = "250ms"
redial_backoff_max = "30s"
"#;

/// Reads and validates a config file. The error names the file and the field.
pub fn load(path: &Path) -> Result<NodeConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses and validates config text.
pub fn parse(text: &str) -> Result<NodeConfig, String> {
    let config: NodeConfig =
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_the_default_config() {
        let parsed: NodeConfig = toml::from_str(DEFAULT_CONFIG).unwrap();
        let expected = NodeConfig {
            user_agent: "switchyard/0.1.0".into(),
            ..NodeConfig::default()
        };
        assert_eq!(parsed, expected);
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(
            "insecure_plaintext = true\n[limits]\nping_interval = \"1s\"\npong_timeout = \"2s\"\n",
        )
        .unwrap_err();
        assert!(e.contains("limits.pong_timeout"), "{e}");
        let e = parse("insecure_plaintext = true\n[limits]\nmax_inbound = \"many\"\n").unwrap_err();
        assert!(e.contains("max_inbound"), "{e}");
        let e = parse("insecure_plaintext = true\nlisten = \"not an address\"\n").unwrap_err();
        assert!(e.contains("listen"), "{e}");
        let e = parse("insecure_plaintext = true\nbogus = 1\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e =
            parse("insecure_plaintext = true\npersistent_peers = [\"nonsense\"]\n").unwrap_err();
        assert!(e.contains("nonsense"), "{e}");
        assert!(parse("insecure_plaintext = true\n").is_ok());
        let e = parse("insecure_plaintext = true\nunconditional_peers = [\"zz\"]\n").unwrap_err();
        assert!(e.contains("unconditional_peers"), "{e}");
        let id = "ab".repeat(20);
        let c = parse(&format!(
            "insecure_plaintext = true\nunconditional_peers = [\"{id}\"]\n"
        ))
        .unwrap();
        assert_eq!(c.unconditional_peers[0].to_string(), id);
        let e = parse("insecure_plaintext = true\nprivate_peer_ids = [\"nothex\"]\n").unwrap_err();
        assert!(
            e.contains("private_peer_ids") && e.contains("nothex"),
            "{e}"
        );
        let c = parse(&format!(
            "insecure_plaintext = true\nprivate_peer_ids = [\"{id}\"]\n"
        ))
        .unwrap();
        assert_eq!(c.private_peer_ids[0].to_string(), id);
        let e = parse("insecure_plaintext = true\n[limits]\nmax_handshakes = 0\n").unwrap_err();
        assert!(e.contains("limits.max_handshakes"), "{e}");
    }
}
