//! The fuzz harnesses: what each cargo-fuzz target runs on its input, as plain
//! functions, so that the test suite can replay the checked-in corpus on stable Rust
//! and every crash a fuzzer finds becomes a regression test.
//!
//! Each harness must never panic, whatever the bytes; it also checks invariants (a
//! decoded packet re-encodes to the bytes it came from, a core never holds more than
//! its windows allow, a closed core stays closed) and panics when one breaks, which is
//! what a fuzzer reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::config::Config;
use crate::connection::handshake::{ServiceInfo, Version, PROTOCOL_VERSION};
use crate::connection::reader::Reader;
use crate::connection::services::ServiceSpec;
use crate::connection::{ConnParams, CoreConfig, Event, PeerCore, RecvBudget, Transmit};
use crate::id::NodeId;
use crate::wire::codec::{Batch, Msg, MsgKind, Packet, PacketCodec};
use crate::wire::control::{self, ChannelGrant, Control, ServiceOffer, CONTROL_CHANNEL};

/// Largest payload the packet harness accepts (small, so the fuzzer finds the limit).
const FUZZ_PAYLOAD: usize = 4096;

/// Decodes packets from `data` until it ends or fails; every decoded packet must
/// encode back to exactly the bytes it was decoded from.
pub fn packet_decoder(data: &[u8]) {
    let mut codec = PacketCodec::new(FUZZ_PAYLOAD);
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.clone();
        match codec.decode(&mut buf) {
            Ok(Some(packet)) => {
                let used = before.len() - buf.len();
                let mut again = BytesMut::new();
                if let Err(e) = codec.encode(packet.clone(), &mut again) {
                    panic!("decoded {packet:?} does not encode: {e}");
                }
                assert_eq!(
                    &again[..],
                    &before[..used],
                    "{packet:?} re-encodes differently"
                );
                assert_eq!(packet.encoded_len(), used);
            }
            Ok(None) => {
                let _ = codec.decode_eof(&mut buf);
                return;
            }
            Err(_) => return,
        }
    }
}

/// Decodes a channel-0 message; a valid one must survive an encode/decode round trip.
pub fn control_decoder(data: &[u8]) {
    if let Ok(msg) = control::decode(data) {
        let again = control::encode(&msg);
        match control::decode(&again) {
            Ok(back) => assert_eq!(back, msg, "control message changed in a round trip"),
            Err(e) => panic!("{msg:?} encodes to something undecodable: {e}"),
        }
    }
}

/// The channels of the core harness.
const CHANNELS: [u8; 3] = [1, 2, 3];

fn harness_core(now: Instant) -> PeerCore {
    let limits = Config {
        max_message_size: 256 << 10,
        max_reassembly_bytes: 1 << 20,
        ..Config::default()
    };
    let channels = CHANNELS
        .iter()
        .map(|c| (*c, limits.channel(u16::from(*c))))
        .collect::<Vec<_>>();
    let service = Arc::new(ServiceSpec {
        name: "fuzz".into(),
        major: 1,
        minor: 0,
        channels,
    });
    let config = match CoreConfig::new(limits) {
        Ok(c) => Arc::new(c),
        Err(e) => panic!("harness config: {e}"),
    };
    let local = version(1);
    let params = ConnParams {
        local,
        expected: None,
        secret: [7; 16],
        services: vec![service],
    };
    PeerCore::new(now, config, params, Arc::new(RecvBudget::new(4 << 20)))
}

fn version(id: u8) -> Version {
    Version {
        protocol: PROTOCOL_VERSION,
        network: "fuzz".into(),
        node_id: NodeId([id; 20]),
        listen_addr: None,
        services: vec![ServiceInfo {
            name: "fuzz".into(),
            version: 1,
        }],
        user_agent: "fuzz".into(),
        nonce: u64::from(id),
    }
}

/// What a well-behaved remote sends to complete the handshake with the harness core:
/// its `Version`, its `Verack`, and a `ServiceConnect` of the harness's service on the
/// same channel ids with 64 KiB of credit on each.
#[must_use]
pub fn remote_handshake() -> Bytes {
    let mut codec = PacketCodec::new(64 << 10);
    let mut out = BytesMut::new();
    let control = |c: &Control| {
        Packet::Msg(Msg {
            channel: CONTROL_CHANNEL,
            eof: true,
            kind: MsgKind::Plain,
            total: None,
            payload: control::encode(c),
        })
    };
    let offer = ServiceOffer {
        name: "fuzz".into(),
        major: 1,
        minor: 0,
        channels: CHANNELS
            .iter()
            .map(|c| ChannelGrant {
                id: *c,
                credit: 64 << 10,
            })
            .collect(),
    };
    let packets = [
        control(&Control::Version(version(2))),
        control(&Control::Verack),
        control(&Control::ServiceConnect(offer)),
    ];
    for p in packets {
        if codec.encode(p, &mut out).is_err() {
            return Bytes::new();
        }
    }
    out.freeze()
}

/// A core past a valid handshake, fed `data` as hostile bytes. The first byte picks
/// the read size, the second whether the services consume and how the bytes are
/// read: by the runtime's [`Reader`] (payloads
/// straight into the buffers the core lends), by that reader after the bytes were
/// sealed into Noise frames (as an encrypted connection reads them), or simply into
/// a read buffer. Virtual time starts at `start` and advances 10 ms per read, so
/// keepalive and window deadlines fire too.
pub fn peer_core(start: Instant, data: &[u8]) {
    let (read, consume, direct, encrypted, data) = match data {
        [a, b, rest @ ..] => (
            usize::from(*a % 64 + 1) * 64,
            b % 4 != 0,
            b & 0x10 != 0,
            b & 0x20 != 0,
            rest,
        ),
        _ => (64, true, false, false, data),
    };
    let mut now = start;
    let mut core = harness_core(now);
    let mut buf = BytesMut::from(&remote_handshake()[..]);
    core.handle_read(now, &mut buf);
    let mut closed = 0;
    let drain = |core: &mut PeerCore, now: Instant, closed: &mut usize| {
        let mut t = Transmit::new();
        while core.poll_transmit(now, &mut t, 1 << 20) {
            let _ = t.take_all();
            core.handle_written(now);
        }
        let _ = core.poll_shutdown();
        while let Some(e) = core.poll_event() {
            if let Event::Closed(_) = e {
                *closed += 1;
            }
        }
        if consume {
            for c in CHANNELS {
                let mut cost = 0;
                while let Some(m) = core.recv(c) {
                    cost += m.cost();
                }
                core.handle_consumed(now, c, cost);
            }
        }
    };
    drain(&mut core, now, &mut closed);
    assert!(core.is_active(), "the harness handshake completes");
    let limit: u64 = CHANNELS.len() as u64 * ((256 << 10) + 64 + (64 << 10) * 2);
    let check = |core: &PeerCore| {
        let (buffered, allocated) = core.buffered_bytes();
        assert!(buffered <= limit, "{buffered} bytes held, limit {limit}");
        assert!(
            allocated <= 1 << 20,
            "{allocated} bytes allocated for partial messages"
        );
    };
    if direct || encrypted {
        let (opener, mut wire) = if encrypted {
            let (mut ours, theirs) = sessions();
            let mut plain = Transmit::new();
            plain.push_bytes(Bytes::copy_from_slice(data));
            let mut wire = BytesMut::new();
            let sealed = ours.sealer.seal(&mut plain, &mut wire);
            assert!(sealed.is_ok(), "sealing fails only past 2^64 frames");
            (Some(theirs.opener), wire)
        } else {
            (None, BytesMut::from(data))
        };
        let mut reader = Reader::new(opener, BytesMut::new());
        while !wire.is_empty() && !reader.is_done() {
            let mut target = reader.target(&mut core);
            let (into, most) = reader.buffer(&mut target);
            // As a socket read: into the room the reader made, which it always makes.
            let room = into.capacity() - into.len();
            assert!(room > 0, "the reader made no room for a read");
            let take = most.min(read).min(wire.len()).min(room);
            into.extend_from_slice(&wire.split_to(take));
            reader.complete(&mut core, now, target, Ok(take));
            reader.drained(&mut core, now);
            drain(&mut core, now, &mut closed);
            check(&core);
            now += Duration::from_millis(10);
            core.handle_timeout(now);
            drain(&mut core, now, &mut closed);
        }
        if !reader.is_done() {
            let target = reader.target(&mut core);
            reader.complete(&mut core, now, target, Ok(0));
        }
    } else {
        let mut rest = data;
        while !rest.is_empty() {
            let take = read.min(rest.len());
            buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            core.handle_read(now, &mut buf);
            core.handle_drained(now);
            drain(&mut core, now, &mut closed);
            check(&core);
            now += Duration::from_millis(10);
            core.handle_timeout(now);
            drain(&mut core, now, &mut closed);
        }
        core.handle_eof(now, &mut buf);
    }
    now += Config::default().linger;
    core.handle_timeout(now);
    drain(&mut core, now, &mut closed);
    assert!(closed <= 1, "closed {closed} times");
    if closed == 1 {
        assert!(core.is_closed());
    }
}

/// Two ends of one encrypted session (fixed keys: the harness needs no secrecy).
fn sessions() -> (crate::secure::Session, crate::secure::Session) {
    use crate::secure::{Session, Suite};
    let (k1, k2) = ([3u8; 32], [5u8; 32]);
    (
        Session::new(Suite::AesGcm, &k1, &k2),
        Session::new(Suite::AesGcm, &k2, &k1),
    )
}

/// The transport handshake on arbitrary bytes. Byte 0 picks our role (bit 0:
/// initiator), our mode (bit 1: plaintext) and the suites (bit 2: AES-GCM offered);
/// byte 1 the read size; the rest is what the remote sent. Once the handshake is done,
/// what follows goes to the session's opener. Never panics; a failed handshake never
/// reports itself done.
pub fn secure_handshake(data: &[u8]) {
    use crate::secure::{LocalIdentity, Mode, Role, SecureHandshake, Suites};
    let (Some(&cfg), Some(&step)) = (data.first(), data.get(1)) else {
        return;
    };
    let rest = data.get(2..).unwrap_or_default();
    let role = if cfg & 1 == 0 {
        Role::Responder
    } else {
        Role::Initiator
    };
    let mode = if cfg & 2 == 0 {
        Mode::Noise
    } else {
        Mode::Plaintext
    };
    let identity = Arc::new(LocalIdentity::new(&[7; 32], [9; 32]));
    let mut hs = SecureHandshake::new(
        role,
        mode,
        Suites::with_aes(cfg & 4 != 0),
        identity,
        [cfg; 32],
    );
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(usize::from(step).max(1)) {
        while hs.poll_transmit().is_some() {}
        buf.extend_from_slice(chunk);
        if hs.handle_read(&mut buf).is_err() {
            while hs.poll_transmit().is_some() {}
            assert!(hs.poll_done().is_none(), "a failed handshake reported done");
            return;
        }
        while hs.poll_transmit().is_some() {}
        if let Some(done) = hs.poll_done() {
            if let Some(mut session) = done.session {
                let mut out = BytesMut::new();
                let before = buf.len();
                if let Ok(n) = session.opener.open(&mut buf, &mut out) {
                    assert_eq!(n, out.len());
                    assert!(buf.len() <= before);
                }
            }
            return;
        }
    }
}

/// Seed inputs for each target (`packet`, `control`, `peer_core`, `secure`): one or more of
/// every packet and control message, valid and not, so the fuzzers start from inputs
/// that reach deep into the decoders and the core.
#[must_use]
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut codec = PacketCodec::new(64 << 10);
    let enc = |codec: &mut PacketCodec, packets: &[Packet]| {
        let mut out = BytesMut::new();
        for p in packets {
            let _ = codec.encode(p.clone(), &mut out);
        }
        out.to_vec()
    };
    let msg = |channel: u8, eof: bool, kind: MsgKind, payload: &[u8]| {
        Packet::Msg(Msg {
            channel,
            eof,
            kind,
            total: None,
            payload: Bytes::copy_from_slice(payload),
        })
    };
    let first = |channel: u8, kind: MsgKind, total: u32, payload: &[u8]| {
        Packet::Msg(Msg {
            channel,
            eof: false,
            kind,
            total: Some(total),
            payload: Bytes::copy_from_slice(payload),
        })
    };
    let packets: Vec<(&str, Vec<Packet>)> = vec![
        ("ping-pong", vec![Packet::Ping(1), Packet::Pong(u64::MAX)]),
        ("msg", vec![msg(1, true, MsgKind::Plain, b"hello")]),
        (
            "chunks",
            vec![
                first(2, MsgKind::Request(7), 400, &[1; 300]),
                msg(3, true, MsgKind::Plain, b""),
                msg(2, true, MsgKind::Request(7), &[2; 100]),
            ],
        ),
        ("response", vec![msg(1, true, MsgKind::Response(3), b"r")]),
        (
            "batch",
            vec![
                msg(1, true, MsgKind::Plain, b"before"),
                Packet::Batch(
                    Batch::new(
                        1,
                        &[
                            Bytes::from_static(b"a"),
                            Bytes::new(),
                            Bytes::from_static(&[7; 40]),
                        ],
                    )
                    .unwrap_or_else(|_| unreachable!("a valid batch")),
                ),
                Packet::Batch(
                    Batch::new(2, &[Bytes::from_static(b"x"), Bytes::from_static(b"y")])
                        .unwrap_or_else(|_| unreachable!("a valid batch")),
                ),
            ],
        ),
        (
            "credit",
            vec![
                Packet::Credit {
                    channel: 1,
                    bytes: 1000,
                },
                Packet::Reclaim {
                    channel: 2,
                    bytes: 10,
                },
                Packet::Release {
                    channel: 3,
                    bytes: 0,
                },
            ],
        ),
        (
            "control",
            vec![msg(
                CONTROL_CHANNEL,
                true,
                MsgKind::Plain,
                &control::encode(&Control::Goodbye(crate::DisconnectReason::Shutdown)),
            )],
        ),
    ];
    let mut out = Vec::new();
    for (name, ps) in &packets {
        let bytes = enc(&mut codec, ps);
        out.push(("packet", (*name).to_owned(), bytes.clone()));
        // For the core: read size 64, services consuming; then half stalled.
        out.push((
            "peer_core",
            (*name).to_string(),
            [vec![0, 1], bytes.clone()].concat(),
        ));
        out.push((
            "peer_core",
            format!("{name}-stalled"),
            [vec![7, 0], bytes].concat(),
        ));
    }
    out.push(("packet", "handshake".into(), remote_handshake().to_vec()));
    out.extend(secure_seeds());
    out.push((
        "packet",
        "oversized".into(),
        vec![3, 1, 1, 0xff, 0xff, 0xff, 0xff],
    ));
    for (name, c) in [
        ("version", Control::Version(version(2))),
        ("verack", Control::Verack),
        (
            "goodbye",
            Control::Goodbye(crate::DisconnectReason::MaxInbound),
        ),
        (
            "goodbye-text",
            Control::Goodbye(crate::DisconnectReason::Application("bye".into())),
        ),
    ] {
        out.push(("control", name.into(), control::encode(&c).to_vec()));
    }
    out
}

/// Seeds of the `secure` target: a real initiator's first messages for a responder,
/// a plaintext stream, a refusal.
fn secure_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use crate::secure::{LocalIdentity, Mode, Role, SecureHandshake, Suites};
    let responder = |cfg: u8| {
        SecureHandshake::new(
            Role::Responder,
            Mode::Noise,
            Suites::with_aes(cfg & 4 != 0),
            Arc::new(LocalIdentity::new(&[7; 32], [9; 32])),
            [cfg; 32],
        )
    };
    let mut out = Vec::new();
    for cfg in [0u8, 4] {
        let mut them = SecureHandshake::new(
            Role::Initiator,
            Mode::Noise,
            Suites::BOTH,
            Arc::new(LocalIdentity::new(&[1; 32], [2; 32])),
            [3; 32],
        );
        let mut sent = them.poll_transmit().map(|b| b.to_vec()).unwrap_or_default();
        let mut ours = BytesMut::from(&responder(cfg).poll_transmit().unwrap_or_default()[..]);
        let _ = them.handle_read(&mut ours);
        while let Some(b) = them.poll_transmit() {
            sent.extend_from_slice(&b);
        }
        out.push((
            "secure",
            format!("msg1-{cfg}"),
            [vec![cfg, 64], sent.clone()].concat(),
        ));
        sent.extend_from_slice(&[0, 160]);
        sent.extend_from_slice(&[0xa5; 160]);
        out.push((
            "secure",
            format!("msg3-{cfg}"),
            [vec![cfg, 200], sent].concat(),
        ));
    }
    let plain = crate::secure::Preamble {
        mode: Mode::Plaintext,
        suites: Suites::CHACHA_ONLY,
    };
    out.push((
        "secure",
        "plaintext".into(),
        [
            vec![2, 5],
            plain.encode().to_vec(),
            remote_handshake().to_vec(),
        ]
        .concat(),
    ));
    let goodbye = crate::connection::goodbye_bytes(&crate::DisconnectReason::MaxInbound);
    out.push((
        "secure",
        "refused".into(),
        [vec![1, 16], SecureHandshake::refusal(&goodbye).to_vec()].concat(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rewrites the checked-in seed corpus: `cargo test -p switchyard-proto --lib
    /// write_seed_corpus -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus; run by hand to regenerate the seeds"]
    fn write_seed_corpus() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        for (target, name, bytes) in seeds() {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }

    #[test]
    fn the_harnesses_accept_their_own_seeds() {
        packet_decoder(&remote_handshake());
        control_decoder(&control::encode(&Control::Verack));
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        peer_core(start, &[3, 1, 0x01, 0, 0, 0, 0, 0, 0, 0, 9]);
        peer_core(start, &[]);
        for (_, _, seed) in secure_seeds() {
            secure_handshake(&seed);
        }
        secure_handshake(&[]);
    }
}
