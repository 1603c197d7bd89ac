//! [`Lifecycle`]: what the runtime may do with one connection at each stage of its
//! life, around its [`PeerCore`]. The core knows the wire; the lifecycle knows what
//! the node around it has said: whether the transport is secured yet, whether the
//! node admitted the peer, whether a dialer still waits for its answer, and when the
//! runtime may let the connection go.
//!
//! ```text
//! Securing ──secured──▶ Vetting ──vetted──▶ Handshake ──Connected──▶ Registering ──admitted──▶ Admitted
//!    │      (id proven)    │    (or refused)    │                         │                       │
//!    │                     │                    └───────────── Closed (the core's event) ◀────────┘
//!    └──fails, or closed: stop now                     linger, then stop (at once when nothing waits)
//!       (Securing ──secured, no id proven──▶ Handshake)
//! ```
//!
//! The runtime carries out its [`Step`]s, drained with [`Lifecycle::poll_step`],
//! which turns the core's events into steps as it goes. The choices it makes are
//! these.
//!
//! * **The node vets a proven id before the core speaks.** Once the transport proved
//!   the remote's key ([`Secured::remote`]), the runtime asks the node whether that
//!   node id may go on ([`AfterSecured::Vet`]); the core's `Version` waits for the
//!   answer ([`Lifecycle::handle_vetted`]). A refused remote (a banned id) reads only
//!   a goodbye saying why ([`PeerCore::refuse`]), no `Version` of ours.
//! * **Nothing reaches a service before the node admitted the peer.** A service that
//!   met its twin, or a channel with messages waiting, is announced
//!   ([`Step::ServiceUp`]) or delivered ([`Step::Deliver`]) only once admitted; the
//!   admission itself replays what came up and what arrived meanwhile
//!   ([`Lifecycle::handle_admission`]). Once the connection is closed, no service
//!   hears of it coming up any more.
//! * **The dialer is answered once**, when the peer is admitted and the services
//!   offered when the connection came up are answered: every service both nodes run
//!   is up then, so the dialer can send on it at once ([`Step::Reply`]).
//! * **Round-trip times** reach the node through an [`RttReport`], only while the
//!   peer is admitted and open ([`Step::Rtt`]).
//! * **A close request** ([`Lifecycle::handle_close`]) before the core speaks (the
//!   transport is being secured, or the node vets the remote) stops at once (nothing
//!   was said yet); on an open connection the core closes, which tells the remote
//!   why; once closed, a close without flush (a node that gives up waiting) stops the
//!   delivery of what is left.
//! * **What arrived before the close** is still delivered, within the linger time
//!   ([`Step::Closed`]); the runtime stops once nothing is left
//!   ([`Lifecycle::may_stop`]), or, if the peer was never admitted, at once.
//! * **The last word**: the reason the connection ended, or
//!   [`DisconnectReason::ConnectionClosed`] if nothing said ([`Lifecycle::finish`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::handshake::Version;
use super::rtt_report::RttReport;
use super::stall::Refusal;
use super::{Event, PeerCore};
use crate::config::Config;
use crate::id::NodeId;
use crate::introspect::Introspection;
use crate::reason::DisconnectReason;
use crate::secure::{Secured, Suite};
use crate::wire::control::RejectReason;

/// How a request of ours ended, for its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The remote answered with this payload.
    Response(Bytes),
    /// The remote refused it (it will not answer).
    Refused(Refusal),
    /// No answer came within its timeout.
    Stalled,
    /// The connection ended before the answer.
    Closed(DisconnectReason),
}

/// Where a connection is in its life (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The transport's handshake is under way; the core has not spoken.
    Securing,
    /// The transport proved the remote's id; the node decides whether it may go on
    /// (the core has not spoken).
    Vetting,
    /// The core's handshake (`Version` / `Verack`) is under way.
    Handshake,
    /// The handshake completed; the node has not answered whether the peer may stay.
    Registering,
    /// The node admitted the peer.
    Admitted,
}

/// What the runtime does once the transport is secured (from
/// [`Lifecycle::handle_secured`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum AfterSecured {
    /// Let the core speak now: start moving its bytes.
    Speak,
    /// Ask the node whether this proven node id may go on, and hand its answer to
    /// [`Lifecycle::handle_vetted`]; the core speaks only then.
    Vet(NodeId),
}

/// What the runtime carries out next (from [`Lifecycle::poll_step`], which turns the
/// core's events into steps with [`Lifecycle::handle_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing (the event is held back until the peer is admitted, or moot).
    Nothing,
    /// Ask the node to admit the peer: the handshake completed. Its answer goes to
    /// [`Lifecycle::handle_admission`].
    Register(Box<Registration>),
    /// Hand the channel's waiting messages to its service (the peer is admitted), then
    /// see whether the runtime may stop ([`Lifecycle::may_stop`]).
    Deliver(u8),
    /// Wake the senders waiting for room on the channel.
    Room(u8),
    /// Tell the service called so that the peer is up for it.
    ServiceUp(String),
    /// Tell the service called `service` that the peer is down for it.
    ServiceDown {
        /// The service.
        service: String,
        /// Why.
        reason: DisconnectReason,
    },
    /// An offer of a service was refused (worth a line in the log).
    ServiceRefused {
        /// The service.
        service: String,
        /// Why.
        reason: RejectReason,
        /// The remote refused our offer (else we refused its).
        by_remote: bool,
    },
    /// Tell the caller of our request `request_id` how it ended.
    Answer {
        /// Channel of the request.
        channel: u8,
        /// Its id.
        request_id: u32,
        /// How it ended.
        outcome: Outcome,
    },
    /// The remote asks for our node's introspection: fetch it and hand it to
    /// [`PeerCore::answer_introspection`].
    Introspect,
    /// The remote's answer to our introspection request.
    Introspection(Box<Introspection>),
    /// Answer the waiting dialer: the peer is up.
    Reply,
    /// Pass this round-trip time on to the node.
    Rtt(Duration),
    /// The connection is over: every caller waiting for an answer learns `reason`;
    /// what was received before is still delivered (a [`Step::Deliver`] per channel
    /// follows, if the peer was admitted), and the runtime stops after `linger` at
    /// the latest (earlier once [`Lifecycle::may_stop`] says so).
    Closed {
        /// Why the connection ended.
        reason: DisconnectReason,
        /// The longest the runtime keeps delivering what is left.
        linger: Duration,
    },
}

/// What the node learns of a peer it is asked to admit (with [`Step::Register`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The remote's `Version` ([`PeerCore::remote`]).
    pub version: Version,
    /// How long the handshake took ([`PeerCore::handshake_time`]).
    pub rtt: Option<Duration>,
    /// The cipher the transport agreed on (`None` in plaintext).
    pub suite: Option<Suite>,
}

/// One connection's life as the runtime sees it (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Lifecycle {
    stage: Stage,
    /// Why the connection ended, once it has.
    closed: Option<DisconnectReason>,
    /// A dialer waits for the answer.
    dialer: bool,
    /// How long what is left is still delivered after the close.
    linger: Duration,
    /// Round-trip times on their way to the node.
    rtt: RttReport,
    /// The cipher the transport agreed on.
    suite: Option<Suite>,
    /// Steps an admission left for [`poll_step`](Self::poll_step).
    steps: VecDeque<Step>,
}

impl Lifecycle {
    /// A connection whose transport is being secured, with `limits`' linger time and
    /// ping interval (round-trip times are reported at most once per interval); a
    /// dialer waits for the answer if `dialer`.
    #[must_use]
    pub fn new(limits: &Config, dialer: bool) -> Self {
        Lifecycle {
            stage: Stage::Securing,
            closed: None,
            dialer,
            linger: limits.linger,
            rtt: RttReport::new(limits.ping_interval),
            suite: None,
            steps: VecDeque::new(),
        }
    }

    /// Where the connection is.
    #[must_use]
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Whether the node admitted the peer.
    #[must_use]
    pub fn is_admitted(&self) -> bool {
        self.stage == Stage::Admitted
    }

    /// Why the connection ended, once it has.
    #[must_use]
    pub fn closed(&self) -> Option<&DisconnectReason> {
        self.closed.as_ref()
    }

    /// The transport is secured (`secured` is what its handshake proved and agreed):
    /// the core learns the remote's proven identity. When one was proven (and the
    /// core did not refuse it already, a dial answered by another key), the node
    /// vets it before the core speaks; else the core speaks now.
    pub fn handle_secured(
        &mut self,
        now: Instant,
        core: &mut PeerCore,
        secured: &Secured,
    ) -> AfterSecured {
        self.suite = secured.session.as_ref().map(|s| s.suite);
        let proven = secured.remote.as_ref().map(|remote| remote.node_id);
        if let Some(id) = proven {
            core.handle_authenticated(now, id);
        }
        if self.stage != Stage::Securing {
            return AfterSecured::Speak;
        }
        match proven {
            Some(id) if !core.is_closing() && !core.is_closed() => {
                self.stage = Stage::Vetting;
                AfterSecured::Vet(id)
            }
            _ => {
                self.stage = Stage::Handshake;
                AfterSecured::Speak
            }
        }
    }

    /// The node's answer to [`AfterSecured::Vet`]: `Ok` when the remote may go on,
    /// else why not (the core then refuses it: the remote reads only a goodbye with
    /// the reason). Returns whether the core speaks now (the runtime starts moving
    /// its bytes); `false` when the connection was closed meanwhile, or was not
    /// being vetted.
    pub fn handle_vetted(
        &mut self,
        now: Instant,
        answer: Result<(), DisconnectReason>,
        core: &mut PeerCore,
    ) -> bool {
        if self.stage != Stage::Vetting || self.closed.is_some() {
            return false;
        }
        self.stage = Stage::Handshake;
        if let Err(reason) = answer {
            core.refuse(now, reason);
        }
        true
    }

    /// The connection failed before its core spoke (the socket was unusable, the
    /// transport's handshake failed): it is over with `reason`, and the runtime stops
    /// now.
    pub fn handle_failed(&mut self, reason: DisconnectReason) {
        self.closed.get_or_insert(reason);
    }

    /// What to do for one event of `core`.
    pub fn handle_event(&mut self, event: Event, core: &PeerCore) -> Step {
        match event {
            Event::Connected => {
                self.stage = Stage::Registering;
                match core.remote() {
                    Some(version) => Step::Register(Box::new(Registration {
                        version: version.clone(),
                        rtt: core.handshake_time(),
                        suite: self.suite,
                    })),
                    None => Step::Nothing,
                }
            }
            Event::Readable(channel) if self.is_admitted() => Step::Deliver(channel),
            Event::Readable(_) => Step::Nothing,
            Event::Room(channel) => Step::Room(channel),
            Event::ServiceUp(name) if self.may_announce() => Step::ServiceUp(name),
            Event::ServiceUp(_) => Step::Nothing,
            Event::ServiceDown { service, reason } => Step::ServiceDown { service, reason },
            Event::ServiceRefused {
                service,
                reason,
                by_remote,
            } => Step::ServiceRefused {
                service,
                reason,
                by_remote,
            },
            Event::RequestStalled {
                channel,
                request_id,
            } => Step::Answer {
                channel,
                request_id,
                outcome: Outcome::Stalled,
            },
            Event::Response {
                channel,
                request_id,
                payload,
            } => Step::Answer {
                channel,
                request_id,
                outcome: Outcome::Response(payload),
            },
            Event::RequestRejected {
                channel,
                request_id,
                refusal,
            } => Step::Answer {
                channel,
                request_id,
                outcome: Outcome::Refused(refusal),
            },
            Event::IntrospectRequested => Step::Introspect,
            Event::Introspection(answer) => Step::Introspection(answer),
            Event::Closed(reason) => {
                self.closed = Some(reason.clone());
                if self.is_admitted() {
                    // What arrived before the close still goes to the services.
                    self.steps.extend(core.readable().map(Step::Deliver));
                }
                Step::Closed {
                    reason,
                    linger: self.linger,
                }
            }
        }
    }

    /// The node's answer to the registration ([`Step::Register`]) at `now`: `Ok` when
    /// the peer may stay, else why not (the core then closes the connection with that
    /// reason, which tells the remote). An admission replays through
    /// [`poll_step`](Self::poll_step) what came up and arrived meanwhile, in this
    /// order: the dialer's answer, a [`Step::ServiceUp`] per service that met its
    /// twin, a [`Step::Deliver`] per channel with messages waiting. Returns whether
    /// the peer was admitted now (not when the connection closed while the node
    /// decided).
    pub fn handle_admission(
        &mut self,
        now: Instant,
        answer: Result<(), DisconnectReason>,
        core: &mut PeerCore,
    ) -> bool {
        match answer {
            Err(reason) => {
                core.close(now, reason, false);
                false
            }
            Ok(()) if self.closed.is_some() => false,
            Ok(()) => {
                self.stage = Stage::Admitted;
                if self.take_reply(core) {
                    self.steps.push_back(Step::Reply);
                }
                let services = core.services_up().map(|s| Step::ServiceUp(s.into()));
                self.steps.extend(services);
                self.steps.extend(core.readable().map(Step::Deliver));
                true
            }
        }
    }

    /// The next step to carry out at `now`: what an admission left first, then one
    /// per event of the core (as [`handle_event`](Self::handle_event) turns it, events
    /// that need nothing skipped), then, once the core has no event left, the
    /// dialer's answer ([`Step::Reply`]) and a round-trip time for the node
    /// ([`Step::Rtt`]). `None` once nothing is left (until the next input).
    pub fn poll_step(&mut self, now: Instant, core: &mut PeerCore) -> Option<Step> {
        if let Some(step) = self.steps.pop_front() {
            return Some(step);
        }
        while let Some(event) = core.poll_event() {
            match self.handle_event(event, core) {
                Step::Nothing => {}
                step => return Some(step),
            }
        }
        if self.take_reply(core) {
            return Some(Step::Reply);
        }
        if !self.may_announce() {
            return None;
        }
        self.rtt.poll(now, core.rtt_sample()).map(Step::Rtt)
    }

    /// A request at `now` to close the connection for `reason` (writing what is
    /// queued first if `flush`): on an open connection the core closes (telling the
    /// remote why). Returns whether the runtime stops now: nothing was said on the
    /// connection yet, or it is over and the caller gives up on what is left to
    /// deliver (without `flush`).
    pub fn handle_close(
        &mut self,
        now: Instant,
        reason: DisconnectReason,
        flush: bool,
        core: &mut PeerCore,
    ) -> bool {
        if matches!(self.stage, Stage::Securing | Stage::Vetting) && self.closed.is_none() {
            self.closed = Some(reason);
            return true;
        }
        if self.closed.is_none() {
            core.close(now, reason, flush);
            return false;
        }
        !flush
    }

    /// Whether the runtime may stop now: the connection is over and nothing received
    /// is left for a service (asked of `undelivered`, as
    /// [`PeerCore::has_undelivered`] says, only when it matters), or the peer was
    /// never admitted (nothing of it goes to a service then).
    pub fn may_stop(&self, undelivered: impl FnOnce() -> bool) -> bool {
        self.closed.is_some() && (!self.is_admitted() || !undelivered())
    }

    /// The runtime stops: the reason the connection ended
    /// ([`DisconnectReason::ConnectionClosed`] if nothing said).
    pub fn finish(&mut self) -> DisconnectReason {
        self.closed
            .take()
            .unwrap_or(DisconnectReason::ConnectionClosed)
    }

    /// Services may hear of the peer: admitted and not closed.
    fn may_announce(&self) -> bool {
        self.is_admitted() && self.closed.is_none()
    }

    /// Whether to answer the dialer now (once): admitted, and the offers made when
    /// the connection came up answered.
    fn take_reply(&mut self, core: &PeerCore) -> bool {
        let reply = self.dialer && self.is_admitted() && !core.offers_pending();
        if reply {
            self.dialer = false;
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::connection::handshake::{Version, PROTOCOL_VERSION};
    use crate::connection::{ConnParams, CoreConfig, RecvBudget};
    use crate::id::NodeId;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    /// A core that has not spoken yet: no service up, nothing readable, no offer
    /// pending, no round trip measured.
    fn core(now: Instant) -> PeerCore {
        let local = Version {
            protocol: PROTOCOL_VERSION,
            network: "unit".into(),
            node_id: NodeId([1; 20]),
            listen_addr: None,
            services: Vec::new(),
            user_agent: "unit".into(),
            nonce: 1,
        };
        let params = ConnParams {
            local,
            expected: None,
            secret: [1; 16],
            services: Vec::new(),
        };
        let config = Arc::new(CoreConfig::new(Config::default()).expect("valid config"));
        PeerCore::new(now, config, params, Arc::new(RecvBudget::new(1 << 20)))
    }

    fn plain() -> Secured {
        Secured {
            remote: None,
            session: None,
        }
    }

    /// Every step left at `now`.
    fn steps(life: &mut Lifecycle, now: Instant, core: &mut PeerCore) -> Vec<Step> {
        std::iter::from_fn(|| life.poll_step(now, core)).collect()
    }

    /// A lifecycle admitted by the node (the dialer answered already).
    fn admitted(now: Instant, core: &mut PeerCore) -> Lifecycle {
        let mut life = Lifecycle::new(&Config::default(), true);
        assert_eq!(
            life.handle_secured(now, core, &plain()),
            AfterSecured::Speak
        );
        // (A core that has not spoken has no remote to register: see the Pair's tests.)
        let _ = life.handle_event(Event::Connected, core);
        assert_eq!(life.stage(), Stage::Registering);
        assert!(life.handle_admission(now, Ok(()), core));
        assert_eq!(steps(&mut life, now, core), [Step::Reply]);
        life
    }

    fn shutdown() -> DisconnectReason {
        DisconnectReason::Shutdown
    }

    #[test]
    fn the_stages_follow_the_transport_the_handshake_and_the_node() {
        let now = t0();
        let mut core = core(now);
        let mut life = Lifecycle::new(&Config::default(), true);
        assert_eq!(life.stage(), Stage::Securing);
        assert_eq!(
            life.handle_secured(now, &mut core, &plain()),
            AfterSecured::Speak
        );
        assert_eq!(life.stage(), Stage::Handshake);
        let _ = life.handle_event(Event::Connected, &core);
        assert_eq!(life.stage(), Stage::Registering);
        assert!(!life.is_admitted());
        assert!(life.handle_admission(now, Ok(()), &mut core));
        assert!(life.is_admitted());
        assert_eq!(steps(&mut life, now, &mut core), [Step::Reply]);
        // The dialer is answered once.
        assert_eq!(steps(&mut life, now, &mut core), []);
    }

    #[test]
    fn nothing_reaches_a_service_before_the_node_admitted_the_peer() {
        let now = t0();
        let mut core = core(now);
        let mut life = Lifecycle::new(&Config::default(), false);
        assert_eq!(
            life.handle_secured(now, &mut core, &plain()),
            AfterSecured::Speak
        );
        let _ = life.handle_event(Event::Connected, &core);
        assert_eq!(life.handle_event(Event::Readable(3), &core), Step::Nothing);
        assert_eq!(
            life.handle_event(Event::ServiceUp("chat".into()), &core),
            Step::Nothing
        );
        // Room and a service going down concern senders and services that heard of
        // the peer: they pass whatever the stage.
        assert_eq!(life.handle_event(Event::Room(3), &core), Step::Room(3));
        let down = Event::ServiceDown {
            service: "chat".into(),
            reason: DisconnectReason::ServiceDetached,
        };
        assert!(matches!(
            life.handle_event(down, &core),
            Step::ServiceDown { .. }
        ));

        assert!(life.handle_admission(now, Ok(()), &mut core));
        assert_eq!(
            life.handle_event(Event::Readable(3), &core),
            Step::Deliver(3)
        );
        assert_eq!(
            life.handle_event(Event::ServiceUp("chat".into()), &core),
            Step::ServiceUp("chat".into())
        );
    }

    #[test]
    fn after_the_close_no_service_comes_up_but_what_arrived_is_delivered() {
        let now = t0();
        let mut core = core(now);
        let mut life = admitted(now, &mut core);
        assert_eq!(
            life.handle_event(Event::Closed(shutdown()), &core),
            Step::Closed {
                reason: shutdown(),
                linger: Config::default().linger,
            }
        );
        assert_eq!(life.closed(), Some(&shutdown()));
        assert_eq!(
            life.handle_event(Event::ServiceUp("chat".into()), &core),
            Step::Nothing
        );
        assert_eq!(
            life.handle_event(Event::Readable(3), &core),
            Step::Deliver(3)
        );
    }

    #[test]
    fn the_answers_to_our_requests_go_to_their_callers() {
        let core = core(t0());
        let mut life = Lifecycle::new(&Config::default(), false);
        let answer = |request_id, outcome| Step::Answer {
            channel: 7,
            request_id,
            outcome,
        };
        assert_eq!(
            life.handle_event(
                Event::RequestStalled {
                    channel: 7,
                    request_id: 1
                },
                &core
            ),
            answer(1, Outcome::Stalled)
        );
        assert_eq!(
            life.handle_event(
                Event::Response {
                    channel: 7,
                    request_id: 2,
                    payload: Bytes::from_static(b"ok"),
                },
                &core
            ),
            answer(2, Outcome::Response(Bytes::from_static(b"ok")))
        );
        assert_eq!(
            life.handle_event(
                Event::RequestRejected {
                    channel: 7,
                    request_id: 3,
                    refusal: Refusal::Busy,
                },
                &core
            ),
            answer(3, Outcome::Refused(Refusal::Busy))
        );
    }

    #[test]
    fn a_close_before_the_transport_is_secured_stops_at_once() {
        let mut core = core(t0());
        let mut life = Lifecycle::new(&Config::default(), true);
        assert!(life.handle_close(t0(), shutdown(), true, &mut core));
        assert!(!core.is_closing(), "the core never spoke");
        assert!(life.may_stop(|| unreachable!("never admitted")));
        assert_eq!(life.finish(), shutdown());
    }

    #[test]
    fn a_close_of_an_open_connection_goes_to_the_core() {
        let now = t0();
        let mut core = core(now);
        let mut life = Lifecycle::new(&Config::default(), false);
        assert_eq!(
            life.handle_secured(now, &mut core, &plain()),
            AfterSecured::Speak
        );
        let reason = DisconnectReason::Application("bye".into());
        assert!(!life.handle_close(now, reason.clone(), true, &mut core));
        assert_eq!(core.close_reason(), Some(&reason));
        // Only the core's Closed event ends it.
        assert!(!life.may_stop(|| false));
    }

    #[test]
    fn once_closed_only_a_close_without_flush_stops_the_delivery() {
        let now = t0();
        let mut core = core(now);
        let mut life = admitted(now, &mut core);
        let _ = life.handle_event(Event::Closed(shutdown()), &core);
        assert!(!life.handle_close(now, shutdown(), true, &mut core));
        assert!(life.handle_close(now, shutdown(), false, &mut core));
    }

    #[test]
    fn a_transport_that_fails_ends_the_connection_with_its_reason() {
        let mut life = Lifecycle::new(&Config::default(), true);
        let reason = DisconnectReason::Io("reset".into());
        life.handle_failed(reason.clone());
        assert!(life.may_stop(|| unreachable!("never admitted")));
        // A Switch that closes it meanwhile does not change the reason.
        let mut core = core(t0());
        assert!(!life.handle_close(t0(), shutdown(), true, &mut core));
        assert_eq!(life.finish(), reason);
    }

    #[test]
    fn a_refusal_closes_and_an_admission_after_the_close_is_late() {
        let now = t0();
        let mut core = core(now);
        let mut life = Lifecycle::new(&Config::default(), true);
        let _ = life.handle_event(Event::Connected, &core);
        let evicted = DisconnectReason::Evicted;
        assert!(!life.handle_admission(now, Err(evicted.clone()), &mut core));
        assert_eq!(core.close_reason(), Some(&evicted), "the core closes");
        let _ = life.handle_event(Event::Closed(evicted), &core);
        assert!(!life.handle_admission(now, Ok(()), &mut core), "late");
        assert!(!life.is_admitted());
        // Never admitted: nothing of it is delivered, it stops at once.
        assert!(life.may_stop(|| unreachable!("never admitted")));
        assert!(!steps(&mut life, now, &mut core).contains(&Step::Reply));
    }

    #[test]
    fn an_admitted_peer_stops_once_nothing_is_left_to_deliver() {
        let now = t0();
        let mut core = core(now);
        let mut life = admitted(now, &mut core);
        assert!(!life.may_stop(|| false), "open");
        let _ = life.handle_event(Event::Closed(shutdown()), &core);
        assert!(!life.may_stop(|| true));
        assert!(life.may_stop(|| false));
        assert_eq!(life.finish(), shutdown());
    }

    #[test]
    fn a_connection_that_ends_without_a_word_ends_as_closed() {
        let mut life = Lifecycle::new(&Config::default(), false);
        assert_eq!(life.finish(), DisconnectReason::ConnectionClosed);
    }

    #[test]
    fn an_inbound_connection_has_nobody_to_answer() {
        let now = t0();
        let mut core = core(now);
        let mut life = Lifecycle::new(&Config::default(), false);
        assert_eq!(
            life.handle_secured(now, &mut core, &plain()),
            AfterSecured::Speak
        );
        let _ = life.handle_event(Event::Connected, &core);
        assert!(life.handle_admission(now, Ok(()), &mut core));
        assert_eq!(steps(&mut life, now, &mut core), []);
    }
}
