//! Hostile bytes after a completed handshake: each is closed with its own reason, the
//! remote is told why, nothing panics.

use bytes::Bytes;
use proptest::prelude::*;
use switchyard_proto::config::Config;
use switchyard_proto::connection::handshake::HandshakeError;
use switchyard_proto::wire::codec::{CodecError, Msg, MsgKind, Packet};
use switchyard_proto::wire::control::Control;
use switchyard_proto::DisconnectReason;

use crate::pair::*;

fn after_handshake(bytes: &[u8]) -> DisconnectReason {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    s.feed(bytes);
    let reason = s.reason().expect("closed");
    assert_eq!(s.goodbye(), Some(reason.clone()), "the remote is told why");
    reason
}

fn msg(channel: u8, eof: bool, kind: MsgKind, payload: &[u8]) -> Packet {
    Packet::Msg(Msg {
        channel,
        eof,
        kind,
        total: None,
        payload: Bytes::copy_from_slice(payload),
    })
}

fn packets(ps: &[Packet]) -> DisconnectReason {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    s.feed_packets(ps);
    s.reason().expect("closed")
}

#[test]
fn each_malformed_input_has_its_own_reason() {
    assert_eq!(
        after_handshake(&[0x47, 0x45, 0x54, 0x20]),
        DisconnectReason::Codec(CodecError::UnknownType(0x47))
    );
    assert_eq!(
        after_handshake(&[0x03, BULK, 0x40, 0, 0, 0, 1, 0]),
        DisconnectReason::Codec(CodecError::UnknownFlags(0x40))
    );
    assert!(matches!(
        after_handshake(&[0x03, BULK, 0x01, 0xff, 0xff, 0xff, 0xff]),
        DisconnectReason::Codec(CodecError::Oversized { .. })
    ));
    assert_eq!(
        after_handshake(&[0x04, BULK, 0, 0, 0, 0]),
        DisconnectReason::Codec(CodecError::ZeroCredit(0x04))
    );
    assert_eq!(
        packets(&[msg(0x77, true, MsgKind::Plain, b"?")]),
        DisconnectReason::UnknownChannel(0x77)
    );
    // A message declared larger than its channel's limit, before any of it is stored.
    let limit = Config::default().max_message_size;
    let mut s = Solo::new(&Config::default());
    s.handshake(u32::MAX);
    s.feed_packet(Packet::Msg(Msg {
        channel: BULK,
        eof: false,
        kind: MsgKind::Plain,
        total: Some(limit as u32 + 1),
        payload: Bytes::from_static(b"head"),
    }));
    assert!(matches!(
        s.reason(),
        Some(DisconnectReason::MessageTooLarge { channel: BULK, max, .. }) if max == limit
    ));
    assert_eq!(s.core.buffered_bytes().1, 0, "nothing was allocated");
    // A first chunk of several that does not say the size.
    assert_eq!(
        packets(&[msg(BULK, false, MsgKind::Plain, b"a")]),
        DisconnectReason::InconsistentChunks(BULK)
    );
    let mut first = msg(BULK, false, MsgKind::Request(1), b"a");
    if let Packet::Msg(m) = &mut first {
        m.total = Some(2);
    }
    assert_eq!(
        packets(&[first, msg(BULK, true, MsgKind::Request(2), b"b")]),
        DisconnectReason::InconsistentChunks(BULK)
    );
    assert!(matches!(
        packets(&[msg(0, true, MsgKind::Plain, &[0xc1])]),
        DisconnectReason::ControlViolation(_)
    ));
    assert!(matches!(
        packets(&[msg(0, true, MsgKind::Request(3), b"x")]),
        DisconnectReason::ControlViolation(_)
    ));
    assert_eq!(
        packets(&[control_packet(&Control::Verack)]),
        DisconnectReason::Handshake(HandshakeError::DuplicateVerack)
    );
    for p in [
        Packet::Credit {
            channel: 0,
            bytes: 1,
        },
        Packet::Reclaim {
            channel: 0,
            bytes: 1,
        },
        Packet::Release {
            channel: BULK,
            bytes: 0,
        },
        Packet::Release {
            channel: 0x55,
            bytes: 0,
        },
    ] {
        assert!(
            matches!(
                packets(std::slice::from_ref(&p)),
                DisconnectReason::FlowControl(_)
            ),
            "{p:?}"
        );
    }
    assert!(matches!(
        packets(&[control_packet(&Control::Goodbye(
            DisconnectReason::ByRemote(Box::new(DisconnectReason::Shutdown))
        ))]),
        DisconnectReason::ControlViolation(_)
    ));
}

/// A control message naming an unknown variant: MessagePack `{name: nil}`.
fn unknown_variant(name: &str) -> Vec<u8> {
    let mut out = vec![0x81, 0xda];
    out.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0xc0);
    out
}

#[test]
fn decoder_messages_quoting_the_remote_are_escaped_and_bounded() {
    let evil = format!(
        "x\n[INFO] peer up: forged \u{2028} \u{202E} \x1b[2J {}",
        "y".repeat(3000)
    );
    let check = |text: &str| {
        assert!(
            !text.chars().any(|c| c.is_control()
                || ('\u{2028}'..='\u{202E}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)),
            "{text:?}"
        );
        assert!(text.len() < 400, "{} bytes", text.len());
    };
    // During the handshake.
    let mut s = Solo::new(&Config::default());
    s.feed_msg(0, &unknown_variant(&evil));
    let reason = s.reason().expect("closed");
    assert!(matches!(
        reason,
        DisconnectReason::Handshake(HandshakeError::Undecodable(_))
    ));
    check(&reason.to_string());
    assert_eq!(
        s.goodbye(),
        Some(reason),
        "our goodbye passes the remote's checks"
    );
    // After it.
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    s.feed_msg(0, &unknown_variant(&evil));
    let reason = s.reason().expect("closed");
    let DisconnectReason::ControlViolation(text) = &reason else {
        panic!("{reason:?}");
    };
    check(text);
    assert!(text.contains("x\\n[INFO]"), "{text}");
    assert_eq!(s.goodbye(), Some(reason));
}

#[test]
fn a_core_that_closed_ignores_everything_after() {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    s.feed(&[0xff]);
    let reason = s.reason();
    s.feed(&[0x01, 0, 0, 0, 0, 0, 0, 0, 1]);
    s.feed_msg(BULK, b"more");
    assert_eq!(s.reason(), reason, "the first reason stands");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes after a valid handshake: no panic, a typed reason when closed, and
    /// never more held than the windows allow.
    #[test]
    fn garbage_after_the_handshake_never_panics(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8)
    ) {
        let mut s = Solo::new(&Config::default());
        s.handshake(65_536);
        for c in &chunks {
            s.feed(c);
            let (buffered, allocated) = s.core.buffered_bytes();
            prop_assert!(buffered <= 3 * Config::default().recv_window as u64);
            prop_assert!(allocated <= Config::default().max_reassembly_bytes);
        }
        if let Some(reason) = s.reason() {
            prop_assert!(!reason.to_string().is_empty());
        }
    }
}
