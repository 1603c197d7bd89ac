//! Requests: the round trip, the stall deadline counted from the write (not the
//! queue), a stall closing the peer (or only reported), late, duplicate and
//! unsolicited responses, requests in flight bounded both ways, refusals.

use std::time::Duration;

use bytes::Bytes;
use switchyard_proto::config::ChannelConfig;
use switchyard_proto::config::Config;
use switchyard_proto::connection::{Event, Refusal};
use switchyard_proto::wire::codec::{Msg, MsgKind, Packet};
use switchyard_proto::{DisconnectReason, PushError};

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
    assert!(p.run_until(Duration::from_secs(1), |p| response(&p.a, id).is_some()));
    assert_eq!(&response(&p.a, id).unwrap()[..], b"headers?");
    assert!(
        p.a.got(URGENT).is_empty(),
        "answers go to the caller, not the service"
    );
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
    assert!(p.run_until(Duration::from_secs(10), |p| response(&p.a, id).is_some()));
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

/// The payload of the response to `id`, once it came.
fn response(side: &Side, id: u32) -> Option<Bytes> {
    side.events.iter().find_map(|e| match e {
        Event::Response {
            request_id,
            payload,
            ..
        } if *request_id == id => Some(payload.clone()),
        _ => None,
    })
}

fn refusal(side: &Side, id: u32) -> Option<Refusal> {
    side.events.iter().find_map(|e| match e {
        Event::RequestRejected {
            request_id,
            refusal,
            ..
        } if *request_id == id => Some(*refusal),
        _ => None,
    })
}

fn answer(kind: MsgKind, payload: &'static [u8]) -> Packet {
    Packet::Msg(Msg {
        channel: OTHER,
        eof: true,
        kind,
        total: None,
        payload: Bytes::from_static(payload),
    })
}

fn response_packet(id: u32) -> Packet {
    answer(MsgKind::Response(id), b"r")
}

#[test]
fn unsolicited_duplicate_and_late_responses_close_the_sender_with_their_reasons() {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    s.feed_packet(response_packet(99));
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
    s.feed_packet(response_packet(id));
    assert_eq!(s.reason(), None);
    assert!(s
        .events
        .iter()
        .any(|e| matches!(e, Event::Response { request_id, .. } if *request_id == id)));
    s.feed_packet(response_packet(id));
    assert_eq!(
        s.reason(),
        Some(DisconnectReason::DuplicateResponse {
            channel: OTHER,
            request_id: id
        })
    );
    // An answer after the caller gave up is dropped quietly: not the remote's fault.
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    let id = s
        .core
        .send_request(OTHER, Bytes::from_static(b"q"), Duration::from_secs(1))
        .unwrap();
    s.drain();
    s.core.cancel_request(OTHER, id);
    s.feed_packet(response_packet(id));
    assert_eq!(s.reason(), None);
    // A refusal with a bad code is undecodable.
    let id = s
        .core
        .send_request(OTHER, Bytes::from_static(b"q"), Duration::from_secs(1))
        .unwrap();
    s.drain();
    s.feed_packet(answer(MsgKind::Rejected(id), &[9]));
    assert!(matches!(
        s.reason(),
        Some(DisconnectReason::Undecodable { channel: OTHER, .. })
    ));
}

fn report_only_pair() -> Pair {
    let limits = Config::default();
    let chans: Vec<(u8, ChannelConfig)> = channels_with(&limits)
        .into_iter()
        .map(|(id, c)| (id, c.close_on_stall(false).requests(2, 2)))
        .collect();
    Pair::with_channels(&limits, chans.clone(), chans)
}

#[test]
fn a_report_only_channel_reports_the_stall_and_a_late_answer_closes_the_sender() {
    let mut p = report_only_pair();
    p.b.stall(OTHER, true);
    p.connect();
    let id =
        p.a.core
            .send_request(OTHER, Bytes::from_static(b"q"), Duration::from_millis(200))
            .unwrap();
    p.run_for(Duration::from_secs(1));
    assert!(p.a.events.contains(&Event::RequestStalled {
        channel: OTHER,
        request_id: id
    }));
    assert!(p.a.closed().is_none(), "report-only: the peer stays");
    // B's service answers now, too late.
    p.b.core
        .send_response(OTHER, id, Bytes::from_static(b"late"))
        .unwrap();
    assert_eq!(
        p.until_closed(Who::A, Duration::from_secs(1)),
        DisconnectReason::LateResponse {
            channel: OTHER,
            request_id: id
        }
    );
}

#[test]
fn requests_in_flight_are_bounded_and_room_follows_an_answer() {
    let mut p = report_only_pair();
    p.b.stall(OTHER, true);
    p.connect();
    let q = || Bytes::from_static(b"q");
    let t = Duration::from_secs(60);
    let first = p.a.core.send_request(OTHER, q(), t).unwrap();
    p.a.core.send_request(OTHER, q(), t).unwrap();
    assert_eq!(p.a.core.send_request(OTHER, q(), t), Err(PushError::Full));
    assert_eq!(
        p.a.core.send_request(URGENT, q(), t).map(|_| ()),
        Ok(()),
        "per channel"
    );
    p.run_for(Duration::from_millis(10));
    p.b.core
        .send_response(OTHER, first, Bytes::from_static(b"r"))
        .unwrap();
    assert!(p.run_until(Duration::from_secs(1), |p| p
        .a
        .events
        .contains(&Event::Room(OTHER))));
    p.a.core.send_request(OTHER, q(), t).unwrap();
}

#[test]
fn requests_beyond_the_inbound_cap_are_refused_busy_without_reaching_the_service() {
    let limits = Config::default();
    let a_chans = channels_with(&limits)
        .into_iter()
        .map(|(id, c)| (id, c.requests(8, 8)))
        .collect();
    let b_chans = channels_with(&limits)
        .into_iter()
        .map(|(id, c)| (id, c.requests(8, 2)))
        .collect();
    let mut p = Pair::with_channels(&limits, a_chans, b_chans);
    p.b.stall(OTHER, true);
    p.connect();
    let ids: Vec<u32> = (0..4)
        .map(|_| {
            p.a.core
                .send_request(OTHER, Bytes::from_static(b"q"), Duration::from_secs(60))
                .unwrap()
        })
        .collect();
    p.run_for(Duration::from_millis(50));
    assert_eq!(refusal(&p.a, ids[2]), Some(Refusal::Busy));
    assert_eq!(refusal(&p.a, ids[3]), Some(Refusal::Busy));
    assert_eq!(refusal(&p.a, ids[0]), None);
    assert!(p.a.closed().is_none() && p.b.closed().is_none());
    // The service lets one go: its caller learns at once.
    p.b.core.refuse_request(OTHER, ids[0], Refusal::Dropped);
    p.run_for(Duration::from_millis(50));
    assert_eq!(refusal(&p.a, ids[0]), Some(Refusal::Dropped));
    // Answering a request not held is the caller's error, locally.
    assert_eq!(
        p.b.core.send_response(OTHER, ids[3], Bytes::new()),
        Err(PushError::NoSuchRequest(ids[3]))
    );
}

#[test]
fn a_request_sent_twice_with_one_id_closes_the_sender() {
    let mut s = Solo::new(&Config::default());
    s.consuming = false;
    s.handshake(65_536);
    s.feed_packet(answer(MsgKind::Request(5), b"q"));
    assert_eq!(s.reason(), None);
    s.feed_packet(answer(MsgKind::Request(5), b"q"));
    assert_eq!(
        s.reason(),
        Some(DisconnectReason::DuplicateRequest {
            channel: OTHER,
            request_id: 5
        })
    );
}

#[test]
fn a_service_going_away_ends_its_requests_in_flight() {
    let mut p = report_only_pair();
    p.b.stall(OTHER, true);
    p.connect();
    let id =
        p.a.core
            .send_request(OTHER, Bytes::from_static(b"q"), Duration::from_secs(60))
            .unwrap();
    p.run_for(Duration::from_millis(10));
    let now = p.now;
    p.b.core.detach(now, "test");
    p.run_for(Duration::from_millis(50));
    assert_eq!(refusal(&p.a, id), Some(Refusal::Dropped));
    assert!(p.a.closed().is_none());
}
