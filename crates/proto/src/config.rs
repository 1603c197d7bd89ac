//! [`Config`]: every budget and timeout of a connection, with defaults and validation.
//!
//! The same struct is read from the `[limits]` table of a node's TOML file (durations
//! as human strings such as `"10s"` or `"250ms"`). [`Config::validate`] rejects values
//! that contradict each other, naming the field, so a bad file fails at start, not in
//! the middle of a connection.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Largest packet payload the config accepts (the wire allows up to 4 GiB, we do not).
pub const MAX_PACKET_PAYLOAD_LIMIT: usize = 16 << 20;

/// A field of [`Config`] or [`ChannelConfig`] that has a bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for `{field}`: {problem}")]
pub struct ConfigError {
    /// Name of the offending field, as written in the config file.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        ConfigError {
            field,
            problem: problem.into(),
        }
    }
}

/// Budgets and timeouts shared by every connection of a node.
///
/// Every field has a default (see [`Config::default`]); a TOML file may set any subset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Largest payload of one packet (one chunk of a message), in bytes. Messages above
    /// it are cut into chunks, so it also bounds how long a high-priority message waits
    /// behind one chunk of bulk data. Default 64 KiB.
    pub max_packet_payload: usize,
    /// Default largest message on a channel, in bytes (channels may set their own).
    /// Default 4 MiB.
    pub max_message_size: usize,
    /// Most memory, in bytes, that the partial (not yet complete) messages of one
    /// connection may take on all its channels together. It must hold one partial
    /// message of the largest size on every channel at once (the sum of the channels'
    /// `max_message_size`, plus 64 KiB for channel 0), which a node checks at start:
    /// then a peer within its credit never exceeds it. Default 16 MiB.
    pub max_reassembly_bytes: usize,
    /// Most bytes of freed message buffers the node keeps to put the next large
    /// messages together in (see [`recycle`](crate::connection::recycle)): a bulk
    /// channel then reuses memory instead of faulting in fresh pages per message. One
    /// pool for all connections; 0 keeps none. Default 8 MiB.
    pub recycle_bytes: usize,
    /// Default send queue of a channel, in messages. Default 1024.
    pub send_queue_messages: usize,
    /// Default send queue of a channel, in bytes. Default 4 MiB.
    pub send_queue_bytes: usize,
    /// Initial receive window of a channel, in bytes of credit (see
    /// [`flow`](crate::connection::flow)): how much a peer may send on a channel before
    /// the service has taken any of it. Windows start here, grow while the service
    /// keeps up and the link is fast, and shrink back here when idle. It must hold one
    /// full packet (`max_packet_payload` plus 32 bytes of message cost). Default
    /// 256 KiB.
    pub recv_window: usize,
    /// Largest receive window of a channel autotuning may reach (a channel's window
    /// may also grow to its largest message, so that message can arrive). Default
    /// 8 MiB.
    pub max_recv_window: usize,
    /// Node-wide budget, in bytes, for window growth beyond the initial windows, over
    /// all connections together: thousands of peers cannot all hold large windows, and
    /// peers that park unfinished large messages (a window grows to a partial
    /// message's size only by leasing from here) hold at most this much together, on
    /// top of their initial windows. Default 64 MiB.
    pub recv_budget: usize,
    /// Time without data on a channel after which its window shrinks back to
    /// `recv_window` and the growth goes back to `recv_budget`. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub recv_window_idle: Duration,
    /// `TCP_NOTSENT_LOWAT` of peer sockets, in bytes: the most data waiting unsent in
    /// the kernel before a socket stops accepting writes. It keeps bulk data from
    /// queueing in the kernel ahead of an urgent message, so that the scheduler, not
    /// the kernel, decides what goes next. 0 leaves the OS default (no limit).
    /// Default 128 KiB.
    pub notsent_lowat: usize,
    /// Default largest number of messages handed to a service in one `ReceivedBatch`
    /// (batched channels); a read that decodes more is delivered as several batches.
    /// Default 256.
    pub recv_capacity: usize,
    /// Bytes gathered into one socket write before it is flushed (writes also flush
    /// whenever the queues run dry: there is no timed delay). Default 256 KiB.
    pub write_batch_bytes: usize,
    /// `SO_SNDBUF` and `SO_RCVBUF` of peer sockets, in bytes; `None` leaves the OS's
    /// autotuning. Smaller buffers bound how much bulk data waits in the kernel ahead
    /// of an urgent message (latency under load), at some cost in throughput on long,
    /// fast links. Default `None`.
    pub socket_buffer: Option<usize>,
    /// Time allowed for the `Version`/`Verack` exchange. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Interval between pings (at least 100 ms: a remote sending more than 20 pings a
    /// second is closed). Default 15 s.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Time a ping may go unanswered before the peer is closed; must be below
    /// `ping_interval`. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// Time without receiving anything at all (not even a pong) before the peer is
    /// closed; must be above `pong_timeout`. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Time a request may wait for its response, counted from when its last byte was
    /// written. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// Most established inbound peers. Handshakes in progress do not take these slots
    /// (see `max_handshakes`), and persistent and unconditional peers are exempt.
    /// Default 40.
    pub max_inbound: usize,
    /// Whether a new inbound peer whose handshake completed while inbound slots are
    /// full may evict the least valuable established inbound peer instead of being
    /// refused (as Bitcoin Core does). Protected from eviction: one peer from each of
    /// `evict_protect_netgroups` distinct subnets, the `evict_protect_rtt` peers with
    /// the lowest round-trip times, then half of the rest by longest connection time;
    /// persistent, unconditional and outbound peers are never evicted. Of the peers
    /// left, the youngest of the subnet with the most connections is closed with
    /// `DisconnectReason::Evicted`; when none is left the new peer is refused with
    /// `MaxInbound`. Default true.
    pub evict_inbound: bool,
    /// Distinct subnets (see `subnet_prefix_v4`) with one inbound peer each protected
    /// from eviction; which subnets is decided by a keyed hash an attacker cannot
    /// predict. Default 4.
    pub evict_protect_netgroups: usize,
    /// Inbound peers with the lowest round-trip times protected from eviction.
    /// Default 8.
    pub evict_protect_rtt: usize,
    /// Most outbound connections (dialing ones included); persistent and unconditional
    /// peers are exempt. Default 10.
    pub max_outbound: usize,
    /// Most inbound connections from one IP address (loopback included unless
    /// `limit_loopback` is false). Default 8.
    pub max_per_ip: usize,
    /// Most inbound connections from one subnet (see `subnet_prefix_v4` and
    /// `subnet_prefix_v6`). Default 16.
    pub max_per_subnet: usize,
    /// Prefix length of an IPv4 subnet for `max_per_subnet` and the subnet handshake
    /// rate (0..=32). Default 24.
    pub subnet_prefix_v4: u8,
    /// Prefix length of an IPv6 subnet (0..=128). Default 48.
    pub subnet_prefix_v6: u8,
    /// Most inbound connections whose handshake is in progress, a bound of its own:
    /// half-open connections cannot take the slots of established peers. Default 32.
    pub max_handshakes: usize,
    /// New inbound handshakes per second from one IP address (a token bucket with one
    /// second of burst). Default 10.
    pub handshake_rate_per_ip: u32,
    /// New inbound handshakes per second from one subnet. Default 40.
    pub handshake_rate_per_subnet: u32,
    /// Whether the per-IP rules (per-IP and per-subnet limits, handshake rates, IP
    /// bans) apply to loopback addresses too. Default true; local testnets set it to
    /// false (`NodeConfig::local` does).
    pub limit_loopback: bool,
    /// Misbehaviour points at which a peer's node id and IP are banned for
    /// `ban_duration` (a protocol violation counts 50, see `Severity`). Default 100.
    pub ban_threshold: u32,
    /// Most refused connections told why at once (each with a goodbye that may take up
    /// to a second); beyond it refusals are closed at once. Default 64.
    pub max_refusing: usize,
    /// Bytes per second a peer may send us: credit is granted back no faster (past the
    /// initial windows), so the remote is paced and the reader never pauses. `None`:
    /// unlimited.
    pub recv_rate: Option<u64>,
    /// Bytes per second we send to one peer; writing pauses above it. `None`: unlimited.
    pub send_rate: Option<u64>,
    /// How long a banned address stays banned. Default 1 h.
    #[serde(with = "humantime_serde")]
    pub ban_duration: Duration,
    /// How long a closing connection may spend writing what is still queued (and its
    /// `Goodbye`) before it is cut. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// First delay before redialing a persistent peer. Default 250 ms.
    #[serde(with = "humantime_serde")]
    pub redial_backoff_min: Duration,
    /// Largest delay between redials of a persistent peer. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub redial_backoff_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_packet_payload: 64 << 10,
            max_message_size: 4 << 20,
            max_reassembly_bytes: 16 << 20,
            recycle_bytes: 8 << 20,
            send_queue_messages: 1024,
            send_queue_bytes: 4 << 20,
            recv_capacity: 256,
            recv_window: 256 << 10,
            max_recv_window: 8 << 20,
            recv_budget: 64 << 20,
            recv_window_idle: Duration::from_secs(5),
            notsent_lowat: 128 << 10,
            write_batch_bytes: 256 << 10,
            socket_buffer: None,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            pong_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(30),
            max_inbound: 40,
            evict_inbound: true,
            evict_protect_netgroups: 4,
            evict_protect_rtt: 8,
            max_outbound: 10,
            max_per_ip: 8,
            max_per_subnet: 16,
            subnet_prefix_v4: 24,
            subnet_prefix_v6: 48,
            max_handshakes: 32,
            handshake_rate_per_ip: 10,
            handshake_rate_per_subnet: 40,
            limit_loopback: true,
            ban_threshold: 100,
            max_refusing: 64,
            recv_rate: None,
            send_rate: None,
            ban_duration: Duration::from_secs(3600),
            linger: Duration::from_secs(5),
            redial_backoff_min: Duration::from_millis(250),
            redial_backoff_max: Duration::from_secs(30),
        }
    }
}

/// Smallest `max_packet_payload`: a handshake message (up to 8 KiB) goes in one packet.
pub const MIN_PACKET_PAYLOAD: usize = 8 << 10;

/// Smallest receive window: several of the smallest partial chunks.
pub const MIN_RECV_WINDOW: usize = 4 << 10;

/// Largest receive window (credit is counted in `u32` packets and `u64` totals; this
/// keeps windows far from both).
pub const MAX_RECV_WINDOW: usize = 1 << 30;

/// Shortest ping interval: peers close a remote that pings more than 20 times a second.
pub const MIN_PING_INTERVAL: Duration = Duration::from_millis(100);

fn check_windows(field: &'static str, initial: usize, max: usize) -> Result<(), ConfigError> {
    if !(MIN_RECV_WINDOW..=MAX_RECV_WINDOW).contains(&initial) {
        return Err(ConfigError::new(
            field,
            format!("must be between {MIN_RECV_WINDOW} and {MAX_RECV_WINDOW} bytes"),
        ));
    }
    if !(initial..=MAX_RECV_WINDOW).contains(&max) {
        return Err(ConfigError::new(
            "max_recv_window",
            format!("must be between recv_window ({initial}) and {MAX_RECV_WINDOW} bytes"),
        ));
    }
    Ok(())
}

/// A window must hold one full packet and its message cost, or a message of one full
/// packet could never be sent whole.
pub(crate) fn check_packet_fits(
    field: &'static str,
    window: usize,
    max_packet_payload: usize,
) -> Result<(), ConfigError> {
    let need = max_packet_payload + crate::connection::MESSAGE_COST as usize;
    if window < need {
        return Err(ConfigError::new(
            field,
            format!(
                "{window} bytes cannot hold one full packet ({max_packet_payload} bytes of max_packet_payload plus 32)"
            ),
        ));
    }
    Ok(())
}

fn nonzero(field: &'static str, v: usize) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError::new(field, "must be greater than zero"));
    }
    Ok(())
}

/// Longest any duration of the config may be: far beyond any sensible value, and far
/// enough from overflow that adding it (or twice it) to an `Instant` is safe.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

fn bounded_duration(field: &'static str, v: Duration) -> Result<(), ConfigError> {
    nonzero_duration(field, v)?;
    if v > MAX_DURATION {
        return Err(ConfigError::new(
            field,
            format!("{v:?} is longer than the limit of 7 days"),
        ));
    }
    Ok(())
}

fn nonzero_duration(field: &'static str, v: Duration) -> Result<(), ConfigError> {
    if v.is_zero() {
        return Err(ConfigError::new(field, "must be longer than zero"));
    }
    Ok(())
}

impl Config {
    /// Checks every field and the relations between them; the error names the first
    /// offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        nonzero("max_packet_payload", self.max_packet_payload)?;
        if self.max_packet_payload > MAX_PACKET_PAYLOAD_LIMIT {
            return Err(ConfigError::new(
                "max_packet_payload",
                format!(
                    "{} is above the limit of {MAX_PACKET_PAYLOAD_LIMIT}",
                    self.max_packet_payload
                ),
            ));
        }
        if self.max_packet_payload < MIN_PACKET_PAYLOAD {
            return Err(ConfigError::new(
                "max_packet_payload",
                format!(
                    "{} is below {MIN_PACKET_PAYLOAD} (a handshake message must fit in one packet)",
                    self.max_packet_payload
                ),
            ));
        }
        nonzero("max_message_size", self.max_message_size)?;
        check_windows("recv_window", self.recv_window, self.max_recv_window)?;
        check_packet_fits("recv_window", self.recv_window, self.max_packet_payload)?;
        if (1..1024).contains(&self.notsent_lowat) {
            return Err(ConfigError::new(
                "notsent_lowat",
                "must be at least 1024 bytes (or 0 for the OS default)",
            ));
        }
        bounded_duration("recv_window_idle", self.recv_window_idle)?;
        if self.max_reassembly_bytes < self.max_message_size {
            return Err(ConfigError::new(
                "max_reassembly_bytes",
                "must be at least max_message_size",
            ));
        }
        nonzero("send_queue_messages", self.send_queue_messages)?;
        nonzero("send_queue_bytes", self.send_queue_bytes)?;
        nonzero("recv_capacity", self.recv_capacity)?;
        nonzero("write_batch_bytes", self.write_batch_bytes)?;
        if self.socket_buffer.is_some_and(|b| b < 4096) {
            return Err(ConfigError::new(
                "socket_buffer",
                "must be at least 4096 bytes (omit it for the OS default)",
            ));
        }
        bounded_duration("handshake_timeout", self.handshake_timeout)?;
        bounded_duration("ping_interval", self.ping_interval)?;
        if self.ping_interval < MIN_PING_INTERVAL {
            return Err(ConfigError::new(
                "ping_interval",
                format!("must be at least {MIN_PING_INTERVAL:?} (peers close a faster pinger)"),
            ));
        }
        bounded_duration("pong_timeout", self.pong_timeout)?;
        bounded_duration("idle_timeout", self.idle_timeout)?;
        bounded_duration("stall_timeout", self.stall_timeout)?;
        if self.pong_timeout >= self.ping_interval {
            return Err(ConfigError::new(
                "pong_timeout",
                format!(
                    "must be below ping_interval ({:?} is not below {:?})",
                    self.pong_timeout, self.ping_interval
                ),
            ));
        }
        if self.idle_timeout <= self.pong_timeout {
            return Err(ConfigError::new(
                "idle_timeout",
                format!(
                    "must be above pong_timeout ({:?} is not above {:?})",
                    self.idle_timeout, self.pong_timeout
                ),
            ));
        }
        nonzero("max_outbound", self.max_outbound)?;
        nonzero("max_per_ip", self.max_per_ip)?;
        nonzero("max_per_subnet", self.max_per_subnet)?;
        nonzero("max_handshakes", self.max_handshakes)?;
        nonzero("handshake_rate_per_ip", self.handshake_rate_per_ip as usize)?;
        nonzero(
            "handshake_rate_per_subnet",
            self.handshake_rate_per_subnet as usize,
        )?;
        nonzero("ban_threshold", self.ban_threshold as usize)?;
        if self.subnet_prefix_v4 > 32 {
            return Err(ConfigError::new("subnet_prefix_v4", "must be at most 32"));
        }
        if self.subnet_prefix_v6 > 128 {
            return Err(ConfigError::new("subnet_prefix_v6", "must be at most 128"));
        }
        if self.max_per_subnet < self.max_per_ip {
            return Err(ConfigError::new(
                "max_per_subnet",
                "must not be below max_per_ip",
            ));
        }
        if self.recv_rate == Some(0) {
            return Err(ConfigError::new(
                "recv_rate",
                "must be greater than zero (omit it for no limit)",
            ));
        }
        if self.send_rate == Some(0) {
            return Err(ConfigError::new(
                "send_rate",
                "must be greater than zero (omit it for no limit)",
            ));
        }
        bounded_duration("ban_duration", self.ban_duration)?;
        bounded_duration("linger", self.linger)?;
        bounded_duration("redial_backoff_min", self.redial_backoff_min)?;
        bounded_duration("redial_backoff_max", self.redial_backoff_max)?;
        if self.redial_backoff_max < self.redial_backoff_min {
            return Err(ConfigError::new(
                "redial_backoff_max",
                "must not be below redial_backoff_min",
            ));
        }
        Ok(())
    }

    /// A channel with the given priority and this config's default budgets.
    #[must_use]
    pub fn channel(&self, priority: u16) -> ChannelConfig {
        ChannelConfig {
            priority,
            max_message_size: self.max_message_size,
            send_queue_messages: self.send_queue_messages,
            send_queue_bytes: self.send_queue_bytes,
            recv_capacity: self.recv_capacity,
            recv_window: self.recv_window,
            max_recv_window: self.max_recv_window,
            requests_in_flight: DEFAULT_REQUESTS,
            inbound_requests: DEFAULT_REQUESTS,
            close_on_stall: true,
        }
    }
}

/// Default number of requests in flight per peer and channel, each way.
pub const DEFAULT_REQUESTS: usize = 64;

/// Priority and budgets of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelConfig {
    /// Relative share of the connection's bandwidth when channels compete (≥ 1).
    pub priority: u16,
    /// Largest message on this channel, in bytes; a larger one closes the peer.
    pub max_message_size: usize,
    /// Most messages waiting in this channel's send queue.
    pub send_queue_messages: usize,
    /// Most bytes waiting in this channel's send queue (a single larger message is
    /// accepted into an empty queue).
    pub send_queue_bytes: usize,
    /// Most messages in one `ReceivedBatch` delivered to the service (batched channels).
    pub recv_capacity: usize,
    /// Initial receive window, in bytes of credit (see `Config::recv_window`).
    pub recv_window: usize,
    /// Largest receive window autotuning may reach (see `Config::max_recv_window`).
    pub max_recv_window: usize,
    /// Most requests of ours waiting for their answer, per peer, on this channel: a
    /// request beyond it waits (or, in its `try_` form, fails at once).
    pub requests_in_flight: usize,
    /// Most requests of a peer our service holds unanswered on this channel: one
    /// beyond it is refused at once on the wire (`Rejected`, busy) and never reaches
    /// the service.
    pub inbound_requests: usize,
    /// A request on this channel unanswered within its timeout closes the peer as
    /// stalled (the default); `false`: the caller is told, the peer stays.
    pub close_on_stall: bool,
}

/// Most messages a runtime takes from a core for one hand-over to a channel's service
/// (see [`ChannelConfig::delivery_batch`]).
pub const MAX_DELIVERY_BATCH: usize = 1024;

impl ChannelConfig {
    /// Most messages a runtime takes from the core for one hand-over to this
    /// channel's service: its `recv_capacity`, at least 1 and at most
    /// [`MAX_DELIVERY_BATCH`] (what does not fit in the service's mailbox goes back to
    /// the core's queue, so a larger batch would only be taken out to be put back).
    #[must_use]
    pub fn delivery_batch(&self) -> usize {
        self.recv_capacity.clamp(1, MAX_DELIVERY_BATCH)
    }

    /// A channel with this priority and the default budgets of [`Config::default`].
    #[must_use]
    pub fn new(priority: u16) -> Self {
        Config::default().channel(priority)
    }

    /// Sets the largest message size.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets the send queue budget in messages and bytes.
    #[must_use]
    pub fn send_queue(mut self, messages: usize, bytes: usize) -> Self {
        self.send_queue_messages = messages;
        self.send_queue_bytes = bytes;
        self
    }

    /// Sets the receive capacity in messages.
    #[must_use]
    pub fn recv_capacity(mut self, messages: usize) -> Self {
        self.recv_capacity = messages;
        self
    }

    /// Sets the requests in flight per peer: ours awaiting answers, and the remote's
    /// our service may hold.
    #[must_use]
    pub fn requests(mut self, outbound: usize, inbound: usize) -> Self {
        self.requests_in_flight = outbound;
        self.inbound_requests = inbound;
        self
    }

    /// Sets whether a stalled request closes the peer (`true`, the default) or is only
    /// reported to its caller.
    #[must_use]
    pub fn close_on_stall(mut self, close: bool) -> Self {
        self.close_on_stall = close;
        self
    }

    /// Sets the initial and largest receive window, in bytes.
    #[must_use]
    pub fn recv_window(mut self, initial: usize, max: usize) -> Self {
        self.recv_window = initial;
        self.max_recv_window = max;
        self
    }

    /// Checks that every budget is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.priority == 0 {
            return Err(ConfigError::new("priority", "must be at least 1"));
        }
        nonzero("max_message_size", self.max_message_size)?;
        check_windows("recv_window", self.recv_window, self.max_recv_window)?;
        nonzero("requests_in_flight", self.requests_in_flight)?;
        nonzero("inbound_requests", self.inbound_requests)?;
        nonzero("send_queue_messages", self.send_queue_messages)?;
        nonzero("send_queue_bytes", self.send_queue_bytes)?;
        nonzero("recv_capacity", self.recv_capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_batches_are_the_receive_capacity_within_bounds() {
        assert_eq!(ChannelConfig::new(1).recv_capacity(0).delivery_batch(), 1);
        assert_eq!(ChannelConfig::new(1).recv_capacity(16).delivery_batch(), 16);
        assert_eq!(
            ChannelConfig::new(1)
                .recv_capacity(1 << 20)
                .delivery_batch(),
            MAX_DELIVERY_BATCH
        );
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        ChannelConfig::new(1).validate().unwrap();
    }

    #[test]
    fn contradictions_name_the_field() {
        let mut c = Config {
            pong_timeout: Duration::from_secs(20),
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "pong_timeout");
        c.pong_timeout = c.ping_interval;
        assert_eq!(c.validate().unwrap_err().field, "pong_timeout");
        c = Config {
            idle_timeout: Duration::from_secs(5),
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "idle_timeout");
        for (field, cfg) in [
            (
                "max_packet_payload",
                Config {
                    max_packet_payload: 0,
                    ..Config::default()
                },
            ),
            (
                "max_packet_payload",
                Config {
                    max_packet_payload: 1 << 30,
                    ..Config::default()
                },
            ),
            (
                "max_message_size",
                Config {
                    max_message_size: 0,
                    ..Config::default()
                },
            ),
            (
                "send_queue_bytes",
                Config {
                    send_queue_bytes: 0,
                    ..Config::default()
                },
            ),
            (
                "recv_capacity",
                Config {
                    recv_capacity: 0,
                    ..Config::default()
                },
            ),
            (
                "max_reassembly_bytes",
                Config {
                    max_reassembly_bytes: 1024,
                    ..Config::default()
                },
            ),
            (
                "linger",
                Config {
                    linger: Duration::from_secs(500_000_000_000),
                    ..Config::default()
                },
            ),
            (
                "socket_buffer",
                Config {
                    socket_buffer: Some(100),
                    ..Config::default()
                },
            ),
            (
                "handshake_timeout",
                Config {
                    handshake_timeout: Duration::ZERO,
                    ..Config::default()
                },
            ),
            (
                "max_outbound",
                Config {
                    max_outbound: 0,
                    ..Config::default()
                },
            ),
            (
                "send_rate",
                Config {
                    send_rate: Some(0),
                    ..Config::default()
                },
            ),
            (
                "redial_backoff_max",
                Config {
                    redial_backoff_max: Duration::from_millis(1),
                    ..Config::default()
                },
            ),
            (
                "max_handshakes",
                Config {
                    max_handshakes: 0,
                    ..Config::default()
                },
            ),
            (
                "max_per_subnet",
                Config {
                    max_per_subnet: 4,
                    ..Config::default()
                },
            ),
            (
                "subnet_prefix_v4",
                Config {
                    subnet_prefix_v4: 33,
                    ..Config::default()
                },
            ),
            (
                "subnet_prefix_v6",
                Config {
                    subnet_prefix_v6: 129,
                    ..Config::default()
                },
            ),
            (
                "handshake_rate_per_ip",
                Config {
                    handshake_rate_per_ip: 0,
                    ..Config::default()
                },
            ),
            (
                "handshake_rate_per_subnet",
                Config {
                    handshake_rate_per_subnet: 0,
                    ..Config::default()
                },
            ),
            (
                "ban_threshold",
                Config {
                    ban_threshold: 0,
                    ..Config::default()
                },
            ),
        ] {
            let err = cfg.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().contains(field));
        }
        assert_eq!(
            ChannelConfig::new(0).validate().unwrap_err().field,
            "priority"
        );
    }

    #[test]
    fn reads_a_partial_toml_like_map_with_human_durations() {
        // rmp-serde stands in for TOML here (the CLI tests the TOML file itself).
        #[derive(Serialize)]
        struct Partial {
            ping_interval: &'static str,
            max_inbound: usize,
        }
        let bytes = rmp_serde::to_vec_named(&Partial {
            ping_interval: "2s 500ms",
            max_inbound: 3,
        })
        .unwrap();
        let c: Config = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(c.ping_interval, Duration::from_millis(2500));
        assert_eq!(c.max_inbound, 3);
        assert_eq!(c.pong_timeout, Config::default().pong_timeout);
    }
}
