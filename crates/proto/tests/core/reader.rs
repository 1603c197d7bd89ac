//! The `Reader` between a socket and its core: large payloads go straight into their
//! messages, in plaintext and (frame by frame) encrypted, whatever the read sizes; a
//! tampered or truncated frame closes the connection with its reason.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use switchyard_proto::connection::reader::{ReadTarget, Reader};
use switchyard_proto::connection::writer::{WriteStep, Writer};
use switchyard_proto::connection::Transmit;
use switchyard_proto::secure::{Sealer, SecureError, Suite};
use switchyard_proto::{DisconnectReason, PeerCore};

use crate::pair::*;

/// Feeds `wire` to `core` through `reader` as a socket would hand it out: at most
/// `read_size` bytes per read, no more than the reader asks for.
fn feed(
    reader: &mut Reader,
    core: &mut PeerCore,
    now: Instant,
    wire: &mut BytesMut,
    read_size: usize,
) {
    while !wire.is_empty() && !reader.is_done() {
        let mut target = reader.target(core);
        let (buf, most) = reader.buffer(&mut target);
        // As a socket read: no more than the room the reader made (a read never grows
        // the buffer), and the reader always makes some.
        let room = buf.capacity() - buf.len();
        assert!(room > 0, "no room made for a read");
        let take = most.min(read_size).min(wire.len()).min(room);
        buf.extend_from_slice(&wire.split_to(take));
        reader.complete(core, now, target, Ok(take));
    }
}

/// A sends `msgs` on BULK to B, whose runtime reads through a [`Reader`] (decrypting
/// what A's `sealer` encrypted, if any); B's service takes every message at once and
/// B's credit goes back to A. Returns what B's service got, in order.
fn send_through_reader(
    p: &mut Pair,
    reader: &mut Reader,
    mut sealer: Option<&mut Sealer>,
    msgs: &[Bytes],
    read_size: usize,
) -> Vec<Bytes> {
    for m in msgs {
        p.a.core.send(BULK, m.clone()).expect("queued");
    }
    let mut got = Vec::new();
    for _ in 0..10_000 {
        let now = p.now;
        let mut plain = Transmit::new();
        while p.a.core.poll_transmit(now, &mut plain, 256 << 10) {}
        let mut wire = match &mut sealer {
            Some(s) => {
                let mut out = BytesMut::new();
                s.seal(&mut plain, &mut out).expect("sealed");
                out
            }
            None => plain.take_all(),
        };
        feed(reader, &mut p.b.core, now, &mut wire, read_size);
        let mut cost = 0;
        while let Some(m) = p.b.core.recv(BULK) {
            cost += m.cost();
            got.push(m.payload);
        }
        if cost > 0 {
            p.b.core.handle_consumed(now, BULK, cost);
        }
        // B's answers (credit) go back in plaintext: A's side of the reader is not
        // under test.
        let mut back = Transmit::new();
        while p.b.core.poll_transmit(now, &mut back, 256 << 10) {}
        let mut back = back.take_all();
        p.a.core.handle_read(now, &mut back);
        if got.len() == msgs.len() || reader.is_done() {
            break;
        }
    }
    got
}

#[test]
fn plaintext_payloads_of_large_messages_are_read_straight_into_them() {
    for read_size in [1000, 16_411, 65_536, 100_003, 1 << 20] {
        let mut p = Pair::connected();
        let mut reader = Reader::new(None, BytesMut::new());
        let msgs = [pattern(1 << 20, 1), pattern(100, 2), pattern(300_001, 3)];
        let got = send_through_reader(&mut p, &mut reader, None, &msgs, read_size);
        assert_eq!(got, msgs, "read size {read_size}");
        assert!(p.b.core.is_active());
        // Reads smaller than a chunk (64 KiB) that do not line up with the chunks
        // take nearly every payload byte of the two large messages straight into
        // them (the read that brings a chunk's header brings some payload with it).
        // Larger reads take what has arrived, whole chunks included, into the read
        // buffer: only the rest of a chunk cut by a read goes straight in.
        if read_size < 64 << 10 {
            let large = (1 << 20) + 300_001;
            assert!(
                reader.direct_bytes() * 10 >= large * 9,
                "read size {read_size}: {} of {large} direct",
                reader.direct_bytes()
            );
        }
    }
}

#[test]
fn encrypted_payload_frames_are_decrypted_straight_into_their_messages() {
    for suite in [Suite::AesGcm, Suite::ChaChaPoly] {
        for read_size in [1, 777, 64 << 10, 1 << 20] {
            let mut p = Pair::connected();
            let (mut a, b) = sessions(suite);
            let mut reader = Reader::new(Some(b.opener), BytesMut::new());
            let mut msgs = vec![pattern(1 << 20, 4), pattern(10, 5), pattern(70_000, 6)];
            if read_size == 1 {
                // A byte at a time: one large message is enough.
                msgs.truncate(1);
            }
            let got =
                send_through_reader(&mut p, &mut reader, Some(&mut a.sealer), &msgs, read_size);
            assert_eq!(got, msgs, "{suite} read size {read_size}");
            // Payload frames of the 1 MiB message (64 KiB chunks, each split into a
            // frame of 65,519 bytes and one of 17) went straight into it.
            assert!(
                reader.direct_bytes() >= 16 * 65_519,
                "{suite} read size {read_size}: {} direct",
                reader.direct_bytes()
            );
            assert!(p.b.core.is_active());
        }
    }
}

#[test]
fn a_tampered_payload_frame_closes_with_a_decryption_error() {
    let mut p = Pair::connected();
    let (mut a, b) = sessions(Suite::AesGcm);
    let mut reader = Reader::new(Some(b.opener), BytesMut::new());
    p.a.core.send(BULK, pattern(200_000, 7)).expect("queued");
    let mut plain = Transmit::new();
    while p.a.core.poll_transmit(p.now, &mut plain, 256 << 10) {}
    let mut wire = BytesMut::new();
    a.sealer.seal(&mut plain, &mut wire).expect("sealed");
    // A byte deep in the first payload frame (past the header frame).
    let at = wire.len() / 2;
    wire[at] ^= 0x40;
    feed(&mut reader, &mut p.b.core, p.now, &mut wire, 64 << 10);
    assert!(reader.is_done());
    // Closing: the goodbye goes out with the reason.
    assert_eq!(
        p.b.core.close_reason(),
        Some(&DisconnectReason::Secure(SecureError::Decrypt))
    );
}

#[test]
fn a_stream_ending_inside_a_frame_is_a_truncated_frame() {
    let mut p = Pair::connected();
    let (mut a, b) = sessions(Suite::ChaChaPoly);
    let mut reader = Reader::new(Some(b.opener), BytesMut::new());
    p.a.core.send(BULK, pattern(5000, 8)).expect("queued");
    let mut plain = Transmit::new();
    while p.a.core.poll_transmit(p.now, &mut plain, 256 << 10) {}
    let mut wire = BytesMut::new();
    a.sealer.seal(&mut plain, &mut wire).expect("sealed");
    wire.truncate(wire.len() - 3);
    let now = p.now;
    feed(&mut reader, &mut p.b.core, p.now, &mut wire, 64 << 10);
    assert!(!reader.is_done());
    // The end of the stream.
    let target = reader.target(&mut p.b.core);
    assert_eq!(reader.complete(&mut p.b.core, now, target, Ok(0)), Some(0));
    assert!(reader.is_done());
    assert_eq!(
        p.b.core.close_reason(),
        Some(&DisconnectReason::Secure(SecureError::TruncatedFrame))
    );
}

#[test]
fn a_socket_that_fails_before_a_read_ends_reading_and_the_connection() {
    let mut p = Pair::connected();
    let mut reader = Reader::new(None, BytesMut::new());
    let now = p.now;
    let e = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    assert_eq!(reader.fail(&mut p.b.core, now, &e), 0);
    assert!(reader.is_done());
    assert!(p.b.core.is_closed());
    let closed = std::iter::from_fn(|| p.b.core.poll_event()).find_map(|e| match e {
        switchyard_proto::Event::Closed(reason) => Some(reason),
        _ => None,
    });
    assert!(
        matches!(closed, Some(DisconnectReason::Io(_))),
        "{closed:?}"
    );
}

#[test]
fn a_read_that_would_block_gives_the_lent_buffer_back() {
    let mut p = Pair::connected();
    let mut reader = Reader::new(None, BytesMut::new());
    let msg = pattern(100_000, 7);
    p.a.core.send(BULK, msg.clone()).expect("queued");
    let now = p.now;
    let mut plain = Transmit::new();
    while p.a.core.poll_transmit(now, &mut plain, 256 << 10) {}
    let mut wire = plain.take_all();
    // The first chunk's header and a little of its payload: the next read goes
    // straight into the message.
    feed(
        &mut reader,
        &mut p.b.core,
        now,
        &mut wire.split_to(100),
        100,
    );
    let blocked = || Err(std::io::Error::from(std::io::ErrorKind::WouldBlock));
    for _ in 0..2 {
        let target = reader.target(&mut p.b.core);
        assert!(matches!(target, ReadTarget::Message { .. }), "{target:?}");
        assert_eq!(reader.complete(&mut p.b.core, now, target, blocked()), None);
        assert!(!reader.is_done());
    }
    feed(&mut reader, &mut p.b.core, now, &mut wire, 64 << 10);
    assert_eq!(p.b.core.recv(BULK).map(|m| m.payload), Some(msg));
    assert!(p.b.core.is_active());
}

#[test]
fn a_started_reader_feeds_the_leftover_at_once_and_gives_the_writer_the_sealer() {
    for encrypted in [false, true] {
        let mut p = Pair::connected();
        let (mut a, b) = sessions(Suite::ChaChaPoly);
        let msg = pattern(5_000, 7);
        p.a.core.send(BULK, msg.clone()).expect("queued");
        let mut plain = Transmit::new();
        while p.a.core.poll_transmit(p.now, &mut plain, 256 << 10) {}
        let rest = if encrypted {
            let mut out = BytesMut::new();
            a.sealer.seal(&mut plain, &mut out).expect("sealed");
            out
        } else {
            plain.take_all()
        };
        let mut writer = Writer::new();
        let session = encrypted.then_some(b);
        let reader = Reader::start(session, rest, &mut writer, &mut p.b.core, p.now);
        assert!(!reader.is_done());
        let got = p.b.core.recv(BULK).map(|m| m.payload);
        assert_eq!(got, Some(msg), "encrypted: {encrypted}");
        // What B writes from now on is sealed with the session's sealer (if any): A
        // reads it through an opener of the same session.
        let reply = pattern(100, 8);
        p.b.core.send(BULK, reply.clone()).expect("queued");
        assert_eq!(
            writer.poll(&mut p.b.core, p.now, 256 << 10),
            WriteStep::Write
        );
        let mut wire = writer.take().take_all();
        let mut a_reader = Reader::new(encrypted.then_some(a.opener), BytesMut::new());
        feed(&mut a_reader, &mut p.a.core, p.now, &mut wire, 1 << 20);
        let got = p.a.core.recv(BULK).map(|m| m.payload);
        assert_eq!(got, Some(reply), "encrypted: {encrypted}");
    }
}
