//! Channel-0 service negotiation: twins meet over each side's own channel ids,
//! mismatches are refused on both sides, services come and go while the connection
//! lives, and a hostile remote's service messages close only it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard_proto::config::{ChannelConfig, Config};
use switchyard_proto::connection::services::{AttachError, ServiceSpec};
use switchyard_proto::wire::codec::{Msg, MsgKind, Packet};
use switchyard_proto::wire::control::{ChannelGrant, Control, RejectReason, ServiceOffer};
use switchyard_proto::{DisconnectReason, Event, PushError, RecvBudget};

use crate::pair::*;

fn chan(limits: &Config, priority: u16) -> ChannelConfig {
    limits.channel(priority).send_queue(10_000, 1 << 28)
}

/// A pair where A and B run the given services.
fn pair_of(a: Vec<ServiceSpec>, b: Vec<ServiceSpec>) -> Pair {
    let limits = Config::default();
    let now = t0();
    let budget = Arc::new(RecvBudget::new(u64::MAX / 4));
    Pair::from_cores(
        now,
        core_with(now, &limits, params(1, a), budget.clone()),
        core_with(now, &limits, params(2, b), budget),
    )
}

fn spec(name: &str, major: u32, ids: &[u8]) -> ServiceSpec {
    let limits = Config::default();
    service(
        name,
        major,
        ids.iter().map(|id| (*id, chan(&limits, 1))).collect(),
    )
}

fn ups(side: &Side) -> Vec<String> {
    side.events
        .iter()
        .filter_map(|e| match e {
            Event::ServiceUp(name) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn downs(side: &Side) -> Vec<(String, DisconnectReason)> {
    side.events
        .iter()
        .filter_map(|e| match e {
            Event::ServiceDown { service, reason } => Some((service.clone(), reason.clone())),
            _ => None,
        })
        .collect()
}

fn refusals(side: &Side) -> Vec<(String, RejectReason, bool)> {
    side.events
        .iter()
        .filter_map(|e| match e {
            Event::ServiceRefused {
                service,
                reason,
                by_remote,
            } => Some((service.clone(), reason.clone(), *by_remote)),
            _ => None,
        })
        .collect()
}

fn settle(p: &mut Pair) {
    p.run_for(Duration::from_millis(50));
    assert!(p.a.closed().is_none(), "a closed: {:?}", p.a.closed());
    assert!(p.b.closed().is_none(), "b closed: {:?}", p.b.closed());
}

#[test]
fn twins_on_different_channel_ids_meet_and_exchange_both_ways() {
    let mut p = pair_of(
        vec![spec("chat", 1, &[0x10, 0x11])],
        vec![spec("chat", 1, &[0x20, 0x21])],
    );
    p.connect();
    assert_eq!(ups(&p.a), vec!["chat"]);
    assert_eq!(ups(&p.b), vec!["chat"]);
    assert_eq!(p.a.core.remote_channel(0x10), Some(0x20));
    assert_eq!(p.b.core.remote_channel(0x21), Some(0x11));
    assert_eq!(p.a.core.services_up().collect::<Vec<_>>(), vec!["chat"]);
    p.a.core.send(0x10, Bytes::from_static(b"to b")).unwrap();
    p.b.core.send(0x21, Bytes::from_static(b"to a")).unwrap();
    settle(&mut p);
    assert_eq!(p.b.payloads(0x20), vec![Bytes::from_static(b"to b")]);
    assert_eq!(p.a.payloads(0x11), vec![Bytes::from_static(b"to a")]);
    // Channel info is asked by our own id.
    let info = p.a.core.channel_info(0x10).unwrap();
    assert_eq!(info.send.sent_bytes, 4);
}

#[test]
fn a_service_the_remote_lacks_fails_locally_and_the_connection_survives() {
    let mut p = pair_of(
        vec![spec("chat", 1, &[0x10]), spec("extra", 1, &[0x30])],
        vec![spec("chat", 1, &[0x10])],
    );
    p.connect();
    settle(&mut p);
    assert_eq!(ups(&p.a), vec!["chat"]);
    assert_eq!(
        refusals(&p.a),
        vec![("extra".into(), RejectReason::NotRunning, true)]
    );
    assert!(!p.a.core.accepts(0x30));
    assert_eq!(
        p.a.core.send(0x30, Bytes::from_static(b"x")),
        Err(PushError::ServiceNotUp(0x30))
    );
    assert_eq!(
        p.a.core.check_send(0x30, 1),
        Err(PushError::ServiceNotUp(0x30))
    );
    p.a.core.send(0x10, Bytes::from_static(b"ok")).unwrap();
    settle(&mut p);
    assert_eq!(p.b.payloads(0x10), vec![Bytes::from_static(b"ok")]);
}

#[test]
fn another_major_version_is_refused_with_the_reason_on_both_sides() {
    let mut p = pair_of(
        vec![spec("chat", 1, &[0x10]), spec("sync", 1, &[0x11])],
        vec![spec("chat", 2, &[0x10]), spec("sync", 1, &[0x11, 0x12])],
    );
    p.run_until(Duration::from_secs(1), |p| {
        p.a.connected() && p.b.connected()
    });
    settle(&mut p);
    assert!(ups(&p.a).is_empty() && ups(&p.b).is_empty());
    let a = refusals(&p.a);
    assert!(a.contains(&(
        "chat".into(),
        RejectReason::VersionMismatch { major: 2, minor: 0 },
        true
    )));
    assert!(a.contains(&(
        "chat".into(),
        RejectReason::VersionMismatch { major: 1, minor: 0 },
        false
    )));
    assert!(a.contains(&(
        "sync".into(),
        RejectReason::ChannelMismatch { count: 2 },
        true
    )));
    let b = refusals(&p.b);
    assert!(b.contains(&(
        "chat".into(),
        RejectReason::VersionMismatch { major: 1, minor: 0 },
        true
    )));
    assert!(b.contains(&(
        "sync".into(),
        RejectReason::ChannelMismatch { count: 1 },
        true
    )));
    assert_eq!(
        p.b.core.send(0x10, Bytes::from_static(b"x")),
        Err(PushError::ServiceNotUp(0x10))
    );
}

#[test]
fn instances_of_one_service_each_meet_only_their_twin() {
    let mut p = pair_of(
        vec![
            spec("headers/chain-a", 1, &[0x10]),
            spec("headers/chain-b", 1, &[0x11]),
        ],
        vec![
            spec("headers/chain-b", 1, &[0x30]),
            spec("headers/chain-a", 1, &[0x31]),
        ],
    );
    p.run_until(Duration::from_secs(1), |p| {
        ups(&p.a).len() == 2 && ups(&p.b).len() == 2
    });
    p.a.core.send(0x10, Bytes::from_static(b"a")).unwrap();
    p.a.core.send(0x11, Bytes::from_static(b"b")).unwrap();
    settle(&mut p);
    assert_eq!(p.b.payloads(0x31), vec![Bytes::from_static(b"a")]);
    assert_eq!(p.b.payloads(0x30), vec![Bytes::from_static(b"b")]);
}

#[test]
fn a_service_attached_at_run_time_comes_up_once_both_sides_run_it() {
    let mut p = pair_of(
        vec![spec("chat", 1, &[0x10])],
        vec![spec("chat", 1, &[0x10])],
    );
    p.connect();
    let now = p.now;
    p.a.core
        .attach(now, Arc::new(spec("late", 1, &[0x40])))
        .unwrap();
    settle(&mut p);
    assert_eq!(
        refusals(&p.a),
        vec![("late".into(), RejectReason::NotRunning, true)]
    );
    // B attaches it too, on its own id: B offers, A accepts.
    let now = p.now;
    p.b.core
        .attach(now, Arc::new(spec("late", 1, &[0x77])))
        .unwrap();
    settle(&mut p);
    assert_eq!(ups(&p.a), vec!["chat", "late"]);
    assert_eq!(ups(&p.b), vec!["chat", "late"]);
    p.b.core.send(0x77, Bytes::from_static(b"hi")).unwrap();
    p.a.core.send(0x40, Bytes::from_static(b"yo")).unwrap();
    settle(&mut p);
    assert_eq!(p.a.payloads(0x40), vec![Bytes::from_static(b"hi")]);
    assert_eq!(p.b.payloads(0x77), vec![Bytes::from_static(b"yo")]);
    // A name attached twice, or a channel of another service, is refused.
    let now = p.now;
    assert_eq!(
        p.a.core.attach(now, Arc::new(spec("late", 1, &[0x41]))),
        Err(AttachError::Duplicate("late".into()))
    );
    assert_eq!(
        p.a.core.attach(now, Arc::new(spec("other", 1, &[0x10]))),
        Err(AttachError::ChannelInUse(0x10))
    );
}

#[test]
fn a_detached_service_goes_down_at_its_twin_while_the_connection_goes_on() {
    let mut p = pair_of(
        vec![spec("chat", 1, &[0x10]), spec("sync", 1, &[0x20])],
        vec![spec("chat", 1, &[0x10]), spec("sync", 1, &[0x20])],
    );
    p.run_until(Duration::from_secs(1), |p| {
        ups(&p.a).len() == 2 && ups(&p.b).len() == 2
    });
    // B has a burst in flight on `sync` when A detaches it: what arrives after the
    // detach is dropped, not a violation.
    for _ in 0..200 {
        p.b.core.send(0x20, Bytes::from(vec![7u8; 1000])).unwrap();
    }
    p.drive_now();
    let now = p.now;
    p.a.core.detach(now, "sync");
    assert_eq!(
        p.a.core.send(0x20, Bytes::from_static(b"x")),
        Err(PushError::ServiceNotUp(0x20))
    );
    settle(&mut p);
    assert_eq!(
        downs(&p.b),
        vec![("sync".into(), DisconnectReason::ServiceDetached)]
    );
    assert_eq!(
        downs(&p.a),
        vec![("sync".into(), DisconnectReason::ServiceDetached)]
    );
    assert_eq!(
        p.b.core.send(0x20, Bytes::from_static(b"x")),
        Err(PushError::ServiceNotUp(0x20))
    );
    assert_eq!(p.b.core.channel_info(0x20), None);
    // The other service goes on.
    p.b.core.send(0x10, Bytes::from_static(b"still")).unwrap();
    settle(&mut p);
    assert_eq!(p.a.payloads(0x10), vec![Bytes::from_static(b"still")]);
    // Attached again, it meets its twin again.
    let now = p.now;
    p.a.core
        .attach(now, Arc::new(spec("sync", 1, &[0x20])))
        .unwrap();
    settle(&mut p);
    assert_eq!(ups(&p.b), vec!["chat", "sync", "sync"]);
    let before = p.a.payloads(0x20).len();
    p.b.core.send(0x20, Bytes::from_static(b"again")).unwrap();
    settle(&mut p);
    assert_eq!(p.a.payloads(0x20)[before..], [Bytes::from_static(b"again")]);
}

#[test]
fn detaching_while_the_offer_is_on_its_way_leaves_both_sides_agreeing() {
    let mut p = pair_of(
        vec![spec("chat", 1, &[0x10])],
        vec![spec("chat", 1, &[0x10])],
    );
    p.latency = Duration::from_millis(5);
    p.run_until(Duration::from_secs(1), |p| p.a.connected());
    // A's offer is on the wire; A detaches before any answer.
    let now = p.now;
    p.a.core.detach(now, "chat");
    settle(&mut p);
    settle(&mut p);
    assert_eq!(p.a.core.services_up().count(), 0);
    assert_eq!(p.b.core.services_up().count(), 0);
    assert_eq!(
        p.b.core.send(0x10, Bytes::from_static(b"x")),
        Err(PushError::ServiceNotUp(0x10))
    );
}

fn solo_with_two_services() -> Solo {
    let limits = Config::default();
    let now = t0();
    let budget = Arc::new(RecvBudget::new(u64::MAX / 4));
    let services = vec![
        test_service(channels_with(&limits)),
        spec("second", 1, &[9]),
    ];
    Solo::with_core(now, core_with(now, &limits, params(1, services), budget))
}

fn violation(s: &Solo) -> String {
    match s.reason() {
        Some(DisconnectReason::ControlViolation(what)) => what,
        other => panic!("expected a control violation, got {other:?}"),
    }
}

#[test]
fn answers_to_nothing_close_the_sender() {
    let cases: Vec<(Control, &str)> = vec![
        (
            Control::ServiceAccept(ServiceOffer {
                name: "nobody".into(),
                major: 1,
                minor: 0,
                channels: vec![ChannelGrant { id: 5, credit: 1 }],
            }),
            "did not offer",
        ),
        (
            Control::ServiceReject {
                name: "nobody".into(),
                reason: RejectReason::NotRunning,
            },
            "did not offer",
        ),
        (
            Control::ServiceDisconnect {
                name: "second".into(),
            },
            "not up",
        ),
        (Control::ServiceConnect(test_offer(100)), "up already"),
    ];
    for (msg, expect) in cases {
        let mut s = Solo::new(&Config::default());
        s.handshake(65_536);
        s.feed_control(&msg);
        let what = violation(&s);
        assert!(what.contains(expect), "{msg:?}: {what}");
    }
}

#[test]
fn a_remote_cannot_point_two_services_at_one_channel() {
    let mut s = solo_with_two_services();
    s.handshake(65_536);
    // `second` offered on channel 1, which the remote's `test` uses already.
    s.feed_control(&Control::ServiceConnect(ServiceOffer {
        name: "second".into(),
        major: 1,
        minor: 0,
        channels: vec![ChannelGrant { id: 1, credit: 1 }],
    }));
    assert!(violation(&s).contains("another service uses"));
}

#[test]
fn malformed_offers_are_violations() {
    let long = "x".repeat(65);
    let offers = [
        ServiceOffer {
            name: long,
            major: 1,
            minor: 0,
            channels: vec![ChannelGrant { id: 1, credit: 1 }],
        },
        ServiceOffer {
            name: "bad name\n".into(),
            major: 1,
            minor: 0,
            channels: vec![ChannelGrant { id: 1, credit: 1 }],
        },
        ServiceOffer {
            name: "none".into(),
            major: 1,
            minor: 0,
            channels: vec![],
        },
        ServiceOffer {
            name: "many".into(),
            major: 1,
            minor: 0,
            channels: (1..=33).map(|id| ChannelGrant { id, credit: 1 }).collect(),
        },
        ServiceOffer {
            name: "twice".into(),
            major: 1,
            minor: 0,
            channels: vec![
                ChannelGrant { id: 4, credit: 1 },
                ChannelGrant { id: 4, credit: 1 },
            ],
        },
        ServiceOffer {
            name: "zero".into(),
            major: 1,
            minor: 0,
            channels: vec![ChannelGrant { id: 0, credit: 1 }],
        },
    ];
    for offer in offers {
        let mut s = Solo::new(&Config::default());
        s.handshake(65_536);
        s.feed_control(&Control::ServiceConnect(offer.clone()));
        violation(&s);
    }
}

#[test]
fn unknown_services_are_answered_until_the_remote_floods() {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    let offer = |n: usize| {
        Control::ServiceConnect(ServiceOffer {
            name: format!("svc{n}"),
            major: 1,
            minor: 0,
            channels: vec![ChannelGrant { id: 9, credit: 1 }],
        })
    };
    for n in 0..100 {
        s.feed_control(&offer(n));
    }
    assert_eq!(s.reason(), None, "a hundred offers at once are answered");
    let rejects = s
        .controls()
        .iter()
        .filter(|c| {
            matches!(
                c,
                Control::ServiceReject {
                    reason: RejectReason::NotRunning,
                    ..
                }
            )
        })
        .count();
    assert_eq!(rejects, 100);
    // At the allowed rate it goes on forever.
    for n in 0..200 {
        s.advance(Duration::from_millis(40));
        s.feed_control(&offer(n));
    }
    assert_eq!(s.reason(), None);
    // Faster, it is closed.
    for n in 0..400 {
        if s.reason().is_some() {
            break;
        }
        s.feed_control(&offer(n));
    }
    assert!(violation(&s).contains("service messages"));
}

#[test]
fn data_on_a_detached_service_after_the_answer_is_a_violation() {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    let now = s.now;
    s.core.detach(now, "test");
    s.drain();
    assert!(s.controls().contains(&Control::ServiceDisconnect {
        name: "test".into()
    }));
    // In flight before the remote saw the detach: dropped quietly.
    s.feed_msg(BULK, b"late");
    assert_eq!(s.reason(), None);
    assert!(s.core.recv(BULK).is_none());
    // The remote answers; data there is now a violation.
    s.feed_control(&Control::ServiceDisconnect {
        name: "test".into(),
    });
    assert_eq!(s.reason(), None);
    s.feed_packet(Packet::Msg(Msg {
        channel: BULK,
        eof: true,
        kind: MsgKind::Plain,
        total: None,
        payload: Bytes::from_static(b"after"),
    }));
    assert_eq!(s.reason(), Some(DisconnectReason::UnknownChannel(BULK)));
}

#[test]
fn an_offer_left_unanswered_closes_the_remote_after_the_handshake_timeout() {
    let limits = Config::default();
    let mut s = Solo::new(&limits);
    s.drain();
    s.feed_control(&Control::Version(version(2)));
    s.feed_control(&Control::Verack);
    assert!(s.core.offers_pending());
    s.advance(limits.handshake_timeout / 2);
    assert_eq!(s.reason(), None);
    s.feed_control(&Control::ServiceAccept(test_offer(1000)));
    assert!(!s.core.offers_pending(), "answered");
    // Attached later and never answered: the remote is closed.
    let now = s.now;
    s.core
        .attach(now, Arc::new(spec("late", 1, &[0x40])))
        .unwrap();
    s.drain();
    assert!(s.core.offers_pending());
    s.advance(limits.handshake_timeout + Duration::from_millis(10));
    assert!(violation(&s).contains("no answer to our ServiceConnect for late"));
}

mod churn {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

    /// One step: which side, which service, attach or detach, then how long to run.
    #[derive(Debug, Clone)]
    struct Step {
        a_side: bool,
        service: usize,
        attach: bool,
        run_us: u64,
    }

    fn step() -> impl Strategy<Value = Step> {
        (any::<bool>(), 0..NAMES.len(), any::<bool>(), 0u64..3_000).prop_map(
            |(a_side, service, attach, run_us)| Step {
                a_side,
                service,
                attach,
                run_us,
            },
        )
    }

    /// Side A runs service i on channel 0x10+i, side B on 0x20+i.
    fn spec_of(a_side: bool, i: usize) -> ServiceSpec {
        let base = if a_side { 0x10 } else { 0x20 };
        spec(NAMES[i], 1, &[base + i as u8])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Services attached and detached on both sides in any order and timing,
        /// offers and disconnects crossing on the wire: nobody is ever closed, and
        /// once quiet, a service is up on both sides exactly when both run it, and
        /// carries messages both ways.
        #[test]
        fn attach_and_detach_in_any_interleaving_converge(
            steps in proptest::collection::vec(step(), 1..24),
            latency_us in 0u64..2_000,
        ) {
            let mut p = pair_of(vec![], vec![]);
            p.latency = Duration::from_micros(latency_us);
            p.run_until(Duration::from_secs(1), |p| p.a.connected() && p.b.connected());
            let mut attached = [[false; 3]; 2];
            for s in &steps {
                let side = usize::from(!s.a_side);
                let now = p.now;
                let core = if s.a_side { &mut p.a.core } else { &mut p.b.core };
                if s.attach {
                    let r = core.attach(now, Arc::new(spec_of(s.a_side, s.service)));
                    prop_assert_eq!(r.is_ok(), !attached[side][s.service]);
                    attached[side][s.service] = true;
                } else {
                    core.detach(now, NAMES[s.service]);
                    attached[side][s.service] = false;
                }
                // Traffic on whatever is up, so detaches meet messages in flight.
                for i in 0..NAMES.len() {
                    let (ca, cb) = (0x10 + i as u8, 0x20 + i as u8);
                    if p.a.core.accepts(ca) {
                        p.a.core.send(ca, Bytes::from(vec![1u8; 3000])).unwrap();
                    }
                    if p.b.core.accepts(cb) {
                        p.b.core.send(cb, Bytes::from(vec![2u8; 3000])).unwrap();
                    }
                }
                p.run_for(Duration::from_micros(s.run_us));
            }
            p.run_for(Duration::from_millis(200));
            prop_assert!(p.a.closed().is_none(), "a closed: {:?}", p.a.closed());
            prop_assert!(p.b.closed().is_none(), "b closed: {:?}", p.b.closed());
            for (i, name) in NAMES.iter().enumerate() {
                let both = attached[0][i] && attached[1][i];
                let up_a = p.a.core.services_up().any(|n| n == *name);
                let up_b = p.b.core.services_up().any(|n| n == *name);
                prop_assert_eq!(up_a, both, "{} on a", name);
                prop_assert_eq!(up_b, both, "{} on b", name);
                if both {
                    let (ca, cb) = (0x10 + i as u8, 0x20 + i as u8);
                    p.a.core.send(ca, Bytes::from_static(b"ab")).unwrap();
                    p.b.core.send(cb, Bytes::from_static(b"ba")).unwrap();
                    p.run_for(Duration::from_millis(50));
                    prop_assert_eq!(p.b.payloads(cb).last().cloned(), Some(Bytes::from_static(b"ab")));
                    prop_assert_eq!(p.a.payloads(ca).last().cloned(), Some(Bytes::from_static(b"ba")));
                } else {
                    prop_assert!(!p.a.core.accepts(0x10 + i as u8));
                    prop_assert!(!p.b.core.accepts(0x20 + i as u8));
                }
            }
        }
    }
}
