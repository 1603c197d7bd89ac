//! Requests: the round trip, the stall deadline counted from the write (not the
//! queue), a stall closing the peer, late, duplicate and unsolicited responses.

use std::time::Duration;

use bytes::Bytes;
use switchyard_proto::config::Config;
use switchyard_proto::connection::Event;
use switchyard_proto::wire::codec::{Msg, MsgKind, Packet};
use switchyard_proto::DisconnectReason;

use crate::pair::*;

#[test]
fn a_request_gets_its_response() {
    let mut p = Pair::new(&Config::default());
    p.b.auto_respond = true;
    p.connect();
    let id =
        p.a.core
            .send_request(
                URGENT,
                Bytes::from_static(b"headers?"),
                Duration::from_secs(1),
            )
            .unwrap();
    assert!(p.run_until(Duration::from_secs(1), |p| !p.a.got(URGENT).is_empty()));
    let got = &p.a.got(URGENT)[0];
    assert_eq!(got.kind, MsgKind::Response(id));
    assert_eq!(&got.payload[..], b"headers?");
    assert_eq!(p.b.got(URGENT)[0].kind, MsgKind::Request(id));
    // The answered request no longer stalls anything.
    p.run_for(Duration::from_secs(5));
    assert!(p.a.closed().is_none());
}

#[test]
fn the_stall_deadline_starts_when_the_request_is_written_not_queued() {
    let mut p = Pair::new(&Config::default());
    p.bandwidth = Some(2_000_000);
    p.b.auto_respond = true;
    p.connect();
    // Two seconds of bulk data ahead of the request on the same channel.
    for m in numbered(64, 64 << 10) {
        p.a.core.send(BULK, m).unwrap();
    }
    let id =
        p.a.core
            .send_request(
                BULK,
                Bytes::from_static(b"behind the bulk"),
                Duration::from_millis(500),
            )
            .unwrap();
    assert!(p.run_until(Duration::from_secs(10), |p| p
        .a
        .got(BULK)
        .iter()
        .any(|m| m.kind == MsgKind::Response(id))));
    assert!(p.elapsed() > Duration::from_secs(2), "{:?}", p.elapsed());
    assert!(p.a.closed().is_none(), "{:?}", p.a.events);
}

#[test]
fn no_response_in_time_closes_the_peer_as_stalled() {
    let mut p = Pair::new(&Config::default());
    p.connect();
    let start = p.now;
    let id =
        p.a.core
            .send_request(
                OTHER,
                Bytes::from_static(b"anyone?"),
                Duration::from_millis(300),
            )
            .unwrap();
    let reason = p.until_closed(Who::A, Duration::from_secs(5));
    assert_eq!(
        reason,
        DisconnectReason::Stalled {
            channel: OTHER,
            request_id: id
        }
    );
    assert!(p.a.events.contains(&Event::RequestStalled {
        channel: OTHER,
        request_id: id
    }));
    let took = p.now - start;
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(310),
        "{took:?}"
    );
}

fn response(id: u32) -> Packet {
    Packet::Msg(Msg {
        channel: OTHER,
        eof: true,
        kind: MsgKind::Response(id),
        total: None,
        payload: Bytes::from_static(b"r"),
    })
}

#[test]
fn unsolicited_and_duplicate_responses_close_the_sender() {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    s.feed_packet(response(99));
    assert_eq!(
        s.reason(),
        Some(DisconnectReason::UnexpectedResponse {
            channel: OTHER,
            request_id: 99
        })
    );
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    let id = s
        .core
        .send_request(OTHER, Bytes::from_static(b"q"), Duration::from_secs(1))
        .unwrap();
    s.drain();
    s.feed_packet(response(id));
    assert_eq!(s.reason(), None);
    s.feed_packet(response(id));
    assert!(matches!(
        s.reason(),
        Some(DisconnectReason::UnexpectedResponse { .. })
    ));
    // A response after the caller gave up is late: unexpected too.
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    let id = s
        .core
        .send_request(OTHER, Bytes::from_static(b"q"), Duration::from_secs(1))
        .unwrap();
    s.drain();
    s.core.cancel_request(id);
    s.feed_packet(response(id));
    assert!(matches!(
        s.reason(),
        Some(DisconnectReason::UnexpectedResponse { .. })
    ));
}
