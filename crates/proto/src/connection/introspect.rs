//! Introspection on one connection: the channel-0 `IntrospectRequest` /
//! `IntrospectResponse` exchange, and the counters a [`PeerReport`] shows.
//!
//! # Rules
//!
//! * A request from the remote (only after the handshake: before it, any control
//!   message but `Version`/`Verack` already closes the connection) becomes
//!   [`Event::IntrospectRequested`]; the runtime gathers its node's
//!   [`Introspection`] and hands it to [`PeerCore::answer_introspection`], which
//!   queues it on channel 0 cut to fit [`MAX_CONTROL_MESSAGE`]. One answer per
//!   request, in order.
//! * A remote may send [`INTROSPECT_BURST`] requests at once, refilled at
//!   [`INTROSPECT_PER_SECOND`]; one more closes it with
//!   [`DisconnectReason::ControlViolation`].
//! * [`PeerCore::request_introspection`] asks the remote; its answer becomes
//!   [`Event::Introspection`]. A response while none of ours is outstanding is a
//!   violation.
//!
//! The per-channel counters (messages and payload bytes each way) are kept here, by
//! our channel id, from the moment a message is complete or its last chunk handed
//! out: plain additions into two arrays, nothing shared, so the hot path stays as it
//! was; they never go down, so a runtime can turn them into monotonic metrics.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::rate::TokenBucket;
use super::{Event, PeerCore};
use crate::admission::Direction;
use crate::introspect::{ChannelReport, Introspection, PeerReport};
use crate::reason::DisconnectReason;
use crate::wire::codec::MsgKind;
use crate::wire::control::{Control, CONTROL_CHANNEL, MAX_CONTROL_MESSAGE};

/// Introspection requests a remote may send at once.
pub const INTROSPECT_BURST: u64 = 4;
/// The rate at which that allowance refills, per second.
pub const INTROSPECT_PER_SECOND: u64 = 1;
/// Most of our own requests waiting for an answer on one connection.
pub const MAX_INTROSPECT_OUTSTANDING: u32 = 4;

/// Why [`PeerCore::request_introspection`] did not send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntrospectError {
    /// The handshake is not done, or the connection is closing: nothing can be asked.
    #[error("the connection is not up")]
    NotActive,
    /// [`MAX_INTROSPECT_OUTSTANDING`] requests wait for their answer already: wait
    /// for one.
    #[error("{MAX_INTROSPECT_OUTSTANDING} introspection requests are outstanding")]
    Busy,
}

/// Messages and payload bytes, one way, on one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Complete messages.
    pub messages: u64,
    /// Their payload bytes.
    pub bytes: u64,
}

/// The introspection state of one connection.
#[derive(Debug)]
pub(super) struct IntrospectState {
    rate: TokenBucket,
    /// The remote's requests we have not answered yet.
    owed: u32,
    /// Our requests it has not answered yet.
    asked: u32,
    /// Received and sent, for each of our channels that carried anything (a few per
    /// connection: a list, not a table of 256, keeps an idle connection small).
    totals: Vec<(u8, Totals, Totals)>,
    connected_at: Option<Instant>,
}

impl IntrospectState {
    pub(super) fn new(now: Instant) -> Self {
        IntrospectState {
            rate: TokenBucket::new(now, INTROSPECT_PER_SECOND, INTROSPECT_BURST),
            owed: 0,
            asked: 0,
            totals: Vec::new(),
            connected_at: None,
        }
    }

    pub(super) fn on_connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    fn slot(&mut self, channel: u8) -> &mut (u8, Totals, Totals) {
        let i = match self.totals.iter().position(|t| t.0 == channel) {
            Some(i) => i,
            None => {
                self.totals
                    .push((channel, Totals::default(), Totals::default()));
                self.totals.len() - 1
            }
        };
        &mut self.totals[i]
    }

    /// A complete message of `len` payload bytes arrived on our `channel`.
    pub(super) fn on_received(&mut self, channel: u8, messages: u64, len: usize) {
        let t = &mut self.slot(channel).1;
        t.messages += messages;
        t.bytes += len as u64;
    }

    /// `len` payload bytes left on our `channel`, finishing `messages` messages.
    pub(super) fn on_sent(&mut self, channel: u8, messages: u64, len: usize) {
        let t = &mut self.slot(channel).2;
        t.messages += messages;
        t.bytes += len as u64;
    }
}

impl PeerCore {
    /// A channel-0 introspection message from the remote (the handshake is over).
    pub(super) fn introspect_control(
        &mut self,
        now: Instant,
        msg: Control,
    ) -> Result<(), DisconnectReason> {
        let intro = &mut self.intro;
        match msg {
            Control::IntrospectRequest => {
                if intro.rate.available(now) == 0 {
                    return Err(DisconnectReason::ControlViolation(format!(
                        "more than {INTROSPECT_BURST} introspection requests at once \
                         ({INTROSPECT_PER_SECOND}/s allowed)"
                    )));
                }
                intro.rate.take(now, 1);
                intro.owed = intro.owed.saturating_add(1);
                self.events.push_back(Event::IntrospectRequested);
                Ok(())
            }
            Control::IntrospectResponse(answer) => {
                if intro.asked == 0 {
                    return Err(DisconnectReason::ControlViolation(
                        "IntrospectResponse to no request of ours".into(),
                    ));
                }
                intro.asked -= 1;
                self.events
                    .push_back(Event::Introspection(Box::new(answer)));
                Ok(())
            }
            other => Err(DisconnectReason::ControlViolation(format!(
                "unexpected control message {other:?}"
            ))),
        }
    }

    /// Asks the remote for its node's introspection; the answer comes as
    /// [`Event::Introspection`].
    pub fn request_introspection(&mut self) -> Result<(), IntrospectError> {
        if !self.is_active() {
            return Err(IntrospectError::NotActive);
        }
        if self.intro.asked >= MAX_INTROSPECT_OUTSTANDING {
            return Err(IntrospectError::Busy);
        }
        self.intro.asked += 1;
        self.control_out
            .push_back(super::control_packet(&Control::IntrospectRequest));
        Ok(())
    }

    /// Whether the remote waits for an answer to an `IntrospectRequest`.
    #[must_use]
    pub fn introspection_owed(&self) -> bool {
        self.intro.owed > 0
    }

    /// Answers the oldest unanswered `IntrospectRequest` of the remote with `answer`
    /// (cut to fit [`MAX_CONTROL_MESSAGE`], see
    /// [`Introspection::encode_bounded`]). Returns whether an answer was queued: not
    /// when none is owed or the connection is not up.
    pub fn answer_introspection(&mut self, answer: Introspection) -> bool {
        if self.intro.owed == 0 || !self.is_active() {
            return false;
        }
        let payload: Bytes = answer.encode_bounded(MAX_CONTROL_MESSAGE);
        // Through the scheduler: channel 0 is chunked like any other, so an answer
        // larger than a packet goes out in pieces.
        if self
            .sched
            .push(CONTROL_CHANNEL, MsgKind::Plain, payload)
            .is_err()
        {
            return false;
        }
        self.intro.owed -= 1;
        true
    }

    /// Time from the start of the connection to the end of its handshake.
    #[must_use]
    pub fn handshake_time(&self) -> Option<Duration> {
        self.intro
            .connected_at
            .map(|t| t.saturating_duration_since(self.started))
    }

    /// The last round-trip time and how many were measured so far (a runtime that
    /// samples now and then sees from the count whether the time is a new one).
    #[must_use]
    pub fn rtt_sample(&self) -> Option<(Duration, u64)> {
        let k = self.keepalive.as_ref()?;
        Some((k.last_rtt()?, k.rtt_samples()))
    }

    /// When the handshake completed.
    #[must_use]
    pub fn connected_at(&self) -> Option<Instant> {
        self.intro.connected_at
    }

    /// Messages and payload bytes received and sent so far on our `channel` (they
    /// never go down; channel 0 is not counted).
    #[must_use]
    pub fn channel_totals(&self, channel: u8) -> (Totals, Totals) {
        self.intro
            .totals
            .iter()
            .find(|t| t.0 == channel)
            .map_or_else(Default::default, |t| (t.1, t.2))
    }

    /// Counters and flow control of every channel whose service is up, by our id.
    pub fn channel_reports(&self) -> impl Iterator<Item = ChannelReport> + '_ {
        (1..=u8::MAX).filter_map(move |id| {
            let remote_id = self.services.send_id(id)?;
            let info = self.channel_info(id)?;
            let (recv, sent) = self.channel_totals(id);
            Some(ChannelReport {
                id,
                remote_id,
                sent_messages: sent.messages,
                sent_bytes: sent.bytes,
                recv_messages: recv.messages,
                recv_bytes: recv.bytes,
                send_queue_messages: info.send.queued_messages as u64,
                send_queue_bytes: info.send.queued_bytes as u64,
                recv_queue_messages: info.queued as u64,
                recv_window: info.recv.window,
                send_credit: info.send.credit,
            })
        })
    }

    /// This connection as an introspection lists it, once the handshake is done: the
    /// runtime adds what only it knows (the remote's address, who dialed).
    #[must_use]
    pub fn peer_report(
        &self,
        now: Instant,
        remote_addr: String,
        direction: Direction,
    ) -> Option<PeerReport> {
        let remote = self.remote()?;
        Some(PeerReport {
            node_id: remote.node_id.to_string(),
            remote_addr,
            direction,
            connected_ms: self
                .intro
                .connected_at
                .map_or(0, |t| millis(now.saturating_duration_since(t))),
            services: self.services_up().map(String::from).collect(),
            channels: self.channel_reports().collect(),
            requests_in_flight: u32::try_from(self.stall.pending()).unwrap_or(u32::MAX),
            rtt_us: self
                .rtt()
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            bytes_read: self.bytes_read,
            bytes_written: self.bytes_written,
        })
    }
}

/// Whole milliseconds of `d`, saturating.
#[must_use]
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
