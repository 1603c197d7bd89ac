//! Direct reads: the payload of a chunk of a large message goes from the socket
//! straight into its message (no copy through the read buffer), with every check of
//! the copying path, and hostile chunks taken that way are still refused.

use std::time::Duration;

use bytes::Bytes;
use switchyard_proto::config::Config;
use switchyard_proto::connection::DIRECT_READ_MIN;
use switchyard_proto::wire::codec::{CodecError, Msg, MsgKind, Packet};
use switchyard_proto::DisconnectReason;

use crate::pair::*;

fn chunk(eof: bool, kind: MsgKind, total: Option<u32>, payload: Bytes) -> Packet {
    Packet::Msg(Msg {
        channel: BULK,
        eof,
        kind,
        total,
        payload,
    })
}

/// A message of `total` bytes cut into chunks of `cut` bytes, as a sender cuts it.
fn cut(message: &Bytes, cut: usize, kind: MsgKind) -> Vec<Packet> {
    let total = message.len();
    (0..total)
        .step_by(cut)
        .map(|at| {
            let end = (at + cut).min(total);
            let size = (at == 0).then_some(total as u32);
            chunk(end == total, kind, size, message.slice(at..end))
        })
        .collect()
}

/// Over the link, large messages are read straight into place (all but the few
/// bytes of each chunk that arrive with its header), arrive intact and in order,
/// and a small urgent message sent meanwhile still gets through.
#[test]
fn large_messages_are_read_straight_into_place() {
    let limits = Config::default();
    let mut p = Pair::new(&limits);
    // Reads that cut packets anywhere, as a socket's do.
    p.read_size = 100_000;
    p.connect();
    let big: Vec<Bytes> = (0..3).map(|i| pattern(1 << 20, i)).collect();
    for m in &big {
        p.a.core.send(BULK, m.clone()).unwrap();
    }
    p.a.core
        .send(URGENT, Bytes::from_static(b"urgent"))
        .unwrap();
    assert!(p.run_until(Duration::from_secs(5), |p| {
        p.b.got(BULK).len() == 3 && p.b.got(URGENT).len() == 1
    }));
    assert!(p.b.payloads(BULK) == big, "the messages arrived intact");
    let total = 3u64 << 20;
    assert!(
        p.b.direct_bytes >= total * 95 / 100,
        "{} of {total} bytes read straight into their messages",
        p.b.direct_bytes
    );
    assert!(p.b.direct_bytes <= total);
}

/// The same transfer read only through the read buffer: nothing is lent, and the
/// messages are the same.
#[test]
fn without_direct_reads_the_same_messages_arrive() {
    let limits = Config::default();
    let mut p = Pair::new(&limits);
    p.direct_reads = false;
    p.connect();
    let big: Vec<Bytes> = (0..2).map(|i| pattern(700_000, i)).collect();
    for m in &big {
        p.a.core.send(BULK, m.clone()).unwrap();
    }
    assert!(p.run_until(Duration::from_secs(5), |p| p.b.got(BULK).len() == 2));
    assert!(p.b.payloads(BULK) == big, "the messages arrived intact");
    assert_eq!(p.b.direct_bytes, 0);
}

/// Requests keep their id when their chunks are read straight into place.
#[test]
fn a_large_request_read_in_place_keeps_its_kind() {
    let mut s = Solo::new(&Config::default());
    s.handshake(u32::MAX);
    s.consuming = false;
    let message = pattern(200_000, 7);
    let bytes = s.encode(&cut(&message, 65_536, MsgKind::Request(9)));
    let direct = s.feed_direct(&bytes, 4096);
    assert!(direct >= 190_000, "{direct} bytes read in place");
    assert_eq!(s.core.close_reason(), None);
    let got = s.core.recv(BULK).expect("the request arrived");
    assert_eq!(got.kind, MsgKind::Request(9));
    assert!(got.payload == message, "the request arrived intact");
}

/// A sender that goes past its credit in the middle of a chunk read in place is
/// closed for it, with no more than the credit buffered.
#[test]
fn credit_is_checked_on_bytes_read_in_place() {
    let limits = Config::default();
    let mut s = Solo::new(&limits);
    s.handshake(u32::MAX);
    s.consuming = false;
    let granted = s.granted(BULK);
    let message = pattern(4 * granted as usize, 1);
    let bytes = s.encode(&cut(&message, 65_536, MsgKind::Plain));
    let direct = s.feed_direct(&bytes, 4096);
    assert!(direct as u64 >= granted / 2, "{direct} bytes read in place");
    assert!(
        matches!(
            s.reason(),
            Some(DisconnectReason::CreditExceeded { channel: BULK, .. })
        ),
        "{:?}",
        s.reason()
    );
}

/// A later chunk that claims more bytes than its message has room for is refused,
/// as on the copying path.
#[test]
fn a_chunk_past_its_message_is_refused() {
    let mut s = Solo::new(&Config::default());
    s.handshake(u32::MAX);
    let packets = [
        chunk(false, MsgKind::Plain, Some(40_000), pattern(8_000, 0)),
        chunk(true, MsgKind::Plain, None, pattern(60_000, 1)),
    ];
    let bytes = s.encode(&packets);
    s.feed_direct(&bytes, 4096);
    assert_eq!(s.reason(), Some(DisconnectReason::InconsistentChunks(BULK)));
}

/// A chunk of another kind than its message's first is refused.
#[test]
fn a_chunk_of_another_kind_is_refused() {
    let mut s = Solo::new(&Config::default());
    s.handshake(u32::MAX);
    let packets = [
        chunk(false, MsgKind::Plain, Some(80_000), pattern(20_000, 0)),
        chunk(true, MsgKind::Response(3), None, pattern(60_000, 1)),
    ];
    let bytes = s.encode(&packets);
    s.feed_direct(&bytes, 4096);
    assert!(
        matches!(
            s.reason(),
            Some(
                DisconnectReason::InconsistentChunks(BULK)
                    | DisconnectReason::UnexpectedResponse { .. }
            )
        ),
        "{:?}",
        s.reason()
    );
}

/// The stream ends in the middle of a payload being read in place: truncated.
#[test]
fn the_stream_ending_inside_a_chunk_read_in_place_is_truncated() {
    let mut s = Solo::new(&Config::default());
    s.handshake(u32::MAX);
    let message = pattern(300_000, 3);
    let bytes = s.encode(&cut(&message, 65_536, MsgKind::Plain));
    let direct = s.feed_direct(&bytes[..100_000], 4096);
    assert!(direct > DIRECT_READ_MIN);
    s.feed_eof();
    assert!(
        matches!(
            s.reason(),
            Some(DisconnectReason::Codec(CodecError::Truncated { .. }))
        ),
        "{:?}",
        s.reason()
    );
}

/// Bytes fed one at a time (headers and payloads cut anywhere) and in place give the
/// same message.
#[test]
fn a_message_fed_a_byte_at_a_time_arrives_whole() {
    let mut s = Solo::new(&Config::default());
    s.handshake(u32::MAX);
    s.consuming = false;
    let message = pattern(3 * DIRECT_READ_MIN + 17, 5);
    let bytes = s.encode(&cut(&message, DIRECT_READ_MIN * 2, MsgKind::Plain));
    let mut direct = 0;
    for b in bytes.chunks(1) {
        direct += s.feed_direct(b, 1);
    }
    assert!(direct > DIRECT_READ_MIN, "{direct} bytes read in place");
    assert_eq!(s.core.close_reason(), None);
    assert!(
        s.core.recv(BULK).map(|m| m.payload) == Some(message),
        "the message arrived intact"
    );
}

/// The read buffer after `payload` arrived in it as one whole `Msg` packet on BULK,
/// with the message taken from the core and still held (as its service would).
fn read_whole(s: &mut Solo, payload: &[u8]) -> (bytes::BytesMut, Bytes) {
    use tokio_util::codec::Encoder;
    let mut buf = bytes::BytesMut::with_capacity(256 << 10);
    let packet = chunk(true, MsgKind::Plain, None, Bytes::copy_from_slice(payload));
    switchyard_proto::wire::codec::PacketCodec::new(64 << 10)
        .encode(packet, &mut buf)
        .expect("encodable");
    s.core.handle_read(s.now, &mut buf);
    assert!(buf.is_empty(), "the packet was taken");
    let msg = s.core.recv(BULK).expect("the message");
    assert_eq!(&msg.payload[..], payload);
    (buf, msg.payload)
}

#[test]
fn whole_messages_of_4_kib_and_up_leave_the_read_buffer_free() {
    use switchyard_proto::connection::COPY_OUT_MIN;
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    s.consuming = false;
    // A small message is a slice of the read buffer: while it is held, the buffer
    // cannot be read into again in place.
    let (mut buf, small) = read_whole(&mut s, &[1u8; 100]);
    assert!(!buf.try_reclaim(256 << 10));
    drop(small);
    assert!(buf.try_reclaim(256 << 10));
    // One of COPY_OUT_MIN bytes or more has a buffer of its own: the read buffer is
    // free at once, while the message is still held.
    for size in [COPY_OUT_MIN, 64 << 10] {
        let (mut buf, large) = read_whole(&mut s, &vec![7u8; size]);
        assert!(
            buf.try_reclaim(256 << 10),
            "{size} bytes pin the read buffer"
        );
        assert_eq!(large.len(), size);
    }
    assert_eq!(s.reason(), None);
}
