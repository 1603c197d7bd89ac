//! [`Transmit`]: the bytes one `poll_transmit` hands to the writer, in wire order.
//!
//! Small packets are copied together into one buffer; large payloads stay the queued
//! `Bytes` they were given as, between them, so the writer can hand everything to one
//! vectored write without copying bulk data. The writer reports how much the socket
//! took with [`Transmit::advance`] until the transmit is empty.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::scheduler::Chunk;
use crate::wire::codec::{put_small_packet, Packet};

/// Payloads at least this long are written from where they were queued instead of
/// being copied into the transmit buffer.
pub const COPY_THRESHOLD: usize = 4 << 10;

/// Bytes ready to write, in order (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct Transmit {
    buf: BytesMut,
    parts: VecDeque<Bytes>,
    len: usize,
}

impl Transmit {
    /// An empty transmit.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes left to write.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is left to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a packet that is not a `Msg` (keepalive and credit packets).
    pub(crate) fn push_packet(&mut self, packet: &Packet) {
        let before = self.buf.len();
        if put_small_packet(&mut self.buf, packet) {
            self.len += self.buf.len() - before;
        }
    }

    /// Appends a message chunk: header copied, payload borrowed when large.
    pub(crate) fn push_chunk(&mut self, chunk: Chunk) {
        self.len += chunk.encoded_len();
        if chunk.payload.len() < COPY_THRESHOLD {
            chunk.encode(&mut self.buf);
            return;
        }
        chunk.encode_header(&mut self.buf);
        self.seal();
        self.parts.push_back(chunk.payload);
    }

    /// Appends what `f` writes to the copied bytes (packets made whole elsewhere,
    /// such as the scheduler's batches).
    pub(crate) fn push_with<R>(&mut self, f: impl FnOnce(&mut BytesMut) -> R) -> R {
        let before = self.buf.len();
        let r = f(&mut self.buf);
        self.len += self.buf.len() - before;
        r
    }

    /// Appends bytes made elsewhere (the encrypted frames of a secure connection).
    pub fn push_bytes(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.seal();
        self.len += bytes.len();
        self.parts.push_back(bytes);
    }

    /// How many pieces [`for_each_part`](Self::for_each_part) would hand out now.
    #[must_use]
    pub fn part_count(&self) -> usize {
        self.parts.len() + usize::from(!self.buf.is_empty())
    }

    /// Calls `f` with each piece of what is left, in order (without consuming it).
    pub fn for_each_part(&mut self, mut f: impl FnMut(&[u8])) {
        self.seal();
        for part in &self.parts {
            f(part);
        }
    }

    /// Moves the copied bytes so far into `parts` (no copy: a split of `buf`).
    fn seal(&mut self) {
        if !self.buf.is_empty() {
            self.parts.push_back(self.buf.split().freeze());
        }
    }

    /// Fills `out` with slices of what is left, in order; returns how many.
    pub fn io_slices<'a>(&'a mut self, out: &mut [IoSlice<'a>]) -> usize {
        self.seal();
        let mut count = 0;
        for (slot, part) in out.iter_mut().zip(self.parts.iter()) {
            *slot = IoSlice::new(part);
            count += 1;
        }
        count
    }

    /// The socket took `n` bytes from the front.
    pub fn advance(&mut self, mut n: usize) {
        self.seal();
        self.len = self.len.saturating_sub(n);
        while n > 0 {
            let Some(front) = self.parts.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.parts.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    /// Everything left, as one contiguous copy (for tests and simulations), leaving
    /// the transmit empty.
    pub fn take_all(&mut self) -> BytesMut {
        self.seal();
        let mut out = BytesMut::with_capacity(self.len);
        for part in self.parts.drain(..) {
            out.put_slice(&part);
        }
        self.len = 0;
        out
    }

    /// Releases a large buffer while the connection is idle, so an idle connection
    /// keeps little memory.
    pub fn shrink_if_idle(&mut self) {
        if self.is_empty() && self.buf.capacity() > COPY_THRESHOLD {
            self.buf = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::{MsgKind, PacketCodec};
    use tokio_util::codec::Decoder;

    #[test]
    fn copied_and_borrowed_parts_come_out_in_order() {
        let mut t = Transmit::new();
        t.push_packet(&Packet::Ping(7));
        let big = Bytes::from(vec![9u8; 10_000]);
        t.push_chunk(Chunk {
            channel: 1,
            eof: true,
            kind: MsgKind::Plain,
            total: None,
            payload: big.clone(),
        });
        t.push_chunk(Chunk {
            channel: 2,
            eof: true,
            kind: MsgKind::Plain,
            total: None,
            payload: Bytes::from_static(b"small"),
        });
        let total = t.len();
        let mut slices = [IoSlice::new(&[]); 8];
        let n = t.io_slices(&mut slices);
        assert_eq!(n, 3, "header bytes, the borrowed payload, the small chunk");
        assert_eq!(
            slices[1].as_ptr(),
            big.as_ptr(),
            "no copy of the large payload"
        );
        // Write it in odd pieces.
        let mut wire = BytesMut::new();
        let mut left = total;
        while left > 0 {
            let mut slices = [IoSlice::new(&[]); 8];
            let n = t.io_slices(&mut slices);
            let first = slices[..n].iter().find(|s| !s.is_empty()).unwrap();
            let take = first.len().min(333);
            wire.extend_from_slice(&first[..take]);
            t.advance(take);
            left -= take;
        }
        assert!(t.is_empty());
        let mut codec = PacketCodec::new(1 << 20);
        assert_eq!(codec.decode(&mut wire).unwrap(), Some(Packet::Ping(7)));
        match codec.decode(&mut wire).unwrap() {
            Some(Packet::Msg(m)) => assert_eq!(m.payload, big),
            other => panic!("{other:?}"),
        }
        match codec.decode(&mut wire).unwrap() {
            Some(Packet::Msg(m)) => assert_eq!(&m.payload[..], b"small"),
            other => panic!("{other:?}"),
        }
    }
}
