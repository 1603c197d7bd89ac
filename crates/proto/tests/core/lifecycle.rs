//! The runtime's [`Lifecycle`] around a real core: what came up and arrived before the
//! node admitted the peer is replayed on admission, the dialer waits for the offers
//! of the connection's start, round-trip times pass only while admitted, and a closed
//! connection is kept until what it received is delivered.

use std::time::Duration;

use bytes::Bytes;
use switchyard_proto::config::Config;
use switchyard_proto::connection::lifecycle::{Admission, Lifecycle, Step};
use switchyard_proto::secure::Secured;
use switchyard_proto::{DisconnectReason, Event};

use crate::pair::*;

/// B's lifecycle, fed B's events so far (the transport secured first); the steps
/// it gave.
fn follow(p: &mut Pair, life: &mut Lifecycle) -> Vec<Step> {
    let now = p.now;
    let plain = Secured {
        remote: None,
        session: None,
    };
    life.handle_secured(now, &mut p.b.core, &plain);
    std::mem::take(&mut p.b.events)
        .into_iter()
        .map(|e| life.handle_event(e))
        .collect()
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
    assert_eq!(steps.first(), Some(&Step::Register));
    assert!(
        steps
            .iter()
            .all(|s| !matches!(s, Step::ServiceUp(_) | Step::Deliver(_))),
        "nothing before the admission: {steps:?}"
    );
    assert_eq!(
        life.handle_admission(Ok(()), &p.b.core),
        Admission::Admitted {
            reply: true,
            services: vec!["test".into()],
            readable: vec![BULK],
        }
    );
}

#[test]
fn the_dialer_is_answered_once_the_offers_of_the_start_are_answered() {
    let mut p = Pair::new(&Config::default());
    assert!(p.run_until(Duration::from_secs(5), |p| p.b.connected()));
    assert!(p.b.core.offers_pending(), "the start's offers are out");
    let mut life = Lifecycle::new(&Config::default(), true);
    let _ = follow(&mut p, &mut life);
    assert!(matches!(
        life.handle_admission(Ok(()), &p.b.core),
        Admission::Admitted { reply: false, .. }
    ));
    assert!(!life.after_events(p.now, &p.b.core).reply);
    assert!(p.run_until(Duration::from_secs(5), |p| !p.b.core.offers_pending()));
    let steps = follow(&mut p, &mut life);
    assert!(steps.contains(&Step::ServiceUp("test".into())), "{steps:?}");
    assert!(life.after_events(p.now, &p.b.core).reply);
    assert!(!life.after_events(p.now, &p.b.core).reply, "once");
}

#[test]
fn round_trip_times_pass_only_while_admitted_and_open() {
    let limits = Config::default();
    let mut p = Pair::connected();
    p.run_for(Duration::from_millis(10));
    let mut life = Lifecycle::new(&limits, false);
    let _ = follow(&mut p, &mut life);
    assert!(p.b.core.rtt_sample().is_some(), "the probe of the start");
    assert_eq!(life.after_events(p.now, &p.b.core).rtt, None);
    let _ = life.handle_admission(Ok(()), &p.b.core);
    assert!(life.after_events(p.now, &p.b.core).rtt.is_some());
    // A keepalive round trip after the report interval, once closed: not passed on.
    p.run_for(limits.ping_interval + Duration::from_secs(1));
    assert!(matches!(p.b.core.rtt_sample(), Some((_, n)) if n >= 2));
    let mut open = life.clone();
    let _ = life.handle_event(Event::Closed(DisconnectReason::Shutdown));
    assert_eq!(life.after_events(p.now, &p.b.core).rtt, None);
    assert!(
        open.after_events(p.now, &p.b.core).rtt.is_some(),
        "open: it would"
    );
}

#[test]
fn a_closed_connection_is_kept_until_what_it_received_is_delivered() {
    let mut p = Pair::new(&Config::default());
    p.b.stall(BULK, true);
    p.connect();
    let mut life = Lifecycle::new(&Config::default(), false);
    let _ = follow(&mut p, &mut life);
    let _ = life.handle_admission(Ok(()), &p.b.core);
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
    assert!(!life.may_stop(|| p.b.core.has_undelivered()));
    let msg = p.b.core.recv(BULK).expect("still readable after the close");
    assert_eq!(msg.payload, Bytes::from_static(b"last words"));
    assert!(life.may_stop(|| p.b.core.has_undelivered()));
}
