//! The runtime's [`Lifecycle`] around a real core: what came up and arrived before the
//! node admitted the peer is replayed on admission, the dialer waits for the offers
//! of the connection's start, round-trip times pass only while admitted, and a closed
//! connection is kept until what it received is delivered; a proven id is vetted
//! before the core speaks, and a refused one hears only the goodbye.

use std::time::Duration;

use bytes::Bytes;
use switchyard_proto::config::Config;
use switchyard_proto::connection::lifecycle::{AfterSecured, Lifecycle, Stage, Step};
use switchyard_proto::secure::{RemoteIdentity, Secured};
use switchyard_proto::wire::control::Control;
use switchyard_proto::{DisconnectReason, Event, NodeId};

use crate::pair::*;

/// B's lifecycle, fed B's events so far (the transport secured first); the steps
/// it gave.
fn follow(p: &mut Pair, life: &mut Lifecycle) -> Vec<Step> {
    let now = p.now;
    let plain = Secured {
        remote: None,
        session: None,
    };
    // In plaintext no id is proven: nothing to vet, the core speaks.
    assert_eq!(
        life.handle_secured(now, &mut p.b.core, &plain),
        AfterSecured::Speak
    );
    std::mem::take(&mut p.b.events)
        .into_iter()
        .map(|e| life.handle_event(e, &p.b.core))
        .collect()
}

/// Every step B's lifecycle has left now (B's core's events included).
fn poll(p: &mut Pair, life: &mut Lifecycle) -> Vec<Step> {
    let now = p.now;
    std::iter::from_fn(|| life.poll_step(now, &mut p.b.core)).collect()
}

fn has_rtt(steps: &[Step]) -> bool {
    steps.iter().any(|s| matches!(s, Step::Rtt(_)))
}

#[test]
fn what_came_up_and_arrived_before_the_admission_is_replayed_by_it() {
    let mut p = Pair::new(&Config::default());
    p.b.stall(BULK, true);
    p.connect();
    for m in numbered(3, 100) {
        p.a.core.send(BULK, m).unwrap();
    }
    p.run_for(Duration::from_millis(10));
    let mut life = Lifecycle::new(&Config::default(), true);
    let steps = follow(&mut p, &mut life);
    let a = version(1).node_id;
    assert!(
        matches!(steps.first(), Some(Step::Register(r)) if r.version.node_id == a && r.rtt.is_some() && r.suite.is_none()),
        "the node registers A's version: {steps:?}"
    );
    assert!(
        steps
            .iter()
            .all(|s| !matches!(s, Step::ServiceUp(_) | Step::Deliver(_))),
        "nothing before the admission: {steps:?}"
    );
    let now = p.now;
    assert!(life.handle_admission(now, Ok(()), &mut p.b.core));
    let steps = poll(&mut p, &mut life);
    assert_eq!(
        steps[..3],
        [
            Step::Reply,
            Step::ServiceUp("test".into()),
            Step::Deliver(BULK)
        ],
        "{steps:?}"
    );
}

/// The steps an admission left come first, then the core's events as steps (the
/// ones that need nothing skipped); a refusal closes through the core.
#[test]
fn the_admission_s_steps_come_before_the_core_s_events() {
    let mut p = Pair::new(&Config::default());
    p.b.stall(BULK, true);
    p.connect();
    p.a.core.send(BULK, Bytes::from_static(b"early")).unwrap();
    p.run_for(Duration::from_millis(10));
    let mut refused = Lifecycle::new(&Config::default(), false);
    let mut life = refused.clone();
    let _ = follow(&mut p, &mut life);
    let now = p.now;
    assert!(life.handle_admission(now, Ok(()), &mut p.b.core));
    // Events of the core not drained yet: the remote's end wakes the senders
    // waiting for room.
    p.b.core.handle_eof(now, &mut bytes::BytesMut::new());
    let steps = poll(&mut p, &mut life);
    assert_eq!(
        steps[..2],
        [Step::ServiceUp("test".into()), Step::Deliver(BULK)]
    );
    assert!(steps[2..].contains(&Step::Room(BULK)), "{steps:?}");
    assert!(
        steps[2..]
            .iter()
            .all(|s| matches!(s, Step::Room(_) | Step::Rtt(_))),
        "no Reply: nobody dialed; {steps:?}"
    );
    // The node refuses instead: the core closes with its reason.
    let _ = follow(&mut p, &mut refused);
    assert!(!refused.handle_admission(now, Err(DisconnectReason::Evicted), &mut p.b.core));
    assert!(poll(&mut p, &mut refused).is_empty(), "closed already");
}

#[test]
fn the_dialer_is_answered_once_the_offers_of_the_start_are_answered() {
    let mut p = Pair::new(&Config::default());
    assert!(p.run_until(Duration::from_secs(5), |p| p.b.connected()));
    assert!(p.b.core.offers_pending(), "the start's offers are out");
    let mut life = Lifecycle::new(&Config::default(), true);
    let _ = follow(&mut p, &mut life);
    let now = p.now;
    assert!(life.handle_admission(now, Ok(()), &mut p.b.core));
    assert!(!poll(&mut p, &mut life).contains(&Step::Reply));
    assert!(p.run_until(Duration::from_secs(5), |p| !p.b.core.offers_pending()));
    let steps = follow(&mut p, &mut life);
    assert!(steps.contains(&Step::ServiceUp("test".into())), "{steps:?}");
    assert!(poll(&mut p, &mut life).contains(&Step::Reply));
    assert!(!poll(&mut p, &mut life).contains(&Step::Reply), "once");
}

#[test]
fn round_trip_times_pass_only_while_admitted_and_open() {
    let limits = Config::default();
    let mut p = Pair::connected();
    p.run_for(Duration::from_millis(10));
    let mut life = Lifecycle::new(&limits, false);
    let _ = follow(&mut p, &mut life);
    assert!(p.b.core.rtt_sample().is_some(), "the probe of the start");
    assert!(!has_rtt(&poll(&mut p, &mut life)));
    let now = p.now;
    assert!(life.handle_admission(now, Ok(()), &mut p.b.core));
    assert!(has_rtt(&poll(&mut p, &mut life)));
    // A keepalive round trip after the report interval, once closed: not passed on.
    p.run_for(limits.ping_interval + Duration::from_secs(1));
    assert!(matches!(p.b.core.rtt_sample(), Some((_, n)) if n >= 2));
    let mut open = life.clone();
    let _ = life.handle_event(Event::Closed(DisconnectReason::Shutdown), &p.b.core);
    assert!(!has_rtt(&poll(&mut p, &mut life)));
    assert!(has_rtt(&poll(&mut p, &mut open)), "open: it would");
}

#[test]
fn a_closed_connection_is_kept_until_what_it_received_is_delivered() {
    let mut p = Pair::new(&Config::default());
    p.b.stall(BULK, true);
    p.connect();
    let mut life = Lifecycle::new(&Config::default(), false);
    let _ = follow(&mut p, &mut life);
    let now = p.now;
    assert!(life.handle_admission(now, Ok(()), &mut p.b.core));
    let _ = poll(&mut p, &mut life);
    p.a.core
        .send(BULK, Bytes::from_static(b"last words"))
        .unwrap();
    let now = p.now;
    p.a.core.close(now, DisconnectReason::Shutdown, true);
    let _ = p.until_closed(Who::B, Duration::from_secs(2));
    let steps = follow(&mut p, &mut life);
    assert!(steps.contains(&Step::Deliver(BULK)), "{steps:?}");
    assert!(steps.contains(&Step::Closed {
        reason: DisconnectReason::ByRemote(Box::new(DisconnectReason::Shutdown)),
        linger: Config::default().linger,
    }));
    // The close replays every channel with messages left, after the Closed step.
    assert_eq!(poll(&mut p, &mut life), [Step::Deliver(BULK)]);
    assert!(!life.may_stop(|| p.b.core.has_undelivered()));
    let msg = p.b.core.recv(BULK).expect("still readable after the close");
    assert_eq!(msg.payload, Bytes::from_static(b"last words"));
    assert!(life.may_stop(|| p.b.core.has_undelivered()));
}

#[test]
fn a_peer_never_admitted_has_nothing_replayed_at_the_close() {
    let mut p = Pair::new(&Config::default());
    p.b.stall(BULK, true);
    p.connect();
    p.a.core.send(BULK, Bytes::from_static(b"early")).unwrap();
    p.run_for(Duration::from_millis(10));
    let mut life = Lifecycle::new(&Config::default(), false);
    let _ = follow(&mut p, &mut life);
    let closed = life.handle_event(Event::Closed(DisconnectReason::Shutdown), &p.b.core);
    assert!(matches!(closed, Step::Closed { .. }));
    assert!(p.b.core.readable().next().is_some(), "messages wait");
    assert_eq!(poll(&mut p, &mut life), []);
    assert!(life.may_stop(|| unreachable!("never admitted")));
}

/// What the transport's handshake proved: the remote holds `id`'s key.
fn proven(id: NodeId) -> Secured {
    Secured {
        remote: Some(RemoteIdentity {
            node_id: id,
            public_key: [7; 32],
        }),
        session: None,
    }
}

#[test]
fn a_proven_id_is_vetted_before_the_core_speaks() {
    let mut solo = Solo::new(&Config::default());
    let mut life = Lifecycle::new(&Config::default(), false);
    let now = solo.now;
    let remote = version(2).node_id;
    assert_eq!(
        life.handle_secured(now, &mut solo.core, &proven(remote)),
        AfterSecured::Vet(remote)
    );
    assert_eq!(life.stage(), Stage::Vetting);
    assert!(life.handle_vetted(now, Ok(()), &mut solo.core));
    assert_eq!(life.stage(), Stage::Handshake);
    solo.drain();
    assert!(
        matches!(solo.controls().as_slice(), [Control::Version(v)] if v.node_id == version(1).node_id),
        "{:?}",
        solo.controls()
    );
    // Asked once: a second answer changes nothing.
    assert!(!life.handle_vetted(now, Err(DisconnectReason::Banned), &mut solo.core));
    assert!(!solo.core.is_closing());
}

#[test]
fn a_refused_id_hears_only_the_goodbye_and_never_our_version() {
    let mut solo = Solo::new(&Config::default());
    let mut life = Lifecycle::new(&Config::default(), false);
    let now = solo.now;
    let _ = life.handle_secured(now, &mut solo.core, &proven(version(2).node_id));
    assert!(life.handle_vetted(now, Err(DisconnectReason::Banned), &mut solo.core));
    solo.drain();
    assert_eq!(
        solo.controls(),
        vec![Control::Goodbye(DisconnectReason::Banned)]
    );
    // Goodbye written, write half shut: over, without waiting for the remote.
    assert!(solo.core.is_closed());
    let steps: Vec<Step> = std::mem::take(&mut solo.events)
        .into_iter()
        .map(|e| life.handle_event(e, &solo.core))
        .collect();
    assert_eq!(
        steps,
        vec![Step::Closed {
            reason: DisconnectReason::Banned,
            linger: Config::default().linger,
        }]
    );
    assert!(life.may_stop(|| unreachable!("never admitted")));
    assert_eq!(life.finish(), DisconnectReason::Banned);
}

#[test]
fn the_refused_remote_closes_with_the_reason_and_no_version_of_ours() {
    let mut p = Pair::new(&Config::default());
    let now = p.now;
    p.b.core.refuse(now, DisconnectReason::Banned);
    assert_eq!(
        p.until_closed(Who::A, Duration::from_secs(1)),
        DisconnectReason::ByRemote(Box::new(DisconnectReason::Banned))
    );
    assert!(p.a.core.remote().is_none(), "A never completed a handshake");
    assert!(!p.a.connected());
}

#[test]
fn a_close_while_the_node_vets_stops_at_once_and_the_core_never_speaks() {
    let mut solo = Solo::new(&Config::default());
    let mut life = Lifecycle::new(&Config::default(), false);
    let now = solo.now;
    let _ = life.handle_secured(now, &mut solo.core, &proven(version(2).node_id));
    assert!(life.handle_close(now, DisconnectReason::Shutdown, true, &mut solo.core));
    assert!(!life.handle_vetted(now, Ok(()), &mut solo.core), "too late");
    assert!(life.may_stop(|| unreachable!("never admitted")));
    assert_eq!(life.finish(), DisconnectReason::Shutdown);
}

#[test]
fn a_dial_answered_by_another_key_is_not_vetted_the_core_refuses_it_itself() {
    let limits = Config::default();
    let now = t0();
    let mut params = params(1, vec![test_service(channels())]);
    params.expected = Some(NodeId([0xaa; 20]));
    let budget = std::sync::Arc::new(switchyard_proto::RecvBudget::new(1 << 20));
    let core = core_with(now, &limits, params, budget);
    let mut solo = Solo::with_core(now, core);
    let mut life = Lifecycle::new(&limits, true);
    assert_eq!(
        life.handle_secured(now, &mut solo.core, &proven(NodeId([0xbb; 20]))),
        AfterSecured::Speak
    );
    assert_eq!(life.stage(), Stage::Handshake);
    assert!(solo.core.is_closing());
}
