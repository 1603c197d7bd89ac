//! The channel-0 daemon's service negotiation, per connection: which of our services
//! meet their twins on the remote, over which channel ids.
//!
//! Each side states its own channel ids for a service, and the credit it granted on
//! each, in its `ServiceConnect` or `ServiceAccept`; the n-th channel of one side pairs
//! with the n-th of the other. Channel ids stay the wire's routing key: a message goes
//! out with the *remote's* id for its channel and comes in with ours, so two hosts may
//! run one service on different ids, and independent services never agree on numbers.
//! Only the core's API edges translate (our id in `send`, `Room`, `channel_info`); the
//! send scheduler is keyed by the remote's ids, windows and reassembly by ours.
//!
//! # Rules
//!
//! * When the connection comes up, and whenever a service is attached later, a side
//!   opens the service's receive windows and sends `ServiceConnect`.
//! * A `ServiceConnect` for a service we run with the same major version and the same
//!   number of channels is accepted: our windows open (if they were not), the send
//!   side is mapped, we answer `ServiceAccept`, and the service is **up** (its twin can
//!   be sent to). Otherwise we answer `ServiceReject` with the reason, and both sides
//!   report it ([`Event::ServiceRefused`]).
//! * A `ServiceAccept` answers our `ServiceConnect`: the service is up. When both
//!   sides offered at once, each accepts the other's offer and the answers that cross
//!   only confirm it.
//! * Detaching a service that is up sends `ServiceDisconnect` and drops its send
//!   queues; what still arrives on its channels is dropped until the remote answers
//!   with its own `ServiceDisconnect`, after which data there is a violation again.
//!   The remote reports the service down with
//!   [`DisconnectReason::ServiceDetached`] while the connection goes on.
//! * Violations close the connection with [`DisconnectReason::ControlViolation`]: an
//!   answer to nothing, an offer of a service already up, a disconnect of a service
//!   that is not up, channel ids already used by another service, and more service
//!   messages than [`SERVICE_MESSAGE_BURST`] at once (refilled at
//!   [`SERVICE_MESSAGES_PER_SECOND`]).
//!
//! ```text
//!            attach / connected                 compatible Connect (we answer Accept)
//!   Off ─────────────────────────▶ Offered ───────────────────────────────────────▶ Up
//!    ▲  ◀──── Reject ───────────────┘ │   ─────── Accept ──────────────────────────▶ │
//!    │                                                                              │
//!    └──── remote's Disconnect (our answer to its Disconnect, or the answer to ours) ┤
//!                                      Draining ◀──── detach: we send Disconnect ───┘
//! ```

use std::sync::Arc;
use std::time::Instant;

use super::flow::{message_cost, WindowConfig};
use super::rate::TokenBucket;
use super::stall::Refusal;
use super::{control_packet, Event, PeerCore};
use crate::config::{ChannelConfig, Config, ConfigError};
use crate::reason::DisconnectReason;
use crate::wire::control::{
    valid_service_name, ChannelGrant, Control, RejectReason, ServiceOffer, CONTROL_CHANNEL,
    MAX_CONTROL_MESSAGE, MAX_SERVICE_CHANNELS,
};

/// Most services a node runs at once.
pub const MAX_SERVICES: usize = 64;
/// Service messages (connect, accept, reject, disconnect) a remote may send at once.
pub const SERVICE_MESSAGE_BURST: u64 = 4 * MAX_SERVICES as u64;
/// The rate at which that allowance refills.
pub const SERVICE_MESSAGES_PER_SECOND: u64 = 32;

/// One of our services, as a connection needs it: its name, versions and channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Its name (twins share it): 1..=64 bytes of `A-Z a-z 0-9 . _ - / :`, so
    /// instances can be told apart (`headers/chain-a`).
    pub name: String,
    /// Major version: twins must have the same.
    pub major: u32,
    /// Minor version (informational).
    pub minor: u32,
    /// Its channels, in order (the n-th pairs with the twin's n-th).
    pub channels: Vec<(u8, ChannelConfig)>,
}

impl ServiceSpec {
    /// Checks the name, the number of channels (1..=32), their ids (1..=255, each
    /// once) and each channel's config against `limits`.
    pub fn validate(&self, limits: &Config) -> Result<(), ConfigError> {
        if !valid_service_name(&self.name) {
            return Err(ConfigError::new(
                "service",
                format!(
                    "name {:?} is not 1 to 64 bytes of A-Z a-z 0-9 . _ - / :",
                    self.name
                ),
            ));
        }
        if self.channels.is_empty() || self.channels.len() > MAX_SERVICE_CHANNELS {
            return Err(ConfigError::new(
                "service",
                format!(
                    "{} has {} channels, not 1 to {MAX_SERVICE_CHANNELS}",
                    self.name,
                    self.channels.len()
                ),
            ));
        }
        for (i, (id, cfg)) in self.channels.iter().enumerate() {
            if *id == CONTROL_CHANNEL {
                return Err(ConfigError::new(
                    "channels",
                    "channel 0 is reserved for the daemon; use 1..=255",
                ));
            }
            if self.channels[..i].iter().any(|(c, _)| c == id) {
                return Err(ConfigError::new(
                    "channels",
                    format!("channel {id:#04x} is registered twice"),
                ));
            }
            cfg.validate()?;
            crate::config::check_packet_fits(
                "recv_window",
                cfg.recv_window,
                limits.max_packet_payload,
            )?;
            if u32::try_from(cfg.recv_window).is_err() {
                return Err(ConfigError::new("recv_window", "above 4 GiB"));
            }
        }
        Ok(())
    }

    fn window(id: u8, c: &ChannelConfig) -> WindowConfig {
        WindowConfig {
            channel: id,
            initial: c.recv_window as u64,
            max: (c.max_recv_window as u64).max(message_cost(c.max_message_size)),
            need_max: message_cost(c.max_message_size),
        }
    }

    fn compatible(&self, offer: &ServiceOffer) -> Result<(), RejectReason> {
        if offer.major != self.major {
            return Err(RejectReason::VersionMismatch {
                major: self.major,
                minor: self.minor,
            });
        }
        if offer.channels.len() != self.channels.len() {
            return Err(RejectReason::ChannelMismatch {
                count: u8::try_from(self.channels.len()).unwrap_or(u8::MAX),
            });
        }
        Ok(())
    }
}

/// Checks a node's services together: each valid, names and channel ids unique
/// across them, at most [`MAX_SERVICES`], and a reassembly budget that holds one
/// partial message of the largest size on every channel at once (channel 0
/// included), so partial messages never exceed it for a peer within its credit and
/// can never deadlock each other.
pub fn check_services<'a>(
    limits: &Config,
    services: impl IntoIterator<Item = &'a ServiceSpec>,
) -> Result<(), ConfigError> {
    let mut names: Vec<&str> = Vec::new();
    let mut ids = [false; 256];
    let mut partials = MAX_CONTROL_MESSAGE;
    for s in services {
        s.validate(limits)?;
        if names.contains(&s.name.as_str()) {
            return Err(ConfigError::new(
                "service",
                format!("{:?} is registered twice", s.name),
            ));
        }
        names.push(&s.name);
        for (id, cfg) in &s.channels {
            let seen = &mut ids[usize::from(*id)];
            if *seen {
                return Err(ConfigError::new(
                    "channels",
                    format!("channel {id:#04x} is registered twice"),
                ));
            }
            *seen = true;
            partials = partials.saturating_add(cfg.max_message_size);
        }
    }
    if names.len() > MAX_SERVICES {
        return Err(ConfigError::new(
            "service",
            format!("more than {MAX_SERVICES} services"),
        ));
    }
    if partials > limits.max_reassembly_bytes {
        return Err(ConfigError::new(
            "max_reassembly_bytes",
            format!(
                "{} bytes cannot hold one partial message per channel: the channels' \
                 max_message_size (and 64 KiB for channel 0) add up to {partials}",
                limits.max_reassembly_bytes
            ),
        ));
    }
    Ok(())
}

/// Why a service could not be attached to a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// A service of that name is attached already.
    #[error("service {0:?} is attached already")]
    Duplicate(String),
    /// One of its channel ids belongs to another attached service.
    #[error("channel {0:#04x} belongs to another service")]
    ChannelInUse(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not offered, not up.
    Off,
    /// We sent `ServiceConnect` and our windows are open.
    Offered,
    /// Mapped both ways.
    Up,
    /// We sent `ServiceDisconnect`; the remote's answer is awaited.
    Draining,
}

#[derive(Debug)]
struct Entry {
    name: String,
    /// The service, while attached here.
    local: Option<Arc<ServiceSpec>>,
    phase: Phase,
    /// We sent `ServiceConnect` and no answer came yet.
    awaiting: bool,
    /// The answer is due by then (the handshake timeout after the offer).
    answer_by: Option<Instant>,
    /// Our channels and their initial grants while our windows are open.
    open: Vec<ChannelGrant>,
    /// The remote's channel ids, in the service's order, while up.
    remote: Vec<u8>,
    /// Attached while busy (answer or drain pending, channels still open elsewhere):
    /// offer once that is over.
    offer_due: bool,
}

/// The service table of one connection (see the [module docs](self)).
#[derive(Debug)]
pub(super) struct Services {
    entries: Vec<Entry>,
    /// Our channel id → the remote's id for it (0: not up).
    send_id: [u8; 256],
    /// The remote's channel id → ours (0: none).
    local_of: [u8; 256],
    /// Our channels whose arriving messages are dropped (service draining).
    dropping: [bool; 256],
    rate: TokenBucket,
}

impl Services {
    pub(super) fn new(now: Instant, specs: &[Arc<ServiceSpec>]) -> Self {
        Services {
            entries: specs
                .iter()
                .map(|s| Entry {
                    name: s.name.clone(),
                    local: Some(s.clone()),
                    phase: Phase::Off,
                    awaiting: false,
                    answer_by: None,
                    open: Vec::new(),
                    remote: Vec::new(),
                    offer_due: true,
                })
                .collect(),
            send_id: [0; 256],
            local_of: [0; 256],
            dropping: [false; 256],
            rate: TokenBucket::new(now, SERVICE_MESSAGES_PER_SECOND, SERVICE_MESSAGE_BURST),
        }
    }

    /// The remote's id for our `channel`, when its service is up.
    pub(super) fn send_id(&self, channel: u8) -> Option<u8> {
        match self.send_id[usize::from(channel)] {
            0 => None,
            r => Some(r),
        }
    }

    /// Our id for the remote's `channel`.
    pub(super) fn local_of(&self, remote: u8) -> Option<u8> {
        match self.local_of[usize::from(remote)] {
            0 => None,
            l => Some(l),
        }
    }

    /// The config of our `channel`, while its service is attached.
    pub(super) fn config(&self, channel: u8) -> Option<&ChannelConfig> {
        self.entries
            .iter()
            .filter_map(|e| e.local.as_deref())
            .flat_map(|s| s.channels.iter())
            .find(|(id, _)| *id == channel)
            .map(|(_, c)| c)
    }

    /// Whether messages arriving on our `channel` are dropped.
    pub(super) fn dropping(&self, channel: u8) -> bool {
        self.dropping[usize::from(channel)]
    }

    /// Whether an offer of ours waits for its answer.
    pub(super) fn pending(&self) -> bool {
        self.entries.iter().any(|e| e.awaiting)
    }

    /// When the earliest unanswered offer is due.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter(|e| e.awaiting)
            .filter_map(|e| e.answer_by)
            .min()
    }

    /// The name of a service whose offer is unanswered past its deadline.
    pub(super) fn unanswered(&self, now: Instant) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.awaiting && e.answer_by.is_some_and(|t| t <= now))
            .map(|e| e.name.as_str())
    }

    /// Names of the services up on the connection.
    pub(super) fn up(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|e| e.phase == Phase::Up && e.local.is_some())
            .map(|e| e.name.as_str())
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }

    /// Whether one of `ids` has an open window in an entry other than `except`.
    fn in_use(&self, ids: impl Iterator<Item = u8> + Clone, except: usize) -> Option<u8> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != except)
            .flat_map(|(_, e)| {
                e.open
                    .iter()
                    .map(|g| g.id)
                    .chain(e.local.iter().flat_map(|s| s.channels.iter().map(|c| c.0)))
            })
            .find(|id| ids.clone().any(|x| x == *id))
    }
}

fn violation(what: String) -> DisconnectReason {
    DisconnectReason::ControlViolation(what)
}

impl PeerCore {
    /// Attaches a service to this connection: it is offered to the remote now (or
    /// when the handshake completes), and comes up once its twin accepts
    /// ([`Event::ServiceUp`]).
    pub fn attach(&mut self, now: Instant, spec: Arc<ServiceSpec>) -> Result<(), AttachError> {
        let existing = self.services.find(&spec.name);
        if existing.is_some_and(|i| self.services.entries[i].local.is_some()) {
            return Err(AttachError::Duplicate(spec.name.clone()));
        }
        let ids = spec.channels.iter().map(|c| c.0);
        let except = existing.unwrap_or(usize::MAX);
        let clash = self
            .services
            .entries
            .iter()
            .enumerate()
            .filter(|(i, e)| *i != except && e.local.is_some())
            .flat_map(|(_, e)| e.local.iter().flat_map(|s| s.channels.iter().map(|c| c.0)))
            .find(|id| ids.clone().any(|x| x == *id));
        if let Some(id) = clash {
            return Err(AttachError::ChannelInUse(id));
        }
        let i = match existing {
            Some(i) => i,
            None => {
                self.services.entries.push(Entry {
                    name: spec.name.clone(),
                    local: None,
                    phase: Phase::Off,
                    awaiting: false,
                    answer_by: None,
                    open: Vec::new(),
                    remote: Vec::new(),
                    offer_due: false,
                });
                self.services.entries.len() - 1
            }
        };
        let e = &mut self.services.entries[i];
        e.local = Some(spec);
        e.offer_due = true;
        self.offer_due(now);
        self.refresh_timers();
        Ok(())
    }

    /// Detaches a service from this connection: its twin is told, sends on its
    /// channels fail from now on, and what waits for it is dropped. Nothing happens
    /// for a name that is not attached.
    pub fn detach(&mut self, now: Instant, name: &str) {
        let Some(i) = self.services.find(name) else {
            return;
        };
        let Some(spec) = self.services.entries[i].local.take() else {
            return;
        };
        self.services.entries[i].offer_due = false;
        for (id, _) in &spec.channels {
            self.inbox.clear(*id);
        }
        match self.services.entries[i].phase {
            Phase::Up => {
                self.unmap(i);
                self.start_drain(i);
                self.events.push_back(Event::ServiceDown {
                    service: name.to_owned(),
                    reason: DisconnectReason::ServiceDetached,
                });
            }
            // The answer to our offer decides (see `on_service_accept`).
            Phase::Offered | Phase::Draining => {}
            Phase::Off => {
                self.close_windows(i);
                self.services.entries.swap_remove(i);
            }
        }
        self.check_time(now);
        self.refresh_timers();
    }

    /// Names of the services up on this connection (their twins accepted).
    pub fn services_up(&self) -> impl Iterator<Item = &str> {
        self.services.up()
    }

    /// Whether an offer of ours still waits for its answer (at most the handshake
    /// timeout: a remote that does not answer in time is closed). The offers made when
    /// the connection came up are answered once this is false, so every service the
    /// two nodes share is up (or refused) by then.
    #[must_use]
    pub fn offers_pending(&self) -> bool {
        self.services.pending()
    }

    /// The remote's channel id for our `channel`, while its service is up.
    #[must_use]
    pub fn remote_channel(&self, channel: u8) -> Option<u8> {
        self.services.send_id(channel)
    }

    /// Offers every attached service that waits to be offered and can be now.
    pub(super) fn offer_due(&mut self, now: Instant) {
        if !self.is_active() {
            return;
        }
        for i in 0..self.services.entries.len() {
            let e = &self.services.entries[i];
            let ready = e.offer_due && e.phase == Phase::Off && e.open.is_empty();
            let Some(spec) = e.local.clone().filter(|_| ready) else {
                continue;
            };
            if self
                .services
                .in_use(spec.channels.iter().map(|c| c.0), i)
                .is_some()
            {
                // Channels still draining for a service detached before: later.
                continue;
            }
            let grants = self.open_windows(now, i, &spec);
            let e = &mut self.services.entries[i];
            e.offer_due = false;
            e.phase = Phase::Offered;
            e.awaiting = true;
            // The services offered as the connection comes up are part of its
            // handshake and share its deadline; a service attached later gets the
            // handshake timeout of its own.
            e.answer_by = Some(if self.setup_offers {
                self.handshake_deadline
            } else {
                now + self.config.limits.handshake_timeout
            });
            let offer = offer(&spec, grants);
            self.control_out
                .push_back(control_packet(&Control::ServiceConnect(offer)));
        }
        self.setup_offers = false;
    }

    fn open_windows(&mut self, now: Instant, i: usize, spec: &ServiceSpec) -> Vec<ChannelGrant> {
        if self.services.entries[i].open.is_empty() {
            let grants = spec
                .channels
                .iter()
                .map(|(id, cfg)| {
                    let credit = self.flow.open(now, &ServiceSpec::window(*id, cfg));
                    self.reassembly.add_channel(*id, cfg.max_message_size);
                    self.inbox.add_channel(*id);
                    self.services.dropping[usize::from(*id)] = false;
                    ChannelGrant {
                        id: *id,
                        credit: u32::try_from(credit).unwrap_or(u32::MAX),
                    }
                })
                .collect();
            self.services.entries[i].open = grants;
        }
        self.services.entries[i].open.clone()
    }

    fn close_windows(&mut self, i: usize) {
        let open = std::mem::take(&mut self.services.entries[i].open);
        for g in open {
            self.flow.close(g.id);
            self.reassembly.discard(g.id);
            self.services.dropping[usize::from(g.id)] = false;
        }
    }

    /// Maps the send side of entry `i` to the remote's channels in `offer`.
    fn map(&mut self, i: usize, offer: &ServiceOffer) -> Result<(), DisconnectReason> {
        let Some(spec) = self.services.entries[i].local.clone() else {
            return Ok(());
        };
        for g in &offer.channels {
            if self.services.local_of(g.id).is_some() {
                return Err(violation(format!(
                    "service {} states channel {:#04x}, which another service uses",
                    offer.name, g.id
                )));
            }
        }
        for ((id, cfg), g) in spec.channels.iter().zip(&offer.channels) {
            self.sched.add_channel(g.id, cfg);
            self.sched.add_credit(g.id, u64::from(g.credit));
            self.services.send_id[usize::from(*id)] = g.id;
            self.services.local_of[usize::from(g.id)] = *id;
        }
        let e = &mut self.services.entries[i];
        e.remote = offer.channels.iter().map(|g| g.id).collect();
        e.phase = Phase::Up;
        self.events.push_back(Event::ServiceUp(offer.name.clone()));
        Ok(())
    }

    /// Drops the send side of entry `i`: queued messages go, waiting senders wake.
    fn unmap(&mut self, i: usize) {
        let remote = std::mem::take(&mut self.services.entries[i].remote);
        for r in remote {
            if let Some(local) = self.services.local_of(r) {
                self.services.send_id[usize::from(local)] = 0;
                // Senders waiting for room find the service gone; requests in flight
                // will get no answer.
                self.events.push_back(Event::Room(local));
                for request_id in self.stall.cancel_channel(local) {
                    self.events.push_back(Event::RequestRejected {
                        channel: local,
                        request_id,
                        refusal: Refusal::Dropped,
                    });
                }
                self.inbound.clear_channel(local);
            }
            self.services.local_of[usize::from(r)] = 0;
            self.sched.reset_channel(r);
        }
    }

    fn start_drain(&mut self, i: usize) {
        let e = &mut self.services.entries[i];
        e.phase = Phase::Draining;
        for g in &e.open {
            self.services.dropping[usize::from(g.id)] = true;
        }
        let name = e.name.clone();
        self.control_out
            .push_back(control_packet(&Control::ServiceDisconnect { name }));
    }

    /// Entry `i` is over: its windows close, and it is forgotten unless attached.
    fn finish_service(&mut self, now: Instant, i: usize) {
        self.close_windows(i);
        let e = &mut self.services.entries[i];
        e.phase = Phase::Off;
        e.remote.clear();
        if e.local.is_none() && !e.awaiting {
            self.services.entries.swap_remove(i);
        }
        self.offer_due(now);
    }

    /// A service message from the remote (the handshake is over).
    pub(super) fn service_control(
        &mut self,
        now: Instant,
        msg: Control,
    ) -> Result<(), DisconnectReason> {
        if self.services.rate.available(now) == 0 {
            return Err(violation(format!(
                "more than {SERVICE_MESSAGE_BURST} service messages at once \
                 ({SERVICE_MESSAGES_PER_SECOND}/s allowed)"
            )));
        }
        self.services.rate.take(now, 1);
        match msg {
            Control::ServiceConnect(offer) => self.on_service_connect(now, offer),
            Control::ServiceAccept(offer) => self.on_service_accept(now, offer),
            Control::ServiceReject { name, reason } => self.on_service_reject(now, name, reason),
            Control::ServiceDisconnect { name } => self.on_service_disconnect(now, &name),
            other => Err(violation(format!("unexpected control message {other:?}"))),
        }
    }

    fn reject(&mut self, name: String, reason: RejectReason) {
        self.control_out
            .push_back(control_packet(&Control::ServiceReject { name, reason }));
    }

    fn on_service_connect(
        &mut self,
        now: Instant,
        offer: ServiceOffer,
    ) -> Result<(), DisconnectReason> {
        let found = self.services.find(&offer.name);
        let Some(i) = found.filter(|i| self.services.entries[*i].local.is_some()) else {
            if found.is_some_and(|i| self.services.entries[i].phase == Phase::Draining) {
                return Err(violation(format!(
                    "ServiceConnect for {} before answering its ServiceDisconnect",
                    offer.name
                )));
            }
            self.reject(offer.name, RejectReason::NotRunning);
            return Ok(());
        };
        let phase = self.services.entries[i].phase;
        if matches!(phase, Phase::Up | Phase::Draining) {
            return Err(violation(format!(
                "ServiceConnect for {}, which is up already",
                offer.name
            )));
        }
        let Some(spec) = self.services.entries[i].local.clone() else {
            return Ok(());
        };
        if let Err(reason) = spec.compatible(&offer) {
            self.events.push_back(Event::ServiceRefused {
                service: offer.name.clone(),
                reason: reason.clone(),
                by_remote: false,
            });
            self.reject(offer.name, reason);
            return Ok(());
        }
        if let Some(id) = self.services.in_use(spec.channels.iter().map(|c| c.0), i) {
            // Our channels still drain a service detached before: not yet.
            let _ = id;
            self.reject(offer.name, RejectReason::NotRunning);
            self.services.entries[i].offer_due = true;
            return Ok(());
        }
        let grants = self.open_windows(now, i, &spec);
        self.services.entries[i].offer_due = false;
        self.map(i, &offer)?;
        let answer = self::offer(&spec, grants);
        self.control_out
            .push_back(control_packet(&Control::ServiceAccept(answer)));
        Ok(())
    }

    fn on_service_accept(
        &mut self,
        now: Instant,
        offer: ServiceOffer,
    ) -> Result<(), DisconnectReason> {
        let Some(i) = self
            .services
            .find(&offer.name)
            .filter(|i| self.services.entries[*i].awaiting)
        else {
            return Err(violation(format!(
                "ServiceAccept for {}, which we did not offer",
                offer.name
            )));
        };
        self.services.entries[i].awaiting = false;
        let e = &self.services.entries[i];
        match (e.phase, e.local.clone()) {
            (Phase::Offered, Some(spec)) => {
                if spec.compatible(&offer).is_err() {
                    return Err(violation(format!(
                        "ServiceAccept for {} with another major version or channel count",
                        offer.name
                    )));
                }
                self.map(i, &offer)
            }
            (Phase::Offered, None) => {
                // Detached while our offer was on its way: the remote thinks it up.
                self.start_drain(i);
                Ok(())
            }
            (Phase::Up, _) => {
                if e.remote.iter().ne(offer.channels.iter().map(|g| &g.id)) {
                    return Err(violation(format!(
                        "ServiceAccept for {} with other channels than its ServiceConnect",
                        offer.name
                    )));
                }
                Ok(())
            }
            (Phase::Draining, _) => Ok(()),
            (Phase::Off, _) => {
                self.finish_service(now, i);
                Ok(())
            }
        }
    }

    fn on_service_reject(
        &mut self,
        now: Instant,
        name: String,
        reason: RejectReason,
    ) -> Result<(), DisconnectReason> {
        let Some(i) = self
            .services
            .find(&name)
            .filter(|i| self.services.entries[*i].awaiting)
        else {
            return Err(violation(format!(
                "ServiceReject for {name}, which we did not offer"
            )));
        };
        self.services.entries[i].awaiting = false;
        if self.services.entries[i].phase == Phase::Offered {
            if self.services.entries[i].local.is_some() {
                self.events.push_back(Event::ServiceRefused {
                    service: name,
                    reason,
                    by_remote: true,
                });
            }
            self.finish_service(now, i);
        } else if self.services.entries[i].phase == Phase::Off {
            self.finish_service(now, i);
        }
        Ok(())
    }

    fn on_service_disconnect(&mut self, now: Instant, name: &str) -> Result<(), DisconnectReason> {
        let found = self.services.find(name);
        let Some(i) = found
            .filter(|i| matches!(self.services.entries[*i].phase, Phase::Up | Phase::Draining))
        else {
            return Err(violation(format!(
                "ServiceDisconnect for {name}, which is not up"
            )));
        };
        if self.services.entries[i].phase == Phase::Up {
            // The remote detached: we answer, and the service is down here.
            self.unmap(i);
            self.control_out
                .push_back(control_packet(&Control::ServiceDisconnect {
                    name: name.to_owned(),
                }));
            self.events.push_back(Event::ServiceDown {
                service: name.to_owned(),
                reason: DisconnectReason::ServiceDetached,
            });
        }
        self.finish_service(now, i);
        Ok(())
    }
}

fn offer(spec: &ServiceSpec, channels: Vec<ChannelGrant>) -> ServiceOffer {
    ServiceOffer {
        name: spec.name.clone(),
        major: spec.major,
        minor: spec.minor,
        channels,
    }
}
