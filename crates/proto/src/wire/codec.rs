//! The packet codec: how every packet of a connection looks on the wire.
//!
//! Packets are a compact hand-written binary format (never MessagePack: this is the hot
//! path). Every packet starts with a one-byte type; integers are big-endian.
//!
//! ```text
//! Ping     ┌──────┬────────────────┐   a keepalive probe; the nonce is unpredictable
//!          │ 0x01 │ nonce u64      │   (keyed by a per-connection secret)
//!          └──────┴────────────────┘
//! Pong     ┌──────┬────────────────┐   the answer to the Ping with that nonce: it proves
//!          │ 0x02 │ nonce u64      │   the remote read our Ping
//!          └──────┴────────────────┘
//! Msg      ┌──────┬─────────┬───────┬──────────────┬──────────────┬────────────┬────────────┐
//!          │ 0x03 │ channel │ flags │ request id   │ total u32    │ length u32 │ payload ...│
//!          │      │   u8    │  u8   │ u32, only if │ only if      │            │ length     │
//!          │      │         │       │ REQUEST or   │ SIZED is set │            │ bytes      │
//!          │      │         │       │ RESPONSE     │              │            │            │
//!          └──────┴─────────┴───────┴──────────────┴──────────────┴────────────┴────────────┘
//!          flags: 0x01 EOF (last chunk of its message), 0x02 REQUEST, 0x04 RESPONSE,
//!          0x08 SIZED (the first chunk of a message of several chunks: `total` is the
//!          whole message's length, so the receiver allocates it once, exactly),
//!          0x10 REJECTED (the answer to a request that will not get a response; its
//!          one-byte payload says why: 1 the responder has too many requests in
//!          hand, 2 the service dropped it unanswered).
//!          Malformed: other bits, two of REQUEST, RESPONSE and REJECTED, SIZED with
//!          EOF, a `total` below the chunk's length, an empty chunk without EOF.
//! Credit   ┌──────┬─────────┬──────────────┐   receiver → sender: you may send `bytes`
//!          │ 0x04 │ channel │ bytes u32    │   more on this channel (never 0)
//!          └──────┴─────────┴──────────────┘
//! Reclaim  ┌──────┬─────────┬──────────────┐   receiver → sender: give back up to `bytes`
//!          │ 0x05 │ channel │ bytes u32    │   of unused credit (never 0)
//!          └──────┴─────────┴──────────────┘
//! Release  ┌──────┬─────────┬──────────────┐   sender → receiver: the answer to a Reclaim,
//!          │ 0x06 │ channel │ bytes u32    │   the credit actually given back (may be 0)
//!          └──────┴─────────┴──────────────┘
//! ```
//!
//! A `Msg` packet is one *chunk* of a message: messages larger than
//! `max_packet_payload` (or than the credit at hand) are cut into chunks by the
//! [scheduler](crate::connection::scheduler) and put back together by the
//! [reassembly](crate::connection::reassembly). The length is checked against
//! `max_packet_payload` before a single byte of payload is buffered. How credit is
//! counted is explained in [`flow`](crate::connection::flow).
//!
//! # Golden vectors
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use switchyard_proto::wire::codec::{Msg, MsgKind, Packet, PacketCodec};
//! use tokio_util::codec::Encoder;
//!
//! let mut codec = PacketCodec::new(1024);
//! let mut out = BytesMut::new();
//! codec.encode(Packet::Ping(0x0102_0304_0506_0708), &mut out).unwrap();
//! codec.encode(Packet::Pong(9), &mut out).unwrap();
//! assert_eq!(&out[..], &[0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0x02, 0, 0, 0, 0, 0, 0, 0, 9]);
//!
//! let mut out = BytesMut::new();
//! let msg = Msg { channel: 0x10, eof: true, kind: MsgKind::Plain, total: None, payload: Bytes::from_static(b"hi") };
//! codec.encode(Packet::Msg(msg), &mut out).unwrap();
//! assert_eq!(&out[..], &[0x03, 0x10, 0x01, 0, 0, 0, 2, b'h', b'i']);
//!
//! let mut out = BytesMut::new();
//! let req = Msg { channel: 0x20, eof: false, kind: MsgKind::Request(0x0102_0304), total: None, payload: Bytes::from_static(b"x") };
//! codec.encode(Packet::Msg(req), &mut out).unwrap();
//! assert_eq!(&out[..], &[0x03, 0x20, 0x02, 1, 2, 3, 4, 0, 0, 0, 1, b'x']);
//!
//! let mut out = BytesMut::new();
//! let no = Msg { channel: 0x20, eof: true, kind: MsgKind::Rejected(7), total: None, payload: Bytes::from_static(&[1]) };
//! codec.encode(Packet::Msg(no), &mut out).unwrap();
//! assert_eq!(&out[..], &[0x03, 0x20, 0x11, 0, 0, 0, 7, 0, 0, 0, 1, 1]);
//!
//! let mut out = BytesMut::new();
//! let first = Msg { channel: 0x30, eof: false, kind: MsgKind::Plain, total: Some(300), payload: Bytes::from_static(b"ab") };
//! codec.encode(Packet::Msg(first), &mut out).unwrap();
//! assert_eq!(&out[..], &[0x03, 0x30, 0x08, 0, 0, 1, 44, 0, 0, 0, 2, b'a', b'b']);
//!
//! let mut out = BytesMut::new();
//! codec.encode(Packet::Credit { channel: 0x10, bytes: 65_536 }, &mut out).unwrap();
//! codec.encode(Packet::Reclaim { channel: 0x10, bytes: 256 }, &mut out).unwrap();
//! codec.encode(Packet::Release { channel: 0x10, bytes: 0 }, &mut out).unwrap();
//! assert_eq!(&out[..], &[
//!     0x04, 0x10, 0, 1, 0, 0,
//!     0x05, 0x10, 0, 0, 1, 0,
//!     0x06, 0x10, 0, 0, 0, 0,
//! ]);
//!
//! use switchyard_proto::wire::codec::Batch;
//! let batch = Batch::new(0x10, &[Bytes::from_static(b"hi"), Bytes::new(), Bytes::from_static(b"abc")]).unwrap();
//! let mut out = BytesMut::new();
//! codec.encode(Packet::Batch(batch), &mut out).unwrap();
//! assert_eq!(&out[..], &[
//!     0x07, 0x10, 0, 0, 0, 11,
//!     0, 2, b'h', b'i',
//!     0, 0,
//!     0, 3, b'a', b'b', b'c',
//! ]);
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
/// Type byte of a `Credit` packet.
pub const TYPE_CREDIT: u8 = 0x04;
/// Type byte of a `Reclaim` packet.
pub const TYPE_RECLAIM: u8 = 0x05;
/// Type byte of a `Release` packet.
pub const TYPE_RELEASE: u8 = 0x06;
/// Type byte of a `Batch` packet.
pub const TYPE_BATCH: u8 = 0x07;

/// Flag: this chunk is the last of its message.
pub const FLAG_EOF: u8 = 0x01;
/// Flag: the message is a request; a request id follows the flags.
pub const FLAG_REQUEST: u8 = 0x02;
/// Flag: the message is a response; a request id follows the flags.
pub const FLAG_RESPONSE: u8 = 0x04;
/// Flag: the first chunk of a message of several chunks; its total length follows
/// (after the request id, if any).
pub const FLAG_SIZED: u8 = 0x08;
/// Flag: the request with this id is refused (no response will come); a request id
/// follows the flags.
pub const FLAG_REJECTED: u8 = 0x10;
const ID_FLAGS: u8 = FLAG_REQUEST | FLAG_RESPONSE | FLAG_REJECTED;
const KNOWN_FLAGS: u8 = FLAG_EOF | ID_FLAGS | FLAG_SIZED;

/// Bytes of a `Ping` or `Pong` packet.
pub const KEEPALIVE_LEN: usize = 1 + 8;
/// Bytes of a `Credit`, `Reclaim` or `Release` packet.
pub const CREDIT_LEN: usize = 1 + 1 + 4;
/// Bytes of a `Msg` header without a request id: type, channel, flags, length.
pub const MSG_HEADER_LEN: usize = 1 + 1 + 1 + 4;
/// Bytes of a `Msg` header with a request id.
pub const MSG_HEADER_LEN_WITH_ID: usize = MSG_HEADER_LEN + 4;
/// Bytes of a `Batch` header: type, channel, length.
pub const BATCH_HEADER_LEN: usize = 1 + 1 + 4;
/// Bytes before each message in a `Batch`: its size.
pub const BATCH_ENTRY_HEADER_LEN: usize = 2;
/// Largest message a `Batch` entry can hold.
pub const BATCH_ENTRY_MAX: usize = u16::MAX as usize;

/// Whether a message is plain, a request, or the response to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MsgKind {
    /// An ordinary one-way message.
    Plain,
    /// A request that expects a response carrying the same id.
    Request(u32),
    /// The response to the request with this id.
    Response(u32),
    /// The refusal of the request with this id: no response will come.
    Rejected(u32),
}

impl MsgKind {
    /// The flag bits (without EOF) this kind sets on the wire.
    #[must_use]
    pub fn flags(self) -> u8 {
        match self {
            MsgKind::Plain => 0,
            MsgKind::Request(_) => FLAG_REQUEST,
            MsgKind::Response(_) => FLAG_RESPONSE,
            MsgKind::Rejected(_) => FLAG_REJECTED,
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
    /// On the first chunk of a message of several chunks (and only there): the whole
    /// message's length.
    pub total: Option<u32>,
    /// This chunk's bytes (a slice of the read buffer: no copy).
    pub payload: Bytes,
}

impl Msg {
    /// Length of this chunk's header on the wire.
    #[must_use]
    pub fn header_len(&self) -> usize {
        self.kind.header_len() + if self.total.is_some() { 4 } else { 0 }
    }
}

/// Several whole plain messages of one channel, in one `Batch` packet (see the
/// [module docs](self)). Decoding checks that its entries fill it exactly, so
/// [`messages`](Batch::messages) cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    channel: u8,
    count: usize,
    /// The entries as on the wire (a slice of the read buffer: no copy).
    body: Bytes,
}

impl Batch {
    /// A batch of `messages` on `channel` (copied into one buffer), or why they cannot
    /// make one: none, or one larger than [`BATCH_ENTRY_MAX`].
    pub fn new(channel: u8, messages: &[Bytes]) -> Result<Self, CodecError> {
        let mut body = BytesMut::new();
        for m in messages {
            let size =
                u16::try_from(m.len()).map_err(|_| CodecError::BatchEntryTooLarge(m.len()))?;
            body.put_u16(size);
            body.extend_from_slice(m);
        }
        Self::parse(channel, body.freeze())
    }

    /// Checks that `body` is one entry or more, exactly.
    fn parse(channel: u8, body: Bytes) -> Result<Self, CodecError> {
        if body.is_empty() {
            return Err(CodecError::EmptyBatch);
        }
        let mut at = 0;
        let mut count = 0;
        while at < body.len() {
            let size = read_u16(&body, at).map_or(usize::MAX, usize::from);
            let end = at
                .saturating_add(BATCH_ENTRY_HEADER_LEN)
                .saturating_add(size);
            if end > body.len() {
                return Err(CodecError::BatchOverrun {
                    at,
                    length: body.len(),
                });
            }
            at = end;
            count += 1;
        }
        Ok(Batch {
            channel,
            count,
            body,
        })
    }

    /// The channel.
    #[must_use]
    pub fn channel(&self) -> u8 {
        self.channel
    }

    /// How many messages it holds (at least one).
    #[must_use]
    pub fn count(&self) -> usize {
        self.count
    }

    /// Bytes of payload over all its messages (without their size prefixes).
    #[must_use]
    pub fn payload_len(&self) -> usize {
        self.body.len() - BATCH_ENTRY_HEADER_LEN * self.count
    }

    /// Bytes after the header on the wire.
    #[must_use]
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// The sizes of its messages, in order (without slicing them out).
    pub fn sizes(&self) -> impl Iterator<Item = usize> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let size = usize::from(read_u16(&self.body, at)?);
            at += BATCH_ENTRY_HEADER_LEN + size;
            Some(size)
        })
    }

    /// Its entries as on the wire (sizes and payloads), without the header.
    #[must_use]
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Its messages, in order (each a slice of the same buffer).
    #[must_use]
    pub fn messages(&self) -> BatchMessages<'_> {
        BatchMessages {
            body: &self.body,
            at: 0,
            left: self.count,
        }
    }
}

/// The message of the batch entry at byte `at` of a batch's `body`, and where the next
/// entry starts; `None` past the end (or where the entry would run past it).
#[must_use]
pub fn batch_entry(body: &Bytes, at: usize) -> Option<(Bytes, usize)> {
    let size = usize::from(read_u16(body, at)?);
    let start = at + BATCH_ENTRY_HEADER_LEN;
    let end = start + size;
    if end > body.len() {
        return None;
    }
    Some((body.slice(start..end), end))
}

/// The messages of a [`Batch`], in order.
#[derive(Debug)]
pub struct BatchMessages<'a> {
    body: &'a Bytes,
    at: usize,
    left: usize,
}

impl Iterator for BatchMessages<'_> {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let (payload, end) = batch_entry(self.body, self.at)?;
        self.at = end;
        self.left = self.left.saturating_sub(1);
        Some(payload)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for BatchMessages<'_> {}

/// A packet on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Keepalive probe with its nonce; the receiver answers [`Packet::Pong`] with the
    /// same nonce.
    Ping(u64),
    /// Answer to the [`Packet::Ping`] that carried this nonce.
    Pong(u64),
    /// A chunk of a message.
    Msg(Msg),
    /// Several whole small messages of one channel.
    Batch(Batch),
    /// The receiver of `channel` lets the sender send `bytes` more on it.
    Credit {
        /// Channel the credit is for (never 0).
        channel: u8,
        /// Additional bytes of credit (never 0).
        bytes: u32,
    },
    /// The receiver of `channel` asks for up to `bytes` of unused credit back (its
    /// window shrinks); the sender answers with a [`Packet::Release`]. A receiver has
    /// at most one `Reclaim` outstanding per channel; `Reclaim`s that arrive before
    /// the answer is written are answered together, in one `Release`.
    Reclaim {
        /// Channel (never 0).
        channel: u8,
        /// Most bytes asked back (never 0).
        bytes: u32,
    },
    /// The sender on `channel` gives back `bytes` of unused credit, answering a
    /// [`Packet::Reclaim`].
    Release {
        /// Channel (never 0).
        channel: u8,
        /// Credit given back (at most what the Reclaim asked; may be 0).
        bytes: u32,
    },
}

impl Packet {
    /// A short name for logs and errors.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Ping(_) => "Ping",
            Packet::Pong(_) => "Pong",
            Packet::Msg(_) => "Msg",
            Packet::Batch(_) => "Batch",
            Packet::Credit { .. } => "Credit",
            Packet::Reclaim { .. } => "Reclaim",
            Packet::Release { .. } => "Release",
        }
    }

    /// Bytes this packet takes on the wire.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        match self {
            Packet::Ping(_) | Packet::Pong(_) => KEEPALIVE_LEN,
            Packet::Msg(m) => m.header_len() + m.payload.len(),
            Packet::Batch(b) => BATCH_HEADER_LEN + b.body.len(),
            Packet::Credit { .. } | Packet::Reclaim { .. } | Packet::Release { .. } => CREDIT_LEN,
        }
    }
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
    /// The type byte is not one this protocol defines.
    #[error("unknown packet type {0:#04x}")]
    UnknownType(u8),
    /// Flags carry bits this protocol does not define.
    #[error("unknown flag bits {0:#04x}")]
    UnknownFlags(u8),
    /// More than one of REQUEST, RESPONSE and REJECTED is set.
    #[error("a message can be only one of request, response and refusal")]
    ConflictingFlags,
    /// A chunk that is not the end of its message carries no bytes.
    #[error("empty chunk that is not the end of its message")]
    EmptyChunk,
    /// SIZED on a last chunk, or a `total` below the chunk's own length.
    #[error("bad message size: total {total:?} on a chunk of {len} bytes (eof: {eof})")]
    BadTotal {
        /// The declared total.
        total: Option<u32>,
        /// The chunk's length.
        len: usize,
        /// Whether the chunk was the last of its message.
        eof: bool,
    },
    /// A `Batch` with no message in it.
    #[error("batch of no message")]
    EmptyBatch,
    /// A `Batch` entry's size runs past the end of the packet.
    #[error("batch entry at byte {at} runs past the batch's {length} bytes")]
    BatchOverrun {
        /// Where the entry starts in the batch.
        at: usize,
        /// The batch's length.
        length: usize,
    },
    /// A message too large for a `Batch` entry (only when encoding).
    #[error("a message of {0} bytes does not fit a batch entry")]
    BatchEntryTooLarge(usize),
    /// A `Credit` (type 0x04) or `Reclaim` (type 0x05) of zero bytes.
    #[error("credit packet of type {0:#04x} for zero bytes")]
    ZeroCredit(u8),
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

    /// `Oversized` when a payload of `len` bytes is above the limit.
    fn within_limit(&self, len: usize) -> Result<(), CodecError> {
        if len > self.max_packet_payload {
            return Err(CodecError::Oversized {
                len,
                max: self.max_packet_payload,
            });
        }
        Ok(())
    }
}

/// Writes the header of a `Msg` chunk whose payload is `len` bytes. The caller appends
/// the payload (or hands it to a vectored write). Does not check the length limit.
pub fn put_msg_header(
    dst: &mut BytesMut,
    channel: u8,
    eof: bool,
    kind: MsgKind,
    total: Option<u32>,
    len: usize,
) {
    dst.reserve(kind.header_len() + 4);
    let flags = kind.flags()
        | if eof { FLAG_EOF } else { 0 }
        | if total.is_some() { FLAG_SIZED } else { 0 };
    dst.put_u8(TYPE_MSG);
    dst.put_u8(channel);
    dst.put_u8(flags);
    match kind {
        MsgKind::Plain => {}
        MsgKind::Request(id) | MsgKind::Response(id) | MsgKind::Rejected(id) => dst.put_u32(id),
    }
    if let Some(total) = total {
        dst.put_u32(total);
    }
    // Payloads are bounded by max_packet_payload, which config keeps far below 4 GiB.
    dst.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// Writes the header of a `Batch` whose entries take `body_len` bytes. The caller
/// appends the entries with [`put_batch_entry`]. Does not check the length limit.
pub fn put_batch_header(dst: &mut BytesMut, channel: u8, body_len: usize) {
    dst.put_u8(TYPE_BATCH);
    dst.put_u8(channel);
    // Batches are bounded by max_packet_payload, which config keeps far below 4 GiB.
    dst.put_u32(u32::try_from(body_len).unwrap_or(u32::MAX));
}

/// Appends one `Batch` entry (the caller keeps `payload` within [`BATCH_ENTRY_MAX`]).
pub fn put_batch_entry(dst: &mut BytesMut, payload: &[u8]) {
    dst.put_u16(u16::try_from(payload.len()).unwrap_or(u16::MAX));
    dst.extend_from_slice(payload);
}

/// Writes every packet but `Msg` (which has a payload to place): the fixed-size ones,
/// and a `Batch` (copied). Returns `false` for a `Msg`, writing nothing.
pub fn put_small_packet(dst: &mut BytesMut, packet: &Packet) -> bool {
    match *packet {
        Packet::Ping(nonce) => {
            dst.put_u8(TYPE_PING);
            dst.put_u64(nonce);
        }
        Packet::Pong(nonce) => {
            dst.put_u8(TYPE_PONG);
            dst.put_u64(nonce);
        }
        Packet::Credit { channel, bytes } => put_credit(dst, TYPE_CREDIT, channel, bytes),
        Packet::Reclaim { channel, bytes } => put_credit(dst, TYPE_RECLAIM, channel, bytes),
        Packet::Release { channel, bytes } => put_credit(dst, TYPE_RELEASE, channel, bytes),
        Packet::Batch(ref b) => {
            put_batch_header(dst, b.channel, b.body.len());
            dst.extend_from_slice(&b.body);
        }
        Packet::Msg(_) => return false,
    }
    true
}

fn put_credit(dst: &mut BytesMut, ty: u8, channel: u8, bytes: u32) {
    dst.put_u8(ty);
    dst.put_u8(channel);
    dst.put_u32(bytes);
}

impl Encoder<Packet> for PacketCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        if let Packet::Batch(b) = &item {
            self.within_limit(b.body.len())?;
        }
        dst.reserve(item.encoded_len());
        match item {
            Packet::Msg(m) => {
                let len = m.payload.len();
                self.within_limit(len)?;
                if len == 0 && !m.eof {
                    return Err(CodecError::EmptyChunk);
                }
                check_total(m.total, len, m.eof)?;
                put_msg_header(dst, m.channel, m.eof, m.kind, m.total, len);
                dst.extend_from_slice(&m.payload);
            }
            Packet::Credit { bytes: 0, .. } => return Err(CodecError::ZeroCredit(TYPE_CREDIT)),
            Packet::Reclaim { bytes: 0, .. } => return Err(CodecError::ZeroCredit(TYPE_RECLAIM)),
            other => {
                put_small_packet(dst, &other);
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
            TYPE_PING | TYPE_PONG => {
                let Some(nonce) = read_u64(src, 1) else {
                    return Ok(None);
                };
                src.advance(KEEPALIVE_LEN);
                Ok(Some(if ty == TYPE_PING {
                    Packet::Ping(nonce)
                } else {
                    Packet::Pong(nonce)
                }))
            }
            TYPE_MSG => self.decode_msg(src),
            TYPE_BATCH => self.decode_batch(src),
            TYPE_CREDIT | TYPE_RECLAIM | TYPE_RELEASE => {
                let (Some(&channel), Some(bytes)) = (src.get(1), read_u32(src, 2)) else {
                    return Ok(None);
                };
                let packet = match ty {
                    TYPE_CREDIT if bytes == 0 => return Err(CodecError::ZeroCredit(TYPE_CREDIT)),
                    TYPE_RECLAIM if bytes == 0 => return Err(CodecError::ZeroCredit(TYPE_RECLAIM)),
                    TYPE_CREDIT => Packet::Credit { channel, bytes },
                    TYPE_RECLAIM => Packet::Reclaim { channel, bytes },
                    _ => Packet::Release { channel, bytes },
                };
                src.advance(CREDIT_LEN);
                Ok(Some(packet))
            }
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

fn check_total(total: Option<u32>, len: usize, eof: bool) -> Result<(), CodecError> {
    let bad = match total {
        Some(t) => eof || (t as usize) < len,
        None => false,
    };
    if bad {
        return Err(CodecError::BadTotal { total, len, eof });
    }
    Ok(())
}

fn read_u32(src: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = src.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

fn read_u16(src: &[u8], at: usize) -> Option<u16> {
    let bytes: [u8; 2] = src.get(at..at + 2)?.try_into().ok()?;
    Some(u16::from_be_bytes(bytes))
}

fn read_u64(src: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = src.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
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
        if (flags & ID_FLAGS).count_ones() > 1 {
            return Err(CodecError::ConflictingFlags);
        }
        let mut header = if flags & ID_FLAGS != 0 {
            MSG_HEADER_LEN_WITH_ID
        } else {
            MSG_HEADER_LEN
        };
        if flags & FLAG_SIZED != 0 {
            header += 4;
        }
        Ok(Some((flags, header)))
    }

    /// The whole size of the packet at the start of `src` (header and payload), once
    /// its header has arrived: what a read buffer must hold for it to decode. Decoding
    /// takes nothing out of `src` until then, and makes no room in it either: the
    /// reader does, knowing which of its buffers are free. `None` before the header is
    /// complete, or when its length is above the limit (which decoding reports).
    #[must_use]
    pub fn frame_len(&self, src: &[u8]) -> Option<usize> {
        let payload = match *src.first()? {
            TYPE_BATCH => read_u32(src, 2)? as usize,
            TYPE_MSG => {
                let (_, header) = Self::msg_header(src).ok()??;
                read_u32(src, header - 4)? as usize
            }
            _ => 0,
        };
        if payload > self.max_packet_payload {
            return None;
        }
        self.needed(src)
    }

    /// Total bytes the packet at the start of `src` needs, when the header tells.
    fn needed(&self, src: &[u8]) -> Option<usize> {
        match *src.first()? {
            TYPE_PING | TYPE_PONG => Some(KEEPALIVE_LEN),
            TYPE_CREDIT | TYPE_RECLAIM | TYPE_RELEASE => Some(CREDIT_LEN),
            TYPE_BATCH => Some(BATCH_HEADER_LEN + read_u32(src, 2)? as usize),
            _ => {
                let (_, header) = Self::msg_header(src).ok()??;
                Some(header + read_u32(src, header - 4)? as usize)
            }
        }
    }

    /// Parses and checks the header of the `Msg` packet at the start of `src`, without
    /// needing its payload: `Ok(None)` until the whole header is there. The checks are
    /// those of a full decode (flags, length against `max_packet_payload`, `total`).
    pub(crate) fn decode_msg_head(&self, src: &[u8]) -> Result<Option<MsgHead>, CodecError> {
        if src.first() != Some(&TYPE_MSG) {
            return Ok(None);
        }
        let Some((flags, header)) = Self::msg_header(src)? else {
            return Ok(None);
        };
        let Some(len) = read_u32(src, header - 4) else {
            return Ok(None);
        };
        let len = len as usize;
        self.within_limit(len)?;
        let eof = flags & FLAG_EOF != 0;
        if len == 0 && !eof {
            return Err(CodecError::EmptyChunk);
        }
        let with_id = flags & ID_FLAGS != 0;
        let total = if flags & FLAG_SIZED != 0 {
            let at = if with_id { 7 } else { 3 };
            let Some(t) = read_u32(src, at) else {
                return Ok(None);
            };
            Some(t)
        } else {
            None
        };
        check_total(total, len, eof)?;
        let kind = match read_u32(src, 3) {
            Some(id) if flags & FLAG_REQUEST != 0 => MsgKind::Request(id),
            Some(id) if flags & FLAG_RESPONSE != 0 => MsgKind::Response(id),
            Some(id) if flags & FLAG_REJECTED != 0 => MsgKind::Rejected(id),
            _ => MsgKind::Plain,
        };
        Ok(Some(MsgHead {
            channel: src.get(1).copied().unwrap_or_default(),
            eof,
            kind,
            total,
            header,
            len,
        }))
    }

    fn decode_batch(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        let (Some(&channel), Some(len)) = (src.get(1), read_u32(src, 2)) else {
            return Ok(None);
        };
        let len = len as usize;
        self.within_limit(len)?;
        if len == 0 {
            return Err(CodecError::EmptyBatch);
        }
        let size = BATCH_HEADER_LEN + len;
        if src.len() < size {
            // The caller makes room for the rest (see `frame_len`).
            return Ok(None);
        }
        // The messages get a buffer of their own, not slices of the read buffer: the
        // service frees them on another thread, and a count shared with the reader's
        // buffer would bounce between the two cores once per message. The buffer's
        // count sits on cache lines of its own, too (see `BatchBody`).
        let body = src.get(BATCH_HEADER_LEN..size).unwrap_or_default().to_vec();
        let body = Bytes::from_owner(BatchBody(body));
        src.advance(size);
        Batch::parse(channel, body).map(|b| Some(Packet::Batch(b)))
    }

    fn decode_msg(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        let Some(head) = self.decode_msg_head(src)? else {
            return Ok(None);
        };
        let size = head.header + head.len;
        if src.len() < size {
            // The caller makes room for the rest (see `frame_len`).
            return Ok(None);
        }
        let mut frame = src.split_to(size);
        frame.advance(head.header);
        Ok(Some(Packet::Msg(Msg {
            channel: head.channel,
            eof: head.eof,
            kind: head.kind,
            total: head.total,
            payload: frame.freeze(),
        })))
    }
}

/// The bytes of a received `Batch`, aligned so that the reference count `Bytes` keeps
/// beside them shares no cache line with another allocation: the reader raises it
/// once per message it cuts out of this batch while the service's thread lowers the
/// count of the batch before, and a shared line would bounce between the cores.
#[repr(align(128))]
struct BatchBody(Vec<u8>);

impl AsRef<[u8]> for BatchBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The header of a `Msg` packet, parsed and checked before its payload is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MsgHead {
    pub(crate) channel: u8,
    pub(crate) eof: bool,
    pub(crate) kind: MsgKind,
    pub(crate) total: Option<u32>,
    /// Bytes of header on the wire.
    pub(crate) header: usize,
    /// Bytes of payload that follow it.
    pub(crate) len: usize,
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
        assert_eq!(
            &encode(Packet::Ping(0xdead_beef_0102_0304))[..],
            [0x01, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]
        );
        assert_eq!(&encode(Packet::Pong(1))[..], [0x02, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            &encode(Packet::Credit {
                channel: 3,
                bytes: 0x0001_0203
            })[..],
            [0x04, 3, 0, 1, 2, 3]
        );
        assert_eq!(
            &encode(Packet::Reclaim {
                channel: 0xff,
                bytes: 7
            })[..],
            [0x05, 0xff, 0, 0, 0, 7]
        );
        assert_eq!(
            &encode(Packet::Release {
                channel: 1,
                bytes: 0
            })[..],
            [0x06, 1, 0, 0, 0, 0]
        );
        let m = |eof, kind, p: &'static [u8]| {
            encode(Packet::Msg(Msg {
                channel: 0xff,
                eof,
                kind,
                total: None,
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
        let mut buf = BytesMut::from(
            &[
                3u8, 7, 0x05, 0, 0, 0, 9, 0, 0, 0, 2, b'o', b'k', 1, 0, 0, 0, 0, 0, 0, 0, 5, 2, 0,
                0, 0, 0, 0, 0, 0, 6, 4, 9, 0, 0, 0, 1,
            ][..],
        );
        let got = decode_all(&mut PacketCodec::new(16), &mut buf).unwrap();
        assert_eq!(
            got,
            vec![
                Packet::Msg(Msg {
                    channel: 7,
                    eof: true,
                    kind: MsgKind::Response(9),
                    total: None,
                    payload: Bytes::from_static(b"ok")
                }),
                Packet::Ping(5),
                Packet::Pong(6),
                Packet::Credit {
                    channel: 9,
                    bytes: 1
                }
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn frame_len_tells_the_room_a_packet_needs_and_decoding_makes_none() {
        let codec = PacketCodec::new(100);
        let mut wire = BytesMut::new();
        let msg = Packet::Msg(Msg {
            channel: 1,
            eof: true,
            kind: MsgKind::Plain,
            total: None,
            payload: Bytes::from_static(&[9; 60]),
        });
        PacketCodec::new(100).encode(msg, &mut wire).unwrap();
        let whole = wire.len();
        assert_eq!(codec.frame_len(&wire), Some(whole));
        assert_eq!(codec.frame_len(&wire[..MSG_HEADER_LEN]), Some(whole));
        assert_eq!(codec.frame_len(&wire[..MSG_HEADER_LEN - 1]), None);
        assert_eq!(codec.frame_len(&[TYPE_PING]), Some(KEEPALIVE_LEN));
        assert_eq!(codec.frame_len(&[]), None);
        // A length above the limit: decoding reports it, no room is asked for.
        assert_eq!(codec.frame_len(&[3u8, 1, 1, 0, 0, 0, 101]), None);
        // An incomplete packet stays as it is, its buffer untouched.
        let mut part = BytesMut::from(&wire[..whole - 1]);
        let cap_before = part.capacity();
        assert_eq!(PacketCodec::new(100).decode(&mut part), Ok(None));
        assert_eq!((part.len(), part.capacity()), (whole - 1, cap_before));
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
    fn a_batch_round_trips_and_its_messages_are_slices_of_one_buffer() {
        let msgs: Vec<Bytes> = (0..50u8)
            .map(|i| Bytes::from(vec![i; usize::from(i) * 3]))
            .collect();
        let batch = Batch::new(9, &msgs).unwrap();
        assert_eq!(batch.count(), 50);
        assert_eq!(
            batch.payload_len(),
            msgs.iter().map(Bytes::len).sum::<usize>()
        );
        let mut wire = encode(Packet::Batch(batch.clone()));
        assert_eq!(wire.len(), Packet::Batch(batch).encoded_len());
        // Byte by byte: nothing until the last byte, then the batch.
        let mut codec = PacketCodec::new(1 << 20);
        let mut feed = BytesMut::new();
        let whole = wire.split();
        for (i, byte) in whole.iter().enumerate() {
            feed.extend_from_slice(&[*byte]);
            let got = codec.decode(&mut feed).unwrap();
            if i + 1 < whole.len() {
                assert_eq!(got, None);
                continue;
            }
            let Some(Packet::Batch(b)) = got else {
                panic!("{got:?}")
            };
            assert_eq!(b.channel(), 9);
            let out: Vec<Bytes> = b.messages().collect();
            assert_eq!(out, msgs);
            assert_eq!(
                b.sizes().collect::<Vec<_>>(),
                msgs.iter().map(Bytes::len).collect::<Vec<_>>()
            );
        }
        assert!(feed.is_empty());
        assert_eq!(
            Batch::new(1, &[]),
            Err(CodecError::EmptyBatch),
            "a batch holds a message at least"
        );
        assert_eq!(
            Batch::new(1, &[Bytes::from(vec![0; 70_000])]),
            Err(CodecError::BatchEntryTooLarge(70_000))
        );
    }

    #[test]
    fn each_bad_input_has_its_own_error() {
        let mut c = PacketCodec::new(100);
        let dec = |c: &mut PacketCodec, b: &[u8]| c.decode(&mut BytesMut::from(b));
        assert_eq!(dec(&mut c, &[0x00]), Err(CodecError::UnknownType(0)));
        assert_eq!(dec(&mut c, &[0x08]), Err(CodecError::UnknownType(8)));
        assert_eq!(
            dec(&mut c, &[0x07, 1, 0, 0, 0, 0]),
            Err(CodecError::EmptyBatch)
        );
        assert_eq!(
            dec(&mut c, &[0x07, 1, 0, 0, 0, 101]),
            Err(CodecError::Oversized { len: 101, max: 100 })
        );
        assert_eq!(
            dec(&mut c, &[0x07, 1, 0, 0, 0, 5, 0, 1, b'a', 0, 2, b'b']),
            Err(CodecError::BatchOverrun { at: 3, length: 5 }),
            "the second entry claims 2 bytes where 1 is left"
        );
        assert_eq!(
            dec(&mut c, &[0x07, 1, 0, 0, 0, 1, 0]),
            Err(CodecError::BatchOverrun { at: 0, length: 1 }),
            "half a size prefix"
        );
        assert_eq!(
            dec(&mut c, &[0x04, 1, 0, 0, 0, 0]),
            Err(CodecError::ZeroCredit(TYPE_CREDIT))
        );
        assert_eq!(
            dec(&mut c, &[0x05, 1, 0, 0, 0, 0]),
            Err(CodecError::ZeroCredit(TYPE_RECLAIM))
        );
        assert_eq!(
            dec(&mut c, &[0x01, 1, 2, 3]),
            Ok(None),
            "ping needs 9 bytes"
        );
        let mut buf = BytesMut::from(&[0x06u8, 1, 0][..]);
        assert_eq!(
            c.decode_eof(&mut buf),
            Err(CodecError::Truncated { have: 3, need: 6 })
        );
        assert_eq!(
            dec(&mut c, &[0x47, 0x45, 0x54]),
            Err(CodecError::UnknownType(0x47))
        );
        assert_eq!(
            dec(&mut c, &[3, 1, 0x21]),
            Err(CodecError::UnknownFlags(0x20))
        );
        assert_eq!(
            dec(&mut c, &[3, 1, 0x14]),
            Err(CodecError::ConflictingFlags)
        );
        assert!(matches!(
            dec(&mut c, &[3, 1, 0x09, 0, 0, 0, 9, 0, 0, 0, 1]),
            Err(CodecError::BadTotal { eof: true, .. })
        ));
        assert!(matches!(
            dec(&mut c, &[3, 1, 0x08, 0, 0, 0, 1, 0, 0, 0, 2]),
            Err(CodecError::BadTotal {
                total: Some(1),
                len: 2,
                ..
            })
        ));
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
            total: None,
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
            total: None,
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
            any::<u64>().prop_map(Packet::Ping),
            any::<u64>().prop_map(Packet::Pong),
            (any::<u8>(), 1u32..).prop_map(|(channel, bytes)| Packet::Credit { channel, bytes }),
            (any::<u8>(), 1u32..).prop_map(|(channel, bytes)| Packet::Reclaim { channel, bytes }),
            (any::<u8>(), any::<u32>())
                .prop_map(|(channel, bytes)| Packet::Release { channel, bytes }),
            (
                any::<u8>(),
                any::<bool>(),
                kind,
                proptest::collection::vec(any::<u8>(), 1..300),
                proptest::option::of(0u32..1000),
            )
                .prop_map(|(channel, eof, kind, payload, extra)| Packet::Msg(Msg {
                    channel,
                    eof,
                    kind,
                    total: extra.filter(|_| !eof).map(|e| payload.len() as u32 + e),
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
