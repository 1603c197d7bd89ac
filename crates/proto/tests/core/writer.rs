//! The `Writer` between a core and its socket: what it hands out reaches the remote in
//! order, plaintext or sealed, whatever the socket takes per write; the core hears
//! `handle_written` only once a transmit is wholly written; the write half is shut
//! once; the sealing buffer is reused and given back when idle; and a sender that
//! queued a message writes inline, wakes the runtime's writer, or does nothing.

use std::cell::Cell;
use std::io;

use bytes::{Bytes, BytesMut};
use switchyard_proto::connection::reader::Reader;
use switchyard_proto::connection::writer::{AfterPush, WriteStep, Writer};
use switchyard_proto::connection::Transmit;
use switchyard_proto::secure::Suite;
use switchyard_proto::wire::codec::{Packet, PacketCodec};
use switchyard_proto::{DisconnectReason, Event};
use tokio_util::codec::{Decoder, Encoder};

use crate::pair::*;

const BATCH: usize = 256 << 10;

/// A socket that takes at most `most` bytes of `t`: what it took.
fn socket_takes(t: &mut Transmit, most: usize) -> BytesMut {
    let mut all = t.take_all();
    let rest = all.split_off(most.min(all.len()));
    t.push_bytes(rest.freeze());
    all
}

/// Where the first byte of `t` lives (to see a buffer reused).
fn first_byte_at(t: &mut Transmit) -> usize {
    let mut slices = [io::IoSlice::new(&[]); 4];
    let count = t.io_slices(&mut slices);
    assert!(count > 0, "an empty transmit");
    slices[0].as_ptr() as usize
}

/// A sends `msgs` on BULK through `writer`, the socket taking at most `write_size`
/// bytes per write; B reads through a [`Reader`] (decrypting with `opener`), its
/// service takes everything, and its credit goes back to A in plaintext. Returns what
/// B's service got.
fn send_through_writer(
    p: &mut Pair,
    writer: &mut Writer,
    reader: &mut Reader,
    msgs: &[Bytes],
    write_size: usize,
) -> Vec<Bytes> {
    for m in msgs {
        p.a.core.send(BULK, m.clone()).expect("queued");
    }
    let mut got = Vec::new();
    for _ in 0..100_000 {
        let now = p.now;
        let mut wire = BytesMut::new();
        if writer.poll(&mut p.a.core, now, BATCH) == WriteStep::Write {
            let mut t = writer.take();
            wire = socket_takes(&mut t, write_size);
            let n = wire.len();
            assert_eq!(writer.complete(&mut p.a.core, now, t, Ok(n)), Some(n));
        }
        while !wire.is_empty() && !reader.is_done() {
            let mut target = reader.target(&mut p.b.core);
            let (buf, most) = reader.buffer(&mut target);
            let take = most.min(wire.len());
            buf.extend_from_slice(&wire.split_to(take));
            reader.complete(&mut p.b.core, now, target, Ok(take));
        }
        let mut cost = 0;
        while let Some(m) = p.b.core.recv(BULK) {
            cost += m.cost();
            got.push(m.payload);
        }
        if cost > 0 {
            p.b.core.handle_consumed(now, BULK, cost);
        }
        let mut back = Transmit::new();
        while p.b.core.poll_transmit(now, &mut back, BATCH) {}
        let mut back = back.take_all();
        p.a.core.handle_read(now, &mut back);
        if got.len() == msgs.len() || reader.is_done() {
            break;
        }
    }
    got
}

#[test]
fn plaintext_reaches_the_remote_in_order_whatever_the_socket_takes() {
    for write_size in [1_000, 65_536, 300_007, 1 << 22] {
        let mut p = Pair::connected();
        let mut writer = Writer::new();
        let mut reader = Reader::new(None, BytesMut::new());
        let msgs = [pattern(1 << 20, 1), pattern(10, 2), pattern(70_001, 3)];
        let got = send_through_writer(&mut p, &mut writer, &mut reader, &msgs, write_size);
        assert_eq!(got, msgs, "write size {write_size}");
        assert!(p.a.core.is_active() && p.b.core.is_active());
    }
}

#[test]
fn sealed_frames_reach_the_remote_in_order_whatever_the_socket_takes() {
    for suite in [Suite::AesGcm, Suite::ChaChaPoly] {
        for write_size in [777, 65_536, 1 << 22] {
            let mut p = Pair::connected();
            let (a, b) = sessions(suite);
            let mut writer = Writer::new();
            writer.set_sealer(a.sealer);
            let mut reader = Reader::new(Some(b.opener), BytesMut::new());
            let msgs = [pattern(1 << 20, 4), pattern(10, 5), pattern(70_001, 6)];
            let got = send_through_writer(&mut p, &mut writer, &mut reader, &msgs, write_size);
            assert_eq!(got, msgs, "{suite} write size {write_size}");
            assert!(p.b.core.is_active());
        }
    }
}

#[test]
fn the_core_hears_written_only_once_a_transmit_is_wholly_in_the_socket() {
    let mut p = Pair::connected();
    let now = p.now;
    let mut writer = Writer::new();
    assert_eq!(writer.poll(&mut p.a.core, now, BATCH), WriteStep::Idle);
    p.a.core.close(now, DisconnectReason::Shutdown, false);
    // The goodbye goes out; the socket takes one byte of it.
    assert_eq!(writer.poll(&mut p.a.core, now, BATCH), WriteStep::Write);
    let mut t = writer.take();
    let len = t.len();
    assert!(len > 1);
    assert_eq!(writer.poll(&mut p.a.core, now, BATCH), WriteStep::Busy);
    socket_takes(&mut t, 1);
    writer.complete(&mut p.a.core, now, t, Ok(1));
    // Not written yet: the rest goes next, and the write half stays open.
    assert_eq!(writer.poll(&mut p.a.core, now, BATCH), WriteStep::Write);
    assert_eq!(writer.pending(), len - 1);
    let mut t = writer.take();
    socket_takes(&mut t, usize::MAX);
    writer.complete(&mut p.a.core, now, t, Ok(len - 1));
    // Written: the write half is shut, once, and nothing more goes out.
    assert_eq!(writer.poll(&mut p.a.core, now, BATCH), WriteStep::Shutdown);
    assert!(writer.is_done() && !writer.is_idle());
    assert_eq!(writer.poll(&mut p.a.core, now, BATCH), WriteStep::Done);
}

#[test]
fn the_sealing_buffer_is_reused_and_given_back_when_idle() {
    let mut p = Pair::connected();
    let now = p.now;
    let (a, _) = sessions(Suite::ChaChaPoly);
    let mut writer = Writer::new();
    writer.set_sealer(a.sealer);
    let mut at = Vec::new();
    // A large write, then a small one.
    for (seed, len) in [(0, 200_000), (1, 10_000)] {
        p.a.core.send(BULK, pattern(len, seed)).expect("queued");
        assert_eq!(writer.poll(&mut p.a.core, now, BATCH), WriteStep::Write);
        let mut t = writer.take();
        at.push(first_byte_at(&mut t));
        let n = t.len();
        // The socket takes everything: the frames are dropped.
        drop(socket_takes(&mut t, usize::MAX));
        writer.complete(&mut p.a.core, now, t, Ok(n));
    }
    assert_eq!(
        at[0], at[1],
        "the second write's frames reuse the first's buffer"
    );
    // The small write's frames took the front of the large one's buffer; the rest of
    // it stays with the writer until it is idle.
    assert!(writer.spare_capacity() > 64 << 10);
    assert_eq!(writer.poll(&mut p.a.core, now, BATCH), WriteStep::Idle);
    assert!(writer.is_idle());
    assert_eq!(
        writer.spare_capacity(),
        0,
        "an idle writer gives its buffer back"
    );
}

/// A writer whose runtime writer sleeps (everything A had is written).
fn idle_writer(p: &mut Pair) -> Writer {
    let mut writer = Writer::new();
    assert_eq!(writer.poll(&mut p.a.core, p.now, BATCH), WriteStep::Idle);
    writer
}

#[test]
fn a_push_while_the_writer_is_awake_does_nothing_else() {
    let mut p = Pair::connected();
    let mut writer = Writer::new();
    p.a.core.send(BULK, pattern(10, 1)).expect("queued");
    let asked = Cell::new(false);
    let step = writer.after_push(&mut p.a.core, p.now, BATCH, || {
        asked.set(true);
        true
    });
    assert!(matches!(step, AfterPush::Nothing));
    assert!(!asked.get(), "the runtime is not asked");
}

#[test]
fn a_push_the_runtime_does_not_let_write_inline_wakes_the_writer() {
    let mut p = Pair::connected();
    let mut writer = idle_writer(&mut p);
    p.a.core.send(BULK, pattern(10, 1)).expect("queued");
    writer.set_armed(p.a.core.poll_timeout());
    let step = writer.after_push(&mut p.a.core, p.now, BATCH, || false);
    assert!(matches!(step, AfterPush::Wake));
    assert!(!writer.is_idle());
    assert_eq!(writer.poll(&mut p.a.core, p.now, BATCH), WriteStep::Write);
}

#[test]
fn an_inline_write_the_socket_takes_whole_leaves_the_writer_asleep() {
    let mut p = Pair::connected();
    let now = p.now;
    let mut writer = idle_writer(&mut p);
    p.a.core.send(BULK, pattern(10, 1)).expect("queued");
    writer.set_armed(p.a.core.poll_timeout());
    let AfterPush::Write(mut t) = writer.after_push(&mut p.a.core, now, BATCH, || true) else {
        panic!("an inline write");
    };
    let n = t.len();
    let mut wire = socket_takes(&mut t, usize::MAX);
    writer.set_armed(p.a.core.poll_timeout());
    assert!(!writer.complete_inline(&mut p.a.core, now, t, Ok(n)));
    assert!(writer.is_idle());
    p.b.core.handle_read(now, &mut wire);
    assert_eq!(p.b.core.recv(BULK).map(|m| m.payload), Some(pattern(10, 1)));
}

#[test]
fn an_inline_write_wakes_the_writer_for_a_deadline_before_its_timer() {
    let mut p = Pair::connected();
    let now = p.now;
    let mut writer = idle_writer(&mut p);
    p.a.core.send(BULK, pattern(10, 1)).expect("queued");
    let AfterPush::Write(mut t) = writer.after_push(&mut p.a.core, now, BATCH, || true) else {
        panic!("an inline write");
    };
    let n = t.len();
    let _ = socket_takes(&mut t, usize::MAX);
    // The runtime's timer is armed for later than the core's next deadline.
    let deadline = p.a.core.poll_timeout().expect("a keepalive deadline");
    writer.set_armed(Some(deadline + std::time::Duration::from_secs(1)));
    assert!(writer.complete_inline(&mut p.a.core, now, t, Ok(n)));
    assert!(!writer.is_idle());
}

#[test]
fn what_the_writer_came_for_during_an_inline_write_is_written_after_it() {
    let mut p = Pair::connected();
    let now = p.now;
    let mut writer = idle_writer(&mut p);
    p.a.core.send(BULK, pattern(10, 1)).expect("queued");
    writer.set_armed(p.a.core.poll_timeout());
    let AfterPush::Write(mut t) = writer.after_push(&mut p.a.core, now, BATCH, || true) else {
        panic!("an inline write");
    };
    // Meanwhile the runtime reads a ping: the core owes a pong, and the runtime's
    // writer, finding the inline write out, leaves.
    let mut ping = BytesMut::new();
    PacketCodec::new(1 << 20)
        .encode(Packet::Ping(77), &mut ping)
        .expect("encodable");
    p.a.core.handle_read(now, &mut ping);
    assert_eq!(writer.poll(&mut p.a.core, now, BATCH), WriteStep::Busy);
    let n = t.len();
    let _ = socket_takes(&mut t, usize::MAX);
    writer.set_armed(p.a.core.poll_timeout());
    // The socket took everything, yet the writer must wake: the pong waits.
    assert!(writer.complete_inline(&mut p.a.core, now, t, Ok(n)));
    assert!(!writer.is_idle());
    assert_eq!(writer.poll(&mut p.a.core, now, BATCH), WriteStep::Write);
    let mut t = writer.take();
    let mut wire = t.take_all();
    let mut codec = PacketCodec::new(1 << 20);
    let mut packets = Vec::new();
    while let Some(packet) = codec.decode(&mut wire).expect("decodable") {
        packets.push(packet);
    }
    assert!(packets.contains(&Packet::Pong(77)), "{packets:?}");
}

#[test]
fn an_inline_write_wakes_the_writer_for_what_it_leaves() {
    let mut p = Pair::connected();
    let now = p.now;
    // The socket takes part of it.
    let mut writer = idle_writer(&mut p);
    p.a.core.send(BULK, pattern(10, 1)).expect("queued");
    writer.set_armed(p.a.core.poll_timeout());
    let AfterPush::Write(mut t) = writer.after_push(&mut p.a.core, now, BATCH, || true) else {
        panic!("an inline write");
    };
    let len = t.len();
    socket_takes(&mut t, 3);
    assert!(writer.complete_inline(&mut p.a.core, now, t, Ok(3)));
    assert!(!writer.is_idle());
    assert_eq!(writer.pending(), len - 3);
    assert_eq!(writer.poll(&mut p.a.core, now, BATCH), WriteStep::Write);

    // More than one batch was ready.
    let mut p = Pair::connected();
    let mut writer = idle_writer(&mut p);
    p.a.core.send(BULK, pattern(10_000, 2)).expect("queued");
    p.a.core.send(BULK, pattern(10_000, 3)).expect("queued");
    let batch = 1_000;
    let AfterPush::Write(mut t) = writer.after_push(&mut p.a.core, now, batch, || true) else {
        panic!("an inline write");
    };
    assert!(t.len() >= batch);
    let n = t.len();
    socket_takes(&mut t, usize::MAX);
    assert!(writer.complete_inline(&mut p.a.core, now, t, Ok(n)));
    assert!(!writer.is_idle());
}

#[test]
fn a_failed_inline_write_closes_the_connection_and_ends_writing() {
    let mut p = Pair::connected();
    let now = p.now;
    let mut writer = idle_writer(&mut p);
    p.a.core.send(BULK, pattern(10, 1)).expect("queued");
    writer.set_armed(p.a.core.poll_timeout());
    let AfterPush::Write(t) = writer.after_push(&mut p.a.core, now, BATCH, || true) else {
        panic!("an inline write");
    };
    let failed = Err(io::ErrorKind::BrokenPipe.into());
    assert!(writer.complete_inline(&mut p.a.core, now, t, failed));
    assert!(writer.is_done());
    let closed = std::iter::from_fn(|| p.a.core.poll_event()).find_map(|e| match e {
        Event::Closed(reason) => Some(reason),
        _ => None,
    });
    assert!(
        matches!(closed, Some(DisconnectReason::Io(_))),
        "{closed:?}"
    );
    assert_eq!(writer.poll(&mut p.a.core, now, BATCH), WriteStep::Done);
}
