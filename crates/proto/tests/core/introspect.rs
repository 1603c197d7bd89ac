//! Introspection over channel 0: a request and its answer, the per-channel counters
//! an answer carries, and a remote that answers unasked, floods requests, sends an
//! oversized or invalid answer, or asks before the handshake.

use std::time::Duration;

use bytes::Bytes;
use switchyard_proto::admission::Direction;
use switchyard_proto::config::Config;
use switchyard_proto::connection::introspect::{
    IntrospectError, INTROSPECT_BURST, MAX_INTROSPECT_OUTSTANDING,
};
use switchyard_proto::introspect::{Introspection, PeerReport, MAX_INTROSPECT_PEERS};
use switchyard_proto::wire::control::{self, Control, MAX_CONTROL_MESSAGE};
use switchyard_proto::{DisconnectReason, Event};

use crate::pair::*;

/// What a node would answer: itself and the one peer of the core `side`.
fn node_view(side: &Side, now: std::time::Instant, peers: usize) -> Introspection {
    let me = side
        .core
        .peer_report(now, "127.0.0.1:9".into(), Direction::Inbound)
        .expect("connected");
    Introspection {
        node_id: "22".repeat(20),
        user_agent: "side-2".into(),
        network: "pair".into(),
        listen_addr: None,
        uptime_ms: 1,
        services: Vec::new(),
        peers: vec![me; peers],
        peers_total: u32::try_from(peers).expect("small"),
        truncated: false,
    }
}

/// A node with no peers.
fn bare() -> Introspection {
    Introspection {
        node_id: "22".repeat(20),
        user_agent: "side-2".into(),
        network: "pair".into(),
        listen_addr: Some("127.0.0.1:2".into()),
        uptime_ms: 1,
        services: Vec::new(),
        peers: Vec::new(),
        peers_total: 0,
        truncated: false,
    }
}

fn requested(side: &Side) -> usize {
    side.events
        .iter()
        .filter(|e| **e == Event::IntrospectRequested)
        .count()
}

fn answers(side: &Side) -> Vec<Introspection> {
    side.events
        .iter()
        .filter_map(|e| match e {
            Event::Introspection(i) => Some((**i).clone()),
            _ => None,
        })
        .collect()
}

fn violation(reason: Option<DisconnectReason>) -> String {
    match reason {
        Some(DisconnectReason::ControlViolation(what)) => what,
        other => panic!("expected a control violation, got {other:?}"),
    }
}

#[test]
fn a_request_is_answered_with_the_counters_of_the_traffic() {
    let mut p = Pair::new(&Config::default());
    p.connect();
    for m in numbered(10, 100) {
        p.a.core.send(BULK, m).expect("queued");
    }
    p.b.core
        .send(URGENT, Bytes::from_static(b"hey"))
        .expect("queued");
    assert!(
        p.run_until(Duration::from_secs(1), |p| p.b.got(BULK).len() == 10
            && p.a.got(URGENT).len() == 1)
    );

    p.a.core.request_introspection().expect("asked");
    assert!(p.run_until(Duration::from_secs(1), |p| requested(&p.b) == 1));
    assert!(p.b.core.introspection_owed());
    let view = node_view(&p.b, p.now, 1);
    assert!(p.b.core.answer_introspection(view.clone()));
    // One answer per request: a second is not owed.
    assert!(!p.b.core.answer_introspection(view.clone()));
    assert!(p.run_until(Duration::from_secs(1), |p| !answers(&p.a).is_empty()));
    let got = answers(&p.a);
    assert_eq!(got, vec![view]);
    let peer: &PeerReport = &got[0].peers[0];
    assert_eq!(peer.services, vec!["test".to_owned()]);
    let bulk = peer.channels.iter().find(|c| c.id == BULK).expect("bulk");
    assert_eq!((bulk.recv_messages, bulk.recv_bytes), (10, 1000));
    let urgent = peer
        .channels
        .iter()
        .find(|c| c.id == URGENT)
        .expect("urgent");
    assert_eq!((urgent.sent_messages, urgent.sent_bytes), (1, 3));
    assert!(peer.rtt_us.is_some());
    // And the sender's own view agrees.
    let (_, sent) = p.a.core.channel_totals(BULK);
    assert_eq!((sent.messages, sent.bytes), (10, 1000));
    assert!(p.a.closed().is_none() && p.b.closed().is_none());
}

#[test]
fn an_answer_larger_than_a_control_message_is_cut_and_says_so() {
    // Small packets: the answer travels in several chunks.
    let limits = Config {
        max_packet_payload: 16 << 10,
        ..Config::default()
    };
    let mut p = Pair::new(&limits);
    p.connect();
    p.a.core.request_introspection().expect("asked");
    assert!(p.run_until(Duration::from_secs(1), |p| requested(&p.b) == 1));
    let mut view = node_view(&p.b, p.now, MAX_INTROSPECT_PEERS);
    for (i, peer) in view.peers.iter_mut().enumerate() {
        peer.remote_addr = format!("[2001:db8::{i:x}]:65535");
        peer.services = (0..8).map(|s| format!("service-number-{s}")).collect();
    }
    let whole = control::encode(&Control::IntrospectResponse(view.clone()));
    assert!(whole.len() > MAX_CONTROL_MESSAGE, "{}", whole.len());
    assert!(p.b.core.answer_introspection(view));
    assert!(p.run_until(Duration::from_secs(1), |p| !answers(&p.a).is_empty()));
    let got = &answers(&p.a)[0];
    assert!(got.truncated);
    assert!(!got.peers.is_empty() && got.peers.len() < MAX_INTROSPECT_PEERS);
    assert_eq!(got.peers_total as usize, MAX_INTROSPECT_PEERS);
    assert!(p.a.closed().is_none() && p.b.closed().is_none());
}

#[test]
fn an_unsolicited_answer_closes_the_sender() {
    let mut s = Solo::new(&Config::default());
    s.handshake(1 << 20);
    s.feed_control(&Control::IntrospectResponse(bare()));
    assert!(violation(s.reason()).contains("no request of ours"));
    assert!(s.goodbye().is_some());
}

#[test]
fn an_invalid_answer_closes_the_sender() {
    let mut s = Solo::new(&Config::default());
    s.handshake(1 << 20);
    s.core.request_introspection().expect("asked");
    s.drain();
    assert!(s.controls().contains(&Control::IntrospectRequest));
    let mut view = bare();
    view.user_agent = "line\nbreak".into();
    s.feed_control(&Control::IntrospectResponse(view));
    assert!(violation(s.reason()).contains("invalid"));
}

#[test]
fn a_flood_of_requests_closes_the_sender() {
    let mut s = Solo::new(&Config::default());
    s.handshake(1 << 20);
    let burst = usize::try_from(INTROSPECT_BURST).expect("small");
    for _ in 0..burst {
        s.feed_control(&Control::IntrospectRequest);
    }
    assert!(s.reason().is_none(), "{:?}", s.reason());
    assert_eq!(
        s.events
            .iter()
            .filter(|e| **e == Event::IntrospectRequested)
            .count(),
        burst
    );
    // A second later one more is allowed ...
    s.advance(Duration::from_secs(1));
    s.feed_control(&Control::IntrospectRequest);
    assert!(s.reason().is_none(), "{:?}", s.reason());
    // ... but not two.
    s.feed_control(&Control::IntrospectRequest);
    assert!(violation(s.reason()).contains("introspection requests at once"));
}

#[test]
fn our_own_requests_are_bounded() {
    let mut s = Solo::new(&Config::default());
    assert_eq!(
        s.core.request_introspection(),
        Err(IntrospectError::NotActive)
    );
    s.handshake(1 << 20);
    for _ in 0..MAX_INTROSPECT_OUTSTANDING {
        s.core.request_introspection().expect("asked");
    }
    assert_eq!(s.core.request_introspection(), Err(IntrospectError::Busy));
}

#[test]
fn a_request_before_the_handshake_gets_no_answer() {
    let mut s = Solo::new(&Config::default());
    s.drain();
    s.feed_control(&Control::IntrospectRequest);
    assert!(
        matches!(s.reason(), Some(DisconnectReason::Handshake(_))),
        "{:?}",
        s.reason()
    );
    assert!(!s.events.contains(&Event::IntrospectRequested));
    assert!(!s.core.introspection_owed());
}
