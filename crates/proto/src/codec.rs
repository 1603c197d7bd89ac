//! The packet codec: how `Ping`, `Pong` and `Msg` packets look on the wire.
//!
//! Packets are a compact hand-written binary format (never MessagePack: this is the hot
//! path). Every packet starts with a one-byte type:
//!
//! ```text
//! Ping  ┌──────┐
//!       │ 0x01 │
//!       └──────┘
//! Pong  ┌──────┐
//!       │ 0x02 │
//!       └──────┘
//! Msg   ┌──────┬─────────┬───────┬──────────────────────┬──────────────┬─────────────┐
//!       │ 0x03 │ channel │ flags │ request id (u32 BE)  │ length u32 BE│ payload ... │
//!       │      │   u8    │  u8   │ only if REQUEST or   │              │ length bytes│
//!       │      │         │       │ RESPONSE is set      │              │             │
//!       └──────┴─────────┴───────┴──────────────────────┴──────────────┴─────────────┘
//! flags: 0x01 EOF (last chunk of its message), 0x02 REQUEST, 0x04 RESPONSE;
//!        other bits, and REQUEST together with RESPONSE, are malformed.
//! ```
//!
//! A `Msg` packet is one *chunk* of a message: messages larger than
//! `max_packet_payload` are cut into chunks by the [`scheduler`](crate::scheduler) and
//! put back together by the [`reassembly`](crate::reassembly). The length is checked
//! against `max_packet_payload` before a single byte of payload is buffered.
//!
//! # Golden vectors
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use switchyard_proto::codec::{Msg, MsgKind, Packet, PacketCodec};
//! use tokio_util::codec::Encoder;
//!
//! let mut codec = PacketCodec::new(1024);
//! let mut out = BytesMut::new();
//! codec.encode(Packet::Ping, &mut out).unwrap();
//! codec.encode(Packet::Pong, &mut out).unwrap();
//! assert_eq!(&out[..], &[0x01, 0x02]);
//!
//! let mut out = BytesMut::new();
//! let msg = Msg { channel: 0x10, eof: true, kind: MsgKind::Plain, payload: Bytes::from_static(b"hi") };
//! codec.encode(Packet::Msg(msg), &mut out).unwrap();
//! assert_eq!(&out[..], &[0x03, 0x10, 0x01, 0, 0, 0, 2, b'h', b'i']);
//!
//! let mut out = BytesMut::new();
//! let req = Msg { channel: 0x20, eof: false, kind: MsgKind::Request(0x0102_0304), payload: Bytes::from_static(b"x") };
//! codec.encode(Packet::Msg(req), &mut out).unwrap();
//! assert_eq!(&out[..], &[0x03, 0x20, 0x02, 1, 2, 3, 4, 0, 0, 0, 1, b'x']);
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

/// Type byte of a `Ping` packet.
pub const TYPE_PING: u8 = 0x01;
/// Type byte of a `Pong` packet.
pub const TYPE_PONG: u8 = 0x02;
/// Type byte of a `Msg` packet.
pub const TYPE_MSG: u8 = 0x03;

/// Flag: this chunk is the last of its message.
pub const FLAG_EOF: u8 = 0x01;
/// Flag: the message is a request; a request id follows the flags.
pub const FLAG_REQUEST: u8 = 0x02;
/// Flag: the message is a response; a request id follows the flags.
pub const FLAG_RESPONSE: u8 = 0x04;
const KNOWN_FLAGS: u8 = FLAG_EOF | FLAG_REQUEST | FLAG_RESPONSE;

/// Bytes of a `Msg` header without a request id: type, channel, flags, length.
pub const MSG_HEADER_LEN: usize = 1 + 1 + 1 + 4;
/// Bytes of a `Msg` header with a request id.
pub const MSG_HEADER_LEN_WITH_ID: usize = MSG_HEADER_LEN + 4;

/// Whether a message is plain, a request, or the response to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MsgKind {
    /// An ordinary one-way message.
    Plain,
    /// A request that expects a response carrying the same id.
    Request(u32),
    /// The response to the request with this id.
    Response(u32),
}

impl MsgKind {
    /// The flag bits (without EOF) this kind sets on the wire.
    #[must_use]
    pub fn flags(self) -> u8 {
        match self {
            MsgKind::Plain => 0,
            MsgKind::Request(_) => FLAG_REQUEST,
            MsgKind::Response(_) => FLAG_RESPONSE,
        }
    }

    /// Length of the `Msg` header for a chunk of this kind.
    #[must_use]
    pub fn header_len(self) -> usize {
        match self {
            MsgKind::Plain => MSG_HEADER_LEN,
            _ => MSG_HEADER_LEN_WITH_ID,
        }
    }
}

/// One chunk of a message on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Channel id (0 is the daemon's control channel, 1..=255 belong to services).
    pub channel: u8,
    /// Whether this is the last chunk of its message.
    pub eof: bool,
    /// Plain, request or response, with the request id.
    pub kind: MsgKind,
    /// This chunk's bytes (a slice of the read buffer: no copy).
    pub payload: Bytes,
}

/// A packet on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Keepalive probe; the receiver answers with [`Packet::Pong`].
    Ping,
    /// Answer to a [`Packet::Ping`].
    Pong,
    /// A chunk of a message.
    Msg(Msg),
}

/// What was wrong with bytes that claimed to be a packet.
///
/// Each variant but `Io` is the remote's fault; the connection is closed with
/// [`DisconnectReason::Codec`](crate::DisconnectReason::Codec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The stream ended in the middle of a packet.
    #[error("stream ended inside a packet ({have} of {need} bytes)")]
    Truncated {
        /// Bytes of the packet that arrived.
        have: usize,
        /// Bytes the packet needed (as far as its header told).
        need: usize,
    },
    /// A packet's payload length is above `max_packet_payload`.
    #[error("packet payload of {len} bytes exceeds the limit of {max}")]
    Oversized {
        /// Length the packet claimed.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The type byte is not one of `Ping`, `Pong`, `Msg`.
    #[error("unknown packet type {0:#04x}")]
    UnknownType(u8),
    /// Flags carry bits this protocol does not define.
    #[error("unknown flag bits {0:#04x}")]
    UnknownFlags(u8),
    /// Both REQUEST and RESPONSE are set.
    #[error("a message cannot be both request and response")]
    ConflictingFlags,
    /// A chunk that is not the last of its message carries no bytes.
    #[error("empty chunk that is not the end of its message")]
    EmptyChunk,
    /// The socket failed (not the remote's protocol fault).
    #[error("{0}")]
    Io(String),
}

impl From<std::io::Error> for CodecError {
    fn from(e: std::io::Error) -> Self {
        CodecError::Io(e.to_string())
    }
}

/// Encoder and decoder of [`Packet`]s, limited to `max_packet_payload` bytes of payload.
#[derive(Debug, Clone, Copy)]
pub struct PacketCodec {
    max_packet_payload: usize,
}

impl PacketCodec {
    /// A codec that rejects (on decode) and refuses (on encode) payloads above
    /// `max_packet_payload` bytes.
    #[must_use]
    pub fn new(max_packet_payload: usize) -> Self {
        PacketCodec { max_packet_payload }
    }

    /// The payload limit.
    #[must_use]
    pub fn max_packet_payload(&self) -> usize {
        self.max_packet_payload
    }
}

/// Writes the header of a `Msg` chunk whose payload is `len` bytes. The caller appends
/// the payload (or hands it to a vectored write). Does not check the length limit.
pub fn put_msg_header(dst: &mut BytesMut, channel: u8, eof: bool, kind: MsgKind, len: usize) {
    dst.reserve(kind.header_len());
    let flags = kind.flags() | if eof { FLAG_EOF } else { 0 };
    dst.put_u8(TYPE_MSG);
    dst.put_u8(channel);
    dst.put_u8(flags);
    match kind {
        MsgKind::Plain => {}
        MsgKind::Request(id) | MsgKind::Response(id) => dst.put_u32(id),
    }
    // Payloads are bounded by max_packet_payload, which config keeps far below 4 GiB.
    dst.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

impl Encoder<Packet> for PacketCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        match item {
            Packet::Ping => dst.put_u8(TYPE_PING),
            Packet::Pong => dst.put_u8(TYPE_PONG),
            Packet::Msg(m) => {
                let len = m.payload.len();
                if len > self.max_packet_payload {
                    return Err(CodecError::Oversized {
                        len,
                        max: self.max_packet_payload,
                    });
                }
                if len == 0 && !m.eof {
                    return Err(CodecError::EmptyChunk);
                }
                dst.reserve(m.kind.header_len() + len);
                put_msg_header(dst, m.channel, m.eof, m.kind, len);
                dst.extend_from_slice(&m.payload);
            }
        }
        Ok(())
    }
}

impl Decoder for PacketCodec {
    type Item = Packet;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        let Some(&ty) = src.first() else {
            return Ok(None);
        };
        match ty {
            TYPE_PING => {
                src.advance(1);
                Ok(Some(Packet::Ping))
            }
            TYPE_PONG => {
                src.advance(1);
                Ok(Some(Packet::Pong))
            }
            TYPE_MSG => self.decode_msg(src),
            other => Err(CodecError::UnknownType(other)),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        match self.decode(src)? {
            Some(p) => Ok(Some(p)),
            None if src.is_empty() => Ok(None),
            None => Err(CodecError::Truncated {
                have: src.len(),
                need: self.needed(src).unwrap_or(src.len() + 1),
            }),
        }
    }
}

impl PacketCodec {
    /// Parses the fixed part of a `Msg` header: (flags, header length), validating flags.
    fn msg_header(src: &[u8]) -> Result<Option<(u8, usize)>, CodecError> {
        let Some(&flags) = src.get(2) else {
            return Ok(None);
        };
        if flags & !KNOWN_FLAGS != 0 {
            return Err(CodecError::UnknownFlags(flags & !KNOWN_FLAGS));
        }
        if flags & FLAG_REQUEST != 0 && flags & FLAG_RESPONSE != 0 {
            return Err(CodecError::ConflictingFlags);
        }
        let header = if flags & (FLAG_REQUEST | FLAG_RESPONSE) != 0 {
            MSG_HEADER_LEN_WITH_ID
        } else {
            MSG_HEADER_LEN
        };
        Ok(Some((flags, header)))
    }

    /// Total bytes the packet at the start of `src` needs, when the header tells.
    fn needed(&self, src: &[u8]) -> Option<usize> {
        let (_, header) = Self::msg_header(src).ok()??;
        let len_bytes: [u8; 4] = src.get(header - 4..header)?.try_into().ok()?;
        Some(header + u32::from_be_bytes(len_bytes) as usize)
    }

    fn decode_msg(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        let Some((flags, header)) = Self::msg_header(src)? else {
            return Ok(None);
        };
        let Some(len_bytes) = src.get(header - 4..header) else {
            return Ok(None);
        };
        let mut len_arr = [0u8; 4];
        len_arr.copy_from_slice(len_bytes);
        let len = u32::from_be_bytes(len_arr) as usize;
        if len > self.max_packet_payload {
            return Err(CodecError::Oversized {
                len,
                max: self.max_packet_payload,
            });
        }
        let eof = flags & FLAG_EOF != 0;
        if len == 0 && !eof {
            return Err(CodecError::EmptyChunk);
        }
        let total = header + len;
        if src.len() < total {
            // Bounded: `len` was checked against the limit above.
            src.reserve(total - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(total);
        let channel = frame[1];
        let kind = if header == MSG_HEADER_LEN_WITH_ID {
            let id = u32::from_be_bytes([frame[3], frame[4], frame[5], frame[6]]);
            if flags & FLAG_REQUEST != 0 {
                MsgKind::Request(id)
            } else {
                MsgKind::Response(id)
            }
        } else {
            MsgKind::Plain
        };
        frame.advance(header);
        Ok(Some(Packet::Msg(Msg {
            channel,
            eof,
            kind,
            payload: frame.freeze(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(p: Packet) -> BytesMut {
        let mut out = BytesMut::new();
        PacketCodec::new(1 << 20).encode(p, &mut out).unwrap();
        out
    }

    fn decode_all(codec: &mut PacketCodec, buf: &mut BytesMut) -> Result<Vec<Packet>, CodecError> {
        let mut out = Vec::new();
        while let Some(p) = codec.decode(buf)? {
            out.push(p);
        }
        Ok(out)
    }

    #[test]
    fn golden_vectors() {
        assert_eq!(&encode(Packet::Ping)[..], [0x01]);
        assert_eq!(&encode(Packet::Pong)[..], [0x02]);
        let m = |eof, kind, p: &'static [u8]| {
            encode(Packet::Msg(Msg {
                channel: 0xff,
                eof,
                kind,
                payload: Bytes::from_static(p),
            }))
        };
        assert_eq!(&m(true, MsgKind::Plain, b"")[..], [3, 0xff, 1, 0, 0, 0, 0]);
        assert_eq!(
            &m(false, MsgKind::Plain, b"abc")[..],
            [3, 0xff, 0, 0, 0, 0, 3, b'a', b'b', b'c']
        );
        assert_eq!(
            &m(true, MsgKind::Response(0xdead_beef), b"z")[..],
            [3, 0xff, 0x05, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, b'z']
        );
        assert_eq!(
            &m(true, MsgKind::Request(1), b"")[..],
            [3, 0xff, 0x03, 0, 0, 0, 1, 0, 0, 0, 0]
        );
    }

    #[test]
    fn decodes_the_golden_vectors_back() {
        let mut buf = BytesMut::from(&[3u8, 7, 0x05, 0, 0, 0, 9, 0, 0, 0, 2, b'o', b'k', 1, 2][..]);
        let got = decode_all(&mut PacketCodec::new(16), &mut buf).unwrap();
        assert_eq!(
            got,
            vec![
                Packet::Msg(Msg {
                    channel: 7,
                    eof: true,
                    kind: MsgKind::Response(9),
                    payload: Bytes::from_static(b"ok")
                }),
                Packet::Ping,
                Packet::Pong
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_length_is_rejected_before_buffering() {
        let mut codec = PacketCodec::new(100);
        let mut buf = BytesMut::from(&[3u8, 1, 1, 0xff, 0xff, 0xff, 0xff][..]);
        let cap_before = buf.capacity();
        assert_eq!(
            codec.decode(&mut buf),
            Err(CodecError::Oversized {
                len: u32::MAX as usize,
                max: 100
            })
        );
        assert_eq!(buf.capacity(), cap_before, "nothing was reserved");
        let mut buf = BytesMut::from(&[3u8, 1, 1, 0, 0, 0, 101][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Oversized { len: 101, .. })
        ));
        let mut buf = BytesMut::from(&[3u8, 1, 1, 0, 0, 0, 100][..]);
        assert_eq!(
            codec.decode(&mut buf),
            Ok(None),
            "exactly the limit is fine"
        );
    }

    #[test]
    fn each_bad_input_has_its_own_error() {
        let mut c = PacketCodec::new(100);
        let dec = |c: &mut PacketCodec, b: &[u8]| c.decode(&mut BytesMut::from(b));
        assert_eq!(dec(&mut c, &[0x00]), Err(CodecError::UnknownType(0)));
        assert_eq!(
            dec(&mut c, &[0x47, 0x45, 0x54]),
            Err(CodecError::UnknownType(0x47))
        );
        assert_eq!(
            dec(&mut c, &[3, 1, 0x09]),
            Err(CodecError::UnknownFlags(0x08))
        );
        assert_eq!(
            dec(&mut c, &[3, 1, 0x06]),
            Err(CodecError::ConflictingFlags)
        );
        assert_eq!(
            dec(&mut c, &[3, 1, 0x00, 0, 0, 0, 0]),
            Err(CodecError::EmptyChunk)
        );
        // Truncated only shows at end of stream; before that it means "need more".
        let mut buf = BytesMut::from(&[3u8, 1, 1, 0, 0, 0, 5, b'a'][..]);
        assert_eq!(c.decode(&mut buf), Ok(None));
        assert_eq!(
            c.decode_eof(&mut buf),
            Err(CodecError::Truncated { have: 8, need: 12 })
        );
        let mut buf = BytesMut::from(&[3u8, 1][..]);
        assert_eq!(
            c.decode_eof(&mut buf),
            Err(CodecError::Truncated { have: 2, need: 3 })
        );
        let mut empty = BytesMut::new();
        assert_eq!(c.decode_eof(&mut empty), Ok(None));
    }

    #[test]
    fn encoder_refuses_what_the_decoder_would_reject() {
        let mut c = PacketCodec::new(4);
        let mut out = BytesMut::new();
        let big = Msg {
            channel: 1,
            eof: true,
            kind: MsgKind::Plain,
            payload: Bytes::from_static(b"12345"),
        };
        assert!(matches!(
            c.encode(Packet::Msg(big), &mut out),
            Err(CodecError::Oversized { .. })
        ));
        let empty = Msg {
            channel: 1,
            eof: false,
            kind: MsgKind::Plain,
            payload: Bytes::new(),
        };
        assert_eq!(
            c.encode(Packet::Msg(empty), &mut out),
            Err(CodecError::EmptyChunk)
        );
        assert!(out.is_empty());
    }

    fn arb_packet() -> impl Strategy<Value = Packet> {
        let kind = prop_oneof![
            Just(MsgKind::Plain),
            any::<u32>().prop_map(MsgKind::Request),
            any::<u32>().prop_map(MsgKind::Response),
        ];
        prop_oneof![
            Just(Packet::Ping),
            Just(Packet::Pong),
            (
                any::<u8>(),
                any::<bool>(),
                kind,
                proptest::collection::vec(any::<u8>(), 1..300)
            )
                .prop_map(|(channel, eof, kind, payload)| Packet::Msg(Msg {
                    channel,
                    eof,
                    kind,
                    payload: payload.into()
                })),
        ]
    }

    proptest! {
        #[test]
        fn round_trip_in_any_split(packets in proptest::collection::vec(arb_packet(), 0..20), split in any::<prop::sample::Index>()) {
            let mut codec = PacketCodec::new(300);
            let mut wire = BytesMut::new();
            for p in &packets {
                codec.encode(p.clone(), &mut wire).unwrap();
            }
            let at = split.index(wire.len() + 1);
            let mut buf = BytesMut::from(&wire[..at]);
            let mut got = decode_all(&mut codec, &mut buf).unwrap();
            buf.extend_from_slice(&wire[at..]);
            got.extend(decode_all(&mut codec, &mut buf).unwrap());
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, packets);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut codec = PacketCodec::new(64);
            let mut buf = BytesMut::from(&bytes[..]);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(Packet::Msg(m))) => prop_assert!(m.payload.len() <= 64),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            let _ = codec.decode_eof(&mut buf);
        }
    }
}
