//! The handshake: both ways, every rejection, the deadline, a goodbye in every phase.

use std::time::Duration;

use bytes::Bytes;
use switchyard_proto::config::Config;
use switchyard_proto::connection::handshake::{HandshakeError, Version};
use switchyard_proto::wire::codec::{Msg, MsgKind, Packet};
use switchyard_proto::wire::control::Control;
use switchyard_proto::{DisconnectReason, NodeId};

use crate::pair::*;

fn handshake_error(r: Option<DisconnectReason>) -> HandshakeError {
    match r {
        Some(DisconnectReason::Handshake(e)) => e,
        other => panic!("expected a handshake failure, got {other:?}"),
    }
}

#[test]
fn a_pair_connects_within_two_round_trips_and_its_service_comes_up() {
    let mut p = Pair::new(&Config::default());
    p.latency = Duration::from_millis(10);
    p.connect();
    // Version and Verack cross (one round trip), then the service offers cross.
    assert!(
        p.elapsed() <= Duration::from_millis(45),
        "{:?}",
        p.elapsed()
    );
    assert_eq!(p.a.core.remote().unwrap().node_id, NodeId([2; 20]));
    assert_eq!(p.b.core.remote().unwrap().node_id, NodeId([1; 20]));
    assert!(p.a.core.accepts(BULK) && p.b.core.accepts(URGENT));
    p.a.core.send(BULK, Bytes::from_static(b"ok")).unwrap();
    p.run_for(Duration::from_millis(100));
    assert_eq!(p.b.payloads(BULK), vec![Bytes::from_static(b"ok")]);
    assert!(p.a.closed().is_none() && p.b.closed().is_none());
}

#[test]
fn out_of_order_handshake_messages_are_typed_rejections() {
    type Check = fn(&HandshakeError) -> bool;
    let cases: Vec<(Vec<Packet>, Check)> = vec![
        (vec![control_packet(&Control::Verack)], |e| {
            *e == HandshakeError::VerackBeforeVersion
        }),
        (
            vec![
                control_packet(&Control::Version(version(2))),
                control_packet(&Control::Version(version(2))),
            ],
            |e| *e == HandshakeError::DuplicateVersion,
        ),
        (
            vec![Packet::Ping(1)],
            |e| matches!(e, HandshakeError::UnexpectedPacket(s) if s == "Ping"),
        ),
        (
            vec![Packet::Credit {
                channel: 1,
                bytes: 10,
            }],
            |e| matches!(e, HandshakeError::UnexpectedPacket(s) if s == "Credit"),
        ),
        (
            vec![Packet::Msg(Msg {
                channel: 5,
                eof: true,
                kind: MsgKind::Plain,
                total: None,
                payload: Bytes::new(),
            })],
            |e| matches!(e, HandshakeError::UnexpectedPacket(_)),
        ),
        (
            vec![Packet::Msg(Msg {
                channel: 0,
                eof: false,
                kind: MsgKind::Plain,
                total: None,
                payload: Bytes::from_static(b"x"),
            })],
            |e| matches!(e, HandshakeError::UnexpectedPacket(_)),
        ),
        (
            vec![Packet::Msg(Msg {
                channel: 0,
                eof: true,
                kind: MsgKind::Plain,
                total: None,
                payload: Bytes::from_static(&[0xc1]),
            })],
            |e| matches!(e, HandshakeError::Undecodable(_)),
        ),
    ];
    for (packets, check) in cases {
        let mut s = Solo::new(&Config::default());
        s.feed_packets(&packets);
        let e = handshake_error(s.reason());
        assert!(check(&e), "{packets:?} gave {e:?}");
        assert_eq!(
            s.goodbye(),
            Some(DisconnectReason::Handshake(e)),
            "the remote is told why"
        );
    }
}

#[test]
fn the_handshake_deadline_closes_a_silent_remote() {
    let limits = Config::default();
    let mut s = Solo::new(&limits);
    s.advance(limits.handshake_timeout - Duration::from_millis(1));
    assert_eq!(s.reason(), None);
    s.advance(Duration::from_millis(1));
    assert_eq!(handshake_error(s.reason()), HandshakeError::Timeout);
}

#[test]
fn a_goodbye_is_honoured_in_every_phase_and_not_answered() {
    let reason = DisconnectReason::MaxInbound;
    // Before anything.
    let mut s = Solo::new(&Config::default());
    s.feed_control(&Control::Goodbye(reason.clone()));
    assert_eq!(
        s.reason(),
        Some(DisconnectReason::ByRemote(Box::new(reason.clone())))
    );
    assert_eq!(
        s.goodbye(),
        None,
        "no goodbye back to a remote that said goodbye"
    );
    // Between Version and Verack.
    let mut s = Solo::new(&Config::default());
    s.feed_control(&Control::Version(version(2)));
    s.feed_control(&Control::Goodbye(reason.clone()));
    assert_eq!(
        s.reason(),
        Some(DisconnectReason::ByRemote(Box::new(reason.clone())))
    );
    // Once connected.
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    s.feed_control(&Control::Goodbye(reason.clone()));
    assert_eq!(
        s.reason(),
        Some(DisconnectReason::ByRemote(Box::new(reason)))
    );
    assert_eq!(s.goodbye(), None);
}

#[test]
fn handshake_messages_after_the_handshake_are_violations() {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    s.feed_control(&Control::Version(version(2)));
    assert_eq!(
        handshake_error(s.reason()),
        HandshakeError::DuplicateVersion
    );
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    s.feed_control(&Control::Verack);
    assert_eq!(handshake_error(s.reason()), HandshakeError::DuplicateVerack);
}

#[test]
fn mismatched_nodes_are_refused_on_both_sides() {
    let limits = Config::default();
    // Another network.
    let now = t0();
    let budget = std::sync::Arc::new(switchyard_proto::RecvBudget::new(0));
    let a = core(now, 1, &limits, channels(), budget.clone());
    let mut v = version(2);
    v.network = "elsewhere".into();
    let mut b_params = params(2, vec![test_service(channels())]);
    b_params.local = v;
    let b = core_with(now, &limits, b_params, budget.clone());
    let mut p = Pair::from_cores(now, a, b);
    let reason = p.until_closed(Who::A, Duration::from_secs(1));
    assert!(matches!(
        reason,
        DisconnectReason::Handshake(HandshakeError::NetworkMismatch { .. })
    ));
    // The same node on both ends.
    let a = core(now, 7, &limits, channels(), budget.clone());
    let b = core(now, 7, &limits, channels(), budget.clone());
    let mut p = Pair::from_cores(now, a, b);
    assert_eq!(
        p.until_closed(Who::B, Duration::from_secs(1)),
        DisconnectReason::Handshake(HandshakeError::SelfConnection)
    );
    // We dialed ID@... and another node answered.
    let mut a_params = params(1, vec![test_service(channels())]);
    a_params.expected = Some(NodeId([9; 20]));
    let a = core_with(now, &limits, a_params, budget.clone());
    let b = core(now, 2, &limits, channels(), budget);
    let mut p = Pair::from_cores(now, a, b);
    assert!(matches!(
        p.until_closed(Who::A, Duration::from_secs(1)),
        DisconnectReason::Handshake(HandshakeError::IdentityMismatch { .. })
    ));
}

#[test]
fn a_version_must_carry_the_id_the_transport_proved() {
    // The key proves node 2 and the Version says node 2: connected.
    let mut s = Solo::new(&Config::default());
    let now = s.now;
    s.core.handle_authenticated(now, version(2).node_id);
    s.handshake(1000);
    assert_eq!(s.reason(), None);
    // The key proves node 3, the Version claims node 2 (an impostor).
    let mut s = Solo::new(&Config::default());
    let now = s.now;
    s.core.handle_authenticated(now, NodeId([3; 20]));
    s.feed_control(&Control::Version(version(2)));
    assert_eq!(
        handshake_error(s.reason()),
        HandshakeError::UnprovenId {
            proven: NodeId([3; 20]),
            claimed: NodeId([2; 20]),
        }
    );
    assert!(s.reason().unwrap().is_misbehavior());
}

#[test]
fn a_dial_answered_by_another_key_fails_at_once_with_identity_mismatch() {
    let limits = Config::default();
    let mut p = params(1, vec![]);
    p.expected = Some(NodeId([2; 20]));
    let now = t0();
    let budget = std::sync::Arc::new(switchyard_proto::RecvBudget::new(1 << 30));
    let mut s = Solo::with_core(now, core_with(now, &limits, p, budget));
    s.core.handle_authenticated(now, NodeId([9; 20]));
    s.drain();
    assert_eq!(
        handshake_error(s.reason()),
        HandshakeError::IdentityMismatch {
            expected: NodeId([2; 20]),
            got: NodeId([9; 20]),
        }
    );
}

#[test]
fn the_services_offered_at_connection_time_share_the_handshake_deadline() {
    let limits = Config::default();
    let mut s = Solo::new(&limits);
    // The transport's part of the handshake took most of the deadline.
    s.advance(limits.handshake_timeout - Duration::from_millis(100));
    s.feed_control(&Control::Version(version(2)));
    s.feed_control(&Control::Verack);
    assert!(s.core.offers_pending());
    assert_eq!(
        s.core.handshake_deadline(),
        s.start + limits.handshake_timeout
    );
    s.advance(Duration::from_millis(99));
    assert_eq!(s.reason(), None);
    s.advance(Duration::from_millis(1));
    assert!(
        matches!(s.reason(), Some(DisconnectReason::ControlViolation(m)) if m.contains("no answer to our ServiceConnect for test")),
        "{:?}",
        s.reason()
    );
}

/// What a remote's goodbye during the handshake closes with, and the reason's text.
fn goodbye_before_handshake(reason: DisconnectReason) -> (HandshakeError, String) {
    let mut s = Solo::new(&Config::default());
    s.feed_control(&Control::Goodbye(reason));
    let closed = s.reason().expect("closed");
    (handshake_error(Some(closed.clone())), closed.to_string())
}

#[test]
fn a_bad_goodbye_during_the_handshake_is_called_a_bad_goodbye() {
    for bad in [
        // Unsafe characters, too long, and too long for any handshake message.
        DisconnectReason::Application("line\u{2028}separator".into()),
        DisconnectReason::Misbehavior("right-to-left \u{202E}override".into()),
        DisconnectReason::Io("escape \x1b[2J".into()),
        DisconnectReason::Application("x".repeat(2000)),
        DisconnectReason::Application("x".repeat(9000)),
        DisconnectReason::ByRemote(Box::new(DisconnectReason::Shutdown)),
    ] {
        let (err, text) = goodbye_before_handshake(bad);
        assert!(matches!(err, HandshakeError::BadGoodbye(_)), "{err:?}");
        assert!(
            text.starts_with("handshake failed: bad Goodbye: "),
            "{text}"
        );
        assert!(!text.contains("Version"), "{text}");
    }
    // A good one is honoured.
    let mut s = Solo::new(&Config::default());
    s.feed_control(&Control::Goodbye(DisconnectReason::Application(
        "bye".into(),
    )));
    assert_eq!(
        s.reason(),
        Some(DisconnectReason::ByRemote(Box::new(
            DisconnectReason::Application("bye".into())
        )))
    );
}

#[test]
fn an_out_of_bounds_version_names_its_field_once() {
    for len in [300, 9000] {
        let mut v = version(2);
        v.user_agent = "u".repeat(len);
        let mut s = Solo::new(&Config::default());
        s.feed_control(&Control::Version(v));
        let reason = s.reason().expect("closed");
        assert_eq!(
            reason.to_string(),
            "handshake failed: bad Version: user_agent is longer than 256 bytes"
        );
        assert_eq!(s.goodbye(), Some(reason), "the remote is told why");
    }
}

#[test]
fn remote_text_in_a_version_that_could_forge_a_log_line_is_refused() {
    let cases: [fn(&mut Version); 6] = [
        |v| v.user_agent = "agent\n[WARN] forged".into(),
        |v| v.user_agent = "agent\u{2028}forged".into(),
        |v| v.user_agent = "agent \u{202E}gnp.exe".into(),
        |v| v.user_agent = "agent \x1b[31m".into(),
        |v| v.listen_addr = Some("host\u{2066}:1\u{2069}".into()),
        |v| v.services[0].name = "svc\u{2029}".into(),
    ];
    for set in cases {
        let mut v = version(2);
        set(&mut v);
        let mut s = Solo::new(&Config::default());
        s.feed_control(&Control::Version(v));
        let err = handshake_error(s.reason());
        assert!(
            matches!(&err, HandshakeError::BadVersion(t) if t.contains("bidirectional")),
            "{err:?}"
        );
    }
}
