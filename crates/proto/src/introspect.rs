//! [`Introspection`]: what a node tells about itself — its services, its peers and
//! their per-channel counters — locally (the Switch's `Introspect`) and to a remote
//! over channel 0 (`IntrospectRequest` / `IntrospectResponse`, see
//! [`wire::control`](crate::wire::control)).
//!
//! The same struct serves both, so `switchyard status --json` and a local
//! `Introspect` print the same fields. Durations are whole milliseconds (round-trip
//! times microseconds), node ids 40 hex digits: the JSON stays plain.
//!
//! A remote's introspection is hostile input like any other: [`Introspection::validate`]
//! bounds every list and string before the CLI prints a byte of it, and
//! [`Introspection::encode_bounded`] keeps our answer under
//! [`MAX_CONTROL_MESSAGE`](crate::wire::control::MAX_CONTROL_MESSAGE) by cutting the
//! peer list (and saying so in `truncated`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::admission::Direction;
use crate::connection::services::MAX_SERVICES;
use crate::wire::control::{self, valid_service_name, Control, MAX_SERVICE_CHANNELS};

/// Most peers an introspection lists (`peers_total` counts them all).
pub const MAX_INTROSPECT_PEERS: usize = 256;
/// Longest free text (user agent, network, address) in an introspection, in bytes.
pub const MAX_INTROSPECT_TEXT: usize = 256;
/// Most channels one peer's entry lists (every user channel).
pub const MAX_PEER_CHANNELS: usize = 255;

/// What a node tells about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Introspection {
    /// Its node id (40 hex digits).
    pub node_id: String,
    /// Its user agent.
    pub user_agent: String,
    /// Its network name.
    pub network: String,
    /// Where it listens (or what it announces), if anywhere.
    pub listen_addr: Option<String>,
    /// Milliseconds since the node started.
    pub uptime_ms: u64,
    /// The services it runs.
    pub services: Vec<ServiceReport>,
    /// Its admitted peers: the first [`MAX_INTROSPECT_PEERS`] (fewer when an answer
    /// over channel 0 had to be cut to fit).
    pub peers: Vec<PeerReport>,
    /// How many peers it has in all.
    pub peers_total: u32,
    /// The peer list (or the service list) was cut to fit a bound.
    pub truncated: bool,
}

/// One service a node runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceReport {
    /// Its name.
    pub name: String,
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Its channels, in the service's order.
    pub channels: Vec<ServiceChannel>,
}

/// One channel of a service: id, priority and budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChannel {
    /// The node's id for it.
    pub id: u8,
    /// Its priority.
    pub priority: u16,
    /// Largest message, bytes.
    pub max_message_size: u64,
    /// Send queue bound, messages.
    pub send_queue_messages: u64,
    /// Send queue bound, bytes.
    pub send_queue_bytes: u64,
    /// Initial receive window, bytes.
    pub recv_window: u64,
    /// Largest receive window, bytes.
    pub max_recv_window: u64,
}

/// One admitted peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    /// Its node id (40 hex digits).
    pub node_id: String,
    /// Its address as this node sees it.
    pub remote_addr: String,
    /// Who dialed.
    pub direction: Direction,
    /// Milliseconds since its handshake completed.
    pub connected_ms: u64,
    /// Names of the services up with it.
    pub services: Vec<String>,
    /// Per channel whose service is up with it: counters and flow control.
    pub channels: Vec<ChannelReport>,
    /// Our requests waiting for its response.
    pub requests_in_flight: u32,
    /// Round-trip time of the last answered ping, microseconds.
    pub rtt_us: Option<u64>,
    /// Bytes read from it.
    pub bytes_read: u64,
    /// Bytes written to it.
    pub bytes_written: u64,
}

/// One channel of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChannelReport {
    /// Our id for it.
    pub id: u8,
    /// The peer's id for it.
    pub remote_id: u8,
    /// Messages sent (fully handed to the socket).
    pub sent_messages: u64,
    /// Payload bytes sent.
    pub sent_bytes: u64,
    /// Messages received (complete).
    pub recv_messages: u64,
    /// Payload bytes received (complete messages).
    pub recv_bytes: u64,
    /// Messages waiting in the send queue.
    pub send_queue_messages: u64,
    /// Bytes waiting in the send queue.
    pub send_queue_bytes: u64,
    /// Complete messages waiting for the service.
    pub recv_queue_messages: u64,
    /// Current receive window, bytes.
    pub recv_window: u64,
    /// Credit the peer granted us and we have not used, bytes.
    pub send_credit: u64,
}

/// An introspection that breaks a bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid introspection: {0}")]
pub struct IntrospectionError(pub String);

fn printable(field: &str, s: &str) -> Result<(), IntrospectionError> {
    if s.len() > MAX_INTROSPECT_TEXT || s.chars().any(control::unprintable) {
        return Err(IntrospectionError(format!(
            "{field} is not at most {MAX_INTROSPECT_TEXT} printable bytes"
        )));
    }
    Ok(())
}

/// Makes `s` pass [`printable`]: unprintable characters become `?`, and it is cut
/// to [`MAX_INTROSPECT_TEXT`] bytes at a character boundary.
fn clean(s: &mut String) {
    if s.chars().any(control::unprintable) {
        *s = s
            .chars()
            .map(|c| if control::unprintable(c) { '?' } else { c })
            .collect();
    }
    if s.len() > MAX_INTROSPECT_TEXT {
        let mut end = MAX_INTROSPECT_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn node_id(field: &str, s: &str) -> Result<(), IntrospectionError> {
    if s.len() != 40 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(IntrospectionError(format!("{field} is not 40 hex digits")));
    }
    Ok(())
}

fn service_name(s: &str) -> Result<(), IntrospectionError> {
    if !valid_service_name(s) {
        return Err(IntrospectionError(
            "a service name is not 1 to 64 bytes of A-Z a-z 0-9 . _ - / :".into(),
        ));
    }
    Ok(())
}

impl Introspection {
    /// Checks every bound: at most [`MAX_INTROSPECT_PEERS`] peers (and no more than
    /// `peers_total`), [`MAX_SERVICES`] services of at most 32 channels, 255 channels
    /// and 64 services per peer, node ids of 40 hex digits, service names as on
    /// channel 0, and free text of at most [`MAX_INTROSPECT_TEXT`] bytes without
    /// control or invisible formatting characters (it ends up on a terminal).
    pub fn validate(&self) -> Result<(), IntrospectionError> {
        let bad = |s: String| Err(IntrospectionError(s));
        node_id("node_id", &self.node_id)?;
        printable("user_agent", &self.user_agent)?;
        printable("network", &self.network)?;
        if let Some(a) = &self.listen_addr {
            printable("listen_addr", a)?;
        }
        if self.services.len() > MAX_SERVICES {
            return bad(format!("more than {MAX_SERVICES} services"));
        }
        for s in &self.services {
            service_name(&s.name)?;
            if s.channels.len() > MAX_SERVICE_CHANNELS {
                return bad(format!("service {} has too many channels", s.name));
            }
        }
        if self.peers.len() > MAX_INTROSPECT_PEERS {
            return bad(format!("more than {MAX_INTROSPECT_PEERS} peers"));
        }
        if self.peers.len() as u64 > u64::from(self.peers_total) {
            return bad("more peers listed than peers_total".into());
        }
        for p in &self.peers {
            node_id("a peer's node_id", &p.node_id)?;
            printable("a peer's remote_addr", &p.remote_addr)?;
            if p.services.len() > MAX_SERVICES {
                return bad(format!("a peer with more than {MAX_SERVICES} services"));
            }
            for s in &p.services {
                service_name(s)?;
            }
            if p.channels.len() > MAX_PEER_CHANNELS {
                return bad(format!(
                    "a peer with more than {MAX_PEER_CHANNELS} channels"
                ));
            }
        }
        Ok(())
    }

    /// Encodes `self` as the channel-0 `IntrospectResponse`, within `max` bytes: when
    /// it does not fit, the fewest peers are dropped from the end of the list (and
    /// then the services, if even no peer does not fit) and `truncated` is set.
    /// `max` is capped at [`MAX_CONTROL_MESSAGE`](control::MAX_CONTROL_MESSAGE).
    /// Free text is cleaned first (unprintable characters become `?`, long text is
    /// cut), so that the answer passes [`validate`](Self::validate) on the other side.
    #[must_use]
    pub fn encode_bounded(mut self, max: usize) -> Bytes {
        let max = max.min(control::MAX_CONTROL_MESSAGE);
        clean(&mut self.user_agent);
        clean(&mut self.network);
        if let Some(a) = &mut self.listen_addr {
            clean(a);
        }
        for p in &mut self.peers {
            clean(&mut p.remote_addr);
        }
        if self.peers.len() > MAX_INTROSPECT_PEERS || self.services.len() > MAX_SERVICES {
            self.truncated = true;
            self.peers.truncate(MAX_INTROSPECT_PEERS);
            self.services.truncate(MAX_SERVICES);
        }
        let encode = |i: &Introspection| control::encode(&Control::IntrospectResponse(i.clone()));
        let whole = encode(&self);
        if whole.len() <= max {
            return whole;
        }
        self.truncated = true;
        // The most peers that fit: binary search over the prefix length.
        let all = std::mem::take(&mut self.peers);
        let (mut fits, mut too_many) = (0, all.len());
        while fits + 1 < too_many {
            let mid = (fits + too_many) / 2;
            self.peers = all[..mid].to_vec();
            if encode(&self).len() <= max {
                fits = mid;
            } else {
                too_many = mid;
            }
        }
        self.peers = all[..fits].to_vec();
        let bytes = encode(&self);
        if bytes.len() <= max {
            return bytes;
        }
        self.services.clear();
        encode(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(peers: usize) -> Introspection {
        Introspection {
            node_id: "ab".repeat(20),
            user_agent: "switchyard/test".into(),
            network: "net".into(),
            listen_addr: Some("127.0.0.1:1".into()),
            uptime_ms: 5,
            services: vec![ServiceReport {
                name: "chat".into(),
                major: 1,
                minor: 2,
                channels: vec![ServiceChannel {
                    id: 16,
                    priority: 5,
                    max_message_size: 1,
                    send_queue_messages: 2,
                    send_queue_bytes: 3,
                    recv_window: 4,
                    max_recv_window: 5,
                }],
            }],
            peers: (0..peers)
                .map(|i| PeerReport {
                    node_id: "cd".repeat(20),
                    remote_addr: format!("10.0.0.1:{i}"),
                    direction: Direction::Inbound,
                    connected_ms: 1,
                    services: vec!["chat".into()],
                    channels: (1..=40)
                        .map(|id| ChannelReport {
                            id,
                            remote_id: id,
                            ..ChannelReport::default()
                        })
                        .collect(),
                    requests_in_flight: 0,
                    rtt_us: Some(100),
                    bytes_read: 1,
                    bytes_written: 2,
                })
                .collect(),
            peers_total: u32::try_from(peers).unwrap_or(u32::MAX),
            truncated: false,
        }
    }

    #[test]
    fn a_small_answer_goes_whole() {
        let s = sample(2);
        let bytes = s.clone().encode_bounded(usize::MAX);
        assert_eq!(
            control::decode(&bytes).unwrap(),
            Control::IntrospectResponse(s)
        );
    }

    #[test]
    fn a_large_answer_is_cut_to_fit_and_says_so() {
        let bytes = sample(MAX_INTROSPECT_PEERS).encode_bounded(usize::MAX);
        assert!(bytes.len() <= control::MAX_CONTROL_MESSAGE);
        let Ok(Control::IntrospectResponse(back)) = control::decode(&bytes) else {
            panic!("decodes");
        };
        assert!(back.truncated);
        assert!(!back.peers.is_empty() && back.peers.len() < MAX_INTROSPECT_PEERS);
        assert_eq!(back.peers_total as usize, MAX_INTROSPECT_PEERS);
        // One more peer would not have fitted.
        let mut more = back.clone();
        more.peers = sample(back.peers.len() + 1).peers;
        let longer = control::encode(&Control::IntrospectResponse(more));
        assert!(longer.len() > control::MAX_CONTROL_MESSAGE);
    }

    #[test]
    fn our_own_free_text_is_made_valid_before_it_goes_out() {
        let mut s = sample(1);
        s.user_agent = "nœud\u{202E}".into();
        s.listen_addr = Some("é".repeat(MAX_INTROSPECT_TEXT));
        assert!(s.validate().is_err());
        let Ok(Control::IntrospectResponse(back)) = control::decode(&s.encode_bounded(usize::MAX))
        else {
            panic!("valid");
        };
        assert_eq!(back.user_agent, "nœud?");
        assert!(back
            .listen_addr
            .is_some_and(|a| a.len() <= MAX_INTROSPECT_TEXT));
    }

    #[test]
    fn bounds_are_checked() {
        let mut s = sample(1);
        s.user_agent = "evil\x1b[2J".into();
        assert!(s.validate().is_err());
        let mut s = sample(1);
        s.peers[0].node_id = "nothex".into();
        assert!(s.validate().is_err());
        let mut s = sample(1);
        s.peers_total = 0;
        assert!(s.validate().is_err());
        let mut s = sample(1);
        s.services[0].name = "bad name".into();
        assert!(s.validate().is_err());
        assert!(sample(3).validate().is_ok());
    }
}
