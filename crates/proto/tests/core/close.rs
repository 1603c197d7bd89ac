//! Closing: flush then goodbye, without flush, linger, the remote's EOF, and messages
//! received before a goodbye kept for their services.

use std::time::Duration;

use bytes::Bytes;
use switchyard_proto::config::Config;
use switchyard_proto::wire::control::Control;
use switchyard_proto::DisconnectReason;

use crate::pair::*;

#[test]
fn a_graceful_close_writes_what_is_queued_then_says_why() {
    let mut p = Pair::new(&Config::default());
    p.connect();
    let msgs = numbered(500, 4000);
    for m in &msgs {
        p.a.core.send(BULK, m.clone()).unwrap();
    }
    let now = p.now;
    let reason = DisconnectReason::Application("maintenance".into());
    p.a.core.close(now, reason.clone(), true);
    assert!(p.a.core.send(BULK, Bytes::from_static(b"late")).is_err());
    assert_eq!(p.until_closed(Who::A, Duration::from_secs(2)), reason);
    assert_eq!(
        p.until_closed(Who::B, Duration::from_secs(2)),
        DisconnectReason::ByRemote(Box::new(reason))
    );
    assert_eq!(
        p.b.payloads(BULK),
        msgs,
        "everything queued arrived before the goodbye"
    );
    assert!(
        p.elapsed() < Duration::from_secs(1),
        "no linger wait: {:?}",
        p.elapsed()
    );
}

#[test]
fn a_close_without_flush_drops_the_queue_but_still_says_why() {
    let mut p = Pair::new(&Config::default());
    p.bandwidth = Some(10_000_000);
    p.connect();
    for m in numbered(500, 60_000) {
        p.a.core.send(BULK, m).unwrap();
    }
    p.run_for(Duration::from_millis(5));
    let now = p.now;
    p.a.core.close(now, DisconnectReason::Shutdown, false);
    assert_eq!(
        p.until_closed(Who::B, Duration::from_secs(5)),
        DisconnectReason::ByRemote(Box::new(DisconnectReason::Shutdown))
    );
    assert!(p.b.got(BULK).len() < 500);
}

#[test]
fn a_remote_that_stops_reading_cannot_hold_a_close_past_the_linger() {
    let limits = Config::default();
    let mut p = Pair::new(&limits);
    p.connect();
    p.b.reading = false;
    for m in numbered(100, 60_000) {
        p.a.core.send(BULK, m).unwrap();
    }
    p.run_for(Duration::from_millis(10));
    let start = p.now;
    p.a.core.close(start, DisconnectReason::Shutdown, true);
    assert_eq!(
        p.until_closed(Who::A, Duration::from_secs(60)),
        DisconnectReason::Shutdown
    );
    assert_eq!(p.now - start, limits.linger);
}

#[test]
fn the_remote_closing_its_side_without_a_word() {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    let mut empty = bytes::BytesMut::new();
    let now = s.now;
    s.core.handle_eof(now, &mut empty);
    s.drain();
    assert_eq!(s.closed(), Some(&DisconnectReason::ConnectionClosed));
    // A packet cut off by the EOF is a codec error.
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    let mut cut = bytes::BytesMut::from(&[3u8, BULK, 1, 0, 0, 0, 9, 1, 2][..]);
    let now = s.now;
    s.core.handle_eof(now, &mut cut);
    s.drain();
    assert!(matches!(s.reason(), Some(DisconnectReason::Codec(_))));
}

#[test]
fn messages_before_a_goodbye_stay_readable_after_the_close() {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    let mut bytes = bytes::BytesMut::new();
    {
        use switchyard_proto::wire::codec::{Msg, MsgKind, Packet, PacketCodec};
        use tokio_util::codec::Encoder;
        let mut codec = PacketCodec::new(1 << 20);
        for i in 0..3u8 {
            codec
                .encode(
                    Packet::Msg(Msg {
                        channel: OTHER,
                        eof: true,
                        kind: MsgKind::Plain,
                        total: None,
                        payload: Bytes::from(vec![i]),
                    }),
                    &mut bytes,
                )
                .unwrap();
        }
        codec
            .encode(
                control_packet(&Control::Goodbye(DisconnectReason::Shutdown)),
                &mut bytes,
            )
            .unwrap();
    }
    // Feed without letting the services take anything.
    let now = s.now;
    s.core.handle_read(now, &mut bytes);
    assert!(s.core.is_closing());
    let got: Vec<u8> = std::iter::from_fn(|| s.core.recv(OTHER))
        .map(|m| m.payload[0])
        .collect();
    assert_eq!(got, vec![0, 1, 2]);
}
