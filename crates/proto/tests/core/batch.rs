//! `Batch` packets: runs of small messages travel under one header, arrive whole, in
//! order and once, count against credit like single messages, and a malformed batch
//! closes the connection with its own reason.

use std::time::Duration;

use bytes::Bytes;
use switchyard_proto::config::Config;
use switchyard_proto::wire::codec::{Batch, CodecError, Msg, MsgKind, Packet};
use switchyard_proto::DisconnectReason;

use crate::pair::*;

/// 64-byte messages on two channels: everything arrives in order, once, and the wire
/// carries about 2 bytes of framing per message rather than a 7-byte header.
#[test]
fn small_messages_travel_in_batches_whole_in_order_and_once() {
    let mut p = Pair::connected();
    let before = p.a.bytes_sent;
    let bulk = numbered(5_000, 64);
    let other = numbered(1_000, 20);
    for (i, m) in bulk.iter().enumerate() {
        p.a.core.send(BULK, m.clone()).unwrap();
        if let Some(o) = other.get(i / 5).filter(|_| i % 5 == 0) {
            p.a.core.send(OTHER, o.clone()).unwrap();
        }
    }
    assert!(p.run_until(Duration::from_secs(5), |p| p.b.got(BULK).len()
        == bulk.len()
        && p.b.got(OTHER).len() == other.len()));
    assert_eq!(p.b.payloads(BULK), bulk);
    assert_eq!(p.b.payloads(OTHER), other);
    let payload = (bulk.len() * 64 + other.len() * 20) as u64;
    let framing = p.a.bytes_sent - before - payload;
    let messages = (bulk.len() + other.len()) as u64;
    assert!(
        framing < messages * 3,
        "{framing} bytes of framing for {messages} messages"
    );
    assert!(p.a.closed().is_none() && p.b.closed().is_none());
}

fn solo() -> Solo {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    s
}

fn batch(channel: u8, msgs: &[&[u8]]) -> Packet {
    let msgs: Vec<Bytes> = msgs.iter().map(|m| Bytes::copy_from_slice(m)).collect();
    Packet::Batch(Batch::new(channel, &msgs).unwrap())
}

#[test]
fn a_batch_is_delivered_as_its_messages() {
    let mut s = solo();
    s.consuming = false;
    s.feed_msg(BULK, b"first");
    s.feed_packet(batch(BULK, &[b"a", b"", b"bc"]));
    s.feed_msg(BULK, b"last");
    assert_eq!(s.reason(), None);
    let mut got = std::collections::VecDeque::new();
    assert_eq!(s.core.recv_many(BULK, 3, &mut got), 3);
    assert_eq!(s.core.recv_many(BULK, 100, &mut got), 2);
    let got: Vec<Bytes> = got.into_iter().map(|m| m.payload).collect();
    assert_eq!(
        got,
        ["first", "a", "", "bc", "last"].map(|t| Bytes::from_static(t.as_bytes()))
    );
}

#[test]
fn a_malformed_batch_is_closed_with_its_reason() {
    let reason = |packets: &[Packet]| {
        let mut s = solo();
        s.feed_packets(packets);
        s.reason().expect("closed")
    };
    assert!(matches!(
        reason(&[batch(0, &[b"x", b"y"])]),
        DisconnectReason::ControlViolation(_)
    ));
    assert_eq!(
        reason(&[batch(0x77, &[b"x"])]),
        DisconnectReason::UnknownChannel(0x77)
    );
    // Inside a message of several chunks.
    let first = Packet::Msg(Msg {
        channel: BULK,
        eof: false,
        kind: MsgKind::Plain,
        total: Some(10),
        payload: Bytes::from_static(b"abc"),
    });
    assert_eq!(
        reason(&[first, batch(BULK, &[b"x"])]),
        DisconnectReason::InconsistentChunks(BULK)
    );
    // A message above the channel's limit.
    let limits = Config {
        max_message_size: 100,
        ..Config::default()
    };
    let mut s = Solo::new(&limits);
    s.handshake(65_536);
    s.feed_packet(batch(BULK, &[b"ok", &[0u8; 101]]));
    assert!(matches!(
        s.reason(),
        Some(DisconnectReason::MessageTooLarge {
            channel: BULK,
            size: 101,
            max: 100
        })
    ));
    // Raw bytes the decoder refuses.
    for (bytes, want) in [
        (&[0x07, BULK, 0, 0, 0, 0][..], CodecError::EmptyBatch),
        (
            &[0x07, BULK, 0, 0, 0, 3, 0, 9, 1][..],
            CodecError::BatchOverrun { at: 0, length: 3 },
        ),
    ] {
        let mut s = solo();
        s.feed(bytes);
        assert_eq!(s.reason(), Some(DisconnectReason::Codec(want)));
    }
}

#[test]
fn a_batch_beyond_the_credit_is_closed() {
    let mut s = solo();
    s.consuming = false;
    let window = s.granted(BULK);
    // Each message costs its 1,000 bytes and 32 more.
    let msg = [5u8; 1000];
    let mut fit = (window / 1032) as usize;
    // Batches of at most 50 messages (a batch is at most one packet's payload).
    while fit > 0 {
        let n = fit.min(50);
        let within: Vec<&[u8]> = vec![&msg; n];
        s.feed_packet(batch(BULK, &within));
        assert_eq!(s.reason(), None, "within {window}");
        fit -= n;
    }
    s.feed_packet(batch(BULK, &[&msg, &msg]));
    assert!(matches!(
        s.reason(),
        Some(DisconnectReason::CreditExceeded { channel: BULK, .. })
    ));
}
