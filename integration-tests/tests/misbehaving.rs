//! Raw misbehaving peers over plain TCP. Each is closed with its own reason (which
//! the node tells it in a `Goodbye`), while an honest peer connected to the same node
//! keeps exchanging messages throughout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard::proto::connection::handshake::HandshakeError;
use switchyard::proto::wire::codec::{CodecError, Msg, MsgKind, Packet};
use switchyard::proto::wire::control::Control;
use switchyard::{ChannelConfig, Dial, DisconnectReason, Shutdown};
use switchyard_integration_tests::*;

const NET: &str = "switchyard-local";
const WAIT: Duration = Duration::from_secs(5);

fn handshake_error(c: &Closed) -> Option<&HandshakeError> {
    match c {
        Closed::Goodbye(DisconnectReason::Handshake(e)) => Some(e),
        _ => None,
    }
}

#[actix::test]
async fn misbehaving_peers_are_closed_with_their_reason_and_honest_peers_keep_going() {
    init_logs();
    let chans = [(1, ChannelConfig::new(1), Mode::PerMessage)];
    let node = start_node(plaintext_config(), &chans).await;
    let honest = start_node(plaintext_config(), &chans).await;
    let to_node = honest
        .switch
        .send(Dial(node.peer_addr()))
        .await
        .unwrap()
        .unwrap();

    // The honest peer sends a message every 5 ms for the whole test.
    let running = Arc::new(AtomicBool::new(true));
    let flag = running.clone();
    let ch = honest.ch(1);
    let sender = actix::spawn(async move {
        let mut seq = 0;
        while flag.load(Ordering::Relaxed) {
            to_node
                .send(
                    &ch,
                    &TestMsg {
                        seq,
                        body: vec![1, 2, 3],
                    },
                )
                .await
                .unwrap();
            seq += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seq
    });
    let honest_count = || {
        node.log
            .lock()
            .msgs
            .iter()
            .filter(|m| m.1 == honest.id)
            .count()
    };

    // Garbage bytes: not a packet type.
    let mut raw = RawPeer::connect(node.addr).await;
    raw.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        raw.closed(WAIT, false).await,
        Closed::Goodbye(DisconnectReason::Codec(CodecError::UnknownType(b'G')))
    );

    // An oversized length prefix, before any payload.
    let mut raw = RawPeer::connect(node.addr).await;
    raw.write(&[0x03, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff]).await;
    let closed = raw.closed(WAIT, false).await;
    assert!(
        matches!(
            closed,
            Closed::Goodbye(DisconnectReason::Codec(CodecError::Oversized {
                len: 0xffff_ffff,
                ..
            }))
        ),
        "{closed:?}"
    );

    // Verack first.
    let mut raw = RawPeer::connect(node.addr).await;
    raw.send_control(&Control::Verack).await;
    let closed = raw.closed(WAIT, false).await;
    assert_eq!(
        handshake_error(&closed),
        Some(&HandshakeError::VerackBeforeVersion),
        "{closed:?}"
    );

    // A message before the handshake.
    let mut raw = RawPeer::connect(node.addr).await;
    raw.send_msg(
        1,
        encode(&TestMsg {
            seq: 0,
            body: vec![],
        }),
    )
    .await;
    let closed = raw.closed(WAIT, false).await;
    assert!(
        matches!(
            handshake_error(&closed),
            Some(HandshakeError::UnexpectedPacket(_))
        ),
        "{closed:?}"
    );

    // Wrong network.
    let mut raw = RawPeer::connect(node.addr).await;
    let v = raw.version("some-other-net");
    raw.send_control(&Control::Version(v)).await;
    let closed = raw.closed(WAIT, false).await;
    assert!(
        matches!(
            handshake_error(&closed),
            Some(HandshakeError::NetworkMismatch { .. })
        ),
        "{closed:?}"
    );

    // Silence: the handshake times out.
    let mut raw = RawPeer::connect(node.addr).await;
    let closed = raw.closed(fast_limits().handshake_timeout * 3, false).await;
    assert_eq!(
        handshake_error(&closed),
        Some(&HandshakeError::Timeout),
        "{closed:?}"
    );

    // A second Version after the handshake.
    let mut raw = RawPeer::connect(node.addr).await;
    let v = raw.handshake(NET).await;
    assert_eq!(v.node_id, node.id);
    raw.send_control(&Control::Version(raw.version(NET))).await;
    let closed = raw.closed(WAIT, true).await;
    assert_eq!(
        handshake_error(&closed),
        Some(&HandshakeError::DuplicateVersion),
        "{closed:?}"
    );

    // A channel this node does not have.
    let mut raw = RawPeer::connect(node.addr).await;
    raw.handshake(NET).await;
    raw.send_msg(0x77, vec![1u8, 2, 3]).await;
    assert_eq!(
        raw.closed(WAIT, true).await,
        Closed::Goodbye(DisconnectReason::UnknownChannel(0x77))
    );

    // An undecodable message on a real channel.
    let mut raw = RawPeer::connect(node.addr).await;
    raw.handshake(NET).await;
    raw.send_msg(1, vec![0xc1u8, 0xff, 0x00]).await;
    let closed = raw.closed(WAIT, true).await;
    assert!(
        matches!(
            closed,
            Closed::Goodbye(DisconnectReason::Undecodable { channel: 1, .. })
        ),
        "{closed:?}"
    );

    // A message declared over the channel's size limit.
    let mut raw = RawPeer::connect(node.addr).await;
    raw.handshake(NET).await;
    let limit = ChannelConfig::new(1).max_message_size as u32;
    raw.send(chunk(1, 1000, Some(limit + 1))).await;
    let closed = raw.closed(WAIT, true).await;
    assert!(
        matches!(
            closed,
            Closed::Goodbye(DisconnectReason::MessageTooLarge { channel: 1, .. })
        ),
        "{closed:?}"
    );

    // Batches: one whose entry runs past its end, and one on channel 0.
    let mut raw = RawPeer::connect(node.addr).await;
    raw.handshake(NET).await;
    raw.write(&[0x07, 1, 0, 0, 0, 4, 0, 1, b'a', 0]).await;
    assert_eq!(
        raw.closed(WAIT, true).await,
        Closed::Goodbye(DisconnectReason::Codec(CodecError::BatchOverrun {
            at: 3,
            length: 4
        }))
    );
    let mut raw = RawPeer::connect(node.addr).await;
    raw.handshake(NET).await;
    raw.write(&[0x07, 0, 0, 0, 0, 3, 0, 1, b'a']).await;
    let closed = raw.closed(WAIT, true).await;
    assert!(
        matches!(
            closed,
            Closed::Goodbye(DisconnectReason::ControlViolation(_))
        ),
        "{closed:?}"
    );

    // A ping flood, then a flood of pongs that answer nothing.
    for packet in [Packet::Ping as fn(u64) -> Packet, Packet::Pong] {
        let mut raw = RawPeer::connect(node.addr).await;
        raw.handshake(NET).await;
        let mut flood = bytes::BytesMut::new();
        for i in 0..1000 {
            use tokio_util::codec::Encoder;
            switchyard::proto::PacketCodec::new(64)
                .encode(packet(i), &mut flood)
                .unwrap();
        }
        raw.write(&flood).await;
        let closed = raw.closed(WAIT, false).await;
        assert!(
            matches!(
                closed,
                Closed::Goodbye(
                    DisconnectReason::TooManyPings { .. } | DisconnectReason::TooManyPongs { .. }
                )
            ),
            "{closed:?}"
        );
    }

    // Silence after the handshake: no pongs.
    let mut raw = RawPeer::connect(node.addr).await;
    raw.handshake(NET).await;
    let closed = raw.closed(fast_limits().idle_timeout * 2, false).await;
    assert!(
        matches!(
            closed,
            Closed::Goodbye(DisconnectReason::PongTimeout | DisconnectReason::IdleTimeout)
        ),
        "{closed:?}"
    );

    // Throughout, the honest peer stayed up and its messages kept arriving.
    let before = honest_count();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(honest_count() > before, "honest messages still arrive");
    running.store(false, Ordering::Relaxed);
    let sent = sender.await.unwrap();
    assert!(
        node.log
            .wait_for(WAIT, |l| l.msgs.iter().filter(|m| m.1 == honest.id).count()
                as u64
                == sent)
            .await
    );
    let seqs: Vec<u64> = node
        .log
        .lock()
        .msgs
        .iter()
        .filter(|m| m.1 == honest.id)
        .map(|m| m.2.seq)
        .collect();
    assert_eq!(
        seqs,
        (0..sent).collect::<Vec<_>>(),
        "honest messages complete and in order"
    );
    let downs = node
        .log
        .lock()
        .events
        .iter()
        .filter(|e| matches!(e, Event::Down(id, _) if *id == honest.id))
        .count();
    assert_eq!(downs, 0, "the honest peer was never closed");
    honest.switch.send(Shutdown).await.unwrap();
    node.switch.send(Shutdown).await.unwrap();
}

/// A peer that never reads, so that our writes block, while it sends pongs nobody
/// asked for: a pong only answers a ping that was really written, so the keepalive
/// still closes it (otherwise it could hold the connection, and full send queues,
/// forever).
#[actix::test]
async fn a_peer_that_never_reads_is_closed_despite_unasked_pongs() {
    init_logs();
    let chans = [(
        1,
        ChannelConfig::new(1).send_queue(64, 8 << 20),
        Mode::PerMessage,
    )];
    let node = start_node(plaintext_config(), &chans).await;
    let mut raw = RawPeer::connect(node.addr).await;
    raw.handshake(NET).await;
    let raw_id = raw.id;
    assert!(
        node.log
            .wait_for(WAIT, |l| l.events.contains(&Event::Up(raw_id)))
            .await
    );
    let to_raw = node.log.handle_of(raw_id).unwrap();
    // Fill the socket buffers, then the queue: the raw peer reads nothing from here on.
    let ch = node.ch(1);
    let filler = actix::spawn(async move {
        let big = TestMsg {
            seq: 0,
            body: vec![0; 256 << 10],
        };
        while to_raw.send(&ch, &big).await.is_ok() {}
    });
    let started = std::time::Instant::now();
    let reason = loop {
        raw.send(Packet::Pong(rand_nonce())).await;
        let down = node.log.lock().events.iter().find_map(|e| match e {
            Event::Down(id, reason) if *id == raw_id => Some(reason.clone()),
            _ => None,
        });
        if let Some(reason) = down {
            break reason;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a peer that reads nothing was never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reason, DisconnectReason::PongTimeout);
    filler.await.unwrap();
    node.switch.send(Shutdown).await.unwrap();
}

/// Bytes beyond the credit granted close the sender, whatever they are. (With the
/// service stalled, no credit comes back while they arrive.)
#[actix::test]
async fn a_peer_sending_beyond_its_credit_is_closed() {
    init_logs();
    let chans = [(1, ChannelConfig::new(1), Mode::PerMessage)];
    let node = start_node(plaintext_config(), &chans).await;
    node.gate.send(false).unwrap();
    let mut raw = RawPeer::connect(node.addr).await;
    raw.handshake(NET).await;
    let msg = encode(&TestMsg {
        seq: 0,
        body: vec![0; 8000],
    });
    // More than the channel's whole window and the service's mailbox (64 messages,
    // whose credit came back when the mailbox took them), all at once.
    let window = ChannelConfig::new(1).recv_window;
    for _ in 0..window / 8000 + 64 + 16 {
        raw.send_msg(1, msg.clone()).await;
    }
    let closed = raw.closed(WAIT, true).await;
    assert!(
        matches!(
            closed,
            Closed::Goodbye(DisconnectReason::CreditExceeded { channel: 1, .. })
        ),
        "{closed:?}"
    );
    node.switch.send(Shutdown).await.unwrap();
}

/// The stream ends in the middle of a large chunk's payload, which the node reads
/// straight into its message: the node closes the peer as truncated, names what it
/// missed, and goes on serving others.
#[actix::test]
async fn a_stream_ending_inside_a_large_chunk_is_truncated() {
    init_logs();
    let chans = [(1, ChannelConfig::new(1), Mode::Raw)];
    let node = start_node(plaintext_config(), &chans).await;
    let mut raw = RawPeer::connect(node.addr).await;
    raw.handshake(NET).await;
    let raw_id = raw.id;
    // Msg, channel 1, SIZED: a 200,000-byte message whose first chunk has 60,000
    // bytes; 10,000 of them are written, then nothing more.
    let mut bytes = vec![0x03, 1, 0x08];
    bytes.extend_from_slice(&200_000u32.to_be_bytes());
    bytes.extend_from_slice(&60_000u32.to_be_bytes());
    bytes.extend_from_slice(&[7u8; 10_000]);
    raw.write(&bytes).await;
    // Let the node take the header and start reading the payload into place.
    assert!(
        node.log
            .wait_for(WAIT, |l| l.events.contains(&Event::Up(raw_id)))
            .await
    );
    raw.shutdown().await;
    assert!(
        node.log
            .wait_for(WAIT, |l| l
                .events
                .iter()
                .any(|e| matches!(e, Event::Down(id, _) if *id == raw_id)))
            .await
    );
    let reason = node.log.lock().events.iter().find_map(|e| match e {
        Event::Down(id, reason) if *id == raw_id => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(
        reason,
        Some(DisconnectReason::Codec(CodecError::Truncated {
            have: 0,
            need: 50_000
        }))
    );
    // The node still serves an honest peer.
    let other = start_node(plaintext_config(), &chans).await;
    let to_other = connect(&node, &other).await;
    to_other
        .send(&node.raw(1), Bytes::from_static(b"still here"))
        .await
        .unwrap();
    assert!(other.log.wait_for(WAIT, |l| l.raw.len() == 1).await);
    node.switch.send(Shutdown).await.unwrap();
    other.switch.send(Shutdown).await.unwrap();
}

/// A chunk that is not the last of its message; the first one says the total size.
fn chunk(channel: u8, len: usize, total: Option<u32>) -> Packet {
    Packet::Msg(Msg {
        channel,
        eof: false,
        kind: MsgKind::Plain,
        total,
        payload: vec![0u8; len].into(),
    })
}

/// A pong a peer that never read our ping could only guess.
fn rand_nonce() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now())
}
